//! Long external jobs by callback: the coding pipeline's implement phase hands its job to
//! the agent runner, which answers 202 and reports to `POST /callbacks/{token}` (heartbeats,
//! then its result). The phase holds no Lambda and no message while it waits; a missed
//! heartbeat starts a new job, a passed deadline fails the phase; pause, cancel and retry
//! work on a waiting phase; a callback that is not the waiting attempt's changes nothing.

use std::time::Duration;

use serde_json::json;
use shepherd::domain::{Act, PhaseStatus, ProductionStatus, Role};
use shepherd_it::TestStack;
use shepherd_local::agent::Mode;
use shepherd_local::scm::REPOSITORY;

use crate::coding::start_and_approve;

const SETTLE: Duration = Duration::from_secs(60);

fn job(task: &str) -> String {
    json!({"account": "acme", "repository": REPOSITORY, "task": task}).to_string()
}

/// Waits until implement waits for its job (attempt `attempt`).
async fn waiting(t: &TestStack, id: &str, attempt: u32) -> shepherd::domain::Production {
    t.wait_for(id, SETTLE, |p| {
        p.phase("implement")
            .is_some_and(|ph| ph.attempt == attempt && ph.is_waiting())
    })
    .await
}

async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_phase_timeout_completes_by_callback_after_heartbeats() {
    // The phase's function may run 5 s; the job runs 12 s, heartbeating every second.
    let t = TestStack::start(&[("PhaseTimeoutSeconds", "5"), ("JobHeartbeatSeconds", "3")]).await;
    t.agent.jobs_run(&[Mode::Callback {
        after: Duration::from_secs(12),
        heartbeat: Duration::from_secs(1),
    }]);
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    let held = waiting(&t, &id, 1).await;
    let ph = held.phase("implement").unwrap();
    assert!(
        ph.status_message()
            .starts_with("waiting for its job's callback (attempt 1"),
        "{}",
        ph.status_message()
    );
    assert!(
        shepherd::view::banner(&held)
            .starts_with("Phase implement is waiting for its job's callback (attempt 1"),
        "{}",
        shepherd::view::banner(&held)
    );
    // Nothing holds the phase's message while it waits.
    assert_eq!(t.depth("ImplementQueue").await, 0);

    let done = t.completes(&id, SETTLE).await;
    let implement = done.phase("implement").unwrap();
    assert_eq!((implement.attempt, implement.error_count), (1, 0));
    assert!(
        implement.finished_at.unwrap() - implement.started_at.unwrap() >= 12_000,
        "{implement:#?}"
    );
    assert_eq!(t.agent.requests().len(), 1, "one job, sent once");
    let beats = t
        .agent
        .callbacks()
        .iter()
        .filter(|c| c.status == "heartbeat" && c.answered == 200)
        .count();
    assert!(beats >= 10, "{beats} heartbeats taken");
    let audit = t.audit_with(&id, "production.completed").await;
    let received = audit
        .iter()
        .find(|r| r.event_type == "callback.received")
        .expect("audited");
    assert!(
        received.detail.as_deref().unwrap().contains("heartbeat(s)"),
        "{received:?}"
    );
    assert!(audit.iter().any(|r| r.event_type == "phase.waiting"));
    assert_eq!(t.scm.pulls(REPOSITORY).len(), 1);

    // A repeat of the result changes nothing; the attempt is over.
    let url = t.agent.jobs().into_values().next().unwrap();
    let (status, body) = post(&url, json!({"status": "succeeded", "result": {}})).await;
    assert_eq!(status, 410, "{body}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_stops_heartbeating_makes_the_attempt_retry_with_a_new_job() {
    let t = TestStack::start(&[("JobHeartbeatSeconds", "2")]).await;
    t.agent.jobs_run(&[
        Mode::Crash {
            heartbeats: 1,
            heartbeat: Duration::from_millis(500),
        },
        Mode::Callback {
            after: Duration::from_secs(2),
            heartbeat: Duration::from_millis(500),
        },
    ]);
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    let first = waiting(&t, &id, 1).await;
    let lease = first.phase("implement").unwrap().lease_until.unwrap();
    // The runner heartbeats once, then dies: the lease is not extended again.
    tokio::time::sleep(Duration::from_millis(
        (lease - shepherd::ports::Clock::now(&shepherd::ports::SystemClock) + 2_500).max(0) as u64,
    ))
    .await;
    let report = t.sweeper().await.sweep().await.unwrap();
    assert_eq!(report.reconciled, 1, "{report:?}");
    let done = t.completes(&id, SETTLE).await;
    assert_eq!(done.phase("implement").unwrap().attempt, 2);

    // Two jobs, each under its attempt's own key; the runner was told nothing twice.
    let jobs = t.agent.jobs();
    let keys: Vec<&String> = jobs.keys().collect();
    assert_eq!(
        keys,
        [
            &format!("{id}#implement#agent#a1"),
            &format!("{id}#implement#agent#a2")
        ]
    );
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.kind.as_str() == "job_silent")
        .expect("job_silent raised");
    assert_eq!(alarm.subject, "implement");
    assert_eq!(alarm.affected, std::slice::from_ref(&id));

    // The first job's token no longer counts: nothing changes.
    let old = &jobs[&format!("{id}#implement#agent#a1")];
    let before = t.ops.get(&id, &TestStack::operator()).await.unwrap();
    let (status, body) = post(old, json!({"status": "heartbeat"})).await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("attempt 1 of phase implement no longer waits"),
        "{body}"
    );
    let after = t.ops.get(&id, &TestStack::operator()).await.unwrap();
    assert_eq!(before.version, after.version);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_oversized_callbacks_are_refused_and_a_passed_deadline_fails_the_phase()
{
    // Heartbeats every 60 s would do; the job's deadline is 5 s.
    let t = TestStack::start(&[("JobHeartbeatSeconds", "60"), ("JobDeadlineSeconds", "5")]).await;
    t.agent.jobs_run(&[Mode::Crash {
        heartbeats: 0,
        heartbeat: Duration::from_secs(1),
    }]);
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    let held = waiting(&t, &id, 1).await;
    let url = t.agent.jobs().into_values().next().unwrap();
    let (base, token) = url.rsplit_once('/').unwrap();
    let refused = |status: u16, body: &serde_json::Value| (status, body["code"].clone());

    // A forged secret for the right attempt; a token that is not one at all.
    let forged = format!("{base}/{}{}", &token[..token.len() - 64], "ab".repeat(32));
    let (status, body) = post(&forged, json!({"status": "heartbeat"})).await;
    assert_eq!(refused(status, &body), (401, json!("unauthorized")));
    let (status, body) = post(&format!("{base}/nothing"), json!({"status": "heartbeat"})).await;
    assert_eq!(refused(status, &body), (401, json!("unauthorized")));
    // A report that is not one; a body over 6 MB.
    let (status, _) = post(&url, json!({"status": "done"})).await;
    assert_eq!(status, 400);
    let big = "x".repeat(6_100_000);
    let (status, _) = post(
        &url,
        json!({"status": "succeeded", "result": {"summary": big}}),
    )
    .await;
    assert_eq!(status, 413);
    let now = t.ops.get(&id, &TestStack::operator()).await.unwrap();
    assert_eq!(now.version, held.version, "nothing changed");

    // Past the deadline the token has expired, and the sweep fails the phase.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = post(&url, json!({"status": "heartbeat"})).await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("deadline passed")
    );
    t.sweeper().await.sweep().await.unwrap();
    let failed = t.wait_settled(&id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed);
    let implement = failed.phase("implement").unwrap();
    assert_eq!(implement.status, PhaseStatus::Failed);
    assert_eq!(
        implement.last_error.as_ref().unwrap().code,
        "callback_deadline"
    );
    assert!(
        t.alarms()
            .await
            .iter()
            .any(|a| a.kind.as_str() == "job_deadline_passed" && a.affected.contains(&id))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_cancel_and_retry_work_while_a_job_runs() {
    let t = TestStack::start(&[("JobHeartbeatSeconds", "30")]).await;
    t.agent.jobs_run(&[
        // Paused while it runs: its result waits for resume.
        Mode::Callback {
            after: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
        },
        // Retried while it runs: a new job; then cancelled while that one runs.
        Mode::Callback {
            after: Duration::from_secs(60),
            heartbeat: Duration::from_millis(500),
        },
        Mode::Callback {
            after: Duration::from_secs(60),
            heartbeat: Duration::from_millis(500),
        },
    ]);
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    waiting(&t, &id, 1).await;
    t.act(&id, Act::Pause, Role::Operator).await;
    // The result arrives while paused: recorded, nothing runs.
    let arrived = t
        .wait_for(&id, SETTLE, |p| {
            p.phase("implement")
                .and_then(|ph| ph.waiting.as_ref())
                .is_some_and(|w| w.arrived_at.is_some())
        })
        .await;
    assert_eq!(arrived.status, ProductionStatus::Paused);
    assert_eq!(t.depth("ImplementQueue").await, 0);
    let resumed = t.act(&id, Act::Resume, Role::Operator).await;
    assert_eq!(resumed.phase("implement").unwrap().attempt, 1);
    let done = t.completes(&id, SETTLE).await;
    assert_eq!(done.phase("implement").unwrap().attempt, 1);
    assert_eq!(
        t.agent.jobs().len(),
        1,
        "the result was used, not asked again"
    );

    // A second job: retry while it runs starts a new one; cancel tells the runner at its
    // next heartbeat (410) and raises nothing.
    let id = start_and_approve(&t, &job("Add a widget counter")).await;
    let held = waiting(&t, &id, 1).await;
    let now = shepherd::ports::Clock::now(&shepherd::ports::SystemClock);
    assert!(
        held.available_actions_at(now)
            .contains(&shepherd::domain::Action::RetryPhase)
    );
    t.act(&id, Act::RetryPhase, Role::Operator).await;
    waiting(&t, &id, 2).await;
    t.act(&id, Act::Cancel, Role::Operator).await;
    let cancelled = t.wait_settled(&id, SETTLE).await;
    assert_eq!(cancelled.status, ProductionStatus::Cancelled);
    let stopped = |attempt: u32| {
        let url = t.agent.jobs()[&format!("{id}#implement#agent#a{attempt}")].clone();
        t.agent
            .callbacks()
            .iter()
            .any(|c| c.url == url && c.answered == 410)
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !(stopped(1) && stopped(2)) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stopped(1), "the retried job's runner heard 410");
    assert!(stopped(2), "the cancelled job's runner heard 410");
    assert!(
        !t.alarms().await.iter().any(|a| a.affected.contains(&id)),
        "a cancelled job raises nothing"
    );
    t.stop().await;
}
