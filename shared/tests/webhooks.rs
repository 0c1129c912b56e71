//! The webhook fan-out and deliverer on the memory adapter, with a clock the test moves:
//! what needs days of time (an endpoint failing for days) or exact repeats (a stream
//! record read twice). Their fidelity on AWS is proven on the emulator (tests/it).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shepherd::adapters::memory::Memory;
use shepherd::domain::alarms::AlarmKind;
use shepherd::domain::webhooks::{
    DISABLE_AFTER_FAILING_MS, DeliveryState, EventType, RETRY_SCHEDULE_SECS, Secrets, Subscription,
    SubscriptionState,
};
use shepherd::domain::{AuditEvent, AuditKind, Outcome, ProductionStatus};
use shepherd::ports::{
    Alarms, Change, CommittedWrite, Queue, WebhookAnswer, WebhookSender, Webhooks,
};
use shepherd::webhooks::{Builtin, Deliverer, Fanout, Outbox};

const QUEUE: &str = "mem://webhooks";
const DAY: i64 = 86_400_000;

/// Answers every POST with `status`, counting them; or, with `refuse` set, refuses to send
/// as the HTTP sender does for an address a webhook may not reach.
#[derive(Default)]
struct Endpoint {
    status: Mutex<u16>,
    calls: Mutex<Vec<(String, String)>>,
    refuse: Mutex<Option<String>>,
}

#[async_trait]
impl WebhookSender for Endpoint {
    async fn post(
        &self,
        _url: &str,
        headers: &[(&str, String)],
        _body: &str,
    ) -> Result<WebhookAnswer, shepherd::ports::SendError> {
        if let Some(why) = self.refuse.lock().unwrap().clone() {
            return Err(shepherd::ports::SendError::Refused(why));
        }
        let id = headers
            .iter()
            .find(|(k, _)| *k == "webhook-id")
            .unwrap()
            .1
            .clone();
        let sig = headers
            .iter()
            .find(|(k, _)| *k == "webhook-signature")
            .unwrap()
            .1
            .clone();
        self.calls.lock().unwrap().push((id, sig));
        Ok(WebhookAnswer {
            status: *self.status.lock().unwrap(),
            body: String::new(),
            retry_after: None,
        })
    }
}

struct World {
    mem: Arc<Memory>,
    endpoint: Arc<Endpoint>,
    deliverer: Deliverer,
    fanout: Fanout,
}

fn world(status: u16) -> World {
    let mem = Arc::new(Memory::new(10 * DAY));
    let endpoint = Arc::new(Endpoint::default());
    *endpoint.status.lock().unwrap() = status;
    let outbox = Outbox {
        queue: mem.clone(),
        queue_url: QUEUE.into(),
        clock: mem.clone(),
    };
    World {
        deliverer: Deliverer {
            store: mem.clone(),
            outbox: outbox.clone(),
            params: mem.clone(),
            alarms: mem.clone(),
            sender: endpoint.clone(),
            notifier: None,
            builtin: Builtin::default(),
            lease_ms: 60_000,
            schedule: RETRY_SCHEDULE_SECS.to_vec(),
        },
        fanout: Fanout {
            store: mem.clone(),
            outbox,
            builtin: Builtin::default(),
        },
        mem,
        endpoint,
    }
}

async fn subscribe(w: &World, failing_since: Option<i64>) -> Subscription {
    let sub = Subscription {
        id: "wh_1".into(),
        account: Some("acme".into()),
        url: "https://hooks.example.com/in".into(),
        events: vec![EventType::ProductionCompleted],
        description: String::new(),
        state: SubscriptionState::Enabled,
        disabled_reason: None,
        created_at: 0,
        created_by: "test".into(),
        failing_since,
        secret_param: "/t/webhooks/wh_1".into(),
    };
    let secrets = Secrets::new(&[3; 32]);
    w.mem
        .set_param(&sub.secret_param, &serde_json::to_string(&secrets).unwrap());
    w.mem.put_subscription(&sub).await.unwrap();
    sub
}

fn completed(account: &str) -> Change {
    Change::Production(CommittedWrite {
        production_id: "p1".into(),
        account: account.into(),
        trace_id: "t1".into(),
        version: 7,
        status: Some(ProductionStatus::Completed),
        actor: "system:publish".into(),
        events: vec![
            AuditEvent::new(AuditKind::PhaseSucceeded, Outcome::Success, 5),
            AuditEvent::new(AuditKind::ProductionCompleted, Outcome::Success, 5),
        ],
    })
}

/// What the queue's event source does: hands the visible messages to the deliverer and
/// deletes those it did not fail.
async fn pump(w: &World) -> usize {
    let got = w.mem.receive(QUEUE, 10, 30).await.unwrap();
    let n = got.len();
    let failed = w
        .deliverer
        .handle(got.iter().map(|m| (m.id.clone(), m.body.clone())).collect())
        .await;
    for m in got {
        if !failed.contains(&m.id) {
            w.mem.delete(QUEUE, &m.receipt).await.unwrap();
        }
    }
    n
}

