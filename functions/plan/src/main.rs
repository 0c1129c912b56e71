//! The `plan` phase of the coding-agent job: a Lambda fed by its SQS queue. All logic
//! lives in `shepherd`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_phase(shepherd::phases::PlanPhase).await
}
