//! `/webhooks` and `/deliveries`: subscriptions, test-sends, rotation, replay, the
//! delivery log and resends.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::requests::ListDeliveries;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, instant, json_of, ok, page_of, with_status};
use crate::schema::{
    Common, Conflict, CreatedWebhook, Deleted, DeliveriesPage, Delivery, Forbidden, Invalid,
    NotFound, Queued, Rotated, TooLarge, Webhook, WebhookVerb, Webhooks,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, patch, delete))
        .routes(routes!(verb))
        .routes(routes!(deliveries))
        .routes(routes!(delivery))
        .routes(routes!(resend))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WebhooksQuery {
    /// Stack operators: one account's (none: the stack's own).
    account: Option<String>,
}

/// The account's webhook subscriptions.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(WebhooksQuery),
    responses((status = 200, body = Webhooks), Invalid, Common))]
async fn list(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<WebhooksQuery>,
) -> Answer {
    let subs = ops.webhooks(q.account.as_deref(), &caller).await?;
    ok(json!({ "webhooks": subs }))
}

#[derive(Deserialize, ToSchema)]
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
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), Invalid, Forbidden, TooLarge, Common))]
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

/// One subscription.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook), Invalid, NotFound, Common))]
async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.webhook(&id, &caller).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookPatch {
    enabled: bool,
}

/// Enable or disable a subscription (admin).
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = WebhookPatch, responses((status = 200, body = Webhook), Invalid, Forbidden, NotFound, TooLarge, Common))]
async fn patch(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: WebhookPatch = body(&bytes)?;
    json_of(ops.set_webhook(&id, patch.enabled, &caller).await?)
}

/// Delete a subscription and its secret (admin).
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), Invalid, Forbidden, NotFound, Common))]
async fn delete(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    ops.delete_webhook(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}

/// replay: `{since}`, RFC 3339 or epoch milliseconds.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: Option<String>,
}

/// `POST /webhooks/{id}/rotate`, `/test` (202: the delivery is queued) and `/replay`.
#[utoipa::path(post, path = "/webhooks/{id}/{verb}", tag = "webhooks",
    params(("id" = String, Path), ("verb" = WebhookVerb, Path, description = "rotate needs the admin role")),
    request_body(content = Option<ReplayBody>),
    responses(
        (status = 200, description = "rotate: the new secret, shown once", body = Rotated),
        (status = 202, description = "test: the queued delivery; replay: what was queued again",
            body = Queued),
        Invalid, Forbidden, NotFound, TooLarge, Common))]
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

/// The subscription's deliveries newest first, or the failed ones since a time.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), ListDeliveries),
    responses((status = 200, body = DeliveriesPage), Invalid, NotFound, Common))]
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

/// One delivery and every attempt.
#[utoipa::path(get, path = "/deliveries/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Delivery), Invalid, NotFound, Common))]
async fn delivery(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.delivery(&id, &caller).await?)
}

/// Send a delivery that is not pending again.
#[utoipa::path(post, path = "/deliveries/{id}/resend", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 202, body = Delivery), Invalid, Forbidden, NotFound, Conflict, Common))]
async fn resend(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    with_status(StatusCode::ACCEPTED, ops.resend(&id, &caller).await?)
}
