//! Gates: an approval after a phase (approve, reject with feedback, expiry), and the
//! warnings acknowledgement that holds the publishing phase.

use super::{Dispatch, DomainError, Transition, operator_text, requeue};
use crate::domain::{
    Approval, AuditEvent, AuditKind, ErrorClass, GateKind, Millis, OnExpiry, Outcome, PhaseError,
    PhaseStatus, Production, ProductionStatus,
};

/// What follows a finished (or approved) phase.
pub(super) enum Step {
    Dispatch(Dispatch),
    /// The next phase waits for the warnings to be acknowledged (the event says so).
    Held(AuditEvent),
    Completed,
}

/// Opens a gate after phase `i` (it expires; held even if paused: resume returns to it);
/// returns the phase's name.
fn hold(p: &mut Production, kind: GateKind, i: usize, attempt: u32, now: Millis) -> String {
    let phase = p.phases[i].name.clone();
    p.approval = Some(Approval {
        kind,
        phase: phase.clone(),
        attempt,
        requested_at: now,
        expires_at: now + p.gates.ttl,
        renewals: 0,
    });
    if p.status != ProductionStatus::Paused {
        p.status = ProductionStatus::AwaitingApproval;
    }
    phase
}

/// Opens the approval gate after phase `i`.
pub(super) fn request_approval(
    p: &Production,
    i: usize,
    attempt: u32,
    now: Millis,
    t: &mut Transition,
) -> AuditEvent {
    let phase = hold(&mut t.production, GateKind::Approval, i, attempt, now);
    AuditEvent::new(AuditKind::ApprovalRequested, Outcome::Success, now)
        .phase(&phase, attempt)
        .detail(format!("expires in {} s", p.gates.ttl / 1000))
}

