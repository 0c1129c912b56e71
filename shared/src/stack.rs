//! A stack's pipelines and their phase code, registered once. A team's pipeline is its own
//! crate: its definition files and its phases, handed to the engine as one
//! [`PipelineSpec`]. The composition crate (`pipelines/stack`) lists the specs a stack
//! runs; [`StackBuilder::build`] checks them as a whole (every phase of every definition
//! has code, one implementation per phase name, no name the stack keeps for itself), so a
//! pipeline that cannot run fails `cargo test`, not a deploy.
//!
//! ```text
//! pub fn spec() -> PipelineSpec {
//!     PipelineSpec::new()
//!         .definition("pipelines/summary/v1.json", include_str!("../v1.json"))
//!         .phase(Summarize)
//!         .phase(Headline)
//! }
//! ```

use std::any::TypeId;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pipeline::{Definition, DefinitionError, Pipelines};
use crate::runtime::watch::{PollSource, WatchCode, WatchKind};
use crate::runtime::{Phase, RunPhase};

/// Names the stack keeps for its own functions and queues: a phase may not take them.
/// (`SHEPHERD_HANDLER` picks a handler by name; a phase's queue is `<stack>-<phase>`.)
pub const RESERVED_NAMES: &[&str] = &[
    "sweeper",
    "scheduler",
    "audit-projector",
    "audit-projector-failures",
    "webhook-fanout",
    "webhook-fanout-failures",
    "webhook-deliver",
    "webhooks",
    "alarm-ingest",
    "alarm-ingest-failures",
    "alarms",
    "notifications",
    "api",
    "operators",
];

/// One pipeline as its crate hands it over: every version's definition (file name and
/// text, oldest first) and the code of its phases.
#[derive(Default)]
pub struct PipelineSpec {
    definitions: Vec<(String, String)>,
    phases: Vec<(Arc<dyn RunPhase>, TypeId, &'static str)>,
    watch_kinds: Vec<Arc<dyn PollSource>>,
}

impl PipelineSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// A version's definition: `file` names it in errors, `text` is its JSON (usually
    /// `include_str!("../v1.json")`). Parsed and checked when the stack is built.
    pub fn definition(mut self, file: &str, text: &str) -> Self {
        self.definitions.push((file.to_string(), text.to_string()));
        self
    }

    /// A phase's code; its `NAME` is the phase's name in the definitions.
    pub fn phase<P: Phase>(mut self, phase: P) -> Self {
        self.phases.push((
            Arc::new(phase),
            TypeId::of::<P>(),
            std::any::type_name::<P>(),
        ));
        self
    }

    /// A kind of source a watcher can poll (docs/arrivals.md): its `NAME` is what a
    /// watcher's `kind` says.
    pub fn watch_kind<K: WatchKind>(mut self, kind: K) -> Self {
        self.watch_kinds.push(Arc::new(kind));
        self
    }
}

/// Why a stack cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(
        "phase {phase} of pipeline {pipeline} v{version} has no code: add .phase(...) for it \
         to the pipeline's spec()"
    )]
    MissingPhase {
        pipeline: String,
        version: u32,
        phase: String,
    },
    #[error(
        "phase {phase} is implemented twice ({first} and {second}): a phase name is one \
         function and one queue in a stack"
    )]
    TwoImplementations {
        phase: String,
        first: String,
        second: String,
    },
    #[error("phase {phase} ({code}) is registered but no definition of the stack runs it")]
    UnusedPhase { phase: String, code: String },
    #[error("phase name {0:?} is the stack's own (a function or a queue of the platform)")]
    Reserved(String),
    #[error(
        "phase name {0:?} ends with -dlq: its queue would take the name of another phase's \
         dead-letter queue"
    )]
    DeadLetterName(String),
    #[error("the stack runs no pipeline: add one with .pipeline(...)")]
    Empty,
    #[error("{0}")]
    WatchKind(String),
}

/// Registers pipelines; the first one is the stack's default (what a start naming no
/// pipeline runs).
#[derive(Default)]
pub struct StackBuilder {
    specs: Vec<PipelineSpec>,
}

