//! Webhook subscriptions (`WEBHOOK#<id>` / `W`) and deliveries (`DELIVERY#<id>` / `D`),
//! each kept whole as JSON (`doc`) beside the attributes their conditions and indexes need.
//! A subscription is listed under `WEBHOOKS#<account>` (`*` for the stack operators') in
//! `by_status`; a delivery under `DELIVERIES#<subscription>` there, and while it is failed
//! also under `FAILED#<subscription>` in the sparse `by_due` (by creation time), so failed
//! deliveries and a replay since a time read only failed ones.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, applied, get_item, key, listing_page, n, query_page, s, text, unavailable};
use crate::domain::Millis;
use crate::domain::webhooks::{Delivery, DeliveryState, Subscription, SubscriptionState};
use crate::ports::{Page, StoreError, Webhooks};

/// At most this many subscriptions are read for one account.
const MAX_LISTED: usize = 100;

fn subscriptions_partition(account: Option<&str>) -> String {
    format!("WEBHOOKS#{}", account.unwrap_or("*"))
}

#[derive(Clone)]
pub struct DynamoWebhooks {
    client: Client,
    table: String,
}

impl DynamoWebhooks {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn delivery_item(d: &Delivery) -> Result<Item, StoreError> {
        let doc = serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = key(format!("DELIVERY#{}", d.id), "D");
        item.insert("doc".into(), s(doc));
        item.insert("st".into(), s(state_word(d.state)));
        item.insert("att".into(), n(d.attempts_started));
        if let Some(l) = d.lease_until {
            item.insert("lease".into(), n(l));
        }
        item.insert("spk".into(), s(format!("DELIVERIES#{}", d.subscription)));
        item.insert("gsk".into(), s(format!("{:013}#{}", d.created_at, d.id)));
        if d.state == DeliveryState::Failed {
            item.insert("dpk".into(), s(format!("FAILED#{}", d.subscription)));
            item.insert("dat".into(), n(d.created_at));
        }
        Ok(item)
    }

    async fn put_delivery(
        &self,
        d: &Delivery,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::delivery_item(d)?))
            .condition_expression(condition);
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        applied(req.send().await)
    }

    async fn deliveries_of(&self, keys: Vec<Item>) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for k in keys {
            let id = text(&k, "pk");
            if let Some(d) = self.delivery(id.trim_start_matches("DELIVERY#")).await? {
                out.push(d);
            }
        }
        Ok(out)
    }
}

fn state_word(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    }
}

fn sub_state_word(s: SubscriptionState) -> &'static str {
    match s {
        SubscriptionState::Enabled => "enabled",
        SubscriptionState::Disabled => "disabled",
    }
}

/// The stored subscription with its state, reason and failing-since, which are written
/// on their own (a delivery's result must not overwrite an operator's change).
fn subscription_of(i: &Item) -> Result<Subscription, StoreError> {
    let mut sub: Subscription = doc(i, "subscription")?;
    sub.state = match text(i, "sst").as_str() {
        "disabled" => SubscriptionState::Disabled,
        _ => SubscriptionState::Enabled,
    };
    sub.disabled_reason = i.get("why").and_then(|v| v.as_s().ok()).cloned();
    sub.failing_since = super::number(i, "fsn");
    Ok(sub)
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(&text(item, "doc"))
        .map_err(|e| StoreError::Corrupt(format!("{what} {}: {e}", text(item, "pk"))))
}

#[async_trait]
impl Webhooks for DynamoWebhooks {
    async fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let body = serde_json::to_string(sub).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = key(format!("WEBHOOK#{}", sub.id), "W");
        item.insert("doc".into(), s(body));
        item.insert(
            "spk".into(),
            s(subscriptions_partition(sub.account.as_deref())),
        );
        item.insert(
            "gsk".into(),
            s(format!("{:013}#{}", sub.created_at, sub.id)),
        );
        item.insert("sst".into(), s(sub_state_word(sub.state)));
        if let Some(why) = &sub.disabled_reason {
            item.insert("why".into(), s(why));
        }
        if let Some(f) = sub.failing_since {
            item.insert("fsn".into(), n(f));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        get_item(&self.client, &self.table, key(format!("WEBHOOK#{id}"), "W"))
            .await?
            .map(|i| subscription_of(&i))
            .transpose()
    }

