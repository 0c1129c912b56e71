//! Hello world on lambda_runtime, built with the same profile as the real functions.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|e: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(e.payload)
    }))
    .await
}
