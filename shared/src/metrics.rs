//! Metrics as CloudWatch Embedded Metric Format lines on stdout: Lambda's log agent turns
//! each into metrics with no API call and no latency on the hot path. The layout is
//! Powertools for AWS Lambda's: namespace `Shepherd`, a `service` dimension (the stack),
//! at most one more dimension per document (phase, integration, function), a `ColdStart`
//! metric per execution environment; production and trace ids are properties (searchable in Logs
//! Insights), never dimensions (each value would be a new metric, and a bill).
//!
//! Specification: "Embedded metric format specification" (CloudWatch User Guide): a root
//! object with `_aws.Timestamp` (epoch ms) and `_aws.CloudWatchMetrics`, a list of
//! directives each naming a `Namespace`, `Dimensions` (a list of dimension-key lists) and
//! `Metrics` (`Name`, optional `Unit`); every name a directive uses is a root member.

use std::sync::{Arc, OnceLock, RwLock};

use serde_json::{Map, Value, json};

/// The namespace every Shepherd metric is in.
pub const NAMESPACE: &str = "Shepherd";

/// CloudWatch's units that Shepherd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Where the lines go: stdout in Lambda (and under `cargo lambda watch`); a test may
/// capture them.
pub trait Sink: Send + Sync {
    fn line(&self, line: &str);
}

struct Stdout;

impl Sink for Stdout {
    fn line(&self, line: &str) {
        use std::io::Write as _;
        // One write per line, so concurrent documents never interleave.
        let _ = std::io::stdout()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }
}

/// Nowhere: outside Lambda (the local stack, tests) nothing would turn the lines into
/// metrics, and they would bury the logs.
struct Discard;

impl Sink for Discard {
    fn line(&self, _: &str) {}
}

fn sink() -> &'static RwLock<Arc<dyn Sink>> {
    static SINK: OnceLock<RwLock<Arc<dyn Sink>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
        RwLock::new(match lambda {
            true => Arc::new(Stdout),
            false => Arc::new(Discard),
        })
    })
}

/// Sends every later document to `to` (a test's capture); the process's choice.
pub fn set_sink(to: Arc<dyn Sink>) {
    *sink().write().expect("metrics sink") = to;
}

/// The `service` dimension: `POWERTOOLS_SERVICE_NAME` as Powertools reads it (the template
/// sets the stack's name), `shepherd` when unset.
fn service() -> String {
    std::env::var("POWERTOOLS_SERVICE_NAME").unwrap_or_else(|_| "shepherd".into())
}

/// One EMF document: metrics under one dimension set, plus properties.
#[derive(Debug, Clone)]
pub struct Document {
    dimension: Option<(&'static str, String)>,
    metrics: Vec<(&'static str, f64, Unit)>,
    properties: Map<String, Value>,
}

impl Document {
    /// Metrics with only the `service` dimension.
    pub fn new() -> Self {
        Self {
            dimension: None,
            metrics: vec![],
            properties: Map::new(),
        }
    }

    /// Metrics per `key` (`phase`, `integration`, ...) within the service.
    pub fn by(key: &'static str, value: impl Into<String>) -> Self {
        Self {
            dimension: Some((key, value.into())),
            ..Self::new()
        }
    }

    pub fn count(mut self, name: &'static str, n: u64) -> Self {
        self.metrics.push((name, n as f64, Unit::Count));
        self
    }

    pub fn millis(mut self, name: &'static str, ms: u64) -> Self {
        self.metrics.push((name, ms as f64, Unit::Milliseconds));
        self
    }

    /// A searchable value that is not a dimension (a production id, a trace id).
    pub fn property(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The document as one JSON line at `now` (epoch ms).
    pub fn render(&self, service: &str, now: i64) -> String {
        let mut keys = vec!["service"];
        let mut root = self.properties.clone();
        root.insert("service".into(), service.into());
        if let Some((k, v)) = &self.dimension {
            keys.push(k);
            root.insert((*k).into(), v.as_str().into());
        }
        let defs: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        for (name, value, _) in &self.metrics {
            root.insert((*name).into(), json!(value));
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": now,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [keys],
                    "Metrics": defs,
                }],
            }),
        );
        Value::Object(root).to_string()
    }

    /// Writes the document (nothing when it holds no metric).
    pub fn emit(self) {
        if self.metrics.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let line = self.render(&service(), now);
        sink().read().expect("metrics sink").line(&line);
    }
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

/// `ColdStart` (1) of a function (Powertools' `function_name` dimension): its handler is
/// built once per execution environment, on the first event.
pub fn cold_start(function: &str) {
    Document::by("function_name", function)
        .count("ColdStart", 1)
        .emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_emf_with_ids_as_properties_never_dimensions() {
        let line = Document::by("phase", "voice")
            .millis("PhaseDuration", 1250)
            .count("PhaseSucceeded", 1)
            .property("production_id", "p-1")
            .property("trace_id", "t-1")
            .render("demo", 1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(d["Namespace"], "Shepherd");
        assert_eq!(d["Dimensions"], json!([["service", "phase"]]));
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "PhaseDuration", "Unit": "Milliseconds"},
                   {"Name": "PhaseSucceeded", "Unit": "Count"}])
        );
        assert_eq!(
            (v["service"].as_str(), v["phase"].as_str()),
            (Some("demo"), Some("voice"))
        );
        assert_eq!(v["PhaseDuration"], 1250.0);
        assert_eq!(v["production_id"], "p-1");
        assert!(!line.contains('\n'));
    }
}
