//! The phase worker: one message's story. Claim the phase (one conditional write); if the
//! claim is refused, ask the delivery policy what the message is; otherwise execute the
//! phase, store its output, commit the result and hand off to the next phase. Every
//! decision is the domain's (`delivery::on_delivery`, `delivery::on_error`, `decide`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tracing::{error, info, warn};

use super::edge::Delivered;
use super::execute::{Executor, Ran, until_lease};
use super::{PhaseResult, Stats};
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::delivery::{
    self, ClaimRefusal, Delivery, Disposition, RetryPolicy, backoff, on_delivery, on_error,
};
use crate::domain::{
    Actor, AuditEvent, AuditKind, Command, Dispatch, ErrorClass, ErrorCode, Millis, PhaseError,
    Production, StepError,
};
use crate::ports::{ClaimOutcome, Clock, Outputs, Productions, StoreError, StoredOutput};
use crate::protocol::PhaseMessage;
use crate::write::{OnConflict, Transitioner, Written};

/// How one message ended.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Delete the message.
    Done,
    /// Delete it once this production's next phase message has been sent.
    Handoff { production: String, next: Dispatch },
    /// Leave it for SQS to deliver again, visible again in `after` (`None`: the queue's
    /// visibility timeout).
    Retry { after: Option<Duration> },
    /// Send it again after `after` and delete this one (a wait: its receive count starts
    /// over).
    Resend { after: Duration },
    /// Move it to the DLQ and delete it (the attempt's budget is spent).
    DeadLetter,
    /// No retry can help: move it to the DLQ with the reason.
    Quarantine(String),
}

/// Commits of a phase's result re-decide on a newer state this many times.
const COMMIT_TRIES: u32 = 5;

/// The phase worker (built in `wiring`).
pub struct Worker {
    pub executor: Executor,
    pub productions: Arc<dyn Productions>,
    pub outputs: Arc<dyn Outputs>,
    pub transitioner: Arc<Transitioner>,
    pub clock: Arc<dyn Clock>,
    /// A claim's lease: the function's timeout.
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub stats: Arc<Stats>,
}

