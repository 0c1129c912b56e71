//! `/dlq`: list, show, resubmit, redrive, discard.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::RedriveFilter;
use shepherd::ops::requests::{ListDlq, REDRIVE_RATE, Redrive};
use shepherd::view;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, json_of, ok};
use crate::schema::{
    Common, DlqMessage, DlqMessages, Forbidden, Invalid, MessageActed, MessageActionName, NotFound,
    RedriveReport, TooLarge,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(redrive))
        .routes(routes!(show))
        .routes(routes!(act))
}

/// DLQ messages of the account's productions.
#[utoipa::path(get, path = "/dlq", tag = "dlq", params(ListDlq),
    responses((status = 200, body = DlqMessages), Invalid, Common))]
async fn list(Who(caller): Who, Operations(ops): Operations, Query(q): Query<ListDlq>) -> Answer {
    let entries = ops.dlq_list(q.phase.as_deref(), q.limit, &caller).await?;
    ok(json!({"messages": entries}))
}

/// One message, decoded, with its production.
#[utoipa::path(get, path = "/dlq/messages/{id}", tag = "dlq", params(("id" = String, Path)),
    responses((status = 200, body = DlqMessage), Invalid, NotFound, Common))]
async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    let (entry, production) = ops.dlq_show(&id, &caller).await?;
    ok(json!({
        "message": entry,
        "production": production.as_ref().map(|p| view::json(p, None, crate::error::now())),
    }))
}

/// `resubmit {include_malformed?}` or `discard {reason}`.
/// discard: `{reason}` (audited); resubmit: `{include_malformed?}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageAction {
    reason: Option<String>,
    #[serde(default)]
    include_malformed: bool,
}

/// Resubmit a message to its source queue as the next attempt (operator), or discard it
/// (admin).
#[utoipa::path(post, path = "/dlq/messages/{id}/{action}", tag = "dlq",
    params(("id" = String, Path), ("action" = MessageActionName, Path)),
    request_body(content = Option<MessageAction>),
    responses((status = 200, body = MessageActed), Invalid, Forbidden, NotFound, TooLarge, Common))]
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

/// Messages back to their phase queues, filtered and rate-limited.
#[utoipa::path(post, path = "/dlq/redrive", tag = "dlq", request_body(content = Option<Redrive>),
    responses((status = 200, body = RedriveReport), Invalid, Forbidden, TooLarge, Common))]
async fn redrive(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let r: Redrive = body(&bytes)?;
    json_of(ops.dlq_redrive(&r.filter(), r.rate, &caller).await?)
}
