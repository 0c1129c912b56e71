//! Dead-letter queues: inspect, resubmit, redrive (Shepherd's or the console's), discard.

use std::time::Duration;

use shepherd::domain::Role;
use shepherd::domain::{PhaseStatus, Production, ProductionStatus};
use shepherd::ops::RedriveFilter;
use shepherd::runtime::Stats;
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

/// A production whose brief phase exhausted its retries, its message in the brief DLQ.
async fn dead_lettered(t: &TestStack) -> Production {
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Status(503)));
    let p = t.start_production(1).await;
    let p = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(p.status, ProductionStatus::DeadLettered);
    t.wait_depth("BriefDeadLetterQueue", 1, SETTLE).await;
    t.provider.clear_faults(); // the cause is fixed
    p
}

/// Waits until the redriven production has left `dead_lettered` and settled again.
async fn redriven(t: &TestStack, id: &str) -> Production {
    t.wait_for(id, SETTLE, |p| {
        p.status != ProductionStatus::DeadLettered && p.status.is_settled()
    })
    .await
}

async fn poison(t: &TestStack) {
    t.sqs()
        .send_message()
        .queue_url(t.queue_url("BriefQueue"))
        .message_body("{oops")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_resubmit_one_message_after_fixing_the_cause() {
    let t = TestStack::start(&[("PhaseMaxRetries", "2")]).await;
    let p = dead_lettered(&t).await;
    let entries = t
        .ops
        .dlq_list(Some("brief"), 10, &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(
        (e.production_id.as_deref(), e.attempt),
        (Some(p.id.as_str()), Some(1))
    );
    assert_eq!(e.code, "provider_unavailable");
    assert!(!e.malformed);
    let (shown, production) = t
        .ops
        .dlq_show(&e.message_id, &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(shown.message_id, e.message_id);
    assert_eq!(production.unwrap().status, ProductionStatus::DeadLettered);

    let one = RedriveFilter {
        message_id: Some(e.message_id.clone()),
        ..Default::default()
    };
    let r = t
        .ops
        .dlq_redrive(&one, 10, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(r.moved.len(), 1);
    let done = redriven(&t, &p.id).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(
        done.phase("brief").unwrap().attempt,
        2,
        "the resubmission became attempt 2"
    );
    assert_eq!(Stats::get(&t.stats("brief").redriven), 1);
    assert_eq!(t.depth("BriefDeadLetterQueue").await, 0);
    let err = t
        .ops
        .dlq_redrive(&one, 10, &TestStack::caller(Role::Operator))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 404, "{err}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_by_the_console_or_move_task_is_accepted_the_same_way() {
    let t = TestStack::start(&[("PhaseMaxRetries", "2")]).await;
    let p = dead_lettered(&t).await;
    // What StartMessageMoveTask does: the original body back to the source queue.
    let m = &t.peek("BriefDeadLetterQueue").await[0];
    t.sqs()
        .send_message()
        .queue_url(t.queue_url("BriefQueue"))
        .message_body(m.body().unwrap())
        .send()
        .await
        .unwrap();
    t.sqs()
        .delete_message()
        .queue_url(t.queue_url("BriefDeadLetterQueue"))
        .receipt_handle(m.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let done = redriven(&t, &p.id).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(done.phase("brief").unwrap().attempt, 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_filters_leave_poison_in_place_and_discard_is_admin_only_and_audited() {
    let t = TestStack::start(&[("PhaseMaxRetries", "2")]).await;
    let p = dead_lettered(&t).await;
    poison(&t).await;
    t.wait_depth("BriefDeadLetterQueue", 2, SETTLE).await;

    let wrong_code = RedriveFilter {
        phase: Some("brief".into()),
        code: Some("content_refused".into()),
        ..Default::default()
    };
    let r = t
        .ops
        .dlq_redrive(&wrong_code, 10, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!((r.moved.len(), r.skipped), (0, 2));
    let viewer = t
        .ops
        .dlq_redrive(
            &RedriveFilter::default(),
            10,
            &TestStack::caller(Role::Viewer),
        )
        .await
        .unwrap_err();
    assert_eq!(viewer.status(), 403);

    let all = RedriveFilter::default();
    let r = t
        .ops
        .dlq_redrive(&all, 10, &TestStack::caller(Role::Operator))
        .await
        .unwrap();
    assert_eq!(
        (r.moved.len(), r.skipped),
        (1, 1),
        "malformed messages stay unless asked for"
    );
    let done = redriven(&t, &p.id).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    assert_eq!(done.phase("brief").unwrap().status, PhaseStatus::Succeeded);

    let left = t
        .ops
        .dlq_list(None, 10, &TestStack::operator())
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert!(
        left[0].malformed && left[0].reason.starts_with("malformed_message"),
        "{left:?}"
    );
    let id = left[0].message_id.clone();
    let op = t
        .ops
        .dlq_discard(
            &id,
            "garbage from a test",
            &TestStack::caller(Role::Operator),
        )
        .await
        .unwrap_err();
    assert_eq!(op.status(), 403);
    t.ops
        .dlq_discard(&id, "garbage from a test", &TestStack::caller(Role::Admin))
        .await
        .unwrap();
    assert_eq!(t.depth("BriefDeadLetterQueue").await, 0);

    let ddb = aws_sdk_dynamodb::Client::new(&t.sdk);
    let audit = ddb
        .query()
        .table_name(t.stack.reference("AuditTable").unwrap())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("DLQ#brief".into()),
        )
        .send()
        .await
        .unwrap();
    let row = &audit.items()[0];
    assert_eq!(row["et"].as_s().unwrap(), "dlq.discarded");
    assert!(
        row["detail"]
            .as_s()
            .unwrap()
            .contains("garbage from a test")
    );
    assert_eq!(row["actor"].as_s().unwrap(), "operator:test");
    t.stop().await;
}
