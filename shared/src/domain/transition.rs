use serde::{Deserialize, Serialize};

use super::{
    Action, ErrorClass, Millis, PhaseError, PhaseState, PhaseStatus, Production, ProductionStatus,
};

/// Everything that can change a production.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A worker takes a queued phase (or re-takes one whose lease expired).
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
    },
    /// The claimed phase errored; `disposition` says what the runtime does with the message.
    Fail {
        phase: String,
        attempt: u32,
        error: PhaseError,
        disposition: FailDisposition,
    },
    Pause,
    Resume,
    RetryPhase,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailDisposition {
    /// The message will be delivered again after a backoff.
    Retry,
    /// Last receive: SQS moves the message to the DLQ next.
    DeadLetter,
    /// No retry can help; the message is consumed.
    Stop,
}

/// Send `{production_id, phase, attempt}` to the phase's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub phase: String,
    pub attempt: u32,
}

/// Recorded in the same write as the state change it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub outcome: String,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl AuditEvent {
    fn new(kind: &str, outcome: &str, at: Millis) -> Self {
        Self {
            kind: kind.into(),
            phase: None,
            attempt: None,
            outcome: outcome.into(),
            at,
            detail: String::new(),
        }
    }
    fn phase(mut self, phase: &str, attempt: u32) -> Self {
        self.phase = Some(phase.into());
        self.attempt = Some(attempt);
        self
    }
    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// The result of a command: the new state (version + 1), what to send, what to audit.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub production: Production,
    pub dispatch: Option<Dispatch>,
    pub audit: Vec<AuditEvent>,
}

/// Why a message may not run its phase. The message is acknowledged, never re-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimRefusal {
    /// The same attempt is running under a live lease (a duplicate delivery).
    Duplicate,
    /// The attempt already finished (succeeded, failed or dead-lettered).
    AlreadyFinished,
    /// A newer attempt exists, or this attempt was never dispatched.
    Stale,
    Paused,
    /// The production no longer runs phases (cancelled, failed, completed, awaiting approval).
    NotRunnable,
    UnknownPhase,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0} is not available while the production is {1}")]
    ActionUnavailable(&'static str, &'static str),
    #[error("claim refused: {0:?}")]
    ClaimRefused(ClaimRefusal),
    #[error("phase {phase} attempt {attempt} is not the running attempt")]
    NotRunning { phase: String, attempt: u32 },
    #[error("unknown phase {0}")]
    UnknownPhase(String),
}

/// A new production with its first phase queued (attempt 1).
pub fn start(
    id: String,
    account: String,
    pipeline: String,
    phases: &[&str],
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
        pipeline,
        status: ProductionStatus::Queued,
        version: 1,
        phases: states,
        trace_id,
        created_at: now,
        updated_at: now,
    };
    Transition {
        production,
        audit: vec![
            AuditEvent::new("production.created", "success", now)
                .detail(format!("first phase {} queued", dispatch.phase)),
        ],
        dispatch: Some(dispatch),
    }
}

/// Whether `attempt` of `phase` may be claimed now; `None` means yes.
/// The DynamoDB adapter's conditional claim encodes exactly this rule.
pub fn claim_refusal(
    p: &Production,
    phase: &str,
    attempt: u32,
    now: Millis,
) -> Option<ClaimRefusal> {
    let Some(ph) = p.phase(phase) else {
        return Some(ClaimRefusal::UnknownPhase);
    };
    if attempt != ph.attempt {
        return Some(ClaimRefusal::Stale);
    }
    match ph.status {
        PhaseStatus::Succeeded | PhaseStatus::Failed | PhaseStatus::DeadLettered => {
            return Some(ClaimRefusal::AlreadyFinished);
        }
        PhaseStatus::Pending => return Some(ClaimRefusal::Stale),
        PhaseStatus::Running if ph.lease_until.is_some_and(|l| l > now) => {
            return Some(ClaimRefusal::Duplicate);
        }
        PhaseStatus::Queued | PhaseStatus::Running => {}
    }
    match p.status {
        ProductionStatus::Queued | ProductionStatus::Running => None,
        ProductionStatus::Paused => Some(ClaimRefusal::Paused),
        _ => Some(ClaimRefusal::NotRunnable),
    }
}

