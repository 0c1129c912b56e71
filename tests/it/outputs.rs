//! Output contracts and warnings: a shortfall fails the phase that fell short, and flagged
//! assets hold publish until an operator acknowledges them.

use std::time::Duration;

use shepherd::domain::{Act, Role};
use shepherd::domain::{Action, GateKind, PhaseStatus, ProductionStatus};
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_shortfall_fails_the_assets_phase_and_a_retry_makes_only_the_missing_images() {
    let t = TestStack::start(&[]).await;
    // The provider answers the last two scenes' images without an image (by key: the
    // images are made at once, so their order of arrival is not the scenes').
    for scene in ["#assets#scene-4", "#assets#scene-5"] {
        t.provider
            .add_fault(FaultRule::new("images", Fault::NoImage).key(scene).times(1));
    }
    let p = t.start_production(5).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");
    let assets = failed.phase("assets").unwrap();
    let err = assets.last_error.as_ref().unwrap();
    assert_eq!(err.code, "assets_incomplete");
    assert_eq!(
        err.detail,
        "3 of 5 scenes have an image (none for scene 4, 5)"
    );
    assert_eq!(failed.phase("voice").unwrap().status, PhaseStatus::Pending);
    assert_eq!(t.depth("VoiceQueue").await, 0, "nothing downstream started");

    t.act(&p.id, Act::RetryPhase, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    assert_eq!(
        t.image_calls(5),
        [1, 1, 1, 2, 2],
        "the retry asked only for the missing scenes"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_assets_let_the_production_proceed_but_publish_waits_for_the_acknowledgement() {
    let t = TestStack::start(&[]).await;
    t.provider.add_fault(
        FaultRule::new("images", Fault::Flags(vec!["copyright_risk".into()]))
            .key("#assets#scene-2"),
    );
    let p = t.start_production(2).await;
    let held = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    assert_eq!(held.phase("voice").unwrap().status, PhaseStatus::Succeeded);
    assert_eq!(held.phase("publish").unwrap().status, PhaseStatus::Pending);
    assert_eq!(held.warnings, ["assets: scene 2: copyright_risk"]);
    assert_eq!(held.approval.as_ref().unwrap().kind, GateKind::Warnings);
    assert!(
        held.available_actions()
            .contains(&Action::AcknowledgeWarnings)
    );
    assert_eq!(t.depth("PublishQueue").await, 0);

    // Over HTTP: a viewer may not acknowledge; approve is the wrong action (409).
    let path = format!("/productions/{}/actions/acknowledge_warnings", p.id);
    let (status, _) = t.http("POST", &path, Some("viewer-acme"), None).await;
    assert_eq!(status, 403);
    let approve = format!("/productions/{}/actions/approve", p.id);
    let (status, err) = t.http("POST", &approve, Some("operator-acme"), None).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["available"][0], "acknowledge_warnings");
    let (status, body) = t.http("POST", &path, Some("operator-acme"), None).await;
    assert_eq!(status, 200, "{body}");

    let done = t.completes(&p.id, SETTLE).await;
    assert!(done.warnings_acknowledged_at.is_some());
    let audit = t.audit_with(&p.id, "production.completed").await;
    let ack = audit
        .iter()
        .find(|r| r.event_type == "warnings.acknowledged")
        .expect("audited");
    assert_eq!(ack.actor, "api:operator-acme");
    assert!(ack.detail.as_deref().unwrap().contains("copyright_risk"));
    t.stop().await;
}

/// OpenAI's images carry no flags: where the stack moderates images (`ModerationBaseUrl`),
/// each image goes to `/moderations` (an omni-moderation model, the image as a data URL) and
/// the category scores over the configured thresholds become the warnings the rights
/// review holds publish for. The fake answers in the API reference's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_a_moderation_api_scores_over_the_thresholds_hold_publish_until_acknowledged() {
    let t = TestStack::start(&[
        ("ModerationBaseUrl", "{provider}"),
        ("ModerationThresholds", "*=0.5,sexual=0.2"),
    ])
    .await;
    // Scene 2 scores high for violence; scene 3 under the default but over sexual's 0.2;
    // scene 1's scores are all tiny.
    t.provider.add_fault(
        FaultRule::new(
            "moderations",
            Fault::Scores(vec![
                ("violence".into(), 0.91),
                ("violence/graphic".into(), 0.31),
            ]),
        )
        .key("#assets#scene-2"),
    );
    t.provider.add_fault(
        FaultRule::new("moderations", Fault::Scores(vec![("sexual".into(), 0.27)]))
            .key("#assets#scene-3"),
    );
    let p = t.start_production(3).await;
    let held = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    assert_eq!(
        held.warnings,
        [
            "assets: scene 2: violence 0.91",
            "assets: scene 3: sexual 0.27"
        ]
    );
    assert_eq!(held.approval.as_ref().unwrap().kind, GateKind::Warnings);
    assert_eq!(held.phase("publish").unwrap().status, PhaseStatus::Pending);
    assert_eq!(t.depth("PublishQueue").await, 0);

    // Each image was sent once, as the API takes it: an omni-moderation model, the image's
    // bytes as a base64 data URL in a multi-modal input.
    let calls = t.provider.calls();
    assert_eq!(calls.served["/v1/moderations"], 3);
    let asked: Vec<_> = calls
        .bodies
        .iter()
        .filter(|b| b["model"] == "omni-moderation-latest")
        .collect();
    assert_eq!(asked.len(), 3);
    for b in &asked {
        assert_eq!(b["input"][0]["type"], "image_url");
        let url = b["input"][0]["image_url"]["url"].as_str().unwrap();
        assert!(url.starts_with("data:image/png;base64,iVBOR"), "{url:.40}");
    }

    t.act(&p.id, Act::AcknowledgeWarnings, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    assert_eq!(
        t.provider.calls().served["/v1/moderations"],
        3,
        "a recorded moderation is not asked again"
    );
    t.stop().await;
}
