//! Configuration: where a stack's resources are (one [`Topology`], shared by the functions'
//! [`Config`] and the operators' [`StackConfig`]), the functions' tunables, and the
//! integration registry's definitions. Functions read theirs from the environment the
//! template sets (in Lambda, or from the template in the local runtime); operators' tools
//! read the stack's from the SSM parameter the template writes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{GatePolicy, Millis, OnExpiry};
use crate::pipeline::{Pipeline, Pipelines};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {0} is not set")]
    Missing(&'static str),
    #[error("configuration {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// Where a stack keeps its productions: tables, and per phase a queue and its DLQ, found by
/// the template's naming convention (`<stack>-<phase>`, `<stack>-<phase>-dlq`), so a
/// function's environment does not grow with the stack's phases (Lambda allows 4 KB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub state_table: String,
    pub idempotency_table: String,
    pub audit_table: String,
    /// Every phase's queue URL is this and the phase's name; its DLQ's, that and `-dlq`
    /// (`https://sqs.<region>.amazonaws.com/<account>/<stack>-`).
    pub queue_prefix: String,
    /// Phase name -> queue URL, for the stack's phases ([`Topology::with_phases`]).
    #[serde(skip)]
    pub queues: BTreeMap<String, String>,
    /// Phase name -> dead-letter queue URL.
    #[serde(skip)]
    pub dlqs: BTreeMap<String, String>,
    /// The S3 bucket of artifacts (images, audio, large outputs).
    #[serde(default)]
    pub artifact_bucket: String,
}

impl Topology {
    /// The queues of `phases` (the stack's pipelines' phases), by the naming convention.
    pub fn with_phases<'a>(mut self, phases: impl IntoIterator<Item = &'a str>) -> Self {
        let (queues, dlqs) = phases
            .into_iter()
            .map(|p| {
                let url = format!("{}{p}", self.queue_prefix);
                (
                    (p.to_string(), url.clone()),
                    (p.to_string(), format!("{url}-dlq")),
                )
            })
            .unzip();
        self.queues = queues;
        self.dlqs = dlqs;
        self
    }

    pub fn queue(&self, phase: &str) -> Result<&str, ConfigError> {
        Self::lookup(&self.queues, phase)
    }

    pub fn dlq(&self, phase: &str) -> Result<&str, ConfigError> {
        Self::lookup(&self.dlqs, phase)
    }

    fn lookup<'a>(map: &'a BTreeMap<String, String>, phase: &str) -> Result<&'a str, ConfigError> {
        map.get(phase)
            .map(String::as_str)
            .ok_or_else(|| ConfigError::Invalid {
                name: "phase",
                problem: format!("{phase:?} is no phase of this stack's pipelines"),
            })
    }
}

/// A queue URL prefix: an absolute URL whose last segment starts the queues' names.
fn check_prefix(name: &'static str, prefix: &str) -> Result<(), ConfigError> {
    let ok = url::Url::parse(prefix).is_ok_and(|u| {
        u.query().is_none()
            && u.fragment().is_none()
            && u.path_segments()
                .and_then(|mut s| s.next_back())
                .is_some_and(|last| !last.is_empty())
    });
    match ok {
        true => Ok(()),
        false => Err(ConfigError::Invalid {
            name,
            problem: format!(
                "{prefix:?} is not a queue URL prefix (https://sqs.<region>.amazonaws.com/<account>/<stack>-)"
            ),
        }),
    }
}

