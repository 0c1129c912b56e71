//! Webhook subscriptions and their deliveries, for operators. An account's admins manage
//! the account's subscriptions; stack operators also the stack's own (`account: None`),
//! which receive every account's events. Another account's subscription is not found.

use rand::RngCore;
use serde::Serialize;

use super::{Ops, OpsError};
use crate::domain::authz::Permission;
use crate::domain::webhooks::{
    self, Delivery, DeliveryState, Secrets, Subscription, SubscriptionState,
};
use crate::domain::{Caller, Millis, input};
use crate::ports::Page;
use crate::webhooks::{Builtin, Due, Outbox};

/// Subscriptions one account (or the stack) may have.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// The most failed deliveries one replay sends again.
pub const MAX_REPLAY: usize = 500;
/// Replayed deliveries leave at this rate (per second), so a receiver that just came back
/// is not flooded.
pub const REPLAY_PER_SECOND: i64 = 10;
/// One replay per subscription per this many milliseconds.
pub const REPLAY_COOLDOWN_MS: Millis = 60_000;

/// A new subscription and its signing secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub secret: String,
}

/// What a replay sent again.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub resent: Vec<String>,
    /// More failed deliveries wait beyond [`MAX_REPLAY`]: replay again (after the cooldown).
    pub more: bool,
}

impl Ops {
    fn outbox(&self) -> Result<Outbox, OpsError> {
        if self.stack.webhook_queue.is_empty() {
            return Err(OpsError::Config(
                "this stack has no webhook queue (deployed before webhooks existed?)".into(),
            ));
        }
        Ok(Outbox {
            queue: self.ports.queue.clone(),
            queue_url: self.stack.webhook_queue.clone(),
            clock: self.ports.clock.clone(),
        })
    }

    fn builtin(&self) -> Builtin {
        Builtin::new(
            &self.stack.notify_topic,
            &self.stack.publish_webhook.url,
            &self.stack.publish_webhook.secret_param,
        )
    }

    /// The subscription `id` if the caller may see it.
    pub async fn webhook(&self, id: &str, caller: &Caller) -> Result<Subscription, OpsError> {
        caller.may(Permission::Read)?;
        input::id("subscription", id).map_err(OpsError::Invalid)?;
        let found = if Builtin::is_builtin(id) {
            self.builtin().get(id)
        } else {
            self.ports.webhooks.subscription(id).await?
        };
        match found {
            Some(s) if caller.sees(s.account.as_deref()) => Ok(s),
            _ => Err(OpsError::NotFound(format!("webhook subscription {id}"))),
        }
    }

    /// The subscriptions of the caller's account; stack operators see the stack's own
    /// (with the e-mail subscription), or an account's with `account`.
    pub async fn webhooks(
        &self,
        account: Option<&str>,
        caller: &Caller,
    ) -> Result<Vec<Subscription>, OpsError> {
        caller.may(Permission::Read)?;
        let scope = caller.account().or(account);
        if let Some(a) = scope {
            input::id("account", a).map_err(OpsError::Invalid)?;
        }
        let mut subs = self.ports.webhooks.subscriptions(scope).await?;
        if scope.is_none() {
            subs.extend(self.builtin().all());
        }
        Ok(subs)
    }

    /// Registers an endpoint for `events` (`*`: all). Its signing secret is generated,
    /// kept in SSM and returned once.
    pub async fn create_webhook(
        &self,
        account: Option<&str>,
        url: &str,
        events: &[String],
        description: &str,
        caller: &Caller,
    ) -> Result<CreatedSubscription, OpsError> {
        caller.may(Permission::ManageWebhooks)?;
        let account = match caller.account() {
            Some(mine) => Some(mine),
            None => account,
        };
        if let Some(a) = account {
            input::id("account", a).map_err(OpsError::Invalid)?;
        }
        webhooks::check_url(url, self.stack.allow_loopback_webhooks).map_err(OpsError::Invalid)?;
        let events = webhooks::parse_events(events).map_err(OpsError::Invalid)?;
        if !description.is_empty() {
            input::text("description", description, 200).map_err(OpsError::Invalid)?;
        }
        self.outbox()?;
        if self.ports.webhooks.subscriptions(account).await?.len() >= MAX_SUBSCRIPTIONS {
            return Err(OpsError::LimitReached(format!(
                "{} already has {MAX_SUBSCRIPTIONS} webhook subscriptions; delete one first",
                account.unwrap_or("the stack")
            )));
        }
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let id = format!("wh_{}", hex::encode(bytes));
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let secrets = Secrets::new(&key);
        let secret_param = format!("{}{id}", self.stack.webhook_secrets);
        self.put_secrets(&secret_param, &secrets).await?;
        let sub = Subscription {
            id,
            account: account.map(String::from),
            url: url.into(),
            events,
            description: description.into(),
            state: SubscriptionState::Enabled,
            disabled_reason: None,
            created_at: self.ports.clock.now(),
            created_by: caller.actor.0.clone(),
            failing_since: None,
            secret_param,
        };
        self.ports.webhooks.put_subscription(&sub).await?;
        Ok(CreatedSubscription {
            subscription: sub,
            secret: secrets.current,
        })
    }

