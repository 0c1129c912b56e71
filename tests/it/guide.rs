//! docs/your-pipeline.md, followed step by step on the local stack: the guide's phase code
//! (compiled from the guide by tests/build.rs), its definition, its template resources and
//! list edits applied to a copy of template.yaml, checked against the definitions, then a
//! production of the guide's pipeline run through the real SDK with the guide's IAM.

use std::sync::Arc;
use std::time::Duration;

use shepherd::domain::ProductionStatus;
use shepherd::pipeline::{Definition, Pipelines};
use shepherd_it::{TestStack, guide, repo_root};

#[allow(dead_code)]
mod guide_phase {
    include!(concat!(env!("OUT_DIR"), "/guide_phase.rs"));
}

fn text(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn block(name: &str) -> String {
    guide::block(&text("docs/your-pipeline.md"), name)
        .unwrap_or_else(|| panic!("the guide has no <!-- guide:{name} --> block"))
}

/// Step 4 as the guide words it: the resources where the template says, the two strings
/// extended after the last phase's entry, a line above each marker comment.
fn apply_template_steps(template: &str) -> String {
    let marker = "  # ---- Your phases go here (docs/your-pipeline.md) ----\n";
    assert_eq!(
        template.matches(marker).count(),
        1,
        "the template has the guide's marker"
    );
    let mut t = template.replace(marker, &format!("{marker}\n{}\n", block("resources")));
    let lists = block("lists");
    let line = |key: &str| {
        lists
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("the guide's lists have no {key}"))
            .trim()
            .to_string()
    };
    for (after, key) in [
        ("pull_request=${PullRequestQueue.QueueName}", "queues"),
        (
            "pull_request=${PullRequestDeadLetterQueue.QueueName}",
            "dlqs",
        ),
    ] {
        assert_eq!(
            t.matches(after).count(),
            2,
            "{after} is in two places, as the guide says"
        );
        t = t.replace(after, &format!("{after}{}", line(key)));
    }
    for (comment, key) in [
        ("# + a new phase's queue", "queue"),
        ("# + a new phase's DLQ", "dlq"),
    ] {
        let mut out = String::new();
        for l in t.lines() {
            if let Some(at) = l.find(comment) {
                out.push_str(&format!("{}{}\n", &l[..at], line(key)));
            }
            out.push_str(l);
            out.push('\n');
        }
        t = out;
    }
    t
}

#[test]
fn the_guides_code_matches_its_definition_and_the_crates_conventions() {
    let def =
        Definition::parse("guide", &block("definition")).expect("the guide's definition loads");
    let phase = &def.phases[0];
    use shepherd::runtime::Phase;
    assert_eq!(guide_phase::Summarize::NAME, phase.name);
    // The by_name line, the function's main and the registry line name the same things.
    assert!(block("by_name").contains(&format!("\"{}\" => Box::new(Summarize)", phase.function)));
    assert!(block("main").contains("shepherd::wiring::serve_phase(shepherd::phases::Summarize)"));
    assert!(block("builtin").contains(&format!("pipelines/{}/v{}.json", def.name, def.version)));
    // The shipped functions' main.rs has the same shape as the guide's.
    let script = text("functions/script/src/main.rs");
    assert!(script.contains("shepherd::wiring::serve_phase(shepherd::phases::Script).await"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_pipeline_runs_on_the_local_stack() {
    let definition = Definition::parse("guide", &block("definition")).unwrap();
    let mut defs: Vec<Definition> = Pipelines::builtin()
        .all()
        .map(|p| p.definition.clone())
        .collect();
    defs.push(definition);
    let pipelines = Arc::new(Pipelines::from_definitions(defs).unwrap());

    let template = text("template.yaml");
    let before = shepherd_local::template::definition_drift(
        &shepherd_local::template::load(&template).unwrap(),
        &pipelines,
    );
    assert!(
        !before.is_empty(),
        "without step 4 the check names what is missing"
    );
    let variant = apply_template_steps(&template);
    let drift = shepherd_local::template::definition_drift(
        &shepherd_local::template::load(&variant).unwrap(),
        &pipelines,
    );
    assert!(drift.is_empty(), "{drift:#?}");
    let loaded = shepherd_local::template::load(&variant).unwrap();
    for (id, bytes) in shepherd_local::template::environment_sizes(&loaded, 32) {
        assert!(
            bytes <= shepherd_local::template::LAMBDA_ENVIRONMENT_LIMIT,
            "{id}: {bytes} bytes of environment with the guide's phase"
        );
    }
    let path = std::env::temp_dir().join(format!("shepherd-guide-{}.yaml", uuid::Uuid::now_v7()));
    std::fs::write(&path, variant).unwrap();

    let phases: shepherd_local::runtime::PhaseLookup = Arc::new(|binary: &str| {
        (binary == "summarize")
            .then(|| Box::new(guide_phase::Summarize) as Box<dyn shepherd::runtime::RunPhase>)
    });
    let t = TestStack::start_with_phases(&path, pipelines, phases).await;
    // Started over the HTTP API: its role may dispatch to the new queue (the `queue` line).
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
    let outputs = t.ops.outputs(&done).await.unwrap();
    let summary = outputs["summarize"]["summary"].as_str().unwrap();
    assert!(!summary.is_empty());
    // The call went to the provider once, under the phase's key.
    let calls = t.provider.calls();
    assert_eq!(
        calls.by_key.get(&format!("{id}#summarize#summary")),
        Some(&1),
        "{:?}",
        calls.by_key
    );
    // The operator's view lists it.
    let listed = t
        .ops
        .pipelines_in_use(&TestStack::operator())
        .await
        .unwrap();
    assert!(listed.iter().any(|l| l.name == "summary" && l.version == 1));
    t.stop().await;
}
