//! Shepherd's HTTP API: the operator library (`shepherd::ops`) over HTTP, for the API
//! Gateway HTTP API in `template.yaml` and, locally, for the local runtime on 127.0.0.1.
//! A router per resource (`productions`, `audit`, `alarms`, `dlq`, `account`, `webhooks`,
//! `schedules`, `health`), one error mapping at the edge (`error`), extractors for the caller
//! ([`Who`]) and the operations ([`Operations`]); request types and their defaults are the
//! CLI's too (`shepherd::ops::requests`).
//!
//! | method | path | role | what |
//! |---|---|---|---|
//! | GET | /health | none | `ok`, or 503 `degraded` when the configuration or the store is unreachable |
//! | GET | /openapi.json | none | this API's OpenAPI 3.1 description (also `docs/openapi.json`) |
//! | GET | /productions?status=&limit=&cursor=&account= | viewer | the caller's account's productions, newest first (stack operators name the account) |
//! | POST | /productions | operator | create from a brief (its `account` must be the caller's); `Idempotency-Key` header: a repeat within 24 h answers 200 with the first |
//! | GET | /productions/{id} | viewer | state, phases, `available_actions`, `summary`, outputs |
//! | POST | /productions/{id}/actions/{action} | operator (override: admin) | pause, resume, retry_phase, approve, reject `{feedback, phase?}`, edit `{changes}`, cancel, acknowledge_warnings, override `{reason, skip_gate \| jump_to}` |
//! | GET | /productions/{id}/audit | viewer | the production's audit trail |
//! | GET | /approvals | viewer | productions waiting for approval |
//! | POST | /approvals/{id}/approve, /approvals/{id}/reject | operator | answer an approval |
//! | GET | /audit?trace= or ?type=&since=&until= | viewer | events by trace id, or by type in a window (an account's, read by key) |
//! | GET | /alarms?limit=&cursor=&account= | viewer | alarms about the account's productions, newest first (stack operators: every alarm, or one account's) |
//! | POST | /alarms/{id}/ack, /alarms/{id}/resolve | operator | handle an alarm (`<type>#<subject>`) |
//! | GET | /dlq?phase=&limit= | viewer | DLQ messages of the account's productions |
//! | GET | /dlq/messages/{id} | viewer | one message, decoded, with its production |
//! | POST | /dlq/messages/{id}/resubmit | operator | back to its source queue as the next attempt |
//! | POST | /dlq/redrive | operator | `{phase?, code?, older_than_secs?, rate?}` |
//! | POST | /dlq/messages/{id}/discard | admin | `{reason}`, audited |
//! | GET | /account?account= | viewer | the caller's account's limits and usage |
//! | GET | /integrations | viewer | the providers in chain order, with health |
//! | PATCH | /integrations/{id} | stack operator | `{"enabled": false, "reason": "..."}` or `{"enabled": true}` |
//! | GET | /webhooks?account= | viewer | the account's webhook subscriptions (stack operators: the stack's own, or one account's) |
//! | POST | /webhooks | admin | `{url, events, description?, account?}`: 201 with the signing secret, shown once |
//! | GET, PATCH, DELETE | /webhooks/{id} | viewer; admin | one subscription; `{"enabled": bool}`; delete it and its secret |
//! | POST | /webhooks/{id}/test, /rotate, /replay | operator (rotate: admin) | queue a `webhook.test` (202); a new secret; `{since}`: every failed delivery since then again (202) |
//! | GET | /webhooks/{id}/deliveries?failed_since=&limit=&cursor= | viewer | its deliveries newest first, or the failed ones since a time |
//! | GET | /deliveries/{id} | viewer | one delivery and every attempt |
//! | POST | /deliveries/{id}/resend | operator | send a delivery that is not pending again (202) |
//! | POST | /callbacks/{token} | the job's callback token | an external job's heartbeat, result or failure for the phase attempt that waits on it: 200, 401 not its token, 410 no longer waits (stop), 413 over 6 MB |
//! | POST | /events/{connector} | the sender's signature | a GitHub or Standard Webhooks delivery: 202 started, 200 deduped or ignored, 400 refused (kept), 401 bad signature (nothing kept) |
//! | GET | /events?account=&source=&outcome=&limit=&cursor=, /events/{id} | viewer | arrived events and what became of each |
//! | POST | /events/{id}/resubmit | operator | `{reason}`: clear its dedupe key and submit it again, audited |
//! | GET, POST | /connectors | viewer; admin | connectors with their counts; create one (201, its secret shown once) |
//! | GET, DELETE | /connectors/{id} | viewer; admin | one connector; remove it and its secret |
//! | GET, POST | /watchers | viewer; admin | watchers (state, last success, consecutive errors, last error); create one (201) |
//! | GET | /watchers/kinds | viewer | the kinds a watcher can be: the shipped ones, and the pipeline crates' with their params' and items' schemas |
//! | GET, PATCH, DELETE | /watchers/{id} | viewer; operator; admin | one watcher; `{"enabled": true}` re-enables it and clears its count; remove it |
//! | GET | /schedules?account=&limit=&cursor= | viewer | schedules, newest first, with next slot, last fired and counts |
//! | POST | /schedules | admin | `{name, account, pipeline?, input, cron \| every_minutes, time_zone?, catch_up?, catch_up_cap?, staleness_seconds?, overlap?}` (201) |
//! | GET, PATCH, DELETE | /schedules/{id} | viewer; operator; admin | one schedule and its slot history; `{"paused": true, "note"}` or `{"paused": false}`; remove it |
//! | POST | /schedules/{id}/trigger, /schedules/{id}/backfill | operator | start one now (201); `{from, until, per_tick?}`: a past range, a few a minute (202) |
//!
//! Errors are JSON `{"code", "message"}` (409s add `available`): `invalid_request` 400,
//! `unauthorized` 401, `forbidden` 403, `not_found` 404, `conflict` 409,
//! `idempotency_key_reused` 409, `too_large` 413, `limit_reached` 429, `unavailable` 503.
//! Stack operators are the Cognito group `stack-operators` (see `domain::authz`).
//! An account never sees another account's productions: they are `not_found`.
//! Lists answer a page with `next_cursor` (null on the last); `?cursor=` goes on from it
//! (`/productions`, `/approvals`, `/productions/{id}/audit`, `/audit`, `/alarms`,
//! `/webhooks/{id}/deliveries`).

