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
//! An answer the phase found unusable (not the JSON asked for, the wrong number of scenes)
//! is recorded `rejected` with how many answers were rejected so far, and is never replayed:
//! the next call (at once, up to a small budget, or in a later retry) is a fresh one, under
//! the provider idempotency key `<key>#t<n>` so a provider that honours keys does not hand
//! back the same answer.
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
use crate::domain::artifacts::Artifact;
use crate::domain::{AuditEvent, AuditKind, Classify, ErrorCode, Millis, Outcome, StepError};
use crate::integrations::Integrations;
use crate::ports::{
    ArtifactStore, CallOutcome, ChatRequest, Clock, ImageRequest, ImageResult, Ledger,
    OutcomeStatus, ScmAnswer, ScmRequest, SpeechRequest, SpeechResult,
};

pub fn request_hash(request: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(request).expect("request serialises");
    hex::encode(Sha256::digest(bytes))
}

/// What every run's tools are made of (built once per function, in `wiring`).
#[derive(Clone)]
pub struct ToolDeps {
    pub integrations: Arc<Integrations>,
    pub ledger: Arc<dyn Ledger>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub clock: Arc<dyn Clock>,
    /// How long an outcome is kept.
    pub outcome_ttl: std::time::Duration,
    /// Fresh calls a run may make after rejecting a provider's answer.
    pub bad_answer_retries: u32,
    /// Where external jobs report (`<api>/callbacks/`); empty: none can be handed out.
    pub callback_url: String,
    /// How long an external job may go without a heartbeat, and run at most.
    pub job_limits: JobLimits,
}

/// How long an external job may run: a heartbeat (or its result) at least every
/// `heartbeat`, its result within `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub heartbeat: std::time::Duration,
    pub deadline: std::time::Duration,
}

/// What a runner reports for a failed job (`POST /callbacks/{token}` with `failed`), as
/// the ledger keeps it until the phase reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobFailure {
    pub code: String,
    pub class: crate::domain::ErrorClass,
    pub message: String,
}

/// The tools one phase run may use, bound to its production and phase.
pub struct Tools {
    deps: ToolDeps,
    /// Audit events of the run's calls (failures, routing), for the phase's commit.
    events: Mutex<Vec<AuditEvent>>,
    /// Artifacts the run's calls stored or found stored, for the phase's output.
    artifacts: Mutex<Vec<Artifact>>,
    production_id: String,
    key_prefix: String,
    attempt: u32,
    lease_until: Millis,
    phase: String,
    /// What the phase's definition says it may call (`None`: anything; tests only).
    allowed: Option<Vec<CallKind>>,
    /// The external job this run handed its work to (the worker records the wait).
    wait: Mutex<Option<crate::domain::Wait>>,
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
    /// The integrations the phase's definition declares; a call of another kind is refused.
    pub allowed: Option<&'a [CallKind]>,
}

impl Tools {
    pub fn new(deps: &ToolDeps, run: Run<'_>) -> Self {
        let (production_id, phase) = (run.production_id, run.phase);
        let key_prefix = match run.revision {
            0 => format!("{production_id}#{phase}#"),
            r => format!("{production_id}#{phase}#v{r}#"),
        };
        Self {
            deps: deps.clone(),
            events: Mutex::new(Vec::new()),
            artifacts: Mutex::new(Vec::new()),
            production_id: production_id.into(),
            key_prefix,
            attempt: run.attempt,
            lease_until: run.lease_until,
            phase: phase.into(),
            allowed: run.allowed.map(<[CallKind]>::to_vec),
            wait: Mutex::new(None),
        }
    }

