//! Copies the audit events carried by each state write (DynamoDB stream) to the audit table.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shepherd::audit::{AuditSource, project, settle_slots};

async fn handler(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    state_table: &str,
    event: Event,
) -> Result<(), Error> {
    let mut sources = Vec::new();
    for record in event.records {
        if record.change.new_image.is_empty() {
            continue;
        }
        // Items without audit events (claims) deserialize with an empty list.
        match serde_dynamo::from_item::<_, AuditSource>(record.change.new_image) {
            Ok(src) if !src.au_is_empty() => sources.push(src),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "not a production item"),
        }
    }
    let n = project(client, table, &sources).await?;
    let slots = settle_slots(client, state_table, &sources).await?;
    tracing::info!(events = n, slots, "audit projected");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shepherd::observability::init();
    let table = std::env::var("SHEPHERD_AUDIT_TABLE")
        .map_err(|_| "configuration SHEPHERD_AUDIT_TABLE is not set")?;
    let state_table = std::env::var("SHEPHERD_STATE_TABLE")
        .map_err(|_| "configuration SHEPHERD_STATE_TABLE is not set")?;
    let state_table = state_table.as_str();
    // Built on the first event: loading the TLS roots is most of a cold start.
    let client = tokio::sync::OnceCell::new();
    let (client, table) = (&client, table.as_str());
    lambda_runtime::run(service_fn(move |e: LambdaEvent<Event>| async move {
        let client = client
            .get_or_init(|| async {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                aws_sdk_dynamodb::Client::new(&sdk)
            })
            .await;
        handler(client, table, state_table, e.payload).await
    }))
    .await
}
