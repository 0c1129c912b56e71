//! Integrations: the providers phases call, their health, and how each call is routed.
//!
//! The definitions (an ordered chain and, per integration, its base URL, the SSM name of its
//! secret and the kinds of call it serves) are one JSON SSM parameter the template writes
//! (`/shepherd/<stack>/integrations`). Health lives in the state table (`INT#<id>`), written
//! only when it changes (an error, a recovery, a 429, an operator's switch), and cached for
//! a few seconds by each warm function.
//!
//! Routing, per call: walk the chain; skip a disabled integration, one whose circuit is open
//! (until its cooldown lets one probe through) and one whose rate limit has not reset; call
//! the first one left. An error that says the provider is unwell (5xx, timeout, unreachable,
//! auth, 429) is recorded on its health and the next one is tried; an error about the
//! request itself (content refusal, bad request) is returned at once. Each failure is
//! audited (`tool_call.failed`, with its retryable flag) and so is any deviation from the
//! chain's first choice (`routing.decided`), in the same write as the phase's result.
//! Nothing left: fail fast, retryable, held until the earliest reset or reopening.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

pub use crate::config::{CallKind, Definition, Registry};
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::health::{Gate, Health, Observation, Policy};
use crate::domain::{AuditEvent, AuditKind, ErrorClass, ErrorCode, Millis, Outcome, StepError};
use crate::ports::{
    Alarms, Clock, Connector, HealthStore, McpSession, ParamError, Params, Provider, Scm,
    StoreError,
};

/// Errors that say the provider, not the request, is the problem.
fn observation(e: &StepError, now: Millis) -> Option<Observation> {
    if e.code == ErrorCode::ProviderRateLimited {
        return Some(Observation::RateLimited {
            until: e.retry_at.unwrap_or(now + 30_000),
        });
    }
    // Slow is not down: see `domain::health`.
    if e.code == ErrorCode::ProviderTimeout {
        return Some(Observation::TimedOut {
            detail: crate::domain::redact::excerpt(&e.detail, 300),
        });
    }
    e.code.is_provider_outage().then(|| Observation::Failure {
        code: e.code.to_string(),
        detail: crate::domain::redact::excerpt(&e.detail, 300),
    })
}

/// Reads the registry parameter.
pub async fn load_registry(params: &dyn Params, name: &str) -> Result<Registry, StepError> {
    let text = params.get(name).await.map_err(|e| match e {
        ParamError::Missing(n) => StepError::permanent(
            ErrorCode::ConfigMissing,
            format!("SSM parameter {n} (the integration registry) does not exist"),
        ),
        other => StepError::retryable(ErrorCode::ConfigUnavailable, other.to_string()),
    })?;
    Registry::parse(name, &text).map_err(|e| StepError::permanent(ErrorCode::ConfigInvalid, e))
}

/// How long a warm function trusts its copy of an integration's health.
const HEALTH_CACHE: Duration = Duration::from_secs(5);

/// The integrations a phase function calls: the registry, health (cached), one HTTP client
/// per integration.
pub struct Integrations {
    params: Arc<dyn Params>,
    registry_param: String,
    health: Arc<dyn HealthStore>,
    alarms: Arc<dyn Alarms>,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    providers: Mutex<HashMap<String, Arc<dyn Provider>>>,
    mcp: Mutex<HashMap<String, Arc<dyn McpSession>>>,
    scm: Mutex<HashMap<String, Arc<dyn Scm>>>,
    cache: Mutex<HashMap<String, (Instant, Health)>>,
    /// Successful calls per integration not yet added to its shared window.
    successes: Mutex<HashMap<String, u32>>,
}

/// What the integrations of a phase function are built from.
pub struct IntegrationsDeps {
    pub params: Arc<dyn Params>,
    pub registry_param: String,
    pub health: Arc<dyn HealthStore>,
    pub alarms: Arc<dyn Alarms>,
    pub connector: Arc<dyn Connector>,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
}

