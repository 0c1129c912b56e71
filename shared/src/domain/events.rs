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
    /// A schedule's slots (each one an event, fired or missed).
    Schedule,
    /// A watcher kind a pipeline crate adds (the watcher names it).
    Custom,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Standard => "standard",
            Self::Feed => "feed",
            Self::GithubIssues => "github_issues",
            Self::Schedule => "schedule",
            Self::Custom => "custom",
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
    /// A schedule's slot that was not fired (its reason in `error`).
    Missed,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Started => "started",
            Self::Deduped => "deduped",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
            format!(
                "{s:?} is no event outcome (received, started, deduped, ignored, failed, missed)"
            )
        })
    }
}

/// One arriving item and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundEvent {
    pub id: String,
    /// `connector:<id>`, `watcher:<id>` or `schedule:<id>`.
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

/// Consecutive failed polls after which a watcher raises a warning alarm, and after which
/// it is disabled (a critical alarm) until an operator enables it again.
pub const WATCHER_WARN_AFTER: u32 = 3;
pub const WATCHER_DISABLE_AFTER: u32 = 6;

/// What an admin writes to watch a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatcherSpec {
    pub name: String,
    pub account: String,
    /// `feed` (Atom or RSS), `github_issues`, or a kind the stack's pipeline crates add
    /// (`shepherd watcher kinds` lists them, with the params each takes).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Input field -> JSON pointer into the item, or `{"value": ...}`.
    #[schema(value_type = Object)]
    pub mapping: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub when: BTreeMap<String, serde_json::Value>,
    /// `feed`: the feed's URL (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `github_issues`: `owner/name`, and the label an issue must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A pipeline crate's kind: what its params schema asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
    /// How often it polls (1 to 1440 minutes; 5 by default).
    #[serde(default = "default_every")]
    pub every_minutes: u32,
    /// How long an item's dedupe key holds (60 s to 30 days; 30 days by default).
    #[serde(default = "default_watch_window")]
    pub dedupe_window_seconds: u64,
}

fn default_every() -> u32 {
    5
}
fn default_watch_window() -> u64 {
    30 * 86_400
}

impl WatcherSpec {
    pub fn check(&self) -> Result<(), String> {
        super::input::id("name", &self.name)?;
        super::input::id("account", &self.account)?;
        if !(1..=1440).contains(&self.every_minutes) {
            return Err(format!(
                "every_minutes must be 1 to 1440 (got {})",
                self.every_minutes
            ));
        }
        if !(60..=30 * 86_400).contains(&self.dedupe_window_seconds) {
            return Err(format!(
                "dedupe_window_seconds must be 60 to 2592000 (got {})",
                self.dedupe_window_seconds
            ));
        }
        let fields = (&self.url, &self.repository, &self.label, &self.params);
        match (self.kind.as_str(), fields) {
            ("feed", (Some(_), None, None, None)) => Ok(()),
            ("feed", _) => {
                Err("a feed watcher has a url (and no repository, label or params)".into())
            }
            ("github_issues", (None, Some(repo), Some(label), None)) => {
                let ok = repo.split_once('/').is_some_and(|(o, n)| {
                    !o.is_empty()
                        && !n.is_empty()
                        && repo
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
                });
                if !ok {
                    return Err(format!("repository {repo:?} is not owner/name"));
                }
                super::input::text("label", label, 50)
            }
            ("github_issues", _) => Err(
                "a github_issues watcher has a repository and a label (and no url or params)"
                    .into(),
            ),
            (k @ ("github" | "standard" | "schedule" | "custom"), _) => Err(format!(
                "kind {k} is not a watcher's: a watcher is feed, github_issues or a kind the \
                 stack's pipeline crates add"
            )),
            (k, (None, None, None, Some(serde_json::Value::Object(_)))) => {
                super::input::id("kind", k)
            }
            (k, _) => Err(format!(
                "a {k} watcher has params (an object, as its kind's schema asks) and no url, \
                 repository or label"
            )),
        }
    }

    /// The kind of source its events come from.
    pub fn source_kind(&self) -> SourceKind {
        match self.kind.as_str() {
            "feed" => SourceKind::Feed,
            "github_issues" => SourceKind::GithubIssues,
            _ => SourceKind::Custom,
        }
    }
}

/// Enabled, or disabled after failing (or by an operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatcherState {
    Enabled,
    Disabled,
}

/// Where a watcher is in its source: committed with the starts it causes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchCursor {
    /// The source's validator of its last answer (`If-None-Match` on the next poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The items in the source at the last poll (feed entry ids, issue numbers): an item
    /// not among them is new.
    #[serde(default)]
    pub seen: Vec<String>,
    /// Whether the first poll is done (it records what is there without starting it).
    #[serde(default)]
    pub primed: bool,
}

/// A watcher and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Watcher {
    pub id: String,
    #[serde(flatten)]
    pub spec: WatcherSpec,
    pub state: WatcherState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub cursor: WatchCursor,
    pub consecutive_errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<Millis>,
    pub next_poll_at: Millis,
    pub created_at: Millis,
    pub created_by: String,
    pub version: u64,
    #[serde(default)]
    pub stats: SourceStats,
}

impl Watcher {
    pub fn source(&self) -> String {
        format!("watcher:{}", self.id)
    }
}

/// What a failed poll does to a watcher: its count, and whether to warn or disable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    Count,
    Warn,
    Disable,
}

/// The consequence of one more consecutive failure, from the count before it.
pub fn after_error(consecutive_before: u32) -> AfterError {
    match consecutive_before + 1 {
        n if n >= WATCHER_DISABLE_AFTER => AfterError::Disable,
        n if n >= WATCHER_WARN_AFTER => AfterError::Warn,
        _ => AfterError::Count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fields: serde_json::Value) -> WatcherSpec {
        let mut v = serde_json::json!({"name": "w", "account": "acme", "mapping": {"t": "/title"}});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_watcher_has_the_fields_its_kind_takes_and_a_crates_kind_takes_params() {
        let ok = |f| spec(f).check();
        ok(serde_json::json!({"kind": "feed", "url": "https://x.example/f"})).unwrap();
        ok(serde_json::json!({"kind": "github_issues", "repository": "acme/w", "label": "go"}))
            .unwrap();
        let custom = spec(serde_json::json!({"kind": "json_feed", "params": {"url": "u"}}));
        custom.check().unwrap();
        assert_eq!(custom.source_kind(), SourceKind::Custom);
        let e = ok(serde_json::json!({"kind": "feed", "params": {"url": "u"}})).unwrap_err();
        assert!(e.starts_with("a feed watcher has a url"), "{e}");
        let e =
            ok(serde_json::json!({"kind": "json_feed", "url": "https://x.example"})).unwrap_err();
        assert!(e.starts_with("a json_feed watcher has params"), "{e}");
        let e = ok(serde_json::json!({"kind": "github", "params": {}})).unwrap_err();
        assert!(e.starts_with("kind github is not a watcher's"), "{e}");
        let e = ok(serde_json::json!({"kind": "json_feed", "params": [1]})).unwrap_err();
        assert!(e.contains("has params (an object"), "{e}");
    }
}
