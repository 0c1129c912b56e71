//! Outbound webhooks: the fan-out (a consumer of the state table's stream: each committed
//! change that is an event becomes one delivery per subscription that wants it, stored, then
//! queued) and the deliverer (the webhook queue's consumer: one signed attempt per message,
//! recorded, retried on the schedule of `domain::webhooks`). Deliveries are stored before
//! they are queued and claimed before they are attempted, so a fan-out or deliverer that
//! dies loses nothing; the worst a crash does is send an attempt again with the same
//! `webhook-id`, which receivers deduplicate on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::domain::Millis;
use crate::domain::alarms::{Alarm, AlarmKind, AlarmStatus, Raise, Severity};
use crate::domain::webhooks::{
    self, Attempt, Delivery, DeliveryState, Event, EventType, Secrets, Subscription,
    SubscriptionState, Verdict,
};
use crate::ports::{
    Alarms, Change, Clock, CommittedWrite, Notifier, Params, Queue, SendError, StoreError,
    WebhookSender, Webhooks,
};
use crate::protocol::OutMessage;

/// The subscription that e-mails people through the stack's notification topic: critical
/// alarms as they open, approval requests, and approvals renewed or expired unanswered.
pub const EMAIL_SUBSCRIPTION: &str = "email";
/// The stack's publish webhook (`PublishWebhookUrl`): completions, signed like any other.
pub const PUBLISH_SUBSCRIPTION: &str = "publish";

/// The subscriptions the stack's template declares (not stored; changed by `sam deploy`):
/// e-mail through the notification topic, and the publish webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Builtin {
    /// The notification topic's ARN.
    pub email_topic: Option<String>,
    /// The publish webhook's URL and the SSM parameter of its secret.
    pub publish: Option<(String, String)>,
}

impl Builtin {
    pub fn new(email_topic: &str, publish_url: &str, publish_secret: &str) -> Self {
        Self {
            email_topic: (!email_topic.is_empty()).then(|| email_topic.to_string()),
            publish: (!publish_url.is_empty())
                .then(|| (publish_url.to_string(), publish_secret.to_string())),
        }
    }

    /// Whether `id` names one of them.
    pub fn is_builtin(id: &str) -> bool {
        id == EMAIL_SUBSCRIPTION || id == PUBLISH_SUBSCRIPTION
    }

    pub fn all(&self) -> Vec<Subscription> {
        let mut out = Vec::new();
        if let Some(topic) = &self.email_topic {
            out.push(stack_subscription(
                EMAIL_SUBSCRIPTION,
                format!("sns:{topic}"),
                vec![
                    EventType::ApprovalRequested,
                    EventType::ApprovalExpiring,
                    EventType::ApprovalExpired,
                    EventType::AlarmRaised,
                ],
                "e-mail to the stack's notification topic (AlarmEmail)",
                String::new(),
            ));
        }
        if let Some((url, secret)) = &self.publish {
            out.push(stack_subscription(
                PUBLISH_SUBSCRIPTION,
                url.clone(),
                vec![EventType::ProductionCompleted],
                "the publish webhook (PublishWebhookUrl)",
                secret.clone(),
            ));
        }
        out
    }

    pub fn get(&self, id: &str) -> Option<Subscription> {
        self.all().into_iter().find(|s| s.id == id)
    }
}

fn stack_subscription(
    id: &str,
    url: String,
    events: Vec<EventType>,
    description: &str,
    secret_param: String,
) -> Subscription {
    Subscription {
        id: id.into(),
        account: None,
        url,
        events,
        description: description.into(),
        state: SubscriptionState::Enabled,
        disabled_reason: None,
        created_at: 0,
        created_by: "stack".into(),
        failing_since: None,
        secret_param,
    }
}

/// What the webhook queue carries: a stored delivery to attempt, not before a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Due {
    pub delivery: String,
    /// `<subscription>/<subject>`: attempts of one group in one batch run in order.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub not_before: Millis,
}

impl Due {
    fn message(&self, now: Millis) -> OutMessage {
        let wait = (self.not_before - now).max(0);
        OutMessage {
            id: self.delivery.chars().take(80).collect(),
            body: serde_json::to_string(self).expect("due serialises"),
            attributes: vec![],
            delay: (wait > 0).then(|| (wait as u64).div_ceil(1000).min(900) as u32),
        }
    }
}

fn body(kind: &EventType, at: Millis, data: serde_json::Value) -> String {
    serde_json::json!({
        "type": kind.as_str(),
        "timestamp": crate::view::time(at),
        "data": data,
    })
    .to_string()
}

