//! Shepherd's HTTP API: the operator library (`shepherd::ops`) over HTTP, for the API
//! Gateway HTTP API in `template.yaml` and, locally, for the local runtime on 127.0.0.1.
//!
//! | method | path | role | what |
//! |---|---|---|---|
//! | GET | /health | none | `ok`, or 503 `degraded` when the configuration or the store is unreachable |
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
//!
//! Errors are JSON `{"code", "message"}` (409s add `available`): `invalid_request` 400,
//! `unauthorized` 401, `forbidden` 403, `not_found` 404, `conflict` 409,
//! `idempotency_key_reused` 409, `too_large` 413, `limit_reached` 429, `unavailable` 503.
//! Stack operators are the Cognito group `stack-operators` (see `domain::authz`).
//! An account never sees another account's productions: they are `not_found`.
//! Lists answer a page with `next_cursor` (null on the last); `?cursor=` goes on from it
//! (`/productions`, `/approvals`, `/productions/{id}/audit`, `/audit`, `/alarms`,
//! `/webhooks/{id}/deliveries`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shepherd::audit::AuditQuery;
use shepherd::domain::alarms::AlarmStatus;
use shepherd::domain::{Act, Action, Actor, Caller, ProductionStatus, Role, Scope};
use shepherd::ops::{Ops, OpsError, RedriveFilter};
use shepherd::ports::{Clock, SystemClock};
use shepherd::view;

/// A caller as the token file names it: an account's, or (`"stack": true`) a stack
/// operator, who has every account in scope and alone switches integrations and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenCaller {
    #[serde(default)]
    pub account: String,
    pub role: Role,
    #[serde(default)]
    pub stack: bool,
    /// For the audit trail's actor.
    #[serde(default)]
    pub name: String,
}

impl TokenCaller {
    fn caller(&self) -> Caller {
        let scope = if self.stack {
            Scope::Stack
        } else {
            Scope::Account(self.account.clone())
        };
        Caller::new(Actor(format!("api:{}", self.name)), self.role, scope)
    }
}

/// The Cognito group whose members are the stack's operators.
pub const STACK_GROUP: &str = "stack-operators";

/// `cognito:groups` as API Gateway passes it: `[a b]` (or a JSON array).
fn groups(claim: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return list;
    }
    claim
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|g| g.trim_matches('"').to_string())
        .filter(|g| !g.is_empty())
        .collect()
}

/// The HTTP status an operation's error answers with (the service knows nothing of HTTP).
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for OpsError {
    fn status(&self) -> u16 {
        match self {
            Self::InvalidInput(_) | Self::Invalid(_) => 400,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict { .. } | Self::KeyReused { .. } | Self::Busy(_) => 409,
            Self::LimitReached(_) => 429,
            Self::DispatchFailed { .. } | Self::Store(_) | Self::Config(_) => 503,
        }
    }
}

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Auth {
    /// In AWS: API Gateway's JWT authorizer verified the token; its claims name the account
    /// and role (claim names configurable, Cognito custom attributes by default), and
    /// membership of `group` (`cognito:groups`) makes a stack operator.
    Claims {
        account: String,
        role: String,
        group: String,
    },
    /// Locally: `Authorization: Bearer <token>`, tokens from a JSON file
    /// `{"tokens": {"<token>": {"account": "...", "role": "operator", "name": "..."}}}`.
    Tokens(HashMap<String, TokenCaller>),
}

#[derive(Debug, Deserialize)]
struct TokenFile {
    tokens: HashMap<String, TokenCaller>,
}

impl Auth {
    pub fn claims_from_env(env: &HashMap<String, String>) -> Self {
        let get = |k: &str, d: &str| env.get(k).cloned().unwrap_or_else(|| d.into());
        Self::Claims {
            account: get("SHEPHERD_ACCOUNT_CLAIM", "custom:account"),
            role: get("SHEPHERD_ROLE_CLAIM", "custom:role"),
            group: get("SHEPHERD_STACK_GROUP", STACK_GROUP),
        }
    }