#[tokio::test]
async fn a_stream_record_read_twice_delivers_its_event_once() {
    let w = world(204);
    subscribe(&w, None).await;
    let first = w
        .fanout
        .handle(&[completed("acme"), completed("globex")])
        .await;
    assert!(first.failed.is_none());
    assert_eq!(first.deliveries, 1, "globex's completion is not acme's");
    // The stream mapping retries the batch: the same delivery, queued again.
    let again = w.fanout.handle(&[completed("acme")]).await;
    assert_eq!(again.deliveries, 1);
    assert_eq!(w.mem.messages(QUEUE).len(), 2);
    while pump(&w).await > 0 {}
    let calls = w.endpoint.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "the repeat message found it delivered");
    let d = w.mem.delivery(&calls[0].0).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.attempts.len(), 1);
}

#[tokio::test]
async fn the_schedule_runs_eight_attempts_over_a_day_then_the_delivery_fails() {
    let w = world(500);
    subscribe(&w, None).await;
    w.fanout.handle(&[completed("acme")]).await;
    let mut waited = Vec::new();
    loop {
        pump(&w).await;
        let d = w
            .mem
            .deliveries("wh_1", None, 10, None)
            .await
            .unwrap()
            .items[0]
            .clone();
        if d.state != DeliveryState::Pending {
            assert_eq!(d.state, DeliveryState::Failed);
            assert_eq!(d.attempts.len(), 8);
            break;
        }
        // Past the next attempt's time; the message comes back through delays of at most
        // 15 minutes, re-queued as often as it takes.
        let wait = d.due - shepherd::ports::Clock::now(w.mem.as_ref());
        waited.push(wait / 1000);
        while shepherd::ports::Clock::now(w.mem.as_ref()) < d.due {
            w.mem.advance(
                900_000
                    .min(d.due - shepherd::ports::Clock::now(w.mem.as_ref()))
                    .max(1),
            );
            pump(&w).await;
        }
    }
    assert_eq!(waited, RETRY_SCHEDULE_SECS.map(|s| s as i64));
    let sub = w.mem.subscription("wh_1").await.unwrap().unwrap();
    assert!(sub.failing_since.is_some());
    assert_eq!(
        sub.state,
        SubscriptionState::Enabled,
        "a day of failures is not yet days"
    );
}

#[tokio::test]
async fn an_endpoint_failing_for_days_is_disabled_with_an_alarm_and_a_success_clears_it() {
    let w = world(503);
    let now = shepherd::ports::Clock::now(w.mem.as_ref());
    subscribe(&w, Some(now - DISABLE_AFTER_FAILING_MS)).await;
    w.fanout.handle(&[completed("acme")]).await;
    pump(&w).await;
    let sub = w.mem.subscription("wh_1").await.unwrap().unwrap();
    assert_eq!(sub.state, SubscriptionState::Disabled);
    assert!(
        sub.disabled_reason
            .unwrap()
            .contains("every delivery failed since")
    );
    let alarms = w.mem.list(None, 10, None).await.unwrap().items;
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].kind, AlarmKind::WebhookDisabled);
    assert_eq!(alarms[0].account.as_deref(), Some("acme"));

    // Failing a little while is not failing for days; a success clears it.
    let w = world(503);
    let now = shepherd::ports::Clock::now(w.mem.as_ref());
    subscribe(&w, Some(now - DAY)).await;
    w.fanout.handle(&[completed("acme")]).await;
    pump(&w).await;
    assert_eq!(
        w.mem.subscription("wh_1").await.unwrap().unwrap().state,
        SubscriptionState::Enabled
    );
    *w.endpoint.status.lock().unwrap() = 200;
    w.mem.advance(5_000);
    while pump(&w).await > 0 {}
    assert_eq!(
        w.mem
            .subscription("wh_1")
            .await
            .unwrap()
            .unwrap()
            .failing_since,
        None
    );
}

#[tokio::test]
async fn a_receiver_whose_address_is_refused_is_disabled_at_once_with_an_alarm() {
    let w = world(204);
    subscribe(&w, None).await;
    // The name resolves, at delivery time, to the instance metadata's address.
    *w.endpoint.refuse.lock().unwrap() =
        Some("hooks.example.com resolves to 169.254.169.254 (a link-local address)".into());
    w.fanout.handle(&[completed("acme")]).await;
    pump(&w).await;
    let d = w
        .mem
        .deliveries("wh_1", None, 10, None)
        .await
        .unwrap()
        .items[0]
        .clone();
    assert_eq!(
        d.state,
        DeliveryState::Failed,
        "no retry can cure an address"
    );
    assert_eq!(d.attempts.len(), 1);
    assert!(
        d.attempts[0].excerpt.contains("169.254.169.254"),
        "{:?}",
        d.attempts
    );
    let sub = w.mem.subscription("wh_1").await.unwrap().unwrap();
    assert_eq!(sub.state, SubscriptionState::Disabled);
    assert!(
        sub.disabled_reason
            .unwrap()
            .contains("its address is not one a webhook may reach")
    );
    let alarms = w.mem.list(None, 10, None).await.unwrap().items;
    assert_eq!(alarms[0].kind, AlarmKind::WebhookDisabled);
}
