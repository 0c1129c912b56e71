//! Provider outages, rate limits and switched-off integrations, on the local stack with one
//! or two fake providers: calls are routed along the chain, health is recorded, nothing is
//! bought twice.

use std::time::{Duration, Instant};

use shepherd::domain::ProductionStatus;
use shepherd::domain::alarms::Severity;
use shepherd::domain::health::HealthStatus;
use shepherd::domain::{Act, Role};
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

async fn status_of(t: &TestStack, id: &str) -> HealthStatus {
    t.ops
        .integrations(&TestStack::operator())
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("integration {id}"))
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_first_provider_completes_on_the_second_and_marks_the_first_unavailable() {
    let t = TestStack::start_with_fallback(&[
        // Long enough that no probe goes out while the first production runs.
        ("CircuitCooldownSeconds", "10"),
        ("CircuitMinimumCalls", "3"),
    ])
    .await;
    let fallback = t.fallback.as_ref().unwrap();
    t.provider.add_fault(FaultRule::new("", Fault::Status(503)));

    let p = t.start_production(2).await;
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(
        done.phase("brief").unwrap().error_count,
        0,
        "the fallback took the call in the same attempt"
    );

    // The first provider saw exactly the calls that opened its circuit; the rest went
    // straight to the second, which served every call once.
    let primary = t.provider.calls();
    assert_eq!(primary.served.values().sum::<u64>(), 0);
    // Threshold 3, then fail fast; the assets phase makes its two images at once, so one
    // more call may already be on its way when the third failure opens the circuit.
    assert!(
        (3..=4).contains(&primary.received),
        "threshold 3, then fail fast: {primary:?}"
    );
    let second = fallback.calls();
    assert_eq!(second.served.values().sum::<u64>(), 7, "{second:?}");
    assert!(second.by_key.values().all(|n| *n == 1), "{second:?}");

    let list = t.ops.integrations(&TestStack::operator()).await.unwrap();
    assert_eq!(
        (list[0].id.as_str(), list[0].status),
        ("primary", HealthStatus::Unavailable)
    );
    assert_eq!(
        u64::from(list[0].health.consecutive_errors),
        primary.received,
        "every call it received failed"
    );
    assert!(
        list[0]
            .health
            .last_error
            .as_deref()
            .unwrap()
            .contains("provider_unavailable")
    );
    assert_eq!(list[1].status, HealthStatus::Healthy);
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.kind == "integration_unhealthy")
        .expect("alarm raised");
    assert_eq!(
        (alarm.subject.as_str(), alarm.severity),
        ("integration:primary", Severity::Critical)
    );
    let audit = t.audit_with(&p.id, "production.completed").await;
    let routed = audit
        .iter()
        .filter(|r| r.event_type == "routing.decided")
        .count();
    assert!(routed >= 1, "{audit:#?}");
    let failed: Vec<_> = audit
        .iter()
        .filter(|r| r.event_type == "tool_call.failed")
        .collect();
    assert!(
        failed[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("primary: provider_unavailable"),
        "{failed:#?}"
    );
    assert!(
        failed[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("retryable=true")
    );

    // The provider recovers: after the cooldown one probe brings it back.
    t.provider.clear_faults();
    tokio::time::sleep(Duration::from_millis(10_100)).await;
    let again = t.start_production(1).await;
    let done = t.wait_settled(&again.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    assert_eq!(status_of(&t, "primary").await, HealthStatus::Healthy);
    assert!(t.provider.calls().served.values().sum::<u64>() >= 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_a_20_second_reset_holds_every_productions_calls_to_that_provider() {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::RateLimit { reset_secs: 20 }).times(1));
    let a = t.start_production(1).await;
    // Wait until the 429 was recorded on the integration, then start a second production.
    let start = Instant::now();
    while t.provider.calls().received == 0 {
        assert!(start.elapsed() < SETTLE, "no call reached the provider");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limited_at = Instant::now();
    let b = t.start_production(1).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        t.provider.calls().received,
        1,
        "no call to the provider before its reset, from either production"
    );
    assert_eq!(status_of(&t, "primary").await, HealthStatus::Degraded);
    let held = t.ops.get(&b.id, &TestStack::operator()).await.unwrap();
    let err = held.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "integration_unavailable", "{err:?}");
    assert!(err.detail.contains("rate limited"), "{err:?}");

    for id in [&a.id, &b.id] {
        let done = t.wait_settled(id, SETTLE).await;
        assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
        let brief = done.phase("brief").unwrap();
        assert_eq!(
            (brief.attempt, brief.retries),
            (1, 0),
            "20 s of waiting spent no retry (MaxReceiveCount at its default): {brief:?}"
        );
    }
    assert!(
        limited_at.elapsed() >= Duration::from_secs(19),
        "completed only after the reset"
    );
    assert_eq!(status_of(&t, "primary").await, HealthStatus::Healthy);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_integration_fails_fast_without_a_provider_call_until_enabled() {
    let t = TestStack::start(&[]).await;
    let viewer = t
        .ops
        .set_integration_enabled(
            "primary",
            false,
            "key rotation",
            &TestStack::caller(Role::Viewer),
        )
        .await;
    assert_eq!(viewer.unwrap_err().status(), 403);
    let no_reason = t
        .ops
        .set_integration_enabled("primary", false, " ", &TestStack::caller(Role::Operator))
        .await;
    assert_eq!(no_reason.unwrap_err().status(), 400);
    let unknown = t
        .ops
        .set_integration_enabled("nope", false, "x", &TestStack::caller(Role::Operator))
        .await;
    assert_eq!(unknown.unwrap_err().status(), 404);
    let view = t
        .ops
        .set_integration_enabled(
            "primary",
            false,
            "key rotation",
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap();
    assert_eq!(view.status, HealthStatus::Disabled);

    let p = t.start_production(1).await;
    let q = t.start_production(1).await;
    let failing = t
        .wait_for(&p.id, SETTLE, |p| {
            p.phase("brief").unwrap().error_count >= 1
        })
        .await;
    let err = failing.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "integration_unavailable");
    assert!(err.detail.contains("primary (disabled)"), "{err:?}");
    // Longer than every retry would take (PhaseMaxRetries 3, 1 s base, 4 s cap: ~7 s):
    // the productions wait, they are not dead-lettered.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for id in [&p.id, &q.id] {
        let waiting = t.ops.get(id, &TestStack::operator()).await.unwrap();
        let brief = waiting.phase("brief").unwrap();
        assert_eq!(waiting.status, ProductionStatus::Running, "{waiting:#?}");
        assert!(
            brief.holds >= 3 && brief.retries == 0,
            "as many waits as the retry budget, none spent: {brief:?}"
        );
    }
    assert_eq!(t.provider.calls().received, 0, "not one call was made");
    let alarms = t.alarms().await;
    let waiting = alarms
        .iter()
        .find(|a| a.kind == "production_waiting" && a.subject == "brief")
        .expect("the wait is alarmed");
    let mut affected = waiting.affected.clone();
    affected.sort();
    let mut both = vec![p.id.clone(), q.id.clone()];
    both.sort();
    assert_eq!(affected, both, "the alarm says which productions wait");

    t.ops
        .set_integration_enabled("primary", true, "", &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    for id in [&p.id, &q.id] {
        let done = t.wait_settled(id, SETTLE).await;
        assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    }
    let alarms = t.alarms().await;
    let waiting = alarms
        .iter()
        .find(|a| a.kind == "production_waiting" && a.subject == "brief")
        .unwrap();
    assert_eq!(
        (waiting.status, waiting.affected.len()),
        (shepherd::domain::alarms::AlarmStatus::Resolved, 0),
        "{waiting:?}"
    );
    let test = t
        .ops
        .test_integration("primary", &TestStack::operator())
        .await
        .unwrap();
    assert!(test.ok, "{test:?}");
    assert!(
        !format!("{test:?}").contains("local-provider-key"),
        "never the secret"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_recorded_for_a_different_request_is_refused_audited_and_alarmed() {
    let mut t = TestStack::start_idle().await;
    let p = t.start_production(1).await;
    // The brief's plan call was recorded for another request (a deploy changed the prompt
    // while this production was in flight).
    let table = t.stack.reference("IdempotencyTable").unwrap().to_string();
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    aws_sdk_dynamodb::Client::new(&t.sdk)
        .put_item()
        .table_name(&table)
        .item("pk", s(&format!("{}#brief#plan", p.id)))
        .item("rh", s("0000-another-request"))
        .item("st", s("completed"))
        .item("res", s("\"{}\""))
        .send()
        .await
        .unwrap();
    t.run().await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let err = done.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "idempotency_key_collision");
    assert_eq!(t.provider.calls().received, 0, "neither reused nor made");
    let audit = t.audit_with(&p.id, "tool_call.deduped").await;
    let deduped = audit
        .iter()
        .find(|r| r.event_type == "tool_call.deduped")
        .unwrap();
    assert_eq!(deduped.outcome, "anomaly");
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.kind == "tool_call_deduped")
        .expect("anomaly alarmed");
    assert_eq!(alarm.subject, p.id);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_disconnect_mid_call_records_an_unknown_outcome_reconnects_and_completes() {
    let t = TestStack::start_with_mcp(&[]).await;
    let mcp = t.mcp.as_ref().unwrap();
    // The platform publishes, then the connection breaks before the answer arrives.
    mcp.drop_next_calls(1);
    let p = t.start_production(1).await;
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(
        done.phase("publish").unwrap().error_count,
        0,
        "recovered in the same run"
    );

    // Called twice under one key, published once.
    let calls = mcp.calls();
    assert_eq!(calls.dropped, 1);
    assert_eq!(calls.published, 1);
    let key = format!("{}#publish#publish", p.id);
    assert_eq!(calls.by_key.get(&key), Some(&2), "{calls:?}");

    let out = t.ops.outputs(&done).await.unwrap();
    let url = out["publish"]["published"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://videos.publisher.local/"), "{url}");

    let audit = t.audit_with(&p.id, "production.completed").await;
    let kinds: Vec<&str> = audit.iter().map(|r| r.event_type.as_str()).collect();
    assert!(kinds.contains(&"mcp.disconnected"), "{kinds:?}");
    let unknown = audit
        .iter()
        .find(|r| r.event_type == "tool_call.unknown")
        .expect("the lost answer is audited");
    assert!(unknown.detail.as_deref().unwrap().contains(&key));
    let publisher = t
        .ops
        .integrations(&TestStack::operator())
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "publisher")
        .unwrap();
    assert!(
        publisher
            .health
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("mcp_transport"),
        "{publisher:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_rejected_secret_fails_naming_the_parameter_and_a_fixed_one_is_picked_up() {
    let name = format!("/t/{}/api_key", uuid::Uuid::now_v7().simple());
    let t = TestStack::start(&[("ProviderApiKeyParameter", name.as_str())]).await;
    let ssm = aws_sdk_ssm::Client::new(&t.sdk);
    let put = |value: &'static str| {
        ssm.put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
    };

    // Missing: failed at once, the parameter named, no call made.
    ssm.delete_parameter().name(&name).send().await.unwrap();
    let test = t
        .ops
        .test_integration("primary", &TestStack::operator())
        .await
        .unwrap();
    assert!(!test.ok && test.secret.contains(&name), "{test:?}");
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    let err = failed.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(
        (failed.status, err.code.as_str()),
        (ProductionStatus::Failed, "config_missing")
    );
    assert!(err.detail.contains(&name), "{err:?}");
    assert_eq!(t.provider.calls().received, 0);

    // Rejected (a stale key): read again once on the 401, then failed naming the parameter,
    // never the value.
    put("sk-stale-key-0000000000000000000000").await.unwrap();
    let retried = t
        .ops
        .act(&p.id, Act::RetryPhase, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    let failed = t
        .wait_for(&p.id, SETTLE, |q| {
            q.version > retried.version + 1 && q.status.is_settled()
        })
        .await;
    let err = failed.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "provider_auth");
    assert!(
        err.detail.contains(&name) && !err.detail.contains("sk-stale"),
        "{err:?}"
    );
    assert_eq!(
        t.provider.calls().unauthorized,
        2,
        "one call, and one more after re-reading the key"
    );

    // Rotated: the next attempt reads the new key and completes.
    put("local-provider-key").await.unwrap();
    t.act(&p.id, Act::RetryPhase, Role::Operator).await;
    let done = t
        .wait_for(&p.id, SETTLE, |q| q.status == ProductionStatus::Completed)
        .await;
    assert_eq!(done.phase("brief").unwrap().attempt, 3);
    t.stop().await;
}

/// One provider answer must not park the provider for every account for years: a reset is
/// believed up to `RateLimitCapSeconds`, and enabling the integration ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_years_away_is_cut_to_the_cap_and_enable_clears_a_wait() {
    let t = TestStack::start(&[("RateLimitCapSeconds", "3")]).await;
    let ten_years = 10 * 365 * 86_400;
    t.provider.add_fault(
        FaultRule::new(
            "chat",
            Fault::RateLimit {
                reset_secs: ten_years,
            },
        )
        .times(1),
    );
    let p = t.start_production(1).await;
    let start = Instant::now();
    let resets_at = loop {
        let list = t.ops.integrations(&TestStack::operator()).await.unwrap();
        if let Some(at) = list[0].health.rate_limit_resets_at {
            break at;
        }
        assert!(start.elapsed() < SETTLE, "the 429 was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        resets_at <= now + 3_000,
        "cut to the cap: {resets_at} vs {now}"
    );
    t.completes(&p.id, SETTLE).await;

    // A wait an operator ends: enable clears it at once.
    t.provider
        .add_fault(FaultRule::new("chat", Fault::RateLimit { reset_secs: 3 }).times(1));
    let q = t.start_production(1).await;
    while t.ops.integrations(&TestStack::operator()).await.unwrap()[0]
        .health
        .rate_limit_resets_at
        .is_none()
    {
        assert!(
            start.elapsed() < SETTLE * 2,
            "the second 429 was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = t
        .ops
        .set_integration_enabled("primary", true, "", &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(view.health.rate_limit_resets_at, None, "{view:?}");
    assert_eq!(
        t.wait_settled(&q.id, SETTLE).await.status,
        ProductionStatus::Completed
    );
    t.stop().await;
}

/// Slow is not down: image calls that time out (a provider still drawing) are unknown
/// outcomes made again under the same key, and they do not open the circuit that as many
/// answered 503s would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_not_down_and_its_timeouts_are_unknown_outcomes_made_again() {
    let t = TestStack::start(&[
        ("ProviderTimeoutSeconds", "1"),
        // Image generation has its own request timeout.
        ("ImageTimeoutSeconds", "1"),
        ("CircuitMinimumCalls", "2"),
        ("CircuitFailureRatePercent", "50"),
        ("RetryBaseSeconds", "1"),
        ("RetryCapSeconds", "1"),
    ])
    .await;
    t.provider
        .add_fault(FaultRule::new("images", Fault::Slow { ms: 2500 }).times(2));
    let p = t.start_production(1).await;
    let done = t.completes(&p.id, SETTLE).await;
    let assets = done.phase("assets").unwrap();
    assert_eq!(assets.error_count, 2, "two timeouts, each retried");
    assert_eq!(
        assets.last_error.as_ref().unwrap().code,
        "provider_timeout",
        "{assets:?}"
    );

    // The circuit never opened: two timeouts are calls with unknown outcomes, not
    // failures (threshold 2 at 50% would have opened on two 503s).
    let list = t.ops.integrations(&TestStack::operator()).await.unwrap();
    assert_ne!(list[0].status, HealthStatus::Unavailable, "{:?}", list[0]);
    assert!(
        list[0]
            .health
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("provider_timeout")),
        "{:?}",
        list[0].health
    );
    assert!(
        !t.alarms()
            .await
            .iter()
            .any(|a| a.kind == "integration_unhealthy"),
        "no outage alarm for a slow provider"
    );

    // Each timed-out call's outcome was left unknown and the call made again under its
    // key: the provider saw one Idempotency-Key three times.
    let audit = t.audit_with(&p.id, "production.completed").await;
    let unknown = audit
        .iter()
        .filter(|r| r.event_type == "tool_call.unknown")
        .count();
    assert_eq!(unknown, 2, "{audit:#?}");
    let calls = t.provider.calls();
    assert!(calls.by_key.values().any(|n| *n == 3), "{:?}", calls.by_key);
    t.stop().await;
}
