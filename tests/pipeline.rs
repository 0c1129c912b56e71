//! A production through the five-phase pipeline on the local stack, through the real SDK.

use std::time::Duration;

use shepherd::domain::{Action, PhaseStatus, ProductionStatus};
use shepherd_it::{TestStack, brief};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_completes_every_phase_with_outputs_and_actions_right_at_each_step() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(3).await;
    assert_eq!(p.status, ProductionStatus::Queued);
    assert_eq!(p.phases[0].status, PhaseStatus::Queued);
    assert_eq!(p.available_actions(), vec![Action::Pause, Action::Cancel]);

    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
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
    assert_eq!(outputs["assets"]["images"].as_array().unwrap().len(), 3, "one asset per planned scene");
    assert_eq!(outputs["voice"]["audio"].as_array().unwrap().len(), 3);
    let manifest = &outputs["publish"];
    assert_eq!(manifest["title"], "Why the tide turns");
    assert_eq!(manifest["scenes"].as_array().unwrap().len(), 3);

    // Provider: 1 plan + 1 script + 3 images + 3 speeches + 1 description, each once.
    let calls = t.provider.calls();
    assert_eq!(calls.served.values().sum::<u64>(), 9, "{calls:?}");
    assert!(calls.by_key.values().all(|n| *n == 1), "{:?}", calls.by_key);
    assert!(calls.bodies.iter().any(|b| b["voice"] == "nova"), "the brief's voice reached the provider");
    let _ = brief(1);
    t.stop().await;
}
