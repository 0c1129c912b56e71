use serde::{Deserialize, Serialize};

use super::{Action, ErrorClass, ErrorCode, Millis};

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

    /// The status named `s` (as `as_str` writes it), or an error listing the valid names.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown status {s:?}: expected one of {}", names.join(", "))
            })
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
    /// Jumped over by an admin override; counts as done.
    Skipped,
}

impl PhaseStatus {
    pub const ALL: [PhaseStatus; 7] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::DeadLettered,
        Self::Skipped,
    ];

    /// Nothing more will happen to this phase unless an operator acts.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Skipped => "skipped",
        }
    }
}

/// The last error of a phase, kept on the production (the full history is in the audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseError {
    pub code: ErrorCode,
    pub class: ErrorClass,
    pub detail: String,
    pub attempt: u32,
    pub at: Millis,
    /// The provider's HTTP status, when a provider answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    /// The integration (registry id) that answered with it, when one was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
}

impl PhaseError {
    /// The error a run returned, as it is kept.
    pub fn from_step(e: &super::StepError) -> Self {
        let mut error = Self::new(e.code.clone(), e.class, &e.detail);
        error.provider_status = e.provider_status;
        error.integration = e.integration.clone();
        error
    }

    /// Details are redacted, then cut so the hot item stays small; the
    /// audit keeps the same cut text.
    pub const MAX_DETAIL: usize = 300;

    pub fn new(code: impl Into<ErrorCode>, class: ErrorClass, detail: impl Into<String>) -> Self {
        let detail = super::redact::excerpt(&detail.into(), Self::MAX_DETAIL);
        Self {
            code: code.into(),
            class,
            detail,
            attempt: 0,
            at: 0,
            provider_status: None,
            integration: None,
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
    /// This attempt's errors that were retried: the retry budget counts these.
    #[serde(default)]
    pub retries: u32,
    /// This attempt's waits (rate limits, open circuits, disabled providers): never counted
    /// against the budget; they pace the next wait.
    #[serde(default)]
    pub holds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<PhaseError>,
    /// Key of the phase's output item (outputs live apart from the hot state item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// An operator's feedback from a reject, given to the phase's next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The external job this attempt waits for (`Running` without a worker): its callback
    /// token's hash, its heartbeats and deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Wait>,
}

/// A phase attempt waiting for an external job's callback. The phase's lease is the next
/// heartbeat's deadline (never past `deadline`): a missed heartbeat is an expired lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    /// The job's call key in the ledger, where the callback records its result.
    pub job: String,
    /// Hex SHA-256 of the callback token (the token itself is never stored).
    pub token_sha256: String,
    pub since: Millis,
    /// The job fails for good past this.
    pub deadline: Millis,
    /// A heartbeat (or the result) is due this often.
    pub heartbeat_ms: Millis,
    #[serde(default)]
    pub heartbeats: u32,
    /// When the result arrived (the phase runs again to commit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<Millis>,
}

impl PhaseState {
    /// One sentence on where the phase is and, when it broke, which layer broke (the
    /// input, the output contract, the phase's code, a provider, an MCP server, source
    /// control, configuration, the engine) and at which integration: the API's and the
    /// CLI's `status_message`.
    pub fn status_message(&self) -> String {
        let attempt = self.attempt.max(1);
        let broke = |e: &PhaseError| {
            let at = e
                .integration
                .as_deref()
                .map(|i| format!(" at integration {i}"))
                .unwrap_or_default();
            let status = e
                .provider_status
                .map(|s| format!(" (HTTP {s})"))
                .unwrap_or_default();
            format!(
                "{} broke{at}{status}: {}: {}",
                e.code.layer(),
                e.code,
                e.detail
            )
        };
        match (self.status, &self.last_error) {
            (PhaseStatus::Pending, _) => "not started".into(),
            (PhaseStatus::Queued, None) => format!("queued (attempt {attempt})"),
            (PhaseStatus::Queued, Some(e)) => {
                format!("queued for another try (attempt {attempt}); {}", broke(e))
            }
            (PhaseStatus::Running, _) if self.waiting.is_some() => {
                let w = self.waiting.as_ref().expect("matched");
                match w.arrived_at {
                    Some(_) => format!(
                        "the job's result arrived (attempt {attempt}); it is committed when the production runs"
                    ),
                    None => format!(
                        "waiting for its job's callback (attempt {attempt}, {} heartbeat(s), deadline {})",
                        w.heartbeats,
                        time::OffsetDateTime::from_unix_timestamp(w.deadline / 1000)
                            .ok()
                            .and_then(|t| t
                                .format(&time::format_description::well_known::Rfc3339)
                                .ok())
                            .unwrap_or_else(|| w.deadline.to_string())
                    ),
                }
            }
            (PhaseStatus::Running, None) => format!("running (attempt {attempt})"),
            (PhaseStatus::Running, Some(e)) => {
                format!("running (attempt {attempt}); last try: {}", broke(e))
            }
            (PhaseStatus::Succeeded, _) => format!("succeeded on attempt {attempt}"),
            (PhaseStatus::Skipped, _) => "skipped by an operator".into(),
            (PhaseStatus::Failed, Some(e)) => format!("failed: {}", broke(e)),
            (PhaseStatus::DeadLettered, Some(e)) => format!("dead-lettered: {}", broke(e)),
            (PhaseStatus::Failed, None) => "failed".into(),
            (PhaseStatus::DeadLettered, None) => "dead-lettered".into(),
        }
    }

