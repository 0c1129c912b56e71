//! A local stand-in for OpenAI's API: chat completions, image generation, speech, answered
//! in the shapes OpenAI's API reference (its published OpenAPI description) defines, not the
//! shapes our client would like:
//!
//! - `POST /v1/images/generations`: GPT image models (`gpt-image-*`) answer `b64_json` (a
//!   real PNG) and refuse `response_format` (400 `unknown_parameter`); DALL-E models answer
//!   a `url` (served under `/files/`; OpenAI's expire within the hour) unless asked for
//!   `b64_json`. A blocked prompt is 400 `moderation_blocked` (`content_policy_violation`
//!   for DALL-E). This fake makes PNG only: `output_format` jpeg or webp is refused.
//! - `POST /v1/audio/speech`: audio bytes with the requested format's media type; an
//!   unknown voice or an input over 4096 characters is a 400.
//! - `POST /v1/chat/completions`: `chat.completion` objects; a refusal is `content: null`
//!   with `refusal` set; `response_format: json_object` needs the word "JSON" in the
//!   messages, as the real API requires.
//! - `POST /v1/moderations`: omni-moderation scores for text and one image (a URL or a
//!   base64 `data:` URL), every category with its applied input types.
//! - `GET /v1/models`: the model list (what `shepherd integrations test` probes).
//! - Errors are `{"error": {message, type, param, code}}`; a 429 carries `retry-after` and
//!   the `x-ratelimit-*` headers, except `insufficient_quota`, which carries neither.
//!
//! Deterministic answers; faults switched on per call or at random rates through
//! `/_faults`; `/_calls` counts what it served, so tests can prove a finished call was
//! never repeated.
//!
//! ```text
//! POST /_faults  {"path": "images", "fault": {"status": 500}, "times": 1, "after": 2, "rate": 0.1}
//!                faults: {"status": N} | {"rate_limit": {"reset_secs": S}} | {"quota": true}
//!                        | {"slow": {"ms": M}} | {"refusal": true} | {"drop": true}
//!                        | {"bad_answer": true} | "no_image" | {"flags": [..]}
//!                        | {"scores": [["violence", 0.9]]} (moderation)
//! POST /_latency {"path": "images", "median_ms": 8000, "tail_ms": 60000}: log-normal times
//! GET  /_calls   {"received": N, "served": {path: n}, "by_key": {idempotency key: n}}
//! POST /_reset   clears faults and counters
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The built-in voices of OpenAI's speech API.
const VOICES: [&str; 13] = [
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
    "marin", "cedar",
];

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
    /// 429 `insufficient_quota`: the account has no credit left (no wait cures it).
    Quota(bool),
    /// The connection breaks in the middle of the answer (the work was done).
    Drop(bool),
    /// Chat: a 200 whose content is not the JSON the prompt asked for.
    BadAnswer(bool),
    /// Images: answer 200 with no image (a provider's silent filter).
    NoImage,
    /// Images: answer with these warning flags on the image (`copyright_risk`, ...). Not
    /// OpenAI's (it sends none): some compatible providers' extension.
    Flags(Vec<String>),
    /// Moderation: these categories score this high (every other scores near zero).
    Scores(Vec<(String, f64)>),
    /// A 200 whose body is this many bytes (a runaway answer): the client must refuse it.
    Oversize {
        bytes: usize,
    },
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
    /// The chance in [0, 1] that the rule applies to a matching call (absent: always).
    #[serde(default)]
    pub rate: Option<f64>,
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
            rate: None,
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
    /// Applies to a matching call with probability `rate`.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }
}

/// How long the calls to one endpoint take: log-normal, `median_ms` half the time and
/// more than `tail_ms` one time in a hundred (a real image model: 8 s and 60 s). A `Slow`
/// fault on a call replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The calls whose path contains this (`images`, `/v1/`).
    pub path: String,
    pub median_ms: u64,
    pub tail_ms: u64,
}

impl std::str::FromStr for Latency {
    type Err = String;

