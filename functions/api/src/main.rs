//! The HTTP API behind API Gateway (HTTP API, JWT authorizer). Logic: `shepherd_api`; the
//! stack's pipelines: `shepherd_stack`.

use lambda_http::tower::ServiceExt as _;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shepherd::observability::init();
    // The stack's pipelines are parsed, and the routes built, on the first request: init
    // does only what can fail on a bad deployment (the environment), so a cold start stays
    // as short as a bare function's allows.
    let api = shepherd_api::Api::from_env(|| shepherd_stack::stack().pipelines().clone())
        .map_err(|e| e.to_string())?;
    let routes = std::sync::OnceLock::new();
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| {
        let router = routes
            .get_or_init(|| shepherd_api::router(api.clone()))
            .clone();
        router.oneshot(req)
    }))
    .await
}