/// The events a committed production write carries, in the order of its audit events. Ids
/// depend on the subscription, the production, the write's version and the event's index:
/// a stream record read twice makes the same events.
pub fn production_events(w: &CommittedWrite, subscription: &str) -> Vec<Event> {
    w.events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let kind = EventType::of_audit(&e.kind, w.status)?;
            let data = serde_json::json!({
                "production_id": w.production_id,
                "account": w.account,
                "status": w.status.map(|s| s.as_str()),
                "phase": e.phase,
                "attempt": e.attempt,
                "outcome": e.outcome.as_str(),
                "actor": w.actor,
                "trace_id": w.trace_id,
                "detail": (!e.detail.is_empty()).then(|| crate::domain::redact::redact(&e.detail).text),
            });
            Some(Event {
                id: webhooks::event_id(&[
                    subscription,
                    &w.production_id,
                    &w.version.to_string(),
                    &i.to_string(),
                ]),
                body: body(&kind, e.at, data),
                kind,
                subject: w.production_id.clone(),
                account: Some(w.account.clone()),
                at: e.at,
            })
        })
        .collect()
}

/// The event an alarm's stored state is, if any: `opened` says this write opened it (its
/// first occurrence, or the first since it was resolved), which is when a raised alarm is
/// announced; a repeat is counted, not sent again. A resolution is sent once per resolve.
pub fn alarm_event(a: &Alarm, opened: bool, subscription: &str) -> Option<Event> {
    let (kind, at) = match a.status {
        AlarmStatus::Open if opened => (EventType::AlarmRaised, a.last_seen),
        AlarmStatus::Resolved => (EventType::AlarmResolved, a.last_seen),
        _ => return None,
    };
    let id = a.id();
    let data = serde_json::json!({
        "alarm_id": id,
        "type": a.kind.as_str(),
        "subject": a.subject,
        "account": a.account,
        "severity": a.severity,
        "status": a.status,
        "count": a.count,
        "first_seen": crate::view::time(a.first_seen),
        "detail": a.detail,
        "resolved_by": a.handled_by,
    });
    Some(Event {
        id: webhooks::event_id(&[
            subscription,
            &id,
            kind.as_str(),
            &at.to_string(),
            &a.count.to_string(),
        ]),
        body: body(&kind, at, data),
        kind,
        subject: id,
        account: a.account.clone(),
        at,
    })
}

/// A `webhook.test` event for `subscription` at `now` (`nonce` tells tests apart).
pub fn test_event(subscription: &Subscription, now: Millis, nonce: &str) -> Event {
    let kind = EventType::Test;
    Event {
        id: webhooks::event_id(&[&subscription.id, "test", &now.to_string(), nonce]),
        body: body(
            &kind,
            now,
            serde_json::json!({"subscription_id": subscription.id, "message": "a test delivery from Shepherd"}),
        ),
        kind,
        subject: subscription.id.clone(),
        account: subscription.account.clone(),
        at: now,
    }
}

/// Queues deliveries to the webhook queue.
#[derive(Clone)]
pub struct Outbox {
    pub queue: Arc<dyn Queue>,
    pub queue_url: String,
    pub clock: Arc<dyn Clock>,
}

impl Outbox {
    pub async fn send(&self, due: &[Due]) -> Result<(), StoreError> {
        if due.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let messages: Vec<OutMessage> = due.iter().map(|d| d.message(now)).collect();
        let failed = self
            .queue
            .send_batch(&self.queue_url, &messages)
            .await
            .map_err(|e| StoreError::Unavailable(format!("webhook queue: {}", e.0)))?;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "webhook queue refused {} message(s)",
                failed.len()
            )))
        }
    }
}

/// The stream consumer that turns committed changes into deliveries.
pub struct Fanout {
    pub store: Arc<dyn Webhooks>,
    pub outbox: Outbox,
    /// The subscriptions the template declares.
    pub builtin: Builtin,
}

/// How far a fan-out in stream order got.
#[derive(Debug, Default)]
pub struct FannedOut {
    pub deliveries: usize,
    /// The first change that could not be fanned out (its index) and why; every change
    /// before it is done.
    pub failed: Option<(usize, StoreError)>,
}

