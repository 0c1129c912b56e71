//! The recovery sweep (EventBridge Scheduler, every minute): reads the sparse `by_due`
//! index and the DLQs, and for each production found applies the recovery the state
//! machine allows. Two overlapping sweeps do no harm: every change is a conditional
//! commit on the production's version, and a sweep that loses re-decides on the new state.
//!
//! | found | command | audit |
//! |---|---|---|
//! | an approval past its expiry | `ExpireApproval` (fail or renew, per production) | `approval.expired` / `approval.renewed` |
//! | a queued phase unclaimed past `lost_dispatch_after` | `Redispatch` (same attempt) | `phase.redispatched` |
//! | a running phase whose lease expired | `Reconcile` (attempt + 1) | `tool_call.unknown`, `phase.reconciled` |
//! | a phase whose external job missed its heartbeat | `Reconcile` (attempt + 1: a new job) | `tool_call.unknown`, `phase.reconciled`, alarm `job_silent` |
//! | a phase whose external job passed its deadline | `Reconcile`: the phase fails | `callback.deadline_passed`, alarm `job_deadline_passed` |
//! | a phase message in its DLQ, the phase still open | `ObserveDeadLetter` | `phase.dead_lettered` |
//!
//! Crashes mid-phase are normally recovered before the sweep sees them: SQS delivers the
//! unfinished message again after its visibility timeout and the claim takes the expired
//! lease. See docs/decisions.md ("what the sweep reads").

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::{Actor, Command, Millis, OnExpiry, PhaseStatus, Production, ProductionStatus};
use crate::ports::{Clock, Productions, Queue, StoreError};
use crate::protocol::PhaseMessage;
use crate::write::{Dispatcher, OnConflict, Transitioner, Written};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub due: usize,
    pub redispatched: usize,
    pub reconciled: usize,
    pub approvals_expired: usize,
    pub approvals_renewed: usize,
    pub dead_letters_observed: usize,
    /// Found but nothing to do (already recovered, or another sweep won).
    pub skipped: usize,
    pub errors: usize,
}

/// The recovery a production needs at `now`, if any. Pure.
pub fn recovery_command(
    p: &Production,
    now: Millis,
    lost_dispatch_after: Millis,
) -> Option<Command> {
    if p.status == ProductionStatus::AwaitingApproval
        && p.approval.as_ref().is_some_and(|a| a.expires_at <= now)
    {
        return Some(Command::ExpireApproval);
    }
    let runs = matches!(
        p.status,
        ProductionStatus::Queued | ProductionStatus::Running
    );
    for ph in &p.phases {
        match ph.status {
            PhaseStatus::Queued
                if runs && ph.queued_at.is_some_and(|q| q + lost_dispatch_after <= now) =>
            {
                return Some(Command::Redispatch {
                    phase: ph.name.clone(),
                });
            }
            PhaseStatus::Running if ph.lease_until.is_some_and(|l| l <= now) => {
                return Some(Command::Reconcile {
                    phase: ph.name.clone(),
                });
            }
            _ => {}
        }
    }
    None
}

fn sweeper_actor() -> Actor {
    Actor("system:sweeper".into())
}

/// The recovery sweep (built in `wiring`).
pub struct Sweeper {
    pub productions: Arc<dyn Productions>,
    pub queue: Arc<dyn Queue>,
    pub transitioner: Arc<Transitioner>,
    pub dispatcher: Arc<Dispatcher>,
    pub clock: Arc<dyn Clock>,
    pub lost_dispatch_after: Duration,
}