mod account;
mod alarms;
mod audit;
mod auth;
mod callbacks;
mod dlq;
mod error;
mod events;
mod health;
mod productions;
mod schedules;
mod schema;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use shepherd::ops::{Ops, OpsError};
use shepherd::pipeline::Pipelines;

/// Makes the stack's pipelines, once, when the operations are first needed.
type PipelinesFn = Box<dyn Fn() -> Arc<Pipelines> + Send + Sync>;

pub use auth::{Auth, STACK_GROUP, TokenCaller, Who};
pub use error::{ApiError, HttpStatus};

/// The API's state: the operations (built on first use, so a cold start stays cheap and an
/// unreachable configuration shows as `degraded`) and how callers are identified.
#[derive(Clone)]
pub struct Api(Arc<Inner>);

struct Inner {
    ops: tokio::sync::OnceCell<Arc<Ops>>,
    /// The SSM parameter holding the stack configuration, and the SDK config to read it
    /// with (`None`: the environment's).
    parameter: String,
    sdk: Option<aws_config::SdkConfig>,
    auth: Auth,
    /// The stack's pipelines (its composition crate's, or a test's fixtures), made when the
    /// operations are: parsing the definitions at init would lengthen the cold start.
    pipelines: PipelinesFn,
}

impl Api {
    /// An API over ready-made operations.
    pub fn new(ops: Ops, auth: Auth) -> Self {
        let pipelines = ops.pipelines().clone();
        let pipelines: PipelinesFn = Box::new(move || pipelines.clone());
        Self(Arc::new(Inner {
            ops: tokio::sync::OnceCell::new_with(Some(Arc::new(ops))),
            parameter: String::new(),
            sdk: None,
            auth,
            pipelines,
        }))
    }

    /// An API that reads the stack configuration from `parameter` on first use.
    pub fn connecting(
        parameter: String,
        sdk: Option<aws_config::SdkConfig>,
        auth: Auth,
        pipelines: impl Fn() -> Arc<Pipelines> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(Inner {
            ops: tokio::sync::OnceCell::new(),
            parameter,
            sdk,
            auth,
            pipelines: Box::new(pipelines),
        }))
    }

    /// As the deployed function starts: `SHEPHERD_STACK_CONFIG_PARAM`; callers from the
    /// authorizer's claims, or from `SHEPHERD_API_TOKENS` (a token file) when set.
    pub fn from_env(
        pipelines: impl Fn() -> Arc<Pipelines> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&env, None, pipelines)
    }

    pub fn from_map(
        env: &HashMap<String, String>,
        sdk: Option<aws_config::SdkConfig>,
        pipelines: impl Fn() -> Arc<Pipelines> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let parameter = env
            .get("SHEPHERD_STACK_CONFIG_PARAM")
            .filter(|p| !p.is_empty())
            .cloned()
            .ok_or("SHEPHERD_STACK_CONFIG_PARAM is not set")?;
        let auth = match env.get("SHEPHERD_API_TOKENS").filter(|p| !p.is_empty()) {
            Some(path) => Auth::tokens_file(std::path::Path::new(path))?,
            None => Auth::claims_from_env(env),
        };
        Ok(Self::connecting(parameter, sdk, auth, pipelines))
    }

    pub(crate) async fn ops(&self) -> Result<Arc<Ops>, ApiError> {
        self.0
            .ops
            .get_or_try_init(|| async {
                let sdk = match &self.0.sdk {
                    Some(sdk) => sdk.clone(),
                    None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
                };
                let (ops, _) =
                    Ops::connect_parameter(&sdk, &self.0.parameter, (self.0.pipelines)()).await?;
                Ok::<_, OpsError>(Arc::new(ops))
            })
            .await
            .cloned()
            .map_err(ApiError::from)
    }
}

