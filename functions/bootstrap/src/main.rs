//! Every Lambda function of the stack but the API runs this one binary: its
//! `SHEPHERD_HANDLER` names a phase of the stack's pipelines (`shepherd_stack`) or one of
//! the platform's handlers (sweeper, audit-projector, webhook-fanout, webhook-deliver,
//! alarm-ingest). Each is still its own function, with its own queue or trigger, role,
//! timeout, alarms and concurrency. Logic: `shepherd::wiring::serve`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve(shepherd_stack::stack()).await
}
