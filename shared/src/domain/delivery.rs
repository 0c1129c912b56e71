//! Delivery policy: what to do with a phase message SQS delivered, and with a phase run that
//! errored. Pure, like `decide`; the runtime only carries the answers out.
//!
//! | the production as the refused claim found it | answer |
//! |---|---|
//! | does not exist | `Quarantine` (to the DLQ with the reason; never retried) |
//! | the attempt may be claimed | `Run` |
//! | this dead-lettered attempt, on a dead-lettered production | `Redrive` (attempt + 1) |
//! | this attempt running under an expired lease | `Reconcile` (attempt + 1) |
//! | this attempt finished, redelivered, its successor still queued | `ResendHandoff` |
//! | anything else (duplicate, stale, paused, not runnable) | `Ack(reason)` |
//!
//! | a run's error | answer |
//! |---|---|
//! | permanent, or a panic | `Stop`: the phase fails, the message is consumed |
//! | a wait (rate-limit reset, open circuit, disabled provider) | `Hold`: the message comes back after the wait (or a growing pause), the budget untouched |
//! | retryable, budget left | `Retry`: back off (exponential, jittered; never before a provider's reset) |
//! | retryable, the attempt's budget spent (or SQS's last receive) | `DeadLetter`: the phase is marked, the message moved to the DLQ |
//!
//! The budget is the engine's: retried errors of this attempt (`PhaseState::retries`),
//! against `RetryPolicy::max_retries`. SQS's `maxReceiveCount` is only a backstop for
//! messages that never get that far (a worker that dies on them every time).

use std::time::Duration;

use serde::Serialize;

use super::{
    Dispatch, ErrorClass, FailDisposition, Millis, PhaseState, PhaseStatus, Production,
    ProductionStatus, StepError,
};

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
        // An attempt waiting for its external job belongs to the job (and the sweep):
        // a message for it is a copy, whatever its lease.
        PhaseStatus::Running if ph.waiting.is_some() => return Some(ClaimRefusal::Duplicate),
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

/// What to do with a delivered phase message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Claim the phase and run it.
    Run,
    /// Acknowledge without running.
    Ack(ClaimRefusal),
    /// The attempt's worker died mid-phase: `Command::Reconcile`, then run the next attempt.
    Reconcile,
    /// A dead-lettered attempt's message came back: `Command::Redrive`.
    Redrive,
    /// The phase finished but its successor's message may have been lost: send it again.
    ResendHandoff(Dispatch),
    /// No retry can help: move the message to the DLQ with this reason.
    Quarantine(String),
}

/// A delivered phase message: which attempt it names, and whether it came back (received
/// before, or sent back from a DLQ by a redrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered<'a> {
    pub production_id: &'a str,
    pub phase: &'a str,
    pub attempt: u32,
    pub receive_count: u32,
    pub redriven: bool,
}

/// The policy for a delivered message of the production `p` (as found by the claim;
/// `None`: it does not exist).
pub fn on_delivery(p: Option<&Production>, d: Delivered<'_>, now: Millis) -> Delivery {
    let Delivered {
        production_id,
        phase,
        attempt,
        receive_count,
        redriven,
    } = d;
    let Some(p) = p else {
        return Delivery::Quarantine(format!("production {production_id} does not exist"));
    };
    let refusal = match claim_refusal(p, phase, attempt, now) {
        None => return Delivery::Run,
        Some(r) => r,
    };
    let Some(i) = p.phase_index(phase) else {
        return Delivery::Ack(refusal);
    };
    let ph = &p.phases[i];
    if ph.status == PhaseStatus::DeadLettered
        && ph.attempt == attempt
        && p.status == ProductionStatus::DeadLettered
    {
        return Delivery::Redrive;
    }
    if refusal == ClaimRefusal::LeaseExpired {
        return Delivery::Reconcile;
    }
    // A message back again (redelivered, or redriven from a DLQ) whose phase finished but
    // whose successor never got its message (the hand-off was lost): send it again. The
    // successor's claim dedupes.
    if refusal == ClaimRefusal::AlreadyFinished
        && (receive_count > 1 || redriven)
        && ph.status == PhaseStatus::Succeeded
        && let Some(next) = p.phases.get(i + 1)
        && next.status == PhaseStatus::Queued
    {
        return Delivery::ResendHandoff(Dispatch {
            phase: next.name.clone(),
            attempt: next.attempt,
        });
    }
    Delivery::Ack(refusal)
}