    /// Running without a worker: its external job has not reported yet.
    pub fn is_waiting(&self) -> bool {
        self.status == PhaseStatus::Running
            && self
                .waiting
                .as_ref()
                .is_some_and(|w| w.arrived_at.is_none())
    }

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
            retries: 0,
            holds: 0,
            last_error: None,
            output: None,
            feedback: None,
            waiting: None,
        }
    }
}

/// What a gate waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    #[default]
    Approval,
    Warnings,
}

impl GateKind {
    pub fn is_approval(&self) -> bool {
        *self == Self::Approval
    }
}

/// What happens when an approval is not given in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// The gated phase fails (`approval_expired`); an operator retries or cancels.
    Fail,
    /// A new approval window opens and operators are alerted.
    Renew,
}

/// How a production's approval gates behave, fixed when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Phases after which the production waits for approval.
    pub phases: Vec<String>,
    /// The phase that may not start while warnings are unacknowledged (publish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_before: Option<String>,
    /// Skip every gate (an errored phase still stops the production).
    pub auto_approve: bool,
    /// Approval gates `auto_approve` does not skip (the definition requires them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// How long an approval stays open; every approval expires.
    pub ttl: Millis,
    pub on_expiry: OnExpiry,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            phases: vec![],
            // A pipeline's publishing phase is called `publish` by convention; a pipeline
            // without one is never held.
            acknowledge_before: Some("publish".into()),
            auto_approve: false,
            required: vec![],
            ttl: 24 * 3_600_000,
            on_expiry: OnExpiry::Fail,
        }
    }
}

/// An open approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// What the gate waits for: an approval (approve / reject), or an acknowledgement of
    /// the production's warnings.
    #[serde(default, skip_serializing_if = "GateKind::is_approval")]
    pub kind: GateKind,
    /// The phase the gate follows.
    pub phase: String,
    pub attempt: u32,
    pub requested_at: Millis,
    pub expires_at: Millis,
    #[serde(default)]
    pub renewals: u32,
}

fn first_version() -> u32 {
    1
}

/// Which definition a production runs: a pipeline's name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineVersion {
    pub name: String,
    pub version: u32,
}

impl PipelineVersion {
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

/// One run of a pipeline for one account. Never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Production {
    pub id: String,
    pub account: String,
    pub pipeline: String,
    /// The version of the pipeline's definition it started on, and runs to the end on.
    #[serde(default = "first_version")]
    pub pipeline_version: u32,
    pub status: ProductionStatus,
    /// Optimistic concurrency: every transition increments it.
    pub version: u64,
    pub phases: Vec<PhaseState>,
    pub trace_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default)]
    pub gates: GatePolicy,
    /// The open approval, while `awaiting_approval` (kept while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The admin override that last changed this production's course (shown as a badge
    /// until an admin clears it).
    #[serde(default, deserialize_with = "override_mark")]
    pub overridden: Option<OverrideMark>,
    /// Bumped by edit and reject: phases' inputs changed, so their tool calls are new calls.
    #[serde(default)]
    pub revision: u32,
    /// Flags raised by phases' outputs (`<phase>: <warning>`): the production proceeds, but
    /// `gates.acknowledge_before` waits until an operator acknowledges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings_acknowledged_at: Option<Millis>,
    /// When the recovery sweep should look at this production (the sparse `by_due` index):
    /// set while an operator's dispatch is unclaimed or an approval is open, never on the
    /// hot path of phase hand-offs (those are recovered by SQS redelivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
}

