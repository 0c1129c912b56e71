//! A local stand-in for an OpenAI-compatible provider: chat completions, image generation,
//! speech. Deterministic answers; faults switched on per call or per rate through `/_faults`;
//! `/_calls` counts what it served, so tests can prove a finished call was never repeated.
//!
//! ```text
//! POST /_faults  {"path": "images", "fault": {"status": 500}, "times": 1, "after": 2}
//!                faults: {"status": N} | {"rate_limit": {"reset_secs": S}}
//!                        | {"slow": {"ms": M}} | {"refusal": true}
//! GET  /_calls   {"received": N, "served": {path: n}, "by_key": {idempotency key: n}}
//! POST /_reset   clears faults and counters
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    Status(u16),
    RateLimit {
        reset_secs: u64,
    },
    Slow {
        ms: u64,
    },
    Refusal(bool),
    /// Images: answer 200 with no image (a provider's silent filter).
    NoImage,
    /// Images: answer with these warning flags on the image (`copyright_risk`, ...).
    Flags(Vec<String>),
}

/// A fault for the calls whose path (and optionally idempotency key) contain the given text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub key: String,
    pub fault: Fault,
    /// How many matching calls fail (absent: all of them).
    #[serde(default)]
    pub times: Option<u32>,
    /// Matching calls let through before the fault starts.
    #[serde(default)]
    pub after: u32,
    /// The error message a `status` fault answers with.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(skip)]
    seen: u32,
}

impl FaultRule {
    pub fn new(path: &str, fault: Fault) -> Self {
        Self {
            path: path.into(),
            key: String::new(),
            fault,
            times: None,
            after: 0,
            message: None,
            seen: 0,
        }
    }
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }
    pub fn message(mut self, m: &str) -> Self {
        self.message = Some(m.into());
        self
    }
    pub fn key(mut self, k: &str) -> Self {
        self.key = k.into();
        self
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Calls {
    pub received: u64,
    /// Calls refused for a wrong or missing key (not counted in `received`).
    #[serde(default)]
    pub unauthorized: u64,
    pub served: BTreeMap<String, u64>,
    pub by_key: BTreeMap<String, u64>,
    /// Request bodies served, newest last (for asserting what a provider was asked).
    #[serde(default)]
    pub bodies: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    faults: Vec<FaultRule>,
    calls: Calls,
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    api_key: Arc<String>,
}

/// A running provider; dropped or `stop`ped, it stops serving.
pub struct ProviderServer {
    pub addr: SocketAddr,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProviderServer {
    /// Serves on `addr` (port 0: any free port) and accepts `api_key` as the bearer token.
    pub async fn start(addr: SocketAddr, api_key: &str) -> std::io::Result<Self> {
        let state = AppState {
            inner: Arc::default(),
            api_key: Arc::new(api_key.into()),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/images/generations", post(image))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/hooks/{name}", post(hook))
            .route("/_faults", post(add_fault).delete(clear_faults))
            .route("/_calls", get(calls))
            .route("/_reset", post(reset))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
            task,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.state.inner.lock().expect("lock").faults.push(rule);
    }

    pub fn clear_faults(&self) {
        self.state.inner.lock().expect("lock").faults.clear();
    }

    pub fn calls(&self) -> Calls {
        self.state.inner.lock().expect("lock").calls.clone()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

enum Gate {
    Serve,
    Fail(Response),
    Refuse,
    NoImage,
    Flags(Vec<String>),
}

/// Counts the call, applies a matching fault.
async fn gate(state: &AppState, uri: &Uri, headers: &HeaderMap, body: &Value) -> Gate {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {}", state.api_key) {
        state.inner.lock().expect("lock").calls.unauthorized += 1;
        return Gate::Fail(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Incorrect API key provided.",
        ));
    }
    let path = uri.path().to_string();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let fault = {
        let mut inner = state.inner.lock().expect("lock");
        inner.calls.received += 1;
        let mut chosen = None;
        for rule in inner.faults.iter_mut() {
            if !path.contains(&rule.path) || !key.contains(&rule.key) {
                continue;
            }
            rule.seen += 1;
            let active =
                rule.seen > rule.after && rule.times.is_none_or(|t| rule.seen <= rule.after + t);
            if active {
                chosen = Some((rule.fault.clone(), rule.message.clone()));
                break;
            }
        }
        if !matches!(
            chosen,
            Some((
                Fault::Status(_) | Fault::RateLimit { .. } | Fault::Refusal(true),
                _
            ))
        ) {
            *inner.calls.served.entry(path.clone()).or_default() += 1;
            *inner.calls.by_key.entry(key).or_default() += 1;
            inner.calls.bodies.push(body.clone());
        }
        chosen
    };
    let (fault, message) = match fault {
        Some((f, m)) => (Some(f), m),
        None => (None, None),
    };
    match fault {
        None | Some(Fault::Refusal(false)) => Gate::Serve,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message
                .unwrap_or_else(|| "The server had an error while processing your request.".into());
            Gate::Fail(error(status, "server_error", &message))
        }
        Some(Fault::RateLimit { reset_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            );
            r.headers_mut().insert(
                "retry-after",
                reset_secs.to_string().parse().expect("header value"),
            );
            r.headers_mut().insert(
                "x-ratelimit-reset-requests",
                format!("{reset_secs}s").parse().expect("header value"),
            );
            Gate::Fail(r)
        }
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Gate::Serve
        }
        Some(Fault::Refusal(true)) => Gate::Refuse,
        Some(Fault::NoImage) => Gate::NoImage,
        Some(Fault::Flags(flags)) => Gate::Flags(flags),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": code}})),
    )
        .into_response()
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// `task=plan scenes=3` in the system message tells the fake what JSON to answer.
fn answer(messages: &[Value]) -> String {
    let text = |role: &str| {
        messages
            .iter()
            .filter(|m| m["role"] == role)
            .filter_map(|m| m["content"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (system, user) = (text("system"), text("user"));
    let scenes: u32 = system
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix("scenes=")
                .and_then(|n| n.trim_end_matches('.').parse().ok())
        })
        .unwrap_or(1);
    let title = user
        .lines()
        .find_map(|l| l.strip_prefix("Title: "))
        .unwrap_or_else(|| user.lines().next().unwrap_or("Untitled"))
        .to_string();
    if system.contains("task=plan") {
        let scenes: Vec<Value> = (1..=scenes)
            .map(|n| json!({"n": n, "description": format!("Scene {n} of {title}: {}", digest(&format!("{user}{n}")))}))
            .collect();
        json!({"title": title, "scenes": scenes}).to_string()
    } else if system.contains("task=script") {
        let scenes: Vec<Value> = (1..=scenes)
            .map(|n| json!({"n": n, "narration": format!("Narration for scene {n} of {title}.")}))
            .collect();
        json!({"scenes": scenes}).to_string()
    } else if system.contains("task=publish") {
        json!({"description": format!("{} — a short video.", user.lines().next().unwrap_or_default())}).to_string()
    } else {
        format!("ok {}", digest(&user))
    }
}

async fn chat(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let (content, refusal, finish) = match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => return r,
        Gate::Refuse => (
            Value::Null,
            json!("I can't help with that request."),
            "stop",
        ),
        // Image-only faults do not apply to chat.
        Gate::Serve | Gate::NoImage | Gate::Flags(_) => {
            (json!(answer(&messages)), Value::Null, "stop")
        }
    };
    Json(json!({
        "id": format!("chatcmpl-{}", digest(&body.to_string())),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    }))
    .into_response()
}

async fn image(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => r,
        Gate::Refuse => error(
            StatusCode::BAD_REQUEST,
            "content_policy_violation",
            "Your request was rejected as a result of our safety system.",
        ),
        Gate::NoImage => Json(json!({"created": 1_700_000_000, "data": []})).into_response(),
        gate => {
            let prompt = body["prompt"].as_str().unwrap_or_default();
            let mut image =
                json!({"url": format!("https://images.provider.local/{}.png", digest(prompt))});
            if let Gate::Flags(flags) = gate {
                image["warnings"] = json!(flags);
            }
            Json(json!({"created": 1_700_000_000, "data": [image]})).into_response()
        }
    }
}

