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

mod health;
mod ops;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use health::{Gate, Health, HealthStatus, Observation, Policy};
pub use ops::{IntegrationTest, IntegrationView};

use crate::alarms::{Raise, Severity};
use crate::domain::{AuditEvent, ErrorClass, Millis};
use crate::ports::{Clock, ParamError, Params, Store};
use crate::tools::{McpClient, ProviderClient, StepError};

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Chat,
    Image,
    Speech,
    /// Tools on an MCP server (streamable HTTP).
    Mcp,
    /// A generic HTTP JSON endpoint (a webhook, an internal service): POST JSON, get JSON.
    Http,
}

fn all_kinds() -> Vec<CallKind> {
    vec![CallKind::Chat, CallKind::Image, CallKind::Speech]
}

/// One integration as defined in the registry parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// An OpenAI-compatible API's base URL, or an MCP server's endpoint (kind `mcp`);
    /// empty: not configured (left out of the chain).
    pub base_url: String,
    /// The SSM SecureString holding its API key (or bearer token).
    pub secret_param: String,
    #[serde(default = "all_kinds")]
    pub kinds: Vec<CallKind>,
}

/// The registry parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The model-selection chain: tried in this order.
    pub chain: Vec<String>,
    pub integrations: BTreeMap<String, Definition>,
}

impl Registry {
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let r: Registry = serde_json::from_str(text)
            .map_err(|e| format!("{name} is not an integration registry: {e}"))?;
        for id in &r.chain {
            if !r.integrations.contains_key(id) {
                return Err(format!("{name}: chain names {id:?}, which is not defined"));
            }
        }
        Ok(r)
    }

    /// The configured integrations serving `kind`, in chain order.
    pub fn chain_for(&self, kind: CallKind) -> Vec<(&str, &Definition)> {
        self.chain
            .iter()
            .filter_map(|id| self.integrations.get(id).map(|d| (id.as_str(), d)))
            .filter(|(_, d)| !d.base_url.trim().is_empty() && d.kinds.contains(&kind))
            .collect()
    }

    /// Every configured integration, in chain order.
    pub fn configured(&self) -> Vec<(&str, &Definition)> {
        self.chain
            .iter()
            .filter_map(|id| self.integrations.get(id).map(|d| (id.as_str(), d)))
            .filter(|(_, d)| !d.base_url.trim().is_empty())
            .collect()
    }
}

/// Errors that say the provider, not the request, is the problem.
fn observation(e: &StepError, now: Millis) -> Option<Observation> {
    match e.code.as_str() {
        "provider_rate_limited" => Some(Observation::RateLimited {
            until: e.retry_at.unwrap_or(now + 30_000),
        }),
        "provider_unavailable"
        | "provider_timeout"
        | "provider_unreachable"
        | "provider_auth"
        | "mcp_transport"
        | "mcp_session_expired" => Some(Observation::Failure {
            code: e.code.clone(),
            detail: e.detail.chars().take(300).collect(),
        }),
        _ => None,
    }
}

/// How long a warm function trusts its copy of an integration's health.
const HEALTH_CACHE: Duration = Duration::from_secs(5);

/// The integrations a phase function calls: the registry, health (cached), one HTTP client
/// per integration.
pub struct Integrations {
    params: Arc<dyn Params>,
    registry_param: String,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    timeout: Duration,
    providers: Mutex<HashMap<String, Arc<ProviderClient>>>,
    mcp: Mutex<HashMap<String, Arc<McpClient>>>,
    cache: Mutex<HashMap<String, (Instant, Health)>>,
}

impl Integrations {
    pub fn new(
        params: Arc<dyn Params>,
        registry_param: impl Into<String>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        timeout: Duration,
    ) -> Self {
        Self {
            params,
            registry_param: registry_param.into(),
            store,
            clock,
            policy,
            timeout,
            providers: Mutex::new(HashMap::new()),
            mcp: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn registry(&self) -> Result<Registry, StepError> {
        let text = self
            .params
            .get(&self.registry_param)
            .await
            .map_err(|e| match e {
                ParamError::Missing(n) => StepError::permanent(
                    "config_missing",
                    format!("SSM parameter {n} (the integration registry) does not exist"),
                ),
                other => StepError::retryable("config_unavailable", other.to_string()),
            })?;
        Registry::parse(&self.registry_param, &text)
            .map_err(|e| StepError::permanent("config_invalid", e))
    }

    fn provider(&self, id: &str, d: &Definition) -> Arc<ProviderClient> {
        let mut providers = self.providers.lock().expect("providers");
        providers
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(ProviderClient::new(
                    self.params.clone(),
                    self.clock.clone(),
                    d.base_url.clone(),
                    d.secret_param.clone(),
                    self.timeout,
                ))
            })
            .clone()
    }

