//! The recovery sweep against the local stack: it reads only what is due, recovers it, and
//! two sweeps at once do no harm.

use std::time::Duration;

use shepherd::domain::{PhaseStatus, ProductionStatus};
use shepherd::runtime::{PhaseMessage, Stats};
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_lost_between_commit_and_send_is_redispatched_and_completes() {
    let mut t = TestStack::start_idle_with(&[("LostDispatchSeconds", "0")]).await;
    let p = t.start_production(1).await;
    t.drain("BriefQueue").await; // the message never arrived
    assert_eq!(t.depth("BriefQueue").await, 0);

    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!((report.due, report.redispatched), (1, 1), "{report:?}");
    t.wait_depth("BriefQueue", 1, SETTLE).await;
    let msg = &t.peek("BriefQueue").await[0];
    assert_eq!(
        PhaseMessage::parse(msg.body().unwrap(), "brief")
            .unwrap()
            .attempt,
        1,
        "same attempt"
    );

    t.run().await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    assert_eq!(done.due_at, None, "nothing left for the sweep");
    let after = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(after.due, 0, "the sweep reads only what is due");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overlapping_sweeps_redispatch_once() {
    // The redispatch is due again after LostDispatchSeconds: long enough that a sweep
    // slowed by a loaded machine does not legitimately find it due a second time.
    let t = TestStack::start_idle_with(&[("LostDispatchSeconds", "4")]).await;
    let p = t.start_production(1).await;
    t.drain("BriefQueue").await;
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let (a, b) = (t.sweeper().await, t.sweeper().await);
    let (ra, rb) = tokio::join!(a.sweep(), b.sweep());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.redispatched + rb.redispatched, 1, "{ra:?} {rb:?}");
    t.wait_depth("BriefQueue", 1, SETTLE).await;
    assert_eq!(
        t.ops
            .get(&p.id, &TestStack::operator())
            .await
            .unwrap()
            .version,
        2,
        "one change"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_dispatch_is_left_alone() {
    let t = TestStack::start_idle_with(&[("LostDispatchSeconds", "300")]).await;
    let p = t.start_production(1).await;
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(
        (report.due, report.redispatched, report.skipped),
        (1, 0, 1),
        "{report:?}"
    );
    assert_eq!(
        t.ops
            .get(&p.id, &TestStack::operator())
            .await
            .unwrap()
            .version,
        1
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_fails_the_phase_when_so_configured() {
    let t = TestStack::start(&[("ApprovalPhases", "brief"), ("ApprovalTtlSeconds", "1")]).await;
    let (rx, mail) = listeners(&t).await;
    let p = t.start_production(1).await;
    t.wait_for(&p.id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(report.approvals_expired, 1, "{report:?}");
    let p = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(p.status, ProductionStatus::Failed);
    let brief = p.phase("brief").unwrap();
    assert_eq!(
        (
            brief.status,
            brief.last_error.as_ref().unwrap().code.as_str()
        ),
        (PhaseStatus::Failed, "approval_expired")
    );
    heard(
        &t,
        &p.id,
        "approval_expired",
        "approval.expired",
        &rx,
        &mail,
    )
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_is_renewed_when_so_configured() {
    let t = TestStack::start(&[
        ("ApprovalPhases", "brief"),
        ("ApprovalTtlSeconds", "1"),
        ("ApprovalOnExpiry", "renew"),
    ])
    .await;
    let (rx, mail) = listeners(&t).await;
    let p = t.start_production(1).await;
    let first = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(report.approvals_renewed, 1, "{report:?}");
    let p = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(p.status, ProductionStatus::AwaitingApproval);
    let a = p.approval.as_ref().unwrap();
    assert_eq!(a.renewals, 1);
    assert!(a.expires_at > first.approval.as_ref().unwrap().expires_at);
    heard(
        &t,
        &p.id,
        "approval_renewed",
        "approval.expiring",
        &rx,
        &mail,
    )
    .await;
    t.stop().await;
}

/// A webhook subscriber of every event, and the notification topic's inbox (e-mail).
async fn listeners(t: &TestStack) -> (shepherd_it::receiver::Receiver, String) {
    let rx = shepherd_it::receiver::Receiver::start().await;
    let admin = TestStack::caller(shepherd::domain::Role::Admin);
    t.subscribe(&rx, &["*"], &admin).await;
    (rx, t.inbox().await)
}

/// F-07: an approval that expired unanswered raised `alarm` naming the production, and
/// `event` reached the subscriber and the e-mail inbox.
async fn heard(
    t: &TestStack,
    id: &str,
    alarm: &str,
    event: &str,
    rx: &shepherd_it::receiver::Receiver,
    mail: &str,
) {
    let alarms = t.alarms().await;
    assert!(
        alarms
            .iter()
            .any(|a| a.kind.as_str() == alarm && a.subject == id),
        "{alarm} for {id}: {alarms:#?}"
    );
    let got = rx
        .wait(SETTLE, |got| got.iter().any(|r| r.event_type() == event))
        .await;
    let delivered = got.iter().find(|r| r.event_type() == event).unwrap();
    assert_eq!(delivered.json()["data"]["production_id"], id);
    // E-mailed: the subject names the event type.
    let about = |m: &serde_json::Value| m["Subject"].as_str().is_some_and(|s| s.contains(event));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let mut mails = Vec::new();
    while !mails.iter().any(about) && std::time::Instant::now() < until {
        mails.extend(t.notices(mail, 1, Duration::from_secs(2)).await);
    }
    assert!(mails.iter().any(about), "no {event} e-mail: {mails:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_the_dlq_whose_phase_was_never_marked_is_observed() {
    let t = TestStack::start_idle().await;
    let p = t.start_production(1).await;
    // The worker died on the last receive: SQS moved the message, nobody marked the phase.
    t.drain("BriefQueue").await;
    t.sqs()
        .send_message()
        .queue_url(t.queue_url("BriefDeadLetterQueue"))
        .message_body(PhaseMessage::new(&p.id, "brief", 1).to_body())
        .send()
        .await
        .unwrap();
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(report.dead_letters_observed, 1, "{report:?}");
    let p = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(p.status, ProductionStatus::DeadLettered);
    assert_eq!(
        p.phase("brief").unwrap().last_error.as_ref().unwrap().code,
        "dead_lettered_unhandled"
    );
    let again = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(again.dead_letters_observed, 0, "observed once");
    let alarms = t.alarms().await;
    assert!(
        alarms
            .iter()
            .any(|a| a.kind == "dlq_arrival" && a.subject == p.id),
        "{alarms:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_phase_is_reconciled_by_the_sweep_after_its_lease_and_completes_without_repeating_finished_calls()
 {
    // Leases last 8 s; the queues keep their default visibility (360 s): the killed
    // worker's message would come back only after six minutes.
    let t = TestStack::start(&[
        ("PhaseTimeoutSeconds", "8"),
        ("ProviderTimeoutSeconds", "10"),
    ])
    .await;
    // Five images, made at once; scene 4's is slow, and the worker dies while waiting for
    // it (the other four outcomes are already recorded). Made again, it takes 2.5 s: the
    // re-run is still under way when the alarm is read.
    t.provider.add_fault(
        FaultRule::new("images", Fault::Slow { ms: 6000 })
            .key("#assets#scene-4")
            .times(1),
    );
    t.provider.add_fault(
        FaultRule::new("images", Fault::Slow { ms: 2500 })
            .key("#assets#scene-4")
            .times(1),
    );
    t.crash_next("assets", Duration::from_millis(3000));
    let p = t.start_production(5).await;
    // The first sweep after the lease expires reconciles it (the production is due then).
    let claimed = t
        .wait_for(&p.id, SETTLE, |p| {
            p.phase("assets")
                .is_some_and(|a| a.attempt == 1 && a.lease_until.is_some())
        })
        .await;
    let lease = claimed.phase("assets").unwrap().lease_until.unwrap();
    let wait = lease - shepherd::ports::Clock::now(&shepherd::ports::SystemClock) + 300;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!((report.due, report.reconciled), (1, 1), "{report:?}");
    // F-05: one alarm for the phase, listing the production.
    let stuck = |alarms: Vec<shepherd::domain::alarms::Alarm>| {
        alarms
            .into_iter()
            .find(|a| a.kind.as_str() == "production_stuck" && a.subject == "assets")
    };
    let raised = stuck(t.alarms().await).expect("production_stuck#assets");
    assert_eq!(raised.affected, std::slice::from_ref(&p.id));
    assert_eq!(raised.status, shepherd::domain::alarms::AlarmStatus::Open);
    let done = t.completes(&p.id, SETTLE).await;
    let assets = done.phase("assets").unwrap();
    assert_eq!(
        assets.attempt, 2,
        "the killed attempt was replaced by the next: {assets:#?}"
    );
    assert_eq!(assets.status, PhaseStatus::Succeeded);

    // The re-run made only the image cut off (same key); the four finished were not made
    // again.
    let mut made = t.image_calls(5);
    made.sort();
    assert_eq!(made, [1, 1, 1, 1, 2], "{:?}", t.provider.calls().by_key);

    let audit = t.audit_with(&p.id, "production.completed").await;
    let unknown: Vec<_> = audit
        .iter()
        .filter(|r| r.event_type == "tool_call.unknown")
        .collect();
    assert_eq!(
        (unknown[0].phase.as_deref(), unknown[0].attempt),
        (Some("assets"), Some(1)),
        "the reconciliation: {unknown:#?}"
    );
    let call = unknown
        .iter()
        .find(|r| r.detail.as_deref().unwrap_or_default().contains("scene-4"))
        .expect("the cut-off call's outcome is audited as unknown");
    assert_eq!(call.attempt, Some(2), "found by the re-run");
    assert!(
        audit
            .iter()
            .any(|r| r.event_type == "phase.reconciled" && r.attempt == Some(2))
    );
    // It moved: it left the alarm, which, with no production left, is resolved.
    let resolved = stuck(t.alarms().await).unwrap();
    assert_eq!(
        resolved.status,
        shepherd::domain::alarms::AlarmStatus::Resolved,
        "{resolved:#?}"
    );
    // The sweep did it, within seconds of the lease; no redelivery was waited for.
    assert_eq!(Stats::get(&t.stats("assets").reconciled), 0);
    t.stop().await;
}

/// F-04 end to end: a phase with a real bug panics on the local stack. Its production fails
/// with `step_unexpected_error` and the panic's own message, a critical alarm names it, and
/// subscribers hear `production.failed`; after the fix is deployed, `retry_phase` over the
/// API completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_that_panics_fails_its_production_with_an_alarm_and_an_event_and_retry_after_the_fix_completes()
 {
    let t = TestStack::start_with_pipelines(vec![faulty_pipeline::spec()]).await;
    let rx = shepherd_it::receiver::Receiver::start().await;
    let admin = TestStack::caller(shepherd::domain::Role::Admin);
    t.subscribe(&rx, &["production.failed", "phase.failed"], &admin)
        .await;
    let input = serde_json::json!({"account": "acme", "text": "four words, no tenth"});
    let (status, started) = t
        .http(
            "POST",
            "/productions?pipeline=faulty",
            Some("operator-acme"),
            Some(input),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let failed = t.wait_settled(&id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");
    let phase = &failed.phases[0];
    assert_eq!(phase.status, PhaseStatus::Failed);
    let error = phase.last_error.as_ref().unwrap();
    assert_eq!(error.code.as_str(), "step_unexpected_error");
    assert!(
        error.detail.contains("index out of bounds"),
        "the panic's own message: {}",
        error.detail
    );
    // Never retried: one attempt.
    assert_eq!(phase.attempt, 1, "{phase:#?}");
    // Raised right after the failure's commit.
    let until = std::time::Instant::now() + SETTLE;
    let alarm = loop {
        let found = t
            .alarms()
            .await
            .into_iter()
            .find(|a| a.kind.as_str() == "phase_unexpected_error" && a.subject == id);
        match found {
            Some(a) => break a,
            None if std::time::Instant::now() > until => panic!("no alarm names {id}"),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(alarm.severity, shepherd::domain::alarms::Severity::Critical);
    assert!(alarm.detail.contains("fragile"), "{}", alarm.detail);
    let got = rx
        .wait(SETTLE, |got| {
            got.iter().any(|r| r.event_type() == "production.failed")
        })
        .await;
    let event = got
        .iter()
        .find(|r| r.event_type() == "production.failed")
        .unwrap();
    assert!(event.verified.is_ok());
    assert_eq!(
        event.json()["data"]["production_id"],
        id.as_str(),
        "{}",
        event.json()
    );

    // The fix is deployed; the operator retries the phase.
    faulty_pipeline::fix();
    let (status, body) = t
        .http(
            "POST",
            &format!("/productions/{id}/actions/retry_phase"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert_eq!(outputs["fragile"]["words"], 4);
    t.stop().await;
}

/// F-05: an operator need not wait for the sweep. Once a killed worker's lease has expired,
/// `retry_phase` is offered (over the API, as the console's action bar reads it) and runs
/// the phase as its next attempt, to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_phase_is_offered_once_a_lease_expired_and_completes_the_production() {
    let t = TestStack::start(&[("PhaseTimeoutSeconds", "3")]).await;
    // The brief's model is slow once; the worker dies while waiting for it.
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Slow { ms: 2000 }).times(1));
    t.crash_next("brief", Duration::from_millis(300));
    let p = t.start_production(1).await;
    let claimed = t
        .wait_for(&p.id, SETTLE, |p| {
            p.phase("brief").is_some_and(|b| b.lease_until.is_some())
        })
        .await;
    let path = format!("/productions/{}", p.id);
    let (_, shown) = t.http("GET", &path, Some("operator-acme"), None).await;
    assert_eq!(
        shown["available_actions"],
        serde_json::json!(["pause", "cancel"]),
        "the lease holds: the worker may still commit"
    );
    let lease = claimed.phase("brief").unwrap().lease_until.unwrap();
    let wait = lease - shepherd::ports::Clock::now(&shepherd::ports::SystemClock) + 300;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let (_, shown) = t.http("GET", &path, Some("operator-acme"), None).await;
    assert_eq!(shown["available_actions"][0], "retry_phase", "{shown}");
    let (status, body) = t
        .http(
            "POST",
            &format!("{path}/actions/retry_phase"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(done.phase("brief").unwrap().attempt, 2);
    t.stop().await;
}
