//! The call ledger: tool-call outcomes in the idempotency table (`pk` = call key, `ttl` in
//! epoch seconds). An answer too large for an item (a coding agent's change set of
//! megabytes; an item holds 400 KB) is kept in the artifact bucket, content-addressed under
//! its production, and the item holds its key (`ref`).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::{Item, get_item, n, number, s, text, unavailable};
use std::sync::Arc;

use super::outputs::INLINE_LIMIT;
use crate::domain::Millis;
use crate::domain::artifacts::Artifact;
use crate::ports::{ArtifactStore, CallOutcome, Ledger, OutcomeStatus, StoreError};

#[derive(Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    overflow: Arc<dyn ArtifactStore>,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>, overflow: Arc<dyn ArtifactStore>) -> Self {
        Self {
            client,
            table: table.into(),
            overflow,
        }
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn get(&self, key: &str, now: Millis) -> Result<Option<CallOutcome>, StoreError> {
        let item = get_item(
            &self.client,
            &self.table,
            Item::from([("pk".to_string(), s(key))]),
        )
        .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        // DynamoDB deletes expired items late (and the emulator never): ignore them here.
        let ttl = number(&item, "ttl").unwrap_or(i64::MAX);
        if ttl.saturating_mul(1000) <= now {
            return Ok(None);
        }
        let status = match text(&item, "st").as_str() {
            "in_progress" => OutcomeStatus::InProgress {
                attempt: number(&item, "at").unwrap_or(0) as u32,
                lease_until: number(&item, "lu").unwrap_or(0),
            },
            "failed" => OutcomeStatus::Failed,
            "rejected" => OutcomeStatus::Rejected,
            "waiting" => OutcomeStatus::Waiting {
                attempt: number(&item, "at").unwrap_or(0) as u32,
            },
            _ => OutcomeStatus::Completed,
        };
        let result = match item.get("ref").and_then(|v| v.as_s().ok()) {
            Some(r) => {
                let bytes = self.overflow.get(r).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("the answer of call {key}: {r} is missing"))
                })?;
                String::from_utf8(bytes).map_err(|e| {
                    StoreError::Corrupt(format!("the answer of call {key}: {r}: {e}"))
                })?
            }
            None => text(&item, "res"),
        };
        Ok(Some(CallOutcome {
            request_hash: text(&item, "rh"),
            status,
            result,
            tries: number(&item, "tr").unwrap_or(0) as u32,
        }))
    }

    async fn put(
        &self,
        key: &str,
        outcome: &CallOutcome,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(key))
            .item("rh", s(&outcome.request_hash));
        let req = if outcome.result.len() > INLINE_LIMIT {
            // The call key begins with its production: the answer is kept with its files.
            let production = key.split('#').next().unwrap_or(key);
            let body = outcome.result.as_bytes();
            let big = Artifact::of(production, "answer", body, "application/json");
            self.overflow
                .put_new(&big.key, body, &big.content_type)
                .await?;
            req.item("ref", s(&big.key))
        } else {
            req.item("res", s(&outcome.result))
        };
        let req = req
            .item("ttl", n(expires_at / 1000))
            .item("tr", n(outcome.tries));
        let req = match outcome.status {
            OutcomeStatus::InProgress {
                attempt,
                lease_until,
            } => req
                .item("st", s("in_progress"))
                .item("at", n(attempt))
                .item("lu", n(lease_until)),
            OutcomeStatus::Completed => req.item("st", s("completed")),
            OutcomeStatus::Failed => req.item("st", s("failed")),
            OutcomeStatus::Rejected => req.item("st", s("rejected")),
            OutcomeStatus::Waiting { attempt } => {
                req.item("st", s("waiting")).item("at", n(attempt))
            }
        };
        req.send().await.map_err(unavailable)?;
        Ok(())
    }
}
