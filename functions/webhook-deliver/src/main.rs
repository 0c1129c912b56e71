//! Attempts the webhook queue's deliveries: signed (Standard Webhooks), recorded, retried
//! on a schedule. Logic: `shepherd::webhooks::Deliverer`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_webhook_deliverer().await
}
