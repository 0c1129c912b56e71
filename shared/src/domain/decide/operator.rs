//! An operator's commands on the production's course: pause, resume, retry, edit, cancel,
//! and an admin's override. The availability guard in `decide` ran first.

use super::gates::{held_for_warnings, open_warnings_gate, step};
use super::{DomainError, Transition, operator_text, requeue};
use crate::domain::{
    AuditEvent, AuditKind, GateKind, Millis, Outcome, OverrideMark, OverrideTarget, PhaseStatus,
    Production, ProductionStatus, SuppliedOutput, output_key,
};

pub(super) fn pause(p: &Production, now: Millis, t: &mut Transition) {
    t.production.status = ProductionStatus::Paused;
    let at = p
        .current_phase()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    t.audit(
        AuditEvent::new(AuditKind::ProductionPaused, Outcome::Success, now)
            .detail(format!("paused at phase {at}")),
    );
}

pub(super) fn resume(now: Millis, t: &mut Transition) {
    let next = &mut t.production;
    next.status = ProductionStatus::Running;
    let mut event = AuditEvent::new(AuditKind::ProductionResumed, Outcome::Success, now);
    if next.approval.is_some() {
        next.status = ProductionStatus::AwaitingApproval;
        event.detail = "back to the open approval".into();
        t.audit(event);
        return;
    }
    let undone = next.phases.iter().position(|ph| !ph.status.is_done());
    if let Some(j) = undone.filter(|j| *j > 0)
        && next.phases[j].status != PhaseStatus::Running
        && held_for_warnings(next, &next.phases[j].name.clone())
    {
        let held = open_warnings_gate(next, j - 1, now);
        t.audit(event);
        t.audit(held);
        return;
    }
    match next.phases.iter_mut().find(|ph| !ph.status.is_done()) {
        // Its job's result came while paused: a worker commits it now (same attempt).
        Some(ph)
            if ph.status == PhaseStatus::Running
                && ph.waiting.as_ref().is_some_and(|w| w.arrived_at.is_some()) =>
        {
            super::callback::to_worker(ph, now);
            event = event.phase(&ph.name, ph.attempt);
            let (name, attempt) = (ph.name.clone(), ph.attempt);
            t.dispatch(&name, attempt);
        }
        // A phase still running (or waiting for its job) hands off itself when it commits.
        Some(ph) if ph.status == PhaseStatus::Running => {}
        Some(ph) => {
            // A new attempt, so a message held while paused is refused as stale.
            requeue(ph, now);
            event = event.phase(&ph.name, ph.attempt);
            let (name, attempt) = (ph.name.clone(), ph.attempt);
            t.dispatch(&name, attempt);
        }
        None => {
            next.status = ProductionStatus::Completed;
            event.detail = "every phase had finished; completed".into();
        }
    }
    t.audit(event);
}

pub(super) fn retry(now: Millis, t: &mut Transition) {
    let next = &mut t.production;
    // A failed or dead-lettered phase; or, on a running production, one whose lease
    // expired (its worker stopped): its unrecorded calls are retried under their keys; or
    // one waiting for an external job: the next attempt starts a new job.
    let expired = next.expired_lease(now).map(|ph| ph.name.clone());
    let ph = next
        .phases
        .iter_mut()
        .find(|ph| {
            matches!(ph.status, PhaseStatus::Failed | PhaseStatus::DeadLettered)
                || expired.as_deref() == Some(ph.name.as_str())
                || ph.is_waiting()
        })
        .expect("retry_phase is available only with a failed phase or an expired lease");
    requeue(ph, now);
    let (name, attempt) = (ph.name.clone(), ph.attempt);
    next.status = ProductionStatus::Running;
    t.audit(AuditEvent::new(AuditKind::PhaseRetried, Outcome::Success, now).phase(&name, attempt));
    t.dispatch(&name, attempt);
}

pub(super) fn edit(fields: &[String], now: Millis, t: &mut Transition) -> Result<(), DomainError> {
    if fields.is_empty() {
        return Err(DomainError::Invalid("edit changes nothing".into()));
    }
    t.production.revision += 1;
    t.audit(
        AuditEvent::new(AuditKind::ProductionEdited, Outcome::Success, now)
            .detail(format!("changed {}", fields.join(", "))),
    );
    Ok(())
}

pub(super) fn cancel(now: Millis, t: &mut Transition) {
    t.production.status = ProductionStatus::Cancelled;
    // A job still running outside is not waited for: no lease to expire, no alarm. Its
    // callbacks are answered 410 (that is how its runner hears of the cancel).
    for ph in t.production.phases.iter_mut().filter(|ph| ph.is_waiting()) {
        ph.lease_until = None;
    }
    t.audit(AuditEvent::new(
        AuditKind::ProductionCancelled,
        Outcome::Success,
        now,
    ));
}

