//! A webhook receiver as a team would write one: it verifies every delivery with the
//! Standard Webhooks reference library (`standardwebhooks`, with the secret it was given)
//! and answers as scripted (status, `Retry-After`, a delay), recording what arrived.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the reference library said with the receiver's secrets (any one verifying).
    pub verified: Result<(), String>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }
    pub fn retry_after(mut self, v: &str) -> Self {
        self.retry_after = Some(v.into());
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct Inner {
    secrets: Vec<String>,
    script: VecDeque<Answer>,
    /// Answered once the script is empty (200 unless set).
    otherwise: Option<Answer>,
    got: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://{addr}/hook"),
        }
    }

    /// The secrets it verifies with (any one verifying is enough, as during a rotation).
    pub fn trust(&self, secrets: &[&str]) {
        self.inner.lock().unwrap().secrets = secrets.iter().map(|s| s.to_string()).collect();
    }
    /// Answers to give, in order, before the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }
    /// The answer once the script is used up.
    pub fn otherwise(&self, a: Answer) {
        self.inner.lock().unwrap().otherwise = Some(a);
    }
    pub fn got(&self) -> Vec<Received> {
        self.inner.lock().unwrap().got.clone()
    }

    /// Waits until `enough` holds for what arrived.
    pub async fn wait(
        &self,
        timeout: Duration,
        enough: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let until = Instant::now() + timeout;
        loop {
            let got = self.got();
            if enough(&got) {
                return got;
            }
            if Instant::now() > until {
                panic!(
                    "the receiver did not get what was expected within {timeout:?}; it got {:?}",
                    got.iter()
                        .map(|r| (r.id.clone(), r.event_type()))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Verifies with each trusted secret in turn, as the reference library does it.
pub fn verify(secrets: &[String], body: &[u8], headers: &HeaderMap) -> Result<(), String> {
    let mut last = "no secret to verify with".to_string();
    for s in secrets {
        match standardwebhooks::Webhook::new(s) {
            Ok(w) => match w.verify(body, headers) {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let answer = {
        let mut g = inner.lock().unwrap();
        let verified = verify(&g.secrets, &body, &headers);
        let ok = verified.is_ok();
        g.got.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            headers: headers.clone(),
            body: body.clone(),
            verified,
            at: Instant::now(),
        });
        if !ok {
            // What a receiver does with a delivery it cannot verify.
            Answer::status(400)
        } else {
            g.script
                .pop_front()
                .or_else(|| g.otherwise.clone())
                .unwrap_or(Answer::status(200))
        }
    };
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut res = (status, format!("answer {}", answer.status)).into_response();
    if let Some(v) = answer.retry_after {
        res.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v.parse().unwrap());
    }
    res
}
