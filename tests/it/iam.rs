//! IAM as AWS enforces it: every function runs with its own role from the SAM-translated
//! template, and the emulator checks each request against it (see infra/emulator.py). A
//! statement a function needs, removed from the template, breaks it; a role reaches
//! nothing its function does not need.

use std::time::Duration;

use shepherd::domain::ProductionStatus;
use shepherd::runtime::Stats;
use shepherd_it::{Fault, FaultRule, TestStack, repo_root};

const BACKOFF: &str = "            - Sid: Backoff
              Effect: Allow
              Action: [sqs:ChangeMessageVisibility]
              Resource: !GetAtt BriefQueue.Arn
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_change_message_visibility_a_backoff_is_refused_and_the_retry_waits() {
    // The template as it was before: the brief function may not change visibility.
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    assert!(text.contains(BACKOFF), "the statement this test removes");
    let dir = std::env::temp_dir().join(format!("shepherd-iam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = dir.join("template.yaml");
    std::fs::write(&template, text.replace(BACKOFF, "")).unwrap();

    let t = TestStack::start_from(&template, &[("QueueVisibilitySeconds", "30")]).await;
    t.provider
        .add_fault(FaultRule::new("chat", Fault::Status(500)).times(1));
    let p = t.start_production(1).await;
    let failed = t
        .wait_for(&p.id, Duration::from_secs(30), |p| {
            p.phase("brief").unwrap().error_count == 1
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = t.stats("brief");
    assert_eq!(
        Stats::get(&stats.visibility_failed),
        1,
        "the backoff's ChangeMessageVisibility was refused (AccessDenied)"
    );
    let now = t.ops.get(&p.id, &TestStack::operator()).await.unwrap();
    assert_eq!(
        now.version, failed.version,
        "no retry after the 0.5-1 s backoff: the message waits out the queue's 30 s visibility"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_reaches_only_what_its_function_needs() {
    let t = TestStack::start_idle().await;
    let other = TestStack::start_idle().await;
    let brief = t.function_clients("brief").await;
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    let key = |pk: &str| {
        std::collections::HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s("P"))])
    };
    let denied = |what: &str, r: Result<(), String>| {
        let e = r.expect_err(&format!("{what} should be refused"));
        assert!(e.contains("AccessDenied"), "{what}: {e}");
    };
    let table = |t: &TestStack, id: &str| t.stack.reference(id).unwrap().to_string();

    // Allowed: its own state item.
    brief
        .dynamodb
        .get_item()
        .table_name(table(&t, "StateTable"))
        .set_key(Some(key("P#x")))
        .send()
        .await
        .expect("a phase reads its stack's state");
    // Not: a scan, the audit table, another stack's state, another stack's queue, another
    // stack's configuration.
    let err = |e: String| e;
    denied(
        "Scan",
        brief
            .dynamodb
            .scan()
            .table_name(table(&t, "StateTable"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    denied(
        "PutItem on the audit table",
        brief
            .dynamodb
            .put_item()
            .table_name(table(&t, "AuditTable"))
            .set_item(Some(key("P#x")))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    denied(
        "another stack's state",
        brief
            .dynamodb
            .get_item()
            .table_name(table(&other, "StateTable"))
            .set_key(Some(key("P#x")))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    denied(
        "another stack's queue",
        brief
            .sqs
            .send_message()
            .queue_url(other.queue_url("ScriptQueue"))
            .message_body("{}")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    denied(
        "a later phase's queue",
        brief
            .sqs
            .send_message()
            .queue_url(t.queue_url("AssetsQueue"))
            .message_body("{}")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    denied(
        "another stack's configuration",
        brief
            .ssm
            .get_parameter()
            .name(format!("/shepherd/{}/config", other.stack.stack))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    // The projector alone writes the audit table in bulk; the sweeper cannot.
    let sweeper = t.function_clients("sweeper").await;
    denied(
        "the sweeper writing the audit table",
        sweeper
            .dynamodb
            .put_item()
            .table_name(table(&t, "AuditTable"))
            .set_item(Some(key("P#x")))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(format!("{e:?}"))),
    );
    assert_eq!(
        t.ops
            .list(
                "acme",
                Some(ProductionStatus::Queued),
                10,
                None,
                &TestStack::operator()
            )
            .await
            .unwrap()
            .items
            .len(),
        0,
        "the operators' tools act as the admin"
    );
    t.stop().await;
    other.stop().await;
}

const ARTIFACTS: &str = "            - Sid: Artifacts
              Effect: Allow
              Action: [s3:PutObject, s3:GetObject]
              Resource: !Sub \"${ArtifactBucket.Arn}/productions/*\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_artifacts_statement_the_assets_phase_cannot_keep_an_image() {
    // The assets function's role without the statement that lets it write the bucket.
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let start = text.find("  AssetsFunction:").expect("the assets function");
    let end = start
        + text[start..]
            .find("\n  # ---- Phase")
            .expect("the next phase");
    let block = &text[start..end];
    assert!(block.contains(ARTIFACTS), "the statement this test removes");
    let changed = format!(
        "{}{}{}",
        &text[..start],
        block.replace(ARTIFACTS, ""),
        &text[end..]
    );
    let dir = std::env::temp_dir().join(format!("shepherd-iam-s3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = dir.join("template.yaml");
    std::fs::write(&template, changed).unwrap();

    let t = TestStack::start_from(&template, &[]).await;
    let p = t.start_production(1).await;
    let failing = t
        .wait_for(&p.id, Duration::from_secs(60), |p| {
            p.phase("assets").unwrap().error_count >= 1
        })
        .await;
    let err = failing.phase("assets").unwrap().last_error.clone().unwrap();
    assert_eq!(err.code, "artifact_store", "{err:?}");
    assert!(err.detail.contains("AccessDenied"), "{err:?}");
    assert!(
        err.detail.contains("(AWS request id "),
        "a refusal names AWS's request id: {err:?}"
    );
    t.stop().await;
}