/// The state machine. Pure: the same inputs always give the same transition.
pub fn decide(p: &Production, cmd: Command, now: Millis) -> Result<Transition, DomainError> {
    let mut next = p.clone();
    next.version += 1;
    next.updated_at = now;
    let mut dispatch = None;
    let mut audit = Vec::new();
    let unavailable = |a: Action| DomainError::ActionUnavailable(a.as_str(), p.status.as_str());

    match cmd {
        Command::Claim {
            phase,
            attempt,
            lease_until,
        } => {
            if let Some(r) = claim_refusal(p, &phase, attempt, now) {
                return Err(DomainError::ClaimRefused(r));
            }
            let i = p.phase_index(&phase).expect("checked by claim_refusal");
            let ph = &mut next.phases[i];
            ph.status = PhaseStatus::Running;
            ph.started_at = Some(now);
            ph.lease_until = Some(lease_until);
            next.status = ProductionStatus::Running;
            // No audit event: the commit's event carries started_at, which keeps the audit
            // at one row per transition (see docs/decisions.md, "audit cost").
        }
        Command::Succeed {
            phase,
            attempt,
            output,
        } => {
            let i = running_index(p, &phase, attempt)?;
            let started = p.phases[i].started_at.unwrap_or(now);
            let ph = &mut next.phases[i];
            ph.status = PhaseStatus::Succeeded;
            ph.finished_at = Some(now);
            ph.lease_until = None;
            ph.output = Some(output);
            let mut event = AuditEvent::new("phase.succeeded", "success", now)
                .phase(&phase, attempt)
                .detail(format!("took {} ms", now - started));
            match next.status {
                // Paused or cancelled while it ran: the work is kept, nothing new starts.
                ProductionStatus::Paused => event.detail.push_str("; paused, next phase held"),
                ProductionStatus::Cancelled => event.detail.push_str("; production cancelled"),
                _ => match next.phases.get_mut(i + 1) {
                    Some(n) => {
                        n.status = PhaseStatus::Queued;
                        n.attempt += 1;
                        n.queued_at = Some(now);
                        event.detail.push_str(&format!("; {} queued", n.name));
                        dispatch = Some(Dispatch {
                            phase: n.name.clone(),
                            attempt: n.attempt,
                        });
                    }
                    None => {
                        next.status = ProductionStatus::Completed;
                        audit.push(event);
                        event = AuditEvent::new("production.completed", "success", now);
                    }
                },
            }
            audit.push(event);
        }
        Command::Fail {
            phase,
            attempt,
            error,
            disposition,
        } => {
            let i = running_index(p, &phase, attempt)?;
            let error = PhaseError {
                attempt,
                at: now,
                ..error
            };
            let (kind, outcome) = match (error.class, disposition) {
                (ErrorClass::Unexpected, _) => ("task.step_unexpected_error", "failure"),
                (_, FailDisposition::Retry) => ("phase.retry_scheduled", "retry"),
                (_, FailDisposition::DeadLetter) => ("phase.dead_lettered", "failure"),
                (_, FailDisposition::Stop) => ("phase.failed", "failure"),
            };
            audit.push(
                AuditEvent::new(kind, outcome, now)
                    .phase(&phase, attempt)
                    .detail(format!("{}: {}", error.code, error.detail)),
            );
            let ph = &mut next.phases[i];
            ph.error_count += 1;
            ph.lease_until = None;
            ph.last_error = Some(error.clone());
            // A cancelled production stays cancelled; anything else shows the failure.
            let cancelled = next.status == ProductionStatus::Cancelled;
            match (error.class, disposition) {
                (ErrorClass::Unexpected, _) | (_, FailDisposition::Stop) => {
                    ph.status = PhaseStatus::Failed;
                    ph.finished_at = Some(now);
                    if !cancelled {
                        next.status = ProductionStatus::Failed;
                    }
                }
                (_, FailDisposition::DeadLetter) => {
                    ph.status = PhaseStatus::DeadLettered;
                    ph.finished_at = Some(now);
                    if !cancelled {
                        next.status = ProductionStatus::DeadLettered;
                    }
                }
                // The redelivered message claims the same attempt again.
                (_, FailDisposition::Retry) => ph.status = PhaseStatus::Queued,
            }
        }
        Command::Pause => {
            if !p.available_actions().contains(&Action::Pause) {
                return Err(unavailable(Action::Pause));
            }
            next.status = ProductionStatus::Paused;
            let at = p
                .current_phase()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            audit.push(
                AuditEvent::new("production.paused", "success", now)
                    .detail(format!("paused at phase {at}")),
            );
        }
        Command::Resume => {
            if !p.available_actions().contains(&Action::Resume) {
                return Err(unavailable(Action::Resume));
            }
            next.status = ProductionStatus::Running;
            let mut event = AuditEvent::new("production.resumed", "success", now);
            match next
                .phases
                .iter_mut()
                .find(|ph| ph.status != PhaseStatus::Succeeded)
            {
                // A phase still running will hand off itself when it commits.
                Some(ph) if ph.status == PhaseStatus::Running => {}
                Some(ph) => {
                    // A new attempt, so a message held while paused is refused as stale.
                    ph.status = PhaseStatus::Queued;
                    ph.attempt += 1;
                    ph.queued_at = Some(now);
                    event = event.phase(&ph.name, ph.attempt);
                    dispatch = Some(Dispatch {
                        phase: ph.name.clone(),
                        attempt: ph.attempt,
                    });
                }
                None => {
                    next.status = ProductionStatus::Completed;
                    event.detail = "every phase had finished; completed".into();
                }
            }
            audit.push(event);
        }
        Command::RetryPhase => {
            if !p.available_actions().contains(&Action::RetryPhase) {
                return Err(unavailable(Action::RetryPhase));
            }
            let ph = next
                .phases
                .iter_mut()
                .find(|ph| matches!(ph.status, PhaseStatus::Failed | PhaseStatus::DeadLettered))
                .expect("a failed production has a failed phase");
            ph.status = PhaseStatus::Queued;
            ph.attempt += 1;
            ph.queued_at = Some(now);
            ph.started_at = None;
            ph.finished_at = None;
            next.status = ProductionStatus::Running;
            audit
                .push(AuditEvent::new("phase.retried", "success", now).phase(&ph.name, ph.attempt));
            dispatch = Some(Dispatch {
                phase: ph.name.clone(),
                attempt: ph.attempt,
            });
        }
        Command::Cancel => {
            if !p.available_actions().contains(&Action::Cancel) {
                return Err(unavailable(Action::Cancel));
            }
            next.status = ProductionStatus::Cancelled;
            audit.push(AuditEvent::new("production.cancelled", "success", now));
        }
    }
    Ok(Transition {
        production: next,
        dispatch,
        audit,
    })
}

fn running_index(p: &Production, phase: &str, attempt: u32) -> Result<usize, DomainError> {
    let i = p
        .phase_index(phase)
        .ok_or_else(|| DomainError::UnknownPhase(phase.into()))?;
    let ph = &p.phases[i];
    if ph.status != PhaseStatus::Running || ph.attempt != attempt {
        return Err(DomainError::NotRunning {
            phase: phase.into(),
            attempt,
        });
    }
    Ok(i)
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