/// A generic HTTP JSON endpoint (a webhook): acknowledges what it was sent.
async fn hook(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => r,
        Gate::Refuse => error(StatusCode::BAD_REQUEST, "rejected", "The hook refused it."),
        _ => Json(json!({"ok": true, "received": digest(&body.to_string())})).into_response(),
    }
}

async fn speech(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => r,
        Gate::Refuse => error(
            StatusCode::BAD_REQUEST,
            "content_policy_violation",
            "The input was rejected by our safety system.",
        ),
        Gate::Serve | Gate::NoImage | Gate::Flags(_) => {
            let input = body["input"].as_str().unwrap_or_default();
            let mut audio = b"ID3".to_vec();
            audio.extend(Sha256::digest(input.as_bytes()).iter().cycle().take(1021));
            ([("content-type", "audio/mpeg")], audio).into_response()
        }
    }
}

async fn add_fault(State(s): State<AppState>, Json(rule): Json<FaultRule>) -> StatusCode {
    s.inner.lock().expect("lock").faults.push(rule);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(s): State<AppState>) -> StatusCode {
    s.inner.lock().expect("lock").faults.clear();
    StatusCode::NO_CONTENT
}

async fn calls(State(s): State<AppState>) -> Json<Calls> {
    Json(s.inner.lock().expect("lock").calls.clone())
}

async fn reset(State(s): State<AppState>) -> StatusCode {
    let mut inner = s.inner.lock().expect("lock");
    inner.faults.clear();
    inner.calls = Calls::default();
    StatusCode::NO_CONTENT
}
