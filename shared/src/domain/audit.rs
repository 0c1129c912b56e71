//! Audit events: recorded in the same write as the state change they describe.

use serde::{Deserialize, Serialize};

use super::Millis;
use super::error::vocabulary;

vocabulary! {
    /// Every kind of audit event Shepherd records.
    AuditKind {
        ProductionCreated => "production.created",
        ProductionCompleted => "production.completed",
        ProductionPaused => "production.paused",
        ProductionResumed => "production.resumed",
        ProductionEdited => "production.edited",
        ProductionCancelled => "production.cancelled",
        PhaseSucceeded => "phase.succeeded",
        PhaseRetryScheduled => "phase.retry_scheduled",
        PhaseHeld => "phase.held",
        HandoffLost => "phase.handoff_lost",
        PhaseDeadLettered => "phase.dead_lettered",
        PhaseFailed => "phase.failed",
        PhaseRetried => "phase.retried",
        PhaseRedispatched => "phase.redispatched",
        PhaseReconciled => "phase.reconciled",
        /// The phase handed its work to an external job and waits for its callback.
        PhaseWaiting => "phase.waiting",
        /// An external job's result (success) or failure report arrived by callback.
        CallbackReceived => "callback.received",
        /// An external job's deadline passed without a result: the phase failed.
        CallbackDeadline => "callback.deadline_passed",
        StepUnexpectedError => "task.step_unexpected_error",
        ApprovalRequested => "approval.requested",
        ApprovalApproved => "approval.approved",
        ApprovalRejected => "approval.rejected",
        /// An operator re-ran a failed, dead-lettered or paused production from a phase,
        /// with feedback (no approval was open).
        ProductionReworked => "production.reworked",
        ApprovalRenewed => "approval.renewed",
        ApprovalExpired => "approval.expired",
        WarningsRequested => "warnings.acknowledgement_requested",
        WarningsAcknowledged => "warnings.acknowledged",
        OverrideApplied => "override.applied",
        OverrideCleared => "override.cleared",
        ToolCallUnknown => "tool_call.unknown",
        ToolCallFailed => "tool_call.failed",
        ToolCallDeduped => "tool_call.deduped",
        ToolCallRejected => "tool_call.rejected",
        RoutingDecided => "routing.decided",
        McpDisconnected => "mcp.disconnected",
        DlqRedriven => "dlq.redriven",
        DlqDiscarded => "dlq.discarded",
        IntegrationEnabled => "integration.enabled",
        IntegrationDisabled => "integration.disabled",
        AccountAccessChanged => "account.access_changed",
        AccountAccessRefused => "account.access_refused",
        ScheduleCreated => "schedule.created",
        ScheduleDeleted => "schedule.deleted",
        SchedulePaused => "schedule.paused",
        ScheduleResumed => "schedule.resumed",
        ScheduleTriggered => "schedule.triggered",
        ScheduleBackfill => "schedule.backfill",
        /// A slot started a production (on time, caught up, held, backfilled).
        ScheduleFired => "schedule.fired",
        /// A slot that started nothing, with its reason.
        ScheduleMissed => "schedule.missed",
        /// An arriving item and what became of it (outcome success: it started a
        /// production; failure: its schema, mapping or the pipeline's input refused it).
        EventIngested => "event.ingested",
        /// An arriving item whose dedupe key was held: nothing started.
        EventDeduped => "event.deduped",
        /// An operator cleared an event's key and submitted it again.
        EventResubmitted => "event.resubmitted",
        ConnectorCreated => "connector.created",
        ConnectorDeleted => "connector.deleted",
        WatcherCreated => "watcher.created",
        WatcherDeleted => "watcher.deleted",
        WatcherEnabled => "watcher.enabled",
        WatcherDisabled => "watcher.disabled",
        /// A poll failed (the source's answer or its absence, redacted).
        WatcherError => "watcher.error",
    }
    other
    /// A kind recorded by a newer or older version.
    Other
}

impl AuditKind {
    /// Events that bring a production that had let its concurrency slot go back to work.
    pub fn revives(&self) -> bool {
        matches!(
            self,
            Self::PhaseRetried | Self::DlqRedriven | Self::OverrideApplied
        )
    }
}

/// How the audited step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Retry,
    Unknown,
    Anomaly,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Retry => "retry",
            Self::Unknown => "unknown",
            Self::Anomaly => "anomaly",
        }
    }
}

/// Recorded in the same write as the state change it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "type")]
    pub kind: AuditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub outcome: Outcome,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, outcome: Outcome, at: Millis) -> Self {
        Self {
            kind,
            phase: None,
            attempt: None,
            outcome,
            at,
            detail: String::new(),
        }
    }
    pub fn phase(mut self, phase: &str, attempt: u32) -> Self {
        self.phase = Some(phase.into());
        self.attempt = Some(attempt);
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}
