//! The shapes of the API's answers, for its OpenAPI description (`/openapi.json`,
//! `docs/openapi.json`). The routes answer with the operations' own types serialised; these
//! say which fields a client may rely on (extra fields may appear). The fuzzer in CI checks
//! every answer against them, so a shape that drifts from the code fails there.

use serde_json::{Map, Value};
use shepherd::ops::DlqEntry;
use utoipa::{IntoResponses, ToSchema};

/// Every error: a code to branch on, a message for a person, the request's id for the log.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The request's id (also the `x-request-id` header); quote it when reporting.
    pub request_id: String,
    /// 409 `conflict`: the actions the production allows now.
    pub available: Option<Vec<String>>,
}

/// What went wrong, to branch on.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IdempotencyKeyReused,
    TooLarge,
    LimitReached,
    Unavailable,
}

/// A production as lists and actions answer it.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Production {
    pub id: String,
    pub account: String,
    pub pipeline: String,
    pub pipeline_version: u32,
    /// queued, running, awaiting_approval, paused, completed, failed, cancelled, dead_lettered.
    pub status: String,
    /// The write version (optimistic concurrency).
    pub version: u64,
    pub phases: Vec<Phase>,
    pub trace_id: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// What an operator may do now (`POST /productions/{id}/actions/{action}`).
    pub available_actions: Vec<String>,
    /// What an operator must know first, in one sentence.
    pub summary: String,
    pub revision: u32,
    /// The admin override that last changed its course, until an admin clears it.
    pub overridden: Option<Override>,
    /// The open approval or warnings gate.
    #[schema(value_type = Option<Object>)]
    pub approval: Option<Map<String, Value>>,
}

/// Who overrode a production's course, when (epoch ms), what it did and why.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Override {
    pub by: String,
    pub at: i64,
    pub what: String,
    pub reason: String,
}

/// One phase of a production.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Phase {
    pub name: String,
    /// pending, queued, running, succeeded, failed, skipped, ...
    pub status: String,
    pub attempt: u32,
    /// The phase's state in words, with its last error's integration and code.
    pub status_message: String,
}

/// A production with its outputs and its artifacts' download links.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct ProductionDetail {
    #[serde(flatten)]
    pub production: Production,
    /// Each phase's output, by phase.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    #[schema(value_type = Vec<Object>)]
    pub artifacts: Vec<Value>,
}

