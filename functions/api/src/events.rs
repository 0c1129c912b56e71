//! `/events` and `/connectors`: work that arrives by itself. A sender posts to
//! `/events/{connector}`, authenticated by its signature (GitHub's `X-Hub-Signature-256`,
//! or Standard Webhooks), not by a token: API Gateway lets that one route through
//! unauthenticated. Operators read every event and what became of it, and re-submit one;
//! admins create and remove connectors and watchers; operators enable and disable watchers.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use shepherd::domain::events::{ConnectorSpec, EventOutcome, InboundEvent, Watcher, WatcherSpec};
use shepherd::ops::{CreatedConnector, EventFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, json_of, ok, page_of, with_status};
use crate::schema::{
    Common, Connectors, Deleted, Forbidden, InboundPage, Invalid, NotFound, TooLarge, WatchKinds,
    Watchers,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, receive))
        .routes(routes!(resubmit))
        .routes(routes!(connectors, create_connector))
        .routes(routes!(connector, delete_connector))
        .routes(routes!(watchers, create_watcher))
        .routes(routes!(watch_kinds))
        .routes(routes!(watcher, patch_watcher, delete_watcher))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(default)]
struct EventsQuery {
    /// Stack operators: one account's (none: every account's).
    account: Option<String>,
    /// `connector:<id>` or `watcher:<id>`.
    source: Option<String>,
    /// received, started, deduped, ignored, failed.
    outcome: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Arrived events newest first, with what became of each (the production it started).
#[utoipa::path(get, path = "/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = InboundPage), Invalid, Forbidden, Common))]
async fn list(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<EventsQuery>,
) -> Answer {
    let filter = EventFilter {
        account: q.account,
        source: q.source,
        outcome: q
            .outcome
            .as_deref()
            .map(EventOutcome::parse)
            .transpose()
            .map_err(ApiError::invalid)?,
    };
    let page = ops
        .events(&filter, &caller, q.limit.unwrap_or(50), q.cursor.as_deref())
        .await?;
    page_of("events", page)
}

/// One event: its source, type, dedupe key, outcome, production or error, and its item.
#[utoipa::path(get, path = "/events/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = InboundEvent), Invalid, NotFound, Common))]
async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.event(&id, &caller).await?)
}

/// A sender's webhook to connector `id` (no token: its signature authenticates it). 202
/// when it started a production; 200 when it was a duplicate or starts nothing here; 400
/// naming the field when it is refused (kept, audited); 401 for a bad signature (nothing
/// is stored).
#[utoipa::path(post, path = "/events/{id}", tag = "events", security(()),
    params(("id" = String, Path, description = "the connector")),
    request_body(content = Object, description = "the sender's payload, as signed"),
    responses(
        (status = 202, description = "started a production", body = InboundEvent),
        (status = 200, description = "deduped or ignored", body = InboundEvent),
        (status = 401, description = "the signature does not verify", body = crate::schema::ErrorBody),
        Invalid, NotFound, TooLarge, Common))]
async fn receive(
    Operations(ops): Operations,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let e = ops.receive(&id, &headers, &bytes).await?;
    let status = match e.outcome {
        EventOutcome::Started => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    with_status(status, e)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResubmitBody {
    reason: String,
}

/// Clear the event's dedupe key and submit its item again (operator), audited.
#[utoipa::path(post, path = "/events/{id}/resubmit", tag = "events",
    params(("id" = String, Path)), request_body = ResubmitBody,
    responses((status = 200, body = InboundEvent), Invalid, Forbidden, NotFound, TooLarge, Common))]
async fn resubmit(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let b: ResubmitBody = body(&bytes)?;
    json_of(ops.resubmit_event(&id, &b.reason, &caller).await?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConnectorsQuery {
    /// Stack operators: one account's (none: every account's).
    account: Option<String>,
}

/// Connectors, with their counts (received, started, deduped, ignored, failed).
#[utoipa::path(get, path = "/connectors", tag = "events", params(ConnectorsQuery),
    responses((status = 200, body = Connectors), Invalid, Forbidden, Common))]
