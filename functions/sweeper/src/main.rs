//! The recovery sweep, run every minute by EventBridge Scheduler. Logic: `shepherd::recovery`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_sweeper().await
}
