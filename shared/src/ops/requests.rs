//! What operators ask, one type per request, shared by the CLI (`clap`, with the `cli`
//! feature) and the HTTP API (a query or a body, `serde`): each default lives here once, so
//! the two surfaces cannot disagree.

use serde::{Deserialize, Deserializer};

use super::{OpsError, RedriveFilter};
use crate::domain::{Caller, ProductionStatus};

/// Productions (and approvals) per page.
pub const PRODUCTIONS_LIMIT: usize = 50;
/// Audit events per page.
pub const AUDIT_LIMIT: usize = 1000;
/// Alarms per page.
pub const ALARMS_LIMIT: usize = 100;
/// DLQ messages listed (SQS keeps no order to page by).
pub const DLQ_LIMIT: usize = 100;
/// Webhook deliveries per page.
pub const DELIVERIES_LIMIT: usize = 50;
/// Messages a redrive or resubmit moves per second.
pub const REDRIVE_RATE: u32 = 5;

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProductionStatus>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| ProductionStatus::parse(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// `GET /productions`, `GET /approvals`; `shepherd list`. An account's productions,
/// newest first.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListProductions {
    /// The account (a stack operator names one; an account's callers get their own).
    #[cfg_attr(feature = "cli", arg(long, env = "SHEPHERD_ACCOUNT"))]
    pub account: Option<String>,
    /// Only productions in this status (e.g. awaiting_approval, failed, dead_lettered).
    #[cfg_attr(feature = "cli", arg(long, value_parser = ProductionStatus::parse))]
    #[serde(deserialize_with = "status")]
    #[param(value_type = Option<String>)]
    pub status: Option<ProductionStatus>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = PRODUCTIONS_LIMIT))]
    pub limit: usize,
    /// Go on from the page before (its next cursor).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for ListProductions {
    fn default() -> Self {
        Self {
            account: None,
            status: None,
            limit: PRODUCTIONS_LIMIT,
            cursor: None,
        }
    }
}

/// The account a listing is of: the one named, or the caller's own. A stack operator
/// (every account in scope) must name one; another account's name gets an empty answer
/// from the operations, as if it did not exist.
pub fn account_of<'a>(caller: &'a Caller, named: Option<&'a str>) -> Result<&'a str, OpsError> {
    match (named, caller.account()) {
        (Some(a), _) => Ok(a),
        (None, Some(own)) => Ok(own),
        (None, None) => Err(OpsError::Invalid(
            "a stack operator names the account (?account=<account>, --account)".into(),
        )),
    }
}

/// `GET /productions/{id}/audit`, `GET /audit`; `shepherd audit`: a page of events.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AuditPage {
    #[cfg_attr(feature = "cli", arg(long, default_value_t = AUDIT_LIMIT))]
    pub limit: usize,
    /// Go on from the page before (its next cursor).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for AuditPage {
    fn default() -> Self {
        Self {
            limit: AUDIT_LIMIT,
            cursor: None,
        }
    }
}

/// `GET /alarms`; `shepherd alarms`: newest first.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListAlarms {
    /// Only the alarms about this account's productions (stack operators).
    #[cfg_attr(feature = "cli", arg(long))]
    pub account: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = ALARMS_LIMIT))]
    pub limit: usize,
    /// Go on from the page before (its next cursor).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for ListAlarms {
    fn default() -> Self {
        Self {
            account: None,
            limit: ALARMS_LIMIT,
            cursor: None,
        }
    }
}

/// `GET /dlq`; `shepherd dlq list`.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListDlq {
    /// One phase's DLQ (default: every phase's).
    #[cfg_attr(feature = "cli", arg(long))]
    pub phase: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DLQ_LIMIT))]
    pub limit: usize,
}

impl Default for ListDlq {
    fn default() -> Self {
        Self {
            phase: None,
            limit: DLQ_LIMIT,
        }
    }
}