impl Api {
    pub(crate) fn auth(&self) -> &Auth {
        &self.0.auth
    }
}

/// The operations, connected on first use (an extractor: routes take it after [`Who`], so
/// an unauthenticated request is refused before anything is read).
pub struct Operations(pub Arc<Ops>);

impl FromRequestParts<Api> for Operations {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        api.ops().await.map(Operations)
    }
}

/// The API's description: the title, the bearer scheme every route but `/health` needs.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Shepherd",
        description = "Operate durable pipelines: productions, approvals, audit, alarms, DLQs, \
                       webhooks. Errors are `{code, message, request_id}`.",
        license(name = "MIT OR Apache-2.0")
    ),
    security(("bearer" = [])),
    modifiers(&Bearer),
    // What the response sets and path parameters name, which the routes do not register.
    components(schemas(
        schema::ErrorBody,
        schema::ErrorCode,
        schema::TooManyRequests,
        schema::ActionName,
        schema::AnswerName,
        schema::AlarmAction,
        schema::MessageActionName,
        schema::WebhookVerb
    )),
    tags(
        (name = "productions"), (name = "audit"), (name = "alarms"), (name = "dlq"),
        (name = "account"), (name = "webhooks"), (name = "schedules"), (name = "events"), (name = "callbacks"), (name = "health")
    )
)]
struct ApiDoc;

/// A JWT from the stack's user pool (its `custom:account` and `custom:role` claims), or a
/// local token.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routes and their description, from one list: a route is documented by the same
/// annotation that mounts it.
fn routes() -> utoipa_axum::router::OpenApiRouter<Api> {
    use utoipa::OpenApi as _;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(productions::routes())
        .merge(audit::routes())
        .merge(alarms::routes())
        .merge(dlq::routes())
        .merge(account::routes())
        .merge(webhooks::routes())
        .merge(schedules::routes())
        .merge(events::routes())
        .merge(callbacks::routes())
}

/// The API's OpenAPI 3.1 description (served at `/openapi.json`, checked in as
/// `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The description as served and checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .expect("the OpenAPI description serialises");
    text.push('\n');
    text
}

/// The routes, with their state; serve it with `lambda_http::run` or `axum::serve`.
pub fn router(api: Api) -> Router {
    let (routes, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()).into_response() }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn(error::request_id))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in description is the generated one (`cargo run -p shepherd-local --
    /// template` rewrites it), and it describes every route but its own.
    #[test]
    fn the_checked_in_description_is_current_and_complete() {
        let checked_in = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .expect("docs/openapi.json");
        assert!(
            checked_in == openapi_json(),
            "docs/openapi.json differs from the routes: run `cargo run -p shepherd-local -- template` and commit it"
        );
        let doc: serde_json::Value = serde_json::from_str(&checked_in).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| format!("{} {path}", m.to_uppercase()))
            })
            .collect();
        assert_eq!(ops.len(), 53, "{ops:#?}");
        for op in [
            "GET /health",
            "POST /productions",
            "POST /productions/{id}/actions/{action}",
            "PUT /account/access",
            "DELETE /webhooks/{id}",
            "POST /schedules",
            "PATCH /schedules/{id}",
            "POST /schedules/{id}/backfill",
            "GET /productions/{id}/outputs/{phase}",
            "POST /callbacks/{token}",
        ] {
            assert!(ops.contains(&op.to_string()), "{op} missing");
        }
        // The documented actions are the domain's.
        let documented: Vec<&str> = doc["components"]["schemas"]["ActionName"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let actions: Vec<&str> = shepherd::domain::Action::ALL
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(documented, actions);
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "unresolved reference to {name}"
            );
        }
        // Every operation answers errors in the one documented shape.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if path == "/health" {
                    continue;
                }
                let r401 = &op["responses"]["401"]["content"]["application/json"]["schema"];
                assert_eq!(
                    r401["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
            }
        }
    }
}
