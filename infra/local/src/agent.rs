//! A fake agent runner for the coding pipeline: the HTTP JSON contract of
//! docs/coding-agent.md. `POST /` with a bearer token and an `Idempotency-Key`, body
//! `{"task": "implement", "repository", "base", "instructions", "plan": {"summary",
//! "steps", "files"}, "feedback"}`; answers `{"summary", "changes": [{"path",
//! "content"}]}`, one change per planned file. The same key answers the same change set
//! (the work is not done twice). Told to (`jobs_run`), a job runs outside its request as a
//! long job does: it answers 202 `{"accepted": true}` and reports to the `callback.url` it
//! was given (heartbeats, then `succeeded` with the change set or `failed`), or crashes
//! after some heartbeats; it stops when Shepherd answers 410. Errors are `{"error": {"message", "code"}}`, the shape the
//! generic HTTP integration reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The token the local stack's `AgentRunnerTokenParameter` holds.
pub const TOKEN: &str = "local-agent-token";

#[derive(Default)]
struct Inner {
    /// Answers by idempotency key.
    done: BTreeMap<String, Value>,
    /// Requests received (every one, repeats included).
    requests: Vec<Value>,
    /// The next requests answer this status.
    fail_next: Vec<u16>,
    /// The change sets' size: each file grows to its share of it (a large refactor).
    answer_bytes: usize,
    /// How the next jobs run, one mode per new job (then `Sync`).
    modes: Vec<Mode>,
    /// Every callback sent: its URL, what it reported and the status Shepherd answered.
    callbacks: Vec<Callback>,
    /// The callback URL of each job it accepted, by idempotency key.
    jobs: BTreeMap<String, String>,
    /// Jobs with no mode of their own take this long (and call back).
    latency: Option<crate::provider::Latency>,
}

/// How a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Answer the change set at once (200).
    Sync,
    /// Accept (202), heartbeat every `heartbeat`, report the change set after `after`.
    Callback {
        after: Duration,
        heartbeat: Duration,
    },
    /// Accept, heartbeat `heartbeats` times, then stop: the runner crashed.
    Crash {
        heartbeats: u32,
        heartbeat: Duration,
    },
    /// Accept, then report a failure after `after`.
    Fail {
        after: Duration,
        class: &'static str,
    },
}

/// A callback the runner sent, and Shepherd's answer.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub status: String,
    pub answered: u16,
}

type Shared = Arc<Mutex<Inner>>;

pub struct AgentServer {
    pub addr: SocketAddr,
    inner: Shared,
    _server: crate::Server,
}

impl AgentServer {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/", post(implement))
            .with_state(inner.clone());
        Ok(Self {
            addr,
            inner,
            _server: crate::Server::spawn(listener, app),
        })
    }

    /// `AgentRunnerUrl`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The next `statuses.len()` requests answer these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner
            .lock()
            .expect("agent")
            .fail_next
            .extend_from_slice(statuses);
    }

    /// Change sets of about `bytes` from now on (files grow with comment lines).
    pub fn answer_bytes(&self, bytes: usize) {
        self.inner.lock().expect("agent").answer_bytes = bytes;
    }

    /// The next new jobs run in these modes, in order (then synchronously).
    pub fn jobs_run(&self, modes: &[Mode]) {
        self.inner
            .lock()
            .expect("agent")
            .modes
            .extend_from_slice(modes);
    }

    /// Jobs not told otherwise run outside their request for a time drawn from `latency`
    /// (a real agent: minutes to hours), heartbeating every 30 s at most, and call back.
    pub fn latency(&self, latency: crate::provider::Latency) {
        self.inner.lock().expect("agent").latency = Some(latency);
    }

    /// Every callback sent so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.inner.lock().expect("agent").callbacks.clone()
    }

    /// The callback URLs of the jobs accepted, by idempotency key.
    pub fn jobs(&self) -> BTreeMap<String, String> {
        self.inner.lock().expect("agent").jobs.clone()
    }

    /// Every request body received.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().expect("agent").requests.clone()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "code": code}})),
    )
        .into_response()
}

