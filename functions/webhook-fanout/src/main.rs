//! Turns each committed change of the state table (DynamoDB stream) that is a webhook
//! event into one stored, queued delivery per subscription that wants it. Logic:
//! `shepherd::webhooks::Fanout`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_webhook_fanout().await
}
