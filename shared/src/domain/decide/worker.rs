//! A worker's commands: claim a phase, then succeed or fail it.

use super::super::delivery::claim_refusal;
use super::gates::{self, Step};
use super::{DomainError, FailDisposition, Transition};
use crate::domain::{
    AuditEvent, AuditKind, ErrorClass, Millis, Outcome, PhaseError, PhaseStatus, Production,
    ProductionStatus,
};

pub(super) fn claim(
    p: &Production,
    phase: &str,
    attempt: u32,
    lease_until: Millis,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    if let Some(r) = claim_refusal(p, phase, attempt, now) {
        return Err(DomainError::ClaimRefused(r));
    }
    let i = p.phase_index(phase).expect("checked by claim_refusal");
    let ph = &mut t.production.phases[i];
    ph.status = PhaseStatus::Running;
    ph.started_at = Some(now);
    ph.lease_until = Some(lease_until);
    t.production.status = ProductionStatus::Running;
    // No audit event: the commit's event carries started_at, which keeps the audit at one
    // row per transition (see docs/decisions.md, "audit cost").
    Ok(())
}

pub(super) fn succeed(
    p: &Production,
    phase: &str,
    attempt: u32,
    output: String,
    warnings: &[String],
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = running_index(p, phase, attempt)?;
    // Back from an external job, the phase started when the job was sent.
    let started = match &p.phases[i].waiting {
        Some(w) => w.since,
        None => p.phases[i].started_at.unwrap_or(now),
    };
    let next = &mut t.production;
    let ph = &mut next.phases[i];
    ph.status = PhaseStatus::Succeeded;
    ph.started_at = Some(started);
    ph.finished_at = Some(now);
    ph.lease_until = None;
    ph.waiting = None;
    ph.output = Some(output);
    let mut event = AuditEvent::new(AuditKind::PhaseSucceeded, Outcome::Success, now)
        .phase(phase, attempt)
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
    let gated = p.gates.phases.iter().any(|g| g == phase)
        && (!p.gates.auto_approve || p.gates.required.iter().any(|g| g == phase));
    if gated && next.status != ProductionStatus::Cancelled {
        event.detail.push_str("; approval requested");
        t.audit(event);
        let requested = gates::request_approval(p, i, attempt, now, t);
        t.audit(requested);
        return Ok(());
    }
    match next.status {
        // Paused or cancelled while it ran: the work is kept, nothing new starts.
        ProductionStatus::Paused => event.detail.push_str("; paused, next phase held"),
        ProductionStatus::Cancelled => event.detail.push_str("; production cancelled"),
        _ => match gates::advance(&mut t.production, i, now) {
            Step::Dispatch(d) => {
                event.detail.push_str(&format!("; {} queued", d.phase));
                t.dispatch = Some(d);
            }
            Step::Held(held) => {
                t.audit(event);
                event = held;
            }
            Step::Completed => {
                t.audit(event);
                event = AuditEvent::new(AuditKind::ProductionCompleted, Outcome::Success, now);
            }
        },
    }
    t.audit(event);
    Ok(())
}

pub(super) fn fail(
    p: &Production,
    phase: &str,
    attempt: u32,
    error: PhaseError,
    disposition: FailDisposition,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = running_index(p, phase, attempt)?;
    let error = PhaseError {
        attempt,
        at: now,
        ..error
    };
    let (kind, outcome) = match (error.class, disposition) {
        (ErrorClass::Unexpected, _) => (AuditKind::StepUnexpectedError, Outcome::Failure),
        (_, FailDisposition::Hold) => (AuditKind::PhaseHeld, Outcome::Retry),
        (_, FailDisposition::Retry) => (AuditKind::PhaseRetryScheduled, Outcome::Retry),
        (_, FailDisposition::DeadLetter) => (AuditKind::PhaseDeadLettered, Outcome::Failure),
        (_, FailDisposition::Stop) => (AuditKind::PhaseFailed, Outcome::Failure),
    };
    t.audit(
        AuditEvent::new(kind, outcome, now)
            .phase(phase, attempt)
            .detail(format!("{}: {}", error.code, error.detail)),
    );
    let next = &mut t.production;
    // A cancelled production stays cancelled; anything else shows the failure.
    let cancelled = next.status == ProductionStatus::Cancelled;
    let ph = &mut next.phases[i];
    ph.error_count += 1;
    ph.lease_until = None;
    // The job's failure was read (or the run failed before any job): a try after this
    // one sends a job again.
    ph.waiting = None;
    let class = error.class;
    ph.last_error = Some(error);
    let ended = match (class, disposition) {
        (ErrorClass::Unexpected, _) | (_, FailDisposition::Stop) => {
            Some((PhaseStatus::Failed, ProductionStatus::Failed))
        }
        (_, FailDisposition::DeadLetter) => {
            Some((PhaseStatus::DeadLettered, ProductionStatus::DeadLettered))
        }
        // The redelivered message claims the same attempt again.
        (_, FailDisposition::Retry) => {
            ph.status = PhaseStatus::Queued;
            ph.retries += 1;
            None
        }
        (_, FailDisposition::Hold) => {
            ph.status = PhaseStatus::Queued;
            ph.holds += 1;
            None
        }
    };
    if let Some((phase_status, status)) = ended {
        ph.status = phase_status;
        ph.finished_at = Some(now);
        if !cancelled {
            next.status = status;
        }
    }
    Ok(())
}

fn running_index(p: &Production, phase: &str, attempt: u32) -> Result<usize, DomainError> {
    let i = super::known_phase(p, phase)?;
    let ph = &p.phases[i];
    if ph.status != PhaseStatus::Running || ph.attempt != attempt {
        return Err(DomainError::NotRunning {
            phase: phase.into(),
            attempt,
        });
    }
    Ok(i)
}
