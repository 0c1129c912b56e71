//! Work that arrives by itself (F-01, F-02, F-13): the sources (inbound webhook
//! connectors; watchers), the events they produce and what became of each. Pure data; the
//! intake path is `ops::events`, item schemas and mappings `pipeline::intake`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Millis;

/// A kind of source whose items Shepherd knows the shape of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// GitHub webhooks (`X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`).
    Github,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
    /// `{type, timestamp, data}`.
    Standard,
    /// An Atom or RSS feed's entries (a watcher).
    Feed,
    /// A GitHub repository's issues carrying a label (a watcher).
    GithubIssues,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Standard => "standard",
            Self::Feed => "feed",
            Self::GithubIssues => "github_issues",
        }
    }

    /// Pushed to `POST /events/{connector}` (not polled).
    pub fn is_push(self) -> bool {
        matches!(self, Self::Github | Self::Standard)
    }
}

/// What became of an arriving item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Stored, its start not yet done (a crash here is finished by the sender's retry).
    Received,
    /// It started a production.
    Started,
    /// Its dedupe key was seen within the window: nothing started.
    Deduped,
    /// The source's filter (`when`) does not take it, or its event type starts nothing.
    Ignored,
    /// It broke its schema, its mapping, or the pipeline's input: nothing started.
    Failed,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Started => "started",
            Self::Deduped => "deduped",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
            format!("{s:?} is no event outcome (received, started, deduped, ignored, failed)")
        })
    }
}

/// One arriving item and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundEvent {
    pub id: String,
    /// `connector:<id>` or `watcher:<id>`.
    pub source: String,
    pub account: String,
    pub kind: SourceKind,
    pub event_type: String,
    pub dedupe_key: String,
    pub received_at: Millis,
    pub outcome: EventOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<String>,
    /// Why it failed or was ignored, naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event that holds its dedupe key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// The event an operator re-submitted as this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resubmitted_from: Option<String>,
    /// The item, redacted; `null` when it was over [`MAX_KEPT_PAYLOAD`] bytes.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The largest item kept whole with its event (bytes of JSON).
pub const MAX_KEPT_PAYLOAD: usize = 64 * 1024;
/// Consecutive failures of one source that raise its alarm.
pub const FAILURES_ALARM: u64 = 3;

/// What an admin writes to receive a sender's webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    pub name: String,
    pub account: String,
    /// `github` or `standard`.
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Input field -> JSON pointer into the item, or `{"value": ...}`.
    #[schema(value_type = Object)]
    pub mapping: BTreeMap<String, serde_json::Value>,
    /// JSON pointer -> value the item must have to start work (others are `ignored`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub when: BTreeMap<String, serde_json::Value>,
    /// Event types that start work (GitHub: `issues`; Standard Webhooks: the payload's
    /// `type`); others are acknowledged and `ignored`.
    pub events: Vec<String>,
    /// How long a dedupe key holds (60 s to 30 days; a day by default).
    #[serde(default = "default_window")]
    pub dedupe_window_seconds: u64,
}

fn default_window() -> u64 {
    86_400
}

impl ConnectorSpec {
    pub fn check(&self) -> Result<(), String> {
        super::input::id("name", &self.name)?;
        super::input::id("account", &self.account)?;
        if !self.kind.is_push() {
            return Err(format!(
                "kind {} is a watcher's; a connector is github or standard",
                self.kind.as_str()
            ));
        }
        if self.events.is_empty() {
            return Err("events is empty: name the event types that start work".into());
        }
        if !(60..=30 * 86_400).contains(&self.dedupe_window_seconds) {
            return Err(format!(
                "dedupe_window_seconds must be 60 to 2592000 (got {})",
                self.dedupe_window_seconds
            ));
        }
        Ok(())
    }
}

/// Counts kept per source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceStats {
    pub received: u64,
    pub started: u64,
    pub deduped: u64,
    pub ignored: u64,
    pub failed: u64,
    pub consecutive_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<Millis>,
}

/// A connector: where a sender posts (`POST /events/{id}`), and what its items start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Connector {
    pub id: String,
    #[serde(flatten)]
    pub spec: ConnectorSpec,
    /// The SSM parameter holding its signing secret.
    pub secret_param: String,
    pub created_at: Millis,
    pub created_by: String,
    #[serde(default)]
    pub stats: SourceStats,
}

impl Connector {
    pub fn source(&self) -> String {
        format!("connector:{}", self.id)
    }
}
