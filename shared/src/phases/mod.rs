//! The sample content pipeline: brief -> script -> assets -> voice -> publish.
//! Each phase is one Lambda function; this module holds what each one does.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::domain::{Brief, Production};
use crate::tools::{StepError, Tools};

mod content;

pub use content::{Assets, BriefPhase, Publish, Script, Voice};

/// The pipeline's phases, in order.
pub const CONTENT_PIPELINE: [&str; 5] = ["brief", "script", "assets", "voice", "publish"];
pub const CONTENT_PIPELINE_NAME: &str = "content";

/// What one phase does with its inputs. Returns the phase's output (stored apart from state).
pub trait Phase: Send + Sync {
    fn name(&self) -> &'static str;
    fn run<'a>(
        &'a self,
        ctx: &'a PhaseContext,
    ) -> BoxFuture<'a, Result<serde_json::Value, StepError>>;
}

/// A phase run's inputs: the production, its brief, earlier phases' outputs, its tools.
pub struct PhaseContext {
    pub production: Production,
    pub brief: Brief,
    /// Outputs of the phases that succeeded before this one, by phase name.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// An operator's feedback from rejecting this phase's last result.
    pub feedback: Option<String>,
    pub tools: Tools,
}

impl PhaseContext {
    /// The operator's feedback as a line for a prompt, or nothing.
    pub fn feedback_line(&self) -> String {
        self.feedback
            .as_ref()
            .map(|f| format!("\nReviewer feedback on the previous version: {f}"))
            .unwrap_or_default()
    }
}

impl PhaseContext {
    /// An earlier phase's output in its typed shape.
    pub fn input<T: DeserializeOwned>(&self, phase: &str) -> Result<T, StepError> {
        let value = self.inputs.get(phase).ok_or_else(|| {
            StepError::permanent(
                "input_missing",
                format!("the output of phase {phase} is missing"),
            )
        })?;
        serde_json::from_value(value.clone()).map_err(|e| {
            StepError::permanent("input_invalid", format!("the output of phase {phase}: {e}"))
        })
    }
}

/// The warnings a phase's output raises: its top-level `warnings` array of strings (at most
/// 20 kept, each at most 200 characters: they travel in the production's state).
pub fn output_warnings(output: &serde_json::Value) -> Vec<String> {
    output["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .take(20)
        .map(|w| w.chars().take(200).collect())
        .collect()
}

/// The phase implementation for a name, for the local runtime and tests.
pub fn by_name(name: &str) -> Option<Box<dyn Phase>> {
    Some(match name {
        "brief" => Box::new(BriefPhase),
        "script" => Box::new(Script),
        "assets" => Box::new(Assets),
        "voice" => Box::new(Voice),
        "publish" => Box::new(Publish),
        _ => return None,
    })
}