impl StackBuilder {
    pub fn pipeline(mut self, spec: PipelineSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// Checks the whole stack: definitions parse and pass their checks (a phase name runs
    /// one function in every pipeline), every phase has code, a phase name has one
    /// implementation, no code is left unused, and no phase takes a name the platform keeps.
    pub fn build(self) -> Result<Stack, StackError> {
        let mut definitions = Vec::new();
        let mut phases: BTreeMap<String, (Arc<dyn RunPhase>, TypeId, &'static str)> =
            BTreeMap::new();
        let mut kinds = Vec::new();
        let mut watch_code = BTreeMap::new();
        for spec in self.specs {
            for code in spec.watch_kinds {
                let declared = code.declared();
                watch_code.insert(declared.name.clone(), code);
                kinds.push(declared);
            }
            for (file, text) in &spec.definitions {
                definitions.push(Definition::parse(file, text)?);
            }
            for (code, id, type_name) in spec.phases {
                let name = code.name().to_string();
                match phases.get(&name) {
                    Some((_, first, first_name)) if *first != id => {
                        return Err(StackError::TwoImplementations {
                            phase: name,
                            first: first_name.to_string(),
                            second: type_name.to_string(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        phases.insert(name, (code, id, type_name));
                    }
                }
            }
        }
        if definitions.is_empty() {
            return Err(StackError::Empty);
        }
        let pipelines = Pipelines::from_definitions_lazy(definitions)?
            .with_watch_kinds(kinds)
            .map_err(StackError::WatchKind)?;
        for p in pipelines.all() {
            for ph in &p.definition.phases {
                if !phases.contains_key(&ph.name) {
                    return Err(StackError::MissingPhase {
                        pipeline: p.name().to_string(),
                        version: p.version(),
                        phase: ph.name.clone(),
                    });
                }
            }
        }
        let used = pipelines.phase_names();
        for (name, (_, _, code)) in &phases {
            if !used.contains(&name.as_str()) {
                return Err(StackError::UnusedPhase {
                    phase: name.clone(),
                    code: code.to_string(),
                });
            }
            check_phase_name(name)?;
        }
        Ok(Stack {
            pipelines: Arc::new(pipelines),
            phases: phases
                .into_iter()
                .map(|(name, (code, _, _))| (name, code))
                .collect(),
            watch_code: Arc::new(watch_code),
        })
    }
}

/// A phase's name becomes its queue's (`<stack>-<phase>`) and picks its handler.
fn check_phase_name(name: &str) -> Result<(), StackError> {
    if RESERVED_NAMES.contains(&name) {
        return Err(StackError::Reserved(name.to_string()));
    }
    if name.ends_with("-dlq") {
        return Err(StackError::DeadLetterName(name.to_string()));
    }
    Ok(())
}

/// What a stack runs: its pipelines (every version of each) and each phase's code.
#[derive(Clone)]
pub struct Stack {
    pipelines: Arc<Pipelines>,
    phases: BTreeMap<String, Arc<dyn RunPhase>>,
    watch_code: WatchCode,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("pipelines", &self.pipelines.names())
            .field("phases", &self.phases.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    pub fn pipelines(&self) -> &Arc<Pipelines> {
        &self.pipelines
    }

    /// The code of the phase named `name`.
    pub fn phase(&self, name: &str) -> Option<Arc<dyn RunPhase>> {
        self.phases.get(name).cloned()
    }

    /// The code of the watcher kinds the stack's crates add, by name (the scheduler polls
    /// with it).
    pub fn watch_code(&self) -> WatchCode {
        self.watch_code.clone()
    }

    /// The same phase code running other definitions (a test's fixture versions, or what a
    /// deploy of other definition files would run); every phase they name needs code here.
    pub fn with_pipelines(&self, pipelines: Arc<Pipelines>) -> Result<Stack, StackError> {
        for p in pipelines.all() {
            for ph in &p.definition.phases {
                if !self.phases.contains_key(&ph.name) {
                    return Err(StackError::MissingPhase {
                        pipeline: p.name().to_string(),
                        version: p.version(),
                        phase: ph.name.clone(),
                    });
                }
            }
        }
        Ok(Stack {
            pipelines,
            phases: self.phases.clone(),
            watch_code: self.watch_code.clone(),
        })
    }

    /// Compiles every input and output contract now (a unit test of the composition crate
    /// calls it, so a schema that is not one fails `cargo test`; functions compile lazily).
    pub fn check_contracts(&self) -> Result<(), StackError> {
        Ok(self.pipelines.compile_all()?)
    }

    /// Every phase name of every pipeline version (each one function and one queue).
    pub fn phase_names(&self) -> Vec<&str> {
        self.pipelines.phase_names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StepError;
    use crate::runtime::{PhaseContext, PhaseOutput};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Out;
    impl PhaseOutput for Out {}

    macro_rules! phase {
        ($ty:ident, $name:literal) => {
            struct $ty;
            impl Phase for $ty {
                const NAME: &'static str = $name;
                type Output = Out;
                async fn run(&self, _: &PhaseContext) -> Result<Out, StepError> {
                    Ok(Out)
                }
            }
        };
    }
    phase!(A, "a");
    phase!(B, "b");
    phase!(OtherA, "a");
    phase!(Sweeper, "sweeper");
    phase!(Dlq, "x-dlq");

    fn definition(name: &str, phases: &[&str]) -> String {
        serde_json::json!({
            "name": name, "version": 1,
            "input": {"type": "object", "required": ["account"],
                      "properties": {"account": {"type": "string"}}},
            "phases": phases.iter().map(|p| serde_json::json!({
                "name": p, "output": {}, "max_tries": 3, "timeout_seconds": 30,
                "concurrency": 5})).collect::<Vec<_>>()
        })
        .to_string()
    }

    fn spec(name: &str, phases: &[&str]) -> PipelineSpec {
        PipelineSpec::new().definition(&format!("{name}/v1.json"), &definition(name, phases))
    }

    #[test]
    fn a_stack_holds_each_phase_once_and_its_first_pipeline_is_the_default() {
        let stack = Stack::builder()
            .pipeline(spec("one", &["a", "b"]).phase(A).phase(B))
            .pipeline(spec("two", &["a"]).phase(A))
            .build()
            .unwrap();
        assert_eq!(stack.phase_names(), ["a", "b"]);
        assert_eq!(stack.phase("b").unwrap().name(), "b");
        assert!(stack.phase("c").is_none());
        assert_eq!(stack.pipelines().default_name(), "one");
    }

    #[test]
    fn a_stack_that_cannot_run_names_why() {
        let err = |b: StackBuilder| b.build().unwrap_err().to_string();
        assert_eq!(
            err(Stack::builder().pipeline(spec("one", &["a", "b"]).phase(A))),
            "phase b of pipeline one v1 has no code: add .phase(...) for it to the pipeline's spec()"
        );
        assert!(
            err(Stack::builder()
                .pipeline(spec("one", &["a"]).phase(A))
                .pipeline(spec("two", &["a"]).phase(OtherA)))
            .starts_with("phase a is implemented twice"),
        );
        assert!(
            err(Stack::builder().pipeline(spec("one", &["a"]).phase(A).phase(B)))
                .starts_with("phase b (")
        );
        assert_eq!(
            err(Stack::builder().pipeline(spec("one", &["sweeper"]).phase(Sweeper))),
            "phase name \"sweeper\" is the stack's own (a function or a queue of the platform)"
        );
        assert!(
            err(Stack::builder().pipeline(spec("one", &["x-dlq"]).phase(Dlq)))
                .contains("ends with -dlq")
        );
        assert_eq!(
            err(Stack::builder()),
            "the stack runs no pipeline: add one with .pipeline(...)"
        );
        assert!(
            err(Stack::builder().pipeline(PipelineSpec::new().definition("bad.json", "{")))
                .starts_with("pipeline definition bad.json:")
        );
    }

    struct Kind<const N: usize>;
    impl<const N: usize> WatchKind for Kind<N> {
        const NAME: &'static str = ["pages", "feed", "pages"][N];
        const ABOUT: &'static str = "test";
        fn params_schema(&self) -> serde_json::Value {
            serde_json::json!({"type": "object"})
        }
        fn item_schemas(&self) -> BTreeMap<String, serde_json::Value> {
            BTreeMap::from([("page".to_string(), serde_json::json!({"type": "object"}))])
        }
        async fn poll(
            &self,
            _: &crate::runtime::watch::WatchContext<'_>,
        ) -> Result<crate::pipeline::watch::Poll, String> {
            Ok(crate::pipeline::watch::Poll::Unchanged)
        }
    }

    #[test]
    fn a_watcher_kind_is_registered_with_its_pipeline_and_checked_with_the_stack() {
        let stack = Stack::builder()
            .pipeline(spec("one", &["a"]).phase(A).watch_kind(Kind::<0>))
            .build()
            .unwrap();
        let k = stack.pipelines().watch_kind("pages").unwrap();
        assert_eq!(k.items.keys().collect::<Vec<_>>(), ["page"]);
        assert!(stack.watch_code().contains_key("pages"));
        assert_eq!(
            stack.pipelines().watch_kind("nope").unwrap_err(),
            "unknown watcher kind \"nope\": this stack has feed, github_issues, pages"
        );
        let err = |b: StackBuilder| b.build().unwrap_err().to_string();
        assert!(
            err(Stack::builder().pipeline(spec("one", &["a"]).phase(A).watch_kind(Kind::<1>)))
                .contains("is the engine's own")
        );
        assert!(
            err(Stack::builder()
                .pipeline(spec("one", &["a"]).phase(A).watch_kind(Kind::<0>))
                .pipeline(spec("two", &["b"]).phase(B).watch_kind(Kind::<2>)))
            .contains("watcher kind pages is added twice")
        );
    }
}
