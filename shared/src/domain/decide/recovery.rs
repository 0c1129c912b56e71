//! Recovery: what the sweep and the runtime do for a production nobody else will move on:
//! a lost dispatch, a worker that died mid-phase, a redriven dead letter, a dead letter
//! nobody marked.

use super::{DomainError, Transition, known_phase, requeue};
use crate::domain::{
    AuditEvent, AuditKind, ErrorClass, Millis, Outcome, PhaseError, PhaseStatus, Production,
    ProductionStatus,
};

pub(super) fn redispatch(
    p: &Production,
    phase: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = known_phase(p, phase)?;
    let runs = matches!(
        p.status,
        ProductionStatus::Queued | ProductionStatus::Running
    );
    let ph = &mut t.production.phases[i];
    if ph.status != PhaseStatus::Queued || !runs {
        return Err(DomainError::Invalid(format!(
            "phase {phase} is not waiting for a worker"
        )));
    }
    ph.queued_at = Some(now);
    let attempt = ph.attempt;
    t.audit(
        AuditEvent::new(AuditKind::PhaseRedispatched, Outcome::Success, now).phase(phase, attempt),
    );
    t.dispatch(phase, attempt);
    Ok(())
}

pub(super) fn reconcile(
    p: &Production,
    phase: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = known_phase(p, phase)?;
    let ph = &mut t.production.phases[i];
    let expired = ph.lease_until.is_some_and(|l| l <= now);
    if ph.status != PhaseStatus::Running || !expired {
        return Err(DomainError::Invalid(format!(
            "phase {phase} has no expired lease"
        )));
    }
    let lost = ph.attempt;
    if let Some(w) = ph.waiting.clone().filter(|w| now >= w.deadline) {
        // Past its deadline, a job is not started again: the phase fails.
        let error = PhaseError {
            attempt: lost,
            at: now,
            ..PhaseError::new(
                crate::domain::ErrorCode::CallbackDeadline,
                ErrorClass::Permanent,
                format!(
                    "job {} sent no result within its deadline ({} s, {} heartbeat(s))",
                    w.job,
                    (w.deadline - w.since) / 1000,
                    w.heartbeats
                ),
            )
        };
        let event = AuditEvent::new(AuditKind::CallbackDeadline, Outcome::Failure, now)
            .phase(phase, lost)
            .detail(format!("{}: {}", error.code, error.detail));
        ph.status = PhaseStatus::Failed;
        ph.finished_at = Some(now);
        ph.lease_until = None;
        ph.waiting = None;
        ph.error_count += 1;
        ph.last_error = Some(error);
        if p.status != ProductionStatus::Cancelled {
            t.production.status = ProductionStatus::Failed;
        }
        t.audit(event);
        return Ok(());
    }
    let silent = ph.waiting.as_ref().map(|w| w.job.clone());
    requeue(ph, now);
    let attempt = ph.attempt;
    t.audit(
        AuditEvent::new(AuditKind::ToolCallUnknown, Outcome::Unknown, now)
            .phase(phase, lost)
            .detail(match silent {
                Some(job) => format!(
                    "job {job} missed its heartbeat; the next attempt starts a new job"
                ),
                None => "the worker stopped mid-phase; unrecorded tool calls are retried under their keys".into(),
            }),
    );
    // A paused production keeps the phase queued; resume dispatches it.
    if p.status == ProductionStatus::Running {
        t.audit(
            AuditEvent::new(AuditKind::PhaseReconciled, Outcome::Success, now)
                .phase(phase, attempt),
        );
        t.dispatch(phase, attempt);
    }
    Ok(())
}

pub(super) fn redrive(
    p: &Production,
    phase: &str,
    attempt: u32,
    message_id: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = known_phase(p, phase)?;
    let ph = &mut t.production.phases[i];
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
    let next = ph.attempt;
    t.production.status = ProductionStatus::Running;
    t.audit(
        AuditEvent::new(AuditKind::DlqRedriven, Outcome::Success, now)
            .phase(phase, next)
            .detail(format!(
                "DLQ message {message_id}: attempt {attempt} -> {next}"
            )),
    );
    t.dispatch(phase, next);
    Ok(())
}

pub(super) fn observe_dead_letter(
    p: &Production,
    phase: &str,
    attempt: u32,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = known_phase(p, phase)?;
    let ph = &mut t.production.phases[i];
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
    if t.production.status != ProductionStatus::Cancelled {
        t.production.status = ProductionStatus::DeadLettered;
    }
    t.audit(
        AuditEvent::new(AuditKind::PhaseDeadLettered, Outcome::Failure, now).phase(phase, attempt),
    );
    Ok(())
}

pub(super) fn handoff_lost(
    p: &Production,
    phase: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = known_phase(p, phase)?;
    let ph = &p.phases[i];
    let runs = matches!(
        p.status,
        ProductionStatus::Queued | ProductionStatus::Running
    );
    if ph.status != PhaseStatus::Queued || !runs {
        return Err(DomainError::Invalid(format!(
            "phase {phase} is not waiting for its message"
        )));
    }
    t.production.due_at = Some(now);
    t.audit(
        AuditEvent::new(AuditKind::HandoffLost, Outcome::Retry, now)
            .phase(phase, ph.attempt)
            .detail("its message could not be sent; the recovery sweep sends it"),
    );
    Ok(())
}
