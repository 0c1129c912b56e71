use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use jsonschema::Validator;
use serde_json::Value;

use super::contract::{self, Input, InputError};
use super::definition::{Definition, DefinitionError, Gate};
use super::watch::DeclaredKind;
use crate::domain::FieldChange;

/// A contract compiled when first used: a function compiles only what it checks (a phase
/// its own output's schema, the API the inputs'), and none of it before its first request.
type Lazy = OnceLock<Result<Validator, String>>;

/// One pipeline version, its contracts compiled on first use.
pub struct Pipeline {
    pub definition: Definition,
    input: Lazy,
    outputs: BTreeMap<String, Lazy>,
    editable: Vec<String>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pipeline({} v{})", self.name(), self.version())
    }
}

impl Pipeline {
    /// The pipeline of a checked definition, its schemas not compiled yet.
    fn new(definition: Definition) -> Result<Self, DefinitionError> {
        let editable = definition.editable();
        if editable.iter().any(|f| f == "account") {
            return Err(definition.invalid("input.account cannot be x-editable (it keys tenancy)"));
        }
        Ok(Self {
            input: Lazy::new(),
            outputs: definition
                .phases
                .iter()
                .map(|p| (p.name.clone(), Lazy::new()))
                .collect(),
            editable,
            definition,
        })
    }

    /// Compiles every schema now; a schema that is not one is named.
    pub fn compile(definition: Definition) -> Result<Self, DefinitionError> {
        let p = Self::new(definition)?;
        p.input_contract()
            .map_err(|e| p.definition.invalid(format!("input schema: {e}")))?;
        for ph in &p.definition.phases {
            p.output_contract(&ph.name).map_err(|e| {
                p.definition
                    .invalid(format!("phase {} output schema: {e}", ph.name))
            })?;
        }
        Ok(p)
    }

    fn input_contract(&self) -> Result<&Validator, String> {
        self.input
            .get_or_init(|| contract::compile(&self.definition.input))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A phase the pipeline lacks has no contract, which is an error.
    fn output_contract(&self, phase: &str) -> Result<&Validator, String> {
        let (Some(lazy), Some(def)) = (self.outputs.get(phase), self.definition.phase(phase))
        else {
            return Err(format!(
                "phase {phase} is not in {} v{}",
                self.name(),
                self.version()
            ));
        };
        lazy.get_or_init(|| contract::compile(&def.output))
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }

    pub fn version(&self) -> u32 {
        self.definition.version
    }

    /// A production's input from its JSON text: defaults filled in, checked against the
    /// pipeline's schema.
    pub fn parse_input(&self, text: &str) -> Result<Input, InputError> {
        let v = self.input_contract().map_err(InputError::Malformed)?;
        contract::parse_input(&self.definition.input, v, text)
    }

    /// The input of a running production with an operator's `changes`, checked again.
    pub fn edited(&self, current: &Value, changes: &[FieldChange]) -> Result<Input, InputError> {
        let v = self.input_contract().map_err(InputError::Malformed)?;
        contract::edited(&self.definition.input, v, &self.editable, current, changes)
    }

    pub fn editable(&self) -> &[String] {
        &self.editable
    }

    /// Checks a phase's output against its contract.
    pub fn check_output(&self, phase: &str, output: &Value) -> Result<(), String> {
        contract::check_output(self.output_contract(phase)?, output)
    }

    /// Phases whose result waits for approval, and the one that waits for acknowledged
    /// warnings.
    pub fn gates(&self) -> (Vec<String>, Option<String>) {
        let of = |g: Gate| {
            self.definition
                .phases
                .iter()
                .filter(move |p| p.gate == g)
                .map(|p| p.name.clone())
        };
        (
            of(Gate::Approval).collect(),
            of(Gate::AcknowledgeWarnings).next(),
        )
    }
}

/// What a stack publishes of its pipelines (the template's generated `PipelinesParameter`):
/// the default pipeline and the parameter holding each version's definition. Operators'
/// tools read it instead of compiling the definitions in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub default: String,
    /// SSM parameter names, one per definition version, each holding its JSON.
    pub definitions: Vec<String>,
    /// SSM parameter names, one per watcher kind the stack's crates add, each holding its
    /// declaration (`pipeline::watch::DeclaredKind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_kinds: Vec<String>,
}