    fn may_call(&self, kind: CallKind) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(&kind))
    }

    /// Refuses a call the phase's definition does not declare (permanent: the code asks
    /// for it again on every retry).
    fn declared(&self, kind: CallKind) -> Result<(), StepError> {
        if self.may_call(kind) {
            return Ok(());
        }
        let declared: Vec<&str> = self.allowed.iter().flatten().map(|k| k.as_str()).collect();
        Err(StepError::permanent(
            ErrorCode::IntegrationNotDeclared,
            format!(
                "phase {} called {} but its definition's integrations are [{}]",
                self.phase,
                kind.as_str(),
                declared.join(", ")
            ),
        ))
    }

    fn ttl_ms(&self) -> Millis {
        self.deps.outcome_ttl.as_millis() as Millis
    }

    pub async fn chat(&self, name: &str, req: &ChatRequest) -> Result<String, StepError> {
        self.declared(CallKind::Chat)?;
        let key = &self.key(name);
        let (text, _) = self.once(key, req, |pk| self.chat_call(req, pk)).await?;
        Ok(text)
    }

    async fn chat_call(&self, req: &ChatRequest, pk: String) -> Result<String, StepError> {
        let pk = &pk;
        self.deps
            .integrations
            .call(CallKind::Chat, pk, &self.events, move |p| async move {
                p.chat(req, pk).await
            })
            .await
    }

    /// A chat answer the phase can use: parsed as `T` and accepted by `check`. An answer
    /// that is not is rejected (recorded, audited) and asked for afresh, at most
    /// `bad_answer_retries` times; then the call fails, quoting the answer.
    pub async fn chat_as<T: DeserializeOwned>(
        &self,
        name: &str,
        req: &ChatRequest,
        check: impl Fn(&T) -> Result<(), String>,
    ) -> Result<T, StepError> {
        self.declared(CallKind::Chat)?;
        let key = &self.key(name);
        let mut fresh = 0;
        loop {
            let (text, tries) = self.once(key, req, |pk| self.chat_call(req, pk)).await?;
            let why = match serde_json::from_str::<T>(&text) {
                Ok(v) => match check(&v) {
                    Ok(()) => return Ok(v),
                    Err(why) => why,
                },
                Err(e) => format!("not the JSON asked for: {e}"),
            };
            let excerpt = crate::domain::redact::excerpt(&text, 160);
            let now = self.deps.clock.now();
            let rejected = CallOutcome {
                request_hash: request_hash(req),
                status: OutcomeStatus::Rejected,
                result: why.clone(),
                tries: tries + 1,
            };
            self.record(key, &rejected, now + self.ttl_ms()).await?;
            self.event(
                AuditEvent::new(AuditKind::ToolCallRejected, Outcome::Failure, now)
                    .detail(format!("{key}: {why}; the answer began: {excerpt:?}")),
            );
            if fresh >= self.deps.bad_answer_retries {
                return Err(StepError::permanent(
                    ErrorCode::ProviderBadResponse,
                    format!(
                        "{name}: {} answers rejected, the last: {why}; it began: {excerpt:?}",
                        tries + 1
                    ),
                ));
            }
            fresh += 1;
        }
    }

    /// An image, stored in the artifact bucket before its outcome is recorded: a replay
    /// returns the stored artifact, never the provider's bytes again.
    pub async fn image(&self, name: &str, req: &ImageRequest) -> Result<ImageResult, StepError> {
        self.declared(CallKind::Image)?;
        let key = &self.key(name);
        let call = |pk: String| async move {
            let pk = &pk;
            let img = self
                .deps
                .integrations
                .call(CallKind::Image, pk, &self.events, move |p| async move {
                    p.image(req, pk).await
                })
                .await?;
            Ok(ImageResult {
                artifact: self.keep(name, &img.bytes, &img.content_type).await?,
                warnings: img.warnings,
                revised_prompt: img.revised_prompt,
            })
        };
        let (image, _): (ImageResult, _) = self.once(key, req, call).await?;
        self.kept(&image.artifact);
        Ok(image)
    }

    /// Speech, stored in the artifact bucket like an image.
    pub async fn speech(&self, name: &str, req: &SpeechRequest) -> Result<SpeechResult, StepError> {
        self.declared(CallKind::Speech)?;
        let key = &self.key(name);
        let call = |pk: String| async move {
            let pk = &pk;
            let audio = self
                .deps
                .integrations
                .call(CallKind::Speech, pk, &self.events, move |p| async move {
                    p.speech(req, pk).await
                })
                .await?;
            Ok(SpeechResult {
                artifact: self.keep(name, &audio.bytes, &audio.content_type).await?,
                format: req.response_format.clone(),
            })
        };
        let (speech, _): (SpeechResult, _) = self.once(key, req, call).await?;
        self.kept(&speech.artifact);
        Ok(speech)
    }

    /// Moderates a stored image with `model` (the chain's `moderation` integration): the
    /// flags its scores raise under the registry's thresholds. The answer is recorded like
    /// every call's (its request is the model and the image's content-addressed key, so a
    /// replay never sends the image again); the thresholds apply when it is read, so a
    /// changed threshold holds for a retry.
    pub async fn moderate_image(
        &self,
        name: &str,
        model: &str,
        image: &Artifact,
    ) -> Result<Vec<String>, StepError> {
        self.declared(CallKind::Moderation)?;
        #[derive(Serialize)]
        struct Asked<'a> {
            model: &'a str,
            image: &'a str,
        }
        let key = &self.key(name);
        let asked = Asked {
            model,
            image: &image.key,
        };
        let call = |pk: String| async move {
            let pk = &pk;
            let bytes = self
                .deps
                .artifacts
                .get(&image.key)
                .await
                .retryable(ErrorCode::ArtifactStore)?
                .ok_or_else(|| {
                    StepError::retryable(
                        ErrorCode::ArtifactStore,
                        format!("artifact {} is not in the bucket", image.key),
                    )
                })?;
            use base64::Engine as _;
            let url = format!(
                "data:{};base64,{}",
                image.content_type,
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            );
            let url = &url;
            self.deps
                .integrations
                .call(
                    CallKind::Moderation,
                    pk,
                    &self.events,
                    move |p| async move { p.moderate(model, url, pk).await },
                )
                .await
        };
        let (moderation, _): (crate::domain::moderation::Moderation, _) =
            self.once(key, &asked, call).await?;
        let thresholds = self
            .deps
            .integrations
            .registry()
            .await?
            .thresholds()
            .map_err(|e| StepError::permanent(ErrorCode::ConfigInvalid, e))?;
        Ok(thresholds.flags(&moderation))
    }

    /// Stores `body` as this production's artifact `name` (once: its key is its content).
    async fn keep(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<Artifact, StepError> {
        let artifact = Artifact::of(&self.production_id, name, body, content_type);
        self.deps
            .artifacts
            .put_new(&artifact.key, body, content_type)
            .await
            .retryable(ErrorCode::ArtifactStore)?;
        Ok(artifact)
    }

    fn kept(&self, a: &Artifact) {
        let mut kept = self.artifacts.lock().expect("artifacts");
        if !kept.contains(a) {
            kept.push(a.clone());
        }
    }

    /// The artifacts of the calls made so far.
    pub fn take_artifacts(&self) -> Vec<Artifact> {
        std::mem::take(&mut *self.artifacts.lock().expect("artifacts"))
    }

    /// POSTs `body` to the chain's generic HTTP JSON integration, once per key.
    pub async fn http(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        self.declared(CallKind::Http)?;
        let key = &self.key(name);
        let call = |pk: String| async move {
            let pk = &pk;
            self.deps
                .integrations
                .call(CallKind::Http, pk, &self.events, move |p| async move {
                    p.post_json(body, pk).await
                })
                .await
        };
        Ok(self.once(key, body, call).await?.0)
    }

    /// Hands `body` to the chain's HTTP integration as an external job that reports by
    /// callback, or returns its result. The job is this attempt's own (key
    /// `<call key>#a<attempt>`: a new attempt is a new job). Its runner gets
    /// `callback: {url, heartbeat_seconds, deadline_seconds}` and answers either the result
    /// (200: a runner that works synchronously) or `{"accepted": true}` (202): then the run
    /// ends with `awaiting_callback` and the worker records the wait and lets its message
    /// go. The callback records the result (or failure) in the ledger and sends the phase
    /// to a worker again; this call then returns it.
    pub async fn job(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        let limits = self.deps.job_limits;
        self.declared(CallKind::Http)?;
        let key = format!("{}{name}#a{}", self.key_prefix, self.attempt);
        let hash = request_hash(body);
        let now = self.deps.clock.now();
        let expires = now + self.ttl_ms();
        let found = self
            .deps
            .ledger
            .get(&key, now)
            .await
            .retryable(ErrorCode::OutcomeStore)?;
        if let Some(found) = found {
            match found.status {
                OutcomeStatus::Completed => {
                    return serde_json::from_str(&found.result)
                        .permanent(ErrorCode::OutcomeCorrupt);
                }
                OutcomeStatus::Failed => {
                    if let Ok(f) = serde_json::from_str::<JobFailure>(&found.result) {
                        // Read once: a later try of this attempt sends the job again.
                        let read = CallOutcome {
                            result: f.code.clone(),
                            ..found.clone()
                        };
                        self.record(&key, &read, expires).await?;
                        let mut e = StepError::permanent(
                            ErrorCode::JobFailed,
                            format!("job {key} failed ({}): {}", f.code, f.message),
                        );
                        e.class = f.class;
                        return Err(e);
                    }
                }
                OutcomeStatus::Waiting { .. } => {
                    return Err(StepError::retryable(
                        ErrorCode::AwaitingCallback,
                        format!("job {key} is running; its result comes by callback"),
                    ));
                }
                OutcomeStatus::InProgress { attempt, .. } => self.event(
                    AuditEvent::new(AuditKind::ToolCallUnknown, Outcome::Unknown, now).detail(
                        format!(
                            "{key}: attempt {attempt} stopped before the runner's answer was \
                             recorded; the job is sent again under the same key"
                        ),
                    ),
                ),
                OutcomeStatus::Rejected => {}
            }
        }
        if self.deps.callback_url.is_empty() {
            return Err(StepError::permanent(
                ErrorCode::ConfigMissing,
                "this function has no callback URL (SHEPHERD_CALLBACK_URL) to give an external job",
            ));
        }
        let started = CallOutcome {
            request_hash: hash.clone(),
            status: OutcomeStatus::InProgress {
                attempt: self.attempt,
                lease_until: self.lease_until,
            },
            result: String::new(),
            tries: 0,
        };
        self.record(&key, &started, expires).await?;
        let token = crate::domain::callback::Token::new(
            &self.production_id,
            &self.phase,
            self.attempt,
            rand::random(),
        );
        let mut sent = body.clone();
        sent["callback"] = serde_json::json!({
            "url": format!("{}{}", self.deps.callback_url, token.text()),
            "heartbeat_seconds": limits.heartbeat.as_secs(),
            "deadline_seconds": limits.deadline.as_secs(),
        });
        let sent = &sent;
        let pk = key.as_str();
        let answer = self
            .deps
            .integrations
            .call(CallKind::Http, pk, &self.events, move |p| async move {
                p.post_json(sent, pk).await
            })
            .await;
        let answer = match answer {
            Ok(a) => a,
            // No answer: the runner may have the job; the record stays `in_progress`.
            Err(e) if e.code == ErrorCode::ProviderTimeout => return Err(e),
            Err(e) => {
                let failed = CallOutcome {
                    status: OutcomeStatus::Failed,
                    result: e.code.to_string(),
                    ..started
                };
                let _ = self.deps.ledger.put(&key, &failed, expires).await;
                return Err(e);
            }
        };
        if answer["accepted"] != serde_json::Value::Bool(true) {
            // A runner that worked synchronously: its answer is the result.
            let done = CallOutcome {
                status: OutcomeStatus::Completed,
                result: answer.to_string(),
                ..started
            };
            self.record(&key, &done, expires).await?;
            return Ok(answer);
        }
        let waiting = CallOutcome {
            status: OutcomeStatus::Waiting {
                attempt: self.attempt,
            },
            ..started
        };
        self.record(&key, &waiting, expires).await?;
        let now = self.deps.clock.now();
        *self.wait.lock().expect("wait") = Some(crate::domain::Wait {
            job: key.clone(),
            token_sha256: token.sha256(),
            since: now,
            deadline: now + limits.deadline.as_millis() as Millis,
            heartbeat_ms: limits.heartbeat.as_millis() as Millis,
            heartbeats: 0,
            arrived_at: None,
        });
        Err(StepError::retryable(
            ErrorCode::AwaitingCallback,
            format!("job {key} accepted; its result comes by callback"),
        ))
    }

    /// Records a call's outcome (a store that fails it is retried with the phase).
    async fn record(
        &self,
        key: &str,
        outcome: &CallOutcome,
        expires_at: Millis,
    ) -> Result<(), StepError> {
        self.deps
            .ledger
            .put(key, outcome, expires_at)
            .await
            .retryable(ErrorCode::OutcomeStore)
    }

    /// The external job this run handed its work to, if any (taken once).
    pub fn take_wait(&self) -> Option<crate::domain::Wait> {
        self.wait.lock().expect("wait").take()
    }

    /// One request to the chain's source-control host, once per key like every call: a
    /// recorded answer (2xx or 422) is replayed, an error is made again next time.
    pub async fn scm(&self, name: &str, req: &ScmRequest) -> Result<ScmAnswer, StepError> {
        self.declared(CallKind::Scm)?;
        let key = &self.key(name);
        let call = |pk: String| async move {
            self.deps
                .integrations
                .call_scm(&pk, &self.events, req)
                .await
        };
        Ok(self.once(key, req, call).await?.0)
    }

    /// Calls tool `tool` on the chain's MCP servers, once per key like every call.
    pub async fn mcp(
        &self,
        name: &str,
        tool: &str,
        arguments: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        self.declared(CallKind::Mcp)?;
        let key = &self.key(name);
        let call = |pk: String| async move {
            self.deps
                .integrations
                .call_mcp(&pk, &self.events, tool, arguments)
                .await
        };
        Ok(self.once(key, arguments, call).await?.0)
    }

    /// Whether an integration serves `kind` and the phase may call it (a phase's optional
    /// step: one its definition does not declare is not taken).
    pub async fn serves(&self, kind: CallKind) -> Result<bool, StepError> {
        if !self.may_call(kind) {
            return Ok(false);
        }
        self.deps.integrations.serves(kind).await
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

    /// Returns the recorded outcome of `key`, or makes the call (with the provider key
    /// `call` is given) and records it; also how many earlier answers were rejected.
    async fn once<Req, T, F, Fut>(
        &self,
        key: &str,
        req: &Req,
        call: F,
    ) -> Result<(T, u32), StepError>
    where
        Req: Serialize,
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let hash = request_hash(req);
        let now = self.deps.clock.now();
        let expires = now + self.ttl_ms();
        let mut tries = 0;
        if let Some(found) = self
            .deps
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
            tries = found.tries;
            match found.status {
                OutcomeStatus::Completed => {
                    let value =
                        serde_json::from_str(&found.result).permanent(ErrorCode::OutcomeCorrupt)?;
                    return Ok((value, tries));
                }
                OutcomeStatus::Rejected => {}
                OutcomeStatus::InProgress { attempt, .. } => self.event(
                    AuditEvent::new(AuditKind::ToolCallUnknown, Outcome::Unknown, now).detail(
                        format!(
                            "{key}: attempt {attempt} stopped before recording its outcome; \
                         made again under the same key"
                        ),
                    ),
                ),
                OutcomeStatus::Failed | OutcomeStatus::Waiting { .. } => {}
            }
        }
        let record = |status, result: String| CallOutcome {
            request_hash: hash.clone(),
            status,
            result,
            tries,
        };
        let provider_key = match tries {
            0 => key.to_string(),
            n => format!("{key}#t{n}"),
        };
        let started = record(
            OutcomeStatus::InProgress {
                attempt: self.attempt,
                lease_until: self.lease_until,
            },
            String::new(),
        );
        self.record(key, &started, expires).await?;
        match call(provider_key).await {
            Ok(result) => {
                let json = serde_json::to_string(&result).expect("result serialises");
                self.record(key, &record(OutcomeStatus::Completed, json), expires)
                    .await?;
                Ok((result, tries))
            }
            Err(e) if e.code == ErrorCode::ProviderTimeout => {
                // No answer is not a failed call: the provider may have made it. The outcome
                // stays `in_progress`, so the next run audits it as unknown and makes it
                // again under the same key (the provider sees the same Idempotency-Key).
                Err(e)
            }
            Err(e) => {
                // Best effort: a lost `failed` leaves `in_progress`, read as unknown next time.
                let _ = self
                    .deps
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