impl Integrations {
    pub fn new(d: IntegrationsDeps) -> Self {
        Self {
            params: d.params,
            registry_param: d.registry_param,
            health: d.health,
            alarms: d.alarms,
            connector: d.connector,
            clock: d.clock,
            policy: d.policy,
            providers: Mutex::new(HashMap::new()),
            mcp: Mutex::new(HashMap::new()),
            scm: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            successes: Mutex::new(HashMap::new()),
        }
    }

    pub async fn registry(&self) -> Result<Registry, StepError> {
        load_registry(self.params.as_ref(), &self.registry_param).await
    }

    fn provider(&self, id: &str, d: &Definition) -> Arc<dyn Provider> {
        let mut providers = self.providers.lock().expect("providers");
        providers
            .entry(id.to_string())
            .or_insert_with(|| self.connector.provider(id, d))
            .clone()
    }

    fn scm_client(&self, id: &str, d: &Definition) -> Arc<dyn Scm> {
        let mut clients = self.scm.lock().expect("scm clients");
        clients
            .entry(id.to_string())
            .or_insert_with(|| self.connector.scm(id, d))
            .clone()
    }

    fn mcp_client(&self, id: &str, d: &Definition) -> Arc<dyn McpSession> {
        let mut clients = self.mcp.lock().expect("mcp clients");
        clients
            .entry(id.to_string())
            .or_insert_with(|| self.connector.mcp(id, d))
            .clone()
    }

    /// Whether any integration serves `kind` (a phase may skip an optional step).
    pub async fn serves(&self, kind: CallKind) -> Result<bool, StepError> {
        Ok(!self.registry().await?.chain_for(kind).is_empty())
    }

