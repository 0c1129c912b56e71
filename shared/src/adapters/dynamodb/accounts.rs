//! Accounts (`ACCT#<account>`): limits, a start counter per month, and the set of
//! productions holding a concurrency slot. Each account item is listed under `ACCOUNTS`
//! in the `by_status` index (`spk`, with its name as `gsk`), so the stack's accounts are
//! read by key, never by Scan.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Update};

use super::{Item, get_item, key, n, number, unavailable};
use crate::domain::access::AccountAccess;
use crate::domain::limits::{AccountUsage, Limits, Reservation};
use crate::ports::{Accounts, StoreError};

fn account_key(account: &str) -> Item {
    key(format!("ACCT#{account}"), "A")
}

/// The `by_status` partition listing every account.
const LISTED: &str = "ACCOUNTS";

/// `SET` clause that lists the account (idempotent: the same values every time, so the
/// index is written once).
const LIST_IT: &str = "spk = :listed, gsk = :name";

/// Every account the stack has (one that ever started a production, or was given limits).
pub(super) async fn listed(client: &Client, table: &str) -> Result<Vec<String>, StoreError> {
    let req = client
        .query()
        .table_name(table)
        .index_name("by_status")
        .key_condition_expression("spk = :s")
        .expression_attribute_values(":s", AttributeValue::S(LISTED.into()));
    let mut out = Vec::new();
    super::query_all(req, |k| {
        out.extend(
            k.get("pk")
                .and_then(|v| v.as_s().ok())
                .and_then(|pk| pk.strip_prefix("ACCT#"))
                .map(String::from),
        );
        true
    })
    .await?;
    Ok(out)
}

fn month_attr(month: &str) -> String {
    format!("m_{}", month.replace('-', "_"))
}

/// The reservation a production's creation makes, in its transaction: the month's counter
/// plus one and the production in the account's active set, on condition that neither
/// limit is reached.
pub(super) fn reserve(table: &str, id: &str, r: &Reservation) -> Update {
    let unlimited = i64::from(u32::MAX);
    Update::builder()
        .table_name(table)
        .set_key(Some(account_key(&r.account)))
        .update_expression(format!("ADD #m :one, active :ids SET {LIST_IT}"))
        .condition_expression(
            "((attribute_not_exists(allow) AND (attribute_not_exists(#m) OR #m < :dallow)) \
               OR (attribute_exists(allow) AND (attribute_not_exists(#m) OR #m < allow))) \
             AND (attribute_not_exists(active) \
               OR (attribute_not_exists(maxc) AND size(active) < :dmaxc) \
               OR (attribute_exists(maxc) AND size(active) < maxc))",
        )
        .expression_attribute_names("#m", month_attr(&r.month))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":ids", AttributeValue::Ss(vec![id.to_string()]))
        .expression_attribute_values(
            ":dallow",
            n(r.defaults.monthly_allowance.map_or(unlimited, i64::from)),
        )
        .expression_attribute_values(
            ":dmaxc",
            n(r.defaults.max_concurrent.map_or(unlimited, i64::from)),
        )
        .expression_attribute_values(":listed", AttributeValue::S(LISTED.into()))
        .expression_attribute_values(":name", AttributeValue::S(r.account.clone()))
        .build()
        .expect("update has table, key and expression")
}

#[derive(Clone)]
pub struct DynamoAccounts {
    client: Client,
    table: String,
}

impl DynamoAccounts {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl Accounts for DynamoAccounts {
    async fn usage(
        &self,
        account: &str,
        month: &str,
        defaults: Limits,
    ) -> Result<AccountUsage, StoreError> {
        let item = get_item(&self.client, &self.table, account_key(account)).await?;
        let item = item.unwrap_or_default();
        let num = |k: &str| number(&item, k).and_then(|v| u32::try_from(v).ok());
        let own = Limits {
            monthly_allowance: num("allow"),
            max_concurrent: num("maxc"),
        };
        let active: Vec<String> = item
            .get("active")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        let started = num(&month_attr(month)).unwrap_or(0);
        Ok(AccountUsage::new(
            account, month, started, own, defaults, active,
        ))
    }

    async fn set_limits(&self, account: &str, limits: Limits) -> Result<(), StoreError> {
        let mut set = vec![LIST_IT.to_string()];
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(account_key(account)));
        req = req
            .expression_attribute_values(":listed", AttributeValue::S(LISTED.into()))
            .expression_attribute_values(":name", AttributeValue::S(account.into()));
        for (attr, value) in [
            ("allow", limits.monthly_allowance),
            ("maxc", limits.max_concurrent),
        ] {
            match value {
                Some(v) => {
                    set.push(format!("{attr} = :{attr}"));
                    req = req.expression_attribute_values(format!(":{attr}"), n(v));
                }
                None => remove.push(attr.to_string()),
            }
        }
        let mut expr = String::new();
        if !set.is_empty() {
            expr.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        req.update_expression(expr.trim())
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn access(&self, account: &str) -> Result<AccountAccess, StoreError> {
        let item = get_item(&self.client, &self.table, account_key(account)).await?;
        match item
            .as_ref()
            .and_then(|i| i.get("acc"))
            .and_then(|v| v.as_s().ok())
        {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("access of {account}: {e}"))),
            None => Ok(AccountAccess::default()),
        }
    }

    async fn set_access(&self, account: &str, access: &AccountAccess) -> Result<(), StoreError> {
        let text = serde_json::to_string(access).expect("access serialises");
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(account_key(account)))
            .update_expression(format!("SET acc = :acc, {LIST_IT}"))
            .expression_attribute_values(":acc", AttributeValue::S(text))
            .expression_attribute_values(":listed", AttributeValue::S(LISTED.into()))
            .expression_attribute_values(":name", AttributeValue::S(account.into()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn hold_slot(
        &self,
        account: &str,
        production: &str,
        hold: bool,
    ) -> Result<(), StoreError> {
        let op = if hold { "ADD" } else { "DELETE" };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(account_key(account)))
            .update_expression(format!("{op} active :ids SET {LIST_IT}"))
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![production.to_string()]))
            .expression_attribute_values(":listed", AttributeValue::S(LISTED.into()))
            .expression_attribute_values(":name", AttributeValue::S(account.into()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
