//! Schedules on the local stack (F-12): the scheduler function, built from the template
//! with its own role, fires what a schedule's catch-up policy says after downtime, two
//! ticks at once start one production a slot, and the `/schedules` API enforces roles.

use std::sync::Arc;
use std::time::Duration;

use shepherd::domain::schedule::{MissReason, SlotOutcome};
use shepherd::domain::{Actor, Caller, Millis, Role, Scope};
use shepherd::ops::Ops;
use shepherd::ports::{AuditQuery, Clock, SystemClock};
use shepherd_it::TestStack;

const MIN: Millis = 60_000;

/// The wall clock moved back: a schedule made "35 minutes ago".
struct Earlier(Millis);
impl Clock for Earlier {
    fn now(&self) -> Millis {
        SystemClock.now() - self.0
    }
}

fn admin() -> Caller {
    Caller::new(
        Actor("admin:test".into()),
        Role::Admin,
        Scope::Account("acme".into()),
    )
}

fn spec(extra: serde_json::Value) -> shepherd::domain::schedule::ScheduleSpec {
    let mut v = serde_json::json!({"name": "tides", "account": "acme",
        "input": {"title": "Tides", "topic": "Why the sea moves", "scenes": 1},
        "every_minutes": 10});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_two_ticks_at_once_fire_the_latest_slot_once_and_record_every_miss() {
    let t = TestStack::start_idle().await;
    // Made 35 minutes ago, and no tick since: three or four slots are overdue.
    let mut ports = shepherd::wiring::AwsClients::new(&t.sdk).ports(
        &t.config.topology,
        None,
        Duration::from_secs(10),
    );
    ports.clock = Arc::new(Earlier(35 * MIN));
    let past = Ops::new(ports, t.config.clone(), t.app.pipelines().clone());
    let s = past
        .create_schedule(spec(serde_json::json!({"overlap": "allow"})), &admin())
        .await
        .unwrap();

    // The scheduler as deployed: its handler from the template, with its role, twice.
    let clients = t.function_clients("scheduler").await;
    let f = t.function("scheduler");
    let a = shepherd_local::runtime::handler(f, &clients, &t.app).unwrap();
    let b = shepherd_local::runtime::handler(f, &clients, &t.app).unwrap();
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let reports = [ra.unwrap().unwrap(), rb.unwrap().unwrap()];
    let fired: usize = reports
        .iter()
        .map(|r| {
            serde_json::to_value(r).unwrap()["schedules"]["fired"]
                .as_u64()
                .unwrap() as usize
        })
        .sum();
    assert_eq!(fired, 1, "one production for the latest slot: {reports:?}");

    let detail = t
        .ops
        .schedule(&s.id, &TestStack::operator(), 100, None)
        .await
        .unwrap();
    let mut history = detail.history.clone();
    history.sort_by_key(|r| r.slot);
    let now = SystemClock.now();
    let expected: Vec<Millis> = (0..)
        .map(|i| s.next_slot + i * 10 * MIN)
        .take_while(|t| *t <= now)
        .collect();
    assert_eq!(
        history.iter().map(|r| r.slot).collect::<Vec<_>>(),
        expected,
        "every due slot has one outcome"
    );
    let (last, missed) = history.split_last().unwrap();
    let SlotOutcome::Fired { production, .. } = &last.outcome else {
        panic!("the newest slot fires: {history:?}")
    };
    assert!(missed.iter().all(|r| matches!(
        r.outcome,
        SlotOutcome::Missed {
            reason: MissReason::Downtime,
            ..
        }
    )));
    let p = t.ops.get(production, &TestStack::operator()).await.unwrap();
    assert_eq!(p.account, "acme");
    assert_eq!(detail.schedule.last_fired.unwrap().production, *production);
    assert_eq!(detail.schedule.missed_count, missed.len() as u64);

    // The misses are in the audit, by type and account, and an alarm names the schedule.
    let audited = t
        .ops
        .audit(
            &AuditQuery::Type {
                event_type: "schedule.missed".into(),
                since: 0,
                until: now + MIN,
                account: Some("acme".into()),
            },
            100,
            None,
            &TestStack::operator(),
        )
        .await
        .unwrap();
    assert_eq!(audited.items.len(), missed.len());
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.subject == s.id)
        .expect("the schedule's alarm");
    assert_eq!(alarm.kind.to_string(), "schedule_missed");

    // A tick later: nothing is due, nothing more starts.
    let again = a.tick().await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(again).unwrap()["schedules"]["due"], 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_api_checks_the_spec_and_the_roles_and_triggers_now() {
    let t = TestStack::start(&[]).await;
    let body = serde_json::to_value(spec(serde_json::json!({}))).unwrap();
    let (st, e) = t
        .http(
            "POST",
            "/schedules",
            Some("operator-acme"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 403, "{e}");
    let mut bad = body.clone();
    bad["time_zone"] = "Mars/Olympus".into();
    let (st, e) = t
        .http("POST", "/schedules", Some("admin-acme"), Some(bad))
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("time_zone"), "{e}");
    let (st, created) = t
        .http("POST", "/schedules", Some("admin-acme"), Some(body))
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["next_slot"].as_i64().unwrap() > SystemClock.now());

    let (st, list) = t.http("GET", "/schedules", Some("viewer-acme"), None).await;
    assert_eq!(
        (st, list["schedules"][0]["id"].as_str()),
        (200, Some(id.as_str()))
    );
    let path = format!("/schedules/{id}");
    let (st, _) = t.http("GET", &path, Some("admin-globex"), None).await;
    assert_eq!(st, 404, "another account's schedule is not found");

    let pause = serde_json::json!({"paused": true, "note": "release freeze"});
    let (st, _) = t
        .http("PATCH", &path, Some("viewer-acme"), Some(pause.clone()))
        .await;
    assert_eq!(st, 403);
    let (st, e) = t
        .http(
            "PATCH",
            &path,
            Some("operator-acme"),
            Some(serde_json::json!({"paused": true})),
        )
        .await;
    assert_eq!(st, 400, "a pause needs a note: {e}");
    let (st, paused) = t
        .http("PATCH", &path, Some("operator-acme"), Some(pause))
        .await;
    assert_eq!(
        (st, &paused["paused"]["note"]),
        (200, &serde_json::json!("release freeze"))
    );

    let (st, fired) = t
        .http(
            "POST",
            &format!("{path}/trigger"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(st, 201, "{fired}");
    let production = fired["production"].as_str().unwrap();
    let (st, p) = t
        .http(
            "GET",
            &format!("/productions/{production}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!((st, p["account"].as_str()), (200, Some("acme")));
    let (st, shown) = t.http("GET", &path, Some("viewer-acme"), None).await;
    assert_eq!(st, 200);
    assert_eq!(shown["history"][0]["origin"], "trigger");
    assert_eq!(shown["history"][0]["production"], production);

    let (st, _) = t.http("DELETE", &path, Some("operator-acme"), None).await;
    assert_eq!(st, 403);
    let (st, e) = t.http("DELETE", &path, Some("admin-acme"), None).await;
    assert_eq!(st, 200, "{e}");
    let (st, _) = t.http("GET", &path, Some("viewer-acme"), None).await;
    assert_eq!(st, 404);
    t.stop().await;
}

fn reasons(history: &[shepherd::domain::schedule::SlotRecord]) -> Vec<String> {
    let mut h = history.to_vec();
    h.sort_by_key(|r| r.slot);
    h.iter()
        .map(|r| match &r.outcome {
            SlotOutcome::Fired { .. } => "fired".to_string(),
            SlotOutcome::Missed { reason, .. } => reason.as_str().to_string(),
            SlotOutcome::Buffered => "held".to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_ticks_then_skip_latest_and_all_start_what_they_say_and_overlap_pause_and_backfill_hold()
 {
    let t = TestStack::start_idle().await;
    let (ops, clock) = t.scheduler_ops().await;
    let make = |extra: serde_json::Value| {
        let ops = &ops;
        async move { ops.create_schedule(spec(extra), &admin()).await.unwrap() }
    };
    // Three schedules of 10 minutes, made now; then no tick for 6 slots.
    let skip = make(serde_json::json!({"catch_up": "skip"})).await;
    let latest = make(serde_json::json!({"catch_up": "latest", "overlap": "allow"})).await;
    let all = make(serde_json::json!({"catch_up": "all", "catch_up_cap": 2,
        "staleness_seconds": 2400, "overlap": "allow"}))
    .await;
    let first = skip.next_slot;
    assert_eq!((latest.next_slot, all.next_slot), (first, first));
    // The clock at `first` + `m` minutes.
    let at = |m: Millis| {
        clock.0.store(
            first + m * MIN - SystemClock.now(),
            std::sync::atomic::Ordering::SeqCst,
        )
    };
    at(55);
    let tick = ops.run_schedules().await.unwrap();
    assert_eq!(tick.due, 3, "{tick:?}");
    let history = |id: &str| {
        let reader = &t.ops;
        let id = id.to_string();
        async move {
            reasons(
                &reader
                    .schedule(&id, &TestStack::operator(), 100, None)
                    .await
                    .unwrap()
                    .history,
            )
        }
    };
    assert_eq!(history(&skip.id).await, ["downtime"; 6]);
    assert_eq!(
        history(&latest.id).await,
        [
            "downtime", "downtime", "downtime", "downtime", "downtime", "fired"
        ]
    );
    // all: 55 and 45 minutes old are past the 40-minute budget; the newest two fire.
    assert_eq!(
        history(&all.id).await,
        ["stale", "stale", "over_cap", "over_cap", "fired", "fired"]
    );

    // overlap: skip while the last production is open (nothing works the queue here).
    at(61);
    ops.run_schedules().await.unwrap();
    let mut s = t
        .ops
        .schedule(&skip.id, &TestStack::operator(), 1, None)
        .await
        .unwrap();
    assert!(
        matches!(s.history[0].outcome, SlotOutcome::Fired { .. }),
        "{s:?}"
    );
    at(71);
    ops.run_schedules().await.unwrap();
    s = t
        .ops
        .schedule(&skip.id, &TestStack::operator(), 1, None)
        .await
        .unwrap();
    assert!(
        matches!(
            s.history[0].outcome,
            SlotOutcome::Missed {
                reason: MissReason::Overlap,
                ..
            }
        ),
        "{s:?}"
    );

    // Pause: slots missed as paused; trigger now; resume; backfill the paused ones.
    let op = Caller::new(
        Actor("operator:test".into()),
        Role::Operator,
        Scope::Account("acme".into()),
    );
    ops.pause_schedule(&latest.id, "release freeze", &op)
        .await
        .unwrap();
    at(91);
    ops.run_schedules().await.unwrap();
    let h = history(&latest.id).await;
    assert_eq!(&h[h.len() - 3..], ["fired", "paused", "paused"], "{h:?}");
    let (_, triggered) = ops.trigger_schedule(&latest.id, &op).await.unwrap();
    ops.resume_schedule(&latest.id, &op).await.unwrap();
    let paused_from = first + 80 * MIN;
    ops.backfill_schedule(&latest.id, paused_from, paused_from + 10 * MIN, 1, &op)
        .await
        .unwrap();
    let one = ops.run_schedules().await.unwrap();
    let two = ops.run_schedules().await.unwrap();
    assert_eq!((one.fired, two.fired), (1, 1), "one backfilled slot a tick");
    let shown = t
        .ops
        .schedule(&latest.id, &TestStack::operator(), 100, None)
        .await
        .unwrap();
    let origins: Vec<String> = shown
        .history
        .iter()
        .filter_map(|r| match &r.outcome {
            SlotOutcome::Fired { origin, .. } => Some(
                serde_json::to_value(origin)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        origins.iter().filter(|o| *o == "backfill").count(),
        2,
        "{origins:?}"
    );
    assert!(origins.contains(&"trigger".to_string()));
    assert!(t.ops.get(&triggered, &TestStack::operator()).await.is_ok());
    t.stop().await;
}
