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

    let alarms = t.alarms().await;
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
    let rows = t.audit_with(&p.id, "phase.failed").await;
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
    let a = t.alarms().await.into_iter().find(|a| a.id() == id).unwrap();
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
        .alarms()
        .await
        .into_iter()
        .filter(|a| a.kind == "secret_leak_detected")
        .collect();
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(leaks[0].count, 3);
    assert!(leaks[0].last_seen >= leaks[0].first_seen);
    t.stop().await;
}

/// The redaction corpus (every recognised secret format) through provider errors: one
/// production fails on each, and none of the secrets is stored in the production's state, its
/// audit or the integration's health, while each production raises its leak alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_format_of_the_redaction_corpus_is_stored_and_each_is_alarmed() {
    let corpus: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../shared/tests/fixtures/secrets.json")).unwrap();
    let t = TestStack::start(&[("RetryBaseSeconds", "1")]).await;
    for row in &corpus {
        // Long enough that the stored detail is cut: redaction must come first.
        let text = format!(
            "{} {}",
            "upstream rejected the request;".repeat(8),
            row["text"]
        );
        t.provider.add_fault(
            FaultRule::new("chat", Fault::Status(400))
                .message(&text)
                .times(1),
        );
    }
    // And one outage carrying secrets, which the integration's health records.
    let outage = corpus
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .take(4)
        .collect::<Vec<_>>()
        .join(" | ");
    t.provider.add_fault(
        FaultRule::new("chat", Fault::Status(503))
            .message(&outage)
            .times(1),
    );
    let mut ids = Vec::new();
    for _ in 0..corpus.len() + 1 {
        ids.push(t.start_production(1).await.id);
    }
    let mut stored = String::new();
    let mut outcomes = Vec::new();
    for id in &ids {
        let p = t.wait_settled(id, SETTLE).await;
        outcomes.push(p.status);
        stored.push_str(&serde_json::to_string(&p).unwrap());
        let rows = t
            .audit_until(id, |rows| {
                rows.iter().any(|r| {
                    matches!(
                        r.event_type.as_str(),
                        "phase.failed" | "phase.retry_scheduled" | "production.completed"
                    )
                })
            })
            .await;
        stored.push_str(&format!("{rows:?}"));
    }
    let health = t.ops.integrations(&TestStack::operator()).await.unwrap();
    stored.push_str(&format!("{health:?}"));
    let alarms = t.alarms().await;
    stored.push_str(&format!("{alarms:?}"));

    for row in &corpus {
        let secret = row["secret"].as_str().unwrap();
        assert!(!stored.contains(secret), "{} stored: {secret}", row["kind"]);
    }
    let failed = outcomes
        .iter()
        .filter(|s| **s == ProductionStatus::Failed)
        .count();
    assert_eq!(failed, corpus.len(), "{outcomes:?}");
    let last_error = health[0].health.last_error.as_deref().unwrap_or_default();
    assert!(last_error.contains("[REDACTED:"), "{last_error}");
    let alarmed: std::collections::BTreeSet<_> = alarms
        .iter()
        .filter(|a| a.kind == "secret_leak_detected")
        .map(|a| a.subject.clone())
        .collect();
    assert_eq!(alarmed.len(), ids.len(), "{alarms:?}");
    t.stop().await;
}