    /// Reads a token file; a missing or malformed file is an error naming it.
    pub fn tokens_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let file: TokenFile = serde_json::from_str(&text)
            .map_err(|e| format!("token file {} is not valid: {e}", path.display()))?;
        Ok(Self::Tokens(
            file.tokens
                .into_iter()
                .map(|(token, mut c)| {
                    if !c.stack && c.account.trim().is_empty() {
                        return Err(format!(
                            "token file {}: a token names an account, or is \"stack\": true",
                            path.display()
                        ));
                    }
                    if c.name.is_empty() {
                        let scope = if c.stack { "stack" } else { &c.account };
                        c.name = format!("{:?}@{scope}", c.role).to_lowercase();
                    }
                    Ok((token, c))
                })
                .collect::<Result<_, String>>()?,
        ))
    }

    fn caller(&self, parts: &Parts) -> Result<Caller, ApiError> {
        match self {
            Self::Tokens(tokens) => {
                let token = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "send Authorization: Bearer <token>",
                        )
                    })?;
                tokens
                    .get(token.trim())
                    .map(TokenCaller::caller)
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
                    })
            }
            Self::Claims {
                account,
                role,
                group,
            } => {
                let claims = parts
                    .extensions
                    .get::<lambda_http::request::RequestContext>()
                    .and_then(|c| c.authorizer())
                    .and_then(|a| a.jwt.as_ref())
                    .map(|j| &j.claims)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "no verified token (the route has no authorizer)",
                        )
                    })?;
                let claim = |name: &str| {
                    claims.get(name).cloned().ok_or_else(|| {
                        ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!("the token has no {name} claim"),
                        )
                    })
                };
                let role_name = claim(role)?;
                let role = Role::parse(&role_name).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("role {role_name:?} is not viewer, operator or admin"),
                    )
                })?;
                // The subject is immutable and verified; a username or email is only for
                // display (an email can change), so the actor is the subject first.
                let sub = claim("sub")?;
                let actor = match ["cognito:username", "username"]
                    .iter()
                    .find_map(|k| claims.get(*k))
                {
                    Some(name) if *name != sub => format!("api:{sub} ({name})"),
                    _ => format!("api:{sub}"),
                };
                let stack = claims
                    .get("cognito:groups")
                    .is_some_and(|g| groups(g).iter().any(|g| g == group));
                let scope = if stack {
                    Scope::Stack
                } else {
                    Scope::Account(claim(account)?)
                };
                Ok(Caller::new(Actor(actor), role, scope))
            }
        }
    }
}

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
    /// The stack's pipelines (its composition crate's, or a test's fixtures).
    pipelines: Arc<shepherd::pipeline::Pipelines>,
}

impl Api {
    /// An API over ready-made operations.
    pub fn new(ops: Ops, auth: Auth) -> Self {
        let pipelines = ops.pipelines().clone();
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
        pipelines: Arc<shepherd::pipeline::Pipelines>,
    ) -> Self {
        Self(Arc::new(Inner {
            ops: tokio::sync::OnceCell::new(),
            parameter,
            sdk,
            auth,
            pipelines,
        }))
    }

    /// As the deployed function starts: `SHEPHERD_STACK_CONFIG_PARAM`; callers from the
    /// authorizer's claims, or from `SHEPHERD_API_TOKENS` (a token file) when set.
    pub fn from_env(pipelines: Arc<shepherd::pipeline::Pipelines>) -> Result<Self, String> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&env, None, pipelines)
    }

    pub fn from_map(
        env: &HashMap<String, String>,
        sdk: Option<aws_config::SdkConfig>,
        pipelines: Arc<shepherd::pipeline::Pipelines>,
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

    async fn ops(&self) -> Result<Arc<Ops>, ApiError> {
        self.0
            .ops
            .get_or_try_init(|| async {
                let sdk = match &self.0.sdk {
                    Some(sdk) => sdk.clone(),
                    None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
                };
                let (ops, _) =
                    Ops::connect_parameter(&sdk, &self.0.parameter, self.0.pipelines.clone())
                        .await?;
                Ok::<_, OpsError>(Arc::new(ops))
            })
            .await
            .cloned()
            .map_err(ApiError::from)
    }
}

/// The verified caller of a request (an extractor).
pub struct Who(pub Caller);

