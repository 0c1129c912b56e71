//! Arriving work: connectors (`CONN#<id>`, listed under `CONNS#<account>` and `CONNS`),
//! events (`EVENT#<id>`, listed under `EVENTS#<account>` and `EVENTS`, newest first), a
//! source's dedupe keys (`DEDUPE#<source>#<key>`, holding the event and when the key
//! frees), its counts (`SRC#<source>`), and watchers (`WATCH#<id>`, listed under
//! `WATCHERS#<account>` and `WATCHERS`, due under `WATCH` in `by_due` while enabled). An event and its key are written in one
//! transaction, so a key is never held by an event that was not stored.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use sha2::Digest as _;

use super::{
    Item, get_item, is_condition_failure, key, listing_page, n, number, s, text, unavailable,
};
use crate::domain::Millis;
use crate::domain::events::{
    Connector, EventOutcome, InboundEvent, SourceStats, Watcher, WatcherState,
};
use crate::ports::{Begun, Intake, Page, StoreError};

#[derive(Clone)]
pub struct DynamoIntake {
    client: Client,
    table: String,
}

impl DynamoIntake {
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn listed(
        pk: String,
        sk: &str,
        doc: String,
        account: &str,
        all: &str,
        at: Millis,
        id: &str,
    ) -> Item {
        let mut item = key(pk, sk);
        item.extend([
            ("doc".to_string(), s(doc)),
            ("spk".to_string(), s(format!("{all}#{account}"))),
            ("gpk".to_string(), s(all)),
            ("gsk".to_string(), s(format!("{at:013}#{id}"))),
        ]);
        item
    }

    fn watcher_item(w: &Watcher) -> Item {
        let mut stored = w.clone();
        stored.stats = SourceStats::default();
        let mut item = Self::listed(
            format!("WATCH#{}", w.id),
            "W",
            serde_json::to_string(&stored).expect("a watcher serialises"),
            &w.spec.account,
            "WATCHERS",
            w.created_at,
            &w.id,
        );
        item.insert("v".into(), n(w.version));
        // Sparse: a disabled watcher is never due.
        if w.state == WatcherState::Enabled {
            item.insert("dpk".into(), s("WATCH"));
            item.insert("dat".into(), n(w.next_poll_at));
        }
        item
    }

    fn event_item(e: &InboundEvent) -> Item {
        Self::listed(
            format!("EVENT#{}", e.id),
            "E",
            serde_json::to_string(e).expect("an event serialises"),
            &e.account,
            "EVENTS",
            e.received_at,
            &e.id,
        )
    }

    fn put(&self, item: Item) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .expect("table and item are set")
    }

    async fn docs<T: serde::de::DeserializeOwned>(
        &self,
        keys: &[Item],
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let pk = text(k, "pk");
            let sk = text(k, "sk");
            if let Some(item) = get_item(&self.client, &self.table, key(pk, &sk)).await? {
                out.push(doc(&item)?);
            }
        }
        Ok(out)
    }
}

/// A dedupe key's partition: long keys hashed, so any key fits.
fn dedupe_pk(source: &str, key: &str) -> String {
    if key.len() <= 200 {
        format!("DEDUPE#{source}#{key}")
    } else {
        format!(
            "DEDUPE#{source}#sha256:{}",
            hex::encode(sha2::Sha256::digest(key.as_bytes()))
        )
    }
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    serde_json::from_str(&text(item, "doc"))
        .map_err(|e| StoreError::Corrupt(format!("{} {}: {e}", text(item, "pk"), text(item, "sk"))))
}

fn stats_of(i: &Item) -> SourceStats {
    let count = |k| number(i, k).unwrap_or(0).max(0) as u64;
    SourceStats {
        received: count("r"),
        started: count("st"),
        deduped: count("dd"),
        ignored: count("ig"),
        failed: count("fl"),
        consecutive_failures: count("cf"),
        last_error: i.get("le").and_then(|v| v.as_s().ok()).cloned(),
        last_event_at: number(i, "la"),
    }
}

