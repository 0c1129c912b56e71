//! At-least-once in, effectively-once out: duplicates, races and poison messages.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shepherd::domain::{PhaseStatus, ProductionStatus};
use shepherd::runtime::{PhaseMessage, Stats};
use shepherd_it::TestStack;

const SETTLE: Duration = Duration::from_secs(60);

fn record(id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.receipt_handle = Some(format!("receipt-{id}"));
    m.body = Some(body.into());
    m.attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    m
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_runs_the_phase_once() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(1).await;
    let body = PhaseMessage::new(&p.id, "brief", 1).to_body();
    for _ in 0..2 {
        t.sqs()
            .send_message()
            .queue_url(t.queue_url("BriefQueue"))
            .message_body(&body)
            .send()
            .await
            .unwrap();
    }
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    t.wait_depth("BriefQueue", 0, SETTLE).await;

    let stats = t.stats("brief");
    assert_eq!(Stats::get(&stats.received), 3);
    assert_eq!(Stats::get(&stats.claimed), 1, "ran once");
    assert_eq!(
        Stats::get(&stats.duplicate) + Stats::get(&stats.stale),
        2,
        "the copies were acknowledged and counted"
    );
    let calls = t.provider.calls();
    assert_eq!(calls.by_key[&format!("{}#brief#plan", p.id)], 1);
    assert_eq!(t.depth("BriefDeadLetterQueue").await, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_racing_run_the_phase_once() {
    let t = TestStack::start_idle().await;
    let p = t.start_production(1).await;
    let handler = t.handler("brief").await;
    let body = PhaseMessage::new(&p.id, "brief", 1).to_body();

    // Two invocations at once, each holding a copy of the message.
    let (a, b) = tokio::join!(
        handler.handle(event(vec![record("m1", &body)])),
        handler.handle(event(vec![record("m2", &body)]))
    );
    assert!(a.batch_item_failures.is_empty() && b.batch_item_failures.is_empty());
    assert_eq!(
        Stats::get(&handler.stats.claimed),
        1,
        "exactly one claim won"
    );
    assert_eq!(
        Stats::get(&handler.stats.duplicate) + Stats::get(&handler.stats.stale),
        1
    );

    let after = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(after.phase("brief").unwrap().status, PhaseStatus::Succeeded);
    assert_eq!(after.phase("script").unwrap().status, PhaseStatus::Queued);
    assert_eq!(
        after.version, 3,
        "created, claimed, committed: nothing more"
    );
    assert_eq!(t.provider.calls().served.values().sum::<u64>(), 1);
    // The winner handed off exactly one message to the next phase.
    t.wait_depth("ScriptQueue", 1, SETTLE).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_fails_only_itself_is_quarantined_with_its_reason_and_never_loops() {
    let t = TestStack::start_idle().await;
    let p = t.start_production(1).await;
    let handler = t.handler("brief").await;
    let good = PhaseMessage::new(&p.id, "brief", 1).to_body();
    let wrong_phase = PhaseMessage::new(&p.id, "voice", 1).to_body();
    let unknown = PhaseMessage::new("no-such-production", "brief", 1).to_body();

    let res = handler
        .handle(event(vec![
            record("bad-json", "{not json"),
            record("good", &good),
            record("wrong-phase", &wrong_phase),
            record("unknown", &unknown),
        ]))
        .await;
    assert!(
        res.batch_item_failures.is_empty(),
        "poison is moved to the DLQ, so nothing is redelivered: {:?}",
        res.batch_item_failures
    );
    assert_eq!(Stats::get(&handler.stats.poison), 3);
    assert_eq!(
        Stats::get(&handler.stats.claimed),
        1,
        "the good message in the batch ran"
    );
    let after = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(after.phase("brief").unwrap().status, PhaseStatus::Succeeded);

    t.wait_depth("BriefDeadLetterQueue", 3, SETTLE).await;
    let mut reasons: Vec<String> = t
        .peek("BriefDeadLetterQueue")
        .await
        .iter()
        .map(|m| {
            let attrs = m.message_attributes.as_ref().expect("attributes");
            let source = attrs["shepherd_source_message_id"]
                .string_value()
                .unwrap()
                .to_string();
            let reason = attrs["shepherd_error"].string_value().unwrap().to_string();
            format!("{source}: {reason}")
        })
        .collect();
    reasons.sort();
    assert!(
        reasons[0].starts_with("bad-json: malformed_message: body is not a phase message"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[1],
        "unknown: malformed_message: production no-such-production does not exist"
    );
    assert_eq!(
        reasons[2],
        "wrong-phase: malformed_message: message for phase voice reached the brief queue"
    );
    t.stop().await;
}