pub(super) fn override_(
    p: &Production,
    reason: &str,
    target: OverrideTarget,
    outputs: &[SuppliedOutput],
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let reason = operator_text(reason, "an override needs a reason", "the reason")?;
    let what = match target {
        OverrideTarget::SkipGate => {
            let Some(a) = t.production.approval.take() else {
                return Err(DomainError::Invalid(
                    "there is no open approval to skip".into(),
                ));
            };
            let i = p.phase_index(&a.phase).expect("gated phase exists");
            t.production.status = ProductionStatus::Running;
            let gate = match a.kind {
                GateKind::Approval => "the approval gate",
                GateKind::Warnings => {
                    t.production.warnings_acknowledged_at = Some(now);
                    "the warnings acknowledgement"
                }
            };
            let what = format!("skipped {gate} at {}", a.phase);
            t.audit(
                AuditEvent::new(AuditKind::OverrideApplied, Outcome::Success, now)
                    .phase(&a.phase, a.attempt)
                    .detail(format!("{what}: {reason}")),
            );
            step(i, now, t);
            what
        }
        OverrideTarget::JumpTo(target) => jump(p, &target, outputs, &reason, now, t)?,
    };
    t.production.overridden = Some(OverrideMark {
        // The admin is the audit's actor, stamped with it when the transition commits.
        by: String::new(),
        at: now,
        what,
        reason,
    });
    Ok(())
}

/// An admin's jump to `target`: earlier unfinished phases are skipped (with the outputs
/// the admin supplied for them), later ones reset. Which skipped outputs later phases read
/// is the pipeline's knowledge; the caller refused a jump that leaves one missing.
fn jump(
    p: &Production,
    target: &str,
    outputs: &[SuppliedOutput],
    reason: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<String, DomainError> {
    let to = super::known_phase(p, target)?;
    if p.phases.iter().any(|ph| ph.status == PhaseStatus::Running) {
        return Err(DomainError::Invalid(
            "a phase is running; wait for it to finish before jumping".into(),
        ));
    }
    for o in outputs {
        let skipped = p
            .phase_index(&o.phase)
            .is_some_and(|j| j < to && !p.phases[j].status.is_done());
        if !skipped {
            return Err(DomainError::Invalid(format!(
                "an output is given for {}, which this jump does not skip",
                o.phase
            )));
        }
    }
    let next = &mut t.production;
    next.approval = None;
    next.status = ProductionStatus::Running;
    // A jump back to a phase that already ran regenerates from there: new inputs, so new
    // calls, none of its memoized answers replayed.
    let back = next.phases[to].status.is_done();
    if back {
        next.revision += 1;
    }
    for (j, ph) in next.phases.iter_mut().enumerate() {
        if j < to && !ph.status.is_done() {
            ph.status = PhaseStatus::Skipped;
            if outputs.iter().any(|o| o.phase == ph.name) {
                // The admin's output, stored by the caller under the next attempt's key.
                ph.attempt += 1;
                ph.output = Some(output_key(&ph.name, ph.attempt));
                ph.finished_at = Some(now);
            }
        } else if j > to && ph.status != PhaseStatus::Pending {
            ph.status = PhaseStatus::Pending;
        }
    }
    let ph = &mut next.phases[to];
    requeue(ph, now);
    let attempt = ph.attempt;
    let supplied: Vec<&str> = outputs.iter().map(|o| o.phase.as_str()).collect();
    let what = match (back, supplied.is_empty()) {
        (true, _) => format!("jumped back to {target} (regenerated from there)"),
        (false, true) => format!("jumped to {target}"),
        (false, false) => format!(
            "jumped to {target} with the output of {} supplied",
            supplied.join(", ")
        ),
    };
    t.audit(
        AuditEvent::new(AuditKind::OverrideApplied, Outcome::Success, now)
            .phase(target, attempt)
            .detail(format!("{what}: {reason}")),
    );
    t.dispatch(target, attempt);
    Ok(what)
}

/// An admin clears the override badge; the audit keeps what the override was.
pub(super) fn clear_override(
    reason: &str,
    now: Millis,
    t: &mut Transition,
) -> Result<(), DomainError> {
    let reason = operator_text(reason, "clearing an override needs a reason", "the reason")?;
    let mark = t
        .production
        .overridden
        .take()
        .expect("clear_override is available only on an overridden production");
    t.audit(
        AuditEvent::new(AuditKind::OverrideCleared, Outcome::Success, now).detail(format!(
            "cleared the override by {} ({}): {reason}",
            mark.by, mark.what
        )),
    );
    Ok(())
}
