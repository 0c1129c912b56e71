//! `/alarms`: list, acknowledge, resolve.

use axum::extract::{Path, Query};
use serde_json::{Value, json};
use shepherd::domain::alarms::AlarmStatus;
use shepherd::ops::requests::ListAlarms;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, ok, paged};
use crate::schema::{AlarmAction, AlarmChanged, AlarmsPage, Common, Forbidden, Invalid, NotFound};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(alarms))
        .routes(routes!(set_alarm))
}

/// Alarms about the account's productions, newest first (stack operators: every alarm, or
/// one account's).
#[utoipa::path(get, path = "/alarms", tag = "alarms", params(ListAlarms),
    responses((status = 200, body = AlarmsPage), Invalid, Common))]
async fn alarms(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ListAlarms>,
) -> Answer {
    let alarms = ops
        .alarms(q.account.as_deref(), q.limit, q.cursor.as_deref(), &caller)
        .await?;
    let items: Vec<Value> = alarms
        .items
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["id"] = a.id().into();
            v
        })
        .collect();
    paged("alarms", items, alarms.next)
}

/// Acknowledge or resolve an alarm.
#[utoipa::path(post, path = "/alarms/{id}/{status}", tag = "alarms",
    params(("id" = String, Path, description = "`<type>#<subject>`"),
        ("status" = AlarmAction, Path)),
    responses((status = 200, body = AlarmChanged), Forbidden, NotFound, Common))]
async fn set_alarm(
    Who(caller): Who,
    Operations(ops): Operations,
    Path((id, status)): Path<(String, String)>,
) -> Answer {
    let status = match status.as_str() {
        "ack" | "acknowledge" => AlarmStatus::Acknowledged,
        "resolve" => AlarmStatus::Resolved,
        other => {
            return Err(ApiError::not_found(format!(
                "no alarm action {other:?} (ack, resolve)"
            )));
        }
    };
    ops.set_alarm(&id, status, &caller).await?;
    ok(json!({"id": id, "status": status}))
}
