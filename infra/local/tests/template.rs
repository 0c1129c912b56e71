//! Invariants of template.yaml that the runtime relies on, checked without AWS.

use serde_json::Value;
use shepherd_local::template::load;

fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    load(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn handler(f: &Value) -> &str {
    f["Properties"]["Environment"]["Variables"]["SHEPHERD_HANDLER"]
        .as_str()
        .unwrap_or_default()
}

fn phase_functions(t: &Value) -> Vec<(String, Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| {
            r["Type"] == "AWS::Serverless::Function"
                && r["Properties"]["Events"]["Queue"]["Type"] == "SQS"
                && handler(r) != "webhook-deliver"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Definitions of `n` phases (`p00`, `p01`, ...) in one pipeline.
fn pipelines_of(n: usize) -> shepherd::pipeline::Pipelines {
    let phases: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({"name": format!("p{i:02}"), "output": {}, "max_tries": 3,
                "timeout_seconds": 60, "concurrency": 5, "integrations": ["chat"]})
        })
        .collect();
    let text = serde_json::json!({"name": "wide", "version": 1,
        "input": {"type": "object", "required": ["account"],
                  "properties": {"account": {"type": "string"}}},
        "phases": phases})
    .to_string();
    shepherd::pipeline::Pipelines::from_definitions(vec![
        shepherd::pipeline::Definition::parse("wide.json", &text).unwrap(),
    ])
    .unwrap()
}

#[test]
fn every_phase_has_a_function_queue_and_dlq_wired_for_partial_batches() {
    let t = template();
    for (id, f) in &phase_functions(&t) {
        let ev = &f["Properties"]["Events"]["Queue"]["Properties"];
        assert_eq!(
            ev["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"]),
            "{id}"
        );
        let queue_id = ev["Queue"]["Fn::GetAtt"][0].as_str().unwrap();
        let queue = &t["Resources"][queue_id]["Properties"];
        let dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        assert_eq!(t["Resources"][dlq_id]["Type"], "AWS::SQS::Queue", "{id}");
        assert_eq!(
            queue["RedrivePolicy"]["maxReceiveCount"]["Ref"], "MaxReceiveCount",
            "{id}"
        );
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    }
}

/// The template's phase region and the phases' sample events are what the stack's
/// pipelines (`pipelines/stack`) generate: a definition and the template cannot drift apart
/// (`cargo run -p shepherd-local -- template` writes them, `--check` is this test).
#[test]
fn the_generated_region_and_sample_events_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stack = shepherd_stack::stack();
    let files = shepherd_local::generate::files(&root, stack.pipelines()).unwrap();
    let stale = shepherd_local::generate::stale(&files);
    assert!(
        stale.is_empty(),
        "stale (run `cargo run -p shepherd-local -- template`): {stale:?}"
    );
}