impl Fanout {
    /// Fans out `changes` in order, stopping at the first that fails (the stream mapping
    /// retries from it). Creating a delivery is idempotent (its id is derived from the
    /// change), and its queue message is sent again on a retry: a duplicate message finds
    /// the delivery claimed or done and is dropped.
    pub async fn handle(&self, changes: &[Change]) -> FannedOut {
        let mut done = FannedOut::default();
        let mut subs: HashMap<Option<String>, Vec<Subscription>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            match self.one(c, &mut subs).await {
                Ok(n) => done.deliveries += n,
                Err(e) => {
                    done.failed = Some((i, e));
                    return done;
                }
            }
        }
        done
    }

    /// The subscriptions that may want an event of `account`: its own and the stack's
    /// (read once per batch).
    async fn subscribers(
        &self,
        account: Option<&str>,
        cache: &mut HashMap<Option<String>, Vec<Subscription>>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let mut out = Vec::new();
        let mut keys = vec![None];
        if let Some(a) = account {
            keys.push(Some(a.to_string()));
        }
        for k in keys {
            if !cache.contains_key(&k) {
                let mut found = self.store.subscriptions(k.as_deref()).await?;
                if k.is_none() {
                    found.extend(self.builtin.all());
                }
                cache.insert(k.clone(), found);
            }
            out.extend(cache[&k].iter().cloned());
        }
        Ok(out)
    }

    async fn one(
        &self,
        change: &Change,
        cache: &mut HashMap<Option<String>, Vec<Subscription>>,
    ) -> Result<usize, StoreError> {
        let account = match change {
            Change::Production(w) => Some(w.account.clone()),
            Change::Alarm(a, _) => a.account.clone(),
        };
        let subs = self.subscribers(account.as_deref(), cache).await?;
        let now = self.outbox.clock.now();
        let mut due = Vec::new();
        for sub in &subs {
            let events: Vec<Event> = match change {
                Change::Production(w) => production_events(w, &sub.id),
                Change::Alarm(a, opened) => {
                    if sub.id == EMAIL_SUBSCRIPTION && !webhooks::mails(a) {
                        continue;
                    }
                    alarm_event(a, *opened, &sub.id).into_iter().collect()
                }
            };
            for e in events {
                if !sub.wants(&e.kind, account.as_deref()) {
                    continue;
                }
                let d = Delivery::new(&sub.id, e, now);
                self.store.create_delivery(&d).await?;
                due.push(Due {
                    group: format!("{}/{}", d.subscription, d.subject),
                    delivery: d.id,
                    not_before: 0,
                });
            }
        }
        let n = due.len();
        self.outbox.send(&due).await?;
        Ok(n)
    }
}

/// The webhook queue's consumer.
pub struct Deliverer {
    pub store: Arc<dyn Webhooks>,
    pub outbox: Outbox,
    /// The signing secrets (SSM SecureStrings).
    pub params: Arc<dyn Params>,
    pub alarms: Arc<dyn Alarms>,
    pub sender: Arc<dyn WebhookSender>,
    pub notifier: Option<Arc<dyn Notifier>>,
    /// The subscriptions the template declares.
    pub builtin: Builtin,
    /// How long an attempt holds its delivery: the function's timeout, less than the
    /// queue's visibility timeout, so a message that comes back after a crash finds the
    /// claim expired.
    pub lease_ms: Millis,
    /// Seconds before each retry (`domain::webhooks::RETRY_SCHEDULE_SECS` by default).
    pub schedule: Vec<u64>,
}

/// A queue message: its id and what its body says.
type Message = (String, Result<Due, String>);

/// What became of one queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Attempted(Option<u16>),
    /// Not due yet: queued again for later.
    Deferred,
    /// Nothing to do (done, claimed by another attempt, or gone).
    Dropped(&'static str),
}

