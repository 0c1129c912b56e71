//! An integration's health and the circuit breaker, as pure rules: what an observed call
//! does to the record, and whether the next call may be made.
//!
//! The circuit opens on a failure rate over a sliding window with a minimum number of
//! calls (the semantics of resilience4j's and Polly's advanced breakers): at 10% random
//! 5xx among hundreds of concurrent calls it stays closed, where "N consecutive errors"
//! shared by unrelated callers would trip it by chance. The window is kept in buckets in
//! the shared record; failures are written as they happen, successes are counted by each
//! warm function and added every few seconds. Open, it fails fast for the cooldown, then
//! lets one probe through; the probe's result closes or reopens it.
//!
//! Slow is not down: a request that timed out is a call whose outcome is unknown (the
//! provider may still be making the image), not a failure the provider answered. It counts
//! as a call in the window and toward the failure rate not at all; only `timeouts_to_open`
//! timeouts within the window open the circuit (a provider that keeps not answering is
//! down), and a probe that times out reopens it.

use serde::{Deserialize, Serialize};

use super::Millis;

/// What operators see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    /// Recent errors below the threshold, or rate limited.
    Degraded,
    /// The circuit is open: calls fail fast until a half-open probe succeeds.
    Unavailable,
    /// Switched off by an operator: never called.
    Disabled,
}

/// Thresholds of the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Percent of the window's calls that failed, at which the circuit opens.
    pub failure_rate: u32,
    /// Calls in the window below which the circuit never opens.
    pub min_calls: u32,
    /// The sliding window's length.
    pub window: Millis,
    /// How long an open circuit stays open before one probe call is let through.
    pub cooldown: Millis,
    /// The longest one rate-limit answer may hold every production's calls.
    pub max_rate_limit_wait: Millis,
    /// Timed-out calls within the window at which the circuit opens.
    pub timeouts_to_open: u32,
}

impl Policy {
    /// The window is kept in six buckets.
    fn bucket(&self) -> Millis {
        (self.window / 6).max(1000)
    }
}

/// Calls and failures in one slice of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub start: Millis,
    pub calls: u32,
    pub failures: u32,
    /// Calls that timed out (counted in `calls`, not in `failures`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeouts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The stored record of one integration's health (`INT#<id>` in the state table).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Health {
    pub id: String,
    pub consecutive_errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Millis>,
    /// Recent calls, in buckets (the breaker's sliding window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window: Vec<Bucket>,
    /// No call before this (a provider's 429 reset), for every production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_resets_at: Option<Millis>,
    /// When the circuit opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<Millis>,
    /// When a half-open probe was let through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_at: Option<Millis>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Optimistic concurrency (0: never stored).
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub updated_at: Millis,
}

/// What happened on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A call succeeded (a probe's success closes the circuit).
    Success,
    /// Calls that succeeded since the last count (a function's tally, added in bulk).
    Successes(u32),
    /// An error that says the integration is unwell (5xx, timeout, unreachable, auth).
    Failure { code: String, detail: String },
    /// 429: no call before `until`.
    RateLimited { until: Millis },
    /// The request timed out: its outcome is unknown; the provider may only be slow.
    TimedOut { detail: String },
}

fn calls(calls: u32, failures: u32, timeouts: u32) -> Bucket {
    Bucket {
        start: 0,
        calls,
        failures,
        timeouts,
    }
}

/// Whether the next call may go to this integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Call,
    /// Half-open: one call may test whether it recovered.
    Probe,
    /// Not now: why, and when it may be tried again (if known).
    Skip {
        reason: String,
        until: Option<Millis>,
    },
}

impl Health {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn status(&self, now: Millis) -> HealthStatus {
        if self.disabled {
            HealthStatus::Disabled
        } else if self.opened_at.is_some() {
            HealthStatus::Unavailable
        } else if self.consecutive_errors > 0 || self.rate_limit_resets_at.is_some_and(|r| r > now)
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    pub fn gate(&self, now: Millis, policy: Policy) -> Gate {
        if self.disabled {
            return Gate::Skip {
                reason: "disabled".into(),
                until: None,
            };
        }
        if let Some(reset) = self.rate_limit_resets_at.filter(|r| *r > now) {
            return Gate::Skip {
                reason: format!("rate limited until {reset}"),
                until: Some(reset),
            };
        }
        match self.opened_at {
            None => Gate::Call,
            Some(opened) if now < opened + policy.cooldown => Gate::Skip {
                reason: "unavailable".into(),
                until: Some(opened + policy.cooldown),
            },
            Some(_) => match self.probe_at {
                Some(p) if now < p + policy.cooldown => Gate::Skip {
                    reason: "unavailable (a probe is in flight)".into(),
                    until: Some(p + policy.cooldown),
                },
                _ => Gate::Probe,
            },
        }
    }

    /// Calls and failures within the window at `now`.
    pub fn window_totals(&self, now: Millis, policy: Policy) -> (u32, u32) {
        let (c, f, _) = self.window_counts(now, policy);
        (c, f)
    }