    async fn set_failing(
        &self,
        id: &str,
        failing: bool,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("WEBHOOK#{id}"), "W")))
            .condition_expression("attribute_exists(pk)")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        let req = if failing {
            req.update_expression("SET fsn = if_not_exists(fsn, :now)")
                .expression_attribute_values(":now", n(now))
        } else {
            req.update_expression("REMOVE fsn")
        };
        match req.send().await {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|a| super::number(a, "fsn"))),
            Err(e) if super::is_condition_failure(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("WEBHOOK#{id}"), "W")))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":st", s(sub_state_word(state)));
        let req = match reason {
            Some(why) => req
                .update_expression("SET sst = :st, why = :why")
                .expression_attribute_values(":why", s(why)),
            None => req.update_expression("SET sst = :st REMOVE why, fsn"),
        };
        applied(req.send().await)
    }

    async fn subscriptions(&self, account: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        let partition = subscriptions_partition(account);
        let (keys, _) = listing_page(
            &self.client,
            &self.table,
            ("by_status", "spk", &partition),
            MAX_LISTED,
            None,
        )
        .await?;
        let mut out = Vec::new();
        // Newest first from the index; oldest first here.
        for k in keys.iter().rev() {
            let id = text(k, "pk");
            if let Some(sub) = self.subscription(id.trim_start_matches("WEBHOOK#")).await? {
                out.push(sub);
            }
        }
        Ok(out)
    }

    async fn mark_replay(
        &self,
        id: &str,
        now: Millis,
        not_since: Millis,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("WEBHOOK#{id}"), "W")))
            .update_expression("SET rpl = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(rpl) OR rpl <= :since)",
            )
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":since", n(not_since))
            .send()
            .await;
        applied(res)
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("WEBHOOK#{id}"), "W")))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        applied(res)
    }

    async fn create_delivery(&self, d: &Delivery) -> Result<bool, StoreError> {
        self.put_delivery(d, "attribute_not_exists(pk)", vec![])
            .await
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        get_item(
            &self.client,
            &self.table,
            key(format!("DELIVERY#{id}"), "D"),
        )
        .await?
        .map(|i| doc(&i, "delivery"))
        .transpose()
    }

    async fn claim_delivery(
        &self,
        d: &Delivery,
        seen: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.put_delivery(
            d,
            "att = :seen AND st = :pending AND (attribute_not_exists(lease) OR lease < :now)",
            vec![
                (":seen", n(seen)),
                (":pending", s("pending")),
                (":now", n(now)),
            ],
        )
        .await
    }

    async fn save_delivery(&self, d: &Delivery, seen: u32) -> Result<bool, StoreError> {
        self.put_delivery(d, "att = :seen", vec![(":seen", n(seen))])
            .await
    }

    async fn deliveries(
        &self,
        subscription: &str,
        failed_since: Option<Millis>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        let (keys, next) = match failed_since {
            None => {
                let partition = format!("DELIVERIES#{subscription}");
                listing_page(
                    &self.client,
                    &self.table,
                    ("by_status", "spk", &partition),
                    limit,
                    after,
                )
                .await?
            }
            Some(since) => {
                let partition = format!("FAILED#{subscription}");
                let req = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name("by_due")
                    .key_condition_expression("dpk = :p AND dat >= :since")
                    .expression_attribute_values(":p", s(&partition))
                    .expression_attribute_values(":since", n(since));
                query_page(
                    req,
                    limit,
                    after,
                    &["dpk", "dat", "pk", "sk"],
                    &partition,
                    |k| super::number(k, "dat").is_some_and(|d| d >= since),
                )
                .await?
            }
        };
        Ok(Page {
            items: self.deliveries_of(keys).await?,
            next,
        })
    }
}
