//! The `shepherd` binary as an operator runs it, against a local stack.

use std::process::{Command, Output};
use std::time::Duration;

use shepherd_it::{TestStack, endpoint};

fn shepherd(stack: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shepherd"))
        .args(args)
        .env("SHEPHERD_STACK", stack)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("shepherd runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_brief(dir: &std::path::Path, name: &str, v: serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_brief_is_refused_naming_the_field_and_nothing_is_created() {
    let t = TestStack::start_idle().await;
    let dir = std::env::temp_dir().join(format!("shepherd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            serde_json::json!({"account": "acme", "title": "T", "topic": "x", "scenes": 40}),
            "input.scenes: 40 is greater than the maximum of 12",
        ),
        (
            serde_json::json!({"account": "acme", "title": "T", "scenes": 2}),
            "input.topic: is required",
        ),
        (
            serde_json::json!({"account": "acme", "title": "T", "topic": "x", "scenes": 2, "voice": "robot"}),
            "input.voice: \"robot\" is not one of",
        ),
    ];
    for (i, (brief, expected)) in cases.into_iter().enumerate() {
        let path = write_brief(&dir, &format!("bad{i}.json"), brief);
        let out = shepherd(&t.stack.stack, &["start", &path]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("invalid input") && err.contains(expected),
            "{err}"
        );
    }
    let out = shepherd(&t.stack.stack, &["list", "--account", "acme", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]", "nothing was created");
    assert_eq!(t.depth("BriefQueue").await, 0, "nothing was enqueued");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_watch_show_and_list_a_production() {
    let t = TestStack::start(&[]).await;
    let dir = std::env::temp_dir().join(format!("shepherd-cli-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let brief: serde_json::Value = serde_json::from_str(&shepherd_it::brief(2)).unwrap();
    let path = write_brief(&dir, "brief.json", brief);
    let stack = t.stack.stack.clone();

    let out = shepherd(&stack, &["start", &path, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(
        started["available_actions"],
        serde_json::json!(["pause", "cancel"])
    );

    let watched = tokio::task::spawn_blocking({
        let (stack, id) = (stack.clone(), id.clone());
        move || shepherd(&stack, &["watch", &id, "--interval-ms", "200"])
    });
    let out = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "watch exits 0 on completion: {}",
        text(&out.stderr)
    );
    let log = text(&out.stdout);
    assert!(log.contains("publish  succeeded"), "{log}");
    assert!(log.contains("Completed: every phase succeeded."), "{log}");

    let out = shepherd(&stack, &["show", &id]);
    let show = text(&out.stdout);
    assert!(show.contains("Status:   completed"), "{show}");
    assert!(show.contains("Actions:  none"), "{show}");
    assert!(
        !show.contains("Errors"),
        "the errors view appears only with errors: {show}"
    );

    let out = shepherd(&stack, &["show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["outputs"]["publish"]["scenes"].as_array().unwrap().len(),
        2
    );

    // One phase's output whole, and every phase's.
    let out = shepherd(&stack, &["outputs", &id, "brief"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let brief_out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(brief_out, v["outputs"]["brief"]);
    let out = shepherd(&stack, &["outputs", &id]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["brief"], brief_out);
    assert_eq!(all["publish"], v["outputs"]["publish"]);
    let out = shepherd(&stack, &["outputs", &id, "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no phase \"nope\" (its phases: brief, script"),
        "{}",
        text(&out.stderr)
    );

    let out = shepherd(&stack, &["list", "--account", "acme"]);
    assert!(text(&out.stdout).contains(&id));

    // The pipelines: the version it ran on, nothing open on it now that it completed.
    let out = shepherd(&stack, &["pipelines"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let line = listed
        .lines()
        .find(|l| l.starts_with("content"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>().join(" "),
        "content v1 latest, default 0 brief -> script -> assets -> voice -> \
         [warnings acknowledged] publish"
    );

    let out = shepherd(&stack, &["show", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("production no-such-id not found"));
    t.stop().await;
}

#[test]
fn an_unknown_stack_says_what_is_missing() {
    let out = shepherd("no-such-stack", &["show", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("/shepherd/no-such-stack/config"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_download_saves_every_image_and_clip_with_its_checked_digest() {
    let t = TestStack::start(&[]).await;
    let p = t.start_production(2).await;
    let done = t.wait_settled(&p.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, shepherd::domain::ProductionStatus::Completed);
    let dir = std::env::temp_dir().join(format!("shepherd-artifacts-{}", p.id));
    let out = shepherd(
        &t.stack.stack,
        &["artifacts", &p.id, "--download", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert_eq!(said.matches("sha256 verified").count(), 4, "{said}");
    for (phase, name, magic) in [
        ("assets", "scene-1.png", &b"\x89PNG"[..]),
        ("assets", "scene-2.png", &b"\x89PNG"[..]),
        ("voice", "scene-1.mp3", &b"ID3"[..]),
        ("voice", "scene-2.mp3", &b"ID3"[..]),
    ] {
        let bytes = std::fs::read(dir.join(phase).join(name)).unwrap();
        assert!(bytes.starts_with(magic), "{phase}/{name}");
    }
    let show = text(&shepherd(&t.stack.stack, &["show", &p.id]).stdout);
    assert!(
        show.contains("Artifacts (links valid 15 minutes)"),
        "{show}"
    );
    t.stop().await;
}

/// An IAM user of the emulator with every permission, tagged with a CLI role or not: its keys.
async fn iam_user(t: &TestStack, name: &str, role: Option<&str>) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(&t.sdk);
    iam.create_user().user_name(name).send().await.unwrap();
    iam.attach_user_policy()
        .user_name(name)
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .unwrap();
    if let Some(role) = role {
        let tag = aws_sdk_iam::types::Tag::builder()
            .key("shepherd-role")
            .value(role)
            .build()
            .unwrap();
        iam.tag_user()
            .user_name(name)
            .tags(tag)
            .send()
            .await
            .unwrap();
    }
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    (key.access_key_id, key.secret_access_key)
}

fn shepherd_as(stack: &str, keys: &(String, String), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shepherd"))
        .args(args)
        .env("SHEPHERD_STACK", stack)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &keys.0)
        .env("AWS_SECRET_ACCESS_KEY", &keys.1)
        .env("USER", "mallory")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("shepherd runs")
}

/// The CLI's actor is its AWS identity (never $USER) and its role is the identity's
/// `shepherd-role` tag (an untagged identity is a viewer); there is no flag to claim one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clis_actor_and_role_come_from_its_aws_identity() {
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let stack = t.stack.stack.clone();
    let p = t.start_production(1).await;
    t.wait_for(&p.id, Duration::from_secs(60), |p| {
        p.status == shepherd::domain::ProductionStatus::AwaitingApproval
    })
    .await;
    let suffix = std::process::id();

    let untagged = iam_user(&t, &format!("cli-untagged-{suffix}"), None).await;
    let out = shepherd_as(&stack, &untagged, &["show", &p.id]);
    assert!(
        out.status.success(),
        "a viewer reads: {}",
        text(&out.stderr)
    );
    let out = shepherd_as(&stack, &untagged, &["cancel", &p.id]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cancel needs the Operator role; you are Viewer")
            && err.contains("shepherd-role"),
        "{err}"
    );
    let out = shepherd_as(&stack, &untagged, &["--role", "admin", "cancel", &p.id]);
    assert_eq!(out.status.code(), Some(2), "no flag grants a role");

    let name = format!("cli-operator-{suffix}");
    let operator = iam_user(&t, &name, Some("operator")).await;
    let out = shepherd_as(&stack, &operator, &["pause", &p.id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shepherd_as(
        &stack,
        &operator,
        &["override", &p.id, "--reason", "x", "--skip-gate"],
    );
    assert_eq!(out.status.code(), Some(1), "override is an admin's");
    let rows = t.audit_with(&p.id, "production.paused").await;
    let paused = rows
        .iter()
        .find(|r| r.event_type == "production.paused")
        .expect("paused");
    assert_eq!(
        paused.actor,
        format!("cli:arn:aws:iam::123456789012:user/{name}")
    );
    t.stop().await;
}

/// `shepherd start` run again (a retried command) shows the first production and starts
/// nothing; a new key starts another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_start_of_the_same_brief_file_starts_nothing() {
    let t = TestStack::start_idle().await;
    let dir = std::env::temp_dir().join(format!("shepherd-cli-idem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let brief: serde_json::Value = serde_json::from_str(&shepherd_it::brief(1)).unwrap();
    let path = write_brief(&dir, "brief.json", brief);
    let stack = t.stack.stack.clone();
    let first = shepherd(&stack, &["start", &path, "--json"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let again = shepherd(&stack, &["start", &path]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let out = text(&again.stdout);
    assert!(
        out.contains("already started as production")
            && out.contains(first["id"].as_str().unwrap()),
        "{out}"
    );
    let another = shepherd(&stack, &["start", &path, "--idempotency-key", "second-run"]);
    assert!(
        text(&another.stdout).contains("started production"),
        "{}",
        text(&another.stdout)
    );
    let out = shepherd(&stack, &["list", "--account", "acme", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(t.depth("BriefQueue").await, 2, "one message per production");
    t.stop().await;
}

/// A webhook from the command line: add (the secret printed once), test-send and follow it,
/// read its delivery log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_added_tested_and_their_deliveries_read() {
    let t = TestStack::start(&[]).await;
    let stack = t.stack.stack.clone();
    let suffix = &stack[stack.len() - 6..];
    let admin = iam_user(&t, &format!("cli-hooks-{suffix}"), Some("admin")).await;
    let rx = shepherd_it::receiver::Receiver::start().await;
    let out = shepherd_as(
        &stack,
        &admin,
        &[
            "webhooks",
            "add",
            "--url",
            &rx.url,
            "--events",
            "production.completed,alarm.raised",
            "--account",
            "acme",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    rx.trust(&[created["secret"].as_str().unwrap()]);
    let bad = shepherd_as(
        &stack,
        &admin,
        &[
            "webhooks",
            "add",
            "--url",
            &rx.url,
            "--events",
            "production.finished",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("production.finished"),
        "{}",
        text(&bad.stderr)
    );

    let out = shepherd_as(&stack, &admin, &["webhooks", "test", &id, "--wait"]);
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("delivered"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(rx.got().len(), 1);
    assert_eq!(rx.got()[0].verified, Ok(()));

    let out = shepherd_as(&stack, &admin, &["webhooks", "deliveries", &id, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "delivered");
    let out = shepherd_as(&stack, &admin, &["webhooks", "list", "--account", "acme"]);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    assert!(
        !text(&out.stdout).contains("whsec_"),
        "the secret is printed once"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_added_paused_triggered_shown_and_removed() {
    let t = TestStack::start_idle().await;
    let stack = t.stack.stack.clone();
    let suffix = &stack[stack.len() - 6..];
    let admin = iam_user(&t, &format!("cli-sched-{suffix}"), Some("admin")).await;
    let dir = std::env::temp_dir().join(format!("shepherd-cli-sched-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_brief(
        &dir,
        "nightly.json",
        serde_json::json!({"name": "nightly", "account": "acme",
            "input": {"title": "Tides", "topic": "Why the sea moves", "scenes": 1},
            "cron": "30 2 * * *", "time_zone": "Europe/Paris", "catch_up": "skip"}),
    );
    let out = shepherd_as(&stack, &admin, &["schedule", "add", &file, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_string();

    let bad = write_brief(
        &dir,
        "bad.json",
        serde_json::json!({"name": "x", "account": "acme", "input": {}, "cron": "61 * * * *"}),
    );
    let out = shepherd_as(&stack, &admin, &["schedule", "add", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cron \"61 * * * *\""),
        "{}",
        text(&out.stderr)
    );

    let out = shepherd_as(
        &stack,
        &admin,
        &["schedule", "pause", &id, "--note", "freeze"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("paused: freeze"),
        "{}",
        text(&out.stdout)
    );
    let out = shepherd_as(&stack, &admin, &["schedule", "trigger", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shepherd_as(&stack, &admin, &["schedule", "show", &id]);
    let shown = text(&out.stdout);
    assert!(shown.contains("fired (trigger) -> "), "{shown}");
    assert!(shown.contains("30 2 * * * Europe/Paris"), "{shown}");
    let out = shepherd_as(&stack, &admin, &["schedule", "list", "--account", "acme"]);
    assert!(text(&out.stdout).contains(&id));
    let out = shepherd_as(&stack, &admin, &["schedule", "remove", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shepherd_as(&stack, &admin, &["schedule", "show", &id]);
    assert_eq!(out.status.code(), Some(1));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_watchers_and_events_from_the_cli() {
    let t = TestStack::start_idle().await;
    let stack = t.stack.stack.clone();
    let suffix = &stack[stack.len() - 6..];
    let admin = iam_user(&t, &format!("cli-arrive-{suffix}"), Some("admin")).await;
    let dir = std::env::temp_dir().join(format!("shepherd-cli-arrive-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let connector = write_brief(
        &dir,
        "connector.json",
        serde_json::json!({"name": "widgets", "account": "acme", "kind": "github",
            "pipeline": "coding", "events": ["issues"],
            "mapping": {"repository": "/repository/full_name", "task": "/issue/body"}}),
    );
    let out = shepherd_as(&stack, &admin, &["connector", "add", &connector]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("the sender posts to <API>/events/con_"),
        "{shown}"
    );
    let out = shepherd_as(&stack, &admin, &["connector", "list", "--account", "acme"]);
    assert!(
        text(&out.stdout).contains("0 in: 0 started"),
        "{}",
        text(&out.stdout)
    );

    let watcher = write_brief(
        &dir,
        "watcher.json",
        serde_json::json!({"name": "blog", "account": "acme", "kind": "feed",
            "url": "http://127.0.0.1:9/feed.xml",
            "mapping": {"title": "/title", "topic": "/summary", "scenes": {"value": 1}}}),
    );
    let out = shepherd_as(&stack, &admin, &["watcher", "add", &watcher, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = w["id"].as_str().unwrap();
    let out = shepherd_as(&stack, &admin, &["watcher", "disable", id]);
    assert!(
        text(&out.stdout).contains("disabled by "),
        "{}",
        text(&out.stdout)
    );
    let out = shepherd_as(&stack, &admin, &["watcher", "enable", id]);
    assert!(
        text(&out.stdout).contains(" enabled "),
        "{}",
        text(&out.stdout)
    );

    let bad = write_brief(
        &dir,
        "bad-watcher.json",
        serde_json::json!({"name": "x", "account": "acme", "kind": "feed",
            "mapping": {"title": "/title"}}),
    );
    let out = shepherd_as(&stack, &admin, &["watcher", "add", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has a url"),
        "{}",
        text(&out.stderr)
    );

    let out = shepherd_as(&stack, &admin, &["events", "list", "--outcome", "failed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shepherd_as(
        &stack,
        &admin,
        &["events", "resubmit", "ev_nope", "--reason", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("event ev_nope not found"),
        "{}",
        text(&out.stderr)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_jump_names_the_output_it_needs_and_the_override_shows_until_cleared() {
    use shepherd_it::{Fault, FaultRule};
    let t = TestStack::start(&[]).await;
    t.provider
        .add_fault(FaultRule::new("speech", Fault::Refusal(true)).times(1));
    let p = t.start_production(1).await;
    let failed = t.wait_settled(&p.id, Duration::from_secs(60)).await;
    assert_eq!(failed.status, shepherd::domain::ProductionStatus::Failed);
    let stack = t.stack.stack.clone();
    let jump = [
        "override",
        &p.id,
        "--reason",
        "studio narration",
        "--jump-to",
        "publish",
    ];

    let out = shepherd(&stack, &jump);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("skips voice, whose output publish reads"),
        "{err}"
    );
    assert!(err.contains("--output voice=JSON"), "{err}");

    let mut bad = jump.to_vec();
    bad.extend(["--output", "voice=nope"]);
    let out = shepherd(&stack, &bad);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not JSON"),
        "{}",
        text(&out.stderr)
    );

    let narration = serde_json::json!({"audio": [{"scene": 1, "format": "mp3", "audio": {
        "name": "scene-1.mp3", "key": "studio/scene-1.mp3", "sha256": "ab".repeat(32),
        "bytes": 3, "content_type": "audio/mpeg"}}]});
    let supplied = format!("voice={narration}");
    let mut good = jump.to_vec();
    good.extend(["--output", &supplied]);
    let out = shepherd(&stack, &good);
    assert!(out.status.success(), "{}", text(&out.stderr));
    t.wait_settled(&p.id, Duration::from_secs(60)).await;
    let show = text(&shepherd(&stack, &["show", &p.id]).stdout);
    assert!(show.contains("[OVERRIDE]"), "{show}");
    assert!(
        show.contains("Override: jumped to publish with the output of voice supplied by "),
        "{show}"
    );
    assert!(show.contains(": studio narration"), "{show}");

    let out = shepherd(&stack, &["clear-override", &p.id, "--reason", "checked"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = text(&shepherd(&stack, &["show", &p.id]).stdout);
    assert!(
        !show.contains("[OVERRIDE]") && !show.contains("Override:"),
        "{show}"
    );
}