    /// Calls, failures and timeouts within the window at `now`.
    pub fn window_counts(&self, now: Millis, policy: Policy) -> (u32, u32, u32) {
        self.window
            .iter()
            .filter(|b| b.start + policy.window > now)
            .fold((0, 0, 0), |(c, f, t), b| {
                (c + b.calls, f + b.failures, t + b.timeouts)
            })
    }

    fn record(&mut self, now: Millis, add: Bucket, policy: Policy) {
        let start = now - now.rem_euclid(policy.bucket());
        self.window.retain(|b| b.start + policy.window > now);
        match self.window.iter_mut().find(|b| b.start == start) {
            Some(b) => {
                b.calls += add.calls;
                b.failures += add.failures;
                b.timeouts += add.timeouts;
            }
            None => self.window.push(Bucket { start, ..add }),
        }
    }

    /// The record after `obs`. A success closes the circuit; a failure opens it when the
    /// window holds at least `min_calls` calls of which `failure_rate` percent failed, and a
    /// failed probe reopens it for another cooldown.
    pub fn observe(&self, obs: &Observation, now: Millis, policy: Policy) -> Health {
        let mut next = self.clone();
        next.updated_at = now;
        match obs {
            Observation::Success => {
                next.record(now, calls(1, 0, 0), policy);
                next.consecutive_errors = 0;
                next.opened_at = None;
                next.probe_at = None;
                next.rate_limit_resets_at = None;
            }
            Observation::Successes(n) => next.record(now, calls(*n, 0, 0), policy),
            Observation::Failure { code, detail } => {
                next.record(now, calls(1, 1, 0), policy);
                next.consecutive_errors += 1;
                next.last_error = Some(format!("{code}: {detail}"));
                next.last_error_at = Some(now);
                let probing = next.probe_at.take().is_some();
                let (calls, failures) = next.window_totals(now, policy);
                let tripped = calls >= policy.min_calls
                    && u64::from(failures) * 100
                        >= u64::from(policy.failure_rate) * u64::from(calls);
                if probing || (next.opened_at.is_none() && tripped) {
                    next.opened_at = Some(now);
                }
            }
            Observation::RateLimited { until } => {
                // A provider's reset is believed up to the cap: one answer must not park the
                // provider for every account for longer.
                let until = (*until).clamp(now, now.saturating_add(policy.max_rate_limit_wait));
                next.rate_limit_resets_at = Some(until);
                next.last_error = Some(format!("provider_rate_limited: reset at {until}"));
                next.last_error_at = Some(now);
            }
            Observation::TimedOut { detail } => {
                next.record(now, calls(1, 0, 1), policy);
                next.last_error = Some(format!("provider_timeout: {detail}"));
                next.last_error_at = Some(now);
                let probing = next.probe_at.take().is_some();
                let (_, _, timeouts) = next.window_counts(now, policy);
                let tripped = timeouts >= policy.timeouts_to_open.max(1);
                if probing || (next.opened_at.is_none() && tripped) {
                    next.opened_at = Some(now);
                }
            }
        }
        next
    }

    /// Whether a success would change nothing worth a write.
    pub fn is_clean(&self) -> bool {
        self.consecutive_errors == 0
            && self.opened_at.is_none()
            && self.probe_at.is_none()
            && self.rate_limit_resets_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        failure_rate: 50,
        min_calls: 3,
        window: 60_000,
        cooldown: 30_000,
        max_rate_limit_wait: 3_600_000,
        timeouts_to_open: 5,
    };

    #[test]
    fn a_rate_limit_reset_is_believed_up_to_the_cap() {
        let years = Observation::RateLimited {
            until: 100 * 365 * 86_400_000,
        };
        let h = Health::new("primary").observe(&years, 1_000, P);
        assert_eq!(h.rate_limit_resets_at, Some(1_000 + 3_600_000));
        let past = Observation::RateLimited { until: i64::MIN };
        let h = Health::new("primary").observe(&past, 1_000, P);
        assert_eq!(h.rate_limit_resets_at, Some(1_000));
    }

    fn fail() -> Observation {
        Observation::Failure {
            code: "provider_unavailable".into(),
            detail: "503".into(),
        }
    }

    #[test]
    fn a_failure_rate_over_the_minimum_calls_opens_the_circuit() {
        let mut h = Health::new("primary");
        for n in 1..=2 {
            h = h.observe(&fail(), 1000 * n, P);
            assert_eq!(h.status(1000 * n), HealthStatus::Degraded);
            assert_eq!(h.gate(1000 * n, P), Gate::Call);
        }
        h = h.observe(&fail(), 3000, P);
        assert_eq!(h.status(3000), HealthStatus::Unavailable);
        assert_eq!(
            h.gate(3000, P),
            Gate::Skip {
                reason: "unavailable".into(),
                until: Some(33_000)
            }
        );
    }

