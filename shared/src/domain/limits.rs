//! Account limits: a monthly production allowance and a maximum of concurrent productions.
//!
//! `start` reserves both in the same transaction that creates the production (the account
//! item `ACCT#<account>`: a counter per month, and the set of productions holding a
//! concurrency slot), so two starts racing for the last slot cannot both win. A production
//! holds its slot while it can still make progress on its own or after an operator's answer
//! (queued, running, paused, awaiting approval); completing, failing, dead-lettering or
//! cancelling releases it, and a retry takes it back. Releases and re-takes are made by the
//! audit projector from the state stream (idempotent set operations, retried with the
//! stream), so they land within seconds and never twice. The allowance is never refunded.

use serde::{Deserialize, Serialize};

use super::{Millis, ProductionStatus};

/// Limits of one account; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub monthly_allowance: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// What `start` reserves.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub account: String,
    /// `YYYY-MM`, UTC.
    pub month: String,
    /// Applied when the account has no limit of its own.
    pub defaults: Limits,
}

/// An account's limits and what it uses of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountUsage {
    pub account: String,
    pub month: String,
    pub started_this_month: u32,
    /// The account's own limits (`None`: the stack's default applies).
    pub own: Limits,
    /// What applies now.
    pub effective: Limits,
    /// Productions holding a concurrency slot.
    pub active: Vec<String>,
}

impl AccountUsage {
    /// What applies: the account's own limits, else the stack's `defaults`.
    pub fn new(
        account: &str,
        month: &str,
        started_this_month: u32,
        own: Limits,
        defaults: Limits,
        mut active: Vec<String>,
    ) -> Self {
        active.sort();
        Self {
            account: account.into(),
            month: month.into(),
            started_this_month,
            own,
            effective: Limits {
                monthly_allowance: own.monthly_allowance.or(defaults.monthly_allowance),
                max_concurrent: own.max_concurrent.or(defaults.max_concurrent),
            },
            active,
        }
    }

    /// Whether a start now would be refused.
    pub fn is_full(&self) -> bool {
        self.effective
            .monthly_allowance
            .is_some_and(|a| self.started_this_month >= a)
            || self
                .effective
                .max_concurrent
                .is_some_and(|c| self.active.len() as u32 >= c)
    }

    /// Which limit a refused start hit, with the figures.
    pub fn refusal(&self) -> String {
        let mut why = Vec::new();
        if let Some(a) = self.effective.monthly_allowance
            && self.started_this_month >= a
        {
            why.push(format!(
                "monthly allowance reached: {} of {a} productions started in {}",
                self.started_this_month, self.month
            ));
        }
        if let Some(c) = self.effective.max_concurrent
            && self.active.len() as u32 >= c
        {
            why.push(format!(
                "concurrency limit reached: {} of {c} productions active; one must complete, fail or be cancelled first",
                self.active.len()
            ));
        }
        if why.is_empty() {
            "a limit was reached (it was freed since; try again)".into()
        } else {
            format!("account {}: {}", self.account, why.join("; "))
        }
    }
}

/// `YYYY-MM` (UTC) of epoch milliseconds.
pub fn month_of(at: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(at / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// Whether a production in `status` holds a concurrency slot.
pub fn holds_slot(status: ProductionStatus) -> bool {
    use ProductionStatus as S;
    matches!(
        status,
        S::Queued | S::Running | S::Paused | S::AwaitingApproval
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc() {
        assert_eq!(month_of(1_795_419_044_992), "2026-11");
        assert_eq!(month_of(0), "1970-01");
    }

    #[test]
    fn a_refusal_names_the_limit_and_the_figures() {
        let u = AccountUsage {
            account: "acme".into(),
            month: "2026-11".into(),
            started_this_month: 5,
            effective: Limits {
                monthly_allowance: Some(5),
                max_concurrent: Some(2),
            },
            active: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            u.refusal(),
            "account acme: monthly allowance reached: 5 of 5 productions started in 2026-11"
        );
    }

    #[test]
    fn paused_and_waiting_productions_keep_their_slot() {
        use ProductionStatus as S;
        let held: Vec<_> = S::ALL.into_iter().filter(|s| holds_slot(*s)).collect();
        assert_eq!(
            held,
            [S::Queued, S::Running, S::AwaitingApproval, S::Paused]
        );
    }
}
