//! The coding-agent job beside the content pipeline on one stack: plan (approved) ->
//! implement (the agent runner) -> pull_request (a host with GitHub's API), through the
//! real SDK. The pull request phase survives retries and lost answers without opening a
//! second pull request or taking over a branch; a missing permission and a protected branch
//! fail it saying which layer broke. (What an account may reach: `lockdown.rs`.)

use std::time::Duration;

use serde_json::json;
use shepherd::domain::{Act, ErrorCode, PhaseStatus, ProductionStatus};
use shepherd_it::{TestStack, brief};
use shepherd_local::scm::{REPOSITORY, When};

const SETTLE: Duration = Duration::from_secs(60);

fn job(task: &str) -> String {
    json!({"account": "acme", "repository": REPOSITORY, "task": task}).to_string()
}

/// Starts a coding job for acme (allowed its repositories) and waits for its plan's approval.
pub(crate) async fn start_job(t: &TestStack, input: &str) -> String {
    t.allow("acme", &["acme/*"]).await;
    let (p, _) = t
        .ops
        .start_once(Some("coding"), input, None, &TestStack::operator())
        .await
        .expect("job starts");
    let waiting = t
        .wait_for(&p.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    assert_eq!(waiting.approval.as_ref().unwrap().phase, "plan");
    p.id
}

/// Starts a coding job and approves its plan once it waits.
pub(crate) async fn start_and_approve(t: &TestStack, input: &str) -> String {
    let id = start_job(t, input).await;
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pipelines_complete_side_by_side_and_the_job_opens_one_pull_request() {
    let t = TestStack::start(&[]).await;
    let operator = TestStack::operator();
    let (content, _) = t
        .ops
        .start_once(None, &brief(2), None, &operator)
        .await
        .unwrap();
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    let job = t.wait_settled(&id, SETTLE).await;
    let content = t.wait_settled(&content.id, SETTLE).await;
    assert_eq!(content.status, ProductionStatus::Completed, "{content:#?}");
    assert_eq!(job.status, ProductionStatus::Completed, "{job:#?}");
    assert_eq!(job.pipeline, "coding");
    let ran: Vec<&str> = job.phases.iter().map(|ph| ph.name.as_str()).collect();
    assert_eq!(ran, ["plan", "implement", "pull_request"]);

    let outputs = t.ops.outputs(&job).await.unwrap();
    let pr = &outputs["pull_request"];
    assert_eq!(pr["number"], 1);
    assert_eq!(pr["reused"], false);
    assert_eq!(pr["base"], "main", "the repository's default branch");
    let branch = format!("shepherd/{id}");
    assert_eq!(pr["branch"], branch.as_str());
    assert_eq!(
        pr["commits"].as_array().unwrap().len(),
        2,
        "one commit per file"
    );
    let pulls = t.scm.pulls(REPOSITORY);
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].head, branch);
    assert_eq!(pulls[0].title, "Add a gadget counter");
    assert!(
        pulls[0].body.contains("Plan: Add a gadget counter"),
        "{}",
        pulls[0].body
    );
    // The agent runner's change set is on the branch; main is untouched (it is protected).
    let lib = t.scm.file(REPOSITORY, &branch, "src/lib.rs").unwrap();
    assert!(lib.contains("Add a gadget counter"), "{lib}");
    assert!(
        t.scm
            .file(REPOSITORY, &branch, "src/add_a_gadget.rs")
            .is_some()
    );
    assert_eq!(
        t.scm.file(REPOSITORY, "main", "src/lib.rs").unwrap(),
        "pub fn widget() {}\n"
    );
    // The agent runner got the approved plan.
    let asked = t.scm.requests();
    assert!(
        asked.iter().any(|r| r == "POST /repos/acme/widgets/pulls"),
        "{asked:?}"
    );
    let runs = t.agent.requests();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["plan"]["summary"], "Plan: Add a gadget counter");
    for ph in &job.phases {
        assert_eq!(ph.status_message(), "succeeded on attempt 1");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pull_request_answer_and_a_retry_reuse_the_open_pull_request() {
    // Three lost answers: the phase needs a fourth try (the harness allows 3 by default).
    let t = TestStack::start(&[("PhaseMaxRetries", "5")]).await;
    // The host opens the pull request, then the answer is lost (502), twice over: the
    // phase's next tries find it by its branch instead of opening another.
    t.scm.fail("POST", "/pulls", 502, When::After, 1);
    // The branch's creation answer is lost: the retry finds it where this production
    // branched from, so it is the production's own and is used.
    t.scm.fail("POST", "/git/refs", 502, When::After, 1);
    // A new file's commit answer is lost too: the retry finds the content already there.
    t.scm.fail(
        "PUT",
        "/contents/src/count_the_gadgets.rs",
        502,
        When::After,
        1,
    );
    let id = start_and_approve(&t, &job("Count the gadgets")).await;
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    let pr_phase = done.phase("pull_request").unwrap();
    assert!(pr_phase.error_count >= 2, "{pr_phase:#?}");
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert_eq!(outputs["pull_request"]["reused"], true);
    assert_eq!(outputs["pull_request"]["number"], 1);
    assert_eq!(t.scm.pulls(REPOSITORY).len(), 1, "no second pull request");

    // One commit: the lost one was found on the branch, the other file was updated.
    assert_eq!(
        outputs["pull_request"]["commits"].as_array().unwrap().len(),
        1
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_fails_the_phase_naming_source_control_and_retry_finishes_it() {
    let t = TestStack::start(&[]).await;
    // The installation may read but not write (a GitHub App without contents: write).
    t.scm.set_token(shepherd_local::scm::TOKEN, false);
    let id = start_and_approve(&t, &job("Add a gadget counter")).await;
    let failed = t.wait_settled(&id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");
    let ph = failed.phase("pull_request").unwrap();
    assert_eq!(ph.status, PhaseStatus::Failed);
    let e = ph.last_error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::ScmForbidden);
    assert_eq!(e.provider_status, Some(403));
    assert_eq!(e.integration.as_deref(), Some("scm"));
    let message = ph.status_message();
    assert!(
        message.starts_with(
            "failed: source control broke at integration scm (HTTP 403): scm_forbidden:"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "POST /repos/acme/widgets/git/refs: 403 Resource not accessible by integration"
        ),
        "{message}"
    );
    assert!(
        !message.contains(shepherd_local::scm::TOKEN),
        "no secret in it"
    );
    // The earlier phases say they are fine; the API shows the same sentence.
    assert_eq!(
        failed.phase("implement").unwrap().status_message(),
        "succeeded on attempt 1"
    );
    let (status, body) = t
        .http(
            "GET",
            &format!("/productions/{id}"),
            Some("stack-operator"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["phases"][2]["status_message"], message.as_str());
    assert!(t.scm.pulls(REPOSITORY).is_empty());

    // The operator grants the permission and retries: no permission error is replayed.
    t.scm.set_token(shepherd_local::scm::TOKEN, true);
    t.ops
        .act(&id, Act::RetryPhase, &TestStack::operator())
        .await
        .unwrap();
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(done.phase("pull_request").unwrap().attempt, 2);
    assert_eq!(t.scm.pulls(REPOSITORY).len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_branch_refuses_the_commit_and_the_agent_runners_outage_is_named() {
    let t = TestStack::start(&[]).await;
    // The repository's rules protect the job's branch name: the host refuses the commit.
    // The agent runner is down for its first try: retried, then it answers.
    t.agent.fail_next(&[503]);
    let id = start_job(&t, &job("Fix it")).await;
    t.scm.protect(REPOSITORY, &format!("shepherd/{id}"), true);
    t.ops
        .act(&id, Act::Approve, &TestStack::operator())
        .await
        .unwrap();
    let failed = t.wait_settled(&id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");
    let implement = failed.phase("implement").unwrap();
    assert_eq!(implement.error_count, 1, "{implement:#?}");
    let ph = failed.phase("pull_request").unwrap();
    let e = ph.last_error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::ScmConflict);
    let message = ph.status_message();
    assert!(
        message.contains("source control broke at integration scm (HTTP 409)"),
        "{message}"
    );
    assert!(
        message.contains("Changes must be made through a pull request"),
        "{message}"
    );
    assert_eq!(ph.attempt, 1);
    assert_eq!(
        e.class,
        shepherd::domain::ErrorClass::Permanent,
        "no retry can help"
    );
    assert!(t.scm.pulls(REPOSITORY).is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_input_breaking_the_schema_is_refused_naming_the_field() {
    let t = TestStack::start_idle().await;
    let operator = TestStack::operator();
    for (input, field) in [
        (
            json!({"account": "acme", "repository": "not a repo", "task": "x"}),
            "input.repository",
        ),
        (
            json!({"account": "acme", "repository": REPOSITORY}),
            "input.task",
        ),
    ] {
        let err = t
            .ops
            .start_once(Some("coding"), &input.to_string(), None, &operator)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    t.stop().await;
}

/// A change set of megabytes (a large refactor) is recorded and stored by reference, goes
/// through implement and pull_request, and the production still reads small: `GET
/// /productions/{id}` shows the output as a reference; `GET .../outputs/{phase}` gives it
/// whole (over 5 MB, as a link to the bucket), as does `shepherd outputs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_megabyte_change_set_becomes_a_pull_request_and_the_production_reads_small() {
    let t = TestStack::start(&[]).await;
    t.agent.answer_bytes(5 << 20);
    let id = start_and_approve(&t, &job("Regenerate the lookup tables")).await;
    let done = t.completes(&id, Duration::from_secs(120)).await;
    assert_eq!(t.agent.requests().len(), 1, "the runner was asked once");

    // Every byte reached the branch, one commit per file.
    let outputs = t.ops.outputs(&done).await.unwrap();
    let branch = format!("shepherd/{id}");
    let mut committed = 0;
    for c in outputs["implement"]["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap();
        let file = t.scm.file(REPOSITORY, &branch, path).expect("committed");
        assert_eq!(file, c["content"].as_str().unwrap());
        committed += file.len();
    }
    assert!(committed >= 5 << 20, "{committed} bytes committed");
    assert_eq!(t.scm.pulls(REPOSITORY).len(), 1);

    // The runner's answer is in the bucket; the ledger's item holds its key (an item stops
    // at 400 KB).
    let ddb = aws_sdk_dynamodb::Client::new(&t.sdk);
    let item = ddb
        .get_item()
        .table_name(&t.config.topology.idempotency_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{id}#implement#agent#a1")),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("the call is recorded");
    assert!(!item.contains_key("res"), "{:?}", item.keys());
    let at = item["ref"].as_s().unwrap();
    assert!(at.starts_with(&format!("productions/{id}/")), "{at}");

    // The production reads in well under a megabyte, the change set by reference.
    let url = format!("{}/productions/{id}", t.api_url());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |url: String| http.get(url).bearer_auth("operator-acme").send();
    let shown = get(url.clone()).await.unwrap().bytes().await.unwrap();
    assert!(shown.len() < 100_000, "{} bytes", shown.len());
    let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
    let reference = &shown["outputs"]["implement"];
    assert_eq!(
        reference["$ref"],
        format!("/productions/{id}/outputs/implement").as_str()
    );
    assert!(reference["bytes"].as_u64().unwrap() > 5 << 20);
    assert_eq!(
        shown["outputs"]["plan"], outputs["plan"],
        "small ones whole"
    );

    // On its own: over 5 MB, a link to the bucket that serves the change set.
    let res = get(format!("{url}/outputs/implement")).await.unwrap();
    assert_eq!(res.status(), 303);
    let link = res.headers()["location"].to_str().unwrap().to_string();
    let body = reqwest::get(&link).await.unwrap().bytes().await.unwrap();
    let fetched: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(fetched, outputs["implement"]);
    use sha2::Digest as _;
    assert_eq!(
        reference["sha256"],
        hex::encode(sha2::Sha256::digest(
            serde_json::to_string(&fetched).unwrap()
        ))
        .as_str()
    );
    let res = get(format!("{url}/outputs/plan")).await.unwrap();
    assert_eq!(res.status(), 200);
    let plan: serde_json::Value = res.json().await.unwrap();
    assert_eq!(plan, outputs["plan"]);
    let (status, err) = t
        .http(
            "GET",
            &format!("/productions/{id}/outputs/publish"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("has no phase \"publish\" (its phases: plan, implement, pull_request)"),
        "{err}"
    );
    t.stop().await;
}
