//! The audit trail. Each state write carries its audit events in the hot item (`au`), so the
//! audit is atomic with the change at no extra write; the table's stream delivers every
//! write to the projector, which copies the events to the append-only audit table.
//!
//! Audit table keys: `pk = P#<production>`, `sk = <at, 13 digits>#<version, 10 digits>#<i>`
//! (so a replayed stream record overwrites the same rows), `et` = event type (index
//! `by_type`: et + sk), `tr` = trace id (index `by_trace`: tr + sk).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use serde::Deserialize;

use crate::adapters::dynamodb::StoredAudit;
use crate::domain::Millis;

/// The parts of a hot item the projector reads (any serde_dynamo source: the SDK, the
/// Lambda stream event, the streams SDK).
#[derive(Debug, Deserialize)]
pub struct AuditSource {
    pub id: String,
    pub acct: String,
    pub tr: String,
    pub v: u64,
    #[serde(default)]
    pub(crate) au: Vec<StoredAudit>,
}

impl AuditSource {
    pub fn au_is_empty(&self) -> bool {
        self.au.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit projection failed: {0}")]
pub struct ProjectError(String);

/// One audit-table item per event.
pub fn audit_items(src: &AuditSource) -> Vec<HashMap<String, AttributeValue>> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let n = |v: Millis| AttributeValue::N(v.to_string());
    src.au
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut item = HashMap::from([
                ("pk".to_string(), s(&format!("P#{}", src.id))),
                (
                    "sk".to_string(),
                    s(&format!("{:013}#{:010}#{i}", e.at, src.v)),
                ),
                ("et".to_string(), s(&e.t)),
                ("tr".to_string(), s(&src.tr)),
                ("production_id".to_string(), s(&src.id)),
                ("account".to_string(), s(&src.acct)),
                ("outcome".to_string(), s(&e.o)),
                ("actor".to_string(), s(&e.by)),
                ("at".to_string(), n(e.at)),
            ]);
            if let Some(p) = &e.p {
                item.insert("phase".into(), s(p));
            }
            if let Some(a) = e.a {
                item.insert("attempt".into(), n(a as Millis));
            }
            if !e.d.is_empty() {
                item.insert("detail".into(), s(&e.d));
            }
            item
        })
        .collect()
}

/// Writes the events of `sources` to the audit table, 25 at a time, retrying unprocessed ones.
pub async fn project(
    client: &Client,
    table: &str,
    sources: &[AuditSource],
) -> Result<usize, ProjectError> {
    let items: Vec<_> = sources.iter().flat_map(audit_items).collect();
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item.clone()))
                            .build()
                            .expect("item set"),
                    )
                    .build()
            })
            .collect();
        for round in 0..5 {
            let out = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .map_err(|e| ProjectError(crate::adapters::sdk_error(&e)))?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            if round == 4 {
                return Err(ProjectError(format!(
                    "{} events left unprocessed",
                    requests.len()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
        }
    }
    Ok(items.len())
}

/// Reads a production's audit trail, oldest first.
pub async fn for_production(
    client: &Client,
    table: &str,
    id: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, ProjectError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("P#{id}")))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| ProjectError(crate::adapters::sdk_error(&e)))?;
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}