    async fn put_secrets(&self, param: &str, secrets: &Secrets) -> Result<(), OpsError> {
        let doc = serde_json::to_string(secrets).expect("secrets serialise");
        self.ports
            .params
            .put_secret(param, &doc)
            .await
            .map_err(|e| OpsError::Store(crate::ports::StoreError::Unavailable(e.to_string())))
    }

    /// A subscription the caller may change (not one the template declares).
    async fn managed(&self, id: &str, caller: &Caller) -> Result<Subscription, OpsError> {
        let sub = self.webhook(id, caller).await?;
        caller.may(Permission::ManageWebhooks)?;
        if Builtin::is_builtin(&sub.id) {
            return Err(OpsError::Invalid(format!(
                "{} is declared by the stack's template ({}); change it with sam deploy",
                sub.id, sub.description
            )));
        }
        Ok(sub)
    }

    /// Enables (clearing why it was disabled) or disables a subscription.
    pub async fn set_webhook(
        &self,
        id: &str,
        enabled: bool,
        caller: &Caller,
    ) -> Result<Subscription, OpsError> {
        self.managed(id, caller).await?;
        let (state, why) = if enabled {
            (SubscriptionState::Enabled, None)
        } else {
            (
                SubscriptionState::Disabled,
                Some(format!("disabled by {}", caller.actor.0)),
            )
        };
        self.ports
            .webhooks
            .set_subscription_state(id, state, why.as_deref())
            .await?;
        self.webhook(id, caller).await
    }

    /// A new signing secret; the old one keeps signing beside it for
    /// [`webhooks::ROTATION_OVERLAP_MS`] so receivers can switch without losing a delivery.
    pub async fn rotate_webhook(&self, id: &str, caller: &Caller) -> Result<String, OpsError> {
        let sub = self.managed(id, caller).await?;
        let raw = self
            .ports
            .params
            .get(&sub.secret_param)
            .await
            .map_err(|e| OpsError::Store(crate::ports::StoreError::Unavailable(e.to_string())))?;
        let old: Secrets = serde_json::from_str(&raw).map_err(|_| {
            OpsError::Store(crate::ports::StoreError::Corrupt(format!(
                "the secret of {id} is not a Shepherd secret document"
            )))
        })?;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let now = self.ports.clock.now();
        let new = old.rotated(&key, now, webhooks::ROTATION_OVERLAP_MS);
        self.put_secrets(&sub.secret_param, &new).await?;
        Ok(new.current)
    }

    /// Deletes a subscription and its secret; deliveries still queued for it fail.
    pub async fn delete_webhook(&self, id: &str, caller: &Caller) -> Result<(), OpsError> {
        let sub = self.managed(id, caller).await?;
        self.ports.webhooks.delete_subscription(id).await?;
        self.ports
            .params
            .delete(&sub.secret_param)
            .await
            .map_err(|e| OpsError::Store(crate::ports::StoreError::Unavailable(e.to_string())))
    }

    /// Queues a `webhook.test` delivery; its attempts show in `delivery` like any other.
    pub async fn test_webhook(&self, id: &str, caller: &Caller) -> Result<Delivery, OpsError> {
        let sub = self.webhook(id, caller).await?;
        caller.may(Permission::ResendWebhooks)?;
        let outbox = self.outbox()?;
        let now = self.ports.clock.now();
        let mut nonce = [0u8; 4];
        rand::rng().fill_bytes(&mut nonce);
        let event = crate::webhooks::test_event(&sub, now, &hex::encode(nonce));
        let d = Delivery::new(&sub.id, event, now);
        self.ports.webhooks.create_delivery(&d).await?;
        outbox.send(&[due(&d, 0)]).await?;
        Ok(d)
    }

