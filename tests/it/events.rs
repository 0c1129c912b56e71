//! The sample events in events/ are real Lambda event shapes that the handlers accept.

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use shepherd::adapters::dynamodb::audit_items;
use shepherd::adapters::dynamodb::stream::committed_write;
use shepherd::runtime::{PhaseMessage, Stats};
use shepherd_it::{TestStack, repo_root};

fn read(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("events").join(name)).expect("sample event exists")
}

#[test]
fn every_phase_has_a_sample_sqs_event_with_a_valid_message() {
    for phase in shepherd_stack::stack().phase_names() {
        let e: SqsEvent = serde_json::from_str(&read(&format!("sqs-{phase}.json"))).unwrap();
        let body = e.records[0].body.as_deref().unwrap();
        assert_eq!(PhaseMessage::parse(body, phase).unwrap().phase, phase);
    }
}

#[test]
fn the_stream_sample_projects_its_audit_event() {
    let e: StreamEvent =
        serde_json::from_str(&read("dynamodb-stream-audit-projector.json")).unwrap();
    let image = e.records[0].change.new_image.clone();
    let write = committed_write(image).expect("a write with audit events");
    let items = audit_items(&write);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["et"].as_s().unwrap(), "phase.succeeded");
}

#[test]
fn the_sample_brief_is_valid_content_input() {
    let stack = shepherd_stack::stack();
    let pipelines = stack.pipelines();
    let content = pipelines.latest(Some("content")).unwrap();
    content.parse_input(&read("briefs/tides.json")).unwrap();
    let coding = pipelines.latest(Some("coding")).unwrap();
    coding.parse_input(&read("jobs/gadgets.json")).unwrap();
}

/// What `cargo lambda invoke brief --data-file events/sqs-brief.json` does on a fresh stack:
/// the production does not exist, so the message is quarantined, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_event_for_an_unknown_production_is_quarantined() {
    let t = TestStack::start_idle().await;
    let handler = t.handler("brief").await;
    let e: SqsEvent = serde_json::from_str(&read("sqs-brief.json")).unwrap();
    let res = handler.handle(e).await;
    assert!(res.batch_item_failures.is_empty());
    assert_eq!(Stats::get(&handler.stats.poison), 1);
    t.wait_depth(
        "BriefDeadLetterQueue",
        1,
        std::time::Duration::from_secs(10),
    )
    .await;
    t.stop().await;
}

/// What API Gateway sends the API function (`cargo lambda invoke api --data-file
/// events/apigw-api-productions.json`): the JWT authorizer's claims decide the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_api_event_lists_the_claimed_accounts_productions_awaiting_approval() {
    use tower::ServiceExt;
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let p = t.start_production(1).await; // account acme, as the sample's claims
    t.wait_for(&p.id, std::time::Duration::from_secs(60), |p| {
        p.status == shepherd::domain::ProductionStatus::AwaitingApproval
    })
    .await;
    let f = t
        .stack
        .functions
        .iter()
        .find(|f| f.binary == "api")
        .expect("API function in template");
    let pipelines = t.app.pipelines().clone();
    let api = shepherd_api::Api::from_map(&f.env, Some(t.sdk.clone()), move || pipelines.clone())
        .unwrap();
    let req = lambda_http::request::from_str(&read("apigw-api-productions.json")).unwrap();
    let res = shepherd_api::router(api).oneshot(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let ids: Vec<&str> = body["productions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [p.id.as_str()], "{body}");
    t.stop().await;
}

/// What SNS hands the alarm-ingest function for a CloudWatch alarm (`cargo lambda invoke
/// alarm-ingest --data-file events/sns-alarm-ingest.json`): a stuck-phase alarm recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_alarm_notification_is_recorded_as_a_stuck_phase() {
    use aws_lambda_events::event::sns::SnsEvent;
    let e: SnsEvent = serde_json::from_str(&read("sns-alarm-ingest.json")).unwrap();
    let t = TestStack::start_idle().await;
    let f = t.function("alarm-ingest");
    let config = shepherd::config::Config::from_map(&f.env, t.app.pipelines().clone()).unwrap();
    let clients = t.function_clients("alarm-ingest").await;
    let ingest = shepherd::wiring::alarm_ingest(
        &shepherd::wiring::function_ports(&clients, &config),
        &config,
    );
    // The sample names the stack `shepherd-local`; this stack's voice queue stands in.
    let voice = t.queue_url("VoiceQueue");
    let queue = voice.rsplit('/').next().unwrap();
    let message = e.records[0]
        .sns
        .message
        .replace("shepherd-local-voice", queue);
    assert_eq!(ingest.handle([message.as_str()]).await.unwrap(), 1);
    let alarms = t.alarms().await;
    let a = alarms
        .iter()
        .find(|a| a.kind == "queue_stuck")
        .expect("recorded");
    assert_eq!(a.subject, queue);
    assert!(a.detail.contains("phase voice"), "{}", a.detail);
    // The template's errors alarm of a function, as CloudWatch sends it: recorded naming
    // the function, critical.
    let mut errors: serde_json::Value = serde_json::from_str(&message).unwrap();
    errors["AlarmName"] = "shepherd-local-sweeper-errors".into();
    errors["Trigger"]["Namespace"] = "AWS/Lambda".into();
    errors["Trigger"]["MetricName"] = "Errors".into();
    errors["Trigger"]["Dimensions"] = serde_json::json!([{"value": "shepherd-local-SweeperFunction-4Xq1", "name": "FunctionName"}]);
    assert_eq!(
        ingest.handle([errors.to_string().as_str()]).await.unwrap(),
        1
    );
    let alarms = t.alarms().await;
    let recorded = alarms
        .iter()
        .find(|a| a.kind == "function_errors")
        .expect("recorded");
    assert_eq!(recorded.subject, "shepherd-local-SweeperFunction-4Xq1");
    assert_eq!(
        recorded.severity,
        shepherd::domain::alarms::Severity::Critical
    );
    t.stop().await;
}