/// Everything a function needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct Config {
    pub topology: Topology,
    /// Must equal the queues' RedrivePolicy maxReceiveCount (both come from one template
    /// parameter): a backstop for messages that never reach the engine's budget.
    pub max_receive_count: u32,
    /// Tries of one phase attempt before it is dead-lettered (the engine's retry budget).
    pub max_retries: u32,
    pub function_timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// The SSM parameter holding the integration registry (chain and definitions).
    pub integrations_param: String,
    pub provider_timeout: Duration,
    /// Percent of failed calls in the window that opens an integration's circuit.
    pub circuit_failure_rate: u32,
    /// Calls in the window below which a circuit never opens.
    pub circuit_min_calls: u32,
    pub circuit_window: Duration,
    /// How long an open circuit fails fast before one probe call.
    pub circuit_cooldown: Duration,
    /// Timed-out calls in the window that open an integration's circuit (a timeout is
    /// not a failure: the provider may only be slow).
    pub circuit_timeouts: u32,
    /// The longest a provider's rate-limit reset may hold its calls.
    pub rate_limit_cap: Duration,
    pub secret_cache: Duration,
    pub outcome_ttl: Duration,
    /// Fresh calls a run may make after rejecting a provider's answer.
    pub bad_answer_retries: u32,
    /// The sweep re-sends a dispatch nobody claimed for this long.
    pub lost_dispatch_after: Duration,
    /// Webhooks: the delivery queue; empty without webhooks.
    pub webhook_queue: String,
    /// How long a receiver has to answer one delivery.
    pub webhook_timeout: Duration,
    /// Seconds before each retry of a failed delivery.
    pub webhook_schedule: Vec<u64>,
    /// The notification topic (SNS) of the e-mail subscription; empty: none.
    pub notify_topic: String,
    /// The publish webhook (a stack subscription to completions); empty: none.
    pub publish_webhook_url: String,
    /// The SSM parameter of its signing secret.
    pub publish_webhook_secret: String,
    /// Webhooks may go to loopback receivers (the local stack only).
    pub webhook_allow_loopback: bool,
    /// The SSM parameter of the stack's configuration (the scheduler reads it on its first
    /// tick: starting a production needs the stack's gates and limits); empty elsewhere.
    pub stack_config_param: String,
    /// Where an external job reports (`<api>/callbacks/`, a token appended); empty: the
    /// function's phases hand no work to external jobs.
    pub callback_url: String,
    /// An external job's heartbeat interval and deadline.
    pub job_heartbeat: Duration,
    pub job_deadline: Duration,
    /// The stack's pipelines (its composition crate's; a test may run others).
    pub pipelines: std::sync::Arc<Pipelines>,
}