/// Queues the phase after `i` (a new attempt), holds it for unacknowledged warnings, or
/// completes the production.
pub(super) fn advance(p: &mut Production, i: usize, now: Millis) -> Step {
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
pub(super) fn step(i: usize, now: Millis, t: &mut Transition) {
    match advance(&mut t.production, i, now) {
        Step::Dispatch(d) => t.dispatch = Some(d),
        Step::Held(e) => t.audit(e),
        Step::Completed => t.audit(AuditEvent::new(
            AuditKind::ProductionCompleted,
            Outcome::Success,
            now,
        )),
    }
}

/// Whether phase `name` may not start yet: it is the gated one and warnings are open.
pub(super) fn held_for_warnings(p: &Production, name: &str) -> bool {
    p.gates.acknowledge_before.as_deref() == Some(name)
        && !p.warnings.is_empty()
        && p.warnings_acknowledged_at.is_none()
}

/// Opens the warnings gate after phase `after` (it expires like an approval).
pub(super) fn open_warnings_gate(p: &mut Production, after: usize, now: Millis) -> AuditEvent {
    let attempt = p.phases[after].attempt;
    let phase = hold(p, GateKind::Warnings, after, attempt, now);
    AuditEvent::new(AuditKind::WarningsRequested, Outcome::Success, now)
        .phase(&phase, attempt)
        .detail(format!(
            "{} must not start before these are acknowledged: {}",
            p.gates.acknowledge_before.as_deref().unwrap_or("-"),
            p.warnings.join("; ")
        ))
}

/// Takes the open gate; the production runs again.
fn open_gate(p: &Production, t: &mut Transition) -> (Approval, usize) {
    let a = t
        .production
        .approval
        .take()
        .expect("awaiting approval has a gate");
    let i = p.phase_index(&a.phase).expect("gated phase exists");
    t.production.status = ProductionStatus::Running;
    (a, i)
}

pub(super) fn approve(p: &Production, now: Millis, t: &mut Transition) {
    let (a, i) = open_gate(p, t);
    t.audit(
        AuditEvent::new(AuditKind::ApprovalApproved, Outcome::Success, now)
            .phase(&a.phase, a.attempt),
    );
    step(i, now, t);
}

pub(super) fn acknowledge(p: &Production, now: Millis, t: &mut Transition) {
    let (a, i) = open_gate(p, t);
    t.production.warnings_acknowledged_at = Some(now);
    t.audit(
        AuditEvent::new(AuditKind::WarningsAcknowledged, Outcome::Success, now)
            .phase(&a.phase, a.attempt)
            .detail(t.production.warnings.join("; ")),
    );
    step(i, now, t);
}

pub(super) fn reject(
    p: &Production,
    feedback: &str,
    from: Option<&str>,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let feedback = operator_text(
        feedback,
        "reject needs feedback: what should the phase do differently?",
        "feedback",
    )?;
    if p.status != ProductionStatus::AwaitingApproval {
        return rework(p, feedback, from, now, t);
    }
    // A refusal discards the transition, so the gate can be opened before `from` is checked.
    let (a, gated) = open_gate(p, t);
    let to = rerun_start(p, from, gated, || {
        format!(
            "the phase waiting for approval ({}) or an earlier one",
            p.phases[gated].name
        )
    })?;
    let (name, attempt) = rerun_from(t, to, &feedback, now);
    let detail = if to == gated {
        feedback
    } else {
        format!("re-run from {name}: {feedback}")
    };
    t.audit(
        AuditEvent::new(AuditKind::ApprovalRejected, Outcome::Success, now)
            .phase(&a.phase, a.attempt)
            .detail(detail),
    );
    t.dispatch(&name, attempt);
    Ok(())
}

/// Reject without an open approval (seed 001: "reject from a working earlier phase and
/// reword"): on a failed or dead-lettered production, or a paused one, re-runs from `from`
/// (by default the phase that broke or was next) with the feedback, every phase from there
/// on with new calls; the phases before it keep their outputs. A failed production runs
/// again at once; a paused one stays paused until `resume`.
fn rework(
    p: &Production,
    feedback: String,
    from: Option<&str>,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let broke = p
        .phases
        .iter()
        .position(|ph| !ph.status.is_done())
        .ok_or_else(|| DomainError::Invalid("every phase is done: nothing to re-run".into()))?;
    let to = rerun_start(p, from, broke, || {
        format!(
            "{} (where the production stopped) or an earlier phase",
            p.phases[broke].name
        )
    })?;
    // Paused at a gate: the re-run replaces the approval it waited for.
    t.production.approval = None;
    let (name, attempt) = rerun_from(t, to, &feedback, now);
    t.audit(
        AuditEvent::new(AuditKind::ProductionReworked, Outcome::Success, now)
            .phase(&name, attempt)
            .detail(format!("re-run from {name}: {feedback}")),
    );
    if p.status != ProductionStatus::Paused {
        t.production.status = ProductionStatus::Running;
        t.dispatch(&name, attempt);
    }
    Ok(())
}

/// Where a reject's re-run starts: the phase `from` names, no later than `last` (what
/// `allowed` describes in the refusal), or `last` itself.
fn rerun_start(
    p: &Production,
    from: Option<&str>,
    last: usize,
    allowed: impl FnOnce() -> String,
) -> Result<usize, DomainError> {
    let Some(name) = from else {
        return Ok(last);
    };
    let to = super::known_phase(p, name)?;
    if to > last {
        return Err(DomainError::Invalid(format!(
            "reject re-runs {}; {name} comes after it",
            allowed()
        )));
    }
    Ok(to)
}

/// Re-runs from phase `to` with `feedback`: new inputs from there on (the phases re-run
/// make new calls, reusing none of theirs), later phases pending again. The re-run's phase
/// and attempt.
fn rerun_from(t: &mut Transition, to: usize, feedback: &str, now: Millis) -> (String, u32) {
    t.production.revision += 1;
    for ph in &mut t.production.phases[to + 1..] {
        ph.status = PhaseStatus::Pending;
    }
    let ph = &mut t.production.phases[to];
    requeue(ph, now);
    ph.feedback = Some(feedback.to_string());
    (ph.name.clone(), ph.attempt)
}

pub(super) fn expire(p: &Production, now: Millis, t: &mut Transition) -> Result<(), DomainError> {
    let Some(a) = t.production.approval.clone() else {
        return Err(DomainError::Invalid("there is no open approval".into()));
    };
    if a.expires_at > now || p.status != ProductionStatus::AwaitingApproval {
        return Err(DomainError::Invalid("the approval has not expired".into()));
    }
    match p.gates.on_expiry {
        OnExpiry::Renew => {
            let renewed = t.production.approval.as_mut().expect("checked");
            renewed.expires_at = now + p.gates.ttl;
            renewed.renewals += 1;
            let detail = format!("expired unanswered; renewal {}", renewed.renewals);
            t.audit(
                AuditEvent::new(AuditKind::ApprovalRenewed, Outcome::Success, now)
                    .phase(&a.phase, a.attempt)
                    .detail(detail),
            );
        }
        OnExpiry::Fail => {
            let next = &mut t.production;
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
            t.audit(
                AuditEvent::new(AuditKind::ApprovalExpired, Outcome::Failure, now)
                    .phase(&a.phase, a.attempt),
            );
        }
    }
    Ok(())
}