#[async_trait]
impl Intake for DynamoIntake {
    async fn create_connector(&self, c: &Connector) -> Result<(), StoreError> {
        let item = Self::listed(
            format!("CONN#{}", c.id),
            "C",
            serde_json::to_string(c).expect("a connector serialises"),
            &c.spec.account,
            "CONNS",
            c.created_at,
            &c.id,
        );
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::AlreadyExists(c.id.clone())),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn connector(&self, id: &str) -> Result<Option<Connector>, StoreError> {
        let Some(item) =
            get_item(&self.client, &self.table, key(format!("CONN#{id}"), "C")).await?
        else {
            return Ok(None);
        };
        Ok(Some(doc(&item)?))
    }

    async fn stats(&self, source: &str) -> Result<SourceStats, StoreError> {
        Ok(
            get_item(&self.client, &self.table, key(format!("SRC#{source}"), "S"))
                .await?
                .map(|i| stats_of(&i))
                .unwrap_or_default(),
        )
    }

    async fn connectors(&self, account: Option<&str>) -> Result<Vec<Connector>, StoreError> {
        let partition = account.map(|a| format!("CONNS#{a}"));
        let index = match &partition {
            Some(p) => ("by_status", "spk", p.as_str()),
            None => ("by_account", "gpk", "CONNS"),
        };
        let (keys, _) = listing_page(&self.client, &self.table, index, 1000, None).await?;
        let mut out: Vec<Connector> = self.docs(&keys).await?;
        for c in &mut out {
            c.stats = self.stats(&c.source()).await?;
        }
        Ok(out)
    }