    /// Calls tool `tool` on the chain's MCP servers. A connection lost mid-call leaves the
    /// outcome unknown: `tool_call.unknown` and `mcp.disconnected` are audited, the
    /// integration's health records the failure, and the client reconnects with backoff
    /// and calls again under the same key (the arguments carry it as `idempotency_key`).
    pub async fn call_mcp(
        &self,
        key: &str,
        events: &Mutex<Vec<AuditEvent>>,
        tool: &str,
        arguments: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError> {
        let mut arguments = arguments.clone();
        arguments["idempotency_key"] = key.into();
        let arguments = &arguments;
        self.route(
            CallKind::Mcp,
            key,
            events,
            |id, d| (id.to_string(), self.mcp_client(id, d)),
            |(id, client): (String, Arc<dyn McpSession>)| async move {
                let mut delay = Duration::from_millis(200);
                let mut tries = 0;
                loop {
                    let e = match client.call_tool(tool, arguments).await {
                        Err(e) if matches!(e.code, ErrorCode::McpTransport | ErrorCode::McpSessionExpired) => e,
                        other => return other,
                    };
                    let now = self.clock.now();
                    events.lock().expect("events").extend([
                        AuditEvent::new(AuditKind::ToolCallUnknown, Outcome::Unknown, now).detail(format!(
                            "{key}: the connection to {id} broke during {tool}; its outcome is unknown, \
                             called again under the same key"
                        )),
                        AuditEvent::new(AuditKind::McpDisconnected, Outcome::Failure, now)
                            .detail(format!("{id}: {}; reconnecting", e.detail)),
                    ]);
                    self.observe(
                        &id,
                        &Observation::Failure {
                            code: e.code.to_string(),
                            detail: crate::domain::redact::excerpt(&e.detail, 300),
                        },
                    )
                    .await;
                    client.disconnect().await;
                    tries += 1;
                    if tries >= 3 {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            },
        )
        .await
    }

    async fn health(&self, id: &str) -> Result<Health, StepError> {
        if let Some((at, h)) = self.cache.lock().expect("cache").get(id)
            && at.elapsed() < HEALTH_CACHE
        {
            return Ok(h.clone());
        }
        // The refresh also adds this function's successful calls to the shared window.
        let tally = self
            .successes
            .lock()
            .expect("successes")
            .remove(id)
            .unwrap_or(0);
        if tally > 0 {
            let now = self.clock.now();
            let policy = self.policy;
            let obs = Observation::Successes(tally);
            if let Ok(Some(h)) = self
                .update(id, |h| Some(h.observe(&obs, now, policy)))
                .await
            {
                return Ok(h);
            }
        }
        let h = self.health.get(id).await.map_err(|e| {
            StepError::retryable(ErrorCode::IntegrationHealthUnavailable, e.to_string())
        })?;
        self.remember(&h);
        Ok(h)
    }

    fn remember(&self, h: &Health) {
        self.cache
            .lock()
            .expect("cache")
            .insert(h.id.clone(), (Instant::now(), h.clone()));
    }

    /// Applies `change` to the stored record (read, change, conditional write; retried on a
    /// race). `None` from `change`: nothing to write. Returns the record as stored.
    async fn update(
        &self,
        id: &str,
        change: impl Fn(&Health) -> Option<Health>,
    ) -> Result<Option<Health>, StoreError> {
        for _ in 0..3 {
            let current = self.health.get(id).await?;
            let Some(mut next) = change(&current) else {
                self.remember(&current);
                return Ok(None);
            };
            next.version = current.version + 1;
            if self.health.put(&next).await? {
                self.remember(&next);
                return Ok(Some(next));
            }
        }
        Ok(None)
    }

    /// Records what a call showed; raises `integration_unhealthy` when a circuit opens.
    async fn observe(&self, id: &str, obs: &Observation) {
        let now = self.clock.now();
        let policy = self.policy;
        let res = self
            .update(id, |h| match obs {
                Observation::Success if h.is_clean() => None,
                _ => Some(h.observe(obs, now, policy)),
            })
            .await;
        match res {
            Ok(Some(h)) if h.opened_at == Some(now) => {
                let (calls, failures, timeouts) = h.window_counts(now, policy);
                let what = match obs {
                    Observation::TimedOut { .. } => {
                        format!("{timeouts} of {calls} calls timed out")
                    }
                    _ => format!("{failures} of {calls} calls failed"),
                };
                let raise = Raise::new(
                    AlarmKind::IntegrationUnhealthy,
                    format!("integration:{id}"),
                    Severity::Critical,
                    format!(
                        "{what} within {} s; calls fail fast or fall back for {} s, then one probe. Last: {}",
                        policy.window / 1000,
                        policy.cooldown / 1000,
                        h.last_error.as_deref().unwrap_or("-")
                    ),
                );
                if let Err(e) = self.alarms.raise(&raise, now).await {
                    warn!(error = %e, integration = id, "could not record the alarm");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, integration = id, "could not record integration health"),
        }
    }

    /// Takes the half-open probe, unless another worker took it first.
    async fn claim_probe(&self, id: &str) -> bool {
        let now = self.clock.now();
        let policy = self.policy;
        matches!(
            self.update(id, |h| (h.gate(now, policy) == Gate::Probe).then(|| {
                let mut n = h.clone();
                n.probe_at = Some(now);
                n.updated_at = now;
                n
            }))
            .await,
            Ok(Some(_))
        )
    }

    /// Routes one provider call along the chain for `kind` (see the module docs); `events`
    /// collects the audit events the phase's commit will carry.
    /// One request to the chain's source-control host (routed like every call).
    pub async fn call_scm(
        &self,
        key: &str,
        events: &Mutex<Vec<AuditEvent>>,
        req: &crate::ports::ScmRequest,
    ) -> Result<crate::ports::ScmAnswer, StepError> {
        self.route(
            CallKind::Scm,
            key,
            events,
            |id, d| self.scm_client(id, d),
            |c| async move { c.send(req).await },
        )
        .await
    }

    pub async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        key: &str,
        events: &Mutex<Vec<AuditEvent>>,
        call: F,
    ) -> Result<T, StepError>
    where
        F: Fn(Arc<dyn Provider>) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        self.route(kind, key, events, |id, d| self.provider(id, d), call)
            .await
    }

    async fn route<C, T, G, F, Fut>(
        &self,
        kind: CallKind,
        key: &str,
        events: &Mutex<Vec<AuditEvent>>,
        client: G,
        call: F,
    ) -> Result<T, StepError>
    where
        G: Fn(&str, &Definition) -> C,
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let registry = self.registry().await?;
        let chain = registry.chain_for(kind);
        if chain.is_empty() {
            return Err(StepError::permanent(
                ErrorCode::IntegrationMissing,
                format!("no configured integration serves {kind:?} calls"),
            ));
        }
        let audit = |e: AuditEvent| events.lock().expect("events").push(e);
        let mut passed: Vec<String> = Vec::new();
        let mut waits: Vec<Millis> = Vec::new();
        let mut last: Option<StepError> = None;
        for (id, def) in &chain {
            let now = self.clock.now();
            let health = self.health(id).await?;
            let gate = health.gate(now, self.policy);
            let probing = gate == Gate::Probe;
            if let Gate::Skip { reason, until } = &gate {
                waits.extend(until);
                passed.push(format!("{id} ({reason})"));
                audit(
                    AuditEvent::new(AuditKind::ToolCallFailed, Outcome::Failure, now).detail(
                        format!("{key}: not called at {id}: {reason}; retryable=true"),
                    ),
                );
                continue;
            }
            if probing && !self.claim_probe(id).await {
                passed.push(format!("{id} (unavailable)"));
                continue;
            }
            if !passed.is_empty() {
                audit(
                    AuditEvent::new(AuditKind::RoutingDecided, Outcome::Success, now).detail(
                        format!(
                            "{key}: using {id}{}; passed over {}",
                            if probing { " (probe)" } else { "" },
                            passed.join(", ")
                        ),
                    ),
                );
            }
            let started = std::time::Instant::now();
            let answer = call(client(id, def)).await;
            provider_metrics(id, kind, started.elapsed(), answer.as_ref().err());
            match answer {
                Ok(v) => {
                    if !health.is_clean() || probing {
                        self.observe(id, &Observation::Success).await;
                    } else {
                        *self
                            .successes
                            .lock()
                            .expect("successes")
                            .entry(id.to_string())
                            .or_default() += 1;
                    }
                    return Ok(v);
                }
                Err(mut e) => {
                    e.integration.get_or_insert_with(|| id.to_string());
                    let now = self.clock.now();
                    // A provider's reset is believed up to the cap (see `health::Policy`).
                    let cap = now.saturating_add(self.policy.max_rate_limit_wait);
                    e.retry_at = e.retry_at.map(|at| at.clamp(now, cap));
                    let Some(obs) = observation(&e, now) else {
                        return Err(e);
                    };
                    self.observe(id, &obs).await;
                    if let Observation::RateLimited { until } = obs {
                        waits.push(until);
                    }
                    audit(
                        AuditEvent::new(AuditKind::ToolCallFailed, Outcome::Failure, now).detail(
                            format!(
                                "{key}: {id}: {}: {}; retryable={}",
                                e.code,
                                crate::domain::redact::excerpt(&e.detail, 200),
                                e.class == ErrorClass::Retryable
                            ),
                        ),
                    );
                    passed.push(format!("{id} ({})", e.code));
                    last = Some(e);
                }
            }
        }
        let retry_at = waits.into_iter().min();
        Err(match last {
            // Refused for its rate: a wait until the reset, not an attempt.
            Some(mut e) if e.code == ErrorCode::ProviderRateLimited => {
                e.class = ErrorClass::Wait;
                e.retry_at = e.retry_at.or(retry_at);
                e
            }
            Some(mut e) => {
                e.retry_at = e.retry_at.or(retry_at);
                e
            }
            // Nothing was called (disabled, circuits open, rate limited): a wait.
            None => StepError::wait(
                ErrorCode::IntegrationUnavailable,
                format!(
                    "no integration may take the call now: {}",
                    passed.join(", ")
                ),
                retry_at,
            ),
        })
    }
}

/// One call's latency at an integration, and its error (by code) if it failed.
fn provider_metrics(
    id: &str,
    kind: CallKind,
    took: std::time::Duration,
    error: Option<&StepError>,
) {
    let mut doc = crate::metrics::Document::by("integration", id)
        .millis("ProviderLatency", took.as_millis() as u64)
        .count("ProviderCalls", 1)
        .property("kind", format!("{kind:?}").to_lowercase());
    if let Some(e) = error {
        doc = doc
            .count("ProviderErrors", 1)
            .property("error_code", e.code.to_string());
    }
    doc.emit();
}
