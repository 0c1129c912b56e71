//! The audit table: append-only. Keys: `pk = P#<production>` (or the subject of an event
//! that belongs to no production write, e.g. `DLQ#brief`), `sk = <at, 13 digits>#<version,
//! 10 digits>#<i>` (so a replayed stream record overwrites the same rows), `et` = event
//! type (index `by_type`: et + sk), `aet` = `<account>#<type>` (index `by_account_type`:
//! aet + sk, so one account's events of a type are read by key), `tr` = trace id (index
//! `by_trace`: tr + sk).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::{Item, n, query_all, s, unavailable};
use crate::domain::Millis;
use crate::ports::{AuditLog, AuditQuery, AuditRecord, CommittedWrite, StoreError};

#[derive(Clone)]
pub struct DynamoAudit {
    client: Client,
    table: String,
}

impl DynamoAudit {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// One audit-table item per event of a committed write.
pub fn audit_items(w: &CommittedWrite) -> Vec<Item> {
    let pk = format!("P#{}", w.production_id);
    w.records().map(|(sk, r)| item(&pk, &sk, &r)).collect()
}

fn item(pk: &str, sk: &str, r: &AuditRecord) -> Item {
    let mut item = Item::from([
        ("pk".to_string(), s(pk)),
        ("sk".to_string(), s(sk)),
        ("et".to_string(), s(&r.event_type)),
        ("outcome".to_string(), s(&r.outcome)),
        ("actor".to_string(), s(&r.actor)),
        ("at".to_string(), n(r.at)),
    ]);
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            item.insert(k.to_string(), s(v));
        }
    };
    opt("production_id", &r.production_id);
    opt("tr", &r.trace_id);
    opt("account", &r.account);
    opt(
        "aet",
        &r.account.as_ref().map(|a| account_type(a, &r.event_type)),
    );
    opt("phase", &r.phase);
    opt("detail", &r.detail);
    if let Some(a) = r.attempt {
        item.insert("attempt".into(), n(a));
    }
    item
}

#[async_trait]
impl AuditLog for DynamoAudit {
    /// 25 items per `BatchWriteItem`, unprocessed ones retried with backoff.
    async fn append(&self, writes: &[CommittedWrite]) -> Result<usize, StoreError> {
        let items: Vec<Item> = writes.iter().flat_map(audit_items).collect();
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
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(unavailable)?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if round == 4 {
                    return Err(StoreError::Unavailable(format!(
                        "{} audit events left unprocessed",
                        requests.len()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
            }
        }
        Ok(items.len())
    }

    async fn record(&self, subject: &str, r: &AuditRecord) -> Result<(), StoreError> {
        let sk = format!("{:013}#{}", r.at, uuid::Uuid::now_v7().simple());
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(subject, &sk, r)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn query(&self, q: &AuditQuery, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let req = self.client.query().table_name(&self.table);
        let req = match q {
            AuditQuery::Production(id) => req
                .key_condition_expression("pk = :k")
                .expression_attribute_values(":k", s(format!("P#{id}"))),
            AuditQuery::Trace(trace) => req
                .index_name("by_trace")
                .key_condition_expression("tr = :k")
                .expression_attribute_values(":k", s(trace)),
            AuditQuery::Type {
                event_type,
                since,
                until,
                account,
            } => match account {
                Some(a) => req
                    .index_name("by_account_type")
                    .key_condition_expression("aet = :k AND sk BETWEEN :a AND :b")
                    .expression_attribute_values(":k", s(account_type(a, event_type))),
                None => req
                    .index_name("by_type")
                    .key_condition_expression("et = :k AND sk BETWEEN :a AND :b")
                    .expression_attribute_values(":k", s(event_type)),
            }
            .expression_attribute_values(":a", s(format!("{since:013}")))
            // `sk` is `<at:013>#...`: every key of a millisecond before `until` sorts below.
            .expression_attribute_values(
                ":b",
                s(format!("{:013}$", until.saturating_sub(1) as Millis)),
            ),
        };
        let mut out = Vec::new();
        let mut corrupt = None;
        query_all(req, |item| {
            match serde_dynamo::from_item::<_, AuditRecord>(item) {
                Ok(r) => out.push(r),
                Err(e) => corrupt = Some(e.to_string()),
            }
            corrupt.is_none() && out.len() < limit
        })
        .await?;
        if let Some(e) = corrupt {
            return Err(StoreError::Corrupt(format!("unreadable audit row: {e}")));
        }
        Ok(out)
    }
}

/// The `by_account_type` key of an account's event type.
fn account_type(account: &str, event_type: &str) -> String {
    format!("{account}#{event_type}")
}
