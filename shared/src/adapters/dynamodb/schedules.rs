//! Schedules (`SCHED#<id>`, sk `S`): the schedule as one JSON document (`doc`) with its
//! version (`v`), listed under `SCHEDS#<account>` (`by_status`) and `SCHEDS` (`by_account`),
//! and due under `SCHED` in the sparse `by_due` index (`dat`: when a tick next has
//! something to do). Its slot history sits in the same partition (`SLOT#<slot>#<at>`), so
//! a tick writes the schedule and the slots it decided in one transaction.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::{
    Item, get_item, is_condition_failure, key, listing_page, n, query_all, query_page, s, text,
    unavailable,
};
use crate::domain::Millis;
use crate::domain::schedule::{Schedule, SlotRecord};
use crate::ports::{Page, Schedules, StoreError};

/// The `by_due` partition of schedules.
const DUE: &str = "SCHED";
/// The `by_account` partition listing every schedule of the stack.
const ALL: &str = "SCHEDS";

#[derive(Clone)]
pub struct DynamoSchedules {
    client: Client,
    table: String,
}

impl DynamoSchedules {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn item(s: &Schedule, now: Millis) -> Item {
        let mut item = key(format!("SCHED#{}", s.id), "S");
        let listed = format!("{:013}#{}", s.created_at, s.id);
        item.extend([
            (
                "doc".into(),
                super::s(serde_json::to_string(s).expect("a schedule serialises")),
            ),
            ("v".into(), n(s.version)),
            ("dpk".into(), super::s(DUE)),
            ("dat".into(), n(s.due_at(now))),
            ("spk".into(), super::s(format!("SCHEDS#{}", s.spec.account))),
            ("gpk".into(), super::s(ALL)),
            ("gsk".into(), super::s(listed)),
        ]);
        item
    }

    fn slot_item(id: &str, r: &SlotRecord) -> Item {
        let mut item = key(
            format!("SCHED#{id}"),
            &format!("SLOT#{:013}#{:013}", r.slot, r.at),
        );
        item.insert(
            "doc".into(),
            s(serde_json::to_string(r).expect("a slot record serialises")),
        );
        item
    }

    fn put(&self, item: Item) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .expect("table and item are set")
    }
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    serde_json::from_str(&text(item, "doc"))
        .map_err(|e| StoreError::Corrupt(format!("{} {}: {e}", text(item, "pk"), text(item, "sk"))))
}

#[async_trait]
impl Schedules for DynamoSchedules {
    async fn create(&self, s: &Schedule, now: Millis) -> Result<(), StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(s, now)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::AlreadyExists(s.id.clone())),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        get_item(&self.client, &self.table, key(format!("SCHED#{id}"), "S"))
            .await?
            .map(|i| doc(&i))
            .transpose()
    }

    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Schedule>, StoreError> {
        let partition = account.map(|a| format!("SCHEDS#{a}"));
        let index = match &partition {
            Some(p) => ("by_status", "spk", p.as_str()),
            None => ("by_account", "gpk", ALL),
        };
        let (keys, next) = listing_page(&self.client, &self.table, index, limit, after).await?;
        let mut items = Vec::with_capacity(keys.len());
        for k in &keys {
            let id = text(k, "pk");
            if let Some(s) = self.get(id.trim_start_matches("SCHED#")).await? {
                items.push(s);
            }
        }
        Ok(Page { items, next })
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_due")
            .key_condition_expression("dpk = :d AND dat <= :now")
            .expression_attribute_values(":d", s(DUE))
            .expression_attribute_values(":now", n(now));
        let mut ids = Vec::new();
        query_all(req, |k| {
            ids.extend(text(&k, "pk").strip_prefix("SCHED#").map(String::from));
            ids.len() < limit
        })
        .await?;
        Ok(ids)
    }

    async fn commit(
        &self,
        sched: &Schedule,
        slots: &[SlotRecord],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut put = self.put(Self::item(sched, now));
        put.condition_expression = Some("v = :prev".into());
        put.expression_attribute_values =
            Some([(":prev".to_string(), n(sched.version.saturating_sub(1)))].into());
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build());
        for r in slots {
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .put(self.put(Self::slot_item(&sched.id, r)))
                    .build(),
            );
        }
        match tx.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
                let lost = match e.as_service_error() {
                    Some(E::TransactionCanceledException(c)) => c
                        .cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        .is_some_and(|c| c == "ConditionalCheckFailed"),
                    _ => false,
                };
                if lost { Ok(false) } else { Err(unavailable(e)) }
            }
        }
    }

    async fn history(
        &self,
        id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<SlotRecord>, StoreError> {
        let pk = format!("SCHED#{id}");
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :p AND begins_with(sk, :slot)")
            .expression_attribute_values(":p", s(&pk))
            .expression_attribute_values(":slot", s("SLOT#"))
            .scan_index_forward(false)
            .consistent_read(true);
        let (items, next) = query_page(req, limit, after, &["pk", "sk"], &pk, |k| {
            text(k, "sk").starts_with("SLOT#")
        })
        .await?;
        let items = items.iter().map(doc).collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("SCHED#{id}"), "S")))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        super::applied(res)
    }
}
