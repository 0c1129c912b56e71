//! Execution: builds a phase run's context (input, earlier outputs, tools bound to the
//! run), runs the phase with a panic caught and its time bounded, checks its output against
//! the contract of the pipeline version the production is pinned to, and collects the audit
//! events of its tool calls for the commit.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tracing::error;

use super::{PhaseContext, PhaseResult, RunPhase};
use crate::domain::{AuditEvent, Classify, ErrorCode, Millis, PhaseStatus, Production, StepError};
use crate::pipeline::Pipelines;
use crate::ports::{Accounts, Outputs, Productions};
use crate::tools::{Run, ToolDeps, Tools};

/// A phase run's result and the audit events of its tool calls.
pub struct Ran {
    pub result: Result<PhaseResult, StepError>,
    pub events: Vec<AuditEvent>,
    /// The external job the run handed its work to (its result: `awaiting_callback`).
    pub wait: Option<crate::domain::Wait>,
}

/// Runs one phase (built in `wiring`).
pub struct Executor {
    pub phase: Arc<dyn RunPhase>,
    pub productions: Arc<dyn Productions>,
    pub outputs: Arc<dyn Outputs>,
    /// Accounts' access: checked before a phase runs where the definition marks an input
    /// field `x-account-allows`, and readable by the phase.
    pub accounts: Arc<dyn Accounts>,
    pub tools: ToolDeps,
    /// The function's timeout: the run is stopped a little before it.
    pub timeout: Duration,
    /// The definitions productions are pinned to (the output contracts).
    pub pipelines: Arc<Pipelines>,
}

impl Executor {
    /// Runs the phase on the claimed production.
    pub async fn run(&self, p: &Production) -> Ran {
        let pipeline = match self.pipelines.get(&p.pipeline, p.pipeline_version) {
            Some(pl) => pl.clone(),
            None => {
                // A deploy removed the version while productions ran on it: nothing this
                // function runs could keep the production on its definition.
                return Ran {
                    result: Err(StepError::permanent(
                        ErrorCode::PipelineNotDeployed,
                        format!(
                            "pipeline {} v{} is not deployed (this function has {}); deploy \
                             its definition again to finish the production",
                            p.pipeline,
                            p.pipeline_version,
                            self.pipelines
                                .all()
                                .map(|pl| format!("{} v{}", pl.name(), pl.version()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                    events: vec![],
                    wait: None,
                };
            }
        };
        let ctx = match self.context(p, &pipeline).await {
            Ok(ctx) => ctx,
            Err(e) => {
                return Ran {
                    result: Err(e),
                    events: vec![],
                    wait: None,
                };
            }
        };
        if let Err(e) = self.account_allows(&pipeline, &ctx).await {
            return Ran {
                result: Err(e),
                events: vec![],
                wait: None,
            };
        }
        let name = self.phase.name();
        let result = self.bounded(p, &ctx).await.and_then(|mut r| {
            pipeline.check_output(name, &r.output).map_err(|e| {
                // Permanent: a retry would ask for the same kind of answer again.
                StepError::permanent(
                    ErrorCode::OutputContract,
                    format!("phase {name} broke its output contract: {e}"),
                )
            })?;
            r.artifacts = ctx.tools.take_artifacts();
            Ok(r)
        });
        Ran {
            result,
            events: ctx.tools.take_events(),
            wait: ctx.tools.take_wait(),
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

    /// The account still allows what the input names (an operator may have narrowed its
    /// access since the start): refused permanently before the phase makes any request.
    async fn account_allows(
        &self,
        pipeline: &crate::pipeline::Pipeline,
        ctx: &PhaseContext,
    ) -> Result<(), StepError> {
        let checks = pipeline.definition.account_checks();
        if checks.is_empty() {
            return Ok(());
        }
        let access = ctx.access().await?;
        crate::domain::access::check_input(access, &ctx.production.account, &checks, &ctx.input)
            .map_err(|m| StepError::permanent(ErrorCode::NotAllowed, m))
    }

    async fn context(
        &self,
        p: &Production,
        pipeline: &crate::pipeline::Pipeline,
    ) -> Result<PhaseContext, StepError> {
        let name = self.phase.name();
        let input = self
            .productions
            .input(&p.id)
            .await
            .retryable(ErrorCode::StoreUnavailable)?
            .ok_or_else(|| {
                StepError::permanent(
                    ErrorCode::InputMissing,
                    format!("production {} has no input", p.id),
                )
            })?;
        let reads: Vec<String> = pipeline
            .definition
            .reads(name)
            .into_iter()
            .map(String::from)
            .collect();
        let mut inputs = BTreeMap::new();
        // What it reads, and only that: a phase skipped by an admin's jump has an output
        // only if the admin supplied one.
        for ph in p.phases.iter().filter(|ph| reads.contains(&ph.name)) {
            if let (PhaseStatus::Succeeded | PhaseStatus::Skipped, Some(key)) =
                (ph.status, &ph.output)
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
                allowed: pipeline
                    .definition
                    .phase(name)
                    .map(|d| d.integrations.as_slice()),
            },
        );
        Ok(PhaseContext {
            feedback: own.and_then(|ph| ph.feedback.clone()),
            production: p.clone(),
            input,
            inputs,
            reads,
            parallel_calls: pipeline
                .definition
                .phase(name)
                .and_then(|d| d.parallel_calls)
                .unwrap_or(1) as usize,
            tools,
            accounts: self.accounts.clone(),
            access: tokio::sync::OnceCell::new(),
        })
    }
}

/// How long until `lease_until`, in whole seconds (at least 1, at most SQS's 12 hours).
pub(super) fn until_lease(lease_until: Millis, now: Millis) -> Duration {
    let secs = ((lease_until - now) / 1000 + 1).clamp(1, 43_200);
    Duration::from_secs(secs as u64)
}