impl Sweeper {
    /// One sweep over what is due and what sits in the DLQs.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now = self.clock.now();
        let mut report = SweepReport::default();
        let due = self.productions.due(now, 500).await?;
        report.due = due.len();
        for id in due {
            if let Err(e) = self.recover(&id, &mut report).await {
                warn!(production = %id, error = %e, "recovery failed; the next sweep tries again");
                report.errors += 1;
            }
        }
        self.observe_dead_letters(&mut report).await;
        info!(?report, "sweep done");
        Ok(report)
    }

    async fn recover(&self, id: &str, report: &mut SweepReport) -> Result<(), StoreError> {
        let lost_after = self.lost_dispatch_after.as_millis() as Millis;
        for _ in 0..3 {
            let Some(p) = self.productions.get(id).await? else {
                return Ok(());
            };
            let now = self.clock.now();
            let Some(cmd) = recovery_command(&p, now, lost_after) else {
                report.skipped += 1;
                return Ok(());
            };
            if self.apply(&p, cmd.clone()).await? {
                match cmd {
                    Command::Redispatch { .. } => report.redispatched += 1,
                    Command::Reconcile { phase }
                        if p.phase(&phase).is_some_and(|ph| ph.waiting.is_some()) =>
                    {
                        report.reconciled += 1;
                        let w = p
                            .phase(&phase)
                            .and_then(|ph| ph.waiting.clone())
                            .expect("matched");
                        let (kind, severity, detail) = if self.clock.now() >= w.deadline {
                            (
                                AlarmKind::JobDeadlinePassed,
                                Severity::Critical,
                                format!(
                                    "external jobs of phase {phase} sent no result by their deadline; their productions failed (`shepherd retry <id>` starts a new job)"
                                ),
                            )
                        } else {
                            (
                                AlarmKind::JobSilent,
                                Severity::Warning,
                                format!(
                                    "external jobs of phase {phase} missed their heartbeat; the sweep started each again as its next attempt (a new job)"
                                ),
                            )
                        };
                        let raise = Raise::new(kind, &phase, severity, detail).affecting(&p.id);
                        self.transitioner.raise(&raise).await;
                    }
                    Command::Reconcile { phase } => {
                        report.reconciled += 1;
                        // One alarm per phase, listing the productions; each leaves it when
                        // its phase succeeds.
                        let detail = format!(
                            "productions made no progress in phase {phase} within its lease (the worker stopped: a crash, out of memory or a timeout); the sweep re-dispatched them as their next attempt"
                        );
                        let raise = Raise::new(
                            AlarmKind::ProductionStuck,
                            &phase,
                            Severity::Warning,
                            detail,
                        )
                        .affecting(&p.id);
                        self.transitioner.raise(&raise).await;
                    }
                    Command::ExpireApproval if p.gates.on_expiry == OnExpiry::Renew => {
                        warn!(production = %id, "approval expired unanswered and was renewed; an operator should look");
                        report.approvals_renewed += 1;
                        let detail = "an approval expired unanswered and was renewed";
                        self.transitioner
                            .alarm(AlarmKind::ApprovalRenewed, &p, Severity::Warning, detail)
                            .await;
                    }
                    Command::ExpireApproval => {
                        warn!(production = %id, "approval expired unanswered; the production failed");
                        report.approvals_expired += 1;
                        let detail = format!(
                            "an approval expired unanswered and the production failed (ApprovalOnExpiry: fail); `shepherd retry {id}` asks again"
                        );
                        self.transitioner
                            .alarm(AlarmKind::ApprovalExpired, &p, Severity::Critical, &detail)
                            .await;
                    }
                    _ => {}
                }
                return Ok(());
            }
        }
        report.skipped += 1;
        Ok(())
    }

    /// Decides and commits, then dispatches; `false` if another writer changed the
    /// production first (the caller re-reads) or the state machine no longer takes it.
    async fn apply(&self, p: &Production, cmd: Command) -> Result<bool, StoreError> {
        let written = self
            .transitioner
            .write(
                p.clone(),
                cmd,
                &sweeper_actor(),
                &[],
                None,
                OnConflict::GiveUp,
            )
            .await?;
        let Written::Committed(t) = written else {
            return Ok(false);
        };
        if let Some(d) = &t.dispatch
            && let Err(e) = self.dispatcher.send_one(&p.id, d).await
        {
            // A lost send leaves the production due: the next sweep sends again.
            warn!(production = %p.id, error = %e, "dispatch failed; it stays due");
        }
        Ok(true)
    }

    /// A phase message in a DLQ whose phase is still open: the worker died on the last
    /// receive. Marks the phase so operators see it and can retry or redrive.
    async fn observe_dead_letters(&self, report: &mut SweepReport) {
        for (phase, url) in &self.dispatcher.topology().dlqs {
            let messages = match self.queue.peek(url, 10).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(%phase, error = %e, "cannot read the DLQ");
                    report.errors += 1;
                    continue;
                }
            };
            for m in messages {
                let Ok(msg) = PhaseMessage::parse(&m.body, phase) else {
                    continue;
                };
                let Ok(Some(p)) = self.productions.get(&msg.production_id).await else {
                    continue;
                };
                let open = p.phase(phase).is_some_and(|ph| {
                    ph.attempt == msg.attempt
                        && matches!(ph.status, PhaseStatus::Queued | PhaseStatus::Running)
                });
                if !open {
                    continue;
                }
                let cmd = Command::ObserveDeadLetter {
                    phase: phase.clone(),
                    attempt: msg.attempt,
                };
                match self.apply(&p, cmd).await {
                    Ok(true) => {
                        report.dead_letters_observed += 1;
                        let detail = format!(
                            "phase {phase} attempt {} reached the DLQ unhandled",
                            msg.attempt
                        );
                        self.transitioner
                            .alarm(AlarmKind::DlqArrival, &p, Severity::Warning, &detail)
                            .await;
                    }
                    Ok(false) => report.skipped += 1,
                    Err(_) => report.errors += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GatePolicy, start};

    fn fresh(now: Millis) -> Production {
        start(
            "p".into(),
            "a".into(),
            crate::domain::PipelineVersion::new("content", 1),
            &["brief", "script"],
            GatePolicy::default(),
            "t".into(),
            now,
        )
        .production
    }

    #[test]
    fn a_queued_phase_is_redispatched_only_after_the_threshold() {
        let p = fresh(1000);
        assert_eq!(recovery_command(&p, 1500, 1000), None);
        assert_eq!(
            recovery_command(&p, 2000, 1000),
            Some(Command::Redispatch {
                phase: "brief".into()
            })
        );
    }

    #[test]
    fn a_paused_production_is_not_redispatched() {
        let mut p = fresh(0);
        p.status = ProductionStatus::Paused;
        assert_eq!(recovery_command(&p, 10_000, 1), None);
    }

    #[test]
    fn an_expired_lease_is_reconciled() {
        let mut p = fresh(0);
        p.status = ProductionStatus::Running;
        p.phases[0].status = PhaseStatus::Running;
        p.phases[0].lease_until = Some(5000);
        assert_eq!(recovery_command(&p, 4999, 1), None);
        assert_eq!(
            recovery_command(&p, 5000, 1),
            Some(Command::Reconcile {
                phase: "brief".into()
            })
        );
    }
}