impl Worker {
    pub fn phase(&self) -> &'static str {
        self.executor.phase.name()
    }

    /// Who the phase's writes are audited as.
    fn actor(&self) -> Actor {
        Actor(format!("system:{}", self.phase()))
    }

    /// What becomes of one delivered message. Everything logged while it is handled (the
    /// claim, the phase's own lines, its tool calls, the commit, the hand-off) carries the
    /// run's production, phase, attempt and trace id (the `run` span).
    pub async fn process(&self, d: &Delivered) -> Verdict {
        use tracing::Instrument as _;
        self.stats.inc(&self.stats.received);
        let msg = match PhaseMessage::parse(&d.body, self.phase()) {
            Ok(msg) => msg,
            Err(e) => return Verdict::Quarantine(e.to_string()),
        };
        let span = tracing::info_span!(
            "run",
            production = %msg.production_id,
            phase = %msg.phase,
            attempt = msg.attempt,
            trace_id = tracing::field::Empty,
        );
        self.run(d, msg).instrument(span).await
    }

    async fn run(&self, d: &Delivered, msg: PhaseMessage) -> Verdict {
        let now = self.clock.now();
        let lease_until = now + self.lease.as_millis() as Millis;
        let claimed = self
            .productions
            .claim(
                &msg.production_id,
                &msg.phase,
                msg.attempt,
                lease_until,
                now,
            )
            .await;
        let production = match claimed {
            Ok(ClaimOutcome::Claimed(p)) => p,
            Ok(ClaimOutcome::Refused(p)) => return self.refused(p, &msg, d, now).await,
            Err(e) => {
                warn!(error = %e, production = %msg.production_id, "claim failed; will retry");
                return self.back_off(d.receive_count);
            }
        };
        self.stats.inc(&self.stats.claimed);
        tracing::Span::current().record("trace_id", production.trace_id.as_str());
        info!(receive_count = d.receive_count, "phase claimed");

        let started = std::time::Instant::now();
        let Ran {
            result,
            events,
            wait,
        } = self.executor.run(&production).await;
        let took = started.elapsed();
        if events.iter().any(|e| e.kind == AuditKind::ToolCallDeduped) {
            let detail = format!(
                "phase {}: a tool call's key was reused for a different request; the call was refused",
                msg.phase
            );
            self.transitioner
                .alarm(
                    AlarmKind::ToolCallDeduped,
                    &production,
                    Severity::Critical,
                    &detail,
                )
                .await;
        }
        let events: Vec<AuditEvent> = events
            .into_iter()
            .map(|e| e.phase(&msg.phase, msg.attempt))
            .collect();
        let ran_ok = result.is_ok();
        let trace_id = production.trace_id.clone();
        let verdict = match result {
            Ok(result) => self.succeed(production, &msg, result, &events).await,
            Err(e) if e.code == ErrorCode::AwaitingCallback => {
                self.wait(production, &msg, wait, &events).await
            }
            Err(e) => {
                self.fail(production, &msg, e, &events, d.receive_count)
                    .await
            }
        };
        measure(&msg, &trace_id, took, ran_ok, &verdict);
        verdict
    }

    async fn succeed(
        &self,
        p: Production,
        msg: &PhaseMessage,
        result: PhaseResult,
        events: &[AuditEvent],
    ) -> Verdict {
        let key = match self
            .outputs
            .put(
                &p.id,
                &msg.phase,
                msg.attempt,
                &StoredOutput {
                    body: result.output,
                    artifacts: result.artifacts,
                },
            )
            .await
        {
            Ok(key) => key,
            Err(e) => return self.after_lost_commit(&p, msg, e),
        };
        let cmd = Command::Succeed {
            phase: msg.phase.clone(),
            attempt: msg.attempt,
            output: key,
            warnings: result.warnings,
        };
        match self.commit(&p, cmd, events).await {
            Ok(Some(t)) => {
                self.stats.inc(&self.stats.succeeded);
                if p.phase(&msg.phase).is_some_and(|ph| ph.holds > 0) {
                    let alarm = format!("{}#{}", AlarmKind::ProductionWaiting, msg.phase);
                    self.transitioner.leave(&alarm, &p.id, &self.actor()).await;
                }
                // A later attempt may follow a stuck one the sweep re-dispatched.
                if msg.attempt > 1 {
                    let alarm = format!("{}#{}", AlarmKind::ProductionStuck, msg.phase);
                    self.transitioner.leave(&alarm, &p.id, &self.actor()).await;
                }
                handoff(&p.id, t.dispatch)
            }
            Ok(None) => Verdict::Done,
            Err(e) => self.after_lost_commit(&p, msg, e),
        }
    }

    /// The run handed its work to an external job: the wait is recorded (its lease the
    /// first heartbeat's deadline) and the message let go; the callback brings the phase
    /// back. A run that found its job already waiting changes nothing.
    async fn wait(
        &self,
        p: Production,
        msg: &PhaseMessage,
        wait: Option<crate::domain::Wait>,
        events: &[AuditEvent],
    ) -> Verdict {
        let Some(wait) = wait else {
            info!("the phase's job is already waiting for its callback");
            return Verdict::Done;
        };
        info!(job = %wait.job, "phase waits for its job's callback");
        let cmd = Command::Wait {
            phase: msg.phase.clone(),
            attempt: msg.attempt,
            wait,
        };
        match self.commit(&p, cmd, events).await {
            Ok(_) => Verdict::Done,
            Err(e) => self.after_lost_commit(&p, msg, e),
        }
    }

    async fn fail(
        &self,
        p: Production,
        msg: &PhaseMessage,
        e: StepError,
        events: &[AuditEvent],
        receive_count: u32,
    ) -> Verdict {
        let Some(phase) = p.phase(&msg.phase).cloned() else {
            return Verdict::Done;
        };
        // The phase's own budget, from the definition the production is pinned to, within
        // the stack's cap.
        let mut retry = self.retry;
        if let Some(def) =
            self.executor
                .pipelines
                .phase(&p.pipeline, p.pipeline_version, &msg.phase)
        {
            retry.max_retries = retry.max_retries.min(def.max_tries);
        }
        let disposition = on_error(
            &e,
            &phase,
            receive_count,
            retry,
            self.clock.now(),
            rand::random(),
        );
        warn!(production = %p.id, phase = %msg.phase, attempt = msg.attempt,
              code = %e.code, class = ?e.class, disposition = ?disposition, "phase errored");
        let cmd = Command::Fail {
            phase: msg.phase.clone(),
            attempt: msg.attempt,
            error: PhaseError::from_step(&e),
            disposition: disposition.fail(),
        };
        match self.commit(&p, cmd, events).await {
            Ok(Some(_)) => {}
            Ok(None) => return Verdict::Done,
            Err(err) => return self.after_lost_commit(&p, msg, err),
        }
        match disposition {
            Disposition::Retry { after } => {
                self.stats.inc(&self.stats.retried);
                Verdict::Retry { after: Some(after) }
            }
            Disposition::Hold { after } => {
                self.stats.inc(&self.stats.held);
                if e.code == ErrorCode::IntegrationUnavailable {
                    // One alarm per phase; `affected` lists the productions that wait.
                    let detail = format!(
                        "productions wait in phase {} (none is dead-lettered; they go on when an integration takes calls again): {}",
                        msg.phase, e.detail
                    );
                    let raise = Raise::new(
                        AlarmKind::ProductionWaiting,
                        &msg.phase,
                        Severity::Warning,
                        detail,
                    )
                    .affecting(&p.id);
                    self.transitioner.raise(&raise).await;
                }
                Verdict::Resend { after }
            }
            Disposition::DeadLetter => {
                self.stats.inc(&self.stats.dead_lettered);
                Verdict::DeadLetter
            }
            Disposition::Stop => {
                self.stats.inc(&self.stats.failed);
                if e.class == ErrorClass::Unexpected {
                    let detail = format!(
                        "phase {} of production {} failed unexpectedly ({}): {}. Fix the phase's code, deploy, then `shepherd retry {}`",
                        msg.phase, p.id, e.code, e.detail, p.id
                    );
                    self.transitioner
                        .alarm(
                            AlarmKind::PhaseUnexpectedError,
                            &p,
                            Severity::Critical,
                            &detail,
                        )
                        .await;
                }
                Verdict::Done
            }
        }
    }

    /// Commits a run's result, re-deciding on a newer state. `None`: the state machine no
    /// longer takes it (an operator superseded the attempt).
    async fn commit(
        &self,
        p: &Production,
        cmd: Command,
        events: &[AuditEvent],
    ) -> Result<Option<crate::domain::Transition>, StoreError> {
        let written = self
            .transitioner
            .write(
                p.clone(),
                cmd,
                &self.actor(),
                events,
                None,
                OnConflict::Redecide(COMMIT_TRIES),
            )
            .await?;
        match written {
            Written::Committed(t) => Ok(Some(*t)),
            Written::Refused(e) => {
                warn!(production = %p.id, error = %e, "result discarded");
                self.stats.inc(&self.stats.superseded);
                Ok(None)
            }
            Written::Gone => {
                self.stats.inc(&self.stats.superseded);
                Ok(None)
            }
            Written::Conflicted => Err(StoreError::Unavailable("commit kept conflicting".into())),
        }
    }

    /// The claim was refused: the delivery policy says what the message is.
    async fn refused(
        &self,
        p: Option<Production>,
        msg: &PhaseMessage,
        d: &Delivered,
        now: Millis,
    ) -> Verdict {
        let delivered = delivery::Delivered {
            production_id: &msg.production_id,
            phase: &msg.phase,
            attempt: msg.attempt,
            receive_count: d.receive_count,
            redriven: d.redriven_from.is_some(),
        };
        let delivery = on_delivery(p.as_ref(), delivered, now);
        match (delivery, p) {
            (Delivery::Quarantine(reason), _) => Verdict::Quarantine(reason),
            // The policy quarantines every message of an unknown production.
            (_, None) => Verdict::Done,
            (Delivery::Reconcile, Some(p)) => {
                warn!(production = %p.id, phase = %msg.phase, attempt = msg.attempt,
                      "lease expired mid-phase; reconciling as the next attempt");
                let cmd = Command::Reconcile {
                    phase: msg.phase.clone(),
                };
                self.recover(p, cmd, &self.stats.reconciled).await
            }
            (Delivery::Redrive, Some(p)) => {
                info!(production = %p.id, phase = %msg.phase, "redriven message accepted");
                let cmd = Command::Redrive {
                    phase: msg.phase.clone(),
                    attempt: msg.attempt,
                    message_id: d.redriven_from.clone().unwrap_or(d.message_id.clone()),
                };
                self.recover(p, cmd, &self.stats.redriven).await
            }
            (Delivery::ResendHandoff(next), Some(p)) => {
                self.stats.inc(&self.stats.handoff_resent);
                handoff(&p.id, Some(next))
            }
            (Delivery::Ack(refusal), Some(p)) => {
                self.ack(&p, msg, Some(refusal));
                Verdict::Done
            }
            // The store refused a claim the domain allows (an old copy of the state): acked.
            (Delivery::Run, Some(p)) => {
                self.ack(&p, msg, None);
                Verdict::Done
            }
        }
    }

    fn ack(&self, p: &Production, msg: &PhaseMessage, refusal: Option<ClaimRefusal>) {
        let counter = match refusal {
            Some(ClaimRefusal::Duplicate) => &self.stats.duplicate,
            Some(ClaimRefusal::Paused) => &self.stats.paused,
            Some(ClaimRefusal::NotRunnable) => &self.stats.not_runnable,
            _ => &self.stats.stale,
        };
        self.stats.inc(counter);
        info!(production = %p.id, phase = %msg.phase, attempt = msg.attempt, refusal = ?refusal,
              "message acknowledged without running");
    }

    /// Commits a recovery (reconcile, redrive) and hands the new attempt off.
    async fn recover(&self, p: Production, cmd: Command, counter: &AtomicU64) -> Verdict {
        let id = p.id.clone();
        let written = self
            .transitioner
            .write(
                p,
                cmd,
                &self.actor(),
                &[],
                None,
                OnConflict::Redecide(COMMIT_TRIES),
            )
            .await;
        match written {
            Ok(Written::Committed(t)) => {
                self.stats.inc(counter);
                info!(production = %id, version = t.production.version, "recovered");
                handoff(&id, t.dispatch)
            }
            // Someone else (a sweep, an operator) moved it on first.
            Ok(Written::Refused(_) | Written::Gone) => Verdict::Done,
            Ok(Written::Conflicted) | Err(_) => {
                warn!(production = %id, "the recovery could not be stored; the message comes back");
                Verdict::Retry { after: None }
            }
        }
    }

    /// The phase ran but its result could not be stored: deliver again after the lease,
    /// when the claim may be taken again; recorded tool outcomes make the re-run cheap.
    fn after_lost_commit(&self, p: &Production, msg: &PhaseMessage, e: StoreError) -> Verdict {
        error!(production = %p.id, phase = %msg.phase, error = %e, "commit failed; will re-run after the lease");
        let lease = p
            .phase(&msg.phase)
            .and_then(|ph| ph.lease_until)
            .unwrap_or(0);
        Verdict::Retry {
            after: Some(until_lease(lease, self.clock.now())),
        }
    }

    /// The next phase's message of `production` could not be sent: mark it due, so the
    /// sweep sends it whatever becomes of this message (a write on that failure path only).
    pub async fn handoff_lost(&self, production: &str, next: &Dispatch) {
        let p = match self.productions.get(production).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                warn!(production, error = %e, "cannot mark the lost hand-off; SQS redelivery remains");
                return;
            }
        };
        let cmd = Command::HandoffLost {
            phase: next.phase.clone(),
        };
        let policy = OnConflict::Redecide(COMMIT_TRIES);
        let written = self
            .transitioner
            .write(p, cmd, &self.actor(), &[], None, policy)
            .await;
        if let Err(e) = written {
            warn!(production, error = %e, "cannot mark the lost hand-off; SQS redelivery remains");
        }
    }

    fn back_off(&self, receive_count: u32) -> Verdict {
        let after = backoff(
            receive_count,
            self.retry.base,
            self.retry.cap,
            rand::random(),
        );
        Verdict::Retry { after: Some(after) }
    }
}

/// One run's metrics: its duration and what became of it, per phase.
fn measure(msg: &PhaseMessage, trace_id: &str, took: Duration, ran_ok: bool, v: &Verdict) {
    let outcome = match (ran_ok, v) {
        (true, Verdict::Done | Verdict::Handoff { .. }) => "PhaseSucceeded",
        (true, _) => "PhaseCommitRetried",
        (false, Verdict::Retry { .. }) => "PhaseRetried",
        (false, Verdict::Resend { .. }) => "PhaseHeld",
        (false, Verdict::DeadLetter | Verdict::Quarantine(_)) => "PhaseDeadLettered",
        (false, Verdict::Done | Verdict::Handoff { .. }) => "PhaseFailed",
    };
    crate::metrics::Document::by("phase", &msg.phase)
        .millis("PhaseDuration", took.as_millis() as u64)
        .count(outcome, 1)
        .property("production_id", msg.production_id.as_str())
        .property("trace_id", trace_id)
        .property("attempt", msg.attempt)
        .emit();
}

fn handoff(production: &str, next: Option<Dispatch>) -> Verdict {
    match next {
        Some(next) => Verdict::Handoff {
            production: production.into(),
            next,
        },
        None => Verdict::Done,
    }
}
