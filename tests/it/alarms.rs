//! Secrets never reach the store, and a leak raises a critical alarm operators can handle.

use std::time::Duration;

use shepherd::domain::ProductionStatus;
use shepherd::domain::Role;
use shepherd::domain::alarms::{AlarmStatus, Severity};
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);
const KEY: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234567890";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_an_error_detail_is_redacted_and_alarmed() {
    let t = TestStack::start(&[]).await;
    let leak = format!("Incorrect API key provided: {KEY}. Authorization: Bearer abcdefghijklmnop");
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Status(400)).message(&leak));
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed);
    let detail = &failed
        .phase("brief")
        .unwrap()
        .last_error
        .as_ref()
        .unwrap()
        .detail;
    assert!(
        !detail.contains(KEY) && !detail.contains("abcdefghijklmnop"),
        "{detail}"
    );
    assert!(detail.contains("[REDACTED:provider_api_key]"), "{detail}");

    let alarms = t.ops.alarms(&TestStack::operator()).await.unwrap();
    let a = alarms
        .iter()
        .find(|a| a.kind == "secret_leak_detected")
        .expect("alarm raised");
    assert_eq!(
        (a.subject.as_str(), a.severity, a.status),
        (p.id.as_str(), Severity::Critical, AlarmStatus::Open)
    );
    assert!(a.count >= 1);
    assert!(
        a.detail
            .contains("provider_api_key in phase brief error detail"),
        "{}",
        a.detail
    );
    assert!(!a.detail.contains(KEY));

    // The audit trail got the redacted text only.
    let rows = t
        .audit_until(&p.id, |rows| {
            rows.iter().any(|r| r.event_type == "phase.failed")
        })
        .await;
    let text = format!("{rows:?}");
    assert!(
        text.contains("phase.failed") && !text.contains(KEY),
        "{text}"
    );

    let id = a.id();
    let err = t
        .ops
        .set_alarm(
            &id,
            AlarmStatus::Acknowledged,
            &TestStack::caller(Role::Viewer),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    t.ops
        .set_alarm(
            &id,
            AlarmStatus::Acknowledged,
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap();
    t.ops
        .set_alarm(
            &id,
            AlarmStatus::Resolved,
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap();
    let a = t
        .ops
        .alarms(&TestStack::operator())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id() == id)
        .unwrap();
    assert_eq!(
        (a.status, a.handled_by.as_deref()),
        (AlarmStatus::Resolved, Some("operator:test"))
    );
    let missing = t
        .ops
        .set_alarm(
            "nope#x",
            AlarmStatus::Resolved,
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.status(), 404);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_occurrences_are_deduplicated_by_type_and_subject() {
    let t = TestStack::start(&[("PhaseMaxRetries", "3")]).await;
    let leak = format!("upstream said: key={KEY}");
    // Three retryable failures, each carrying the key: one alarm, counted three times.
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Status(503)).message(&leak));
    let p = t.start_production(1).await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::DeadLettered);
    let leaks: Vec<_> = t
        .ops
        .alarms(&TestStack::operator())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == "secret_leak_detected")
        .collect();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(leaks[0].count, 3);
    assert!(leaks[0].last_seen >= leaks[0].first_seen);
    t.stop().await;
}
