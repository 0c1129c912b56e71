//! Function configuration, read once from the environment (in Lambda) or from the
//! template's `Environment.Variables` (in the local runtime): the same names either way.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {0} is not set")]
    Missing(&'static str),
    #[error("configuration {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// Everything a phase function needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_table: String,
    pub idempotency_table: String,
    /// Phase name -> queue URL.
    pub queues: BTreeMap<String, String>,
    /// Phase name -> dead-letter queue URL.
    pub dlqs: BTreeMap<String, String>,
    /// Must equal the queues' RedrivePolicy maxReceiveCount (both come from one template parameter).
    pub max_receive_count: u32,
    pub function_timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// The SSM parameter holding the integration registry (chain and definitions).
    pub integrations_param: String,
    pub provider_timeout: Duration,
    /// Consecutive errors that open an integration's circuit.
    pub integration_error_threshold: u32,
    /// How long an open circuit fails fast before one probe call.
    pub circuit_cooldown: Duration,
    pub secret_cache: Duration,
    pub outcome_ttl: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
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
        let max_receive_count = num("SHEPHERD_MAX_RECEIVE_COUNT", 5)? as u32;
        if max_receive_count == 0 {
            return Err(ConfigError::Invalid {
                name: "SHEPHERD_MAX_RECEIVE_COUNT",
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            state_table: get("SHEPHERD_STATE_TABLE")?,
            idempotency_table: get("SHEPHERD_IDEMPOTENCY_TABLE")?,
            queues: parse_map("SHEPHERD_QUEUES", &get("SHEPHERD_QUEUES")?)?,
            dlqs: parse_map("SHEPHERD_DLQS", &get("SHEPHERD_DLQS")?)?,
            max_receive_count,
            function_timeout: Duration::from_secs(num("SHEPHERD_FUNCTION_TIMEOUT_SECS", 60)?),
            retry_base: Duration::from_secs(num("SHEPHERD_RETRY_BASE_SECS", 5)?),
            retry_cap: Duration::from_secs(num("SHEPHERD_RETRY_CAP_SECS", 300)?),
            integrations_param: get("SHEPHERD_INTEGRATIONS_PARAM")?,
            provider_timeout: Duration::from_secs(num("SHEPHERD_PROVIDER_TIMEOUT_SECS", 20)?),
            integration_error_threshold: num("SHEPHERD_INTEGRATION_ERROR_THRESHOLD", 3)?.max(1)
                as u32,
            circuit_cooldown: Duration::from_secs(num("SHEPHERD_CIRCUIT_COOLDOWN_SECS", 30)?),
            secret_cache: Duration::from_secs(num("SHEPHERD_SECRET_CACHE_SECS", 300)?),
            outcome_ttl: Duration::from_secs(num("SHEPHERD_OUTCOME_TTL_DAYS", 14)? * 86_400),
        })
    }

    pub fn queue_url(&self, phase: &str) -> Result<&str, ConfigError> {
        self.queues
            .get(phase)
            .map(String::as_str)
            .ok_or_else(|| ConfigError::Invalid {
                name: "SHEPHERD_QUEUES",
                problem: format!("no queue for phase {phase}"),
            })
    }
}

/// `a=x,b=y` -> {a: x, b: y}
fn parse_map(name: &'static str, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    problem: format!("{pair:?} is not phase=url"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [
            ("SHEPHERD_STATE_TABLE", "s"),
            ("SHEPHERD_IDEMPOTENCY_TABLE", "i"),
            (
                "SHEPHERD_QUEUES",
                "brief=http://q/brief,script=http://q/script",
            ),
            ("SHEPHERD_DLQS", "brief=http://q/brief-dlq"),
            ("SHEPHERD_INTEGRATIONS_PARAM", "/x/integrations"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn reads_maps_and_defaults() {
        let c = Config::from_map(&env()).unwrap();
        assert_eq!(c.queue_url("script").unwrap(), "http://q/script");
        assert_eq!(c.max_receive_count, 5);
    }

    #[test]
    fn names_the_missing_or_bad_setting() {
        let mut e = env();
        e.remove("SHEPHERD_STATE_TABLE");
        assert_eq!(
            Config::from_map(&e).unwrap_err().to_string(),
            "configuration SHEPHERD_STATE_TABLE is not set"
        );
        let mut e = env();
        e.insert("SHEPHERD_MAX_RECEIVE_COUNT".into(), "five".into());
        assert!(
            Config::from_map(&e)
                .unwrap_err()
                .to_string()
                .contains("SHEPHERD_MAX_RECEIVE_COUNT")
        );
        let mut e = env();
        e.insert("SHEPHERD_QUEUES".into(), "brief".into());
        assert!(
            Config::from_map(&e)
                .unwrap_err()
                .to_string()
                .contains("not phase=url")
        );
    }
}
