//! docs/your-pipeline.md works as written: its blocks are the fixture crate
//! (`tests/fixtures/summary`, a team crate outside the engine), its composition line builds
//! the stack, the one command generates the template, and a production of the guide's
//! pipeline runs on the local stack under the generated IAM, started over the HTTP API.

use std::time::Duration;

use shepherd::domain::ProductionStatus;
use shepherd_it::{TestStack, repo_root};

mod guide_stack {
    include!(concat!(env!("OUT_DIR"), "/guide_stack.rs"));
}

fn text(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn block(name: &str) -> String {
    shepherd_it::guide::block(&text("docs/your-pipeline.md"), name)
        .unwrap_or_else(|| panic!("the guide has no <!-- guide:{name} --> block"))
}

/// The stack's pipelines with the guide's one line added; or, where a team has followed
/// the guide in this repository already, the stack as it is.
fn stack() -> shepherd::stack::Stack {
    let stack = shepherd_stack::pipelines().build().unwrap();
    if stack.pipelines().latest(Some("summary")).is_ok() {
        return stack;
    }
    guide_stack::guides_specs()
        .into_iter()
        .fold(shepherd_stack::pipelines(), |b, spec| b.pipeline(spec))
        .build()
        .expect("the stack with the guide's pipeline builds")
}

#[test]
fn the_guides_files_are_a_crate_of_their_own_and_its_edits_are_one_line_each() {
    // The three new files, as the guide writes them, are the fixture crate's (its package
    // has a name of its own, so that following the guide here collides with nothing).
    let own_name = "# The guide's crate under a name of its own, so a team following the guide in this\n\
                    # repository (pipelines/summary, package summary-pipeline) does not collide with it.\n\
                    name = \"guide-summary-pipeline\"";
    let cargo = text("tests/fixtures/summary/Cargo.toml");
    assert!(cargo.contains(own_name));
    assert_eq!(
        block("cargo"),
        cargo.replace(own_name, "name = \"summary-pipeline\""),
        "the guide's Cargo.toml is the fixture's"
    );
    for (name, file) in [
        ("definition", "tests/fixtures/summary/v1.json"),
        ("watch-kind", "tests/fixtures/summary/src/watch.rs"),
    ] {
        assert_eq!(
            block(name),
            text(file),
            "the guide's {name} block is {file}"
        );
    }
    // src/lib.rs is the phase block with section 6's two edits (a watcher kind of its own).
    let last_phase = "        .phase(Headline)\n";
    let with_kind = format!(
        "{}\n{}",
        block("phase").replace(last_phase, &format!("{last_phase}{}", block("watch-line"))),
        block("watch-mod")
    );
    assert_eq!(
        with_kind,
        text("tests/fixtures/summary/src/lib.rs"),
        "the guide's phase block, with the watch-line and watch-mod edits, is src/lib.rs"
    );
    // It depends on the engine, and nothing of the engine depends on it.
    assert!(text("tests/fixtures/summary/Cargo.toml").contains("shepherd.workspace = true"));
    assert!(!text("shared/Cargo.toml").contains("summary"));
    // The two edits: one line each, under the markers the composition crate carries.
    let dependency = block("stack-dependency");
    assert_eq!(dependency, "summary-pipeline = { path = \"../summary\" }\n");
    assert_eq!(dependency.lines().count(), 1);
    assert!(text("pipelines/stack/Cargo.toml").contains("# + your pipeline's crate here"));
    assert_eq!(block("stack-line").lines().count(), 1);
    // The edited composition stays as rustfmt writes it (CI runs `cargo fmt --check`).
    let composition = text("pipelines/stack/src/lib.rs");
    let marker = "        // + your pipeline here (docs/your-pipeline.md)\n";
    assert!(composition.contains(marker));
    let edited = composition.replace(marker, &format!("{marker}{}", block("stack-line")));
    let path = std::env::temp_dir().join(format!("shepherd-guide-{}.rs", uuid::Uuid::now_v7()));
    std::fs::write(&path, edited).unwrap();
    let fmt = std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--check"])
        .arg(&path)
        .output()
        .expect("rustfmt runs");
    assert!(
        fmt.status.success(),
        "the guide's line leaves the composition unformatted: {}",
        String::from_utf8_lossy(&fmt.stdout)
    );
    // The one command.
    assert_eq!(
        block("command"),
        "cargo run -p shepherd-local -- template\n"
    );
    // What `cargo test-fast` checks of it: the stack builds, its contracts compile.
    let stack = stack();
    stack.check_contracts().unwrap();
    assert_eq!(stack.pipelines().default_name(), "content");
    let summary = stack.pipelines().latest(Some("summary")).unwrap();
    assert_eq!(summary.definition.phase_names(), ["summarize", "headline"]);
}

/// The generated region for the stack with the guide's pipeline: the hand-written part of
/// the template is untouched, every shipped resource stays as it is, and the new phases
/// have their own.
fn generated() -> String {
    let template = text("template.yaml");
    let generated = shepherd_local::generate::apply(&template, stack().pipelines()).unwrap();
    let head = |t: &str| t[..t.find(shepherd_local::generate::BEGIN).unwrap()].to_string();
    let tail = |t: &str| t[t.find(shepherd_local::generate::END).unwrap()..].to_string();
    assert_eq!(
        head(&generated),
        head(&template),
        "no hand-written YAML changes"
    );
    assert_eq!(
        tail(&generated),
        tail(&template),
        "no hand-written YAML changes"
    );
    let (before, after) = (
        shepherd_local::template::load(&template).unwrap(),
        shepherd_local::template::load(&generated).unwrap(),
    );
    let lists_every_phase = [
        "PhaseQueuesSendPolicy",
        "PhaseDeadLettersPeekPolicy",
        "PhaseDeadLettersManagePolicy",
        "PipelinesParameter",
        "Dashboard",
    ];
    for (id, r) in before["Resources"].as_object().unwrap() {
        if !lists_every_phase.contains(&id.as_str()) {
            assert_eq!(&after["Resources"][id], r, "{id} is unchanged");
        }
    }
    for id in [
        "SummarizeQueue",
        "SummarizeDeadLetterQueue",
        "SummarizeFunction",
        "SummarizeDeadLetterAlarm",
        "SummarizeOldestMessageAlarm",
        "HeadlineQueue",
        "HeadlineFunction",
        "DefinitionSummaryV1Parameter",
        "WatchKindJsonFeedParameter",
    ] {
        assert!(after["Resources"][id].is_object(), "{id} is generated");
    }
    let dashboard = after["Resources"]["Dashboard"].to_string();
    assert!(
        dashboard.contains("summarize PhaseSucceeded"),
        "the dashboard shows the new phases"
    );
    for (id, bytes) in shepherd_local::template::environment_sizes(&after, 32) {
        assert!(
            bytes <= shepherd_local::template::LAMBDA_ENVIRONMENT_LIMIT - 512,
            "{id}: {bytes} bytes of environment with the guide's phases"
        );
    }
    generated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_pipeline_runs_on_the_local_stack_under_the_generated_iam() {
    let path = std::env::temp_dir().join(format!("shepherd-guide-{}.yaml", uuid::Uuid::now_v7()));
    std::fs::write(&path, generated()).unwrap();
    let t = TestStack::start_with_stack(&path, stack()).await;
    // Started over the HTTP API: its role dispatches through the generated managed policy.
    let input: serde_json::Value = serde_json::from_str(&block("input")).unwrap();
    let (status, started) = t
        .http(
            "POST",
            "/productions?pipeline=summary",
            Some("operator-acme"),
            Some(input),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let done = t.wait_settled(&id, Duration::from_secs(60)).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(done.pipeline, "summary");
    // summarize handed off to headline: the generated role may send to its queue.
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert!(!outputs["summarize"]["summary"].as_str().unwrap().is_empty());
    assert!(!outputs["headline"]["headline"].as_str().unwrap().is_empty());
    // Each call went to the provider once, under its phase's key.
    let calls = t.provider.calls();
    for key in ["summarize#summary", "headline#headline"] {
        assert_eq!(
            calls.by_key.get(&format!("{id}#{key}")),
            Some(&1),
            "{key}: {:?}",
            calls.by_key
        );
    }
    the_guides_watcher_kind_starts_work(&t).await;
    // The operators' CLI reads the definitions the template published: it knows the new
    // pipeline without being rebuilt.
    let (cli_ops, _) = shepherd::ops::Ops::connect(&t.sdk, &t.stack.stack)
        .await
        .unwrap();
    let listed = cli_ops
        .pipelines_in_use(&TestStack::operator())
        .await
        .unwrap();
    let summary = listed.iter().find(|l| l.name == "summary").unwrap();
    assert_eq!(
        (summary.version, summary.open, summary.default),
        (1, 0, false)
    );
    t.stop().await;
}

/// Section 6: the crate's own watcher kind. The CLI checks a watcher's params from the
/// declaration the template published; over the API, a watcher of the kind polls a JSON
/// Feed with the scheduler's role, and each new item starts a production of the pipeline.
async fn the_guides_watcher_kind_starts_work(t: &TestStack) {
    let feed = shepherd_it::feed::FeedServer::start().await;
    feed.publish("Old post", "Already there when the watcher was made");
    let mut spec: serde_json::Value = serde_json::from_str(&block("watcher")).unwrap();
    spec["params"]["url"] = feed.json_url.clone().into();
    // The CLI, built without the crate, knows the kind from what the stack published.
    let (cli_ops, _) = shepherd::ops::Ops::connect(&t.sdk, &t.stack.stack)
        .await
        .unwrap();
    let admin = TestStack::caller(shepherd::domain::Role::Admin);
    let refused = |change: fn(&mut serde_json::Value)| {
        let mut spec = spec.clone();
        change(&mut spec);
        let (ops, admin) = (&cli_ops, &admin);
        async move {
            let spec = serde_json::from_value(spec).unwrap();
            ops.create_watcher(spec, admin)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let e = refused(|s| s["params"] = serde_json::json!({"url": 7})).await;
    assert!(e.contains("params.url: 7 is not of type"), "{e}");
    let e = refused(|s| s["kind"] = "json_feeds".into()).await;
    assert!(
        e.contains("this stack has feed, github_issues, json_feed"),
        "{e}"
    );
    // Anyone who reads sees the kinds the stack has, with what each takes.
    let (st, kinds) = t
        .http("GET", "/watchers/kinds", Some("viewer-acme"), None)
        .await;
    assert_eq!(st, 200, "{kinds}");
    assert_eq!(
        kinds["built_in"],
        serde_json::json!(["feed", "github_issues"])
    );
    assert_eq!(kinds["kinds"][0]["name"], "json_feed");
    assert_eq!(kinds["kinds"][0]["params"]["required"][0], "url");
    // An account's admin adds one over the API.
    let id = t.create_watcher(spec).await;
    let (ops, clock) = t.scheduler_ops().await;
    let first = ops.run_watchers().await.unwrap();
    assert_eq!((first.polled, first.items), (1, 0), "{first:?}");
    feed.publish(
        "Spring tides",
        "The sun and the moon line up and pull together",
    );
    clock.advance(6 * 60_000);
    let second = ops.run_watchers().await.unwrap();
    assert_eq!((second.polled, second.items), (1, 1), "{second:?}");
    // Nothing changed: the ETag answers 304 and nothing starts.
    clock.advance(6 * 60_000);
    let third = ops.run_watchers().await.unwrap();
    assert_eq!((third.polled, third.items), (1, 0), "{third:?}");
    let events = t.events_of(&format!("watcher:{id}"), "acme").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "started", "{events:?}");
    assert_eq!(events[0]["kind"], "custom");
    let production = events[0]["production"].as_str().unwrap();
    let done = t.wait_settled(production, Duration::from_secs(60)).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(done.pipeline, "summary");
    let outputs = t.ops.outputs(&done).await.unwrap();
    assert!(!outputs["headline"]["headline"].as_str().unwrap().is_empty());
}
