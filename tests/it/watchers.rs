//! Watchers on the local stack (F-13): a feed that gains posts starts one production per
//! new post; a feed that answers 500 raises the alarm at the first threshold and is
//! disabled at the second; `PATCH` re-enables it. A repository's labelled issues (the
//! GitHub-shaped host, with ETags, `Link` pages and rate-limit headers) start coding jobs.
//! The scheduler's role polls; the clock moves by a test-held offset.

use serde_json::json;
use shepherd::domain::Millis;
use shepherd::domain::alarms::AlarmKind;
use shepherd::ops::{Ops, WatchTick};
use shepherd::ports::Clock;
use shepherd_it::feed::FeedServer;
use shepherd_it::{MovedClock, TestStack};

const MIN: Millis = 60_000;

async fn tick(ops: &Ops, clock: &MovedClock) -> WatchTick {
    clock.advance(6 * MIN);
    ops.run_watchers().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_watcher_starts_one_production_per_new_post_and_is_disabled_when_it_keeps_failing() {
    let t = TestStack::start(&[]).await;
    let feed = FeedServer::start().await;
    feed.publish("Old post", "Already there when the watcher was made");
    let spec = json!({"name": "tides-blog", "account": "acme", "kind": "feed", "url": feed.url,
        "mapping": {"title": "/title", "topic": "/summary", "scenes": {"value": 1}}});
    let id = t.create_watcher(spec).await;
    let (ops, clock) = t.scheduler_ops().await;

    // The first poll records what is there and starts nothing.
    let first = tick(&ops, &clock).await;
    assert_eq!((first.polled, first.items), (1, 0), "{first:?}");
    feed.publish("Spring tides explained", "Why some tides are higher");
    feed.publish("Neap tides", "Why some tides are lower");
    let second = tick(&ops, &clock).await;
    assert_eq!(second.items, 2, "{second:?}");
    let events = t.events_of(&format!("watcher:{id}"), "acme").await;
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["outcome"] == "started")
        .map(|e| e["production"].as_str().unwrap())
        .collect();
    assert_eq!(started.len(), 2, "{events:?}");
    // Nothing new: the feed answers 304 to the stored ETag, nothing starts.
    let third = tick(&ops, &clock).await;
    assert_eq!((third.polled, third.items), (1, 0));

    // The blog goes down: an alarm at the third failure, disabled at the sixth.
    feed.fail(Some(500));
    for _ in 0..3 {
        tick(&ops, &clock).await;
    }
    let warn = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.kind == AlarmKind::WatcherFailing);
    assert!(
        warn.expect("the watcher's warning")
            .detail
            .contains("answered 500")
    );
    for _ in 0..3 {
        tick(&ops, &clock).await;
    }
    let (_, w) = t
        .http("GET", &format!("/watchers/{id}"), Some("viewer-acme"), None)
        .await;
    assert_eq!(
        (w["state"].as_str(), w["consecutive_errors"].as_u64()),
        (Some("disabled"), Some(6)),
        "{w}"
    );
    assert!(w["last_error"].as_str().unwrap().contains("500"), "{w}");
    assert!(
        t.alarms()
            .await
            .iter()
            .any(|a| a.kind == AlarmKind::WatcherDisabled)
    );
    let polls = feed.requests();
    assert_eq!(
        tick(&ops, &clock).await.due,
        0,
        "a disabled watcher is not polled"
    );
    assert_eq!(feed.requests(), polls);

    // Fixed, and re-enabled by an operator: the count is cleared and it polls again.
    feed.fail(None);
    let (st, _) = t
        .http(
            "PATCH",
            &format!("/watchers/{id}"),
            Some("viewer-acme"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, w) = t
        .http(
            "PATCH",
            &format!("/watchers/{id}"),
            Some("operator-acme"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(
        (st, w["consecutive_errors"].as_u64()),
        (200, Some(0)),
        "{w}"
    );
    feed.publish("King tides", "The highest of the year");
    assert_eq!(tick(&ops, &clock).await.items, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_issue_starts_a_coding_job_and_the_host_s_etag_and_rate_limit_are_kept() {
    let t = TestStack::start(&[]).await;
    t.allow("acme", &["acme/*"]).await;
    let spec = json!({"name": "widgets-issues", "account": "acme", "kind": "github_issues",
        "pipeline": "coding", "repository": "acme/widgets", "label": "shepherd",
        "mapping": {"repository": "/repository", "task": "/body", "title": "/title"}});
    t.create_watcher(spec).await;
    let (ops, clock) = t.scheduler_ops().await;
    t.scm
        .open_issue("acme/widgets", "Old", "Was there before", &["shepherd"]);
    assert_eq!(
        tick(&ops, &clock).await.items,
        0,
        "the first poll only records"
    );
    // More than one page (100 a page): the watcher follows `Link`.
    for n in 0..101 {
        t.scm
            .open_issue("acme/widgets", &format!("Unlabelled {n}"), "x", &["bug"]);
    }
    t.scm.open_issue(
        "acme/widgets",
        "Fix the tide table",
        "Off by one hour",
        &["shepherd"],
    );
    let polled = tick(&ops, &clock).await;
    assert_eq!(polled.items, 1, "{polled:?}");
    let (_, page) = t
        .http("GET", "/events?outcome=started", Some("viewer-acme"), None)
        .await;
    let p = page["events"][0]["production"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, prod) = t
        .http(
            "GET",
            &format!("/productions/{p}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(prod["pipeline"], "coding", "{prod}");
    // Unchanged: a conditional request, answered 304.
    assert_eq!(tick(&ops, &clock).await.items, 0);
    // The host's rate limit: not a failure; the next poll waits for its reset.
    t.scm.set_rate_remaining(0);
    let limited = tick(&ops, &clock).await;
    assert_eq!(
        (limited.polled, limited.failed_polls),
        (1, 0),
        "{limited:?}"
    );
    let (_, w) = t.http("GET", "/watchers", Some("viewer-acme"), None).await;
    let w = &w["watchers"][0];
    assert_eq!(w["consecutive_errors"], 0);
    assert!(
        w["next_poll_at"].as_i64().unwrap() > clock.now() + 30 * MIN,
        "{w}"
    );
    t.scm.set_rate_remaining(5000);
    t.stop().await;
}
