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
//! | schedule | `SCHED#<id>` | `S` | `schedules.rs` |
//! | connector / event / dedupe key / a source's counts | `CONN#<id>` / `EVENT#<id>` / `DEDUPE#<source>#<key>` / `SRC#<source>` | `C` / `E` / `D` / `S` | `intake.rs` |
//! | a schedule's slot | `SCHED#<id>` | `SLOT#<slot>#<at>` | `schedules.rs` |
//!
//! The audit table is `audit.rs`, the idempotency table `ledger.rs`, and the state table's
//! stream is read by `stream.rs`.

mod accounts;
mod alarms;
mod audit;
mod health;
mod intake;
mod ledger;
mod outputs;
mod productions;
mod schedules;
pub mod stream;
mod webhooks;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub use accounts::DynamoAccounts;
pub use alarms::DynamoAlarms;
pub use audit::DynamoAudit;
pub use audit::audit_items;
pub use health::DynamoHealth;
pub use intake::DynamoIntake;
pub use ledger::DynamoLedger;
pub use outputs::DynamoOutputs;
pub use productions::{DynamoProductions, hot_item, item_size};
pub use schedules::DynamoSchedules;
pub use stream::DynamoStream;
pub use webhooks::DynamoWebhooks;

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

/// One page of a query: items from the cursor `after` until `limit`, and the cursor of the
/// last item taken when the page is full. `attrs` are the key attributes a start key holds
/// (the query's partition attribute first, equal to `partition`), so a cursor can only
/// go on in the partition the caller queries; `fits` checks the rest of a decoded start key
/// against the query's key condition (DynamoDB refuses a start key outside it).
async fn query_page(
    req: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    limit: usize,
    after: Option<&str>,
    attrs: &[&str],
    partition: &str,
    fits: impl Fn(&Item) -> bool,
) -> Result<(Vec<Item>, Option<String>), StoreError> {
    let limit = limit.clamp(1, 1000);
    let mut start = match after {
        Some(c) => {
            let key = decode_cursor(c, attrs)?;
            if key
                .get(attrs[0])
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                != Some(partition)
                || !fits(&key)
            {
                return Err(StoreError::BadCursor("it belongs to another list".into()));
            }
            Some(key)
        }
        None => None,
    };
    let mut items: Vec<Item> = Vec::new();
    loop {
        let page = req
            .clone()
            .set_exclusive_start_key(start)
            .limit((limit - items.len()) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if items.len() >= limit {
            items.truncate(limit);
            let next = items.last().map(|i| encode_cursor(i, attrs));
            return Ok((items, next));
        }
        if start.is_none() {
            return Ok((items, None));
        }
    }
}

/// A page of the state table's listing indexes (`by_account`, `by_status`: `<attr>` + `gsk`,
/// KEYS_ONLY), newest first: the keys of the items, and the next page's cursor.
async fn listing_page(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    (index, attr, partition): (&str, &str, &str),
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<Item>, Option<String>), StoreError> {
    let req = client
        .query()
        .table_name(table)
        .index_name(index)
        .key_condition_expression(format!("{attr} = :p"))
        .expression_attribute_values(":p", s(partition))
        .scan_index_forward(false);
    query_page(
        req,
        limit,
        after,
        &[attr, "gsk", "pk", "sk"],
        partition,
        |_| true,
    )
    .await
}

/// A cursor: the key attributes of the last item of a page, as base64url JSON.
fn encode_cursor(item: &Item, attrs: &[&str]) -> String {
    use base64::Engine;
    let key: serde_json::Map<String, serde_json::Value> = attrs
        .iter()
        .filter_map(|a| {
            let v = match item.get(*a)? {
                AttributeValue::S(v) => serde_json::json!({ "S": v }),
                AttributeValue::N(v) => serde_json::json!({ "N": v }),
                _ => return None,
            };
            Some((a.to_string(), v))
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::Value::Object(key).to_string())
}

fn decode_cursor(cursor: &str, attrs: &[&str]) -> Result<Item, StoreError> {
    use base64::Engine;
    let bad = |why: &str| StoreError::BadCursor(why.into());
    if cursor.len() > 2048 {
        return Err(bad("too long"));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad("not base64url"))?;
    let map: HashMap<String, HashMap<String, String>> =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a key"))?;
    if map.len() != attrs.len() {
        return Err(bad("not a key of this list"));
    }
    let mut key = Item::new();
    for a in attrs {
        let v = map.get(*a).ok_or_else(|| bad("not a key of this list"))?;
        let value = match (v.get("S"), v.get("N"), v.len()) {
            (Some(s), None, 1) if !s.is_empty() => AttributeValue::S(s.clone()),
            (None, Some(n), 1) if n.parse::<i64>().is_ok() => AttributeValue::N(n.clone()),
            _ => return Err(bad("not a key of this list")),
        };
        key.insert(a.to_string(), value);
    }
    Ok(key)
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
