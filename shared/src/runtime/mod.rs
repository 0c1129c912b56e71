//! The phase runtime: turns at-least-once SQS delivery into effectively-once phases.
//!
//! | job | file |
//! |---|---|
//! | the Lambda/SQS edge: event in, batch response out, visibility, quarantine, batched hand-offs | `edge.rs` |
//! | the phase worker: claim -> delivery policy -> execute -> commit -> hand-off, as one story | `worker.rs` |
//! | execution: the phase's context, a panic caught, its time bounded | `execute.rs` |
//! | a watcher kind a pipeline crate adds: its declaration and its poll | `watch.rs` |
//!
//! What the worker does with a message or an error is decided by the domain
//! (`domain::delivery`); the write goes through `write::Transitioner`. Adapters are built in
//! one place, `wiring`.

mod edge;
mod execute;
mod stats;
pub mod watch;
mod worker;

use std::collections::BTreeMap;
use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use edge::{Delivered, PhaseFunction};
pub use execute::Executor;
pub use stats::Stats;
pub use worker::{Verdict, Worker};

use crate::domain::artifacts::Artifact;
use crate::domain::{ErrorCode, Production, StepError};
pub use crate::protocol::{MessageError, PhaseMessage};
use crate::tools::Tools;

/// What a phase produced beyond its output: warning flags (`scene 2: copyright_risk`) that
/// let the production proceed but hold its publishing phase until acknowledged.
pub trait PhaseOutput {
    fn warnings(&self) -> Vec<String> {
        vec![]
    }
}

/// One phase of a pipeline: its name, its typed output, and what it does.
pub trait Phase: Send + Sync + 'static {
    const NAME: &'static str;
    type Output: Serialize + DeserializeOwned + PhaseOutput + Send;
    fn run(
        &self,
        ctx: &PhaseContext,
    ) -> impl Future<Output = Result<Self::Output, StepError>> + Send;
}

/// A phase's run, as the runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseResult {
    pub output: serde_json::Value,
    /// At most 20, each at most 200 characters: they travel in the production's state.
    pub warnings: Vec<String>,
    /// What the run's tool calls stored in the artifact bucket (set by the executor).
    pub artifacts: Vec<Artifact>,
}

/// A phase with its output type erased (what a function holds).
pub trait RunPhase: Send + Sync {
    fn name(&self) -> &'static str;
    fn run<'a>(&'a self, ctx: &'a PhaseContext) -> BoxFuture<'a, Result<PhaseResult, StepError>>;
}

impl<P: Phase> RunPhase for P {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn run<'a>(&'a self, ctx: &'a PhaseContext) -> BoxFuture<'a, Result<PhaseResult, StepError>> {
        async move {
            let out = Phase::run(self, ctx).await?;
            let warnings = out
                .warnings()
                .into_iter()
                .take(20)
                .map(|w| crate::domain::redact::excerpt(&w, 200))
                .collect();
            Ok(PhaseResult {
                output: serde_json::to_value(&out).expect("output serialises"),
                warnings,
                artifacts: vec![],
            })
        }
        .boxed()
    }
}

/// A phase run's inputs: the production, its input, earlier phases' outputs, its tools.
pub struct PhaseContext {
    pub production: Production,
    /// The production's input, as its pipeline's schema accepted it.
    pub input: serde_json::Value,
    /// Outputs of the earlier phases this one reads (its definition's `reads`), by name.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The phases it may read (its definition's `reads`, or every earlier one).
    pub reads: Vec<String>,
    /// How many of its calls may run at once (its definition's `parallel_calls`).
    pub parallel_calls: usize,
    /// An operator's feedback from rejecting this phase's last result.
    pub feedback: Option<String>,
    pub tools: Tools,
    /// Where the account's access is read from, once, when the phase first asks.
    pub(crate) accounts: std::sync::Arc<dyn crate::ports::Accounts>,
    pub(crate) access: tokio::sync::OnceCell<crate::domain::access::AccountAccess>,
}

impl PhaseContext {
    /// What the production's account may reach outside the stack (its repositories, base
    /// branches, branch prefix, own token), read once per run.
    pub async fn access(&self) -> Result<&crate::domain::access::AccountAccess, StepError> {
        self.access
            .get_or_try_init(|| async {
                self.accounts
                    .access(&self.production.account)
                    .await
                    .map_err(|e| {
                        StepError::retryable(
                            ErrorCode::StoreUnavailable,
                            format!("reading account {}'s access: {e}", self.production.account),
                        )
                    })
            })
            .await
    }

    /// Refuses (permanently, `not_allowed`) a `value` the account's list `list` does not
    /// allow: checked by a phase before any request outside the stack.
    pub async fn allowed(&self, field: &str, list: &str, value: &str) -> Result<(), StepError> {
        let access = self.access().await?;
        crate::domain::access::check_input(
            access,
            &self.production.account,
            &[(field.to_string(), list.to_string())],
            &serde_json::json!({ field: value }),
        )
        .map_err(|m| StepError::permanent(ErrorCode::NotAllowed, m))
    }

    /// `each` over `items`, at most the definition's `parallel_calls` at a time; the
    /// results in the items' order. Each call is still recorded on its own (a retry makes
    /// only the ones not finished), and the phase's timeout covers them all.
    pub async fn concurrently<T, R, F, Fut>(
        &self,
        items: impl IntoIterator<Item = T>,
        each: F,
    ) -> Vec<R>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = R>,
    {
        use futures::StreamExt as _;
        futures::stream::iter(items)
            .map(each)
            .buffered(self.parallel_calls.max(1))
            .collect()
            .await
    }

    /// The operator's feedback as a line for a prompt, or nothing.
    pub fn feedback_line(&self) -> String {
        self.feedback
            .as_ref()
            .map(|f| format!("\nReviewer feedback on the previous version: {f}"))
            .unwrap_or_default()
    }

    /// The production's input in the phase's own type (the schema already checked it; a
    /// type that disagrees with the schema is the phase's bug, and permanent).
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_value(self.input.clone()).map_err(|e| {
            StepError::permanent(
                ErrorCode::InputInvalid,
                format!("the production's input: {e}"),
            )
        })
    }

    /// An earlier phase's output, in its type.
    pub fn output<P: Phase>(&self) -> Result<P::Output, StepError> {
        if !self.reads.iter().any(|r| r == P::NAME) {
            return Err(StepError::permanent(
                ErrorCode::InputMissing,
                format!(
                    "this phase reads the output of {}, which its definition's reads does not \
                     list (it lists: {})",
                    P::NAME,
                    self.reads.join(", ")
                ),
            ));
        }
        let value = self.inputs.get(P::NAME).ok_or_else(|| {
            StepError::permanent(
                ErrorCode::InputMissing,
                format!("the output of phase {} is missing", P::NAME),
            )
        })?;
        serde_json::from_value(value.clone()).map_err(|e| {
            StepError::permanent(
                ErrorCode::InputInvalid,
                format!("the output of phase {}: {e}", P::NAME),
            )
        })
    }
}
