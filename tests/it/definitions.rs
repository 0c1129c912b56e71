//! Pipelines are definitions (`pipelines/<name>/v<version>.json`): the input is checked
//! against the pipeline's schema, each phase's output against its contract, and a
//! production runs to the end on the version it started with while a deploy adds another.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shepherd::domain::{Act, ErrorCode, PhaseStatus, ProductionStatus, Role};
use shepherd::pipeline::{Definition, Pipelines};
use shepherd_it::{TestStack, brief};

const SETTLE: Duration = Duration::from_secs(60);

/// The built-in content definition, as its file says.
fn builtin(name: &str) -> Value {
    let path = shepherd_it::repo_root().join(format!("pipelines/{name}/v1.json"));
    let text = std::fs::read_to_string(path).expect("the definition exists");
    serde_json::from_str(&text).unwrap()
}

fn content_v1() -> Value {
    builtin("content")
}

fn registry(definitions: &[Value]) -> Arc<Pipelines> {
    let defs = definitions
        .iter()
        .map(|d| Definition::parse("fixture.json", &d.to_string()).unwrap())
        .collect();
    Arc::new(Pipelines::from_definitions(defs).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_breaks_the_schema_is_refused_naming_the_field_and_nothing_is_created() {
    let t = TestStack::start(&[]).await;
    let good: Value = serde_json::from_str(&brief(2)).unwrap();
    let mut too_many = good.clone();
    too_many["scenes"] = 40.into();
    let mut no_topic = good.clone();
    no_topic.as_object_mut().unwrap().remove("topic");
    let mut typo = good.clone();
    typo["scene"] = 2.into();
    let mut blank = good.clone();
    blank["title"] = "\u{200B} ".into();
    let cases = [
        (
            "/productions",
            too_many,
            "input.scenes: 40 is greater than the maximum of 12",
        ),
        ("/productions", no_topic, "input.topic: is required"),
        (
            "/productions",
            typo,
            "input.scene: is not a field of this schema",
        ),
        ("/productions", blank, "input.title: "),
        (
            "/productions?pipeline=nope",
            good.clone(),
            "unknown pipeline \"nope\": this stack runs coding, content",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, err) = t
            .http("POST", path, Some("operator-acme"), Some(body))
            .await;
        assert_eq!(status, 400, "{path}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{message}");
    }
    let (_, listed) = t
        .http("GET", "/productions", Some("operator-acme"), None)
        .await;
    assert_eq!(listed["productions"], json!([]), "nothing was created");
    assert_eq!(t.depth("BriefQueue").await, 0, "nothing was enqueued");

    // The pipeline's listing: its version, the default, its gates, what may be edited.
    let (status, before) = t.http("GET", "/pipelines", Some("viewer-acme"), None).await;
    assert_eq!(status, 200, "{before}");
    let named = |v: &Value, name: &str| {
        v["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    let content = &named(&before, "content");
    assert_eq!(
        named(&before, "coding")["phases"][0],
        json!({"name": "plan", "gate": "approval"})
    );
    assert_eq!(
        (&content["name"], &content["version"], &content["open"]),
        (&json!("content"), &json!(1), &json!(0))
    );
    assert_eq!(
        (&content["latest"], &content["default"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        content["phases"][4],
        json!({"name": "publish", "gate": "acknowledge_warnings"})
    );
    assert_eq!(
        content["editable"],
        json!(["audience", "language", "title", "tone", "topic", "voice"])
    );
    let (status, _) = t
        .http("POST", "/productions", Some("operator-acme"), Some(good))
        .await;
    assert_eq!(status, 201);
    let (_, after) = t.http("GET", "/pipelines", Some("viewer-acme"), None).await;
    assert_eq!(named(&after, "content")["open"], 1);
    let (_, theirs) = t
        .http("GET", "/pipelines", Some("operator-globex"), None)
        .await;
    assert_eq!(
        named(&theirs, "content")["open"],
        0,
        "counted in the caller's scope"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_breaks_its_contract_fails_the_phase_with_the_schema_path() {
    let mut t = TestStack::start_idle_with(&[]).await;
    // The script's contract asks for a duration per scene, which the script does not write.
    let mut strict = content_v1();
    let script = strict["phases"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == "script")
        .unwrap();
    script["output"]["properties"]["scenes"]["items"]["required"] =
        json!(["n", "narration", "seconds"]);
    t.deploy(registry(&[strict])).await;
    let p = t.start_production(2).await;
    let done = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Failed, "{done:#?}");
    let script = done.phase("script").unwrap();
    assert_eq!(script.status, PhaseStatus::Failed);
    let error = script.last_error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::OutputContract);
    assert_eq!(
        error.detail,
        "phase script broke its output contract: output.scenes.0.seconds: is required \
         (schema /properties/scenes/items/required)"
    );
    // Permanent: no retry asked the provider again, and nothing after it ran.
    assert_eq!((script.attempt, script.error_count), (1, 1));
    assert_eq!(done.phase("assets").unwrap().status, PhaseStatus::Pending);
    assert_eq!(
        t.provider.calls().served.get("/v1/images/generations"),
        None
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_started_on_v1_completes_on_v1_after_v2_is_deployed() {
    let mut t = TestStack::start_idle_with(&[("ApprovalPhases", "script")]).await;
    let v1 = content_v1();
    // Version 2: the plan waits for approval too, and at most 3 scenes.
    let mut v2 = v1.clone();
    v2["version"] = 2.into();
    v2["phases"][0]["gate"] = "approval".into();
    v2["input"]["properties"]["scenes"]["maximum"] = 3.into();

    t.deploy(registry(std::slice::from_ref(&v1))).await;
    let first = t.start_production(5).await;
    assert_eq!(
        (first.pipeline.as_str(), first.pipeline_version),
        ("content", 1)
    );
    t.wait_for(&first.id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await;

    // The deploy that adds v2: what runs keeps v1, what starts gets v2.
    t.deploy(registry(&[v1, v2])).await;
    let err = t
        .ops
        .start(&brief(5), &TestStack::operator())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("input.scenes: 5 is greater than the maximum of 3"),
        "{err}"
    );
    let second = t.start_production(2).await;
    assert_eq!(second.pipeline_version, 2);
    let listed = t
        .ops
        .pipelines_in_use(&TestStack::operator())
        .await
        .unwrap();
    let open: Vec<(u32, bool, u64)> = listed
        .iter()
        .map(|p| (p.version, p.latest, p.open))
        .collect();
    assert_eq!(open, [(1, false, 1), (2, true, 1)]);

    let operator = TestStack::caller(Role::Operator);
    t.ops.act(&first.id, Act::Approve, &operator).await.unwrap();
    let done = t.wait_settled(&first.id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    assert_eq!(done.pipeline_version, 1);
    assert!(
        done.phases
            .iter()
            .all(|ph| ph.status == PhaseStatus::Succeeded)
    );
    // v1 has no gate after the plan: only the script's approval was asked for.
    let approvals = t
        .audit_with(&first.id, "production.completed")
        .await
        .into_iter()
        .filter(|e| e.event_type == "approval.requested")
        .map(|e| e.phase.unwrap_or_default())
        .collect::<Vec<_>>();
    assert_eq!(approvals, ["script"]);

    // The v2 production waits where v2 says: after its plan.
    let waiting = t
        .wait_for(&second.id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;
    assert_eq!(waiting.approval.unwrap().phase, "brief");
    let listed = t
        .ops
        .pipelines_in_use(&TestStack::operator())
        .await
        .unwrap();
    let open: Vec<(u32, u64)> = listed.iter().map(|p| (p.version, p.open)).collect();
    assert_eq!(open, [(1, 0), (2, 1)], "v1 can now be removed");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_run_side_by_side_on_one_stack_sharing_phase_functions() {
    // A narration-only pipeline: the content pipeline's brief, script and voice phases (a
    // phase name is one function and one queue, whichever pipeline runs it).
    let content = content_v1();
    let mut narration = content.clone();
    narration["name"] = "narration".into();
    narration["description"] = "A narrated script, no pictures.".into();
    narration["phases"] = json!([
        content["phases"][0].clone(),
        content["phases"][1].clone(),
        content["phases"][3].clone(),
    ]);
    let pipelines = registry(&[content, narration, builtin("coding")]);
    // The shipped template lets the script hand off only to assets: the region the
    // generator writes for these pipelines lets it send to the voice queue too, and
    // nothing else changes.
    let text = std::fs::read_to_string(shepherd_it::repo_root().join("template.yaml")).unwrap();
    let handoff = "                - !GetAtt ScriptQueue.Arn\n                - !GetAtt AssetsQueue.Arn\n                - !GetAtt ScriptDeadLetterQueue.Arn\n";
    assert_eq!(text.matches(handoff).count(), 1);
    let generated = shepherd_local::generate::apply(&text, &pipelines).unwrap();
    let with_voice = "                - !GetAtt ScriptQueue.Arn\n                - !GetAtt AssetsQueue.Arn\n                - !GetAtt VoiceQueue.Arn\n                - !GetAtt ScriptDeadLetterQueue.Arn\n";
    assert_eq!(generated.matches(with_voice).count(), 1);
    assert_eq!(generated.matches(handoff).count(), 0);
    let variant =
        std::env::temp_dir().join(format!("shepherd-narration-{}.yaml", uuid::Uuid::now_v7()));
    std::fs::write(&variant, generated).unwrap();
    let mut t = TestStack::start_from(&variant, &[]).await;
    t.deploy(pipelines).await;
    let operator = TestStack::operator();
    let (a, _) = t
        .ops
        .start_once(None, &brief(2), None, &operator)
        .await
        .unwrap();
    let (b, _) = t
        .ops
        .start_once(Some("narration"), &brief(2), None, &operator)
        .await
        .unwrap();
    let a = t.wait_settled(&a.id, SETTLE).await;
    let b = t.wait_settled(&b.id, SETTLE).await;
    for (p, name, phases) in [
        (
            &a,
            "content",
            vec!["brief", "script", "assets", "voice", "publish"],
        ),
        (&b, "narration", vec!["brief", "script", "voice"]),
    ] {
        assert_eq!(p.status, ProductionStatus::Completed, "{p:#?}");
        assert_eq!(p.pipeline, name);
        let ran: Vec<&str> = p.phases.iter().map(|ph| ph.name.as_str()).collect();
        assert_eq!(ran, phases);
    }
    let outputs = t.ops.outputs(&b).await.unwrap();
    assert_eq!(outputs["voice"]["audio"].as_array().unwrap().len(), 2);
    t.stop().await;
}
