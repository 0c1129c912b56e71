use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::CallKind;

/// A pipeline version as written in `pipelines/<name>/v<version>.json`. Unknown keys are
/// refused, so a typo (`concurency`) is an error when the definition loads, not a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of a production's input: an object that requires `account` (the
    /// engine's tenancy) and may have `auto_approve` (a boolean: skip approval gates). A
    /// top-level property with `"x-editable": true` may be changed by `edit` while the
    /// production runs; top-level `default`s are filled in when it starts.
    pub input: Value,
    pub phases: Vec<PhaseDefinition>,
}

/// One phase of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDefinition {
    /// Also the phase's queue and DLQ (`<stack>-<name>`); one function per name in a stack.
    pub name: String,
    /// Written by definitions from before one bootstrap served every phase (the binary
    /// that ran it). Optional and otherwise unused: the phase's name picks its code and its
    /// function. When given, a phase name must give one `function` in every pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default)]
    pub gate: Gate,
    /// The gate holds whatever the input says: `auto_approve` does not skip it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate_required: bool,
    /// The earlier phases whose outputs this phase reads (`ctx.output::<P>()`); it is given
    /// those and no others. Absent: every earlier phase's, and an admin's jump over any
    /// of them is refused unless the admin supplies its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Vec<String>>,
    /// The JSON Schema the phase's output must satisfy; an output that does not fails the
    /// phase (permanently: a retry would make the same kind of answer) naming the path.
    pub output: Value,
    /// Tries of one attempt before it is dead-lettered (the stack's `PhaseMaxRetries` caps it).
    pub max_tries: u32,
    /// The function's timeout; the template's must be the same.
    pub timeout_seconds: u32,
    /// What its tools may call (chat, image, speech, mcp, http); anything else is refused.
    #[serde(default)]
    pub integrations: Vec<CallKind>,
    /// At most this many concurrent runs (the event source's `ScalingConfig.MaximumConcurrency`).
    pub concurrency: u32,
    /// At most this many of one run's calls at once (`ctx.concurrently`); default 1. The
    /// phase's timeout covers them all: six 15 s images fit a 60 s phase made six at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_calls: Option<u32>,
}

/// What stands between a phase and the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    #[default]
    None,
    /// The phase's result waits for an operator's approval (or rejection with feedback).
    Approval,
    /// The phase does not start while the production has unacknowledged warnings.
    AcknowledgeWarnings,
}

/// A definition that cannot be loaded; names the pipeline, the phase and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("pipeline definition {file}: {problem}")]
    Malformed { file: String, problem: String },
    #[error("pipeline {pipeline} v{version}: {problem}")]
    Invalid {
        pipeline: String,
        version: u32,
        problem: String,
    },
}