async fn implement(
    State(inner): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut i = inner.lock().expect("agent");
    i.requests.push(body.clone());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "invalid_token", "unknown token");
    }
    if !i.fail_next.is_empty() {
        let status = i.fail_next.remove(0);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(code, "injected", "fault injected");
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Some(done) = i.done.get(&key).filter(|_| !key.is_empty()) {
        return axum::Json(done.clone()).into_response();
    }
    if !key.is_empty() && i.jobs.contains_key(&key) {
        // The same job again: it is already running.
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"accepted": true, "job": key})),
        )
            .into_response();
    }
    if body["task"] != "implement" {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown_task",
            "task must be \"implement\"",
        );
    }
    let Some(files) = body["plan"]["files"].as_array().filter(|f| !f.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "no_files", "plan.files is empty");
    };
    let instructions = body["instructions"].as_str().unwrap_or_default();
    let feedback = body["feedback"]
        .as_str()
        .map(|f| format!("// Reviewer asked: {f}\n"))
        .unwrap_or_default();
    let mut changes: Vec<Value> = files
        .iter()
        .filter_map(Value::as_str)
        .map(|path| {
            json!({
                "path": path,
                "content": format!("// {path}: {instructions}\n{feedback}pub fn changed() -> bool {{ true }}\n"),
            })
        })
        .collect();
    // A large change set: generated files of 900,000 characters at most (a file's content
    // is at most 1,000,000) until the set holds `answer_bytes`.
    let mut size: usize = changes
        .iter()
        .map(|c| c["content"].as_str().unwrap_or_default().len())
        .sum();
    let mut row = 0;
    while size < i.answer_bytes {
        let mut content = String::from("// Generated lookup table.\n");
        while content.len() < 900_000 && size + content.len() < i.answer_bytes {
            row += 1;
            let cells = "=".repeat(48);
            content.push_str(&format!("pub const ROW_{row:08}: &str = \"{cells}\";\n"));
        }
        size += content.len();
        let path = format!("src/generated/table_{:02}.rs", changes.len());
        changes.push(json!({"path": path, "content": content}));
    }
    let answer = json!({
        "summary": format!("Changed {} files for: {instructions}", changes.len()),
        "changes": changes,
    });
    let mode = match (i.modes.is_empty(), &i.latency) {
        (false, _) => i.modes.remove(0),
        (true, Some(l)) => {
            let after = l.sample();
            Mode::Callback {
                after,
                heartbeat: (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
            }
        }
        (true, None) => Mode::Sync,
    };
    let url = body["callback"]["url"].as_str().map(str::to_string);
    let (Some(url), false) = (url, mode == Mode::Sync) else {
        if !key.is_empty() {
            i.done.insert(key, answer.clone());
        }
        return axum::Json(answer).into_response();
    };
    // Accepted: it runs outside the request and reports to its callback.
    i.jobs.insert(key.clone(), url.clone());
    tokio::spawn(run_job(inner.clone(), url, mode, answer));
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"accepted": true, "job": key})),
    )
        .into_response()
}

/// A job running outside its request: heartbeats, then its report, as its mode says. It
/// stops when Shepherd answers 410 (the attempt no longer waits).
async fn run_job(inner: Shared, url: String, mode: Mode, answer: Value) {
    let http = reqwest::Client::new();
    let send = |report: Value| {
        let (http, url, inner) = (http.clone(), url.clone(), inner.clone());
        async move {
            let status = report["status"].as_str().unwrap_or_default().to_string();
            let answered = match http.post(&url).json(&report).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            inner.lock().expect("agent").callbacks.push(Callback {
                url,
                status,
                answered,
            });
            answered
        }
    };
    let heartbeats = |every: Duration, n: u32| {
        let send = &send;
        async move {
            for _ in 0..n {
                tokio::time::sleep(every).await;
                if send(json!({"status": "heartbeat"})).await == 410 {
                    return false;
                }
            }
            true
        }
    };
    match mode {
        Mode::Sync => {}
        Mode::Callback { after, heartbeat } => {
            let n = (after.as_millis() / heartbeat.as_millis().max(1)) as u32;
            if heartbeats(heartbeat, n).await {
                tokio::time::sleep(after.saturating_sub(heartbeat * n)).await;
                send(json!({"status": "succeeded", "result": answer})).await;
            }
        }
        Mode::Crash {
            heartbeats: n,
            heartbeat,
        } => {
            heartbeats(heartbeat, n).await;
        }
        Mode::Fail { after, class } => {
            tokio::time::sleep(after).await;
            send(json!({"status": "failed", "error": {"code": "tests_failed",
                "class": class, "message": "cargo test: 3 tests failed"}}))
            .await;
        }
    }
}