/// Every pipeline a stack runs, every version of each. The first pipeline listed is the
/// stack's default (what a start that names none gets).
#[derive(Debug)]
pub struct Pipelines {
    by_name: BTreeMap<String, BTreeMap<u32, Arc<Pipeline>>>,
    default: String,
    /// The watcher kinds the stack's crates add, as declared (their code is the stack's).
    watch_kinds: BTreeMap<String, DeclaredKind>,
}

impl Pipelines {
    /// A registry of `definitions` (the first one's pipeline the default), checked as a
    /// whole: every schema compiles, one version once, and a phase name runs one function
    /// in every pipeline.
    pub fn from_definitions(definitions: Vec<Definition>) -> Result<Self, DefinitionError> {
        Self::assemble(definitions, Pipeline::compile)
    }

    /// As [`Pipelines::from_definitions`], each schema compiled when first used: what a
    /// function starts with, since compiling every contract at start-up tripled its cold
    /// start. [`Pipelines::compile_all`] checks them all (a unit test of the stack does).
    pub fn from_definitions_lazy(definitions: Vec<Definition>) -> Result<Self, DefinitionError> {
        Self::assemble(definitions, Pipeline::new)
    }

    /// The pipelines a stack published: `definitions` are (parameter name, JSON text) in
    /// the index's order; the index's default pipeline becomes the default.
    pub fn from_published(
        published: &Published,
        definitions: Vec<(String, String)>,
    ) -> Result<Self, DefinitionError> {
        let mut parsed = definitions
            .iter()
            .map(|(file, text)| Definition::parse(file, text))
            .collect::<Result<Vec<_>, _>>()?;
        if !parsed.iter().any(|d| d.name == published.default) {
            return Err(DefinitionError::Malformed {
                file: "the published pipelines".into(),
                problem: format!(
                    "the default pipeline {:?} has no definition",
                    published.default
                ),
            });
        }
        // The default first: `assemble` takes the first definition's pipeline as default.
        parsed.sort_by_key(|d| d.name != published.default);
        Self::assemble(parsed, Pipeline::new)
    }

    /// Compiles every schema of every version now; a schema that is not one is named.
    pub fn compile_all(&self) -> Result<(), DefinitionError> {
        for p in self.all() {
            Pipeline::compile(p.definition.clone())?;
        }
        Ok(())
    }

    fn assemble(
        definitions: Vec<Definition>,
        make: fn(Definition) -> Result<Pipeline, DefinitionError>,
    ) -> Result<Self, DefinitionError> {
        let default = definitions.first().map(|d| d.name.clone()).ok_or_else(|| {
            DefinitionError::Malformed {
                file: "pipelines/".into(),
                problem: "no pipeline is defined".into(),
            }
        })?;
        let mut functions: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
        let mut by_name: BTreeMap<String, BTreeMap<u32, Arc<Pipeline>>> = BTreeMap::new();
        for d in definitions {
            for p in &d.phases {
                let here = format!("{} v{}", d.name, d.version);
                match functions.get(&p.name) {
                    Some((Some(f), there)) if p.function.as_ref().is_some_and(|mine| mine != f) => {
                        return Err(d.invalid(format!(
                            "phase {} runs function {} but in {there} it runs {f}: a phase \
                             name is one queue and one function in a stack",
                            p.name,
                            p.function.as_deref().unwrap_or_default()
                        )));
                    }
                    Some(_) => {}
                    None => {
                        functions.insert(p.name.clone(), (p.function.clone(), here));
                    }
                }
            }
            let versions = by_name.entry(d.name.clone()).or_default();
            if versions.contains_key(&d.version) {
                return Err(d.invalid("defined twice"));
            }
            versions.insert(d.version, Arc::new(make(d)?));
        }
        Ok(Self {
            by_name,
            default,
            watch_kinds: BTreeMap::new(),
        })
    }

