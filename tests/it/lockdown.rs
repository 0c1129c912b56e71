//! Locked down, round two (#23): what a tenant, a viewer or a provider's answer cannot do.

use std::time::Duration;

use shepherd::domain::{ErrorCode, PhaseStatus, ProductionStatus};
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(60);

/// A provider that answers far more than any answer needs: the call is refused as the
/// answer arrives (never held whole), the phase fails permanently naming why, and nothing
/// of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_provider_answer_fails_the_phase_cleanly() {
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Oversize { bytes: 9 << 20 }).times(1));
    let p = t.start_production(1).await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let brief = done.phase("brief").unwrap();
    assert_eq!(brief.status, PhaseStatus::Failed);
    let e = brief.last_error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::ProviderBadResponse);
    assert!(e.detail.contains("larger than 8 MB"), "{}", e.detail);
    assert_eq!((brief.attempt, brief.error_count), (1, 1));
    t.stop().await;
}

/// SNS invokes the alarm intake asynchronously: a notification it cannot record is tried
/// again, then handed to its failure queue (alarmed), never dropped. Here its role may not
/// write the alarm store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_the_intake_cannot_record_reaches_its_failure_queue() {
    let template = std::fs::read_to_string(shepherd_it::repo_root().join("template.yaml")).unwrap();
    let grant = "            - Sid: AlarmStore\n              Effect: Allow\n              Action: [dynamodb:UpdateItem]\n              Resource: !GetAtt StateTable.Arn\n";
    assert_eq!(template.matches(grant).count(), 1);
    let variant =
        std::env::temp_dir().join(format!("shepherd-intake-{}.yaml", uuid::Uuid::now_v7()));
    std::fs::write(
        &variant,
        template.replace(
            grant,
            &grant.replace("dynamodb:UpdateItem", "dynamodb:GetItem"),
        ),
    )
    .unwrap();
    let t = TestStack::start_from(&variant, &[]).await;
    let message =
        std::fs::read_to_string(shepherd_it::repo_root().join("events/sns-alarm-ingest.json"))
            .unwrap();
    let event: serde_json::Value = serde_json::from_str(&message).unwrap();
    let note = event["Records"][0]["Sns"]["Message"].as_str().unwrap();
    aws_sdk_sns::Client::new(&t.sdk)
        .publish()
        .topic_arn(t.stack.reference("AlarmTopic").unwrap())
        .message(note)
        .send()
        .await
        .unwrap();
    t.wait_depth("AlarmIngestFailureQueue", 1, SETTLE).await;
    let got = t
        .sqs()
        .receive_message()
        .queue_url(t.queue_url("AlarmIngestFailureQueue"))
        .send()
        .await
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_str(got.messages()[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        record["requestPayload"]["Records"][0]["Sns"]["Message"],
        note
    );
    assert!(t.alarms().await.is_empty(), "nothing was recorded");
    t.stop().await;
}

fn of(account: &str) -> shepherd::domain::Caller {
    shepherd::domain::Caller::new(
        TestStack::actor(),
        shepherd::domain::Role::Operator,
        shepherd::domain::Scope::Account(account.into()),
    )
}

fn brief_of(account: &str) -> String {
    let mut b: serde_json::Value = serde_json::from_str(&shepherd_it::brief(1)).unwrap();
    b["account"] = account.into();
    b.to_string()
}

/// `GET /pipelines` counts open productions by key: an account's by status in `by_status`,
/// their versions by `BatchGetItem`; the stack's accounts under `ACCOUNTS`. No Scan, so a
/// viewer's call reads what is open in its account, not the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_are_counted_by_key_never_by_a_scan() {
    let mut t = TestStack::start_idle().await;
    let mut acme = Vec::new();
    for _ in 0..3 {
        acme.push(t.ops.start(&brief_of("acme"), &of("acme")).await.unwrap());
    }
    t.ops
        .act(&acme[0].id, shepherd::domain::Act::Cancel, &of("acme"))
        .await
        .unwrap();
    for _ in 0..2 {
        t.ops
            .start(&brief_of("globex"), &of("globex"))
            .await
            .unwrap();
    }
    let proxy = shepherd_local::faultproxy::FaultProxy::start(&shepherd_it::endpoint())
        .await
        .unwrap();
    let sdk = t.sdk.to_builder().endpoint_url(proxy.endpoint()).build();
    let (ops, _) = shepherd::ops::Ops::connect(&sdk, &t.stack.stack)
        .await
        .unwrap();
    let open = |list: &[shepherd::ops::PipelineVersionInfo]| {
        list.iter()
            .find(|p| p.name == "content" && p.version == 1)
            .map(|p| p.open)
    };
    proxy.reset_counts();
    let listed = ops.pipelines_in_use(&of("acme")).await.unwrap();
    assert_eq!(
        open(&listed),
        Some(2),
        "acme's two open, not its cancelled one"
    );
    assert_eq!(proxy.requests(".Scan"), 0);
    assert_eq!(proxy.requests(".Query"), 5, "one per open status group");
    assert_eq!(proxy.requests(".BatchGetItem"), 1);
    proxy.reset_counts();
    let listed = ops.pipelines_in_use(&TestStack::operator()).await.unwrap();
    assert_eq!(
        open(&listed),
        Some(4),
        "every account's, for the stack's operators"
    );
    assert_eq!(proxy.requests(".Scan"), 0);
    assert_eq!(
        proxy.requests(".Query"),
        1 + 2 * 5,
        "the accounts, then each one's"
    );
    // And over HTTP, as a viewer (its role may not Scan: the template grants none).
    t.run().await;
    let (status, body) = t.http("GET", "/pipelines", Some("viewer-acme"), None).await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
}

/// Every route is throttled, as API Gateway's default route settings do: past the burst,
/// 429 with JSON, before the function runs; the stack's limits then let calls through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_throttles_past_its_rate_with_a_json_429() {
    let t = TestStack::start(&[("ApiThrottleRate", "1"), ("ApiThrottleBurst", "3")]).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, body) = t.http("GET", "/pipelines", Some("viewer-acme"), None).await;
        if status == 429 {
            assert_eq!(body, serde_json::json!({"message": "Too Many Requests"}));
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=4).contains(&ok), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10 - ok);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = t.http("GET", "/pipelines", Some("viewer-acme"), None).await;
    assert_eq!(status, 200, "a second later a token is back");
    t.stop().await;
}
