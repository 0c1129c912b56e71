//! The tool runtime: calls to AI providers, each idempotent and its outcome recorded, so a
//! re-run of a phase never buys a finished call again.
//!
//! Key rule: `<production>#<phase>#<call name>`, or `<production>#<phase>#v<revision>#<call
//! name>` once an edit or a reject changed the production's inputs (revision > 0). The call
//! name is stable within the phase (`scene-3`, not a counter), so a retry, a reconciled crash,
//! a redrive or a duplicate delivery finds the finished calls and makes only the rest. The request hash (SHA-256 of the request JSON) is stored
//! with the outcome; the same key with a different hash is refused, never silently reused.

mod openai;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use openai::{
    ChatMessage, ChatRequest, ImageRequest, ImageResult, ProviderClient, SpeechRequest,
    SpeechResult,
};

use crate::domain::{AuditEvent, ErrorClass, Millis};
use crate::integrations::{CallKind, Integrations};
use crate::ports::{Clock, Outcome, Outcomes};

/// A failed step: what the runtime needs to decide between backoff, `failed` and the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct StepError {
    pub code: String,
    pub class: ErrorClass,
    pub detail: String,
    pub provider_status: Option<u16>,
    /// Do not try again before this time (a provider's rate-limit reset).
    pub retry_at: Option<Millis>,
}

impl StepError {
    pub fn retryable(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Retryable, detail)
    }
    pub fn permanent(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Permanent, detail)
    }
    fn new(code: impl Into<String>, class: ErrorClass, detail: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            class,
            detail: detail.into(),
            provider_status: None,
            retry_at: None,
        }
    }
}

/// Marks where a failure's class is known: `store.get(..).await.retryable("store")?`.
pub trait Classify<T> {
    fn retryable(self, code: &str) -> Result<T, StepError>;
    fn permanent(self, code: &str) -> Result<T, StepError>;
}

impl<T, E: std::fmt::Display> Classify<T> for Result<T, E> {
    fn retryable(self, code: &str) -> Result<T, StepError> {
        self.map_err(|e| StepError::retryable(code, e.to_string()))
    }
    fn permanent(self, code: &str) -> Result<T, StepError> {
        self.map_err(|e| StepError::permanent(code, e.to_string()))
    }
}

pub fn request_hash(request: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(request).expect("request serialises");
    hex::encode(Sha256::digest(bytes))
}

/// The tools one phase run may use, bound to its production and phase.
pub struct Tools {
    integrations: Arc<Integrations>,
    /// Audit events of the run's calls (failures, routing), for the phase's commit.
    events: Mutex<Vec<AuditEvent>>,
    outcomes: Arc<dyn Outcomes>,
    clock: Arc<dyn Clock>,
    key_prefix: String,
    ttl_ms: Millis,
}

impl Tools {
    pub fn new(
        integrations: Arc<Integrations>,
        outcomes: Arc<dyn Outcomes>,
        clock: Arc<dyn Clock>,
        production_id: &str,
        phase: &str,
        revision: u32,
        ttl: std::time::Duration,
    ) -> Self {
        let key_prefix = match revision {
            0 => format!("{production_id}#{phase}#"),
            r => format!("{production_id}#{phase}#v{r}#"),
        };
        Self {
            integrations,
            events: Mutex::new(Vec::new()),
            outcomes,
            clock,
            key_prefix,
            ttl_ms: ttl.as_millis() as Millis,
        }
    }

    pub async fn chat(&self, name: &str, req: &ChatRequest) -> Result<String, StepError> {
        let key = &self.key(name);
        self.once(key, req, || {
            self.integrations
                .call(CallKind::Chat, key, &self.events, move |p| async move {
                    p.chat(req, key).await
                })
        })
        .await
    }

    pub async fn image(&self, name: &str, req: &ImageRequest) -> Result<ImageResult, StepError> {
        let key = &self.key(name);
        self.once(key, req, || {
            self.integrations
                .call(CallKind::Image, key, &self.events, move |p| async move {
                    p.image(req, key).await
                })
        })
        .await
    }

    pub async fn speech(&self, name: &str, req: &SpeechRequest) -> Result<SpeechResult, StepError> {
        let key = &self.key(name);
        self.once(key, req, || {
            self.integrations
                .call(CallKind::Speech, key, &self.events, move |p| async move {
                    p.speech(req, key).await
                })
        })
        .await
    }

    /// The audit events of the calls made so far (taken: each is committed once).
    pub fn take_events(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.events.lock().expect("events"))
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// Returns the recorded outcome of `key`, or makes the call and records it.
    async fn once<Req, T, F, Fut>(&self, key: &str, req: &Req, call: F) -> Result<T, StepError>
    where
        Req: Serialize,
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let hash = request_hash(req);
        let now = self.clock.now();
        if let Some(found) = self
            .outcomes
            .get(key, now)
            .await
            .retryable("outcome_store")?
        {
            if found.request_hash != hash {
                return Err(StepError::permanent(
                    "idempotency_key_collision",
                    format!("call {key} was recorded for a different request"),
                ));
            }
            return serde_json::from_str(&found.result).permanent("outcome_corrupt");
        }
        let result = call().await?;
        let outcome = Outcome {
            request_hash: hash,
            result: serde_json::to_string(&result).expect("result serialises"),
        };
        self.outcomes
            .put(key, &outcome, now + self.ttl_ms)
            .await
            .retryable("outcome_store")?;
        Ok(result)
    }
}
