//! A proxy in front of the emulator that fails chosen AWS requests, so tests can watch what
//! Shepherd does when a write really fails on the wire (the SDK sees a genuine 500, retries
//! it and gives up) without faking any part of Shepherd. It also counts what passes, so a
//! test can hold an operation to the requests it should cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Fail every request whose `X-Amz-Target` contains `target` (e.g. `PutItem`) and whose
/// body contains `body` (e.g. an audit event type); with `times`, only that many requests
/// (the SDK makes up to three attempts of one call).
#[derive(Debug, Clone, Default)]
pub struct ProxyRule {
    pub target: String,
    pub body: String,
    /// More text the body must also contain.
    pub also: Vec<String>,
    pub times: Option<u32>,
}

impl ProxyRule {
    pub fn new(target: &str, body: &str) -> Self {
        Self {
            target: target.into(),
            body: body.into(),
            also: vec![],
            times: None,
        }
    }

    /// The body must also contain `text`.
    pub fn and(mut self, text: &str) -> Self {
        self.also.push(text.into());
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<ProxyRule>>,
    failed: AtomicU64,
    /// Requests seen, by `X-Amz-Target` (e.g. `DynamoDB_20120810.GetItem`).
    seen: Mutex<std::collections::HashMap<String, u64>>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    shared: Arc<Shared>,
}

pub struct FaultProxy {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream` (the emulator).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            shared: shared.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The endpoint to give the SDK instead of the emulator's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail(&self, rule: ProxyRule) {
        self.shared.rules.lock().expect("rules").push(rule);
    }

    pub fn clear(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// How many requests were failed on purpose.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// How many requests whose `X-Amz-Target` ends with `operation` (e.g. `.GetItem`) have
    /// passed since the last `reset_counts`.
    pub fn requests(&self, operation: &str) -> u64 {
        let seen = self.shared.seen.lock().expect("counts");
        seen.iter()
            .filter(|(k, _)| k.ends_with(operation))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_counts(&self) {
        self.shared.seen.lock().expect("counts").clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    *p.shared
        .seen
        .lock()
        .expect("counts")
        .entry(target.to_string())
        .or_default() += 1;
    let text = String::from_utf8_lossy(&body);
    let hit = {
        let mut rules = p.shared.rules.lock().expect("rules");
        let rule = rules.iter_mut().find(|r| {
            target.contains(&r.target)
                && text.contains(&r.body)
                && r.also.iter().all(|a| text.contains(a))
                && r.times != Some(0)
        });
        match rule {
            Some(r) => {
                r.times = r.times.map(|n| n - 1);
                true
            }
            None => false,
        }
    };
    if hit {
        p.shared.failed.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/x-amz-json-1.0")],
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected by the fault proxy"}"#,
        )
            .into_response();
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.upstream))
        .body(body);
    // The Host header is forwarded as sent: it is part of the request's SigV4 signature,
    // which the emulator checks.
    for (k, v) in &parts.headers {
        if k != "content-length" {
            out = out.header(k, v);
        }
    }
    let res = match out.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut answer = Response::builder().status(res.status().as_u16());
    for (k, v) in res.headers() {
        if k != "content-length"
            && k != "transfer-encoding"
            && k != "connection"
            && let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_str().as_bytes()),
                HeaderValue::from_bytes(v.as_bytes()),
            )
        {
            answer = answer.header(k, v);
        }
    }
    let bytes = res.bytes().await.unwrap_or_default();
    answer
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
