//! Execution: builds a phase run's context (brief, earlier outputs, tools bound to the
//! run), runs the phase with a panic caught and its time bounded, and collects the audit
//! events of its tool calls for the commit.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tracing::error;

use super::{PhaseContext, PhaseResult, RunPhase};
use crate::domain::{AuditEvent, Classify, ErrorCode, Millis, PhaseStatus, Production, StepError};
use crate::ports::{Outputs, Productions};
use crate::tools::{Run, ToolDeps, Tools};

/// A phase run's result and the audit events of its tool calls.
pub struct Ran {
    pub result: Result<PhaseResult, StepError>,
    pub events: Vec<AuditEvent>,
}

/// Runs one phase (built in `wiring`).
pub struct Executor {
    pub phase: Arc<dyn RunPhase>,
    pub productions: Arc<dyn Productions>,
    pub outputs: Arc<dyn Outputs>,
    pub tools: ToolDeps,
    /// The function's timeout: the run is stopped a little before it.
    pub timeout: Duration,
}

impl Executor {
    /// Runs the phase on the claimed production.
    pub async fn run(&self, p: &Production) -> Ran {
        let ctx = match self.context(p).await {
            Ok(ctx) => ctx,
            Err(e) => {
                return Ran {
                    result: Err(e),
                    events: vec![],
                };
            }
        };
        let result = self.bounded(p, &ctx).await.map(|mut r| {
            r.artifacts = ctx.tools.take_artifacts();
            r
        });
        Ran {
            result,
            events: ctx.tools.take_events(),
        }
    }

    async fn bounded(&self, p: &Production, ctx: &PhaseContext) -> Result<PhaseResult, StepError> {
        let budget = self
            .timeout
            .saturating_sub(Duration::from_secs(2))
            .max(Duration::from_secs(1));
        let run = AssertUnwindSafe(self.phase.run(ctx)).catch_unwind();
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                error!(production = %p.id, phase = self.phase.name(), panic = %what, "phase panicked");
                Err(StepError::unexpected(
                    ErrorCode::StepUnexpectedError,
                    format!("the phase panicked: {what}"),
                ))
            }
            Err(_) => Err(StepError::retryable(
                ErrorCode::PhaseTimeout,
                format!("the phase ran longer than {} s", budget.as_secs()),
            )),
        }
    }

    async fn context(&self, p: &Production) -> Result<PhaseContext, StepError> {
        let name = self.phase.name();
        let brief = self
            .productions
            .brief(&p.id)
            .await
            .retryable(ErrorCode::StoreUnavailable)?
            .ok_or_else(|| {
                StepError::permanent(
                    ErrorCode::InputMissing,
                    format!("production {} has no brief", p.id),
                )
            })?;
        let mut inputs = BTreeMap::new();
        for ph in p.phases.iter().take_while(|ph| ph.name != name) {
            if let (PhaseStatus::Succeeded, Some(key)) = (ph.status, &ph.output)
                && let Some(out) = self
                    .outputs
                    .get(&p.id, key)
                    .await
                    .retryable(ErrorCode::StoreUnavailable)?
            {
                inputs.insert(ph.name.clone(), out.body);
            }
        }
        let own = p.phase(name);
        let tools = Tools::new(
            &self.tools,
            Run {
                production_id: &p.id,
                phase: name,
                revision: p.revision,
                attempt: own.map(|ph| ph.attempt).unwrap_or(1),
                lease_until: own.and_then(|ph| ph.lease_until).unwrap_or_default(),
            },
        );
        Ok(PhaseContext {
            feedback: own.and_then(|ph| ph.feedback.clone()),
            production: p.clone(),
            brief,
            inputs,
            tools,
        })
    }
}

/// How long until `lease_until`, in whole seconds (at least 1, at most SQS's 12 hours).
pub(super) fn until_lease(lease_until: Millis, now: Millis) -> Duration {
    let secs = ((lease_until - now) / 1000 + 1).clamp(1, 43_200);
    Duration::from_secs(secs as u64)
}
