//! `/audit`: events by trace id, or by type in a window.

use axum::extract::Query;
use serde::Deserialize;
use shepherd::audit::AuditQuery;
use shepherd::ops::requests::AUDIT_LIMIT;
use shepherd::ports::{Clock, SystemClock};

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, instant, page_of};
use crate::schema::{Common, EventsPage, Invalid};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(audit))
}

/// Exactly one of `trace`, or `type` with `since`/`until`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// A trace id: every event of one production's run.
    trace: Option<String>,
    /// An event type (`production.created`, ...), in a window.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Epoch milliseconds or RFC 3339 (default: a day before `until`).
    since: Option<String>,
    /// Epoch milliseconds or RFC 3339 (default: now).
    until: Option<String>,
    limit: Option<usize>,
    /// For the stack's operators: one account's events (an account's callers get theirs).
    account: Option<String>,
    /// Go on from the page before (its next cursor).
    cursor: Option<String>,
}

/// Audit events by trace id, or by type in a window (an account's, read by key).
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = EventsPage), Invalid, Common))]
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