/// Every phase of every definition has its queue, DLQ and SQS-fed function running the
/// bootstrap with the phase as its handler, the definition's concurrency, and a role that
/// may send to the phases after it.
#[test]
fn every_phase_of_every_definition_is_a_function_of_its_own() {
    let t = template();
    let stack = shepherd_stack::stack();
    let functions = phase_functions(&t);
    let mut handlers: Vec<&str> = functions.iter().map(|(_, f)| handler(f)).collect();
    handlers.sort();
    assert_eq!(handlers, stack.phase_names());
    for p in stack.pipelines().all() {
        for (i, ph) in p.definition.phases.iter().enumerate() {
            let (id, f) = functions
                .iter()
                .find(|(_, f)| handler(f) == ph.name)
                .unwrap();
            assert_eq!(
                f["Metadata"]["BuildProperties"]["Binary"], "bootstrap",
                "{id}"
            );
            let ev = &f["Properties"]["Events"]["Queue"]["Properties"];
            assert_eq!(
                ev["ScalingConfig"]["MaximumConcurrency"].as_u64(),
                Some(u64::from(ph.concurrency)),
                "{id}"
            );
            if let Some(next) = p.definition.phases.get(i + 1) {
                let queue = format!("{}Queue", shepherd_local::generate::camel(&next.name));
                let may: Vec<&Value> = f["Properties"]["Policies"][0]["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["Sid"] == "HandOffRetryAndDeadLetter")
                    .flat_map(|s| s["Resource"].as_array().unwrap())
                    .collect();
                assert!(
                    may.contains(&&serde_json::json!({"Fn::GetAtt": [queue, "Arn"]})),
                    "{id} may not hand off to {}",
                    next.name
                );
            }
        }
    }
}

/// A stack of 30 phases at a 32-character stack name: every function's environment stays
/// 512 bytes under Lambda's 4 KB (queues are found by name, not listed per phase), and
/// the platform's managed policies stay under IAM's limit.
#[test]
fn thirty_phases_fit_lambdas_environment_with_the_same_margin() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"),
    )
    .unwrap();
    let wide = shepherd_local::generate::apply(&text, &pipelines_of(30)).unwrap();
    let t = load(&wide).unwrap();
    assert_eq!(phase_functions(&t).len(), 30);
    let sizes = shepherd_local::template::environment_sizes(&t, 32);
    let shipped = shepherd_local::template::environment_sizes(&template(), 32);
    for (id, bytes) in &sizes {
        assert!(
            *bytes <= shepherd_local::template::LAMBDA_ENVIRONMENT_LIMIT - 512,
            "{id}: {bytes} bytes of environment with 30 phases"
        );
    }
    // The platform's functions do not grow with phases at all.
    for id in ["ApiFunction", "SweeperFunction", "AlarmIngestFunction"] {
        let size = |s: &[(String, usize)]| s.iter().find(|(i, _)| i == id).unwrap().1;
        assert_eq!(size(&sizes), size(&shipped), "{id}");
    }
}