impl FromRequestParts<Api> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        api.0.auth.caller(parts).map(Who)
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    available: Option<Vec<String>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            available: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match status.as_u16() {
            _ if matches!(e, OpsError::KeyReused { .. }) => "idempotency_key_reused",
            400 => "invalid_request",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            429 => "limit_reached",
            _ => "unavailable",
        };
        let available = match &e {
            OpsError::Conflict { available, .. } => {
                Some(available.iter().map(|a| a.as_str().to_string()).collect())
            }
            _ => None,
        };
        Self {
            status,
            code,
            message: e.to_string(),
            available,
        }
    }
}

/// Every error answer is `{code, message}` JSON, also those axum's extractors write as
/// plain text (a malformed query, a body over the limit, a wrong content type).
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let text = match axum::body::to_bytes(res.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status.as_u16() {
        400 | 415 | 422 => "invalid_request",
        404 | 405 => "not_found",
        413 => "too_large",
        _ if status.is_server_error() => "unavailable",
        _ => "invalid_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        shepherd::domain::redact::excerpt(&text, 500)
    };
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(a) = self.available {
            body["available"] = a.into();
        }
        (self.status, Json(body)).into_response()
    }
}

type Answer = Result<Response, ApiError>;

/// The caller's own account (every API caller has one).
/// The account a listing is of: the caller's own, or (for stack operators, who have every
/// account in scope) the one named by `?account=`. Another account's name gets an empty
/// answer from the operations, as if it did not exist.
fn which_account<'a>(caller: &'a Caller, asked: &'a Option<String>) -> Result<&'a str, ApiError> {
    match (asked.as_deref(), caller.account()) {
        (Some(a), _) => Ok(a),
        (None, Some(own)) => Ok(own),
        (None, None) => Err(ApiError::invalid(
            "a stack operator names the account: ?account=<account>",
        )),
    }
}

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

/// A JSON body, `{}` when empty; anything else is a 400 naming the problem.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// The routes, with their state; serve it with `lambda_http::run` or `axum::serve`.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/productions", get(list).post(create))
        .route("/productions/{id}", get(show))
        .route("/productions/{id}/actions/{action}", post(act))
        .route("/productions/{id}/audit", get(production_audit))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/{answer}", post(answer))
        .route("/audit", get(audit))
        .route("/alarms", get(alarms))
        .route("/alarms/{id}/{status}", post(set_alarm))
        .route("/dlq", get(dlq_list))
        .route("/dlq/redrive", post(dlq_redrive))
        .route("/dlq/messages/{id}", get(dlq_show))
        .route("/dlq/messages/{id}/{action}", post(dlq_act))
        .route("/account", get(account))
        .route("/integrations", get(integrations))
        .route("/pipelines", get(pipelines))
        .route("/integrations/{id}", axum::routing::patch(set_integration))
        .route("/webhooks", get(webhooks).post(create_webhook))
        .route(
            "/webhooks/{id}",
            get(webhook).patch(patch_webhook).delete(delete_webhook),
        )
        .route("/webhooks/{id}/{verb}", post(webhook_verb))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/resend", post(resend))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(json_errors))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(api)
}

