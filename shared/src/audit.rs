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
use serde::{Deserialize, Serialize};

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
    /// The production's status after the write.
    #[serde(default)]
    pub st: Option<crate::domain::ProductionStatus>,
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

/// One audit event as stored in the audit table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(rename(deserialize = "et"))]
    pub event_type: String,
    #[serde(default)]
    pub production_id: Option<String>,
    #[serde(rename(deserialize = "tr"), default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    pub outcome: String,
    pub actor: String,
    pub at: Millis,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Which events to read. Every query is a `Query` on the table or one of its indexes.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditQuery {
    /// A production's whole trail.
    Production(String),
    /// Everything one trace touched.
    Trace(String),
    /// One event type within `[since, until)` (epoch milliseconds).
    Type {
        event_type: String,
        since: Millis,
        until: Millis,
    },
}

/// Reads events, oldest first, at most `limit`.
pub async fn query(
    client: &Client,
    table: &str,
    q: &AuditQuery,
    limit: usize,
) -> Result<Vec<AuditRecord>, ProjectError> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let req = client.query().table_name(table);
    let req = match q {
        AuditQuery::Production(id) => req
            .key_condition_expression("pk = :k")
            .expression_attribute_values(":k", s(&format!("P#{id}"))),
        AuditQuery::Trace(trace) => req
            .index_name("by_trace")
            .key_condition_expression("tr = :k")
            .expression_attribute_values(":k", s(trace)),
        AuditQuery::Type {
            event_type,
            since,
            until,
        } => req
            .index_name("by_type")
            .key_condition_expression("et = :k AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":k", s(event_type))
            .expression_attribute_values(":a", s(&format!("{since:013}")))
            // `sk` is `<at:013>#...`: every key of a millisecond before `until` sorts below.
            .expression_attribute_values(":b", s(&format!("{:013}$", until.saturating_sub(1)))),
    };
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = req
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| ProjectError(crate::adapters::sdk_error(&e)))?;
        for item in page.items.unwrap_or_default() {
            let record: AuditRecord = serde_dynamo::from_item(item)
                .map_err(|e| ProjectError(format!("unreadable audit row: {e}")))?;
            out.push(record);
            if out.len() >= limit {
                return Ok(out);
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// Keeps each account's set of productions holding a concurrency slot true to the writes
/// (see `crate::limits`): a write that leaves a production in a status without a slot
/// releases it; a retry, redrive or override that brings it back to work takes it again.
/// Both are idempotent set operations, so a replayed stream record changes nothing.
pub async fn settle_slots(
    client: &Client,
    state_table: &str,
    sources: &[AuditSource],
) -> Result<usize, ProjectError> {
    let mut n = 0;
    for src in sources {
        let Some(status) = src.st else { continue };
        let holds = crate::limits::holds_slot(status);
        let revived = src
            .au
            .iter()
            .any(|e| crate::limits::REVIVALS.contains(&e.t.as_str()));
        let op = match (holds, revived) {
            (false, _) => "DELETE",
            (true, true) => "ADD",
            (true, false) => continue,
        };
        client
            .update_item()
            .table_name(state_table)
            .key("pk", AttributeValue::S(format!("ACCT#{}", src.acct)))
            .key("sk", AttributeValue::S("A".into()))
            .update_expression(format!("{op} active :ids"))
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![src.id.clone()]))
            .send()
            .await
            .map_err(|e| ProjectError(crate::adapters::sdk_error(&e)))?;
        n += 1;
    }
    Ok(n)
}
