//! The state machine: `decide(production, command, now) -> Transition`. Pure: the same
//! inputs always give the same transition, with its audit events and what to dispatch.
//!
//! | family | commands | file |
//! |---|---|---|
//! | worker | claim, succeed, fail | `worker.rs` |
//! | operator | pause, resume, retry_phase, edit, cancel, override | `operator.rs` |
//! | gates | approve, reject, acknowledge_warnings, an approval's expiry | `gates.rs` |
//! | recovery | redispatch, reconcile, redrive, a dead letter observed | `recovery.rs` |
//!
//! Every operator action passes one guard first: it must be in `available_actions`.

mod callback;
mod gates;
mod operator;
mod recovery;
mod worker;

use serde::{Deserialize, Serialize};

use super::{
    Act, Action, AuditEvent, AuditKind, ClaimRefusal, GatePolicy, Millis, Outcome, OverrideTarget,
    PhaseError, PhaseState, PhaseStatus, PipelineVersion, Production, ProductionStatus, Wait,
};

/// Everything that can change a production.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A worker takes a queued phase.
    Claim {
        phase: String,
        attempt: u32,
        lease_until: Millis,
    },
    /// The claimed phase finished; its output is stored under `output`.
    Succeed {
        phase: String,
        attempt: u32,
        output: String,
        /// Flags the output raised (e.g. `scene 2: copyright_risk`); see `GatePolicy`.
        warnings: Vec<String>,
    },
    /// The claimed phase handed its work to an external job: it waits (without a worker)
    /// for the job's callback, its lease the first heartbeat's deadline.
    Wait {
        phase: String,
        attempt: u32,
        wait: Wait,
    },
    /// The waiting job said it is alive: the lease moves to the next heartbeat's deadline
    /// (never past the job's deadline).
    Heartbeat { phase: String, attempt: u32 },
    /// The waiting job's result (or failure) is recorded: the phase runs again, same
    /// attempt, to commit it (when the production runs; a paused one on resume).
    Arrive {
        phase: String,
        attempt: u32,
        succeeded: bool,
    },
    /// The claimed phase errored; `disposition` says what the runtime does with the message.
    Fail {
        phase: String,
        attempt: u32,
        error: PhaseError,
        disposition: FailDisposition,
    },
    /// An operator's action (the caller checked the role).
    Act(Act),
    /// A queued phase was never claimed; send its message again (same attempt).
    Redispatch { phase: String },
    /// A running phase's lease expired (its worker died); run it again (attempt + 1).
    Reconcile { phase: String },
    /// The open approval expired; apply the production's policy.
    ExpireApproval,
    /// The phase's message reached its DLQ without the runtime marking the phase (the
    /// worker died on its last receive).
    ObserveDeadLetter { phase: String, attempt: u32 },
    /// The next phase's message could not be sent after the commit: the production is due,
    /// so the sweep sends it whatever becomes of the finished phase's message.
    HandoffLost { phase: String },
    /// A dead-lettered attempt's message came back (Shepherd's redrive, the console's, or
    /// `start-message-move-task`): run the phase again as attempt + 1, keeping the lineage.
    Redrive {
        phase: String,
        attempt: u32,
        message_id: String,
    },
}

impl From<Act> for Command {
    fn from(a: Act) -> Self {
        Self::Act(a)
    }
}

/// What the runtime does with a failed phase's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailDisposition {
    /// The message will be delivered again after a backoff.
    Retry,
    /// Last receive: SQS moves the message to the DLQ next.
    DeadLetter,
    /// No retry can help; the message is consumed.
    Stop,
    /// A wait, not an attempt: the message comes back later; the budget is not spent.
    Hold,
}

/// Send `{production_id, phase, attempt}` to the phase's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub phase: String,
    pub attempt: u32,
}

/// The result of a command: the new state (version + 1), what to send, what to audit.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub production: Production,
    pub dispatch: Option<Dispatch>,
    pub audit: Vec<AuditEvent>,
}

