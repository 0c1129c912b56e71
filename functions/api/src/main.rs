//! The HTTP API behind API Gateway (HTTP API, JWT authorizer). Logic: `shepherd_api`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shepherd::observability::init();
    let api = shepherd_api::Api::from_env().map_err(|e| e.to_string())?;
    lambda_http::run(shepherd_api::router(api)).await
}
