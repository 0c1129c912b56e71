//! Locked down, round two (#23): what a tenant, a viewer or a provider's answer cannot do.

use std::time::Duration;

use shepherd::domain::{Act, ErrorClass, ErrorCode, PhaseStatus, ProductionStatus, Role};
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
    // All at once: how fast a loaded machine serves them one by one does not decide how
    // many tokens have come back meanwhile.
    let answers = futures::future::join_all(
        (0..10).map(|_| t.http("GET", "/pipelines", Some("viewer-acme"), None)),
    )
    .await;
    let mut statuses = Vec::new();
    for (status, body) in answers {
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

fn job(repository: &str) -> String {
    serde_json::json!({"account": "acme", "repository": repository, "task": "Count the gadgets"})
        .to_string()
}

/// A repository belongs to the accounts a stack admin allowed it: another account's is
/// refused at start (403 naming it, nothing created), and a job whose account lost the
/// repository after it started is refused by the engine before its next phase makes any
/// request outside the stack. A tenant's own admin cannot widen its access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_job_for_another_accounts_repository_is_refused_at_start_and_by_the_phase() {
    let t = TestStack::start(&[]).await;
    t.allow("acme", &["acme/*"]).await;
    let (status, body) = t
        .http(
            "POST",
            "/productions?pipeline=coding",
            Some("operator-acme"),
            Some(serde_json::from_str(&job("globex/secrets")).unwrap()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "input.repository: globex/secrets is not among the repositories account acme may use"
        ),
        "{message}"
    );
    let (_, listed) = t
        .http(
            "GET",
            "/productions?account=acme",
            Some("stack-operator"),
            None,
        )
        .await;
    assert_eq!(
        listed["productions"],
        serde_json::json!([]),
        "nothing created: {listed}"
    );
    // Its own admin may not allow it more; a stack admin may, and it is audited.
    let widen = serde_json::json!({"repositories": ["acme/*", "globex/*"]});
    let (status, body) = t
        .http(
            "PUT",
            "/account/access",
            Some("admin-acme"),
            Some(widen.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = t
        .http("GET", "/account/access", Some("viewer-acme"), None)
        .await;
    assert_eq!(
        (status, &body["repositories"]),
        (200, &serde_json::json!(["acme/*"]))
    );

    // Started while allowed; the stack admin then narrows acme to another repository.
    let id = crate::coding::start_job(&t, &job(shepherd_local::scm::REPOSITORY)).await;
    let (status, body) = t
        .http(
            "PUT",
            "/account/access?account=acme",
            Some("stack-admin"),
            Some(serde_json::json!({"repositories": ["acme/gizmos"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = t
        .ops
        .audit(
            &shepherd::audit::AuditQuery::Type {
                event_type: "account.access_changed".into(),
                since: 0,
                until: 253_402_300_799_999,
                account: None,
            },
            10,
            None,
            &TestStack::operator(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(
        changed.len(),
        3,
        "two allows and the narrowing: {changed:#?}"
    );
    assert!(
        changed.iter().any(|e| e.actor.contains("stack-admin")
            && e.detail
                .as_deref()
                .unwrap_or_default()
                .contains("acme/gizmos")),
        "{changed:#?}"
    );
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let implement = done.phase("implement").unwrap();
    let e = implement.last_error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::NotAllowed);
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.detail.starts_with(
            "input.repository: acme/widgets is not among the repositories account acme may use"
        ),
        "{}",
        e.detail
    );
    assert!(
        t.agent.requests().is_empty(),
        "the agent runner was never asked"
    );
    assert!(t.scm.requests().is_empty(), "the host was never asked");
    t.stop().await;
}

/// A job's branch is its own and new: one that exists and is not where this production
/// branched from fails the phase permanently, and nothing is committed to it. A v1 job
/// still running that names another branch fails the same way before any write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_naming_an_existing_branch_fails_permanently_and_writes_nothing() {
    use shepherd_local::scm::REPOSITORY;
    let mut t = TestStack::start(&[]).await;
    let id = crate::coding::start_job(&t, &job(REPOSITORY)).await;
    // Someone else's branch under the job's name, with their commit on it.
    let branch = format!("shepherd/{id}");
    t.scm.branch(REPOSITORY, &branch, "main");
    t.scm
        .commit(REPOSITORY, &branch, "theirs.txt", "not yours\n");
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let ph = done.phase("pull_request").unwrap();
    let e = ph.last_error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::BranchNotOwned);
    assert_eq!((ph.attempt, e.class), (1, ErrorClass::Permanent));
    assert!(
        e.detail.contains(&format!(
            "branch {branch} already exists on acme/widgets and is not this production's"
        )),
        "{}",
        e.detail
    );
    let writes: Vec<String> = t
        .scm
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT") || r.ends_with("/pulls"))
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "nothing committed, no pull request"
    );
    assert_eq!(
        t.scm.file(REPOSITORY, &branch, "src/lib.rs").unwrap(),
        "pub fn widget() {}\n"
    );

    // A v1 job (its input may name a branch) still in flight: refused before any write.
    let v1 = shepherd_stack::stack()
        .pipelines()
        .get("coding", 1)
        .unwrap()
        .definition
        .clone();
    t.deploy(std::sync::Arc::new(
        shepherd::pipeline::Pipelines::from_definitions(vec![v1]).unwrap(),
    ))
    .await;
    t.scm.branch(REPOSITORY, "release", "main");
    let before = t.scm.requests().len();
    let input = serde_json::json!({"account": "acme", "repository": REPOSITORY, "task": "Fix it", "branch": "release"});
    let id = crate::coding::start_job(&t, &input.to_string()).await;
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.pipeline_version, 1);
    let e = done
        .phase("pull_request")
        .unwrap()
        .last_error
        .clone()
        .unwrap();
    assert_eq!(e.code, ErrorCode::BranchNotOwned);
    assert!(
        e.detail.starts_with(&format!(
            "input.branch: release is not this production's branch (shepherd/{id})"
        )),
        "{}",
        e.detail
    );
    assert!(
        t.scm.requests()[before..]
            .iter()
            .all(|r| !r.starts_with("PUT") && !r.starts_with("POST")),
        "{:?}",
        t.scm.requests()
    );
    t.stop().await;
}

/// `auto_approve` is an admin's, and even an admin's does not skip a gate the definition
/// requires (the coding plan's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approve_on_a_required_gate_is_refused_for_an_operator_and_held_for_an_admin() {
    let t = TestStack::start(&[]).await;
    t.allow("acme", &["acme/*"]).await;
    let mut input: serde_json::Value =
        serde_json::from_str(&job(shepherd_local::scm::REPOSITORY)).unwrap();
    input["auto_approve"] = true.into();
    let (status, body) = t
        .http(
            "POST",
            "/productions?pipeline=coding",
            Some("operator-acme"),
            Some(input.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("auto_approve needs the admin role"),
        "{body}"
    );
    let (status, body) = t
        .http(
            "POST",
            "/productions?pipeline=coding",
            Some("admin-acme"),
            Some(input),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let waiting = t
        .wait_for(&id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    assert_eq!(waiting.approval.as_ref().unwrap().phase, "plan");
    assert!(t.scm.requests().is_empty());
    t.stop().await;
}

/// An account with its own source-control token: every request of its job carries it (the
/// phase's role may read parameters under /shepherd/<stack>/accounts/ and nowhere else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_token_makes_its_jobs_requests() {
    use shepherd_local::scm::REPOSITORY;
    let t = TestStack::start(&[]).await;
    let param = format!("/shepherd/{}/accounts/acme/scm-token", t.stack.stack);
    aws_sdk_ssm::Client::new(&t.sdk)
        .put_parameter()
        .name(&param)
        .value("acme-own-token")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    t.scm.set_token("acme-own-token", true);
    let id = crate::coding::start_job(&t, &job(REPOSITORY)).await;
    let access = shepherd::domain::access::AccountAccess {
        repositories: vec!["acme/*".into()],
        scm_token_param: Some(param.clone()),
        ..Default::default()
    };
    t.ops
        .set_account_access("acme", access, &TestStack::caller(Role::Admin))
        .await
        .unwrap();
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    let used = t.scm.tokens_used();
    assert!(!used.is_empty());
    assert!(
        used.iter().all(|(_, token)| token == "acme-own-token"),
        "{used:?}"
    );
    // A parameter outside the account's own path is refused when set.
    let bad = shepherd::domain::access::AccountAccess {
        scm_token_param: Some("/shepherd/providers/scm/token".into()),
        ..Default::default()
    };
    let err = t
        .ops
        .set_account_access("acme", bad, &TestStack::caller(Role::Admin))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be under"), "{err}");
    t.stop().await;
}
