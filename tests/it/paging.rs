//! Lists read what they return and go on by cursor (issue #10's bounded work): by status and
//! open approvals through the `by_status` index, an account's alarms by key, and a cursor
//! that cannot wander into another list.

use std::collections::BTreeSet;
use std::time::Duration;

use shepherd::adapters::dynamodb::DynamoAlarms;
use shepherd::domain::alarms::{AlarmKind, Raise, Severity};
use shepherd::domain::{Act, Caller, ProductionStatus, Role, Scope};
use shepherd::ops::{Ops, OpsError};
use shepherd::ports::{Alarms, Clock, Page, SystemClock};
use shepherd_it::{TestStack, brief};

fn of(account: &str) -> Caller {
    Caller::new(
        TestStack::actor(),
        Role::Operator,
        Scope::Account(account.into()),
    )
}

fn brief_of(account: &str) -> String {
    let mut b: serde_json::Value = serde_json::from_str(&brief(1)).unwrap();
    b["account"] = account.into();
    b.to_string()
}

/// Every page of an account's list from the first, following cursors.
async fn all_pages(
    ops: &Ops,
    account: &str,
    status: Option<ProductionStatus>,
    limit: usize,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let Page { items, next } = ops
            .list(
                account,
                status,
                limit,
                after.as_deref(),
                &TestStack::operator(),
            )
            .await
            .expect("page");
        pages += 1;
        assert!(items.len() <= limit, "a page holds at most its limit");
        ids.extend(items.into_iter().map(|p| p.id));
        match next {
            Some(n) => after = Some(n),
            None => return (ids, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_by_status_reads_only_what_it_returns_and_pages_by_cursor() {
    let t = TestStack::start_idle().await;
    // acme: 8 queued, 3 cancelled; globex: 6 cancelled (another account's volume).
    let mut acme = Vec::new();
    for _ in 0..11 {
        acme.push(t.ops.start(&brief_of("acme"), &of("acme")).await.unwrap());
    }
    let mut cancelled = BTreeSet::new();
    for p in &acme[2..5] {
        t.ops.act(&p.id, Act::Cancel, &of("acme")).await.unwrap();
        cancelled.insert(p.id.clone());
    }
    for _ in 0..6 {
        let p = t
            .ops
            .start(&brief_of("globex"), &of("globex"))
            .await
            .unwrap();
        t.ops.act(&p.id, Act::Cancel, &of("globex")).await.unwrap();
    }

    // The operators' tools through a counting proxy: what does one listing cost?
    let proxy = shepherd_local::faultproxy::FaultProxy::start(&shepherd_it::endpoint())
        .await
        .unwrap();
    let sdk = t.sdk.to_builder().endpoint_url(proxy.endpoint()).build();
    let (ops, _) = Ops::connect(&sdk, &t.stack.stack).await.unwrap();
    proxy.reset_counts();
    let (ids, pages) = all_pages(&ops, "acme", Some(ProductionStatus::Cancelled), 2).await;
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), cancelled);
    assert_eq!(ids.len(), 3, "each once: {ids:?}");
    assert!(pages >= 2, "limit 2 over 3 is two pages at least");
    assert_eq!(
        proxy.requests(".GetItem"),
        3,
        "one read per production returned, none for acme's 8 queued or globex's 6"
    );

    // Newest first, every production once, across pages of 4.
    let (ids, _) = all_pages(&ops, "acme", None, 4).await;
    let newest_first: Vec<String> = acme.iter().rev().map(|p| p.id.clone()).collect();
    assert_eq!(ids, newest_first);
    // Queued and running share the index's `active` group; a status still filters exactly.
    let (queued, _) = all_pages(&ops, "acme", Some(ProductionStatus::Queued), 3).await;
    assert_eq!(queued.len(), 8);
    let (running, _) = all_pages(&ops, "acme", Some(ProductionStatus::Running), 3).await;
    assert!(running.is_empty(), "{running:?}");

    // A cursor is the list's own: garbage, or another account's, is a 400, not a page.
    let globex = ops
        .list("globex", None, 2, None, &TestStack::operator())
        .await
        .unwrap();
    let theirs = globex.next.expect("globex has more than 2");
    for bad in [theirs.as_str(), "not-a-cursor", "eyJwayI6MX0"] {
        let err = ops
            .list("acme", None, 2, Some(bad), &TestStack::operator())
            .await
            .unwrap_err();
        assert!(matches!(err, OpsError::Invalid(_)), "{bad}: {err:?}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_alarms_are_read_by_key_and_audit_pages_follow_cursors() {
    let t = TestStack::start(&[]).await;
    let a = t.ops.start(&brief_of("acme"), &of("acme")).await.unwrap();
    let g = t
        .ops
        .start(&brief_of("globex"), &of("globex"))
        .await
        .unwrap();
    let alarms = DynamoAlarms::new(
        aws_sdk_dynamodb::Client::new(&t.sdk),
        format!("{}-state", t.stack.stack),
    );
    let now = SystemClock.now();
    for (i, p) in [&a, &g, &a].iter().enumerate() {
        let mut raise = Raise::production(AlarmKind::DlqArrival, p, Severity::Warning, "x");
        raise.subject = format!("{}-{i}", p.id);
        alarms.raise(&raise, now + i as i64).await.unwrap();
    }
    let stack_alarm = Raise::new(AlarmKind::DlqArrival, "BriefDLQ", Severity::Warning, "y");
    alarms.raise(&stack_alarm, now + 10).await.unwrap();

    // acme's caller sees acme's two, newest first, a page of one at a time.
    let first = t.ops.alarms(None, 1, None, &of("acme")).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].subject, format!("{}-2", a.id));
    let second = t
        .ops
        .alarms(None, 1, first.next.as_deref(), &of("acme"))
        .await
        .unwrap();
    assert_eq!(second.items[0].subject, format!("{}-0", a.id));
    if let Some(n) = second.next {
        let rest = t.ops.alarms(None, 1, Some(&n), &of("acme")).await.unwrap();
        assert!(rest.items.is_empty(), "{rest:?}");
    }
    // Asking for another account changes nothing for an account's caller.
    let mine = t
        .ops
        .alarms(Some("globex"), 10, None, &of("acme"))
        .await
        .unwrap();
    assert!(
        mine.items
            .iter()
            .all(|x| x.account.as_deref() == Some("acme"))
    );
    assert_eq!(mine.items.len(), 2);
    // The stack's operators see all four, or one account's.
    let all = t
        .ops
        .alarms(None, 10, None, &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4, "{:?}", all.items);
    assert_eq!(all.items[0].subject, "BriefDLQ");
    let globex = t
        .ops
        .alarms(Some("globex"), 10, None, &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(globex.items.len(), 1);

    // A production's audit, a page of one at a time, is the whole trail in order.
    let q = shepherd::audit::AuditQuery::Production(a.id.clone());
    let settled = t.wait_settled(&a.id, Duration::from_secs(90)).await;
    assert_eq!(settled.status, ProductionStatus::Completed, "{settled:?}");
    // The projection trails the commit: wait for the trail's last event, not a count.
    let whole = t.audit_with(&a.id, "production.completed").await;
    assert!(whole.len() >= 5, "{settled:?}: {whole:?}");
    let mut paged = Vec::new();
    let mut after = None;
    for _ in 0..50 {
        let page = t
            .ops
            .audit(&q, 1, after.as_deref(), &TestStack::operator())
            .await
            .unwrap();
        paged.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, whole);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_with_next_cursor_and_refuses_a_bad_one() {
    let t = TestStack::start(&[]).await;
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        let p = t.start_production(1).await;
        ids.insert(p.id.clone());
    }
    for id in &ids {
        t.wait_settled(id, Duration::from_secs(90)).await;
    }
    let (status, first) = t
        .http(
            "GET",
            "/productions?status=completed&limit=2",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["productions"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (status, second) = t
        .http(
            "GET",
            &format!("/productions?status=completed&limit=2&cursor={cursor}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for page in [&first, &second] {
        for p in page["productions"].as_array().unwrap() {
            assert!(seen.insert(p["id"].as_str().unwrap().to_string()), "{p}");
        }
    }
    assert_eq!(seen, ids);
    let (status, err) = t
        .http(
            "GET",
            "/productions?cursor=bm90LWEta2V5",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_request")),
        "{err}"
    );
    let (status, body) = t
        .http("GET", "/approvals?limit=1", Some("viewer-acme"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["next_cursor"].is_null(), "none waits: {body}");
    t.stop().await;
}