async fn health(State(api): State<Api>) -> Response {
    let degraded = |check: &str, e: ApiError| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "checks": {check: e.message}})),
        )
            .into_response()
    };
    let ops = match tokio::time::timeout(Duration::from_secs(5), api.ops()).await {
        Ok(Ok(ops)) => ops,
        Ok(Err(e)) => return degraded("config", e),
        Err(_) => return degraded("config", ApiError::invalid("timed out")),
    };
    match tokio::time::timeout(Duration::from_secs(5), ops.probe()).await {
        Ok(Ok(())) => Json(json!({"status": "ok", "checks": {"store": "ok"}})).into_response(),
        Ok(Err(e)) => degraded("store", e.into()),
        Err(_) => degraded("store", ApiError::invalid("timed out")),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    account: Option<String>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

/// A page of a list: its items under `name`, and `next_cursor` (null on the last page) to
/// pass back as `?cursor=` for the next.
fn paged(name: &str, items: Vec<Value>, next: Option<String>) -> Answer {
    ok(json!({ name: items, "next_cursor": next }))
}

async fn list(State(api): State<Api>, Who(caller): Who, Query(q): Query<ListQuery>) -> Answer {
    let status = q
        .status
        .as_deref()
        .map(ProductionStatus::parse)
        .transpose()
        .map_err(ApiError::invalid)?;
    let ps = api
        .ops()
        .await?
        .list(
            which_account(&caller, &q.account)?,
            status,
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    let items: Vec<Value> = ps.items.iter().map(|p| view::json(p, None)).collect();
    paged("productions", items, ps.next)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    /// The pipeline to run (default: the stack's default pipeline).
    pipeline: Option<String>,
}

/// `POST /productions[?pipeline=<name>]`, the body the pipeline's input; with an
/// `Idempotency-Key` header a repeat within 24 hours answers 200 with the first production
/// (nothing spent), and the key with another input 409.
async fn create(
    State(api): State<Api>,
    Who(caller): Who,
    Query(q): Query<CreateQuery>,
    headers: axum::http::HeaderMap,
    bytes: Bytes,
) -> Answer {
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("body is not UTF-8"))?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("the Idempotency-Key header is 1 to 255 visible ASCII characters")
        })?),
        None => None,
    };
    let (p, repeated) = api
        .ops()
        .await?
        .start_once(q.pipeline.as_deref(), text, key, &caller)
        .await?;
    let location = format!("/productions/{}", p.id);
    Ok((
        if repeated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        [(header::LOCATION, location)],
        Json(view::json(&p, None)),
    )
        .into_response())
}

async fn show(State(api): State<Api>, Who(caller): Who, Path(id): Path<String>) -> Answer {
    let ops = api.ops().await?;
    let p = ops.get(&id, &caller).await?;
    let (outputs, artifacts) = ops.detail(&p).await?;
    ok(view::detail(&p, &outputs, &artifacts))
}

/// The action named in the path, with its arguments from the body: an unknown action is
/// not found (404); a body that does not fit it is a 400 naming the problem.
fn action(name: &str, body: &Bytes) -> Result<Act, ApiError> {
    let Some(action) = Action::parse(name) else {
        let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no action {name:?} ({})",
            all.join(", ")
        )));
    };
    let mut args: serde_json::Map<String, Value> = self::body(body)?;
    args.insert("action".into(), action.as_str().into());
    serde_json::from_value(Value::Object(args))
        .map_err(|e| ApiError::invalid(format!("{action} needs {e}")))
}

