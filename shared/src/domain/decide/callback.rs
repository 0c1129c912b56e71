//! A phase that waits for an external job: it hands the job its callback and lets its
//! worker and message go; heartbeats keep its lease; the result brings it back to a worker,
//! the same attempt, to commit (the runner's answer is in the ledger by then).

use super::{DomainError, Transition, known_phase};
use crate::domain::{
    AuditEvent, AuditKind, Millis, Outcome, PhaseStatus, Production, ProductionStatus, Wait,
};

/// The phase's index when `attempt` is the one running (and waiting, with `waiting`).
fn waiting_index(
    p: &Production,
    phase: &str,
    attempt: u32,
    waiting: bool,
) -> Result<usize, DomainError> {
    let i = known_phase(p, phase)?;
    let ph = &p.phases[i];
    if ph.status != PhaseStatus::Running || ph.attempt != attempt || ph.waiting.is_some() != waiting
    {
        return Err(DomainError::NotRunning {
            phase: phase.into(),
            attempt,
        });
    }
    Ok(i)
}

pub(super) fn wait(
    p: &Production,
    phase: &str,
    attempt: u32,
    wait: Wait,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = waiting_index(p, phase, attempt, false)?;
    let event = AuditEvent::new(AuditKind::PhaseWaiting, Outcome::Success, now)
        .phase(phase, attempt)
        .detail(format!(
            "job {} runs outside; a heartbeat every {} s, deadline in {} s",
            wait.job,
            wait.heartbeat_ms / 1000,
            (wait.deadline - now) / 1000
        ));
    let ph = &mut t.production.phases[i];
    ph.lease_until = Some((now + wait.heartbeat_ms).min(wait.deadline));
    ph.waiting = Some(wait);
    t.audit(event);
    Ok(())
}

pub(super) fn heartbeat(
    p: &Production,
    phase: &str,
    attempt: u32,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = waiting_index(p, phase, attempt, true)?;
    let ph = &mut t.production.phases[i];
    let w = ph.waiting.as_mut().expect("checked");
    if w.arrived_at.is_some() || now >= w.deadline {
        return Err(DomainError::NotRunning {
            phase: phase.into(),
            attempt,
        });
    }
    w.heartbeats += 1;
    // No audit row per heartbeat: the count and the lease say it.
    ph.lease_until = Some((now + w.heartbeat_ms).min(w.deadline));
    Ok(())
}

pub(super) fn arrive(
    p: &Production,
    phase: &str,
    attempt: u32,
    succeeded: bool,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let i = waiting_index(p, phase, attempt, true)?;
    if p.phases[i]
        .waiting
        .as_ref()
        .is_some_and(|w| w.arrived_at.is_some())
    {
        return Err(DomainError::NotRunning {
            phase: phase.into(),
            attempt,
        });
    }
    let runs = p.status == ProductionStatus::Running;
    let ph = &mut t.production.phases[i];
    let w = ph.waiting.as_mut().expect("checked");
    w.arrived_at = Some(now);
    let mut event = AuditEvent::new(
        AuditKind::CallbackReceived,
        if succeeded {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        now,
    )
    .phase(phase, attempt)
    .detail(format!(
        "job {} reported {} after {} heartbeat(s)",
        w.job,
        if succeeded { "its result" } else { "a failure" },
        w.heartbeats
    ));
    // Nothing expires while the result waits to be committed.
    ph.lease_until = None;
    if runs {
        to_worker(ph, now);
        t.dispatch(phase, attempt);
    } else {
        event.detail.push_str(&format!(
            "; committed when the production ({}) resumes",
            p.status.as_str()
        ));
    }
    t.audit(event);
    Ok(())
}

/// The phase goes back to a worker, the same attempt: its run finds the job's result in
/// the ledger and commits it. The wait is kept (arrived) until the phase ends, so a
/// repeated callback is recognised.
pub(super) fn to_worker(ph: &mut crate::domain::PhaseState, now: Millis) {
    ph.status = PhaseStatus::Queued;
    ph.queued_at = Some(now);
    ph.lease_until = None;
}