#[test]
fn visibility_is_six_times_the_timeout_and_the_functions_know_both_settings() {
    let t = template();
    let g = &t["Globals"]["Function"];
    // Both settings are parameters (tests shorten them); their defaults keep the 6x rule.
    assert_eq!(g["Timeout"]["Ref"], "PhaseTimeoutSeconds");
    let default = |p: &str| t["Parameters"][p]["Default"].as_u64().unwrap();
    let timeout = default("PhaseTimeoutSeconds");
    let env = &g["Environment"]["Variables"];
    assert_eq!(
        env["SHEPHERD_FUNCTION_TIMEOUT_SECS"]["Ref"],
        "PhaseTimeoutSeconds"
    );
    assert_eq!(env["SHEPHERD_MAX_RECEIVE_COUNT"]["Ref"], "MaxReceiveCount");
    assert_eq!(g["Runtime"], "provided.al2023");
    assert_eq!(g["Architectures"], serde_json::json!(["arm64"]));
    for (id, f) in phase_functions(&t) {
        let own = f["Properties"]["Timeout"].as_u64().unwrap_or(timeout);
        let queue_id = f["Properties"]["Events"]["Queue"]["Properties"]["Queue"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap()
            .to_string();
        let visibility = &t["Resources"][&queue_id]["Properties"]["VisibilityTimeout"];
        // A phase on the stack's default timeout follows both parameters; one with its own
        // has its own visibility and lease.
        let visibility = match visibility["Ref"].as_str() {
            Some("QueueVisibilitySeconds") => default("QueueVisibilitySeconds"),
            _ => {
                let lease =
                    &f["Properties"]["Environment"]["Variables"]["SHEPHERD_FUNCTION_TIMEOUT_SECS"];
                assert_eq!(lease.as_str(), Some(own.to_string().as_str()), "{id}");
                visibility.as_u64().unwrap()
            }
        };
        assert!(
            visibility >= 6 * own,
            "{id}: visibility {visibility} < 6 x {own}"
        );
    }
}

#[test]
fn webhooks_flow_from_the_stream_through_a_queue_with_a_dlq_to_the_deliverer() {
    let t = template();
    let r = &t["Resources"];
    let fanout = &r["WebhookFanoutFunction"];
    assert_eq!(handler(fanout), "webhook-fanout");
    let ev = &fanout["Properties"]["Events"]["StateStream"]["Properties"];
    assert_eq!(
        ev["Stream"]["Fn::GetAtt"],
        serde_json::json!(["StateTable", "StreamArn"])
    );
    assert_eq!(
        ev["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        ev["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0],
        "WebhookFanoutFailureQueue"
    );
    let deliver = &r["WebhookDeliverFunction"];
    assert_eq!(handler(deliver), "webhook-deliver");
    let q = &deliver["Properties"]["Events"]["Queue"]["Properties"];
    assert_eq!(q["Queue"]["Fn::GetAtt"][0], "WebhookQueue");
    assert_eq!(
        q["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    let queue = &r["WebhookQueue"]["Properties"];
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "WebhookDeadLetterQueue"
    );
    // An attempt's claim lasts the function's timeout, which the queue's visibility
    // outlasts six times (so a message back after a crash finds the claim expired).
    let default = |p: &str| t["Parameters"][p]["Default"].as_u64().unwrap();
    assert_eq!(
        deliver["Properties"]["Timeout"]["Ref"],
        "WebhookFunctionTimeoutSeconds"
    );
    assert_eq!(
        deliver["Properties"]["Environment"]["Variables"]["SHEPHERD_FUNCTION_TIMEOUT_SECS"]["Ref"],
        "WebhookFunctionTimeoutSeconds"
    );
    assert_eq!(
        queue["VisibilityTimeout"]["Ref"],
        "WebhookQueueVisibilitySeconds"
    );
    assert!(
        default("WebhookQueueVisibilitySeconds") >= 6 * default("WebhookFunctionTimeoutSeconds")
    );
    // The default schedule is the domain's.
    let schedule = t["Parameters"]["WebhookRetrySchedule"]["Default"]
        .as_str()
        .unwrap();
    assert_eq!(
        shepherd::domain::webhooks::parse_schedule(schedule).unwrap(),
        shepherd::domain::webhooks::RETRY_SCHEDULE_SECS
    );
    // Every function knows the queue, the schedule and the topic of e-mail.
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(env["SHEPHERD_WEBHOOK_QUEUE"]["Ref"], "WebhookQueue");
    assert_eq!(env["SHEPHERD_NOTIFY_TOPIC"]["Ref"], "NotificationTopic");
    assert_eq!(
        env["SHEPHERD_WEBHOOK_RETRY_SCHEDULE"]["Ref"],
        "WebhookRetrySchedule"
    );
}

/// (the resource an alarm watches, its metric), for every alarm; each notifies the topic.
fn alarmed(t: &Value) -> Vec<(String, String)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| {
            let p = &r["Properties"];
            assert_eq!(p["AlarmActions"][0]["Ref"], "AlarmTopic");
            assert_eq!(p["OKActions"][0]["Ref"], "AlarmTopic");
            let v = &p["Dimensions"][0]["Value"];
            let watched = v["Fn::GetAtt"][0].as_str().or(v["Ref"].as_str()).unwrap();
            (
                watched.to_string(),
                p["MetricName"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_dlq_and_phase_queue_has_an_alarm_to_the_alarm_topic() {
    let t = template();
    let alarmed: Vec<String> = alarmed(&t).into_iter().map(|(id, _)| id).collect();
    for (id, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] == "AWS::SQS::Queue" {
            assert!(alarmed.contains(id), "{id} has no alarm");
        }
    }
}

/// Shepherd watches itself: every function's errors and throttles, and every stream
/// consumer's iterator age, reach the alarm topic (so `GET /alarms`).
#[test]
fn every_function_has_errors_and_throttles_alarms_and_stream_consumers_their_lag() {
    let t = template();
    let alarmed = alarmed(&t);
    let mut functions = 0;
    for (id, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        functions += 1;
        let has = |metric: &str| alarmed.contains(&(id.clone(), metric.to_string()));
        assert!(has("Errors"), "{id} has no errors alarm");
        assert!(has("Throttles"), "{id} has no throttles alarm");
        let stream = r["Properties"]["Events"]
            .as_object()
            .is_some_and(|e| e.values().any(|e| e["Type"] == "DynamoDB"));
        assert_eq!(has("IteratorAge"), stream, "{id}'s iterator age");
    }
    assert!(functions >= 15, "{functions} functions");
}

#[test]
fn state_is_retained_and_the_stream_feeds_the_audit_projector() {
    let t = template();
    for table in ["StateTable", "IdempotencyTable", "AuditTable"] {
        assert_eq!(t["Resources"][table]["DeletionPolicy"], "Retain", "{table}");
    }
    assert_eq!(
        t["Resources"]["StateTable"]["Properties"]["StreamSpecification"]["StreamViewType"],
        "NEW_IMAGE"
    );
    // Start keys and dedupe holds expire: the attribute they carry is the table's TTL.
    for table in ["StateTable", "IdempotencyTable"] {
        let ttl = &t["Resources"][table]["Properties"]["TimeToLiveSpecification"];
        assert_eq!(
            (&ttl["AttributeName"], &ttl["Enabled"]),
            (&"ttl".into(), &true.into()),
            "{table}"
        );
    }
    let ev = &t["Resources"]["AuditProjectorFunction"]["Properties"]["Events"]["StateStream"];
    assert_eq!(
        ev["Properties"]["Stream"]["Fn::GetAtt"],
        serde_json::json!(["StateTable", "StreamArn"])
    );
}

/// Lambda refuses a function whose environment is over 4 KB (keys and values): with a
/// 32-character stack name every function stays 512 bytes under it.
#[test]
fn every_functions_environment_fits_lambdas_limit() {
    let sizes = shepherd_local::template::environment_sizes(&template(), 32);
    assert!(sizes.len() > 10);
    for (id, bytes) in &sizes {
        assert!(
            *bytes <= shepherd_local::template::LAMBDA_ENVIRONMENT_LIMIT - 512,
            "{id}: {bytes} bytes of environment; Lambda allows 4096"
        );
    }
}

/// No function may scan a table: every read is by key or by index (#23).
#[test]
fn no_function_may_scan() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"),
    )
    .unwrap();
    assert!(!text.contains("dynamodb:Scan"));
    assert!(!text.contains("dynamodb:*"));
}

/// No caller can spin the stack: every route throttled, the API's concurrency bounded,
/// and accounts limited unless an admin says otherwise (#23).
#[test]
fn the_api_is_throttled_and_accounts_are_limited_by_default() {
    let t = template();
    let default = |p: &str| t["Parameters"][p]["Default"].as_u64().unwrap();
    let routes = &t["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"];
    assert_eq!(routes["ThrottlingRateLimit"]["Ref"], "ApiThrottleRate");
    assert_eq!(routes["ThrottlingBurstLimit"]["Ref"], "ApiThrottleBurst");
    assert!(default("ApiThrottleRate") > 0 && default("ApiThrottleBurst") > 0);
    assert_eq!(
        t["Resources"]["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"]["Ref"],
        "ApiReservedConcurrency"
    );
    assert!(default("DefaultMonthlyAllowance") > 0, "0 is unlimited");
    assert!(default("DefaultMaxConcurrent") > 0, "0 is unlimited");
}

/// The dashboard shows every phase's outcomes, duration and queue depths, and the
/// integrations' latency and errors; its body is JSON once the stack's name is in.
#[test]
fn the_dashboard_shows_every_phase_and_its_queues() {
    let t = template();
    let d = &t["Resources"]["Dashboard"];
    assert_eq!(d["Type"], "AWS::CloudWatch::Dashboard");
    let body = d["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("a !Sub body");
    let body: Value = serde_json::from_str(
        &body
            .replace("${AWS::StackName}", "demo")
            .replace("${AWS::Region}", "eu-west-1"),
    )
    .unwrap_or_else(|e| panic!("{e}: {body}"));
    let text = body.to_string();
    for (id, _) in phase_functions(&t) {
        let name =
            t["Resources"][&id]["Properties"]["Environment"]["Variables"]["SHEPHERD_HANDLER"]
                .as_str()
                .unwrap()
                .to_string();
        for needle in [
            format!(r#"["Shepherd","PhaseSucceeded","service","demo","phase","{name}""#),
            format!(r#"["Shepherd","PhaseDuration","service","demo","phase","{name}""#),
            format!(r#""QueueName","demo-{name}"]"#),
            format!(r#""QueueName","demo-{name}-dlq"]"#),
        ] {
            assert!(text.contains(&needle), "{needle} missing");
        }
    }
    for metric in [
        "ProviderLatency",
        "ProviderErrors",
        "WebhookDelivered",
        "ColdStart",
    ] {
        assert!(text.contains(metric), "{metric}");
    }
}