/// Who overrode a production's course, when, what the override did and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideMark {
    /// The admin (the audit's actor); stamped when the override is committed.
    pub by: String,
    pub at: Millis,
    /// What it did: `skipped the approval gate at script`, `jumped to voice`.
    pub what: String,
    pub reason: String,
}

/// `overridden` as stored before it kept who, when and why: `true` became this mark.
fn override_mark<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<OverrideMark>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Flag(bool),
        Mark(Option<OverrideMark>),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Flag(false) => None,
        Stored::Flag(true) => Some(OverrideMark {
            by: "unknown".into(),
            at: 0,
            what: "overridden".into(),
            reason: "recorded before overrides kept their reason (see the audit)".into(),
        }),
        Stored::Mark(m) => m,
    })
}

/// Where a phase's output is stored, per attempt (outputs live apart from the hot item).
pub fn output_key(phase: &str, attempt: u32) -> String {
    format!("O#{phase}#{attempt}")
}

impl Production {
    pub fn phase(&self, name: &str) -> Option<&PhaseState> {
        self.phases.iter().find(|p| p.name == name)
    }

    pub(crate) fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    /// The phase an operator is looking at: the gated one while awaiting approval, else
    /// the first one not done.
    pub fn current_phase(&self) -> Option<&PhaseState> {
        if let Some(a) = &self.approval {
            return self.phase(&a.phase);
        }
        self.phases.iter().find(|p| !p.status.is_done())
    }

    /// Derived from state alone; the state machine refuses anything not listed here.
    pub fn available_actions(&self) -> Vec<Action> {
        let mut actions = self.course_actions();
        if self.overridden.is_some() {
            actions.push(Action::ClearOverride);
        }
        actions
    }

    /// What the status allows.
    fn course_actions(&self) -> Vec<Action> {
        use Action as A;
        use ProductionStatus as S;
        match self.status {
            S::Queued | S::Running => vec![A::Pause, A::Cancel],
            S::AwaitingApproval
                if self
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.kind == GateKind::Warnings) =>
            {
                vec![
                    A::AcknowledgeWarnings,
                    A::Pause,
                    A::Edit,
                    A::Cancel,
                    A::Override,
                ]
            }
            S::AwaitingApproval => vec![
                A::Approve,
                A::Reject,
                A::Pause,
                A::Edit,
                A::Cancel,
                A::Override,
            ],
            S::Paused => vec![A::Resume, A::Reject, A::Edit, A::Cancel, A::Override],
            S::Failed | S::DeadLettered => {
                vec![A::RetryPhase, A::Reject, A::Edit, A::Cancel, A::Override]
            }
            S::Completed | S::Cancelled => vec![],
        }
    }

    /// As [`Production::available_actions`] at `now`: a running phase whose lease has
    /// expired (its worker stopped) may also be retried, without waiting for the sweep.
    pub fn available_actions_at(&self, now: super::Millis) -> Vec<Action> {
        let mut actions = self.available_actions();
        let waits = matches!(
            self.status,
            ProductionStatus::Running | ProductionStatus::Paused
        ) && self.phases.iter().any(PhaseState::is_waiting);
        if (self.expired_lease(now).is_some() || waits) && !actions.contains(&Action::RetryPhase) {
            actions.insert(0, Action::RetryPhase);
        }
        actions
    }

    /// The running phase whose lease expired by `now`, while the production runs.
    pub fn expired_lease(&self, now: super::Millis) -> Option<&PhaseState> {
        let runs = matches!(
            self.status,
            ProductionStatus::Queued | ProductionStatus::Running
        );
        self.phases.iter().find(|ph| {
            runs && ph.status == PhaseStatus::Running && ph.lease_until.is_some_and(|l| l <= now)
        })
    }

    pub fn has_errors(&self) -> bool {
        self.phases.iter().any(|p| p.error_count > 0)
    }
}
