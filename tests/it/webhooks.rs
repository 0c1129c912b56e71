//! Outbound webhooks (issue #12) on the local stack: events from the state stream, signed
//! as the Standard Webhooks specification says and verified by its reference library,
//! retried on the schedule with every attempt recorded, 410 disabling, replay, rotation, a
//! delivery function killed mid-batch, and e-mail through the notification topic.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shepherd::domain::webhooks::{Delivery, DeliveryState, SubscriptionState};
use shepherd::domain::{Act, Caller, ProductionStatus, Role, Scope};
use shepherd::ops::OpsError;
use shepherd::ports::{Clock, SystemClock};
use shepherd_it::receiver::{Answer, Receiver, verify};
use shepherd_it::{TestStack, brief};

const SETTLE: Duration = Duration::from_secs(90);

fn admin_of(account: &str) -> Caller {
    Caller::new(
        TestStack::actor(),
        Role::Admin,
        Scope::Account(account.into()),
    )
}

fn brief_of(account: &str) -> String {
    let mut b: serde_json::Value = serde_json::from_str(&brief(1)).unwrap();
    b["account"] = account.into();
    b.to_string()
}

/// Polls a delivery until `done` holds for it.
async fn delivery_until(
    t: &TestStack,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Delivery) -> bool,
) -> Delivery {
    let until = Instant::now() + timeout;
    loop {
        let d = t
            .ops
            .delivery(id, &TestStack::operator())
            .await
            .expect("delivery readable");
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < until, "timed out; delivery is {d:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_each_event_once_in_commit_order_signed_as_the_standard_says() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;
    let mail = t.inbox().await;
    let acme = Receiver::start().await;
    let stack = Receiver::start().await;
    let acme_sub = t.subscribe(&acme, &["*"], &admin_of("acme")).await;
    // The stack operators' subscription sees every account's completions.
    t.subscribe(
        &stack,
        &["production.completed"],
        &TestStack::caller(Role::Admin),
    )
    .await;

    let p = t.start_production(1).await;
    let g = t
        .ops
        .start(&brief_of("globex"), &TestStack::operator())
        .await
        .unwrap();
    let c = t.start_production(1).await;
    t.ops
        .act(&c.id, Act::Cancel, &TestStack::operator())
        .await
        .unwrap();
    for id in [&p.id, &g.id] {
        t.wait_for(id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
        t.ops
            .act(id, Act::Approve, &TestStack::operator())
            .await
            .unwrap();
        let done = t.wait_settled(id, SETTLE).await;
        assert_eq!(done.status, ProductionStatus::Completed);
    }

    let of = |got: &[shepherd_it::receiver::Received], id: &str| -> Vec<String> {
        got.iter()
            .filter(|r| r.json()["data"]["production_id"] == id)
            .map(|r| r.event_type())
            .collect()
    };
    let got = acme
        .wait(SETTLE, |got| {
            of(got, &p.id).len() >= 3 && of(got, &c.id).len() >= 2
        })
        .await;
    // Nothing more comes: each event once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_now = acme.got();
    assert_eq!(got_now.len(), got.len(), "no event arrives twice");
    assert_eq!(
        of(&got_now, &p.id),
        [
            "production.created",
            "approval.requested",
            "production.completed"
        ],
        "in commit order"
    );
    assert_eq!(
        of(&got_now, &c.id),
        ["production.created", "production.cancelled"]
    );
    assert!(
        of(&got_now, &g.id).is_empty(),
        "another account's events are not acme's"
    );
    let ids: BTreeSet<&str> = got_now.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), got_now.len(), "one webhook-id per event");
    for r in &got_now {
        assert_eq!(
            r.verified,
            Ok(()),
            "the reference library verifies {}",
            r.id
        );
        assert!(r.id.starts_with("msg_") && r.signature.starts_with("v1,"));
    }

    let completed = stack.wait(SETTLE, |got| got.len() >= 2).await;
    let completed_ids: BTreeSet<String> = completed
        .iter()
        .map(|r| {
            assert_eq!(r.event_type(), "production.completed");
            assert_eq!(r.verified, Ok(()));
            r.json()["data"]["production_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(completed_ids, BTreeSet::from([p.id.clone(), g.id.clone()]));

    // The delivery log says the same: delivered at the first attempt, with the status.
    let log = t
        .ops
        .deliveries(&acme_sub, None, 100, None, &admin_of("acme"))
        .await
        .unwrap()
        .items;
    assert_eq!(log.len(), got_now.len());
    for d in &log {
        assert_eq!(d.state, DeliveryState::Delivered, "{d:#?}");
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].status, Some(200));
    }
    // Another account's admin does not see the subscription.
    let hidden = t.ops.webhook(&acme_sub, &admin_of("globex")).await;
    assert!(matches!(hidden, Err(OpsError::NotFound(_))), "{hidden:?}");

    // E-mail: each approval request once (critical alarms go the same way).
    let mails = t.notices(&mail, 2, Duration::from_secs(30)).await;
    let email_log = t
        .ops
        .deliveries("email", None, 100, None, &TestStack::operator())
        .await
        .unwrap()
        .items;
    assert_eq!(mails.len(), 2, "{mails:#?} {email_log:#?}");
    for m in &mails {
        assert!(
            m["Subject"]
                .as_str()
                .unwrap()
                .contains("approval.requested"),
            "{m}"
        );
    }
    assert!(t.notices(&mail, 1, Duration::from_secs(2)).await.is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_three_attempts_all_recorded_and_retry_after_is_honoured() {
    let t = TestStack::start(&[("WebhookRetrySchedule", "1,1,1")]).await;
    let rx = Receiver::start().await;
    let sub = t
        .subscribe(&rx, &["*"], &TestStack::caller(Role::Admin))
        .await;
    rx.script([
        Answer::status(500),
        Answer::status(500),
        Answer::status(200),
    ]);
    let d = t
        .ops
        .test_webhook(&sub, &TestStack::operator())
        .await
        .unwrap();
    let done = delivery_until(&t, &d.id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(done.state, DeliveryState::Delivered, "{done:#?}");
    let statuses: Vec<Option<u16>> = done.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    assert!(
        done.attempts
            .iter()
            .all(|a| a.excerpt.starts_with("answer"))
    );
    let got = rx.got();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id == d.id && r.verified.is_ok()));

    // A 429 asking for 3 s is waited out although the schedule says 1 s.
    rx.script([Answer::status(429).retry_after("3"), Answer::status(200)]);
    let d = t
        .ops
        .test_webhook(&sub, &TestStack::operator())
        .await
        .unwrap();
    let done = delivery_until(&t, &d.id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(done.state, DeliveryState::Delivered, "{done:#?}");
    let gap = done.attempts[1].at - done.attempts[0].at;
    assert!(gap >= 3000, "the retry came {gap} ms after the 429");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscription_with_an_alarm_until_it_is_enabled() {
    let t = TestStack::start(&[("WebhookRetrySchedule", "1,1")]).await;
    let mail = t.inbox().await;
    let rx = Receiver::start().await;
    let sub = t.subscribe(&rx, &["*"], &admin_of("acme")).await;
    // The stack operators hear of alarms as they open.
    let ops_rx = Receiver::start().await;
    t.subscribe(&ops_rx, &["alarm.raised"], &TestStack::caller(Role::Admin))
        .await;
    rx.script([Answer::status(410)]);
    let d = t.ops.test_webhook(&sub, &admin_of("acme")).await.unwrap();
    let done = delivery_until(&t, &d.id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(done.state, DeliveryState::Failed);
    assert_eq!(done.attempts.len(), 1, "410 is not retried");
    let s = t.ops.webhook(&sub, &admin_of("acme")).await.unwrap();
    assert_eq!(s.state, SubscriptionState::Disabled);
    assert!(s.disabled_reason.unwrap().contains("410"));
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.id() == format!("webhook_disabled#{sub}"))
        .expect("a webhook_disabled alarm");
    assert_eq!(alarm.account.as_deref(), Some("acme"));
    // A critical alarm reaches people by e-mail, and alarm subscribers, once.
    let mails = t.notices(&mail, 1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0]["Subject"]
            .as_str()
            .unwrap()
            .contains("alarm.raised")
    );
    assert!(
        mails[0]["Message"]
            .as_str()
            .unwrap()
            .contains("webhook_disabled")
    );
    let raised = ops_rx
        .wait(Duration::from_secs(30), |g| !g.is_empty())
        .await;
    assert_eq!(
        raised[0].json()["data"]["alarm_id"],
        format!("webhook_disabled#{sub}")
    );
    assert_eq!(raised[0].json()["data"]["severity"], "critical");

    // Disabled: nothing is sent, and the delivery says why.
    let d = t.ops.test_webhook(&sub, &admin_of("acme")).await.unwrap();
    let skipped = delivery_until(&t, &d.id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(skipped.state, DeliveryState::Failed);
    assert!(
        skipped.attempts[0].excerpt.contains("disabled"),
        "{skipped:#?}"
    );
    assert_eq!(rx.got().len(), 1);

    t.ops
        .set_webhook(&sub, true, &admin_of("acme"))
        .await
        .unwrap();
    let d = t.ops.test_webhook(&sub, &admin_of("acme")).await.unwrap();
    let ok = delivery_until(&t, &d.id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await;
    assert_eq!(ok.state, DeliveryState::Delivered);
    assert!(
        t.notices(&mail, 1, Duration::from_secs(2)).await.is_empty(),
        "mailed once"
    );
    assert_eq!(ops_rx.got().len(), 1, "raised once");
    t.stop().await;
}

/// A delivery once it is no longer pending.
async fn settled(t: &TestStack, id: &str) -> Delivery {
    delivery_until(t, id, Duration::from_secs(30), |d| {
        d.state != DeliveryState::Pending
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_since_a_time_resends_exactly_the_failed_ones_at_a_limited_rate() {
    let t = TestStack::start(&[("WebhookRetrySchedule", "1")]).await;
    let rx = Receiver::start().await;
    let sub = t
        .subscribe(&rx, &["*"], &TestStack::caller(Role::Admin))
        .await;
    let op = TestStack::operator();
    rx.otherwise(Answer::status(503));
    let before = t.ops.test_webhook(&sub, &op).await.unwrap();
    assert_eq!(settled(&t, &before.id).await.state, DeliveryState::Failed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = SystemClock.now();
    let mut failed = BTreeSet::new();
    for _ in 0..3 {
        let d = t.ops.test_webhook(&sub, &op).await.unwrap();
        failed.insert(d.id);
    }
    for id in &failed {
        let d = settled(&t, id).await;
        assert_eq!(d.state, DeliveryState::Failed);
        assert_eq!(d.attempts.len(), 2, "the first attempt and one retry");
    }
    rx.otherwise(Answer::status(200));
    let fine = t.ops.test_webhook(&sub, &op).await.unwrap();
    assert_eq!(settled(&t, &fine.id).await.state, DeliveryState::Delivered);

    let listed: BTreeSet<String> = t
        .ops
        .deliveries(&sub, Some(since), 100, None, &op)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, failed, "the failed ones since then, no other");

    let replayed = t.ops.replay(&sub, since, &op).await.unwrap();
    let resent: BTreeSet<String> = replayed.resent.into_iter().collect();
    assert_eq!(resent, failed);
    for id in &failed {
        let d = settled(&t, id).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{d:#?}");
        assert_eq!(d.resends, 1);
        assert_eq!(d.attempts.len(), 3);
    }
    let untouched = t.ops.delivery(&before.id, &op).await.unwrap();
    assert_eq!(
        untouched.state,
        DeliveryState::Failed,
        "failed before the time: not replayed"
    );
    assert_eq!(
        t.ops.delivery(&fine.id, &op).await.unwrap().attempts.len(),
        1
    );
    // The receiver got each replayed one again under the same webhook-id.
    let got = rx.got();
    for id in &failed {
        assert_eq!(got.iter().filter(|r| &r.id == id).count(), 3);
    }
    // Rate-limited: one replay a minute per subscription.
    let again = t.ops.replay(&sub, since, &op).await;
    assert!(matches!(again, Err(OpsError::LimitReached(_))), "{again:?}");
    // A pending delivery is not resent over its schedule.
    rx.script([Answer::status(200).delayed(Duration::from_secs(2))]);
    let slow = t.ops.test_webhook(&sub, &op).await.unwrap();
    let busy = t.ops.resend(&slow.id, &op).await;
    assert!(matches!(busy, Err(OpsError::Busy(_))), "{busy:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_old_and_new_secrets_and_tampering_is_refused() {
    let t = TestStack::start(&[]).await;
    let rx = Receiver::start().await;
    let created = t
        .ops
        .create_webhook(None, &rx.url, &["*".into()], "", &admin_of("acme"))
        .await
        .unwrap();
    let (sub, old) = (created.subscription.id, created.secret);
    rx.trust(&[&old]);
    let new = t.ops.rotate_webhook(&sub, &admin_of("acme")).await.unwrap();
    assert_ne!(new, old);
    let d = t.ops.test_webhook(&sub, &admin_of("acme")).await.unwrap();
    let got = rx.wait(Duration::from_secs(30), |g| !g.is_empty()).await;
    let r = &got[0];
    assert_eq!(r.id, d.id);
    assert_eq!(r.signature.split(' ').count(), 2, "{}", r.signature);
    // A receiver still on the old secret, and one already on the new, both verify.
    assert_eq!(
        verify(std::slice::from_ref(&old), &r.body, &r.headers),
        Ok(())
    );
    assert_eq!(
        verify(std::slice::from_ref(&new), &r.body, &r.headers),
        Ok(())
    );
    assert!(
        verify(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
            &r.body,
            &r.headers
        )
        .is_err()
    );
    // Tampered with, or stale: refused.
    let mut body = r.body.to_vec();
    body[5] ^= 1;
    assert!(verify(std::slice::from_ref(&new), &body, &r.headers).is_err());
    let mut stale = r.headers.clone();
    let old_ts: i64 = r.timestamp.parse().unwrap();
    stale.insert(
        "webhook-timestamp",
        (old_ts - 600).to_string().parse().unwrap(),
    );
    assert!(verify(std::slice::from_ref(&new), &r.body, &stale).is_err());
    // The secret is never shown again: the subscription carries only its parameter's name.
    let shown =
        serde_json::to_string(&t.ops.webhook(&sub, &admin_of("acme")).await.unwrap()).unwrap();
    assert!(!shown.contains(&new) && !shown.contains(&old));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_function_killed_mid_batch_loses_nothing() {
    let t = TestStack::start(&[
        ("WebhookFunctionTimeoutSeconds", "5"),
        ("WebhookQueueVisibilitySeconds", "6"),
    ])
    .await;
    let rx = Receiver::start().await;
    let sub = t
        .subscribe(&rx, &["*"], &TestStack::caller(Role::Admin))
        .await;
    // The first answer takes 3 s: the kill, 2 s into the batch, lands while it is in
    // flight (the batch's attempts run one after another: one subscription, one subject).
    rx.script([Answer::status(200).delayed(Duration::from_secs(3))]);
    t.crash_next("webhook-deliver", Duration::from_secs(2));
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        ids.insert(
            t.ops
                .test_webhook(&sub, &TestStack::operator())
                .await
                .unwrap()
                .id,
        );
    }
    let mut unrecorded = 0;
    for id in &ids {
        let d = delivery_until(&t, id, Duration::from_secs(60), |d| {
            d.state != DeliveryState::Pending
        })
        .await;
        assert_eq!(d.state, DeliveryState::Delivered, "{d:#?}");
        // The killed attempt was claimed and never recorded; the next one was.
        unrecorded += d.attempts_started as usize - d.attempts.len();
    }
    assert_eq!(unrecorded, 1, "one attempt was killed in flight");
    let got = rx.got();
    let received: BTreeSet<String> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        received, ids,
        "every delivery arrived; a repeat has its webhook-id"
    );
    assert_eq!(
        got.len(),
        ids.len() + 1,
        "the killed attempt reached the receiver and was sent again"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_manages_subscriptions_within_the_callers_account() {
    let t = TestStack::start(&[]).await;
    let rx = Receiver::start().await;
    let new =
        serde_json::json!({"url": rx.url, "events": ["production.completed", "alarm.raised"]});
    // Viewers and operators read; admins manage.
    let (status, body) = t
        .http(
            "POST",
            "/webhooks",
            Some("operator-acme"),
            Some(new.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = t
        .http("POST", "/webhooks", Some("admin-acme"), Some(new))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["account"], "acme");
    let secret = body["secret"].as_str().unwrap();
    rx.trust(&[secret]);
    // Bad input names the problem and creates nothing.
    for (bad, field) in [
        (
            serde_json::json!({"url": "http://hooks.example.com/x", "events": ["*"]}),
            "url",
        ),
        (
            serde_json::json!({"url": rx.url, "events": ["production.done"]}),
            "production.done",
        ),
        (serde_json::json!({"url": rx.url, "events": []}), "events"),
        (
            serde_json::json!({"url": rx.url, "events": ["*"], "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, body) = t
            .http("POST", "/webhooks", Some("admin-acme"), Some(bad))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (_, listed) = t.http("GET", "/webhooks", Some("viewer-acme"), None).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(
        listed.to_string().find(secret).is_none(),
        "the secret is shown once"
    );
    // Another account's callers do not see it.
    let (status, _) = t
        .http(
            "GET",
            &format!("/webhooks/{id}"),
            Some("admin-globex"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = t
        .http(
            "POST",
            &format!("/webhooks/{id}/test"),
            Some("operator-globex"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, listed) = t.http("GET", "/webhooks", Some("admin-globex"), None).await;
    assert!(listed["webhooks"].as_array().unwrap().is_empty());

    let (status, d) = t
        .http(
            "POST",
            &format!("/webhooks/{id}/test"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{d}");
    let got = rx.wait(Duration::from_secs(30), |g| !g.is_empty()).await;
    assert_eq!(got[0].verified, Ok(()));
    assert_eq!(got[0].event_type(), "webhook.test");
    let delivery = d["id"].as_str().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, d) = t
            .http(
                "GET",
                &format!("/deliveries/{delivery}"),
                Some("viewer-acme"),
                None,
            )
            .await;
        if d["state"] == "delivered" {
            assert_eq!(d["attempts"][0]["status"], 200);
            break;
        }
        assert!(Instant::now() < until, "{d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, page) = t
        .http(
            "GET",
            &format!("/webhooks/{id}/deliveries?limit=10"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1, "{page}");
    // A delivered one may be resent (202), a replay needs its time.
    let (status, _) = t
        .http(
            "POST",
            &format!("/deliveries/{delivery}/resend"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = t
        .http(
            "POST",
            &format!("/webhooks/{id}/replay"),
            Some("operator-acme"),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = t
        .http(
            "PATCH",
            &format!("/webhooks/{id}"),
            Some("admin-acme"),
            Some(serde_json::json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "disabled");
    let (status, body) = t
        .http(
            "DELETE",
            &format!("/webhooks/{id}"),
            Some("admin-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = t
        .http("GET", &format!("/webhooks/{id}"), Some("admin-acme"), None)
        .await;
    assert_eq!(status, 404);
    t.stop().await;
}

/// The template's publish webhook is a stack subscription to completions: signed with the
/// secret in `PublishWebhookSecretParameter`, retried on its own, so a receiver's outage
/// no longer fails the production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_webhook_is_a_signed_subscription_and_its_outage_fails_no_production() {
    let rx = Receiver::start().await;
    let t = TestStack::start(&[
        ("PublishWebhookUrl", rx.url.as_str()),
        ("WebhookRetrySchedule", "1"),
    ])
    .await;
    // The secret the template's Shepherd::Secrets put in SSM.
    let secret = aws_sdk_ssm::Client::new(&t.sdk)
        .get_parameter()
        .name("/shepherd/webhooks/publish/secret")
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap();
    rx.trust(&[&secret]);
    rx.script([Answer::status(502)]);
    let p = t.start_production(1).await;
    t.completes(&p.id, SETTLE).await;
    let got = rx.wait(SETTLE, |g| g.len() >= 2).await;
    assert!(got.iter().all(|r| r.verified.is_ok() && r.id == got[0].id));
    assert_eq!(got[0].event_type(), "production.completed");
    assert_eq!(got[0].json()["data"]["production_id"], p.id.as_str());
    let subs = t.ops.webhooks(None, &TestStack::operator()).await.unwrap();
    let publish = subs.iter().find(|s| s.id == "publish").expect("listed");
    assert_eq!(publish.url, rx.url);
    let refused = t
        .ops
        .rotate_webhook("publish", &TestStack::caller(Role::Admin))
        .await;
    assert!(matches!(refused, Err(OpsError::Invalid(_))), "{refused:?}");
    t.stop().await;
}