/// How a phase's retries are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one attempt: the retry budget (retried errors + 1).
    pub max_retries: u32,
    /// Equal to the queues' `maxReceiveCount`: its receive is the last (a backstop).
    pub max_receive_count: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// The longest an SQS message can be delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// What to do with a run that errored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver the message again in `after`.
    Retry { after: Duration },
    /// Send the message again in `after` (at most [`MAX_DELAY`]); not an attempt.
    Hold { after: Duration },
    /// The budget is spent: mark the phase and move the message to the DLQ.
    DeadLetter,
    /// No retry can help: mark the phase failed, consume the message.
    Stop,
}

impl Disposition {
    /// How the state machine records it.
    pub fn fail(self) -> FailDisposition {
        match self {
            Self::Retry { .. } => FailDisposition::Retry,
            Self::Hold { .. } => FailDisposition::Hold,
            Self::DeadLetter => FailDisposition::DeadLetter,
            Self::Stop => FailDisposition::Stop,
        }
    }
}

/// The policy for an errored run of `phase` (as claimed) on its `receive_count`th receive;
/// `jitter` is in [0, 1).
pub fn on_error(
    e: &StepError,
    phase: &PhaseState,
    receive_count: u32,
    policy: RetryPolicy,
    now: Millis,
    jitter: f64,
) -> Disposition {
    let until_reset = || {
        e.retry_at
            .map(|at| Duration::from_millis((at - now).max(0) as u64))
            .unwrap_or_default()
    };
    match e.class {
        ErrorClass::Permanent | ErrorClass::Unexpected => Disposition::Stop,
        ErrorClass::Wait => {
            let pause = backoff(phase.holds + 1, policy.base, policy.cap, jitter);
            Disposition::Hold {
                after: until_reset().max(pause).min(MAX_DELAY),
            }
        }
        ErrorClass::Retryable => {
            let tries = phase.retries + 1;
            if tries >= policy.max_retries || receive_count >= policy.max_receive_count {
                return Disposition::DeadLetter;
            }
            let after = backoff(tries, policy.base, policy.cap, jitter).max(until_reset());
            Disposition::Retry { after }
        }
    }
}

