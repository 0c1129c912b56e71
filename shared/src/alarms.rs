//! Alarms: stored, deduplicated by type and subject (a repeat bumps `count` and
//! `last_seen`), with a severity; operators list, acknowledge and resolve them. A resolved
//! alarm that fires again reopens.

use serde::{Deserialize, Serialize};

use crate::domain::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    Open,
    Acknowledged,
    Resolved,
}

/// A condition worth an operator's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// `secret_leak_detected`, `dlq_arrival`, `approval_renewed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// What it is about: a production id, a queue, an integration.
    pub subject: String,
    pub severity: Severity,
    pub status: AlarmStatus,
    pub count: u64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// Already redacted.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<String>,
}

impl Alarm {
    /// `<type>#<subject>`: how operators name an alarm.
    pub fn id(&self) -> String {
        format!("{}#{}", self.kind, self.subject)
    }
}

/// One alarm occurrence to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise {
    pub kind: String,
    pub subject: String,
    pub severity: Severity,
    pub detail: String,
}