    /// `images=8000:60000`: the path, the median and the 99th percentile in milliseconds.
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = || {
            let (path, times) = s.split_once('=')?;
            let (median, tail) = times.split_once(':')?;
            Some((path, median.parse().ok()?, tail.parse().ok()?))
        };
        let (path, median_ms, tail_ms): (&str, u64, u64) =
            parse().ok_or_else(|| format!("{s:?}: expected PATH=MEDIAN_MS:TAIL_MS"))?;
        if median_ms == 0 || tail_ms < median_ms {
            return Err(format!(
                "{s:?}: the median must be above 0 and the tail at least the median"
            ));
        }
        Ok(Self {
            path: path.into(),
            median_ms,
            tail_ms,
        })
    }
}

impl Latency {
    /// One call's time: log-normal with the median and 99th percentile asked for, never
    /// more than twice the tail.
    pub fn sample(&self) -> Duration {
        use rand_distr::Distribution as _;
        // z of the 99th percentile of the standard normal.
        const Z99: f64 = 2.326_348;
        let mu = (self.median_ms as f64).ln();
        let sigma = ((self.tail_ms as f64) / (self.median_ms as f64)).ln() / Z99;
        let ms = rand_distr::LogNormal::new(mu, sigma)
            .map(|d| d.sample(&mut rand::rng()))
            .unwrap_or(self.median_ms as f64);
        Duration::from_millis(ms.min(2.0 * self.tail_ms as f64) as u64)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Calls {
    pub received: u64,
    /// Calls refused for a wrong or missing key (not counted in `received`).
    #[serde(default)]
    pub unauthorized: u64,
    /// Calls that did the work, per path and per idempotency key (an answer lost to a
    /// dropped connection or a client's timeout counts: the work was done).
    pub served: BTreeMap<String, u64>,
    pub by_key: BTreeMap<String, u64>,
    /// Request bodies served, newest last (for asserting what a provider was asked).
    #[serde(default)]
    pub bodies: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    faults: Vec<FaultRule>,
    latencies: Vec<Latency>,
    calls: Calls,
    /// Images answered by URL, by file name.
    files: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    api_key: Arc<String>,
    /// `http://<addr>`, for the URLs of DALL-E answers.
    origin: Arc<String>,
}

/// A running provider; dropped or `stop`ped, it stops serving.
pub struct ProviderServer {
    pub addr: SocketAddr,
    state: AppState,
    server: crate::Server,
}

impl ProviderServer {
    /// Serves on `addr` (port 0: any free port) and accepts `api_key` as the bearer token.
    pub async fn start(addr: SocketAddr, api_key: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = AppState {
            inner: Arc::default(),
            api_key: Arc::new(api_key.into()),
            origin: Arc::new(format!("http://{addr}")),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/images/generations", post(image))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/moderations", post(moderation))
            .route("/v1/models", get(models))
            .route("/v1/hooks/{name}", post(hook))
            .route("/files/{name}", get(file))
            .route("/_faults", post(add_fault).delete(clear_faults))
            .route("/_latency", post(add_latency))
            .route("/_calls", get(calls))
            .route("/_reset", post(reset))
            .with_state(state.clone());
        Ok(Self {
            addr,
            state,
            server: crate::Server::spawn(listener, app),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.state.inner.lock().expect("lock").faults.push(rule);
    }

    /// Calls whose path contains `latency.path` take its time (the first that matches).
    pub fn add_latency(&self, latency: Latency) {
        self.state
            .inner
            .lock()
            .expect("lock")
            .latencies
            .push(latency);
    }

    pub fn clear_faults(&self) {
        self.state.inner.lock().expect("lock").faults.clear();
    }

    pub fn calls(&self) -> Calls {
        self.state.inner.lock().expect("lock").calls.clone()
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

enum Gate {
    Serve,
    Fail(Response),
    Refuse,
    NoImage,
    BadAnswer,
    Flags(Vec<String>),
    Scores(Vec<(String, f64)>),
    /// Do the work, then break the connection mid-answer.
    Drop,
}

/// Checks the key, counts the call, applies a matching fault.
async fn gate(state: &AppState, uri: &Uri, headers: &HeaderMap, body: &Value) -> Gate {
    if let Err(r) = authorized(state, headers) {
        return Gate::Fail(*r);
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
            if rule.rate.is_some_and(|r| rand::random::<f64>() >= r) {
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
        let refused = matches!(
            chosen,
            Some((
                Fault::Status(_)
                    | Fault::RateLimit { .. }
                    | Fault::Quota(true)
                    | Fault::Refusal(true),
                _
            ))
        );
        if !refused {
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
    if !matches!(fault, Some(Fault::Slow { .. })) {
        let latency = {
            let inner = state.inner.lock().expect("lock");
            inner
                .latencies
                .iter()
                .find(|l| path.contains(&l.path))
                .map(Latency::sample)
        };
        if let Some(wait) = latency {
            tokio::time::sleep(wait).await;
        }
    }
    match fault {
        None | Some(Fault::Refusal(false) | Fault::Quota(false) | Fault::Drop(false)) => {
            Gate::Serve
        }
        Some(Fault::BadAnswer(false)) => Gate::Serve,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (kind, default) = if status.is_server_error() {
                (
                    "server_error",
                    "The server had an error while processing your request. Sorry about that!",
                )
            } else {
                ("invalid_request_error", "The request was not accepted.")
            };
            let message = message.unwrap_or_else(|| default.into());
            Gate::Fail(error(status, kind, None, &message))
        }
        Some(Fault::RateLimit { reset_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
                &format!(
                    "Rate limit reached for requests per min (RPM): Limit 60, Used 60, Requested 1. \
                     Please try again in {reset_secs}s."
                ),
            );
            let h = r.headers_mut();
            h.insert("retry-after", header(&reset_secs.to_string()));
            h.insert("x-ratelimit-limit-requests", header("60"));
            h.insert("x-ratelimit-remaining-requests", header("0"));
            h.insert(
                "x-ratelimit-reset-requests",
                header(&format!("{reset_secs}s")),
            );
            Gate::Fail(r)
        }
        Some(Fault::Quota(true)) => Gate::Fail(error(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota, please check your plan and billing details.",
        )),
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Gate::Serve
        }
        Some(Fault::Refusal(true)) => Gate::Refuse,
        Some(Fault::Drop(true)) => Gate::Drop,
        Some(Fault::BadAnswer(true)) => Gate::BadAnswer,
        Some(Fault::NoImage) => Gate::NoImage,
        Some(Fault::Flags(flags)) => Gate::Flags(flags),
        Some(Fault::Scores(scores)) => Gate::Scores(scores),
        Some(Fault::Oversize { bytes }) => {
            let padding = "x".repeat(bytes);
            let body = json!({"object": "chat.completion", "padding": padding}).to_string();
            Gate::Fail(
                (
                    StatusCode::OK,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
            )
        }
    }
}

fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth == format!("Bearer {}", state.api_key) {
        return Ok(());
    }
    state.inner.lock().expect("lock").calls.unauthorized += 1;
    Err(Box::new(error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    )))
}

fn header(v: &str) -> HeaderValue {
    v.parse().expect("header value")
}

/// OpenAI's error object: `{"error": {message, type, param, code}}`.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    invalid(status, kind, code, None, message)
}

fn invalid(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": param, "code": code}})),
    )
        .into_response()
}

/// A 400 naming the parameter, as the API answers a request it does not take.
fn bad_param(param: &str, code: &str, message: &str) -> Response {
    invalid(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(code),
        Some(param),
        message,
    )
}

/// A successful answer with the rate-limit headers the API sends on every response.
fn ok(body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert("x-ratelimit-limit-requests", header("60"));
    h.insert("x-ratelimit-remaining-requests", header("59"));
    h.insert("x-ratelimit-reset-requests", header("1s"));
    r
}

/// An answer whose connection breaks after its first bytes.
fn dropped() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"id\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped (fault)",
        )),
    ];
    Response::new(Body::from_stream(futures::stream::iter(chunks)))
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
    if system.contains("task=coding_plan") {
        let task = user
            .lines()
            .find_map(|l| l.strip_prefix("Task: "))
            .unwrap_or("the task");
        let slug: String = task
            .to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(3)
            .collect::<Vec<_>>()
            .join("_");
        json!({
            "summary": format!("Plan: {task}"),
            "steps": [format!("Add src/{slug}.rs"), "Export it from src/lib.rs".to_string()],
            "files": [format!("src/{slug}.rs"), "src/lib.rs".to_string()],
        })
        .to_string()
    } else if system.contains("task=plan") {
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
    let Some(messages) = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .cloned()
    else {
        return bad_param(
            "messages",
            "invalid_value",
            "'messages' must be a non-empty array.",
        );
    };
    if !body["model"].is_string() {
        return bad_param(
            "model",
            "missing_required_parameter",
            "you must provide a model parameter",
        );
    }
    let json_mode = body["response_format"]["type"] == "json_object";
    let says_json = messages.iter().any(|m| {
        m["content"]
            .as_str()
            .is_some_and(|c| c.to_lowercase().contains("json"))
    });
    if json_mode && !says_json {
        return bad_param(
            "messages",
            "invalid_value",
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        );
    }
    let (content, refusal) = match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => return r,
        Gate::Drop => return dropped(),
        Gate::Refuse => (
            Value::Null,
            json!("I'm sorry, but I can't help with that request."),
        ),
        Gate::BadAnswer => (
            json!(format!(
                "Sure! Here is what you asked for:\n{}",
                answer(&messages).chars().take(40).collect::<String>()
            )),
            Value::Null,
        ),
        Gate::Serve | Gate::NoImage | Gate::Flags(_) | Gate::Scores(_) => {
            (json!(answer(&messages)), Value::Null)
        }
    };
    ok(Json(json!({
        "id": format!("chatcmpl-{}", digest(&body.to_string())),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        "service_tier": "default"
    })))
}

