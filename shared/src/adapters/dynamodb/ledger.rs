//! The call ledger: tool-call outcomes in the idempotency table (`pk` = call key, `ttl` in
//! epoch seconds).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::{Item, get_item, n, number, s, text, unavailable};
use crate::domain::Millis;
use crate::ports::{CallOutcome, Ledger, OutcomeStatus, StoreError};

#[derive(Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
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
            _ => OutcomeStatus::Completed,
        };
        Ok(Some(CallOutcome {
            request_hash: text(&item, "rh"),
            status,
            result: text(&item, "res"),
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
            .item("rh", s(&outcome.request_hash))
            .item("res", s(&outcome.result))
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
        };
        req.send().await.map_err(unavailable)?;
        Ok(())
    }
}
