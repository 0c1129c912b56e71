//! CloudWatch alarms (through the alarm topic) into Shepherd's alarm store. Logic:
//! `shepherd::cloudwatch`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shepherd::wiring::serve_alarm_ingest().await
}