/// A real PNG (16x16, one colour from `seed`), small and deterministic.
pub fn png(seed: &[u8]) -> Vec<u8> {
    let colour = Sha256::digest(seed);
    let (w, h) = (16u32, 16u32);
    // Each row: filter byte 0 (none), then the pixels.
    let mut row = vec![0u8];
    for _ in 0..w {
        row.extend_from_slice(&colour[..3]);
    }
    let raw = row.repeat(h as usize);
    // zlib: header, one stored deflate block, Adler-32.
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &z), (b"IEND", &[])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn image(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or("dall-e-2").to_string();
    let gpt_image = model.starts_with("gpt-image");
    if body["prompt"].as_str().is_none_or(str::is_empty) {
        return bad_param(
            "prompt",
            "missing_required_parameter",
            "Missing required parameter: 'prompt'.",
        );
    }
    if gpt_image && !body["response_format"].is_null() {
        return bad_param(
            "response_format",
            "unknown_parameter",
            "Unknown parameter: 'response_format'.",
        );
    }
    if let Some(f) = body["output_format"].as_str().filter(|f| *f != "png") {
        return bad_param(
            "output_format",
            "invalid_value",
            &format!("this local fake makes PNG only, not {f}"),
        );
    }
    let gate = gate(&s, &uri, &headers, &body).await;
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let bytes = png(prompt.as_bytes());
    let mut datum = match gate {
        Gate::Fail(r) => return r,
        Gate::Drop => return dropped(),
        Gate::Refuse if gpt_image => {
            return error(
                StatusCode::BAD_REQUEST,
                "image_generation_user_error",
                Some("moderation_blocked"),
                "Your request was rejected by the safety system.",
            );
        }
        Gate::Refuse => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("content_policy_violation"),
                "Your request was rejected as a result of our safety system.",
            );
        }
        Gate::NoImage => return ok(Json(json!({"created": 1_700_000_000, "data": []}))),
        _ if gpt_image || body["response_format"] == "b64_json" => {
            json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(&bytes)})
        }
        _ => {
            let name = format!("img-{}.png", digest(prompt));
            s.inner
                .lock()
                .expect("lock")
                .files
                .insert(name.clone(), bytes);
            json!({"url": format!("{}/files/{name}", s.origin)})
        }
    };
    if model == "dall-e-3" {
        datum["revised_prompt"] = json!(format!("A detailed picture: {prompt}"));
    }
    if let Gate::Flags(flags) = gate {
        datum["warnings"] = json!(flags);
    }
    let mut answer = json!({"created": 1_700_000_000, "data": [datum]});
    if gpt_image {
        answer["background"] = json!("opaque");
        answer["output_format"] = json!("png");
        answer["size"] = json!("1024x1024");
        answer["quality"] = json!("medium");
        answer["usage"] = json!({"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}});
    }
    ok(Json(answer))
}

/// What an omni-moderation model scores, and the input types each category applies to
/// (OpenAI's API reference: images are scored for these six; the rest are text-only).
const MODERATION: &[(&str, bool)] = &[
    ("harassment", false),
    ("harassment/threatening", false),
    ("hate", false),
    ("hate/threatening", false),
    ("illicit", false),
    ("illicit/violent", false),
    ("self-harm", true),
    ("self-harm/instructions", true),
    ("self-harm/intent", true),
    ("sexual", true),
    ("sexual/minors", false),
    ("violence", true),
    ("violence/graphic", true),
];

/// `POST /v1/moderations`, as the API reference shapes it: `input` is a string, an array of
/// strings or an array of `{type: text, text}` / `{type: image_url, image_url: {url}}`
/// (at most one image); one result with every category's flag, score and applied input
/// types. Scores are tiny unless a `Scores` fault raises some; `flagged` uses 0.5.
async fn moderation(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"]
        .as_str()
        .unwrap_or("omni-moderation-latest")
        .to_string();
    let parts: Vec<Value> = match &body["input"] {
        Value::String(t) => vec![json!({"type": "text", "text": t})],
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(t) => json!({"type": "text", "text": t}),
                other => other.clone(),
            })
            .collect(),
        Value::Null => {
            return bad_param(
                "input",
                "missing_required_parameter",
                "Missing required parameter: 'input'.",
            );
        }
        _ => return bad_param("input", "invalid_type", "Invalid type for 'input'."),
    };
    let mut images = 0;
    for (n, part) in parts.iter().enumerate() {
        match part["type"].as_str() {
            Some("text") if part["text"].is_string() => {}
            Some("image_url") => {
                let url = part["image_url"]["url"].as_str().unwrap_or_default();
                let data = url
                    .strip_prefix("data:image/")
                    .and_then(|r| r.split_once(";base64,"))
                    .map(|(_, b64)| base64::engine::general_purpose::STANDARD.decode(b64));
                let fetchable = url.starts_with("https://") || url.starts_with("http://");
                if !fetchable && !matches!(data, Some(Ok(_))) {
                    return bad_param(
                        &format!("input[{n}].image_url.url"),
                        "invalid_value",
                        "Invalid image URL: expected a URL or a base64-encoded data URL of an image.",
                    );
                }
                images += 1;
            }
            _ => {
                return bad_param(
                    &format!("input[{n}]"),
                    "invalid_value",
                    "Each input must be {type: text, text} or {type: image_url, image_url: {url}}.",
                );
            }
        }
    }
    if images > 1 || (images > 0 && !model.starts_with("omni-moderation")) {
        return bad_param(
            "input",
            "invalid_value",
            "Only omni-moderation models take images, one per request.",
        );
    }
    let raised = match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => return r,
        Gate::Drop => return dropped(),
        Gate::Scores(scores) => scores,
        _ => Vec::new(),
    };
    let texts = parts.iter().any(|p| p["type"] == "text");
    let (mut flags, mut scores, mut applied) = (json!({}), json!({}), json!({}));
    let mut flagged = false;
    for (i, (category, for_images)) in MODERATION.iter().enumerate() {
        let types: Vec<&str> = [("text", texts), ("image", images > 0 && *for_images)]
            .into_iter()
            .filter_map(|(t, on)| on.then_some(t))
            .collect();
        let score = raised
            .iter()
            .find(|(c, _)| c == category)
            .map_or(1e-6 * (i + 1) as f64, |(_, s)| *s);
        flagged |= score >= 0.5;
        flags[category] = json!(score >= 0.5);
        scores[category] = json!(score);
        applied[category] = json!(types);
    }
    let resolved = if model.ends_with("-latest") {
        "omni-moderation-2024-09-26".to_string()
    } else {
        model
    };
    ok(Json(json!({
        "id": format!("modr-{}", digest(&body.to_string())),
        "model": resolved,
        "results": [{
            "flagged": flagged,
            "categories": flags,
            "category_scores": scores,
            "category_applied_input_types": applied,
        }],
    })))
}