    async fn delete_connector(&self, id: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("CONN#{id}"), "C")))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        super::applied(res)
    }

    async fn begin(
        &self,
        e: &InboundEvent,
        until: Millis,
        now: Millis,
    ) -> Result<Begun, StoreError> {
        let dpk = dedupe_pk(&e.source, &e.dedupe_key);
        let mut hold = key(dpk.clone(), "D");
        hold.insert("ev".into(), s(&e.id));
        hold.insert("exp".into(), n(until));
        // Deleted by the table's TTL once it no longer holds (`exp` decides before then).
        hold.insert("ttl".into(), n(until / 1000 + 1));
        let mut event = self.put(Self::event_item(e));
        event.condition_expression = Some("attribute_not_exists(pk)".into());
        let mut claim = self.put(hold);
        claim.condition_expression = Some("attribute_not_exists(pk) OR exp < :now".into());
        claim.expression_attribute_values =
            Some([(":now".to_string(), AttributeValue::N(now.to_string()))].into());
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(event).build())
            .transact_items(TransactWriteItem::builder().put(claim).build())
            .send()
            .await;
        let Err(err) = res else {
            return Ok(Begun::New);
        };
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
        let held = match err.as_service_error() {
            Some(E::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .get(1)
                .and_then(|r| r.code())
                .is_some_and(|c| c == "ConditionalCheckFailed"),
            _ => false,
        };
        if !held {
            return Err(unavailable(err));
        }
        let holder = get_item(&self.client, &self.table, key(dpk, "D"))
            .await?
            .map(|i| text(&i, "ev"))
            .ok_or_else(|| StoreError::Unavailable("a dedupe key freed while read".into()))?;
        match self.event(&holder).await? {
            Some(first) => Ok(Begun::Held(Box::new(first))),
            None => Err(StoreError::Corrupt(format!(
                "dedupe key {:?} of {} names event {holder}, which does not exist",
                e.dedupe_key, e.source
            ))),
        }
    }

    async fn put_event(&self, e: &InboundEvent) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::event_item(e)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn event(&self, id: &str) -> Result<Option<InboundEvent>, StoreError> {
        get_item(&self.client, &self.table, key(format!("EVENT#{id}"), "E"))
            .await?
            .map(|i| doc(&i))
            .transpose()
    }

    async fn events(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<InboundEvent>, StoreError> {
        let partition = account.map(|a| format!("EVENTS#{a}"));
        let index = match &partition {
            Some(p) => ("by_status", "spk", p.as_str()),
            None => ("by_account", "gpk", "EVENTS"),
        };
        let (keys, next) = listing_page(&self.client, &self.table, index, limit, after).await?;
        Ok(Page {
            items: self.docs(&keys).await?,
            next,
        })
    }

    async fn clear_key(&self, source: &str, k: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(dedupe_pk(source, k), "D")))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        super::applied(res)
    }

    async fn create_watcher(&self, w: &Watcher) -> Result<(), StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::watcher_item(w)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::AlreadyExists(w.id.clone())),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn watcher(&self, id: &str) -> Result<Option<Watcher>, StoreError> {
        let Some(item) =
            get_item(&self.client, &self.table, key(format!("WATCH#{id}"), "W")).await?
        else {
            return Ok(None);
        };
        Ok(Some(doc(&item)?))
    }

    async fn watchers(&self, account: Option<&str>) -> Result<Vec<Watcher>, StoreError> {
        let partition = account.map(|a| format!("WATCHERS#{a}"));
        let index = match &partition {
            Some(p) => ("by_status", "spk", p.as_str()),
            None => ("by_account", "gpk", "WATCHERS"),
        };
        let (keys, _) = listing_page(&self.client, &self.table, index, 1000, None).await?;
        let mut out: Vec<Watcher> = self.docs(&keys).await?;
        for w in &mut out {
            w.stats = self.stats(&w.source()).await?;
        }
        Ok(out)
    }

    async fn commit_watcher(&self, w: &Watcher) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::watcher_item(w)))
            .condition_expression("v = :prev")
            .expression_attribute_values(":prev", n(w.version.saturating_sub(1)))
            .send()
            .await;
        super::applied(res)
    }

    async fn delete_watcher(&self, id: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("WATCH#{id}"), "W")))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        super::applied(res)
    }

    async fn due_watchers(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_due")
            .key_condition_expression("dpk = :d AND dat <= :now")
            .expression_attribute_values(":d", s("WATCH"))
            .expression_attribute_values(":now", n(now));
        let mut ids = Vec::new();
        super::query_all(req, |k| {
            ids.extend(text(&k, "pk").strip_prefix("WATCH#").map(String::from));
            ids.len() < limit
        })
        .await?;
        Ok(ids)
    }

    async fn count(
        &self,
        source: &str,
        outcome: EventOutcome,
        error: Option<&str>,
        now: Millis,
    ) -> Result<SourceStats, StoreError> {
        let attr = match outcome {
            EventOutcome::Received => "r",
            EventOutcome::Started => "st",
            EventOutcome::Deduped => "dd",
            EventOutcome::Ignored => "ig",
            EventOutcome::Failed => "fl",
            EventOutcome::Missed => "ms",
        };
        let expr = match outcome {
            EventOutcome::Received => "ADD r :one SET la = :now".to_string(),
            EventOutcome::Failed => "ADD r :one, fl :one, cf :one SET la = :now, le = :err".into(),
            EventOutcome::Started => "ADD r :one, st :one SET la = :now, cf = :zero".into(),
            _ => format!("ADD r :one, {attr} :one SET la = :now"),
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("SRC#{source}"), "S")))
            .update_expression(expr)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        if outcome == EventOutcome::Failed {
            req = req.expression_attribute_values(":err", s(error.unwrap_or("failed")));
        }
        if outcome == EventOutcome::Started {
            req = req.expression_attribute_values(":zero", n(0));
        }
        let out = req.send().await.map_err(unavailable)?;
        Ok(out.attributes.as_ref().map(stats_of).unwrap_or_default())
    }
}