/// `POST /dlq/redrive`; `shepherd dlq redrive` (which names the phase with `--phase` or
/// `--all`): messages back to their phase queues, filtered and rate-limited.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redrive {
    /// One phase's DLQ (none: every phase's).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub phase: Option<String>,
    /// Only messages whose last error has this code.
    #[cfg_attr(feature = "cli", arg(long))]
    pub code: Option<String>,
    /// Only messages at least this many seconds old.
    #[cfg_attr(feature = "cli", arg(long = "older-than", value_name = "SECS"))]
    pub older_than_secs: Option<u64>,
    /// Messages per second.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = REDRIVE_RATE))]
    pub rate: u32,
    /// Malformed messages too (they will be quarantined again unless fixed).
    #[cfg_attr(feature = "cli", arg(long))]
    pub include_malformed: bool,
}

impl Default for Redrive {
    fn default() -> Self {
        Self {
            phase: None,
            code: None,
            older_than_secs: None,
            rate: REDRIVE_RATE,
            include_malformed: false,
        }
    }
}

impl Redrive {
    /// What it selects.
    pub fn filter(&self) -> RedriveFilter {
        RedriveFilter {
            phase: self.phase.clone(),
            code: self.code.clone(),
            older_than: self.older_than_secs.map(std::time::Duration::from_secs),
            message_id: None,
            include_malformed: self.include_malformed,
        }
    }
}

/// `GET /webhooks/{id}/deliveries`; `shepherd webhooks deliveries`: newest first.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListDeliveries {
    /// Only failed deliveries created since then (RFC 3339 or epoch ms; the CLI also
    /// takes an age such as 6h).
    #[cfg_attr(feature = "cli", arg(skip))]
    pub failed_since: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DELIVERIES_LIMIT))]
    pub limit: usize,
    /// Go on from the page before (its next cursor).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for ListDeliveries {
    fn default() -> Self {
        Self {
            failed_since: None,
            limit: DELIVERIES_LIMIT,
            cursor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_request_takes_the_shared_defaults() {
        let q: ListProductions = serde_json::from_str("{}").unwrap();
        assert_eq!(q, ListProductions::default());
        assert_eq!(q.limit, PRODUCTIONS_LIMIT);
        let r: Redrive = serde_json::from_str(r#"{"phase": "brief"}"#).unwrap();
        assert_eq!((r.rate, r.phase.as_deref()), (REDRIVE_RATE, Some("brief")));
        let bad = serde_json::from_str::<ListProductions>(r#"{"status": "done"}"#).unwrap_err();
        assert!(bad.to_string().contains("unknown status \"done\""), "{bad}");
        let typo = serde_json::from_str::<Redrive>(r#"{"rat": 3}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `rat`"), "{typo}");
    }
}

/// Schedules per page.
pub const SCHEDULES_LIMIT: usize = 100;
/// A schedule's slot history per page.
pub const HISTORY_LIMIT: usize = 50;

/// `GET /schedules`; `shepherd schedule list`. Newest first.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ListSchedules {
    /// The account (stack operators: one account's, or every account's without it).
    #[cfg_attr(feature = "cli", arg(long, env = "SHEPHERD_ACCOUNT"))]
    pub account: Option<String>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = SCHEDULES_LIMIT))]
    pub limit: usize,
    /// Go on from the page before (its next cursor).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for ListSchedules {
    fn default() -> Self {
        Self {
            account: None,
            limit: SCHEDULES_LIMIT,
            cursor: None,
        }
    }
}

/// `GET /schedules/{id}`; `shepherd schedule show`. The newest slots first.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ScheduleHistory {
    /// Slots of history per page.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = HISTORY_LIMIT))]
    pub limit: usize,
    /// Older history (the page before's `history_next`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub cursor: Option<String>,
}

impl Default for ScheduleHistory {
    fn default() -> Self {
        Self {
            limit: HISTORY_LIMIT,
            cursor: None,
        }
    }
}