/// A page: the items, and `next_cursor` to pass back as `?cursor=` (null on the last).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProductionsPage {
    pub productions: Vec<Production>,
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Approval {
    pub production_id: String,
    #[schema(value_type = Option<Object>)]
    pub approval: Option<Map<String, Value>>,
    pub summary: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApprovalsPage {
    pub approvals: Vec<Approval>,
    pub next_cursor: Option<String>,
}

/// Audit events, oldest first within a production, by time in a window.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventsPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditEvent {
    /// The event type, e.g. `production.created`, `phase.succeeded`.
    pub event_type: String,
    pub production_id: Option<String>,
    pub trace_id: Option<String>,
    pub account: Option<String>,
    pub outcome: String,
    /// Who did it: an identity, or the system.
    pub actor: String,
    /// Epoch milliseconds.
    pub at: i64,
    pub phase: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Alarm {
    /// `<type>#<subject>`, for `POST /alarms/{id}/{ack|resolve}`.
    pub id: String,
    #[schema(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub severity: String,
    /// open, acknowledged, resolved.
    pub status: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub detail: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlarmsPage {
    pub alarms: Vec<Alarm>,
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AlarmChanged {
    pub id: String,
    pub status: String,
}

/// DLQ messages of the caller's account's productions.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DlqMessages {
    pub messages: Vec<DlqEntry>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DlqMessage {
    pub message: DlqEntry,
    pub production: Option<Production>,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Discarded {
    pub discarded: DlqEntry,
}

/// What a redrive or resubmit moved.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct RedriveReport {
    /// Each message moved: `[message id, production id, phase or null]`.
    #[schema(value_type = Vec<Vec<Option<String>>>)]
    pub moved: Vec<Value>,
    pub skipped: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Pipelines {
    pub pipelines: Vec<PipelineVersion>,
}

/// A pipeline version the stack runs or still has productions on.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PipelineVersion {
    pub name: String,
    pub version: u32,
    pub latest: bool,
    pub default: bool,
    pub deployed: bool,
    pub description: String,
    #[schema(value_type = Vec<Object>)]
    pub phases: Vec<Value>,
    pub editable: Vec<String>,
    /// Its productions not yet finished.
    pub open: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Integrations {
    pub integrations: Vec<Integration>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Integration {
    pub id: String,
    /// Its place in the chain (0 first).
    pub position: u64,
    pub base_url: String,
    pub kinds: Vec<String>,
    /// healthy, degraded, unavailable, disabled.
    pub status: String,
    #[schema(value_type = Object)]
    pub health: Value,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

/// A webhook subscription (never its secret).
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Webhook {
    pub id: String,
    pub account: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    /// enabled, disabled.
    pub state: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A new subscription with its signing secret, shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
#[derive(serde::Serialize)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub subscription: Webhook,
    pub secret: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Rotated {
    pub id: String,
    pub secret: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// A webhook delivery and its attempts.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Delivery {
    pub id: String,
    pub subscription: String,
    #[schema(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub created_at: i64,
    /// pending, delivered, failed, ...
    pub state: String,
    pub attempts_started: u32,
    pub due: i64,
}

/// What a replay queued again.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Replayed {
    pub resent: Vec<String>,
    /// More failed deliveries remain (replay again).
    pub more: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeliveriesPage {
    pub deliveries: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

/// `status` for everyone; `checks` only for a caller with a token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// ok, degraded.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub checks: Option<Value>,
}

/// An account's limits and what it uses now.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AccountUsage {
    pub account: String,
    /// `YYYY-MM`.
    pub month: String,
    pub started_this_month: u32,
    #[schema(value_type = Object)]
    pub own: Value,
    #[schema(value_type = Object)]
    pub effective: Value,
    /// Its productions running now.
    pub active: Vec<String>,
}

/// The arguments of an action, by action: reject `{feedback, phase?}`, edit `{changes}`,
/// override `{reason, skip_gate | jump_to, outputs?}` (`outputs`: phase name to the output
/// of a phase the jump skips, when a later phase reads it), clear_override `{reason}`; the
/// others take none.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ActionArguments {
    pub feedback: Option<String>,
    pub phase: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub changes: Option<Value>,
    pub reason: Option<String>,
    pub skip_gate: Option<bool>,
    pub jump_to: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
}

/// Past the API's throttling (API Gateway's answer, `{"message": "Too Many Requests"}`),
/// or, starting a production, the account's limit (an [`ErrorBody`] `limit_reached`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TooManyRequests {
    pub message: String,
    pub code: Option<String>,
    pub request_id: Option<String>,
}

/// What every route that takes a token may answer beyond its own.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Common {
    /// No or an unknown bearer token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Throttled: past the stage's rate or burst (see `TooManyRequests`); retry later.
    #[response(status = 429)]
    Throttled(TooManyRequests),
    /// The stack's store or configuration is unavailable; try again.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The request is malformed (query, body or path); the message names the problem.
#[derive(IntoResponses)]
#[response(status = 400)]
#[allow(dead_code)]
pub struct Invalid(ErrorBody);

/// The caller's role may not do this.
#[derive(IntoResponses)]
#[response(status = 403)]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// No such thing in the caller's account (another account's is not found too).
#[derive(IntoResponses)]
#[response(status = 404)]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// Not available now (a 409 `conflict` lists the actions that are), or a concurrent change.
#[derive(IntoResponses)]
#[response(status = 409)]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// The body is over the API's limit.
#[derive(IntoResponses)]
#[response(status = 413)]
#[allow(dead_code)]
pub struct TooLarge(ErrorBody);

/// The actions on a production (`POST /productions/{id}/actions/{action}`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ActionName {
    Pause,
    Resume,
    RetryPhase,
    Approve,
    Reject,
    Edit,
    Cancel,
    Override,
    ClearOverride,
    AcknowledgeWarnings,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AnswerName {
    Approve,
    Reject,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AlarmAction {
    Ack,
    Resolve,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MessageActionName {
    Resubmit,
    Discard,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum WebhookVerb {
    Rotate,
    Test,
    Replay,
}

/// What a DLQ message's action answers: resubmit, what moved; discard, the message.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum MessageActed {
    Resubmitted(RedriveReport),
    Discarded(Discarded),
}

/// What `test` (the queued delivery) and `replay` (what was queued again) answer.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Queued {
    Test(Delivery),
    Replay(Replayed),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SchedulesPage {
    pub schedules: Vec<shepherd::domain::schedule::Schedule>,
    pub next_cursor: Option<String>,
}

/// What `POST /schedules/{id}/trigger` answers: the schedule and the production started.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Triggered {
    pub schedule: shepherd::domain::schedule::Schedule,
    pub production: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InboundPage {
    pub events: Vec<shepherd::domain::events::InboundEvent>,
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Connectors {
    pub connectors: Vec<shepherd::domain::events::Connector>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Watchers {
    pub watchers: Vec<shepherd::domain::events::Watcher>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WatchKinds {
    /// The engine's own kinds.
    pub built_in: Vec<String>,
    /// The kinds the stack's pipeline crates add.
    pub kinds: Vec<shepherd::pipeline::watch::DeclaredKind>,
}
