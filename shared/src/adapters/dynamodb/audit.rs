//! The audit table: append-only. Keys: `pk = P#<production>` (or the subject of an event
//! that belongs to no production write, e.g. `DLQ#brief`), `sk = <at, 13 digits>#<version,
//! 10 digits>#<i>` (so a replayed stream record overwrites the same rows), `et` = event
//! type (index `by_type`: et + sk), `aet` = `<account>#<type>` (index `by_account_type`:
//! aet + sk, so one account's events of a type are read by key), `tr` = trace id (index
//! `by_trace`: tr + sk).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::{Item, n, query_page, s, unavailable};
use crate::domain::Millis;
use crate::ports::{AuditLog, AuditQuery, AuditRecord, CommittedWrite, Page, StoreError};

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

    async fn query(
        &self,
        q: &AuditQuery,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let req = self.client.query().table_name(&self.table);
        // (partition attribute, its value, the index's extra key attributes, the sort key's
        // bounds): a cursor is the last row's keys, and must fall inside the bounds.
        let (req, attr, partition, bounds) = match q {
            AuditQuery::Production(id) => {
                let k = format!("P#{id}");
                let req = req
                    .key_condition_expression("pk = :k")
                    .expression_attribute_values(":k", s(&k));
                (req, "pk", k, None)
            }
            AuditQuery::Trace(trace) => {
                let req = req
                    .index_name("by_trace")
                    .key_condition_expression("tr = :k")
                    .expression_attribute_values(":k", s(trace));
                (req, "tr", trace.clone(), None)
            }
            AuditQuery::Type {
                event_type,
                since,
                until,
                account,
            } => {
                let (index, attr, k) = match account {
                    Some(a) => ("by_account_type", "aet", account_type(a, event_type)),
                    None => ("by_type", "et", event_type.clone()),
                };
                let low = format!("{since:013}");
                // `sk` is `<at:013>#...`: every key of a millisecond before `until` sorts below.
                let high = format!("{:013}$", until.saturating_sub(1) as Millis);
                let req = req
                    .index_name(index)
                    .key_condition_expression(format!("{attr} = :k AND sk BETWEEN :a AND :b"))
                    .expression_attribute_values(":k", s(&k))
                    .expression_attribute_values(":a", s(&low))
                    .expression_attribute_values(":b", s(&high));
                (req, attr, k, Some((low, high)))
            }
        };
        let attrs: &[&str] = if attr == "pk" {
            &["pk", "sk"]
        } else {
            &[attr, "sk", "pk"]
        };
        let fits = |key: &Item| {
            let sk = key.get("sk").and_then(|v| v.as_s().ok());
            bounds
                .as_ref()
                .is_none_or(|(low, high)| sk.is_some_and(|sk| low <= sk && sk <= high))
        };
        let (items, next) = query_page(req, limit, after, attrs, &partition, fits).await?;
        let items = items
            .into_iter()
            .map(serde_dynamo::from_item::<_, AuditRecord>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("unreadable audit row: {e}")))?;
        Ok(Page { items, next })
    }
}

/// The `by_account_type` key of an account's event type.
fn account_type(account: &str, event_type: &str) -> String {
    format!("{account}#{event_type}")
}
