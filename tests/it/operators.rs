//! Operators recover productions: pause, resume, retry, approve, reject, edit, cancel,
//! override; every action only when available, audited, and refused cleanly otherwise.

use std::time::Duration;

use shepherd::domain::{Act, Role};
use shepherd::domain::{Action, PhaseStatus, ProductionStatus};
use shepherd::ops::OpsError;
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_while_a_phase_runs_lets_it_finish_and_holds_the_next_until_resume() {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("images", Fault::Slow { ms: 1500 }).times(1));
    let p = t.start_production(1).await;
    t.wait_for(&p.id, SETTLE, |p| {
        p.phase("assets").unwrap().status == PhaseStatus::Running
    })
    .await;

    let paused = t
        .ops
        .act(&p.id, Act::Pause, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(paused.status, ProductionStatus::Paused);
    assert_eq!(
        paused.available_actions(),
        vec![
            Action::Resume,
            Action::Reject,
            Action::Edit,
            Action::Cancel,
            Action::Override
        ]
    );

    let held = t
        .wait_for(&p.id, SETTLE, |p| {
            p.phase("assets").unwrap().status == PhaseStatus::Succeeded
        })
        .await;
    assert_eq!(
        held.status,
        ProductionStatus::Paused,
        "the running phase finished; the production stays paused"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(
        still.phase("voice").unwrap().status,
        PhaseStatus::Pending,
        "the next phase did not start"
    );
    assert_eq!(t.depth("VoiceQueue").await, 0);

    let resumed = t
        .ops
        .act(&p.id, Act::Resume, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(resumed.status, ProductionStatus::Running);
    t.completes(&p.id, SETTLE).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_waits_and_reject_with_feedback_reruns_the_phase_with_it() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;
    let p = t.start_production(2).await;
    let waiting = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(waiting.status, ProductionStatus::AwaitingApproval);
    assert_eq!(waiting.approval.as_ref().unwrap().phase, "script");
    assert_eq!(
        waiting.phase("assets").unwrap().status,
        PhaseStatus::Pending
    );
    assert!(
        waiting.approval.as_ref().unwrap().expires_at > waiting.updated_at,
        "every approval expires"
    );

    let feedback = "Make it about spring tides specifically.";
    t.ops
        .act(
            &p.id,
            Act::Reject {
                feedback: feedback.into(),
                phase: None,
            },
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap();
    let again = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
                && p.phase("script").unwrap().attempt == 2
        })
        .await;
    assert_eq!(
        again.phase("script").unwrap().feedback.as_deref(),
        Some(feedback)
    );
    let calls = t.provider.calls();
    let saw = calls
        .bodies
        .iter()
        .filter(|b| b.to_string().contains("spring tides specifically"))
        .count();
    assert_eq!(
        saw, 1,
        "the provider saw the feedback in the re-run's request"
    );
    assert_eq!(
        calls.served["/v1/chat/completions"], 3,
        "plan + script + script again"
    );

    t.act(&p.id, Act::Approve, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_from_an_earlier_phase_reruns_exactly_the_phases_from_there_with_new_calls() {
    let t = TestStack::start(&[("ApprovalPhases", "voice")]).await;
    let p = t.start_production(2).await;
    let waiting = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(waiting.status, ProductionStatus::AwaitingApproval);
    assert_eq!(waiting.approval.as_ref().unwrap().phase, "voice");
    let before = t.provider.calls();
    assert_eq!(before.served["/v1/images/generations"], 2);
    assert_eq!(before.served["/v1/audio/speech"], 2);

    // Wrong images, seen at the voice approval: re-run from assets.
    let feedback = "Brighter, daylight images.";
    let rejected = t
        .ops
        .act(
            &p.id,
            Act::Reject {
                feedback: feedback.into(),
                phase: Some("assets".into()),
            },
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap();
    assert_eq!(
        rejected.phase("voice").unwrap().status,
        PhaseStatus::Pending
    );
    let again = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval && p.phase("voice").unwrap().attempt == 2
        })
        .await;
    let attempts: Vec<(&str, u32)> = again
        .phases
        .iter()
        .map(|ph| (ph.name.as_str(), ph.attempt))
        .collect();
    assert_eq!(
        attempts,
        [
            ("brief", 1),
            ("script", 1),
            ("assets", 2),
            ("voice", 2),
            ("publish", 0)
        ],
        "what came before assets is kept"
    );
    let calls = t.provider.calls();
    assert_eq!(
        calls.served["/v1/chat/completions"], before.served["/v1/chat/completions"],
        "brief and script did not run again"
    );
    assert_eq!(
        calls.served["/v1/images/generations"], 4,
        "every image made anew"
    );
    assert_eq!(
        calls.served["/v1/audio/speech"], 4,
        "every narration made anew"
    );
    let with_feedback = calls
        .bodies
        .iter()
        .filter(|b| b.to_string().contains("Brighter, daylight images."))
        .count();
    assert_eq!(with_feedback, 2, "both image requests carry the feedback");

    let audit = t.audit_with(&p.id, "approval.rejected").await;
    let r = audit
        .iter()
        .find(|r| r.event_type == "approval.rejected")
        .unwrap();
    assert_eq!(r.phase.as_deref(), Some("voice"));
    assert_eq!(r.actor, "operator:test");
    assert_eq!(
        r.detail.as_deref(),
        Some("re-run from assets: Brighter, daylight images.")
    );

    // A phase after the gate is refused, naming it; nothing changes.
    let err = t
        .ops
        .act(
            &p.id,
            Act::Reject {
                feedback: "x".into(),
                phase: Some("publish".into()),
            },
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("publish comes after it"), "{err}");
    t.act(&p.id, Act::Approve, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_auto_approve_skips_gates_and_an_operators_is_refused() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;
    let mut brief: serde_json::Value = serde_json::from_str(&shepherd_it::brief(1)).unwrap();
    brief["auto_approve"] = true.into();
    let err = t
        .ops
        .start(&brief.to_string(), &TestStack::operator())
        .await
        .unwrap_err();
    assert!(
        matches!(err, shepherd::ops::OpsError::Forbidden(_)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("auto_approve needs the admin role"),
        "{err}"
    );
    let p = t
        .ops
        .start(&brief.to_string(), &TestStack::caller(Role::Admin))
        .await
        .unwrap();
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_then_retry_reruns_the_failed_phase_with_the_new_settings() {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("speech", Fault::Refusal(true)).times(1));
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed);
    assert_eq!(
        failed
            .phase("voice")
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .code,
        "content_refused"
    );

    let edit = Act::Edit {
        changes: vec!["voice=onyx".parse().unwrap()],
    };
    t.ops
        .act(&p.id, edit, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    let bad = Act::Edit {
        changes: vec!["scenes=9".parse().unwrap()],
    };
    let err = t
        .ops
        .act(&p.id, bad, &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("input.scenes cannot be edited"),
        "{err}"
    );

    t.act(&p.id, Act::RetryPhase, Role::Operator).await;
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(done.phase("voice").unwrap().attempt, 2);
    let calls = t.provider.calls();
    assert!(
        calls.bodies.iter().any(|b| b["voice"] == "onyx"),
        "the retry used the edited voice"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_action_is_refused_with_409_and_changes_nothing() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(1).await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    for action in [Act::Pause, Act::Approve, Act::RetryPhase, Act::Cancel] {
        let err = t
            .ops
            .act(&p.id, action, &TestStack::caller(Role::Operator))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
        assert!(
            err.to_string()
                .contains("while the production is completed (available: none)"),
            "{err}"
        );
    }
    assert_eq!(
        t.ops
            .get(&p.id, &TestStack::operator())
            .await
            .unwrap()
            .version,
        done.version,
        "nothing changed"
    );
    let err = t
        .ops
        .act("no-such-id", Act::Pause, &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert!(matches!(err, OpsError::NotFound(_)));
    assert_eq!(err.status(), 404);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_act_and_an_admin_override_leaves_a_badge() {
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let p = t.start_production(1).await;
    t.wait_for(&p.id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await;

    let err = t
        .ops
        .act(&p.id, Act::Approve, &TestStack::caller(Role::Viewer))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    let skip = || Act::Override {
        reason: "signed off on the phone".into(),
        skip_gate: true,
        jump_to: None,
        outputs: vec![],
    };
    let err = t
        .ops
        .act(&p.id, skip(), &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "override is admin only: {err}");
    let no_reason = Act::Override {
        reason: " ".into(),
        skip_gate: true,
        jump_to: None,
        outputs: vec![],
    };
    assert_eq!(
        t.ops
            .act(&p.id, no_reason, &TestStack::caller(Role::Admin))
            .await
            .unwrap_err()
            .status(),
        400
    );

    let after = t
        .ops
        .act(&p.id, skip(), &TestStack::caller(Role::Admin))
        .await
        .unwrap();
    // The production carries who overrode it, when, what and why.
    let mark = after.overridden.clone().expect("the badge");
    assert_eq!(mark.by, TestStack::actor().0);
    assert_eq!(mark.reason, "signed off on the phone");
    assert_eq!(mark.what, "skipped the approval gate at brief");
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    assert_eq!(done.overridden, Some(mark), "the badge stays");
    assert_eq!(done.available_actions(), [Action::ClearOverride]);

    // Only an admin clears it, with a reason; the audit keeps both.
    let clear = || Act::ClearOverride {
        reason: "confirmed in writing".into(),
    };
    let err = t
        .ops
        .act(&p.id, clear(), &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    let cleared = t
        .ops
        .act(&p.id, clear(), &TestStack::caller(Role::Admin))
        .await
        .unwrap();
    assert_eq!(cleared.overridden, None);
    assert_eq!(cleared.status, ProductionStatus::Completed);
    let trail = t.audit_with(&p.id, "override.cleared").await;
    let kinds: Vec<&str> = trail.iter().map(|e| e.event_type.as_str()).collect();
    let applied = kinds.iter().position(|k| *k == "override.applied").unwrap();
    let gone = kinds.iter().position(|k| *k == "override.cleared").unwrap();
    assert!(applied < gone, "{kinds:?}");
    let e = &trail[gone];
    assert_eq!(e.actor, TestStack::actor().0);
    let detail = e.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("confirmed in writing"), "{detail}");
    let err = t
        .ops
        .act(&p.id, clear(), &TestStack::caller(Role::Admin))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409, "nothing left to clear: {err}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_for_good_and_keeps_every_record() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;
    let p = t.start_production(1).await;
    t.wait_for(&p.id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await;
    let c = t
        .ops
        .act(&p.id, Act::Cancel, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(c.status, ProductionStatus::Cancelled);
    assert!(c.available_actions().is_empty());
    let kept = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    let outputs = t.ops.outputs(&kept).await.unwrap();
    assert!(
        outputs.contains_key("brief") && outputs.contains_key("script"),
        "outputs kept"
    );
    assert_eq!(
        t.ops
            .list("acme", None, 10, None, &TestStack::operator())
            .await
            .unwrap()
            .items[0]
            .id,
        p.id,
        "still listed"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_write_that_fails_leaves_the_state_unchanged_and_the_caller_gets_an_error() {
    use shepherd_local::faultproxy::{FaultProxy, ProxyRule};
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let p = t.start_production(1).await;
    let waiting = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    // An operator whose writes pass through a proxy that fails the write carrying the
    // rejection's audit event (the event rides in the state write: one request, both or none).
    let proxy = FaultProxy::start(&shepherd_it::endpoint()).await.unwrap();
    let sdk = shepherd_local::sdk_config(&proxy.endpoint()).await;
    let (ops, _) = shepherd::ops::Ops::connect(&sdk, &t.stack.stack)
        .await
        .unwrap();
    proxy.fail(ProxyRule::new("PutItem", "approval.rejected"));
    let reject = || Act::Reject {
        feedback: "shorter, please".into(),
        phase: None,
    };
    let err = ops
        .act(&p.id, reject(), &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    assert!(
        proxy.failed() >= 1,
        "the audit-carrying write was attempted and failed"
    );

    let now = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(now, waiting, "the state change did not happen");
    assert_eq!(t.depth("BriefQueue").await, 0, "nothing was dispatched");

    // Once writes succeed again the same action goes through, audited exactly once.
    proxy.clear();
    let rejected = ops
        .act(&p.id, reject(), &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(rejected.version, waiting.version + 1);
    let audit = t.audit_with(&p.id, "approval.rejected").await;
    let rejections = audit
        .iter()
        .filter(|r| r.event_type == "approval.rejected")
        .count();
    assert_eq!(rejections, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_scenario_d_reject_on_a_paused_production_and_an_admins_jump_back_regenerate() {
    let t = TestStack::start(&[("ApprovalPhases", "voice")]).await;
    let p = t.start_production(2).await;
    let waiting = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(waiting.status, ProductionStatus::AwaitingApproval);
    t.act(&p.id, Act::Pause, Role::Operator).await;
    let chat = |t: &TestStack| t.provider.calls().served["/v1/chat/completions"];
    let images = |t: &TestStack| t.provider.calls().served["/v1/images/generations"];
    let (chat0, images0) = (chat(&t), images(&t));
    assert_eq!(images0, 2);

    // Seed 001, Scenario D: pause, edit, reject an earlier phase with feedback, resume. The
    // script, and every phase after it, is made anew; the brief is untouched.
    let edit = Act::Edit {
        changes: vec!["voice=onyx".parse().unwrap()],
    };
    t.ops
        .act(&p.id, edit, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    let (status, body) = t
        .action_http(
            &p.id,
            "reject",
            "operator-acme",
            serde_json::json!({"feedback": "Warmer narration.", "phase": "script"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "paused", "a reject keeps the pause: {body}");
    assert_eq!(body["approval"], serde_json::Value::Null);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(chat(&t), chat0, "nothing runs until resume");
    t.act(&p.id, Act::Resume, Role::Operator).await;
    let again = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval && p.phase("voice").unwrap().attempt == 2
        })
        .await;
    let attempts = |p: &shepherd::domain::Production| -> Vec<u32> {
        p.phases.iter().map(|ph| ph.attempt).collect()
    };
    // The script's attempt 2 was the reject's, 3 the resume's (a resume always starts a
    // fresh attempt, so a message held while paused is stale); it ran once.
    assert_eq!(attempts(&again), [1, 3, 2, 2, 0]);
    assert_eq!(
        chat(&t),
        chat0 + 1,
        "one new script call, no new brief call"
    );
    assert_eq!(images(&t), images0 + 2, "every image made anew");
    let bodies = t.provider.calls().bodies;
    assert!(
        bodies
            .iter()
            .any(|b| b.to_string().contains("Warmer narration.")),
        "the script's call carries the feedback"
    );
    assert!(
        bodies.iter().any(|b| b["voice"] == "onyx"),
        "the edited voice"
    );
    assert!(
        t.audit_with(&p.id, "production.reworked")
            .await
            .iter()
            .any(|r| r.event_type == "production.reworked")
    );

    // An admin's jump back to assets regenerates it too (new calls, not the memoized ones).
    let (status, body) = t
        .action_http(
            &p.id,
            "override",
            "admin-acme",
            serde_json::json!({"reason": "the art director asked", "jump_to": "assets"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["overridden"]["reason"], "the art director asked");
    assert_eq!(
        body["overridden"]["what"],
        "jumped back to assets (regenerated from there)"
    );
    let back = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval && p.phase("voice").unwrap().attempt == 3
        })
        .await;
    assert_eq!(attempts(&back), [1, 3, 3, 3, 0]);
    assert_eq!(back.revision, again.revision + 1);
    assert_eq!(
        images(&t),
        images0 + 4,
        "the jump back made every image anew"
    );
    assert_eq!(chat(&t), chat0 + 1, "the script was kept");
    t.act(&p.id, Act::Approve, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_over_an_output_a_later_phase_reads_is_refused_naming_it_until_the_admin_supplies_it()
 {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("speech", Fault::Refusal(true)).times(1));
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed);
    let path = format!("/productions/{}/actions/override", p.id);
    let jump = |outputs: serde_json::Value| {
        serde_json::json!({"reason": "narrated in the studio", "jump_to": "publish",
                           "outputs": outputs})
    };

    // publish reads voice's output, which the jump would skip: refused, naming both.
    let (status, body) = t
        .http(
            "POST",
            &path,
            Some("admin-acme"),
            Some(jump(serde_json::json!({}))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("jumping to publish skips voice, whose output publish reads"),
        "{message}"
    );
    // An output that breaks voice's contract is refused, naming the field.
    let (status, body) = t
        .http(
            "POST",
            &path,
            Some("admin-acme"),
            Some(jump(serde_json::json!({"voice": {"audio": []}}))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("outputs.voice"),
        "{body}"
    );
    let unchanged = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(unchanged.version, failed.version, "nothing was applied");

    // With the studio's narration, the jump goes on and publish uses it.
    let speech = t.provider.calls().served.get("/v1/audio/speech").copied();
    let sha = "ab".repeat(32);
    let narration = serde_json::json!({"audio": [{"scene": 1, "format": "mp3", "audio": {
        "name": "scene-1.mp3", "key": "studio/scene-1.mp3", "sha256": sha, "bytes": 3,
        "content_type": "audio/mpeg"}}]});
    let (status, body) = t
        .http(
            "POST",
            &path,
            Some("admin-acme"),
            Some(jump(serde_json::json!({ "voice": narration }))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["overridden"]["what"],
        "jumped to publish with the output of voice supplied"
    );
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(done.phase("voice").unwrap().status, PhaseStatus::Skipped);
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert_eq!(outputs["voice"], narration);
    assert!(
        outputs["publish"]
            .to_string()
            .contains("studio/scene-1.mp3"),
        "{}",
        outputs["publish"]
    );
    assert_eq!(
        t.provider.calls().served.get("/v1/audio/speech"),
        speech.as_ref(),
        "voice was not called again"
    );
    t.stop().await;
}

/// Real image models take seconds to a minute per image: six scenes whose images take 15 s
/// each finish inside the assets phase's 60 s, made six at once (`parallel_calls`), each
/// call made and recorded once. One after another they would take 90 s; under the chat
/// timeout none would finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_slow_images_are_made_at_once_inside_the_phases_timeout() {
    // The stack's request timeout stays the tests' 3 s for chat and speech; image
    // generation has its own (`ImageTimeoutSeconds`, 90 by default). The phase keeps 60 s.
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("images", Fault::Slow { ms: 15_000 }).times(6));
    let p = t.start_production(6).await;
    let done = t.completes(&p.id, Duration::from_secs(120)).await;
    let assets = done.phase("assets").unwrap();
    // One after another, the phase would have hit its timeout: a second attempt, errors.
    assert_eq!((assets.attempt, assets.error_count), (1, 0), "{assets:?}");
    let calls = t.provider.calls();
    assert_eq!(calls.served["/v1/images/generations"], 6);
    assert_eq!(calls.served["/v1/audio/speech"], 6);
    let images: Vec<_> = calls
        .by_key
        .iter()
        .filter(|(k, _)| k.contains("#assets#"))
        .collect();
    assert_eq!(images.len(), 6, "{:?}", calls.by_key);
    assert!(
        images.iter().all(|(_, n)| **n == 1),
        "each made once: {images:?}"
    );
    t.stop().await;
}