/// Exponential backoff with "equal jitter": half the step is fixed, half random, so a retry
/// never comes back at once and a crowd of retries spreads out.
/// `receive_count` starts at 1; `jitter` is in [0, 1).
pub fn backoff(receive_count: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = receive_count.saturating_sub(1).min(30);
    let step = base.saturating_mul(1u32 << exp).min(cap);
    step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{GatePolicy, start};

    const NOW: Millis = 1_000_000;

    fn queued() -> Production {
        start(
            "p".into(),
            "a".into(),
            crate::domain::PipelineVersion::new("content", 1),
            &["brief", "script"],
            GatePolicy::default(),
            "t".into(),
            NOW,
        )
        .production
    }

    fn got<'a>(
        production_id: &'a str,
        phase: &'a str,
        attempt: u32,
        receive_count: u32,
    ) -> Delivered<'a> {
        Delivered {
            production_id,
            phase,
            attempt,
            receive_count,
            redriven: false,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            max_receive_count: 10,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap_and_stays_within_its_step() {
        let (b, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(1, b, cap, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, b, cap, 0.999_999).as_secs(), 1);
        assert_eq!(backoff(3, b, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, b, cap, 0.0), Duration::from_secs(30));
        assert!(backoff(30, b, cap, 0.999) <= cap);
        assert_eq!(backoff(u32::MAX, b, cap, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn an_unknown_production_is_quarantined_and_a_claimable_one_runs() {
        assert_eq!(
            on_delivery(None, got("x", "brief", 1, 1), NOW),
            Delivery::Quarantine("production x does not exist".into())
        );
        assert_eq!(
            on_delivery(Some(&queued()), got("p", "brief", 1, 1), NOW),
            Delivery::Run
        );
    }

    #[test]
    fn duplicates_and_stale_messages_are_acknowledged() {
        let mut p = queued();
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 2, 1), NOW),
            Delivery::Ack(ClaimRefusal::Stale)
        );
        p.status = ProductionStatus::Running;
        p.phases[0].status = PhaseStatus::Running;
        p.phases[0].lease_until = Some(NOW + 1);
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 2), NOW),
            Delivery::Ack(ClaimRefusal::Duplicate)
        );
        p.status = ProductionStatus::Paused;
        p.phases[0].status = PhaseStatus::Queued;
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 1), NOW),
            Delivery::Ack(ClaimRefusal::Paused)
        );
        assert_eq!(
            on_delivery(Some(&p), got("p", "render", 1, 1), NOW),
            Delivery::Ack(ClaimRefusal::UnknownPhase)
        );
    }

    #[test]
    fn an_expired_lease_is_reconciled_and_a_dead_lettered_attempt_redriven() {
        let mut p = queued();
        p.status = ProductionStatus::Running;
        p.phases[0].status = PhaseStatus::Running;
        p.phases[0].lease_until = Some(NOW);
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 2), NOW),
            Delivery::Reconcile
        );
        p.status = ProductionStatus::DeadLettered;
        p.phases[0].status = PhaseStatus::DeadLettered;
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 1), NOW),
            Delivery::Redrive
        );
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 2, 1), NOW),
            Delivery::Ack(ClaimRefusal::Stale),
            "only the dead-lettered attempt's own message"
        );
    }

    #[test]
    fn a_finished_phase_redelivered_resends_a_hand_off_still_missing() {
        let mut p = queued();
        p.status = ProductionStatus::Running;
        p.phases[0].status = PhaseStatus::Succeeded;
        p.phases[1].status = PhaseStatus::Queued;
        p.phases[1].attempt = 1;
        let resend = Delivery::ResendHandoff(Dispatch {
            phase: "script".into(),
            attempt: 1,
        });
        assert_eq!(on_delivery(Some(&p), got("p", "brief", 1, 2), NOW), resend);
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 1), NOW),
            Delivery::Ack(ClaimRefusal::AlreadyFinished),
            "a first delivery of a finished phase is a copy, not a lost hand-off"
        );
        let redriven = Delivered {
            redriven: true,
            ..got("p", "brief", 1, 1)
        };
        assert_eq!(
            on_delivery(Some(&p), redriven, NOW),
            resend,
            "a redriven message of a finished phase re-sends the missing hand-off"
        );
        p.phases[1].status = PhaseStatus::Running;
        assert_eq!(
            on_delivery(Some(&p), got("p", "brief", 1, 2), NOW),
            Delivery::Ack(ClaimRefusal::AlreadyFinished)
        );
    }

    fn tried(retries: u32, holds: u32) -> PhaseState {
        let mut ph = PhaseState::pending("brief");
        ph.retries = retries;
        ph.holds = holds;
        ph
    }

    #[test]
    fn errors_retry_until_the_budget_is_spent_and_permanent_ones_stop() {
        let e = StepError::retryable("provider_unavailable", "503");
        assert!(matches!(
            on_error(&e, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Retry { after } if after == Duration::from_secs(1)
        ));
        assert_eq!(
            on_error(&e, &tried(2, 0), 3, policy(), NOW, 0.0),
            Disposition::DeadLetter,
            "the third try of the attempt was the last"
        );
        assert_eq!(
            on_error(&e, &tried(0, 0), 10, policy(), NOW, 0.0),
            Disposition::DeadLetter,
            "SQS's last receive is a backstop"
        );
        let refused = StepError::permanent("content_refused", "no");
        assert_eq!(
            on_error(&refused, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Stop
        );
        let panic = StepError::unexpected("step_unexpected_error", "boom");
        assert_eq!(
            on_error(&panic, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Stop
        );
    }

    #[test]
    fn a_wait_holds_without_spending_the_budget_however_often() {
        let e = StepError::wait("integration_unavailable", "primary (disabled)", None);
        for holds in [0, 5, 50] {
            assert!(
                matches!(
                    on_error(&e, &tried(2, holds), 9, policy(), NOW, 0.0),
                    Disposition::Hold { .. }
                ),
                "a wait is never a dead letter ({holds} holds)"
            );
        }
        assert_eq!(
            on_error(&e, &tried(0, 50), 1, policy(), NOW, 0.0),
            Disposition::Hold {
                after: Duration::from_secs(30)
            },
            "waits grow to the cap"
        );
        let reset = StepError::wait("provider_rate_limited", "429", Some(NOW + 20_000));
        assert_eq!(
            on_error(&reset, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Hold {
                after: Duration::from_secs(20)
            }
        );
        let far = StepError::wait("provider_rate_limited", "429", Some(NOW + 7_200_000));
        assert_eq!(
            on_error(&far, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Hold { after: MAX_DELAY }
        );
    }

    #[test]
    fn a_rate_limit_waits_for_its_reset_when_that_is_later_than_the_backoff() {
        let mut e = StepError::retryable("provider_rate_limited", "429");
        e.retry_at = Some(NOW + 20_000);
        assert_eq!(
            on_error(&e, &tried(0, 0), 1, policy(), NOW, 0.0),
            Disposition::Retry {
                after: Duration::from_secs(20)
            }
        );
    }
}
