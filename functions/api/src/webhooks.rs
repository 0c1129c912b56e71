//! `/webhooks` and `/deliveries`: subscriptions, test-sends, rotation, replay, the
//! delivery log and resends.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::requests::ListDeliveries;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, instant, json_of, ok, page_of, with_status};
use crate::{Api, Operations};

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(patch).delete(delete))
        .route("/webhooks/{id}/{verb}", post(verb))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/resend", post(resend))
}

#[derive(Deserialize)]
struct WebhooksQuery {
    account: Option<String>,
}

async fn list(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<WebhooksQuery>,
) -> Answer {
    let subs = ops.webhooks(q.account.as_deref(), &caller).await?;
    ok(json!({ "webhooks": subs }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: String,
    /// Stack operators: the account it is for (none: the stack's own, every account's events).
    account: Option<String>,
}

/// `POST /webhooks`: 201 with the subscription and its signing secret (shown this once).
async fn create(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let new: NewWebhook = body(&bytes)?;
    let created = ops
        .create_webhook(
            new.account.as_deref(),
            &new.url,
            &new.events,
            &new.description,
            &caller,
        )
        .await?;
    with_status(StatusCode::CREATED, created)
}

async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.webhook(&id, &caller).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPatch {
    enabled: bool,
}

async fn patch(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: WebhookPatch = body(&bytes)?;
    json_of(ops.set_webhook(&id, patch.enabled, &caller).await?)
}

async fn delete(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    ops.delete_webhook(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: Option<String>,
}

/// `POST /webhooks/{id}/rotate`, `/test` (202: the delivery is queued) and `/replay`.
async fn verb(
    Who(caller): Who,
    Operations(ops): Operations,
    Path((id, verb)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    match verb.as_str() {
        "rotate" => {
            let secret = ops.rotate_webhook(&id, &caller).await?;
            ok(json!({"id": id, "secret": secret}))
        }
        "test" => with_status(StatusCode::ACCEPTED, ops.test_webhook(&id, &caller).await?),
        "replay" => {
            let b: ReplayBody = body(&bytes)?;
            let since = b.since.as_deref().ok_or_else(|| {
                ApiError::invalid("replay needs {\"since\": <RFC 3339 or epoch ms>}")
            })?;
            let done = ops.replay(&id, instant("since", since)?, &caller).await?;
            with_status(StatusCode::ACCEPTED, done)
        }
        other => Err(ApiError::not_found(format!(
            "no webhook action {other:?} (rotate, test, replay)"
        ))),
    }
}

async fn deliveries(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    Query(q): Query<ListDeliveries>,
) -> Answer {
    let since = q
        .failed_since
        .as_deref()
        .map(|v| instant("failed_since", v))
        .transpose()?;
    let page = ops
        .deliveries(&id, since, q.limit, q.cursor.as_deref(), &caller)
        .await?;
    page_of("deliveries", page)
}

async fn delivery(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.delivery(&id, &caller).await?)
}

async fn resend(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    with_status(StatusCode::ACCEPTED, ops.resend(&id, &caller).await?)
}
