//! `/dlq`: list, show, resubmit, redrive, discard.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::RedriveFilter;
use shepherd::ops::requests::{ListDlq, REDRIVE_RATE, Redrive};
use shepherd::view;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, json_of, ok};
use crate::{Api, Operations};

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/redrive", post(redrive))
        .route("/dlq/messages/{id}", get(show))
        .route("/dlq/messages/{id}/{action}", post(act))
}

async fn list(Who(caller): Who, Operations(ops): Operations, Query(q): Query<ListDlq>) -> Answer {
    let entries = ops.dlq_list(q.phase.as_deref(), q.limit, &caller).await?;
    ok(json!({"messages": entries}))
}

async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    let (entry, production) = ops.dlq_show(&id, &caller).await?;
    ok(json!({
        "message": entry,
        "production": production.as_ref().map(|p| view::json(p, None)),
    }))
}

/// `resubmit {include_malformed?}` or `discard {reason}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MessageAction {
    reason: Option<String>,
    #[serde(default)]
    include_malformed: bool,
}

async fn act(
    Who(caller): Who,
    Operations(ops): Operations,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let b: MessageAction = body(&bytes)?;
    match action.as_str() {
        "resubmit" => {
            let filter = RedriveFilter {
                message_id: Some(id),
                include_malformed: b.include_malformed,
                ..Default::default()
            };
            json_of(ops.dlq_redrive(&filter, REDRIVE_RATE, &caller).await?)
        }
        "discard" => {
            let reason = b.reason.unwrap_or_default();
            let e = ops.dlq_discard(&id, &reason, &caller).await?;
            ok(json!({"discarded": e}))
        }
        other => Err(ApiError::not_found(format!(
            "no DLQ action {other:?} (resubmit, discard)"
        ))),
    }
}

async fn redrive(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let r: Redrive = body(&bytes)?;
    json_of(ops.dlq_redrive(&r.filter(), r.rate, &caller).await?)
}