impl Config {
    /// The function's configuration from its environment, running `pipelines`.
    pub fn from_env(pipelines: std::sync::Arc<Pipelines>) -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect(), pipelines)
    }

    pub fn from_map(
        env: &HashMap<String, String>,
        pipelines: std::sync::Arc<Pipelines>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &'static str| {
            env.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(ConfigError::Missing(name))
        };
        let num = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match env.get(name).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                    name,
                    problem: format!("{v:?} is not a whole number"),
                }),
            }
        };
        let secs = |name, default| num(name, default).map(Duration::from_secs);
        let max_receive_count = num("SHEPHERD_MAX_RECEIVE_COUNT", 10)? as u32;
        let max_retries = num("SHEPHERD_PHASE_MAX_RETRIES", 5)?.max(1) as u32;
        if max_receive_count == 0 {
            return Err(ConfigError::Invalid {
                name: "SHEPHERD_MAX_RECEIVE_COUNT",
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            topology: Topology {
                state_table: get("SHEPHERD_STATE_TABLE")?,
                idempotency_table: get("SHEPHERD_IDEMPOTENCY_TABLE")?,
                audit_table: env.get("SHEPHERD_AUDIT_TABLE").cloned().unwrap_or_default(),
                queue_prefix: {
                    let p = get("SHEPHERD_QUEUE_PREFIX")?;
                    check_prefix("SHEPHERD_QUEUE_PREFIX", &p)?;
                    p
                },
                queues: BTreeMap::new(),
                dlqs: BTreeMap::new(),
                artifact_bucket: env
                    .get("SHEPHERD_ARTIFACT_BUCKET")
                    .cloned()
                    .unwrap_or_default(),
            }
            .with_phases(pipelines.phase_names()),
            max_receive_count,
            max_retries,
            function_timeout: secs("SHEPHERD_FUNCTION_TIMEOUT_SECS", 60)?,
            retry_base: secs("SHEPHERD_RETRY_BASE_SECS", 5)?,
            retry_cap: secs("SHEPHERD_RETRY_CAP_SECS", 300)?,
            integrations_param: get("SHEPHERD_INTEGRATIONS_PARAM")?,
            provider_timeout: secs("SHEPHERD_PROVIDER_TIMEOUT_SECS", 20)?,
            circuit_failure_rate: num("SHEPHERD_CIRCUIT_FAILURE_RATE", 50)?.clamp(1, 100) as u32,
            circuit_min_calls: num("SHEPHERD_CIRCUIT_MIN_CALLS", 10)?.max(1) as u32,
            circuit_window: secs("SHEPHERD_CIRCUIT_WINDOW_SECS", 60)?,
            circuit_cooldown: secs("SHEPHERD_CIRCUIT_COOLDOWN_SECS", 30)?,
            circuit_timeouts: num("SHEPHERD_CIRCUIT_TIMEOUTS", 10)?.max(1) as u32,
            rate_limit_cap: secs("SHEPHERD_RATE_LIMIT_CAP_SECS", 3600)?,
            secret_cache: secs("SHEPHERD_SECRET_CACHE_SECS", 300)?,
            outcome_ttl: Duration::from_secs(num("SHEPHERD_OUTCOME_TTL_DAYS", 14)? * 86_400),
            bad_answer_retries: num("SHEPHERD_BAD_ANSWER_RETRIES", 2)? as u32,
            lost_dispatch_after: secs("SHEPHERD_LOST_DISPATCH_SECS", 120)?,
            webhook_queue: env
                .get("SHEPHERD_WEBHOOK_QUEUE")
                .cloned()
                .unwrap_or_default(),
            webhook_timeout: secs("SHEPHERD_WEBHOOK_TIMEOUT_SECS", 10)?,
            webhook_schedule: match env.get("SHEPHERD_WEBHOOK_RETRY_SCHEDULE") {
                None => crate::domain::webhooks::RETRY_SCHEDULE_SECS.to_vec(),
                Some(s) => crate::domain::webhooks::parse_schedule(s).map_err(|problem| {
                    ConfigError::Invalid {
                        name: "SHEPHERD_WEBHOOK_RETRY_SCHEDULE",
                        problem,
                    }
                })?,
            },
            notify_topic: env
                .get("SHEPHERD_NOTIFY_TOPIC")
                .cloned()
                .unwrap_or_default(),
            publish_webhook_url: env
                .get("SHEPHERD_PUBLISH_WEBHOOK_URL")
                .cloned()
                .unwrap_or_default(),
            publish_webhook_secret: env
                .get("SHEPHERD_PUBLISH_WEBHOOK_SECRET")
                .cloned()
                .unwrap_or_default(),
            webhook_allow_loopback: env
                .get("SHEPHERD_WEBHOOK_ALLOW_LOOPBACK")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            stack_config_param: env
                .get("SHEPHERD_STACK_CONFIG_PARAM")
                .cloned()
                .unwrap_or_default(),
            callback_url: env
                .get("SHEPHERD_CALLBACK_URL")
                .cloned()
                .unwrap_or_default(),
            job_heartbeat: secs("SHEPHERD_JOB_HEARTBEAT_SECS", 300)?,
            job_deadline: secs("SHEPHERD_JOB_DEADLINE_SECS", 21_600)?,
            pipelines,
        })
    }

    /// How the runtime paces retries.
    pub fn retry_policy(&self) -> crate::domain::delivery::RetryPolicy {
        crate::domain::delivery::RetryPolicy {
            max_retries: self.max_retries,
            max_receive_count: self.max_receive_count,
            base: self.retry_base,
            cap: self.retry_cap,
        }
    }

    /// The circuit breaker's thresholds.
    pub fn health_policy(&self) -> crate::domain::health::Policy {
        crate::domain::health::Policy {
            failure_rate: self.circuit_failure_rate,
            min_calls: self.circuit_min_calls,
            window: self.circuit_window.as_millis() as Millis,
            cooldown: self.circuit_cooldown.as_millis() as Millis,
            max_rate_limit_wait: self.rate_limit_cap.as_millis() as Millis,
            timeouts_to_open: self.circuit_timeouts,
        }
    }
}