async fn act(
    State(api): State<Api>,
    Who(caller): Who,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let act = action(&name, &bytes)?;
    let p = api.ops().await?.act(&id, act, &caller).await?;
    ok(view::json(&p, None))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn production_audit(
    State(api): State<Api>,
    Who(caller): Who,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Answer {
    let rows = api
        .ops()
        .await?
        .audit(
            &AuditQuery::Production(id),
            q.limit.unwrap_or(1000),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    paged(
        "events",
        rows.items.iter().map(|r| json!(r)).collect(),
        rows.next,
    )
}

async fn approvals(State(api): State<Api>, Who(caller): Who, Query(q): Query<ListQuery>) -> Answer {
    let ps = api
        .ops()
        .await?
        .list(
            which_account(&caller, &q.account)?,
            Some(ProductionStatus::AwaitingApproval),
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    let items: Vec<Value> = ps
        .items
        .iter()
        .map(|p| {
            json!({
                "production_id": p.id,
                "approval": p.approval,
                "summary": view::banner(p),
            })
        })
        .collect();
    paged("approvals", items, ps.next)
}

async fn answer(
    State(api): State<Api>,
    Who(caller): Who,
    Path((id, answer)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    if answer != "approve" && answer != "reject" {
        return Err(ApiError::not_found(format!(
            "no answer {answer:?} (approve, reject)"
        )));
    }
    act(State(api), Who(caller), Path((id, answer)), bytes).await
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

/// Epoch milliseconds or RFC 3339.
fn instant(name: &str, v: &str) -> Result<i64, ApiError> {
    let ms = match v.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => shepherd::view::parse_time(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "{name} {v:?}: expected epoch milliseconds or RFC 3339"
            ))
        })?,
    };
    shepherd::domain::input::instant(name, ms).map_err(ApiError::invalid)
}

async fn audit(State(api): State<Api>, Who(caller): Who, Query(q): Query<AuditParams>) -> Answer {
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
    let rows = api
        .ops()
        .await?
        .audit(
            &query,
            q.limit.unwrap_or(1000),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    paged(
        "events",
        rows.items.iter().map(|r| json!(r)).collect(),
        rows.next,
    )
}

async fn alarms(State(api): State<Api>, Who(caller): Who, Query(q): Query<ListQuery>) -> Answer {
    let alarms = api
        .ops()
        .await?
        .alarms(
            q.account.as_deref(),
            q.limit.unwrap_or(100),
            q.cursor.as_deref(),
            &caller,
        )
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
    State(api): State<Api>,
    Who(caller): Who,
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
    api.ops().await?.set_alarm(&id, status, &caller).await?;
    ok(json!({"id": id, "status": status}))
}

#[derive(Deserialize)]
struct DlqQuery {
    phase: Option<String>,
    limit: Option<usize>,
}

async fn dlq_list(State(api): State<Api>, Who(caller): Who, Query(q): Query<DlqQuery>) -> Answer {
    let entries = api
        .ops()
        .await?
        .dlq_list(q.phase.as_deref(), q.limit.unwrap_or(100), &caller)
        .await?;
    ok(json!({"messages": entries}))
}

async fn dlq_show(State(api): State<Api>, Who(caller): Who, Path(id): Path<String>) -> Answer {
    let (entry, production) = api.ops().await?.dlq_show(&id, &caller).await?;
    ok(json!({
        "message": entry,
        "production": production.as_ref().map(|p| view::json(p, None)),
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DlqBody {
    reason: Option<String>,
    #[serde(default)]
    include_malformed: bool,
    phase: Option<String>,
    code: Option<String>,
    older_than_secs: Option<u64>,
    rate: Option<u32>,
}

async fn dlq_act(
    State(api): State<Api>,
    Who(caller): Who,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let b: DlqBody = body(&bytes)?;
    let ops = api.ops().await?;
    match action.as_str() {
        "resubmit" => {
            let filter = RedriveFilter {
                message_id: Some(id),
                include_malformed: b.include_malformed,
                ..Default::default()
            };
            let r = ops.dlq_redrive(&filter, 10, &caller).await?;
            ok(serde_json::to_value(r).unwrap_or_default())
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

async fn dlq_redrive(State(api): State<Api>, Who(caller): Who, bytes: Bytes) -> Answer {
    let b: DlqBody = body(&bytes)?;
    let filter = RedriveFilter {
        phase: b.phase,
        code: b.code,
        older_than: b.older_than_secs.map(Duration::from_secs),
        message_id: None,
        include_malformed: b.include_malformed,
    };
    let r = api
        .ops()
        .await?
        .dlq_redrive(&filter, b.rate.unwrap_or(10), &caller)
        .await?;
    ok(serde_json::to_value(r).unwrap_or_default())
}

async fn account(State(api): State<Api>, Who(caller): Who, Query(q): Query<ListQuery>) -> Answer {
    let usage = api
        .ops()
        .await?
        .account_usage(which_account(&caller, &q.account)?, &caller)
        .await?;
    ok(serde_json::to_value(usage).unwrap_or_default())
}

/// `GET /pipelines`: every version, the latest, and the open productions on each.
async fn pipelines(State(api): State<Api>, Who(caller): Who) -> Answer {
    let list = api.ops().await?.pipelines_in_use(&caller).await?;
    ok(json!({"pipelines": list}))
}

async fn integrations(State(api): State<Api>, Who(caller): Who) -> Answer {
    let list = api.ops().await?.integrations(&caller).await?;
    ok(json!({"integrations": list}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegrationPatch {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

async fn set_integration(
    State(api): State<Api>,
    Who(caller): Who,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: IntegrationPatch = body(&bytes)?;
    let view = api
        .ops()
        .await?
        .set_integration_enabled(&id, patch.enabled, &patch.reason, &caller)
        .await?;
    ok(serde_json::to_value(view).unwrap_or_default())
}

#[derive(Deserialize)]
struct WebhooksQuery {
    account: Option<String>,
}

async fn webhooks(
    State(api): State<Api>,
    Who(caller): Who,
    Query(q): Query<WebhooksQuery>,
) -> Answer {
    let subs = api
        .ops()
        .await?
        .webhooks(q.account.as_deref(), &caller)
        .await?;
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
async fn create_webhook(State(api): State<Api>, Who(caller): Who, bytes: Bytes) -> Answer {
    let new: NewWebhook = body(&bytes)?;
    let created = api
        .ops()
        .await?
        .create_webhook(
            new.account.as_deref(),
            &new.url,
            &new.events,
            &new.description,
            &caller,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(created).unwrap_or_default()),
    )
        .into_response())
}

async fn webhook(State(api): State<Api>, Who(caller): Who, Path(id): Path<String>) -> Answer {
    let sub = api.ops().await?.webhook(&id, &caller).await?;
    ok(serde_json::to_value(sub).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPatch {
    enabled: bool,
}

async fn patch_webhook(
    State(api): State<Api>,
    Who(caller): Who,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: WebhookPatch = body(&bytes)?;
    let sub = api
        .ops()
        .await?
        .set_webhook(&id, patch.enabled, &caller)
        .await?;
    ok(serde_json::to_value(sub).unwrap_or_default())
}

async fn delete_webhook(
    State(api): State<Api>,
    Who(caller): Who,
    Path(id): Path<String>,
) -> Answer {
    api.ops().await?.delete_webhook(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: Option<String>,
}

/// `POST /webhooks/{id}/rotate`, `/test` (202: the delivery is queued) and `/replay`.
async fn webhook_verb(
    State(api): State<Api>,
    Who(caller): Who,
    Path((id, verb)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let ops = api.ops().await?;
    match verb.as_str() {
        "rotate" => {
            let secret = ops.rotate_webhook(&id, &caller).await?;
            ok(json!({"id": id, "secret": secret}))
        }
        "test" => {
            let d = ops.test_webhook(&id, &caller).await?;
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::to_value(d).unwrap_or_default()),
            )
                .into_response())
        }
        "replay" => {
            let b: ReplayBody = body(&bytes)?;
            let since = b.since.as_deref().ok_or_else(|| {
                ApiError::invalid("replay needs {\"since\": <RFC 3339 or epoch ms>}")
            })?;
            let done = ops.replay(&id, instant("since", since)?, &caller).await?;
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::to_value(done).unwrap_or_default()),
            )
                .into_response())
        }
        other => Err(ApiError::not_found(format!(
            "no webhook action {other:?} (rotate, test, replay)"
        ))),
    }
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    /// Only failed deliveries created since then (RFC 3339 or epoch ms).
    failed_since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn deliveries(
    State(api): State<Api>,
    Who(caller): Who,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Answer {
    let since = q
        .failed_since
        .as_deref()
        .map(|v| instant("failed_since", v))
        .transpose()?;
    let page = api
        .ops()
        .await?
        .deliveries(
            &id,
            since,
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    let items = page
        .items
        .iter()
        .map(|d| serde_json::to_value(d).unwrap_or_default())
        .collect();
    paged("deliveries", items, page.next)
}

async fn delivery(State(api): State<Api>, Who(caller): Who, Path(id): Path<String>) -> Answer {
    let d = api.ops().await?.delivery(&id, &caller).await?;
    ok(serde_json::to_value(d).unwrap_or_default())
}

async fn resend(State(api): State<Api>, Who(caller): Who, Path(id): Path<String>) -> Answer {
    let d = api.ops().await?.resend(&id, &caller).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(d).unwrap_or_default()),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample event `cargo lambda invoke` sends, as lambda_http hands it to the router.
    fn parts(edit: impl FnOnce(&mut Value)) -> Parts {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/apigw-api-productions.json"
        );
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut event);
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        req.into_parts().0
    }

    fn claims_auth() -> Auth {
        Auth::claims_from_env(&HashMap::new())
    }

    #[test]
    fn the_authorizers_claims_name_the_account_role_and_actor() {
        let caller = claims_auth().caller(&parts(|_| {})).unwrap();
        assert_eq!(
            caller,
            Caller::new(
                Actor("api:5f0c6a1e-0000-4000-8000-000000000001 (ana)".into()),
                Role::Operator,
                Scope::Account("acme".into())
            )
        );
        // The actor is the immutable subject: a changed email does not change it.
        let renamed = parts(|e| {
            e.pointer_mut("/requestContext/authorizer/jwt/claims")
                .unwrap()["email"] = "mallory@evil.example".into()
        });
        assert_eq!(claims_auth().caller(&renamed).unwrap().actor, caller.actor);
    }

    #[test]
    fn members_of_the_stack_group_are_stack_operators() {
        let claims = "/requestContext/authorizer/jwt/claims";
        for groups in [
            "[stack-operators]",
            "[editors stack-operators]",
            r#"["stack-operators"]"#,
        ] {
            let p = parts(|e| e.pointer_mut(claims).unwrap()["cognito:groups"] = groups.into());
            assert_eq!(
                claims_auth().caller(&p).unwrap().scope,
                Scope::Stack,
                "{groups}"
            );
        }
        let p = parts(|e| {
            e.pointer_mut(claims).unwrap()["cognito:groups"] = "[stack-operators-x]".into()
        });
        assert_eq!(
            claims_auth().caller(&p).unwrap().scope,
            Scope::Account("acme".into())
        );
        let no_sub = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("sub");
        });
        assert_eq!(claims_auth().caller(&no_sub).unwrap_err().status, 403);
    }

    #[test]
    fn a_token_without_a_known_role_or_account_is_forbidden() {
        let claims = "/requestContext/authorizer/jwt/claims";
        let no_role = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("custom:role");
        });
        let err = claims_auth().caller(&no_role).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "forbidden"));
        assert!(err.message.contains("custom:role"), "{}", err.message);
        let superuser = parts(|e| e.pointer_mut(claims).unwrap()["custom:role"] = "root".into());
        assert_eq!(claims_auth().caller(&superuser).unwrap_err().status, 403);
        let no_account = parts(|e| {
            e.pointer_mut(claims)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove("custom:account");
        });
        assert_eq!(claims_auth().caller(&no_account).unwrap_err().status, 403);
    }

    #[test]
    fn a_request_without_a_verified_token_is_unauthorized() {
        let anonymous = parts(|e| {
            e["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
        });
        let err = claims_auth().caller(&anonymous).unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
    }

    #[test]
    fn claim_names_are_configurable() {
        let env = HashMap::from([
            ("SHEPHERD_ACCOUNT_CLAIM".to_string(), "email".to_string()),
            ("SHEPHERD_ROLE_CLAIM".to_string(), "custom:role".to_string()),
        ]);
        let caller = Auth::claims_from_env(&env).caller(&parts(|_| {})).unwrap();
        assert_eq!(caller.account(), Some("ana@acme.example"));
    }

    #[test]
    fn action_bodies_are_checked() {
        let empty = Bytes::new();
        assert!(matches!(
            action("reject", &empty).unwrap_err().status,
            StatusCode::BAD_REQUEST
        ));
        let both =
            Bytes::from_static(b"{\"reason\": \"r\", \"skip_gate\": true, \"jump_to\": \"voice\"}");
        let act = action("override", &both).unwrap();
        let p = shepherd::domain::start(
            "p".into(),
            "a".into(),
            shepherd::domain::PipelineVersion::new("content", 1),
            &["brief", "voice"],
            Default::default(),
            "t".into(),
            0,
        );
        let mut p = p.production;
        p.status = ProductionStatus::Paused;
        let refused = shepherd::domain::decide(&p, act.into(), 1).unwrap_err();
        assert_eq!(
            ApiError::from(OpsError::from(refused)).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            action("explode", &empty).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let from = Bytes::from_static(b"{\"feedback\": \"x\", \"phase\": \"assets\"}");
        assert_eq!(
            action("reject", &from).unwrap(),
            Act::Reject {
                feedback: "x".into(),
                phase: Some("assets".into())
            }
        );
        let typo = Bytes::from_static(b"{\"feedbak\": \"x\"}");
        let err = action("reject", &typo).unwrap_err();
        assert!(err.message.contains("feedbak"), "{}", err.message);
    }
}
