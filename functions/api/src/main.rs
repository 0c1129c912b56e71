//! The HTTP API behind API Gateway (HTTP API, JWT authorizer). Logic: `shepherd_api`; the
//! stack's pipelines: `shepherd_stack`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shepherd::observability::init();
    let stack = shepherd_stack::stack();
    let api = shepherd_api::Api::from_env(stack.pipelines().clone()).map_err(|e| e.to_string())?;
    lambda_http::run(shepherd_api::router(api)).await
}
