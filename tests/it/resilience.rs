//! Where the world is unkind: bad model answers, lost hand-offs and commits (failed on
//! the wire by a fault proxy between the functions and the emulator), a stream record the
//! audit projector cannot write, and CloudWatch alarms arriving through the alarm topic.

use std::time::{Duration, Instant};

use shepherd::domain::{Act, ProductionStatus, Role};
use shepherd_api::HttpStatus;
use shepherd_it::{Fault, FaultRule, TestStack};
use shepherd_local::faultproxy::ProxyRule;

const SETTLE: Duration = Duration::from_secs(90);

/// Calls the provider served per key, for keys containing `part`.
fn served(t: &TestStack, part: &str) -> Vec<(String, u64)> {
    t.provider
        .calls()
        .by_key
        .into_iter()
        .filter(|(k, _)| k.contains(part))
        .collect()
}

fn nothing_served_twice(t: &TestStack) {
    let calls = t.provider.calls();
    let twice: Vec<_> = calls.by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "finished calls made again: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_answer_once_costs_one_fresh_call_and_the_production_completes() {
    let t = TestStack::start(&[]).await;
    t.provider.add_fault(
        FaultRule::new("chat", Fault::BadAnswer(true))
            .key("#brief#plan")
            .times(1),
    );
    let p = t.start_production(2).await;
    t.completes(&p.id, SETTLE).await;
    let plan = served(&t, "#brief#plan");
    assert_eq!(
        plan.len(),
        2,
        "the rejected answer and one fresh call: {plan:?}"
    );
    assert!(plan.iter().any(|(k, _)| k.ends_with("#t1")), "{plan:?}");
    nothing_served_twice(&t);
    let audit = t.audit_with(&p.id, "production.completed").await;
    let rejected: Vec<_> = audit
        .iter()
        .filter(|e| e.event_type == "tool_call.rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{audit:#?}");
    assert!(
        rejected[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("not the JSON asked for")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_answer_every_time_fails_the_phase_after_the_budget_quoting_it_and_retry_asks_afresh()
{
    let t = TestStack::start(&[("BadAnswerRetries", "2")]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::BadAnswer(true)).key("#brief#plan"));
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");
    let err = failed.phase("brief").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "provider_bad_response");
    assert!(
        err.detail.contains("3 answers rejected") && err.detail.contains("Sure! Here is"),
        "the detail quotes the answer: {}",
        err.detail
    );
    assert_eq!(
        served(&t, "#brief#plan").len(),
        3,
        "one call and two fresh ones"
    );

    // retry_phase never replays a rejected answer: it asks again, and now gets a good one.
    t.provider.clear_faults();
    t.act(&p.id, Act::RetryPhase, Role::Operator).await;
    t.completes(&p.id, SETTLE).await;
    assert_eq!(served(&t, "#brief#plan").len(), 4);
    nothing_served_twice(&t);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_lost_once_and_again_on_the_last_receive_and_a_lost_commit_all_complete() {
    let t = TestStack::start_with_proxy(&[
        ("MaxReceiveCount", "2"),
        ("LostDispatchSeconds", "3"),
        ("PhaseTimeoutSeconds", "5"),
        ("QueueVisibilitySeconds", "30"),
    ])
    .await;
    let proxy = t.proxy.as_ref().unwrap();
    let stack = &t.stack.stack;
    // The brief phase's hand-off to script fails on both of its message's receives (three
    // attempts each, as the SDK makes them): SQS then moves the finished message to the
    // DLQ, and only the production's due mark is left to finish it.
    proxy.fail(ProxyRule::new("SendMessageBatch", &format!("{stack}-script\"")).times(6));
    // The assets phase's commit fails after its work (three attempts of one PutItem).
    proxy.fail(
        ProxyRule::new("PutItem", "O#assets#1")
            .and("ConditionExpression")
            .times(3),
    );
    let p = t.start_production(2).await;
    let done = t.wait_settled(&p.id, Duration::from_secs(150)).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert!(
        proxy.failed() >= 9,
        "every injected failure happened: {}",
        proxy.failed()
    );
    nothing_served_twice(&t);
    assert_eq!(served(&t, "#brief#plan").len(), 1, "brief ran once");
    assert_eq!(done.phase("brief").unwrap().attempt, 1);
    let audit = t.audit_with(&p.id, "production.completed").await;
    let kinds: Vec<&str> = audit.iter().map(|e| e.event_type.as_str()).collect();
    assert!(kinds.contains(&"phase.handoff_lost"), "{kinds:?}");
    assert!(
        kinds.contains(&"phase.redispatched"),
        "the sweep sent it: {kinds:?}"
    );
    assert_eq!(
        done.phase("assets").unwrap().attempt,
        2,
        "the lost commit was reconciled as the next attempt, reusing the recorded images"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_projector_cannot_write_holds_back_only_itself_and_is_redriven() {
    let t = TestStack::start_with_proxy(&[("ProjectorMaxRetries", "1")]).await;
    let proxy = t.proxy.as_ref().unwrap();
    proxy.fail(ProxyRule::new("BatchWriteItem", "production.completed"));
    let a = t.start_production(1).await;
    let done = t.wait_settled(&a.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);
    let start = Instant::now();
    while t.depth("AuditProjectorFailureQueue").await == 0 {
        assert!(start.elapsed() < SETTLE, "no on-failure record arrived");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.clear();

    // The stream went on: a later production's whole trail is projected.
    let b = t.start_production(1).await;
    t.wait_settled(&b.id, SETTLE).await;
    let trail = t.audit_with(&b.id, "production.completed").await;
    assert!(trail.iter().any(|e| e.event_type == "production.completed"));
    let missing = t.audit_until(&a.id, |_| true).await;
    assert!(
        !missing
            .iter()
            .any(|e| e.event_type == "production.completed"),
        "the record it gave up on is not projected"
    );

    // The operator's recovery: project the reported range again.
    let report = t.ops.redrive_audit(&TestStack::operator()).await.unwrap();
    assert!(report.reports >= 1 && report.left == 0, "{report:?}");
    let trail = t.audit_with(&a.id, "production.completed").await;
    let completed = trail
        .iter()
        .filter(|e| e.event_type == "production.completed")
        .count();
    assert_eq!(completed, 1, "{trail:#?}");
    assert_eq!(t.depth("AuditProjectorFailureQueue").await, 0);
    let scoped = shepherd::domain::Caller::new(
        TestStack::actor(),
        Role::Admin,
        shepherd::domain::Scope::Account("acme".into()),
    );
    assert_eq!(
        t.ops.redrive_audit(&scoped).await.unwrap_err().status(),
        403,
        "an account's admin may not (the records are every account's)"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudwatch_alarm_through_the_alarm_topic_shows_in_get_alarms_and_ok_resolves_it() {
    let t = TestStack::start(&[]).await;
    // A dead-lettered message of a production, and CloudWatch's notification about it.
    let p = t.start_production(1).await;
    t.wait_settled(&p.id, SETTLE).await;
    let dlq = t.queue_url("BriefDeadLetterQueue");
    let body = shepherd::protocol::PhaseMessage::new(&p.id, "brief", 1).to_body();
    t.sqs()
        .send_message()
        .queue_url(&dlq)
        .message_body(body)
        .send()
        .await
        .unwrap();
    let queue = dlq.rsplit('/').next().unwrap().to_string();
    let note = |state: &str| {
        serde_json::json!({
            "AlarmName": format!("{}-brief-dlq-not-empty", t.stack.stack),
            "AlarmDescription": "Messages arrived in the brief DLQ.",
            "AWSAccountId": "123456789012",
            "AlarmConfigurationUpdatedTimestamp": "2026-12-01T09:00:00.000+0000",
            "NewStateValue": state,
            "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [1.0] was greater than the threshold (0.0).",
            "StateChangeTime": "2026-12-01T10:00:00.000+0000",
            "Region": "US East (N. Virginia)",
            "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:x",
            "OldStateValue": "OK",
            "OKActions": [], "AlarmActions": [], "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": "ApproximateNumberOfMessagesVisible", "Namespace": "AWS/SQS",
                "StatisticType": "Statistic", "Statistic": "MAXIMUM", "Unit": null,
                "Dimensions": [{"value": queue, "name": "QueueName"}],
                "Period": 60, "EvaluationPeriods": 1, "DatapointsToAlarm": 1,
                "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.0,
                "TreatMissingData": "notBreaching", "EvaluateLowSampleCountPercentile": ""
            }
        })
        .to_string()
    };
    let sns = aws_sdk_sns::Client::new(&t.sdk);
    let topic = t.stack.reference("AlarmTopic").unwrap().to_string();
    sns.publish()
        .topic_arn(&topic)
        .subject("ALARM: brief DLQ not empty")
        .message(note("ALARM"))
        .send()
        .await
        .unwrap();
    let id = format!("dlq_not_empty#{queue}");
    let find = || async {
        let (status, body) = t.http("GET", "/alarms", Some("stack-operator"), None).await;
        assert_eq!(status, 200, "{body}");
        body["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "dlq_not_empty" && a["subject"] == queue.as_str())
            .cloned()
    };
    let start = Instant::now();
    let alarm = loop {
        if let Some(a) = find().await {
            break a;
        }
        assert!(start.elapsed() < SETTLE, "{id} never arrived");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(alarm["severity"], "critical");
    assert!(
        alarm["detail"].as_str().unwrap().contains("phase brief"),
        "{alarm}"
    );
    assert_eq!(alarm["affected"], serde_json::json!([p.id]), "{alarm}");
    // A queue's alarm belongs to no account (it lists every account's productions): an
    // account's admin neither sees nor handles it.
    let (_, theirs) = t.http("GET", "/alarms", Some("admin-acme"), None).await;
    assert!(
        theirs["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["subject"] != queue.as_str()),
        "{theirs}"
    );
    let path = format!("/alarms/{}/ack", id.replace('#', "%23"));
    let (status, _) = t.http("POST", &path, Some("admin-acme"), None).await;
    assert_eq!(status, 404);

    sns.publish()
        .topic_arn(&topic)
        .message(note("OK"))
        .send()
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let a = find().await.unwrap();
        if a["status"] == "resolved" {
            break;
        }
        assert!(start.elapsed() < SETTLE, "not resolved: {a}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    t.stop().await;
}
