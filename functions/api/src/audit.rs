//! `/audit`: events by trace id, or by type in a window.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use serde::Deserialize;
use shepherd::audit::AuditQuery;
use shepherd::ops::requests::AUDIT_LIMIT;
use shepherd::ports::{Clock, SystemClock};

use crate::auth::Who;
use crate::error::{Answer, ApiError, instant, page_of};
use crate::{Api, Operations};

pub(crate) fn routes() -> Router<Api> {
    Router::new().route("/audit", get(audit))
}

#[derive(Deserialize)]
struct AuditParams {
    trace: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    /// For the stack's operators: one account's events (an account's callers get theirs).
    account: Option<String>,
    cursor: Option<String>,
}

async fn audit(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AuditParams>,
) -> Answer {
    let query = match (q.trace, q.event_type) {
        (Some(t), None) => AuditQuery::Trace(t),
        (None, Some(event_type)) => {
            let until = match &q.until {
                Some(u) => instant("until", u)?,
                None => SystemClock.now() + 1,
            };
            let since = match &q.since {
                Some(s) => instant("since", s)?,
                None => (until - 86_400_000).max(0),
            };
            if since >= until {
                return Err(ApiError::invalid("since must be before until"));
            }
            AuditQuery::Type {
                event_type,
                since,
                until,
                account: q.account,
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of trace=<id> or type=<event type> (with since/until)",
            ));
        }
    };
    let rows = ops
        .audit(
            &query,
            q.limit.unwrap_or(AUDIT_LIMIT),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    page_of("events", rows)
}
