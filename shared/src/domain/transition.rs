use serde::{Deserialize, Serialize};

use super::{
    Action, Approval, ErrorClass, GateKind, GatePolicy, Millis, OnExpiry, PhaseError, PhaseState,
    PhaseStatus, Production, ProductionStatus,
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
        /// Flags the output raised (e.g. `scene 2: copyright_risk`); see `GatePolicy`.
        warnings: Vec<String>,
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
    /// Approve the gated phase: the next phase starts.
    Approve,
    /// Re-run the gated phase with the operator's feedback in its input.
    Reject {
        feedback: String,
    },
    /// The production's settings changed (the brief is stored by the adapter).
    Edit {
        fields: Vec<String>,
    },
    Cancel,
    /// Admin only (checked by the caller); a reason is required.
    Override {
        reason: String,
        target: OverrideTarget,
    },
    /// Sweeper: a queued phase was never claimed; send its message again (same attempt).
    Redispatch {
        phase: String,
    },
    /// Sweeper: a running phase's lease expired (its worker died); run it again (attempt + 1).
    Reconcile {
        phase: String,
    },
    /// Sweeper: the open approval expired; apply the production's policy.
    ExpireApproval,
    /// An operator read the production's warnings; the held phase may start.
    AcknowledgeWarnings,
    /// Sweeper: the phase's message reached its DLQ without the runtime marking the phase
    /// (the worker died on its last receive).
    ObserveDeadLetter {
        phase: String,
        attempt: u32,
    },
    /// A dead-lettered attempt's message came back (Shepherd's redrive, the console's, or
    /// `start-message-move-task`): run the phase again as attempt + 1, keeping the lineage.
    Redrive {
        phase: String,
        attempt: u32,
        message_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideTarget {
    /// Pass the open approval gate without an approval.
    SkipGate,
    /// Run this phase next; earlier phases not done are skipped, later ones reset.
    JumpTo(String),
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
    pub fn new(kind: &str, outcome: &str, at: Millis) -> Self {
        Self {
            kind: kind.into(),
            phase: None,
            attempt: None,
            outcome: outcome.into(),
            at,
            detail: String::new(),
        }
    }
    pub fn phase(mut self, phase: &str, attempt: u32) -> Self {
        self.phase = Some(phase.into());
        self.attempt = Some(attempt);
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
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
    /// The attempt was claimed and its lease ran out: the worker died or timed out
    /// mid-phase. Not run as it is: reconciled first (`tool_call.unknown`, attempt + 1).
    LeaseExpired,
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
    #[error("{0}")]
    Invalid(String),
}

/// Feedback and reasons live in the hot item and its audit event; this keeps both small.
pub const MAX_OPERATOR_TEXT: usize = 2000;

/// Which transitions leave work for the sweep: a dispatch sent by an operator or by the
/// sweep itself (no SQS message stands behind it yet), and an open approval (it expires).
/// A phase's own hand-off is not due: if its send is lost, SQS redelivers the finished
/// phase's message and the runtime sends again.
fn due_after(cmd: &Command, next: &Production, dispatched: bool, now: Millis) -> Option<Millis> {
    if let (ProductionStatus::AwaitingApproval, Some(a)) = (next.status, &next.approval) {
        return Some(a.expires_at);
    }
    let handoff = matches!(
        cmd,
        Command::Succeed { .. } | Command::Fail { .. } | Command::Claim { .. }
    );
    (dispatched && !handoff).then_some(now)
}

/// A new production with its first phase queued (attempt 1).
pub fn start(
    id: String,
    account: String,
    pipeline: String,
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
        pipeline,
        status: ProductionStatus::Queued,
        version: 1,
        phases: states,
        trace_id,
        created_at: now,
        updated_at: now,
        gates,
        approval: None,
        overridden: false,
        revision: 0,
        warnings: vec![],
        warnings_acknowledged_at: None,
        due_at: Some(now),
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
        PhaseStatus::Succeeded
        | PhaseStatus::Failed
        | PhaseStatus::DeadLettered
        | PhaseStatus::Skipped => {
            return Some(ClaimRefusal::AlreadyFinished);
        }
        PhaseStatus::Pending => return Some(ClaimRefusal::Stale),
        PhaseStatus::Running if ph.lease_until.is_some_and(|l| l > now) => {
            return Some(ClaimRefusal::Duplicate);
        }
        PhaseStatus::Running => return Some(ClaimRefusal::LeaseExpired),
        PhaseStatus::Queued => {}
    }
    match p.status {
        ProductionStatus::Queued | ProductionStatus::Running => None,
        ProductionStatus::Paused => Some(ClaimRefusal::Paused),
        _ => Some(ClaimRefusal::NotRunnable),
    }
}

/// The state machine. Pure: the same inputs always give the same transition.
pub fn decide(p: &Production, cmd: Command, now: Millis) -> Result<Transition, DomainError> {
    let mut t = decide_inner(p, cmd.clone(), now)?;
    t.production.due_at = due_after(&cmd, &t.production, t.dispatch.is_some(), now);
    Ok(t)
}

fn decide_inner(p: &Production, cmd: Command, now: Millis) -> Result<Transition, DomainError> {
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
            warnings,
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
            // This phase's warnings replace those of its earlier runs; new ones need a new
            // acknowledgement.
            let prefix = format!("{phase}: ");
            next.warnings.retain(|w| !w.starts_with(&prefix));
            if !warnings.is_empty() {
                event
                    .detail
                    .push_str(&format!("; {} warning(s)", warnings.len()));
                next.warnings
                    .extend(warnings.iter().map(|w| format!("{prefix}{w}")));
                next.warnings_acknowledged_at = None;
            }
            let gated = p.gates.phases.contains(&phase) && !p.gates.auto_approve;
            if gated && next.status != ProductionStatus::Cancelled {
                // Held even if paused: resume returns to the open approval.
                next.approval = Some(Approval {
                    kind: GateKind::Approval,
                    phase: phase.clone(),
                    attempt,
                    requested_at: now,
                    expires_at: now + p.gates.ttl,
                    renewals: 0,
                });
                if next.status != ProductionStatus::Paused {
                    next.status = ProductionStatus::AwaitingApproval;
                }
                event.detail.push_str("; approval requested");
                audit.push(event);
                event = AuditEvent::new("approval.requested", "success", now)
                    .phase(&phase, attempt)
                    .detail(format!("expires in {} s", p.gates.ttl / 1000));
            } else {
                match next.status {
                    // Paused or cancelled while it ran: the work is kept, nothing new starts.
                    ProductionStatus::Paused => event.detail.push_str("; paused, next phase held"),
                    ProductionStatus::Cancelled => event.detail.push_str("; production cancelled"),
                    _ => match advance(&mut next, i, now) {
                        Step::Dispatch(d) => {
                            event.detail.push_str(&format!("; {} queued", d.phase));
                            dispatch = Some(d);
                        }
                        Step::Held(held) => {
                            audit.push(event);
                            event = held;
                        }
                        Step::Completed => {
                            audit.push(event);
                            event = AuditEvent::new("production.completed", "success", now);
                        }
                    },
                }
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
            if next.approval.is_some() {
                next.status = ProductionStatus::AwaitingApproval;
                event.detail = "back to the open approval".into();
                audit.push(event);
                return Ok(Transition {
                    production: next,
                    dispatch,
                    audit,
                });
            }
            let undone = next.phases.iter().position(|ph| !ph.status.is_done());
            if let Some(j) = undone.filter(|j| *j > 0)
                && next.phases[j].status != PhaseStatus::Running
                && held_for_warnings(&next, &next.phases[j].name.clone())
            {
                audit.push(event);
                audit.push(open_warnings_gate(&mut next, j - 1, now));
                return Ok(Transition {
                    production: next,
                    dispatch,
                    audit,
                });
            }
            match next.phases.iter_mut().find(|ph| !ph.status.is_done()) {
                // A phase still running will hand off itself when it commits.
                Some(ph) if ph.status == PhaseStatus::Running => {}
                Some(ph) => {
                    // A new attempt, so a message held while paused is refused as stale.
                    requeue(ph, now);
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
        Command::Approve => {
            if !p.available_actions().contains(&Action::Approve) {
                return Err(unavailable(Action::Approve));
            }
            let a = next
                .approval
                .take()
                .expect("awaiting approval has an approval");
            let i = p.phase_index(&a.phase).expect("gated phase exists");
            next.status = ProductionStatus::Running;
            audit.push(
                AuditEvent::new("approval.approved", "success", now).phase(&a.phase, a.attempt),
            );
            step(&mut next, i, now, &mut dispatch, &mut audit);
        }
        Command::AcknowledgeWarnings => {
            if !p.available_actions().contains(&Action::AcknowledgeWarnings) {
                return Err(unavailable(Action::AcknowledgeWarnings));
            }
            let a = next
                .approval
                .take()
                .expect("awaiting acknowledgement has a gate");
            let i = p.phase_index(&a.phase).expect("gated phase exists");
            next.status = ProductionStatus::Running;
            next.warnings_acknowledged_at = Some(now);
            audit.push(
                AuditEvent::new("warnings.acknowledged", "success", now)
                    .phase(&a.phase, a.attempt)
                    .detail(next.warnings.join("; ")),
            );
            step(&mut next, i, now, &mut dispatch, &mut audit);
        }
        Command::Reject { feedback } => {
            if !p.available_actions().contains(&Action::Reject) {
                return Err(unavailable(Action::Reject));
            }
            let feedback = feedback.trim().to_string();
            if feedback.is_empty() {
                return Err(DomainError::Invalid(
                    "reject needs feedback: what should the phase do differently?".into(),
                ));
            }
            if feedback.chars().count() > MAX_OPERATOR_TEXT {
                return Err(DomainError::Invalid(format!(
                    "feedback is {} characters; at most {MAX_OPERATOR_TEXT}",
                    feedback.chars().count()
                )));
            }
            let a = next
                .approval
                .take()
                .expect("awaiting approval has an approval");
            let i = p.phase_index(&a.phase).expect("gated phase exists");
            next.status = ProductionStatus::Running;
            next.revision += 1;
            let ph = &mut next.phases[i];
            requeue(ph, now);
            ph.feedback = Some(feedback.clone());
            audit.push(
                AuditEvent::new("approval.rejected", "success", now)
                    .phase(&a.phase, a.attempt)
                    .detail(feedback),
            );
            dispatch = Some(Dispatch {
                phase: ph.name.clone(),
                attempt: ph.attempt,
            });
        }
        Command::Edit { fields } => {
            if !p.available_actions().contains(&Action::Edit) {
                return Err(unavailable(Action::Edit));
            }
            if fields.is_empty() {
                return Err(DomainError::Invalid("edit changes nothing".into()));
            }
            next.revision += 1;
            audit.push(
                AuditEvent::new("production.edited", "success", now)
                    .detail(format!("changed {}", fields.join(", "))),
            );
        }
        Command::Cancel => {
            if !p.available_actions().contains(&Action::Cancel) {
                return Err(unavailable(Action::Cancel));
            }
            next.status = ProductionStatus::Cancelled;
            audit.push(AuditEvent::new("production.cancelled", "success", now));
        }
        Command::Override { reason, target } => {
            if !p.available_actions().contains(&Action::Override) {
                return Err(unavailable(Action::Override));
            }
            let reason = reason.trim().to_string();
            if reason.is_empty() {
                return Err(DomainError::Invalid("an override needs a reason".into()));
            }
            if reason.chars().count() > MAX_OPERATOR_TEXT {
                return Err(DomainError::Invalid(format!(
                    "the reason is {} characters; at most {MAX_OPERATOR_TEXT}",
                    reason.chars().count()
                )));
            }
            next.overridden = true;
            match target {
                OverrideTarget::SkipGate => {
                    let Some(a) = next.approval.take() else {
                        return Err(DomainError::Invalid(
                            "there is no open approval to skip".into(),
                        ));
                    };
                    let i = p.phase_index(&a.phase).expect("gated phase exists");
                    next.status = ProductionStatus::Running;
                    let gate = match a.kind {
                        GateKind::Approval => "the approval gate",
                        GateKind::Warnings => {
                            next.warnings_acknowledged_at = Some(now);
                            "the warnings acknowledgement"
                        }
                    };
                    audit.push(
                        AuditEvent::new("override.applied", "success", now)
                            .phase(&a.phase, a.attempt)
                            .detail(format!("skipped {gate}: {reason}")),
                    );
                    step(&mut next, i, now, &mut dispatch, &mut audit);
                }
                OverrideTarget::JumpTo(target) => {
                    let t = p
                        .phase_index(&target)
                        .ok_or_else(|| DomainError::UnknownPhase(target.clone()))?;
                    if p.phases.iter().any(|ph| ph.status == PhaseStatus::Running) {
                        return Err(DomainError::Invalid(
                            "a phase is running; wait for it to finish before jumping".into(),
                        ));
                    }
                    next.approval = None;
                    next.status = ProductionStatus::Running;
                    for (j, ph) in next.phases.iter_mut().enumerate() {
                        if j < t && !ph.status.is_done() {
                            ph.status = PhaseStatus::Skipped;
                        } else if j > t && ph.status != PhaseStatus::Pending {
                            ph.status = PhaseStatus::Pending;
                        }
                    }
                    let ph = &mut next.phases[t];
                    requeue(ph, now);
                    audit.push(
                        AuditEvent::new("override.applied", "success", now)
                            .phase(&target, ph.attempt)
                            .detail(format!("jumped to {target}: {reason}")),
                    );
                    dispatch = Some(Dispatch {
                        phase: target,
                        attempt: ph.attempt,
                    });
                }
            }
        }
        Command::Redispatch { phase } => {
            let i = known_phase(p, &phase)?;
            let ph = &mut next.phases[i];
            let runs = matches!(
                p.status,
                ProductionStatus::Queued | ProductionStatus::Running
            );
            if ph.status != PhaseStatus::Queued || !runs {
                return Err(DomainError::Invalid(format!(
                    "phase {phase} is not waiting for a worker"
                )));
            }
            ph.queued_at = Some(now);
            audit.push(
                AuditEvent::new("phase.redispatched", "success", now).phase(&phase, ph.attempt),
            );
            dispatch = Some(Dispatch {
                phase,
                attempt: ph.attempt,
            });
        }
        Command::Reconcile { phase } => {
            let i = known_phase(p, &phase)?;
            let ph = &mut next.phases[i];
            let expired = ph.lease_until.is_some_and(|l| l <= now);
            if ph.status != PhaseStatus::Running || !expired {
                return Err(DomainError::Invalid(format!(
                    "phase {phase} has no expired lease"
                )));
            }
            let lost = ph.attempt;
            audit.push(
                AuditEvent::new("tool_call.unknown", "unknown", now)
                    .phase(&phase, lost)
                    .detail("the worker stopped mid-phase; unrecorded tool calls are retried under their keys"),
            );
            requeue(ph, now);
            // A paused production keeps the phase queued; resume dispatches it.
            if p.status == ProductionStatus::Running {
                audit.push(
                    AuditEvent::new("phase.reconciled", "success", now).phase(&phase, ph.attempt),
                );
                dispatch = Some(Dispatch {
                    phase,
                    attempt: ph.attempt,
                });
            }
        }
        Command::Redrive {
            phase,
            attempt,
            message_id,
        } => {
            let i = known_phase(p, &phase)?;
            let ph = &mut next.phases[i];
            if ph.status != PhaseStatus::DeadLettered
                || ph.attempt != attempt
                || p.status != ProductionStatus::DeadLettered
            {
                return Err(DomainError::Invalid(format!(
                    "phase {phase} attempt {attempt} is not dead-lettered (it is {} at attempt {}, production {})",
                    ph.status.as_str(),
                    ph.attempt,
                    p.status.as_str()
                )));
            }
            requeue(ph, now);
            next.status = ProductionStatus::Running;
            audit.push(
                AuditEvent::new("dlq.redriven", "success", now)
                    .phase(&phase, ph.attempt)
                    .detail(format!(
                        "DLQ message {message_id}: attempt {attempt} -> {}",
                        ph.attempt
                    )),
            );
            dispatch = Some(Dispatch {
                phase,
                attempt: ph.attempt,
            });
        }
        Command::ObserveDeadLetter { phase, attempt } => {
            let i = known_phase(p, &phase)?;
            let ph = &mut next.phases[i];
            let open = matches!(ph.status, PhaseStatus::Queued | PhaseStatus::Running);
            if ph.attempt != attempt || !open {
                return Err(DomainError::Invalid(format!(
                    "phase {phase} attempt {attempt} is not waiting or running"
                )));
            }
            ph.status = PhaseStatus::DeadLettered;
            ph.lease_until = None;
            ph.finished_at = Some(now);
            ph.error_count += 1;
            ph.last_error = Some(PhaseError {
                attempt,
                at: now,
                ..PhaseError::new(
                    "dead_lettered_unhandled",
                    ErrorClass::Retryable,
                    "the message reached the DLQ after its last receive without a result (the worker stopped)",
                )
            });
            if next.status != ProductionStatus::Cancelled {
                next.status = ProductionStatus::DeadLettered;
            }
            audit.push(
                AuditEvent::new("phase.dead_lettered", "failure", now).phase(&phase, attempt),
            );
        }
        Command::ExpireApproval => {
            let Some(a) = next.approval.clone() else {
                return Err(DomainError::Invalid("there is no open approval".into()));
            };
            if a.expires_at > now || p.status != ProductionStatus::AwaitingApproval {
                return Err(DomainError::Invalid("the approval has not expired".into()));
            }
            match p.gates.on_expiry {
                OnExpiry::Renew => {
                    let renewed = next.approval.as_mut().expect("checked");
                    renewed.expires_at = now + p.gates.ttl;
                    renewed.renewals += 1;
                    audit.push(
                        AuditEvent::new("approval.renewed", "success", now)
                            .phase(&a.phase, a.attempt)
                            .detail(format!("expired unanswered; renewal {}", renewed.renewals)),
                    );
                }
                OnExpiry::Fail => {
                    next.approval = None;
                    next.status = ProductionStatus::Failed;
                    let i = p.phase_index(&a.phase).expect("gated phase exists");
                    let ph = &mut next.phases[i];
                    ph.status = PhaseStatus::Failed;
                    ph.error_count += 1;
                    ph.last_error = Some(PhaseError {
                        attempt: a.attempt,
                        at: now,
                        ..PhaseError::new(
                            "approval_expired",
                            ErrorClass::Permanent,
                            "no approval before the deadline; retry the phase or cancel",
                        )
                    });
                    audit.push(
                        AuditEvent::new("approval.expired", "failure", now)
                            .phase(&a.phase, a.attempt),
                    );
                }
            }
        }
    }
    Ok(Transition {
        production: next,
        dispatch,
        audit,
    })
}

fn known_phase(p: &Production, phase: &str) -> Result<usize, DomainError> {
    p.phase_index(phase)
        .ok_or_else(|| DomainError::UnknownPhase(phase.into()))
}

/// What follows a finished (or approved) phase.
enum Step {
    Dispatch(Dispatch),
    /// The next phase waits for the warnings to be acknowledged (the event says so).
    Held(AuditEvent),
    Completed,
}

/// Queues the phase after `i` (a new attempt), holds it for unacknowledged warnings, or
/// completes the production.
fn advance(p: &mut Production, i: usize, now: Millis) -> Step {
    let Some(name) = p.phases.get(i + 1).map(|n| n.name.clone()) else {
        p.status = ProductionStatus::Completed;
        return Step::Completed;
    };
    if held_for_warnings(p, &name) {
        return Step::Held(open_warnings_gate(p, i, now));
    }
    let n = &mut p.phases[i + 1];
    requeue(n, now);
    Step::Dispatch(Dispatch {
        phase: n.name.clone(),
        attempt: n.attempt,
    })
}

/// `advance`, recording the dispatch or the audit event it leads to.
fn step(
    p: &mut Production,
    i: usize,
    now: Millis,
    dispatch: &mut Option<Dispatch>,
    audit: &mut Vec<AuditEvent>,
) {
    match advance(p, i, now) {
        Step::Dispatch(d) => *dispatch = Some(d),
        Step::Held(e) => audit.push(e),
        Step::Completed => audit.push(AuditEvent::new("production.completed", "success", now)),
    }
}

/// Whether phase `name` may not start yet: it is the gated one and warnings are open.
fn held_for_warnings(p: &Production, name: &str) -> bool {
    p.gates.acknowledge_before.as_deref() == Some(name)
        && !p.warnings.is_empty()
        && p.warnings_acknowledged_at.is_none()
}

/// Opens the warnings gate after phase `after` (it expires like an approval).
fn open_warnings_gate(p: &mut Production, after: usize, now: Millis) -> AuditEvent {
    let ph = &p.phases[after];
    let (phase, attempt) = (ph.name.clone(), ph.attempt);
    p.approval = Some(Approval {
        kind: GateKind::Warnings,
        phase: phase.clone(),
        attempt,
        requested_at: now,
        expires_at: now + p.gates.ttl,
        renewals: 0,
    });
    if p.status != ProductionStatus::Paused {
        p.status = ProductionStatus::AwaitingApproval;
    }
    AuditEvent::new("warnings.acknowledgement_requested", "success", now)
        .phase(&phase, attempt)
        .detail(format!(
            "{} must not start before these are acknowledged: {}",
            p.gates.acknowledge_before.as_deref().unwrap_or("-"),
            p.warnings.join("; ")
        ))
}

/// A fresh attempt of `ph`, waiting for a worker.
fn requeue(ph: &mut PhaseState, now: Millis) {
    ph.status = PhaseStatus::Queued;
    ph.attempt += 1;
    ph.queued_at = Some(now);
    ph.started_at = None;
    ph.lease_until = None;
    ph.finished_at = None;
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
