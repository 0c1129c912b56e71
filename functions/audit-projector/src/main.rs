//! Copies the audit events carried by each state write (DynamoDB stream) to the audit table
//! and settles accounts' concurrency slots. Logic: `shepherd::audit`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_projector().await
}
