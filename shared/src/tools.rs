//! The tool runtime: calls to AI providers, each idempotent and its outcome recorded, so a
//! re-run of a phase never buys a finished call again.
//!
//! Key rule: `<production>#<phase>#<call name>`, or `<production>#<phase>#v<revision>#<call
//! name>` once an edit or a reject changed the production's inputs (revision > 0). The call
//! name is stable within the phase (`scene-3`, not a counter), so a retry, a reconciled crash,
//! a redrive or a duplicate delivery finds the finished calls and makes only the rest.
//!
//! Each outcome records its request hash (SHA-256 of the request JSON) and a status:
//! `in_progress` (written before the call, with the attempt and the phase's lease),
//! `completed` (with the result) or `failed` (with the error code; made again next time).
//! An `in_progress` outcome found by a later run was cut off (the worker died or timed out):
//! its result is unknown, `tool_call.unknown` is audited and the call is made again under the
//! same key (the provider sees the same `Idempotency-Key`). The same key with a different
//! request hash is never reused nor made: `tool_call.deduped` is audited as an anomaly, an
//! alarm raised, and the call fails (`idempotency_key_collision`).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::config::CallKind;
use crate::domain::{AuditEvent, AuditKind, Classify, ErrorCode, Millis, Outcome, StepError};
use crate::integrations::Integrations;
use crate::ports::{
    CallOutcome, ChatRequest, Clock, ImageRequest, ImageResult, Ledger, OutcomeStatus,
    SpeechRequest, SpeechResult,
};

pub fn request_hash(request: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(request).expect("request serialises");
    hex::encode(Sha256::digest(bytes))
}

/// The tools one phase run may use, bound to its production and phase.
pub struct Tools {
    integrations: Arc<Integrations>,
    /// Audit events of the run's calls (failures, routing), for the phase's commit.
    events: Mutex<Vec<AuditEvent>>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    key_prefix: String,
    ttl_ms: Millis,
    attempt: u32,
    lease_until: Millis,
}

/// Which run the calls belong to: the production's phase, the production's revision, the
/// phase's attempt and its claim's lease.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub production_id: &'a str,
    pub phase: &'a str,
    pub revision: u32,
    pub attempt: u32,
    pub lease_until: Millis,
}

impl Tools {
    pub fn new(
        integrations: Arc<Integrations>,
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        run: Run<'_>,
        ttl: std::time::Duration,
    ) -> Self {
        let (production_id, phase) = (run.production_id, run.phase);
        let key_prefix = match run.revision {
            0 => format!("{production_id}#{phase}#"),
            r => format!("{production_id}#{phase}#v{r}#"),
        };
        Self {
            integrations,
            events: Mutex::new(Vec::new()),
            ledger,
            clock,
            key_prefix,
            ttl_ms: ttl.as_millis() as Millis,
            attempt: run.attempt,
            lease_until: run.lease_until,
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

    /// POSTs `body` to the chain's generic HTTP JSON integration, once per key.
    pub async fn http(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        let key = &self.key(name);
        self.once(key, body, || {
            self.integrations
                .call(CallKind::Http, key, &self.events, move |p| async move {
                    p.post_json(body, key).await
                })
        })
        .await
    }

    /// Calls tool `tool` on the chain's MCP servers, once per key like every call.
    pub async fn mcp(
        &self,
        name: &str,
        tool: &str,
        arguments: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        let key = &self.key(name);
        self.once(key, arguments, || {
            self.integrations
                .call_mcp(key, &self.events, tool, arguments)
        })
        .await
    }

    /// Whether an integration serves `kind` (a phase's optional step).
    pub async fn serves(&self, kind: CallKind) -> Result<bool, StepError> {
        self.integrations.serves(kind).await
    }

    fn event(&self, e: AuditEvent) {
        self.events.lock().expect("events").push(e);
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
        let expires = now + self.ttl_ms;
        if let Some(found) = self
            .ledger
            .get(key, now)
            .await
            .retryable(ErrorCode::OutcomeStore)?
        {
            if found.request_hash != hash {
                self.event(
                    AuditEvent::new(AuditKind::ToolCallDeduped, Outcome::Anomaly, now).detail(
                        format!("{key}: recorded for a different request; neither reused nor made"),
                    ),
                );
                return Err(StepError::permanent(
                    ErrorCode::IdempotencyKeyCollision,
                    format!(
                        "call {key} was recorded for a different request (its request hash differs); \
                         it was neither reused nor made again"
                    ),
                ));
            }
            match found.status {
                OutcomeStatus::Completed => {
                    return serde_json::from_str(&found.result)
                        .permanent(ErrorCode::OutcomeCorrupt);
                }
                OutcomeStatus::InProgress { attempt, .. } => self.event(
                    AuditEvent::new(AuditKind::ToolCallUnknown, Outcome::Unknown, now).detail(
                        format!(
                            "{key}: attempt {attempt} stopped before recording its outcome; \
                         made again under the same key"
                        ),
                    ),
                ),
                OutcomeStatus::Failed => {}
            }
        }
        let record = |status, result: String| CallOutcome {
            request_hash: hash.clone(),
            status,
            result,
        };
        let started = record(
            OutcomeStatus::InProgress {
                attempt: self.attempt,
                lease_until: self.lease_until,
            },
            String::new(),
        );
        self.ledger
            .put(key, &started, expires)
            .await
            .retryable(ErrorCode::OutcomeStore)?;
        match call().await {
            Ok(result) => {
                let json = serde_json::to_string(&result).expect("result serialises");
                self.ledger
                    .put(key, &record(OutcomeStatus::Completed, json), expires)
                    .await
                    .retryable(ErrorCode::OutcomeStore)?;
                Ok(result)
            }
            Err(e) => {
                // Best effort: a lost `failed` leaves `in_progress`, read as unknown next time.
                let _ = self
                    .ledger
                    .put(
                        key,
                        &record(OutcomeStatus::Failed, e.code.to_string()),
                        expires,
                    )
                    .await;
                Err(e)
            }
        }
    }
}