    /// A subscription's deliveries, newest first; with `failed_since`, its failed ones
    /// created since then, oldest first.
    pub async fn deliveries(
        &self,
        id: &str,
        failed_since: Option<Millis>,
        limit: usize,
        after: Option<&str>,
        caller: &Caller,
    ) -> Result<Page<Delivery>, OpsError> {
        self.webhook(id, caller).await?;
        input::count("limit", limit, 1000).map_err(OpsError::Invalid)?;
        if let Some(t) = failed_since {
            input::instant("since", t).map_err(OpsError::Invalid)?;
        }
        Ok(self
            .ports
            .webhooks
            .deliveries(id, failed_since, limit, after)
            .await?)
    }

    /// One delivery with its attempts, if the caller may see its subscription.
    pub async fn delivery(&self, id: &str, caller: &Caller) -> Result<Delivery, OpsError> {
        caller.may(Permission::Read)?;
        input::id("delivery", id).map_err(OpsError::Invalid)?;
        let not_found = || OpsError::NotFound(format!("webhook delivery {id}"));
        let d = self
            .ports
            .webhooks
            .delivery(id)
            .await?
            .ok_or_else(not_found)?;
        match self.webhook(&d.subscription, caller).await {
            Ok(_) => Ok(d),
            // A deleted subscription's deliveries are its owner's history: the stack's.
            Err(OpsError::NotFound(_)) if caller.account().is_none() => Ok(d),
            Err(OpsError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// Sends a delivery that is not pending (failed, or delivered) again, with the same
    /// `webhook-id` and body, its retry schedule from the start.
    pub async fn resend(&self, id: &str, caller: &Caller) -> Result<Delivery, OpsError> {
        let d = self.delivery(id, caller).await?;
        caller.may(Permission::ResendWebhooks)?;
        let outbox = self.outbox()?;
        let now = self.ports.clock.now();
        let again = self.resend_one(&d, now, &outbox).await?;
        Ok(again)
    }

    async fn resend_one(
        &self,
        d: &Delivery,
        due_at: Millis,
        outbox: &Outbox,
    ) -> Result<Delivery, OpsError> {
        let Some(again) = d.resent(due_at) else {
            return Err(OpsError::Busy(format!(
                "delivery {} is pending (attempt {} of its schedule); it cannot be resent until it ends",
                d.id,
                d.attempt_in_round()
            )));
        };
        if !self
            .ports
            .webhooks
            .save_delivery(&again, d.attempts_started)
            .await?
        {
            return Err(OpsError::Busy(format!(
                "delivery {} changed while it was being resent; try again",
                d.id
            )));
        }
        outbox.send(&[due(&again, due_at)]).await?;
        Ok(again)
    }

    /// Sends again every failed delivery of a subscription created since `since` (at most
    /// [`MAX_REPLAY`], oldest first, [`REPLAY_PER_SECOND`] a second; one replay per
    /// subscription a minute).
    pub async fn replay(
        &self,
        id: &str,
        since: Millis,
        caller: &Caller,
    ) -> Result<Replayed, OpsError> {
        let sub = self.webhook(id, caller).await?;
        caller.may(Permission::ResendWebhooks)?;
        input::instant("since", since).map_err(OpsError::Invalid)?;
        let outbox = self.outbox()?;
        let now = self.ports.clock.now();
        if !Builtin::is_builtin(&sub.id)
            && !self
                .ports
                .webhooks
                .mark_replay(id, now, now - REPLAY_COOLDOWN_MS)
                .await?
        {
            return Err(OpsError::LimitReached(format!(
                "webhook {id} was replayed less than {} s ago; wait and replay again",
                REPLAY_COOLDOWN_MS / 1000
            )));
        }
        let mut resent = Vec::new();
        let mut after: Option<String> = None;
        let more = loop {
            let page = self
                .ports
                .webhooks
                .deliveries(id, Some(since), 100, after.as_deref())
                .await?;
            for d in page.items {
                if resent.len() >= MAX_REPLAY {
                    break;
                }
                if d.state != DeliveryState::Failed {
                    continue;
                }
                let due_at = now + (resent.len() as i64) * 1000 / REPLAY_PER_SECOND;
                self.resend_one(&d, due_at, &outbox).await?;
                resent.push(d.id);
            }
            match page.next {
                Some(n) if resent.len() < MAX_REPLAY => after = Some(n),
                Some(_) => break true,
                None => break false,
            }
        };
        Ok(Replayed { resent, more })
    }
}

fn due(d: &Delivery, not_before: Millis) -> Due {
    Due {
        delivery: d.id.clone(),
        group: format!("{}/{}", d.subscription, d.subject),
        not_before,
    }
}