/// Where a deployed (or local) stack keeps its resources and what its productions get. The
/// template writes it to the SSM parameter `/shepherd/<stack>/config`, so the CLI needs
/// only the stack name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackConfig {
    #[serde(flatten)]
    pub topology: Topology,
    /// Phases after which productions wait for approval (`a,b`), added to the gates their
    /// pipeline's definition declares; empty: none.
    #[serde(default)]
    pub approval_phases: String,
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl_secs: u64,
    /// `fail` or `renew`.
    #[serde(default = "default_on_expiry")]
    pub approval_on_expiry: String,
    /// The SSM parameter holding the integration registry.
    #[serde(default)]
    pub integrations_param: String,
    /// The stack's name (what `sam deploy` was given).
    #[serde(default)]
    pub stack: String,
    /// The SSM parameter listing the stack's pipeline definitions (the template's generated
    /// region writes it and one parameter per version): what the CLI runs against.
    #[serde(default)]
    pub pipelines_param: String,
    /// Accounts without limits of their own get these (0: unlimited).
    #[serde(default)]
    pub default_monthly_allowance: u32,
    #[serde(default)]
    pub default_max_concurrent: u32,
    /// The state table's stream (what `audit redrive` reads again).
    #[serde(default)]
    pub state_stream: String,
    /// The queue the audit projector's stream mapping reports records it gave up on.
    #[serde(default)]
    pub projector_failures: String,
    /// Webhooks: the delivery queue (empty: the stack has no webhooks).
    #[serde(default)]
    pub webhook_queue: String,
    /// Webhooks: the SSM path under which each subscription's signing secrets are kept
    /// (`<path><subscription id>`).
    #[serde(default)]
    pub webhook_secrets: String,
    /// The stack's notification topic (the e-mail subscription), if any.
    #[serde(default)]
    pub notify_topic: String,
    /// The publish webhook, if the stack has one (`url` empty: none).
    #[serde(default)]
    pub publish_webhook: PublishWebhook,
    /// Webhooks may go to `http://` loopback receivers: the local stack only
    /// (`AllowLoopbackWebhooks`; in Lambda, loopback is the function itself).
    #[serde(default, deserialize_with = "flag")]
    pub allow_loopback_webhooks: bool,
}

/// A template parameter's boolean: `true`/`false` (a `!Sub` gives text).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    Ok(match B::deserialize(d)? {
        B::B(b) => b,
        B::S(s) => s.eq_ignore_ascii_case("true"),
    })
}

/// The template's publish webhook: a stack subscription to completions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishWebhook {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub secret_param: String,
}

fn default_approval_ttl() -> u64 {
    86_400
}
fn default_on_expiry() -> String {
    "fail".into()
}

impl StackConfig {
    pub fn parameter_name(stack: &str) -> String {
        format!("/shepherd/{stack}/config")
    }

