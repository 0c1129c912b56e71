//! `/alarms`: list, acknowledge, resolve.

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shepherd::domain::alarms::AlarmStatus;
use shepherd::ops::requests::ListAlarms;

use crate::auth::Who;
use crate::error::{Answer, ApiError, ok, paged};
use crate::{Api, Operations};

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/alarms", get(alarms))
        .route("/alarms/{id}/{status}", post(set_alarm))
}

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