impl Deliverer {
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        if Builtin::is_builtin(id) {
            return Ok(self.builtin.get(id));
        }
        self.store.subscription(id).await
    }

    /// Handles the messages of one batch: those of one subscription and subject in the
    /// order they came (so a healthy receiver gets a production's events in commit order),
    /// different ones at once. The ids of messages to retry are returned.
    pub async fn handle(&self, messages: Vec<(String, String)>) -> Vec<String> {
        let mut groups: Vec<(String, Vec<Message>)> = Vec::new();
        for (id, body) in messages {
            let due = serde_json::from_str::<Due>(&body).map_err(|e| e.to_string());
            let key = match &due {
                Ok(d) if !d.group.is_empty() => d.group.clone(),
                _ => id.clone(),
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push((id, due)),
                None => groups.push((key, vec![(id, due)])),
            }
        }
        let runs = groups.into_iter().map(|(_, group)| async move {
            let mut failed = Vec::new();
            for (id, due) in group {
                let res = match due {
                    Ok(d) => self.one(&d).await,
                    Err(e) => Err(StoreError::Corrupt(format!("not a webhook message: {e}"))),
                };
                match res {
                    Ok(h) => tracing::debug!(message = %id, handled = ?h, "webhook message"),
                    Err(e) => {
                        warn!(message = %id, error = %e, "webhook message failed; the queue delivers it again");
                        failed.push(id);
                    }
                }
            }
            failed
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One message: attempt its delivery if it is due and no other attempt holds it.
    pub async fn one(&self, due: &Due) -> Result<Handled, StoreError> {
        let now = self.outbox.clock.now();
        let Some(d) = self.store.delivery(&due.delivery).await? else {
            warn!(delivery = %due.delivery, "a queued delivery that is not stored: dropped");
            return Ok(Handled::Dropped("unknown delivery"));
        };
        if d.state != DeliveryState::Pending {
            return Ok(Handled::Dropped("not pending"));
        }
        let wait_until = d.due.max(due.not_before);
        if wait_until > now {
            self.outbox
                .send(&[Due {
                    delivery: d.id.clone(),
                    group: due.group.clone(),
                    not_before: wait_until,
                }])
                .await?;
            return Ok(Handled::Deferred);
        }
        let sub = match self.subscription(&d.subscription).await? {
            Some(s) if s.state == SubscriptionState::Enabled => s,
            other => {
                let why = match other {
                    Some(s) => format!(
                        "the subscription is disabled ({})",
                        s.disabled_reason.as_deref().unwrap_or("by an operator")
                    ),
                    None => "the subscription was deleted".to_string(),
                };
                let mut failed = d.clone();
                failed.state = DeliveryState::Failed;
                failed.attempts.push(Attempt {
                    at: now,
                    status: None,
                    latency_ms: 0,
                    excerpt: format!("not sent: {why}"),
                });
                self.store
                    .save_delivery(&failed, d.attempts_started)
                    .await?;
                return Ok(Handled::Dropped("subscription not enabled"));
            }
        };
        let mut mine = d.clone();
        mine.attempts_started += 1;
        mine.lease_until = Some(now + self.lease_ms);
        if !self
            .store
            .claim_delivery(&mine, d.attempts_started, now)
            .await?
        {
            return Ok(Handled::Dropped("another attempt holds it"));
        }
        let started = Instant::now();
        let answer = self.send(&sub, &mine, now).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (status, excerpt, retry_after) = match &answer {
            Ok(a) => (
                Some(a.status),
                webhooks::excerpt(&a.body),
                a.retry_after
                    .as_deref()
                    .and_then(|v| webhooks::retry_after(v, now)),
            ),
            Err(e) => (None, webhooks::excerpt(&e.to_string()), None),
        };
        mine.attempts.push(Attempt {
            at: now,
            status,
            latency_ms,
            excerpt,
        });
        mine.lease_until = None;
        let verdict = match &answer {
            Err(SendError::Refused(why)) => Verdict::Refused(why.clone()),
            _ => webhooks::verdict(&self.schedule, mine.attempt_in_round(), status, retry_after),
        };
        let mut next = None;
        match &verdict {
            Verdict::Delivered => mine.state = DeliveryState::Delivered,
            Verdict::Gone | Verdict::Exhausted | Verdict::Refused(_) => {
                mine.state = DeliveryState::Failed
            }
            Verdict::RetryIn(secs) => {
                mine.due = now + (*secs as i64) * 1000;
                next = Some(Due {
                    delivery: mine.id.clone(),
                    group: due.group.clone(),
                    not_before: mine.due,
                });
            }
        }
        if !self
            .store
            .save_delivery(&mine, mine.attempts_started)
            .await?
        {
            // Our claim expired and another attempt started: it records its own result.
            return Ok(Handled::Dropped("claim lost"));
        }
        info!(delivery = %mine.id, subscription = %sub.id, attempt = mine.attempts_started, status = ?status, verdict = ?verdict, "webhook attempt");
        let outcome = match &verdict {
            Verdict::Delivered => "WebhookDelivered",
            Verdict::RetryIn(_) => "WebhookRetried",
            Verdict::Gone | Verdict::Exhausted | Verdict::Refused(_) => "WebhookFailed",
        };
        crate::metrics::Document::new()
            .count(outcome, 1)
            .millis("WebhookLatency", latency_ms)
            .property("delivery_id", mine.id.as_str())
            .property("subscription_id", sub.id.as_str())
            .property("event", mine.kind.as_str())
            .property("subject", mine.subject.as_str())
            .emit();
        if !Builtin::is_builtin(&sub.id) {
            self.after(&sub, &verdict, now).await?;
        }
        if let Some(n) = next {
            self.outbox.send(&[n]).await?;
        }
        Ok(Handled::Attempted(status))
    }

    /// Signs and sends one attempt (or publishes it, for the e-mail subscription).
    async fn send(
        &self,
        sub: &Subscription,
        d: &Delivery,
        now: Millis,
    ) -> Result<crate::ports::WebhookAnswer, SendError> {
        if sub.id == EMAIL_SUBSCRIPTION {
            let Some(n) = &self.notifier else {
                return Err(SendError::Failed("no notification topic".into()));
            };
            let subject = format!("Shepherd: {} ({})", d.kind, d.subject);
            return n
                .notify(&subject, &d.body)
                .await
                .map(|_| crate::ports::WebhookAnswer {
                    status: 200,
                    body: String::new(),
                    retry_after: None,
                })
                .map_err(SendError::Failed);
        }
        let raw = self
            .params
            .get(&sub.secret_param)
            .await
            .map_err(|e| SendError::Failed(format!("signing secret: {e}")))?;
        let secrets = Secrets::parse(&raw).map_err(|e| SendError::Failed(e.to_string()))?;
        let timestamp = now / 1000;
        let signature = webhooks::signature(&secrets.signing(now), &d.id, timestamp, &d.body)
            .map_err(|e| SendError::Failed(e.to_string()))?;
        let headers = [
            ("webhook-id", d.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        self.sender.post(&sub.url, &headers, &d.body).await
    }

    /// What an attempt's result does to its subscription: a success clears its failing
    /// time; a failure starts it, and one failing for days, or a 410, disables it with an
    /// alarm (which e-mails the stack's people and reaches alarm subscribers).
    async fn after(&self, sub: &Subscription, v: &Verdict, now: Millis) -> Result<(), StoreError> {
        let why = match v {
            Verdict::Delivered => {
                if sub.failing_since.is_some() {
                    self.store.set_failing(&sub.id, false, now).await?;
                }
                return Ok(());
            }
            Verdict::Gone => "the endpoint answered 410 Gone".to_string(),
            Verdict::Refused(why) => format!("its address is not one a webhook may reach: {why}"),
            Verdict::RetryIn(_) | Verdict::Exhausted => {
                let since = self.store.set_failing(&sub.id, true, now).await?;
                match since {
                    Some(t) if now - t >= webhooks::DISABLE_AFTER_FAILING_MS => {
                        format!("every delivery failed since {}", crate::view::time(t))
                    }
                    _ => return Ok(()),
                }
            }
        };
        self.store
            .set_subscription_state(&sub.id, SubscriptionState::Disabled, Some(&why))
            .await?;
        let mut raise = Raise::new(
            AlarmKind::WebhookDisabled,
            &sub.id,
            Severity::Critical,
            format!(
                "webhook {} to {} disabled: {why}; enable it with `shepherd webhooks enable {}` once the receiver is fixed, then replay what failed",
                sub.id, sub.url, sub.id
            ),
        );
        raise.account = sub.account.clone();
        self.alarms.raise(&raise, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuditEvent, AuditKind, Outcome, ProductionStatus};

    fn write(events: Vec<AuditEvent>, status: ProductionStatus) -> CommittedWrite {
        CommittedWrite {
            production_id: "p1".into(),
            account: "acme".into(),
            trace_id: "t".into(),
            version: 3,
            status: Some(status),
            actor: "system".into(),
            events,
        }
    }

    #[test]
    fn a_write_makes_the_same_events_each_time_it_is_read() {
        let w = write(
            vec![
                AuditEvent::new(AuditKind::PhaseSucceeded, Outcome::Success, 5),
                AuditEvent::new(AuditKind::ProductionCompleted, Outcome::Success, 5),
            ],
            ProductionStatus::Completed,
        );
        let a = production_events(&w, "wh_1");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, EventType::ProductionCompleted);
        assert_eq!(a, production_events(&w, "wh_1"));
        assert_ne!(a[0].id, production_events(&w, "wh_2")[0].id);
        let body: serde_json::Value = serde_json::from_str(&a[0].body).unwrap();
        assert_eq!(body["type"], "production.completed");
        assert_eq!(body["data"]["production_id"], "p1");
    }

    #[test]
    fn a_failed_phase_that_ends_the_production_is_production_failed() {
        let failed = AuditEvent::new(AuditKind::PhaseFailed, Outcome::Failure, 5);
        let w = write(vec![failed.clone()], ProductionStatus::Failed);
        assert_eq!(
            production_events(&w, "s")[0].kind,
            EventType::ProductionFailed
        );
        let w = write(vec![failed], ProductionStatus::Running);
        assert_eq!(production_events(&w, "s")[0].kind, EventType::PhaseFailed);
    }
}