    /// The same pipelines with the watcher kinds the stack's crates add, each checked
    /// (its name a kind's and its own, its schemas compiling).
    pub fn with_watch_kinds(mut self, kinds: Vec<DeclaredKind>) -> Result<Self, String> {
        for k in kinds {
            k.check()?;
            let name = k.name.clone();
            if self.watch_kinds.insert(name.clone(), k).is_some() {
                return Err(format!(
                    "watcher kind {name} is added twice: a kind's name is one kind in a stack"
                ));
            }
        }
        Ok(self)
    }

    /// A watcher kind a pipeline crate added; the error lists every kind the stack has.
    pub fn watch_kind(&self, name: &str) -> Result<&DeclaredKind, String> {
        self.watch_kinds.get(name).ok_or_else(|| {
            let mut all: Vec<&str> = crate::pipeline::watch::BUILT_IN_KINDS.to_vec();
            all.extend(self.watch_kinds.keys().map(String::as_str));
            format!(
                "unknown watcher kind {name:?}: this stack has {}",
                all.join(", ")
            )
        })
    }

    /// The watcher kinds the stack's crates add, by name.
    pub fn watch_kinds(&self) -> impl Iterator<Item = &DeclaredKind> {
        self.watch_kinds.values()
    }

    /// The version new productions of `name` start on (the highest); `None` for the
    /// stack's default pipeline.
    pub fn latest(&self, name: Option<&str>) -> Result<&Arc<Pipeline>, String> {
        let name = name.unwrap_or(&self.default);
        self.by_name
            .get(name)
            .and_then(|v| v.values().next_back())
            .ok_or_else(|| {
                format!(
                    "unknown pipeline {name:?}: this stack runs {}",
                    self.names().join(", ")
                )
            })
    }

    /// The version a production is pinned to.
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<Pipeline>> {
        self.by_name.get(name)?.get(&version)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every version of every pipeline, by name then version.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pipeline>> {
        self.by_name.values().flat_map(|v| v.values())
    }

    /// Every phase name any version has (each is one function and one queue).
    pub fn phase_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .all()
            .flat_map(|p| p.definition.phases.iter().map(|ph| ph.name.as_str()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The definition of `phase` in the production's pinned version.
    pub fn phase(
        &self,
        pipeline: &str,
        version: u32,
        phase: &str,
    ) -> Option<&super::PhaseDefinition> {
        self.get(pipeline, version)?.definition.phase(phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(version: u32, phases: &[(&str, &str)]) -> Definition {
        let phases: Vec<Value> = phases
            .iter()
            .map(|(n, f)| {
                serde_json::json!({"name": n, "function": f, "output": {}, "max_tries": 3,
                    "timeout_seconds": 30, "concurrency": 5})
            })
            .collect();
        Definition::parse(
            "t.json",
            &serde_json::json!({"name": "t", "version": version,
                "input": {"type": "object", "required": ["account"],
                          "properties": {"account": {"type": "string"}}},
                "phases": phases})
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn versions_are_kept_side_by_side_and_a_phase_has_one_function() {
        let p = Pipelines::from_definitions(vec![
            def(1, &[("a", "a")]),
            def(2, &[("a", "a"), ("b", "b")]),
        ])
        .unwrap();
        assert_eq!(p.latest(Some("t")).unwrap().version(), 2);
        assert_eq!(p.get("t", 1).unwrap().definition.phase_names(), ["a"]);
        assert_eq!(p.phase_names(), ["a", "b"]);
        let err = Pipelines::from_definitions(vec![def(1, &[("a", "a")]), def(2, &[("a", "x")])])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("phase a runs function x but in t v1 it runs a")
        );
        let err = Pipelines::from_definitions(vec![def(1, &[("a", "a")]), def(1, &[("a", "a")])])
            .unwrap_err();
        assert!(err.to_string().contains("defined twice"));
    }
}
