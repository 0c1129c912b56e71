//! Alarms (`ALARM#<type>#<subject>` / `A`): an occurrence is one `UpdateItem` (`ADD count`,
//! `SET last_seen`, `if_not_exists(first_seen)`, status back to `open`), so repeats
//! deduplicate without a read. Listed newest first (`gsk` = `<last seen>#<id>`) through the
//! KEYS_ONLY `by_account` index under the fixed key `ALARMS` (every alarm, for the stack's
//! operators), and an alarm about a production also through `by_status` under
//! `ALARMS#<account>` (its account's).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{applied, key, listing_page, n, number, s, text, unavailable};
use crate::domain::Actor;
use crate::domain::Millis;
use crate::domain::alarms::{Alarm, AlarmKind, AlarmStatus, Raise};
use crate::ports::{Alarms, Page, StoreError};

/// The `by_status` partition of an account's alarms.
fn account_partition(account: &str) -> String {
    format!("ALARMS#{account}")
}

#[derive(Clone)]
pub struct DynamoAlarms {
    client: Client,
    table: String,
}

impl DynamoAlarms {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// An alarm item as the domain's alarm.
pub(super) fn alarm_of(i: &super::Item) -> Result<Alarm, StoreError> {
    let corrupt =
        |e: serde_json::Error| StoreError::Corrupt(format!("alarm {}: {e}", text(i, "pk")));
    Ok(Alarm {
        kind: AlarmKind::parse(&text(i, "type")),
        subject: text(i, "subj"),
        account: i.get("acct").and_then(|v| v.as_s().ok()).cloned(),
        severity: serde_json::from_value(text(i, "sev").into()).map_err(corrupt)?,
        status: serde_json::from_value(text(i, "status").into()).map_err(corrupt)?,
        count: number(i, "count").unwrap_or(0) as u64,
        first_seen: number(i, "fs").unwrap_or(0),
        last_seen: number(i, "ls").unwrap_or(0),
        detail: text(i, "det"),
        handled_by: i.get("hb").and_then(|v| v.as_s().ok()).cloned(),
        affected: i
            .get("aff")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
    })
}

/// Whether the write that left `i` opened the alarm (its first occurrence, or the first
/// since it was resolved): `op` (opened at) is set by the occurrence that opens it and
/// removed by a resolve.
pub(super) fn opened_by_this_write(i: &super::Item) -> bool {
    number(i, "op").is_some() && number(i, "op") == number(i, "ls")
}

fn word(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[async_trait]
impl Alarms for DynamoAlarms {
    async fn raise(&self, a: &Raise, now: Millis) -> Result<(), StoreError> {
        let id = format!("{}#{}", a.kind, a.subject);
        let mut expression = String::from(
            "SET #t = :t, subj = :s, sev = :sev, det = :d, ls = :now, fs = if_not_exists(fs, :now), op = if_not_exists(op, :now), \
             #st = :open, gpk = :g, gsk = :gsk REMOVE hb ADD #c :one",
        );
        let mut req = self.client.update_item();
        if let Some(account) = &a.account {
            expression = expression.replace(" REMOVE", ", acct = :acct, spk = :spk REMOVE");
            req = req
                .expression_attribute_values(":acct", s(account))
                .expression_attribute_values(":spk", s(account_partition(account)));
        }
        if !a.affected.is_empty() {
            // A string set: adding a member twice keeps one.
            expression.push_str(", aff :m");
            req = req.expression_attribute_values(":m", AttributeValue::Ss(a.affected.clone()));
        }
        req.table_name(&self.table)
            .set_key(Some(key(format!("ALARM#{id}"), "A")))
            .update_expression(expression)
            .expression_attribute_names("#t", "type")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":t", s(a.kind.as_str()))
            .expression_attribute_values(":s", s(&a.subject))
            .expression_attribute_values(":sev", s(word(a.severity)))
            .expression_attribute_values(":d", s(&a.detail))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":g", s("ALARMS"))
            .expression_attribute_values(":gsk", s(format!("{now:013}#{id}")))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Alarm>, StoreError> {
        let (index, attr, partition) = match account {
            None => ("by_account", "gpk", "ALARMS".to_string()),
            Some(a) => ("by_status", "spk", account_partition(a)),
        };
        let (keys, next) = listing_page(
            &self.client,
            &self.table,
            (index, attr, &partition),
            limit,
            after,
        )
        .await?;
        let keys: Vec<String> = keys.iter().map(|k| text(k, "pk")).collect();
        let mut alarms = Vec::new();
        for pk in keys {
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(pk.clone(), "A")))
                .send()
                .await
                .map_err(unavailable)?;
            let Some(i) = got.item else { continue };
            alarms.push(alarm_of(&i)?);
        }
        Ok(Page {
            items: alarms,
            next,
        })
    }

    async fn leave(
        &self,
        id: &str,
        member: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let left = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ALARM#{id}"), "A")))
            .update_expression("DELETE aff :m")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.into()]))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match left {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if super::is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(unavailable(e)),
        };
        // DynamoDB drops a set left empty: nothing is affected any more.
        if !item.contains_key("aff") && text(&item, "status") != "resolved" {
            let resolved = AlarmStatus::Resolved;
            self.mark(id, resolved, actor, now, "attribute_not_exists(aff)")
                .await?;
        }
        Ok(true)
    }

    async fn set_status(
        &self,
        id: &str,
        status: AlarmStatus,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.mark(id, status, actor, now, "attribute_exists(pk)")
            .await
    }
}

impl DynamoAlarms {
    /// Sets an alarm's status and who handled it, if `condition` holds.
    async fn mark(
        &self,
        id: &str,
        status: AlarmStatus,
        actor: &Actor,
        now: Millis,
        condition: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ALARM#{id}"), "A")))
            .update_expression(if status == AlarmStatus::Resolved {
                "SET #st = :st, hb = :by, ha = :now REMOVE op"
            } else {
                "SET #st = :st, hb = :by, ha = :now"
            })
            .condition_expression(condition)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(word(status)))
            .expression_attribute_values(":by", s(&actor.0))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        applied(res)
    }
}