    /// The gate policy new productions of `pipeline` get: its definition's gates, plus the
    /// stack's approval phases that are phases of it; `auto_approve` comes from the input.
    pub fn gate_policy(
        &self,
        pipelines: &Pipelines,
        pipeline: &Pipeline,
        auto_approve: bool,
    ) -> Result<GatePolicy, ConfigError> {
        let invalid = |name, problem| ConfigError::Invalid { name, problem };
        let (mut phases, acknowledge_before) = pipeline.gates();
        let own = pipeline.definition.phase_names();
        for p in self
            .approval_phases
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !pipelines.phase_names().contains(&p) {
                return Err(invalid(
                    "approval_phases",
                    format!("approval phase {p:?} is not a phase of any pipeline"),
                ));
            }
            if own.contains(&p) && !phases.iter().any(|x| x == p) {
                phases.push(p.to_string());
            }
        }
        let on_expiry = match self.approval_on_expiry.as_str() {
            "fail" => OnExpiry::Fail,
            "renew" => OnExpiry::Renew,
            other => {
                return Err(invalid(
                    "approval_on_expiry",
                    format!("{other:?}: expected fail or renew"),
                ));
            }
        };
        Ok(GatePolicy {
            required: pipeline.definition.required_gates(),
            phases,
            // A pipeline without an acknowledge_warnings gate is never held by warnings.
            acknowledge_before,
            auto_approve,
            ttl: self.approval_ttl_secs.max(1) as i64 * 1000,
            on_expiry,
        })
    }

    /// The limits of accounts that have none of their own.
    pub fn default_limits(&self) -> crate::domain::limits::Limits {
        let some = |n: u32| (n > 0).then_some(n);
        crate::domain::limits::Limits {
            monthly_allowance: some(self.default_monthly_allowance),
            max_concurrent: some(self.default_max_concurrent),
        }
    }
}

/// What a call asks an integration for (the domain's word; kept here for its users).
pub use crate::domain::CallKind;

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
    /// Its requests' timeout, sized for what it serves (an image model takes tens of
    /// seconds where chat takes a few); default: the stack's `ProviderTimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Request timeouts of some kinds of call, sized apart (`{"image": 90}`: an image
    /// model answers in tens of seconds, chat in a few); the rest: `timeout_seconds`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<CallKind, u32>,
}

impl Definition {
    /// Every request timeout it sets: its own, then each kind's.
    fn timeouts_set(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.timeout_seconds
            .map(|t| ("timeout_seconds".to_string(), t))
            .into_iter()
            .chain(
                self.timeouts
                    .iter()
                    .map(|(k, t)| (format!("timeouts.{}", k.as_str()), *t)),
            )
    }
}

