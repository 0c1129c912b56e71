//! Account limits: a start is refused, whole, when the monthly allowance or the concurrency
//! limit is reached, with the limit and the figures; slots come back when productions end.

use std::time::{Duration, Instant};

use shepherd::domain::ProductionStatus;
use shepherd::domain::limits::Limits;
use shepherd::domain::{Act, Role};
use shepherd_api::HttpStatus;
use shepherd_it::{TestStack, brief};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_allowance_refuses_a_start_with_its_figures_and_is_never_refunded() {
    let t = TestStack::start(&[]).await;
    let limits = Limits {
        monthly_allowance: Some(2),
        max_concurrent: None,
    };
    let err = t
        .ops
        .set_limits("acme", limits, &TestStack::caller(Role::Operator))
        .await;
    assert_eq!(err.unwrap_err().status(), 403, "limits are an admin's");
    t.ops
        .set_limits("acme", limits, &TestStack::caller(Role::Admin))
        .await
        .unwrap();

    let a = t.start_production(1).await;
    let b = t.start_production(1).await;
    let refused = t
        .ops
        .start(&brief(1), &TestStack::operator())
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 429);
    let month = shepherd::domain::limits::month_of(shepherd::ports::Clock::now(
        &shepherd::ports::SystemClock,
    ));
    assert_eq!(
        refused.to_string(),
        format!("account acme: monthly allowance reached: 2 of 2 productions started in {month}")
    );
    assert_eq!(
        t.ops
            .list("acme", None, 10, None, &TestStack::operator())
            .await
            .unwrap()
            .items
            .len(),
        2,
        "nothing half-created"
    );

    // Over HTTP the same refusal, as JSON.
    let (status, body) = t
        .http(
            "POST",
            "/productions",
            Some("operator-acme"),
            Some(serde_json::from_str(&brief(1)).unwrap()),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("limit_reached")),
        "{body}"
    );

    // Finishing or cancelling refunds nothing.
    t.ops
        .act(&b.id, Act::Cancel, &TestStack::caller(Role::Operator))
        .await
        .ok();
    t.wait_settled(&a.id, SETTLE).await;
    let usage = t
        .ops
        .account_usage("acme", &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(usage.started_this_month, 2);
    assert!(
        t.ops
            .start(&brief(1), &TestStack::operator())
            .await
            .is_err()
    );
    // Another account is not affected.
    let mut other: serde_json::Value = serde_json::from_str(&brief(1)).unwrap();
    other["account"] = "globex".into();
    t.ops
        .start(&other.to_string(), &TestStack::operator())
        .await
        .expect("globex starts");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_while_a_production_waits_or_pauses_and_frees_when_it_ends() {
    let t = TestStack::start(&[("DefaultMaxConcurrent", "1"), ("ApprovalPhases", "brief")]).await;
    let first = t.start_production(1).await;
    t.wait_for(&first.id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await;
    let refused = t
        .ops
        .start(&brief(1), &TestStack::operator())
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 429);
    assert!(
        refused
            .to_string()
            .contains("concurrency limit reached: 1 of 1 productions active"),
        "{refused}"
    );

    // Pausing keeps the slot.
    t.ops
        .act(&first.id, Act::Pause, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        t.ops
            .start(&brief(1), &TestStack::operator())
            .await
            .is_err()
    );
    assert_eq!(
        t.ops
            .account_usage("acme", &TestStack::operator())
            .await
            .unwrap()
            .active,
        std::slice::from_ref(&first.id)
    );

    // Cancelling frees it (within seconds: the stream carries the release).
    t.ops
        .act(&first.id, Act::Cancel, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    let start = Instant::now();
    let second = loop {
        match t.ops.start(&brief(1), &TestStack::operator()).await {
            Ok(p) => break p,
            Err(e) if e.status() == 429 && start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the slot was not freed: {e}"),
        }
    };
    let usage = t
        .ops
        .account_usage("acme", &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(usage.active, std::slice::from_ref(&second.id));
    assert_eq!(usage.effective.max_concurrent, Some(1));
    assert_eq!(
        usage.started_this_month, 2,
        "the refused starts were not counted"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_starts_racing_for_the_last_slot_cannot_both_win() {
    let t = TestStack::start_idle_with(&[("DefaultMaxConcurrent", "1")]).await;
    let (text, actor) = (brief(1), TestStack::operator());
    let (a, b) = tokio::join!(t.ops.start(&text, &actor), t.ops.start(&text, &actor));
    let won = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(won, 1, "{a:?} {b:?}");
    let lost = a.err().or(b.err()).unwrap();
    assert_eq!(lost.status(), 429, "{lost}");
    let usage = t
        .ops
        .account_usage("acme", &TestStack::operator())
        .await
        .unwrap();
    assert_eq!((usage.active.len(), usage.started_this_month), (1, 1));
    assert_eq!(
        t.ops
            .list("acme", None, 10, None, &TestStack::operator())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    t.stop().await;
}