    fn mcp_client(&self, id: &str, d: &Definition) -> Arc<McpClient> {
        let mut clients = self.mcp.lock().expect("mcp clients");
        clients
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(McpClient::new(
                    d.base_url.clone(),
                    d.secret_param.clone(),
                    self.params.clone(),
                    self.timeout,
                ))
            })
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
            |(id, client): (String, Arc<McpClient>)| async move {
                let mut delay = Duration::from_millis(200);
                let mut tries = 0;
                loop {
                    let e = match client.call_tool(tool, arguments).await {
                        Err(e) if e.code == "mcp_transport" || e.code == "mcp_session_expired" => e,
                        other => return other,
                    };
                    let now = self.clock.now();
                    events.lock().expect("events").extend([
                        AuditEvent::new("tool_call.unknown", "unknown", now).detail(format!(
                            "{key}: the connection to {id} broke during {tool}; its outcome is unknown, \
                             called again under the same key"
                        )),
                        AuditEvent::new("mcp.disconnected", "failure", now)
                            .detail(format!("{id}: {}; reconnecting", e.detail)),
                    ]);
                    self.observe(
                        &id,
                        &Observation::Failure {
                            code: e.code.clone(),
                            detail: e.detail.chars().take(300).collect(),
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
        let h =
            self.store.health(id).await.map_err(|e| {
                StepError::retryable("integration_health_unavailable", e.to_string())
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
    ) -> Result<Option<Health>, crate::ports::StoreError> {
        for _ in 0..3 {
            let current = self.store.health(id).await?;
            let Some(mut next) = change(&current) else {
                self.remember(&current);
                return Ok(None);
            };
            next.version = current.version + 1;
            if self.store.put_health(&next).await? {
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
            Ok(Some(h)) if h.opened_at == Some(now) && h.consecutive_errors >= policy.threshold => {
                let raise = Raise {
                    kind: "integration_unhealthy".into(),
                    subject: format!("integration:{id}"),
                    severity: Severity::Critical,
                    detail: format!(
                        "{} consecutive errors; calls fail fast or fall back for {} s, then one probe. Last: {}",
                        h.consecutive_errors,
                        policy.cooldown / 1000,
                        h.last_error.as_deref().unwrap_or("-")
                    ),
                };
                if let Err(e) = self.store.raise_alarm(&raise, now).await {
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
    pub async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        key: &str,
        events: &Mutex<Vec<AuditEvent>>,
        call: F,
    ) -> Result<T, StepError>
    where
        F: Fn(Arc<ProviderClient>) -> Fut,
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
                "integration_missing",
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
                    AuditEvent::new("tool_call.failed", "failure", now).detail(format!(
                        "{key}: not called at {id}: {reason}; retryable=true"
                    )),
                );
                continue;
            }
            if probing && !self.claim_probe(id).await {
                passed.push(format!("{id} (unavailable)"));
                continue;
            }
            if !passed.is_empty() {
                audit(
                    AuditEvent::new("routing.decided", "success", now).detail(format!(
                        "{key}: using {id}{}; passed over {}",
                        if probing { " (probe)" } else { "" },
                        passed.join(", ")
                    )),
                );
            }
            match call(client(id, def)).await {
                Ok(v) => {
                    if !health.is_clean() || probing {
                        self.observe(id, &Observation::Success).await;
                    }
                    return Ok(v);
                }
                Err(e) => {
                    let now = self.clock.now();
                    let Some(obs) = observation(&e, now) else {
                        return Err(e);
                    };
                    self.observe(id, &obs).await;
                    if let Observation::RateLimited { until } = obs {
                        waits.push(until);
                    }
                    audit(
                        AuditEvent::new("tool_call.failed", "failure", now).detail(format!(
                            "{key}: {id}: {}: {}; retryable={}",
                            e.code,
                            e.detail.chars().take(200).collect::<String>(),
                            e.class == ErrorClass::Retryable
                        )),
                    );
                    passed.push(format!("{id} ({})", e.code));
                    last = Some(e);
                }
            }
        }
        let retry_at = waits.into_iter().min();
        Err(match last {
            Some(mut e) => {
                e.retry_at = e.retry_at.or(retry_at);
                e
            }
            None => {
                let mut e = StepError::retryable(
                    "integration_unavailable",
                    format!(
                        "no integration may take the call now: {}",
                        passed.join(", ")
                    ),
                );
                e.retry_at = retry_at;
                e
            }
        })
    }
}