impl Transition {
    fn audit(&mut self, e: AuditEvent) {
        self.audit.push(e);
    }
    fn dispatch(&mut self, phase: &str, attempt: u32) {
        self.dispatch = Some(Dispatch {
            phase: phase.into(),
            attempt,
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{action} is not available while the production is {} (available: {})", status.as_str(), super::names(available))]
    ActionUnavailable {
        action: Action,
        status: ProductionStatus,
        available: Vec<Action>,
    },
    #[error("claim refused: {0:?}")]
    ClaimRefused(ClaimRefusal),
    #[error("phase {phase} attempt {attempt} is not the running attempt")]
    NotRunning { phase: String, attempt: u32 },
    #[error("unknown phase {0}")]
    UnknownPhase(String),
    #[error("{0}")]
    Invalid(String),
}

/// Feedback and reasons live in the hot item and its audit event; this keeps both small.
pub const MAX_OPERATOR_TEXT: usize = 2000;

/// A new production with its first phase queued (attempt 1).
pub fn start(
    id: String,
    account: String,
    pipeline: PipelineVersion,
    phases: &[&str],
    gates: GatePolicy,
    trace_id: String,
    now: Millis,
) -> Transition {
    let mut states: Vec<PhaseState> = phases.iter().map(|p| PhaseState::pending(*p)).collect();
    let first = &mut states[0];
    first.status = PhaseStatus::Queued;
    first.attempt = 1;
    first.queued_at = Some(now);
    let dispatch = Dispatch {
        phase: first.name.clone(),
        attempt: 1,
    };
    let production = Production {
        id,
        account,
        pipeline: pipeline.name,
        pipeline_version: pipeline.version,
        status: ProductionStatus::Queued,
        version: 1,
        phases: states,
        trace_id,
        created_at: now,
        updated_at: now,
        gates,
        approval: None,
        overridden: None,
        revision: 0,
        warnings: vec![],
        warnings_acknowledged_at: None,
        due_at: Some(now),
    };
    Transition {
        production,
        audit: vec![
            AuditEvent::new(AuditKind::ProductionCreated, Outcome::Success, now)
                .detail(format!("first phase {} queued", dispatch.phase)),
        ],
        dispatch: Some(dispatch),
    }
}

/// The state machine. Pure: the same inputs always give the same transition.
pub fn decide(p: &Production, cmd: Command, now: Millis) -> Result<Transition, DomainError> {
    let mut next = p.clone();
    next.version += 1;
    next.updated_at = now;
    let mut t = Transition {
        production: next,
        dispatch: None,
        audit: Vec::new(),
    };
    let handoff = matches!(
        cmd,
        Command::Claim { .. }
            | Command::Succeed { .. }
            | Command::Fail { .. }
            | Command::Wait { .. }
    );
    match cmd {
        Command::Claim {
            phase,
            attempt,
            lease_until,
        } => worker::claim(p, &phase, attempt, lease_until, now, &mut t)?,
        Command::Succeed {
            phase,
            attempt,
            output,
            warnings,
        } => worker::succeed(p, &phase, attempt, output, &warnings, now, &mut t)?,
        Command::Fail {
            phase,
            attempt,
            error,
            disposition,
        } => worker::fail(p, &phase, attempt, error, disposition, now, &mut t)?,
        Command::Wait {
            phase,
            attempt,
            wait,
        } => callback::wait(p, &phase, attempt, wait, now, &mut t)?,
        Command::Heartbeat { phase, attempt } => {
            callback::heartbeat(p, &phase, attempt, now, &mut t)?
        }
        Command::Arrive {
            phase,
            attempt,
            succeeded,
        } => callback::arrive(p, &phase, attempt, succeeded, now, &mut t)?,
        Command::Act(act) => {
            let available = p.available_actions_at(now);
            if !available.contains(&act.action()) {
                return Err(DomainError::ActionUnavailable {
                    action: act.action(),
                    status: p.status,
                    available,
                });
            }
            match act {
                Act::Approve => gates::approve(p, now, &mut t),
                Act::Reject { feedback, phase } => {
                    gates::reject(p, &feedback, phase.as_deref(), now, &mut t)?
                }
                Act::AcknowledgeWarnings => gates::acknowledge(p, now, &mut t),
                Act::Pause => operator::pause(p, now, &mut t),
                Act::Resume => operator::resume(now, &mut t),
                Act::RetryPhase => operator::retry(now, &mut t),
                Act::Edit { changes } => {
                    let fields: Vec<String> = changes.into_iter().map(|c| c.field).collect();
                    operator::edit(&fields, now, &mut t)?
                }
                Act::Cancel => operator::cancel(now, &mut t),
                Act::Override {
                    reason,
                    skip_gate,
                    jump_to,
                    outputs,
                } => {
                    let target = match (skip_gate, jump_to) {
                        (true, None) if outputs.is_empty() => OverrideTarget::SkipGate,
                        (false, Some(phase)) => OverrideTarget::JumpTo(phase),
                        (true, None) => {
                            return Err(DomainError::Invalid(
                                "outputs are for a jump (jump_to), not for skipping a gate".into(),
                            ));
                        }
                        _ => {
                            return Err(DomainError::Invalid(
                                "an override needs exactly one of skip_gate or jump_to".into(),
                            ));
                        }
                    };
                    operator::override_(p, &reason, target, &outputs, now, &mut t)?
                }
                Act::ClearOverride { reason } => operator::clear_override(&reason, now, &mut t)?,
            }
        }
        Command::ExpireApproval => gates::expire(p, now, &mut t)?,
        Command::Redispatch { phase } => recovery::redispatch(p, &phase, now, &mut t)?,
        Command::Reconcile { phase } => recovery::reconcile(p, &phase, now, &mut t)?,
        Command::Redrive {
            phase,
            attempt,
            message_id,
        } => recovery::redrive(p, &phase, attempt, &message_id, now, &mut t)?,
        Command::ObserveDeadLetter { phase, attempt } => {
            recovery::observe_dead_letter(p, &phase, attempt, now, &mut t)?
        }
        Command::HandoffLost { phase } => {
            recovery::handoff_lost(p, &phase, now, &mut t)?;
            return Ok(t);
        }
    }
    let dispatched = t.dispatch.is_some();
    t.production.due_at = due_after(handoff, &t.production, dispatched, now);
    Ok(t)
}

/// Which transitions leave work for the sweep: a dispatch sent by an operator or by the
/// sweep itself (no SQS message stands behind it yet), an open approval (it expires), and
/// a claimed phase (its lease expires: a worker that died mid-phase is reconciled by the
/// first sweep after that, not when SQS redelivers its message a visibility timeout later).
/// A phase's own hand-off is not due: if its send is lost, SQS redelivers the finished
/// phase's message and the runtime sends again.
fn due_after(handoff: bool, next: &Production, dispatched: bool, now: Millis) -> Option<Millis> {
    if let (ProductionStatus::AwaitingApproval, Some(a)) = (next.status, &next.approval) {
        return Some(a.expires_at);
    }
    if dispatched && !handoff {
        return Some(now);
    }
    next.phases
        .iter()
        .filter(|ph| ph.status == PhaseStatus::Running)
        .filter_map(|ph| ph.lease_until)
        .min()
}

fn known_phase(p: &Production, phase: &str) -> Result<usize, DomainError> {
    p.phase_index(phase)
        .ok_or_else(|| DomainError::UnknownPhase(phase.into()))
}

/// A fresh attempt of `ph`, waiting for a worker.
fn requeue(ph: &mut PhaseState, now: Millis) {
    ph.status = PhaseStatus::Queued;
    ph.attempt += 1;
    ph.retries = 0;
    ph.holds = 0;
    ph.queued_at = Some(now);
    ph.started_at = None;
    ph.lease_until = None;
    ph.finished_at = None;
    // A new attempt is a new job: callbacks for the old one are refused.
    ph.waiting = None;
}

/// An operator's free text, trimmed; refused when empty or too long.
fn operator_text(text: &str, empty: &str, what: &str) -> Result<String, DomainError> {
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(DomainError::Invalid(empty.into()));
    }
    let n = text.chars().count();
    if n > MAX_OPERATOR_TEXT {
        return Err(DomainError::Invalid(format!(
            "{what} is {n} characters; at most {MAX_OPERATOR_TEXT}"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
