//! DynamoDB adapters, one per port. Conditional writes sit here and the engine sees typed
//! outcomes (`Refused`, `Conflict`, `false`), never an SDK error.
//!
//! State table items:
//!
//! | item | pk | sk | file |
//! |---|---|---|---|
//! | production (hot item) | `P#<id>` | `P` | `productions.rs` |
//! | brief | `P#<id>` | `B` | `productions.rs` |
//! | output | `P#<id>` | `O#<phase>#<attempt>` | `outputs.rs` |
//! | account | `ACCT#<account>` | `A` | `accounts.rs` |
//! | alarm | `ALARM#<type>#<subject>` | `A` | `alarms.rs` |
//! | integration health | `INT#<id>` | `I` | `health.rs` |
//!
//! The audit table is `audit.rs`, the idempotency table `ledger.rs`, and the state table's
//! stream is read by `stream.rs`.

mod accounts;
mod alarms;
mod audit;
mod health;
mod ledger;
mod outputs;
mod productions;
pub mod stream;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub use accounts::DynamoAccounts;
pub use alarms::DynamoAlarms;
pub use audit::DynamoAudit;
pub use audit::audit_items;
pub use health::DynamoHealth;
pub use ledger::DynamoLedger;
pub use outputs::DynamoOutputs;
pub use productions::{DynamoProductions, hot_item, item_size};
pub use stream::DynamoStream;

use super::sdk_error;
use crate::ports::StoreError;

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn text(item: &Item, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn number(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Any SDK failure as the store's "unavailable".
fn unavailable<E, R>(e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    StoreError::Unavailable(sdk_error(&e))
}

/// A conditional write's result: applied (`true`), its condition false (`false`), or a
/// store failure.
fn applied<T, E, R>(
    res: Result<T, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// Whether a write was refused by its condition (not a store failure).
fn is_condition_failure<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// Paginates a query, handing each item's key or item to `each` until it says stop.
async fn query_all(
    req: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    mut each: impl FnMut(Item) -> bool,
) -> Result<(), StoreError> {
    let mut start = None;
    loop {
        let page = req
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        for item in page.items.unwrap_or_default() {
            if !each(item) {
                return Ok(());
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(());
        }
    }
}

/// One item by its key, read consistently (every read here must see the latest write).
async fn get_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
) -> Result<Option<Item>, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(out.item)
}

/// Reads the `body` attribute of one item (consistent read).
async fn get_body(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: String,
    sk: &str,
) -> Result<Option<String>, StoreError> {
    Ok(get_item(client, table, key(pk, sk))
        .await?
        .and_then(|mut i| i.remove("body"))
        .and_then(|b| b.as_s().ok().cloned()))
}

fn production_pk(id: &str) -> String {
    format!("P#{id}")
}