/// The integration registry parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The model-selection chain: tried in this order.
    pub chain: Vec<String>,
    pub integrations: BTreeMap<String, Definition>,
    /// The scores at which an image's moderation raises a flag (`*=0.5,sexual=0.3`; see
    /// `domain::moderation`); absent: 0.5 for every category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_thresholds: Option<String>,
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
        for (id, d) in &r.integrations {
            if let Some((what, t)) = d.timeouts_set().find(|(_, t)| !(1..=900).contains(t)) {
                return Err(format!(
                    "{name}: integrations.{id}.{what} must be 1-900 (a phase's \
                     longest timeout), got {t}"
                ));
            }
        }
        r.thresholds()
            .map_err(|e| format!("{name}: moderation_thresholds: {e}"))?;
        Ok(r)
    }

    /// The moderation thresholds it sets.
    pub fn thresholds(&self) -> Result<crate::domain::moderation::Thresholds, String> {
        self.moderation_thresholds
            .as_deref()
            .unwrap_or_default()
            .parse()
    }

    /// The configured integrations serving `kind`, in chain order.
    pub fn chain_for(&self, kind: CallKind) -> Vec<(&str, &Definition)> {
        self.configured()
            .into_iter()
            .filter(|(_, d)| d.kinds.contains(&kind))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_with_thresholds_that_are_not_scores_is_refused_naming_them() {
        let text = |t: &str| {
            serde_json::json!({"chain": [], "integrations": {}, "moderation_thresholds": t})
                .to_string()
        };
        let r = Registry::parse("/s/integrations", &text("*=0.4,sexual=0.2")).unwrap();
        assert_eq!(r.thresholds().unwrap().of("sexual"), 0.2);
        assert_eq!(r.thresholds().unwrap().of("hate"), 0.4);
        let err = Registry::parse("/s/integrations", &text("sexual=high")).unwrap_err();
        assert!(
            err.starts_with("/s/integrations: moderation_thresholds: sexual=high"),
            "{err}"
        );
    }

    #[test]
    fn an_integration_may_size_its_own_timeout_within_lambdas() {
        let text = |t: u32| {
            serde_json::json!({"chain": ["images"], "integrations": {"images": {
                "base_url": "https://api.example.com", "secret_param": "/k",
                "kinds": ["image"], "timeout_seconds": t}}})
            .to_string()
        };
        let r = Registry::parse("/s/integrations", &text(120)).unwrap();
        assert_eq!(r.integrations["images"].timeout_seconds, Some(120));
        let err = Registry::parse("/s/integrations", &text(0)).unwrap_err();
        assert!(
            err.contains("integrations.images.timeout_seconds must be 1-900"),
            "{err}"
        );
        let per_kind = serde_json::json!({"chain": ["p"], "integrations": {"p": {
            "base_url": "https://api.example.com", "secret_param": "/k",
            "timeouts": {"image": 90, "chat": 1000}}}})
        .to_string();
        let err = Registry::parse("/s/integrations", &per_kind).unwrap_err();
        assert!(
            err.contains("integrations.p.timeouts.chat must be 1-900") && err.ends_with("1000"),
            "{err}"
        );
    }

    fn pipelines() -> std::sync::Arc<Pipelines> {
        let d = crate::pipeline::Definition::parse(
            "t.json",
            &serde_json::json!({"name": "t", "version": 1,
                "input": {"type": "object", "required": ["account"],
                          "properties": {"account": {"type": "string"}}},
                "phases": [{"name": "brief", "output": {}, "max_tries": 3,
                            "timeout_seconds": 30, "concurrency": 5}]})
            .to_string(),
        )
        .unwrap();
        std::sync::Arc::new(Pipelines::from_definitions(vec![d]).unwrap())
    }

    fn env() -> HashMap<String, String> {
        [
            ("SHEPHERD_STATE_TABLE", "s"),
            ("SHEPHERD_IDEMPOTENCY_TABLE", "i"),
            (
                "SHEPHERD_QUEUE_PREFIX",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/s-",
            ),
            ("SHEPHERD_INTEGRATIONS_PARAM", "/x/integrations"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn reads_the_queues_by_convention_and_defaults() {
        let c = Config::from_map(&env(), pipelines()).unwrap();
        assert_eq!(
            c.topology.queue("brief").unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/s-brief"
        );
        assert_eq!(
            c.topology.dlq("brief").unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/s-brief-dlq"
        );
        assert_eq!(
            c.topology.queue("nope").unwrap_err().to_string(),
            "configuration phase is invalid: \"nope\" is no phase of this stack's pipelines"
        );
        assert_eq!((c.max_receive_count, c.max_retries), (10, 5));
    }

    #[test]
    fn names_the_missing_or_bad_setting() {
        let mut e = env();
        e.remove("SHEPHERD_STATE_TABLE");
        assert_eq!(
            Config::from_map(&e, pipelines()).unwrap_err().to_string(),
            "configuration SHEPHERD_STATE_TABLE is not set"
        );
        let mut e = env();
        e.insert("SHEPHERD_MAX_RECEIVE_COUNT".into(), "five".into());
        assert!(
            Config::from_map(&e, pipelines())
                .unwrap_err()
                .to_string()
                .contains("SHEPHERD_MAX_RECEIVE_COUNT")
        );
        for bad in [
            "s-",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/",
            "a=https://x/y-",
        ] {
            let mut e = env();
            e.insert("SHEPHERD_QUEUE_PREFIX".into(), bad.into());
            let err = Config::from_map(&e, pipelines()).unwrap_err().to_string();
            assert!(err.contains("is not a queue URL prefix"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_stack_config_and_the_functions_share_one_topology() {
        let json = serde_json::json!({
            "state_table": "s", "idempotency_table": "i", "audit_table": "a",
            "queue_prefix": "https://sqs.eu-west-1.amazonaws.com/123456789012/s-",
        });
        let stack: StackConfig = serde_json::from_value(json).unwrap();
        let fns = Config::from_map(&env(), pipelines()).unwrap();
        let ops = stack.topology.with_phases(["brief"]);
        assert_eq!(ops.queues, fns.topology.queues);
        assert_eq!(ops.dlqs, fns.topology.dlqs);
    }
}