    #[test]
    fn scattered_failures_among_many_successes_never_open_it() {
        // 10% failures from many concurrent callers: one in ten calls fails, in any order.
        let mut h = Health::new("primary");
        for n in 0..200 {
            let now = 1_000 + n * 250;
            h = match n % 10 {
                3 => h.observe(&fail(), now, P),
                _ => h.observe(&Observation::Successes(1), now, P),
            };
            assert_eq!(h.opened_at, None, "opened after call {n}");
        }
        // Three failures in a row with no successes in the window do open it.
        let mut quiet = Health::new("primary");
        for n in 0..3 {
            quiet = quiet.observe(&fail(), 1_000 + n, P);
        }
        assert_eq!(quiet.status(2_000), HealthStatus::Unavailable);
        // The same three after 20 successes in the window do not.
        let mut busy = Health::new("primary").observe(&Observation::Successes(20), 1_000, P);
        for n in 0..3 {
            busy = busy.observe(&fail(), 1_001 + n, P);
        }
        assert_eq!(busy.opened_at, None);
        // Once the successes leave the window, failures count for what they are.
        for n in 0..3 {
            busy = busy.observe(&fail(), 70_000 + n, P);
        }
        assert!(busy.opened_at.is_some());
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_through_and_its_result_decides() {
        let mut h = Health::new("primary");
        for n in 1..=3 {
            h = h.observe(&fail(), n, P);
        }
        assert_eq!(h.gate(30_003, P), Gate::Probe);
        let mut probing = h.clone();
        probing.probe_at = Some(30_003);
        assert!(
            matches!(probing.gate(30_004, P), Gate::Skip { .. }),
            "one probe at a time"
        );
        let recovered = probing.observe(&Observation::Success, 30_100, P);
        assert_eq!(recovered.status(30_100), HealthStatus::Healthy);
        assert_eq!(recovered.gate(30_100, P), Gate::Call);
        let still_down = probing.observe(&fail(), 30_100, P);
        assert_eq!(still_down.status(30_100), HealthStatus::Unavailable);
        assert!(matches!(
            still_down.gate(30_200, P),
            Gate::Skip {
                until: Some(60_100),
                ..
            }
        ));
    }

    #[test]
    fn a_rate_limit_holds_every_call_until_its_reset() {
        let h = Health::new("primary").observe(&Observation::RateLimited { until: 20_000 }, 0, P);
        assert_eq!(h.status(1), HealthStatus::Degraded);
        assert!(matches!(
            h.gate(19_999, P),
            Gate::Skip {
                until: Some(20_000),
                ..
            }
        ));
        assert_eq!(h.gate(20_000, P), Gate::Call);
        assert_eq!(h.consecutive_errors, 0, "a 429 is not an outage");
    }

    #[test]
    fn a_disabled_integration_is_never_called() {
        let mut h = Health::new("primary");
        h.disabled = true;
        assert_eq!(h.status(0), HealthStatus::Disabled);
        assert!(matches!(h.gate(0, P), Gate::Skip { until: None, .. }));
    }

    fn timed_out() -> Observation {
        Observation::TimedOut {
            detail: "no answer within 20 s".into(),
        }
    }

    #[test]
    fn slow_is_not_down_until_timeouts_keep_coming() {
        // Four timeouts and nothing else: above any failure rate, yet the circuit stays
        // closed (each call's outcome is unknown, the provider may only be slow).
        let mut h = Health::new("images");
        for n in 0..4 {
            h = h.observe(&timed_out(), 1_000 + n, P);
            assert_eq!(h.opened_at, None, "opened after timeout {n}");
            assert_eq!(h.gate(1_000 + n, P), Gate::Call);
        }
        assert_eq!(h.window_totals(2_000, P), (4, 0), "calls, not failures");
        assert!(
            h.last_error
                .as_deref()
                .unwrap()
                .starts_with("provider_timeout")
        );
        // Mixed with answered failures, timeouts do not add to the failure rate.
        let mixed = h.observe(&fail(), 2_000, P);
        assert_eq!(mixed.opened_at, None, "1 failure in 5 calls is under 50%");
        // The fifth timeout in the window opens it: a provider that keeps not answering.
        let down = h.observe(&timed_out(), 2_000, P);
        assert_eq!(down.status(2_000), HealthStatus::Unavailable);
        // Timeouts that left the window do not count.
        let later = h.observe(&timed_out(), 70_000, P);
        assert_eq!(later.opened_at, None);
    }

    #[test]
    fn a_probe_that_times_out_reopens_the_circuit() {
        let mut h = Health::new("images");
        for n in 1..=3 {
            h = h.observe(&fail(), n, P);
        }
        h.probe_at = Some(30_003);
        let h = h.observe(&timed_out(), 30_100, P);
        assert_eq!(h.opened_at, Some(30_100));
    }

    #[test]
    fn a_bucket_stored_before_timeouts_were_counted_reads() {
        let b: Bucket = serde_json::from_str(r#"{"start": 0, "calls": 3, "failures": 1}"#).unwrap();
        assert_eq!(b.timeouts, 0);
    }
}