async fn connectors(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ConnectorsQuery>,
) -> Answer {
    let list = ops.connectors(q.account.as_deref(), &caller).await?;
    ok(json!({ "connectors": list }))
}

/// Create a connector (admin): 201 with its signing secret, shown this once, and the path
/// its sender posts to.
#[utoipa::path(post, path = "/connectors", tag = "events", request_body = ConnectorSpec,
    responses((status = 201, body = CreatedConnector), Invalid, Forbidden, TooLarge, Common))]
async fn create_connector(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let spec: ConnectorSpec = body(&bytes)?;
    with_status(
        StatusCode::CREATED,
        ops.create_connector(spec, &caller).await?,
    )
}

/// One connector.
#[utoipa::path(get, path = "/connectors/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = shepherd::domain::events::Connector), Invalid, NotFound, Common))]
async fn connector(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
) -> Answer {
    json_of(ops.connector(&id, &caller).await?)
}

/// Remove a connector and its secret (admin); its events stay.
#[utoipa::path(delete, path = "/connectors/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), Invalid, Forbidden, NotFound, Common))]
async fn delete_connector(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
) -> Answer {
    ops.delete_connector(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}

/// Watchers: state, last success, consecutive errors and the last error, counts.
#[utoipa::path(get, path = "/watchers", tag = "events", params(ConnectorsQuery),
    responses((status = 200, body = Watchers), Invalid, Forbidden, Common))]
async fn watchers(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ConnectorsQuery>,
) -> Answer {
    let list = ops.watchers(q.account.as_deref(), &caller).await?;
    ok(json!({ "watchers": list }))
}

/// Create a watcher (admin): a feed, a repository's issues with a label, or a kind the
/// stack's pipeline crates add (with its `params`); its first poll records what is there
/// and starts nothing.
#[utoipa::path(post, path = "/watchers", tag = "events", request_body = WatcherSpec,
    responses((status = 201, body = Watcher), Invalid, Forbidden, TooLarge, Common))]
async fn create_watcher(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let spec: WatcherSpec = body(&bytes)?;
    with_status(
        StatusCode::CREATED,
        ops.create_watcher(spec, &caller).await?,
    )
}

/// The kinds a watcher can be: the shipped ones, and those the stack's pipeline crates
/// add with the JSON Schemas of their params and items.
#[utoipa::path(get, path = "/watchers/kinds", tag = "events",
    responses((status = 200, body = WatchKinds), Forbidden, Common))]
async fn watch_kinds(Who(caller): Who, Operations(ops): Operations) -> Answer {
    let kinds = ops.watch_kinds(&caller)?;
    ok(json!({"built_in": shepherd::pipeline::watch::BUILT_IN_KINDS, "kinds": kinds}))
}

/// One watcher.
#[utoipa::path(get, path = "/watchers/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Watcher), Invalid, NotFound, Common))]
async fn watcher(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    json_of(ops.watcher(&id, &caller).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WatcherPatch {
    enabled: bool,
}

/// `{"enabled": true}` re-enables a watcher and clears its error count (operator);
/// `{"enabled": false}` disables it.
#[utoipa::path(patch, path = "/watchers/{id}", tag = "events", params(("id" = String, Path)),
    request_body = WatcherPatch,
    responses((status = 200, body = Watcher), Invalid, Forbidden, NotFound, TooLarge, Common))]
async fn patch_watcher(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let p: WatcherPatch = body(&bytes)?;
    json_of(ops.set_watcher_enabled(&id, p.enabled, &caller).await?)
}

/// Remove a watcher (admin); its events stay.
#[utoipa::path(delete, path = "/watchers/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), Invalid, Forbidden, NotFound, Common))]
async fn delete_watcher(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
) -> Answer {
    ops.delete_watcher(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}