/// Where a DALL-E answer's URL points.
async fn file(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.inner.lock().expect("lock").files.get(&name) {
        Some(bytes) => ([("content-type", "image/png")], bytes.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn models(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-image-1", "dall-e-3", "gpt-4o-mini-tts"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
        .collect();
    ok(Json(json!({"object": "list", "data": data})))
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
        Gate::Drop => dropped(),
        Gate::Refuse => error(
            StatusCode::BAD_REQUEST,
            "rejected",
            None,
            "The hook refused it.",
        ),
        _ => Json(json!({"ok": true, "received": digest(&body.to_string())})).into_response(),
    }
}

/// The media type of a speech `response_format`.
fn audio_type(format: &str) -> Option<&'static str> {
    Some(match format {
        "mp3" => "audio/mpeg",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => return None,
    })
}

async fn speech(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let input = body["input"].as_str().unwrap_or_default().to_string();
    if input.is_empty() || input.chars().count() > 4096 {
        return bad_param(
            "input",
            "invalid_value",
            "'input' must be 1 to 4096 characters.",
        );
    }
    let voice = body["voice"].as_str().unwrap_or_default();
    if !VOICES.contains(&voice) {
        return bad_param(
            "voice",
            "invalid_value",
            &format!("Invalid value: '{voice}'."),
        );
    }
    let format = body["response_format"].as_str().unwrap_or("mp3");
    let Some(content_type) = audio_type(format) else {
        return bad_param(
            "response_format",
            "invalid_value",
            &format!("Invalid value: '{format}'."),
        );
    };
    match gate(&s, &uri, &headers, &body).await {
        Gate::Fail(r) => r,
        Gate::Drop => dropped(),
        Gate::Refuse => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("content_policy_violation"),
            "The input was rejected by our safety system.",
        ),
        _ => {
            let mut audio = match format {
                "mp3" => b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec(),
                "wav" => b"RIFF\x00\x00\x00\x00WAVEfmt ".to_vec(),
                _ => vec![],
            };
            audio.extend(Sha256::digest(input.as_bytes()).iter().cycle().take(1024));
            ok(([("content-type", content_type)], audio))
        }
    }
}

