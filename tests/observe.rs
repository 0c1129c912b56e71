//! What a run leaves for an operator to follow, captured as Lambda would ship it: its JSON
//! log lines and its EMF metric documents. A test binary of its own, so the process's
//! subscriber and metrics sink see this one production and nothing of another test's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shepherd::domain::ProductionStatus;
use shepherd_it::{Fault, FaultRule, TestStack};

/// Everything written to it, line by line.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl shepherd::metrics::Sink for Capture {
    fn line(&self, line: &str) {
        let mut b = self.0.lock().unwrap();
        b.extend_from_slice(line.as_bytes());
        b.push(b'\n');
    }
}

/// The run's own code: the worker, its tools and integrations, and the pipeline's phases.
fn of_a_run(target: &str) -> bool {
    [
        "shepherd::runtime",
        "shepherd::tools",
        "shepherd::integrations",
        "shepherd_content",
    ]
    .iter()
    .any(|t| target.starts_with(t))
}

/// Checks `doc` against the EMF specification: the structure (the fixture schema), then
/// what the schema cannot say: each directive's dimension keys are string members of the
/// root and its metric names number members (or arrays of at most 100 numbers).
fn check_emf(doc: &Value, schema: &jsonschema::Validator) {
    if let Err(e) = schema.validate(doc) {
        panic!("not EMF ({e}): {doc}");
    }
    for d in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
        for set in d["Dimensions"].as_array().unwrap() {
            for k in set.as_array().unwrap() {
                let k = k.as_str().unwrap();
                assert!(
                    doc[k].is_string(),
                    "dimension {k} is not a string member: {doc}"
                );
            }
        }
        for m in d["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            let ok = doc[name].is_number()
                || doc[name]
                    .as_array()
                    .is_some_and(|a| a.len() <= 100 && a.iter().all(Value::is_number));
            assert!(ok, "metric {name} has no numeric member: {doc}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_log_lines_all_name_its_production_and_its_metrics_are_emf() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .init();
    let metrics = Capture::default();
    shepherd::metrics::set_sink(Arc::new(metrics.clone()));

    let t = TestStack::start(&[]).await;
    // One retried call, so a retry is measured as well as successes.
    t.provider
        .add_fault(FaultRule::new("speech", Fault::Status(503)).times(1));
    let rx = shepherd_it::receiver::Receiver::start().await;
    let admin = TestStack::caller(shepherd::domain::Role::Admin);
    t.subscribe(&rx, &["production.completed"], &admin).await;
    let p = t.start_production(1).await;
    let done = t.wait_settled(&p.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, ProductionStatus::Completed, "{done:#?}");
    rx.wait(Duration::from_secs(30), |got| !got.is_empty())
        .await;
    t.stop().await;

    // Every line the run's code logged carries its production, phase, attempt and trace.
    let lines = logs.lines();
    let run: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"].as_str().is_some_and(of_a_run))
        .collect();
    assert!(run.len() >= 6, "a claim per phase at least: {run:#?}");
    for l in &run {
        let span = &l["span"];
        assert_eq!(span["production"], p.id.as_str(), "{l}");
        assert_eq!(span["trace_id"], p.trace_id.as_str(), "{l}");
        assert!(
            span["phase"].is_string() && span["attempt"].is_number(),
            "{l}"
        );
    }

    // The metrics: EMF documents, ids as properties and never as dimensions.
    let schema: Value = serde_json::from_str(include_str!("fixtures/emf.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&schema).unwrap();
    let docs = metrics.lines();
    for d in &docs {
        check_emf(d, &schema);
        let dims = d["_aws"]["CloudWatchMetrics"][0]["Dimensions"].to_string();
        assert!(dims.starts_with("[[\"service\""), "{dims}");
        assert!(
            !dims.contains("production") && !dims.contains("trace"),
            "{dims}"
        );
    }
    let with =
        |metric: &str| -> Vec<&Value> { docs.iter().filter(|d| d.get(metric).is_some()).collect() };
    let phases: Vec<&str> = with("PhaseSucceeded")
        .iter()
        .map(|d| {
            assert_eq!(d["production_id"], p.id.as_str());
            assert_eq!(d["trace_id"], p.trace_id.as_str());
            assert!(d["PhaseDuration"].is_number());
            d["phase"].as_str().unwrap()
        })
        .collect();
    assert_eq!(phases, ["brief", "script", "assets", "voice", "publish"]);
    let retried = with("PhaseRetried");
    assert_eq!(retried.len(), 1, "{retried:#?}");
    assert_eq!(retried[0]["phase"], "voice");
    let calls = with("ProviderCalls");
    assert!(calls.len() >= 5, "{calls:#?}");
    assert!(
        calls
            .iter()
            .all(|d| d["integration"].is_string() && d["ProviderLatency"].is_number())
    );
    let errors = with("ProviderErrors");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["error_code"], "provider_unavailable");
    assert!(!with("ColdStart").is_empty(), "each function's first event");
    let delivered = with("WebhookDelivered");
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(delivered[0]["event"], "production.completed");
    assert_eq!(delivered[0]["subject"], p.id.as_str());
}
