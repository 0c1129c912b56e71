//! A production through the five-phase pipeline on the local stack, through the real SDK.

use std::time::Duration;

use shepherd::audit::AuditQuery;
use shepherd::domain::{Action, ErrorClass, PhaseStatus, ProductionStatus};
use shepherd::runtime::{PhaseMessage, Stats};
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack, brief};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_completes_every_phase_with_outputs_and_actions_right_at_each_step() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(3).await;
    assert_eq!(p.status, ProductionStatus::Queued);
    assert_eq!(p.phases[0].status, PhaseStatus::Queued);
    assert_eq!(p.available_actions(), vec![Action::Pause, Action::Cancel]);

    let done = t.completes(&p.id, SETTLE).await;
    assert!(done.available_actions().is_empty());
    for ph in &done.phases {
        assert_eq!(ph.status, PhaseStatus::Succeeded, "{}", ph.name);
        assert_eq!(ph.attempt, 1);
        assert_eq!(ph.error_count, 0);
        assert!(ph.started_at.unwrap() <= ph.finished_at.unwrap());
    }
    assert_eq!(done.version, 11, "created + (claim + commit) per phase");
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert_eq!(outputs["brief"]["scenes"].as_array().unwrap().len(), 3);
    assert_eq!(
        outputs["assets"]["images"].as_array().unwrap().len(),
        3,
        "one asset per planned scene"
    );
    assert_eq!(outputs["voice"]["audio"].as_array().unwrap().len(), 3);
    let manifest = &outputs["publish"];
    assert_eq!(manifest["title"], "Why the tide turns");
    assert_eq!(manifest["scenes"].as_array().unwrap().len(), 3);

    // Provider: 1 plan + 1 script + 3 images + 3 speeches + 1 description, each once.
    let calls = t.provider.calls();
    assert_eq!(calls.served.values().sum::<u64>(), 9, "{calls:?}");
    assert!(calls.by_key.values().all(|n| *n == 1), "{:?}", calls.by_key);
    assert!(
        calls.bodies.iter().any(|b| b["voice"] == "nova"),
        "the brief's voice reached the provider"
    );
    let _ = brief(1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_500_is_retried_with_backoff_and_no_finished_call_is_repeated() {
    let t = TestStack::start(&[]).await;
    // The second image call of the assets phase fails once.
    t.provider.add_fault(
        FaultRule::new("images", Fault::Status(500))
            .after(1)
            .times(1),
    );
    let p = t.start_production(3).await;

    let done = t.completes(&p.id, SETTLE).await;
    let assets = done.phase("assets").unwrap();
    assert_eq!(
        (assets.attempt, assets.error_count),
        (1, 1),
        "SQS redelivery keeps the attempt"
    );
    let err = assets.last_error.as_ref().unwrap();
    assert_eq!(err.code, "provider_unavailable");
    assert_eq!(err.provider_status, Some(500));
    assert!(
        assets.finished_at.unwrap() - err.at >= 500,
        "the retry waited for its backoff (RetryBaseSeconds=1 gives 0.5-1 s)"
    );
    let calls = t.provider.calls();
    assert_eq!(calls.received, 10, "9 calls served + 1 that failed");
    assert!(
        calls.by_key.values().all(|n| *n == 1),
        "no finished call was made twice: {:?}",
        calls.by_key
    );
    assert_eq!(calls.served["/v1/images/generations"], 3);
    assert_eq!(Stats::get(&t.stats("assets").retried), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_refusal_fails_the_phase_with_code_and_detail_and_stops_the_production() {
    let t = TestStack::start(&[]).await;
    t.provider.add_fault(
        FaultRule::new("chat", Fault::Refusal(true))
            .key("#script#")
            .times(1),
    );
    let p = t.start_production(2).await;

    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let script = done.phase("script").unwrap();
    assert_eq!(script.status, PhaseStatus::Failed);
    let err = script.last_error.as_ref().unwrap();
    assert_eq!(err.code, "content_refused");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.detail.contains("can't help"), "{}", err.detail);
    for later in ["assets", "voice", "publish"] {
        assert_eq!(
            done.phase(later).unwrap().status,
            PhaseStatus::Pending,
            "{later}"
        );
    }
    assert_eq!(
        done.available_actions(),
        vec![
            Action::RetryPhase,
            Action::Reject,
            Action::Edit,
            Action::Cancel,
            Action::Override
        ]
    );

    // Nothing further was enqueued, the message was consumed, not dead-lettered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for q in ["ScriptQueue", "ScriptDeadLetterQueue", "AssetsQueue"] {
        assert_eq!(t.depth(q).await, 0, "{q}");
    }
    let calls = t.provider.calls();
    assert!(!calls.served.contains_key("/v1/images/generations"));
    assert_eq!(Stats::get(&t.stats("script").failed), 1);
    assert_eq!(
        Stats::get(&t.stats("script").retried),
        0,
        "a permanent error is not retried"
    );

    // Seed 001: "reject from a working earlier phase and reword". The brief runs again with
    // the feedback (a new call), and everything after it regenerates.
    let brief_calls = |c: &shepherd_local::provider::Calls| {
        c.bodies
            .iter()
            .filter(|b| b.to_string().contains("Keep it to two scenes"))
            .count()
    };
    assert_eq!(brief_calls(&t.provider.calls()), 0);
    let (status, body) = t
        .action_http(
            &p.id,
            "reject",
            "operator-acme",
            serde_json::json!({"feedback": "Keep it to two scenes", "phase": "brief"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reworked = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(
        reworked.status,
        ProductionStatus::Completed,
        "{reworked:#?}"
    );
    assert_eq!(reworked.phase("brief").unwrap().attempt, 2);
    assert_eq!(reworked.revision, done.revision + 1);
    assert_eq!(
        brief_calls(&t.provider.calls()),
        1,
        "the brief asked again, with the feedback"
    );
    let audit = t.audit_with(&p.id, "production.completed").await;
    assert!(audit.iter().any(|r| r.event_type == "production.reworked"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausting_retries_dead_letters_the_phase_and_moves_the_message_to_its_dlq() {
    let t = TestStack::start(&[("PhaseMaxRetries", "3")]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Status(503)));
    let p = t.start_production(1).await;

    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::DeadLettered, "{done:#?}");
    let brief = done.phase("brief").unwrap();
    assert_eq!(brief.status, PhaseStatus::DeadLettered);
    assert_eq!(
        (brief.attempt, brief.error_count),
        (1, 3),
        "one error per receive"
    );
    assert_eq!(
        brief.last_error.as_ref().unwrap().provider_status,
        Some(503)
    );
    assert_eq!(
        done.available_actions(),
        vec![
            Action::RetryPhase,
            Action::Reject,
            Action::Edit,
            Action::Cancel,
            Action::Override
        ]
    );

    t.wait_depth("BriefDeadLetterQueue", 1, SETTLE).await;
    assert_eq!(t.depth("BriefQueue").await, 0);
    let dlq = t.peek("BriefDeadLetterQueue").await;
    let body = PhaseMessage::parse(dlq[0].body().unwrap(), "brief").unwrap();
    assert_eq!(
        (body.production_id.as_str(), body.attempt),
        (p.id.as_str(), 1)
    );
    let stats = t.stats("brief");
    assert_eq!(
        (Stats::get(&stats.retried), Stats::get(&stats.dead_lettered)),
        (2, 1)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_projected_from_the_state_stream() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(1).await;
    t.wait_settled(&p.id, SETTLE).await;
    let events = t.audit_until(&p.id, |rows| rows.len() >= 7).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "production.created",
            "phase.succeeded",
            "phase.succeeded",
            "phase.succeeded",
            "phase.succeeded",
            "phase.succeeded",
            "production.completed"
        ]
    );
    assert_eq!(events[0].actor, "operator:test");
    assert_eq!(events[1].actor, "system:brief");
    assert!(
        events
            .iter()
            .all(|e| e.trace_id.as_deref() == Some(p.trace_id.as_str()))
    );
    // The same events by trace id, and by type over a window.
    let by_trace = t
        .ops
        .audit(
            &AuditQuery::Trace(p.trace_id.clone()),
            100,
            None,
            &TestStack::operator(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(by_trace, events);
    let created_at = events[0].at;
    let window = |since, until| AuditQuery::Type {
        event_type: "production.created".into(),
        since,
        until,
        account: None,
    };
    let hits = t
        .ops
        .audit(
            &window(created_at, created_at + 1),
            100,
            None,
            &TestStack::operator(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(hits, events[..1]);
    let before = t
        .ops
        .audit(
            &window(created_at - 60_000, created_at),
            100,
            None,
            &TestStack::operator(),
        )
        .await
        .unwrap()
        .items;
    assert!(
        before
            .iter()
            .all(|e| e.production_id.as_deref() != Some(p.id.as_str()))
    );
    // Scoped to another account, the production's trail is not there.
    let other = t
        .ops
        .audit(
            &AuditQuery::Production(p.id.clone()),
            100,
            None,
            &shepherd::domain::Caller::new(
                TestStack::actor(),
                shepherd::domain::Role::Viewer,
                shepherd::domain::Scope::Account("someone-else".into()),
            ),
        )
        .await;
    assert_eq!(other.unwrap_err().status(), 404);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_the_timeout_is_retried_as_a_timeout() {
    let t = TestStack::start(&[("ProviderTimeoutSeconds", "1")]).await;
    t.provider
        .add_fault(FaultRule::new("speech", Fault::Slow { ms: 2500 }).times(1));
    let p = t.start_production(1).await;
    let done = t.completes(&p.id, SETTLE).await;
    let voice = done.phase("voice").unwrap();
    assert_eq!(voice.error_count, 1);
    assert_eq!(voice.last_error.as_ref().unwrap().code, "provider_timeout");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_the_providers_reset_before_retrying() {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::RateLimit { reset_secs: 3 }).times(1));
    let p = t.start_production(1).await;
    let done = t.completes(&p.id, SETTLE).await;
    let brief = done.phase("brief").unwrap();
    let err = brief.last_error.as_ref().unwrap();
    assert_eq!(
        (err.code.as_str(), err.provider_status),
        ("provider_rate_limited", Some(429))
    );
    assert!(
        brief.started_at.unwrap() - err.at >= 2900,
        "the retry waited for the reset (3 s), not the 1 s backoff"
    );
    t.stop().await;
}

/// One account's audit query by type is read by key: another account's volume neither
/// crowds out its rows under the limit nor shows in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_audit_by_type_is_unaffected_by_another_accounts_volume() {
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let since = shepherd::ports::Clock::now(&shepherd::ports::SystemClock);
    let mut globex = Vec::new();
    for _ in 0..12 {
        let mut b: serde_json::Value = serde_json::from_str(&shepherd_it::brief(1)).unwrap();
        b["account"] = "globex".into();
        globex.push(
            t.ops
                .start(&b.to_string(), &TestStack::operator())
                .await
                .unwrap()
                .id,
        );
    }
    let acme = t.start_production(1).await;
    t.audit_until(&acme.id, |rows| !rows.is_empty()).await;
    for id in &globex {
        t.audit_until(id, |rows| !rows.is_empty()).await;
    }
    let q = AuditQuery::Type {
        event_type: "production.created".into(),
        since,
        until: since + 3_600_000,
        account: None,
    };
    let viewer = shepherd::domain::Caller::new(
        TestStack::actor(),
        shepherd::domain::Role::Viewer,
        shepherd::domain::Scope::Account("acme".into()),
    );
    let mine = t.ops.audit(&q, 5, None, &viewer).await.unwrap().items;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].production_id.as_deref(), Some(acme.id.as_str()));
    let everyone = t
        .ops
        .audit(&q, 1000, None, &TestStack::operator())
        .await
        .unwrap()
        .items;
    assert_eq!(everyone.len(), 13, "the stack sees every account's");
    t.stop().await;
}