/// A name: 1-40 characters of a-z, 0-9, `-` and `_`, starting with a letter.
pub(crate) fn name_ok(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Definition {
    /// Parses a definition from its file's text.
    pub fn parse(file: &str, text: &str) -> Result<Self, DefinitionError> {
        let def: Definition =
            serde_json::from_str(text).map_err(|e| DefinitionError::Malformed {
                file: file.into(),
                problem: e.to_string(),
            })?;
        def.check()?;
        Ok(def)
    }

    pub(crate) fn invalid(&self, problem: impl Into<String>) -> DefinitionError {
        DefinitionError::Invalid {
            pipeline: self.name.clone(),
            version: self.version,
            problem: problem.into(),
        }
    }

    /// The checks that need no schema compiled.
    fn check(&self) -> Result<(), DefinitionError> {
        if !name_ok(&self.name) {
            return Err(self.invalid(format!(
                "name {:?} must be 1-40 characters of a-z, 0-9, - and _, starting with a letter",
                self.name
            )));
        }
        if self.version == 0 {
            return Err(self.invalid("version must be 1 or more"));
        }
        if self.phases.is_empty() {
            return Err(self.invalid("a pipeline needs at least one phase"));
        }
        let props = &self.input["properties"];
        let requires_account = self.input["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|v| v == "account"));
        if self.input["type"] != "object" || props["account"].is_null() || !requires_account {
            return Err(self.invalid(
                "input must be an object schema whose properties include a required \"account\"",
            ));
        }
        if !props["auto_approve"].is_null() && props["auto_approve"]["type"] != "boolean" {
            return Err(self.invalid("input.auto_approve, if declared, must be a boolean"));
        }
        for (field, list) in self.account_checks() {
            if crate::domain::access::AccountAccess::default()
                .list(&list)
                .is_none()
            {
                return Err(self.invalid(format!(
                    "input.{field}: x-account-allows names {list:?}; an account has \
                     repositories and bases"
                )));
            }
            if props[&field]["type"] != "string" {
                return Err(self.invalid(format!(
                    "input.{field}: x-account-allows is for a string field"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.phases {
            let earlier = seen.clone();
            let bad = |problem: String| Err(self.invalid(format!("phase {}: {problem}", p.name)));
            if !name_ok(&p.name) {
                return bad("the name must be 1-40 characters of a-z, 0-9, - and _".into());
            }
            if !seen.insert(p.name.as_str()) {
                return bad("declared twice".into());
            }
            if let Some(f) = p.function.as_ref().filter(|f| !name_ok(f)) {
                return bad(format!("function {f:?} is not a binary name"));
            }
            for read in p.reads.iter().flatten() {
                if !earlier.contains(read.as_str()) {
                    return bad(format!(
                        "reads {read:?}, which is not an earlier phase of this pipeline"
                    ));
                }
            }
            if let Some(n) = p.parallel_calls.filter(|n| !(1..=50).contains(n)) {
                return bad(format!("parallel_calls must be 1-50 (got {n})"));
            }
            if p.gate_required && p.gate != Gate::Approval {
                return bad("gate_required is for an approval gate".into());
            }
            if !(1..=100).contains(&p.max_tries) {
                return bad(format!("max_tries must be 1-100 (got {})", p.max_tries));
            }
            // Lambda's bounds.
            if !(1..=900).contains(&p.timeout_seconds) {
                return bad(format!(
                    "timeout_seconds must be 1-900 (got {})",
                    p.timeout_seconds
                ));
            }
            // SQS event sources' ScalingConfig.MaximumConcurrency bounds.
            if !(2..=1000).contains(&p.concurrency) {
                return bad(format!(
                    "concurrency must be 2-1000, the bounds of an SQS event source's \
                     MaximumConcurrency (got {})",
                    p.concurrency
                ));
            }
        }
        let acks = self
            .phases
            .iter()
            .filter(|p| p.gate == Gate::AcknowledgeWarnings)
            .count();
        if acks > 1 {
            return Err(self.invalid("at most one phase may wait for acknowledged warnings"));
        }
        Ok(())
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseDefinition> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The earlier phases whose outputs `phase` reads (all earlier ones, if it does not say).
    pub fn reads(&self, phase: &str) -> Vec<&str> {
        let Some(i) = self.phases.iter().position(|p| p.name == phase) else {
            return vec![];
        };
        match &self.phases[i].reads {
            Some(reads) => reads.iter().map(String::as_str).collect(),
            None => self.phases[..i].iter().map(|p| p.name.as_str()).collect(),
        }
    }

    /// A jump to phase `to` of `phases` (a production's, of this version), with outputs
    /// supplied for `supplied`: each `(skipped, reader)` where phase `reader` (the target
    /// or a later one) reads the output of `skipped`, which will have none.
    pub fn unmet_reads(
        &self,
        phases: &[crate::domain::PhaseState],
        to: usize,
        supplied: &[&str],
    ) -> Vec<(String, String)> {
        use crate::domain::PhaseStatus;
        let without: Vec<&str> = phases[..to.min(phases.len())]
            .iter()
            .filter(|ph| {
                let kept = matches!(ph.status, PhaseStatus::Succeeded | PhaseStatus::Skipped)
                    && ph.output.is_some();
                !kept && !supplied.contains(&ph.name.as_str())
            })
            .map(|ph| ph.name.as_str())
            .collect();
        let mut unmet = Vec::new();
        for reader in phases.iter().skip(to) {
            for read in self.reads(&reader.name) {
                if without.contains(&read) {
                    unmet.push((read.to_string(), reader.name.clone()));
                }
            }
        }
        unmet
    }

    pub fn phase_names(&self) -> Vec<&str> {
        self.phases.iter().map(|p| p.name.as_str()).collect()
    }

    /// Top-level input fields whose value the account must allow (`"x-account-allows":
    /// "<list>"`): (field, list), checked at start and again before each phase runs.
    pub fn account_checks(&self) -> Vec<(String, String)> {
        self.input["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .filter_map(|(k, s)| {
                        s["x-account-allows"]
                            .as_str()
                            .map(|l| (k.clone(), l.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The phases whose approval `auto_approve` cannot skip.
    pub fn required_gates(&self) -> Vec<String> {
        self.phases
            .iter()
            .filter(|p| p.gate_required)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Top-level input fields an operator may edit on a running production.
    pub fn editable(&self) -> Vec<String> {
        let mut v: Vec<String> = self.input["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, s)| s["x-editable"] == true)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        serde_json::json!({
            "name": "demo", "version": 1,
            "input": {"type": "object", "required": ["account"],
                      "properties": {"account": {"type": "string"}}},
            "phases": [{"name": "only", "function": "only", "output": {},
                        "max_tries": 3, "timeout_seconds": 30, "concurrency": 5}]
        })
    }

    fn parse(v: &Value) -> Result<Definition, DefinitionError> {
        Definition::parse("demo.json", &v.to_string())
    }

    #[test]
    fn a_minimal_definition_loads() {
        let d = parse(&minimal()).unwrap();
        assert_eq!(d.phase_names(), ["only"]);
        assert_eq!(d.phases[0].gate, Gate::None);
    }

    #[test]
    fn each_bad_definition_names_its_problem() {
        let cases: [(&str, Value, &str); 7] = [
            (
                "/phases/0/concurrency",
                1.into(),
                "concurrency must be 2-1000",
            ),
            ("/phases/0/timeout_seconds", 901.into(), "timeout_seconds"),
            ("/phases/0/max_tries", 0.into(), "max_tries"),
            (
                "/phases/0/function",
                "Bad Name".into(),
                "function \"Bad Name\"",
            ),
            (
                "/input/required",
                serde_json::json!([]),
                "required \"account\"",
            ),
            ("/version", 0.into(), "version must be 1"),
            ("/phases", serde_json::json!([]), "at least one phase"),
        ];
        for (pointer, value, expected) in cases {
            let mut v = minimal();
            *v.pointer_mut(pointer).unwrap() = value;
            let err = parse(&v).unwrap_err().to_string();
            assert!(err.contains(expected), "{pointer}: {err}");
            assert!(err.starts_with("pipeline demo v"), "{err}");
        }
        let mut v = minimal();
        v["phases"][0]["parallel_calls"] = 0.into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("parallel_calls must be 1-50 (got 0)"), "{err}");
        let mut v = minimal();
        v["phases"][0]["concurency"] = 3.into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("unknown field `concurency`"), "{err}");
        let mut v = minimal();
        let twice = v["phases"][0].clone();
        v["phases"].as_array_mut().unwrap().push(twice);
        assert!(
            parse(&v)
                .unwrap_err()
                .to_string()
                .contains("declared twice")
        );
    }

    fn three(reads_of_last: Option<Value>) -> Definition {
        let mut v = minimal();
        let ph = v["phases"][0].clone();
        let mut phases = vec![];
        for name in ["a", "b", "c"] {
            let mut p = ph.clone();
            p["name"] = name.into();
            p.as_object_mut().unwrap().remove("function");
            phases.push(p);
        }
        if let Some(r) = reads_of_last {
            phases[2]["reads"] = r;
        }
        v["phases"] = Value::Array(phases);
        parse(&v).unwrap()
    }

    #[test]
    fn a_phase_reads_what_it_lists_or_every_earlier_phase() {
        let d = three(Some(serde_json::json!(["a"])));
        assert_eq!(d.reads("c"), ["a"]);
        assert_eq!(d.reads("b"), ["a"], "unlisted: every earlier phase");
        assert!(d.reads("a").is_empty());
        let mut v = serde_json::to_value(&d).unwrap();
        v["phases"][1]["reads"] = serde_json::json!(["c"]);
        let err = parse(&v).unwrap_err().to_string();
        assert!(
            err.contains("phase b: reads \"c\", which is not an earlier phase"),
            "{err}"
        );
    }

    #[test]
    fn a_jump_leaves_unmet_only_the_skipped_outputs_a_later_phase_reads() {
        use crate::domain::{PhaseState, PhaseStatus};
        let phases = |a: PhaseStatus| {
            let mut ps: Vec<PhaseState> = ["a", "b", "c"]
                .iter()
                .map(|n| PhaseState::pending(*n))
                .collect();
            ps[0].status = a;
            if a == PhaseStatus::Succeeded {
                ps[0].output = Some("O#a#1".into());
            }
            ps
        };
        let pair = |s: &str, r: &str| (s.to_string(), r.to_string());
        // c reads a; a failed: a jump to c skips a and b, and only a is read.
        let d = three(Some(serde_json::json!(["a"])));
        assert_eq!(
            d.unmet_reads(&phases(PhaseStatus::Failed), 2, &[]),
            [pair("a", "c")]
        );
        assert!(
            d.unmet_reads(&phases(PhaseStatus::Failed), 2, &["a"])
                .is_empty()
        );
        assert!(
            d.unmet_reads(&phases(PhaseStatus::Succeeded), 2, &[])
                .is_empty(),
            "a's output is kept"
        );
        // c lists nothing: it reads a and b, both needed.
        let d = three(None);
        assert_eq!(
            d.unmet_reads(&phases(PhaseStatus::Failed), 2, &[]),
            [pair("a", "c"), pair("b", "c")]
        );
        // A jump to b: c runs again later and reads a, b; b runs, so only a is unmet.
        assert_eq!(
            d.unmet_reads(&phases(PhaseStatus::Failed), 1, &[]),
            [pair("a", "b"), pair("a", "c")]
        );
    }
}
