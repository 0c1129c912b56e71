//! Alarms: stored, deduplicated by type and subject (a repeat bumps `count` and
//! `last_seen`), with a severity; operators list, acknowledge and resolve them. A resolved
//! alarm that fires again reopens.

use serde::{Deserialize, Serialize};

use super::Millis;
use super::error::vocabulary;

vocabulary! {
    /// What an alarm is about.
    AlarmKind {
        SecretLeakDetected => "secret_leak_detected",
        DlqArrival => "dlq_arrival",
        ApprovalRenewed => "approval_renewed",
        /// An approval expired unanswered and, per `ApprovalOnExpiry: fail`, failed its
        /// production (F-07).
        ApprovalExpired => "approval_expired",
        IntegrationUnhealthy => "integration_unhealthy",
        ToolCallDeduped => "tool_call_deduped",
        ProductionWaiting => "production_waiting",
        /// A DLQ holds messages (CloudWatch, through the alarm topic).
        DlqNotEmpty => "dlq_not_empty",
        /// Productions whose phase made no progress within its lease (the worker stopped:
        /// a crash, out of memory, a timeout), per phase; the sweep re-dispatched them, and
        /// each leaves the alarm when the phase succeeds (F-05).
        ProductionStuck => "production_stuck",
        /// External jobs stopped heartbeating (per phase): the sweep started each again as
        /// its next attempt, a new job.
        JobSilent => "job_silent",
        /// An external job's deadline passed without a result: its phase failed.
        JobDeadlinePassed => "job_deadline_passed",
        /// A phase queue's oldest message is older than the stack allows: a phase stuck or
        /// starved (CloudWatch, through the alarm topic).
        QueueStuck => "queue_stuck",
        /// A webhook endpoint was disabled: it answered 410, or failed every delivery
        /// for days. Its events are no longer sent.
        WebhookDisabled => "webhook_disabled",
        /// A schedule's slots started nothing (downtime, paused, overlap, stale, over the
        /// cap, refused): its history says which and why.
        ScheduleMissed => "schedule_missed",
        /// A source's items keep failing (their schema, mapping or the pipeline's input).
        SourceFailing => "source_failing",
        /// A watcher's polls keep failing (warning), or it was disabled for it (critical).
        WatcherFailing => "watcher_failing",
        WatcherDisabled => "watcher_disabled",
        /// A phase panicked (or its handler failed unexpectedly): its production failed
        /// and waits for a fix and `retry` (F-04).
        PhaseUnexpectedError => "phase_unexpected_error",
        /// A function of the stack failed invocations (CloudWatch's `Errors`).
        FunctionErrors => "function_errors",
        /// A function of the stack was throttled (CloudWatch's `Throttles`).
        FunctionThrottled => "function_throttled",
        /// A stream consumer reads its stream minutes behind (`IteratorAge`).
        StreamBehind => "stream_behind",
    }
    other
    /// An alarm raised outside Shepherd's own detectors.
    Other
}

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
    #[serde(rename = "type")]
    pub kind: AlarmKind,
    /// What it is about: a production id, a queue, an integration.
    pub subject: String,
    /// The account of the production it is about; none for what belongs to the stack (a
    /// queue, an integration), which only the stack's operators see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub severity: Severity,
    pub status: AlarmStatus,
    pub count: u64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// Already redacted.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<String>,
    /// What is affected now (productions waiting, ...), for alarms that track it: a member
    /// leaves when it recovers, and the alarm resolves when none is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
}

impl Alarm {
    /// `<type>#<subject>`: how operators name an alarm.
    pub fn id(&self) -> String {
        format!("{}#{}", self.kind, self.subject)
    }
}

impl Raise {
    /// An occurrence; its detail is redacted (an alarm may quote what leaked).
    pub fn new(
        kind: AlarmKind,
        subject: impl Into<String>,
        severity: Severity,
        detail: impl AsRef<str>,
    ) -> Self {
        Self {
            kind,
            subject: subject.into(),
            account: None,
            severity,
            detail: super::redact::redact(detail.as_ref()).text,
            affected: vec![],
        }
    }

    /// An occurrence about one production, seen by its account.
    pub fn production(
        kind: AlarmKind,
        production: &super::Production,
        severity: Severity,
        detail: impl AsRef<str>,
    ) -> Self {
        let mut raise = Self::new(kind, &production.id, severity, detail);
        raise.account = Some(production.account.clone());
        raise
    }

    /// Adds `member` to what the alarm affects (see [`Alarm::affected`]).
    pub fn affecting(mut self, member: impl Into<String>) -> Self {
        self.affected.push(member.into());
        self
    }
}

/// One alarm occurrence to record (made with [`Raise::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise {
    pub kind: AlarmKind,
    pub subject: String,
    /// See [`Alarm::account`].
    pub account: Option<String>,
    pub severity: Severity,
    pub detail: String,
    /// Members of what the alarm affects, added to its set.
    pub affected: Vec<String>,
}
