use serde::{Deserialize, Serialize};

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductionStatus {
    /// Created; its first phase is queued and not yet claimed.
    Queued,
    Running,
    AwaitingApproval,
    Paused,
    Failed,
    DeadLettered,
    Completed,
    Cancelled,
}

impl ProductionStatus {
    pub const ALL: [ProductionStatus; 8] = [
        Self::Queued,
        Self::Running,
        Self::AwaitingApproval,
        Self::Paused,
        Self::Failed,
        Self::DeadLettered,
        Self::Completed,
        Self::Cancelled,
    ];

    /// Settled: nothing happens without an operator.
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Paused => "paused",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    DeadLettered,
}

impl PhaseStatus {
    pub const ALL: [PhaseStatus; 6] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// Whether another try can help: decides between backoff, `failed` and the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 5xx, timeouts, throttling, 429: back off and try again.
    Retryable,
    /// Validation, content refusal, bad config: no retry can help.
    Permanent,
    /// A bug: the phase panicked.
    Unexpected,
}

/// The last error of a phase, kept on the production (the full history is in the audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseError {
    pub code: String,
    pub class: ErrorClass,
    pub detail: String,
    pub attempt: u32,
    pub at: Millis,
    /// The provider's HTTP status, when a provider answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
}

impl PhaseError {
    /// Details are cut so the hot item stays small; the audit keeps the same cut text.
    pub const MAX_DETAIL: usize = 300;

    pub fn new(code: impl Into<String>, class: ErrorClass, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if detail.len() > Self::MAX_DETAIL {
            let mut cut = Self::MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Self {
            code: code.into(),
            class,
            detail,
            attempt: 0,
            at: 0,
            provider_status: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseState {
    pub name: String,
    pub status: PhaseStatus,
    /// Bumps on operator retry, reject, redrive and reconcile; SQS redeliveries keep it.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// Errors seen by this phase over all its attempts.
    #[serde(default)]
    pub error_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<PhaseError>,
    /// Key of the phase's output item (outputs live apart from the hot state item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl PhaseState {
    pub fn pending(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: PhaseStatus::Pending,
            attempt: 0,
            queued_at: None,
            started_at: None,
            lease_until: None,
            finished_at: None,
            error_count: 0,
            last_error: None,
            output: None,
        }
    }
}

/// One run of a pipeline for one account. Never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Production {
    pub id: String,
    pub account: String,
    pub pipeline: String,
    pub status: ProductionStatus,
    /// Optimistic concurrency: every transition increments it.
    pub version: u64,
    pub phases: Vec<PhaseState>,
    pub trace_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What an operator may do now; every surface shows exactly this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    RetryPhase,
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::RetryPhase => "retry_phase",
            Self::Cancel => "cancel",
        }
    }
}

impl Production {
    pub fn phase(&self, name: &str) -> Option<&PhaseState> {
        self.phases.iter().find(|p| p.name == name)
    }

    pub(crate) fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    /// The phase an operator is looking at: the first one that has not succeeded.
    pub fn current_phase(&self) -> Option<&PhaseState> {
        self.phases
            .iter()
            .find(|p| p.status != PhaseStatus::Succeeded)
    }

    /// Derived from state alone; the state machine refuses anything not listed here.
    pub fn available_actions(&self) -> Vec<Action> {
        use ProductionStatus as S;
        match self.status {
            S::Queued | S::Running => vec![Action::Pause, Action::Cancel],
            S::AwaitingApproval => vec![Action::Pause, Action::Cancel],
            S::Paused => vec![Action::Resume, Action::Cancel],
            S::Failed | S::DeadLettered => vec![Action::RetryPhase, Action::Cancel],
            S::Completed | S::Cancelled => vec![],
        }
    }

    pub fn has_errors(&self) -> bool {
        self.phases.iter().any(|p| p.error_count > 0)
    }
}