async fn add_fault(State(s): State<AppState>, Json(rule): Json<FaultRule>) -> StatusCode {
    s.inner.lock().expect("lock").faults.push(rule);
    StatusCode::NO_CONTENT
}

async fn add_latency(State(s): State<AppState>, Json(l): Json<Latency>) -> Response {
    if l.median_ms == 0 || l.tail_ms < l.median_ms {
        return (
            StatusCode::BAD_REQUEST,
            "median_ms must be above 0 and tail_ms at least median_ms",
        )
            .into_response();
    }
    s.inner.lock().expect("lock").latencies.push(l);
    StatusCode::NO_CONTENT.into_response()
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
    inner.latencies.clear();
    inner.calls = Calls::default();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_is_a_png() {
        let p = png(b"x");
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&p[12..16], b"IHDR");
        assert_eq!(
            crc32(b"IEND"),
            0xAE42_6082,
            "the well-known CRC of an empty IEND"
        );
        assert_ne!(png(b"x"), png(b"y"));
    }
}

#[cfg(test)]
mod latency_tests {
    use super::Latency;

    #[test]
    fn latencies_follow_the_median_and_tail_asked_for() {
        let l: Latency = "images=8000:60000".parse().unwrap();
        assert_eq!(
            (l.path.as_str(), l.median_ms, l.tail_ms),
            ("images", 8000, 60000)
        );
        let mut ms: Vec<u128> = (0..20_000).map(|_| l.sample().as_millis()).collect();
        ms.sort();
        let (median, p99) = (ms[10_000], ms[19_800]);
        assert!((7_000..9_000).contains(&median), "median {median}");
        assert!((50_000..72_000).contains(&p99), "p99 {p99}");
        assert!(*ms.last().unwrap() <= 120_000, "capped at twice the tail");
        assert!("images=8000".parse::<Latency>().is_err());
        assert!("images=9000:100".parse::<Latency>().is_err());
    }
}
