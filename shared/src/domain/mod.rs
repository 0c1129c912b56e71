//! The domain: productions, phases and their rules. Pure: no AWS, no I/O, no clock.
//!
//! | rule | file |
//! |---|---|
//! | what changes a production (`decide`) | `decide/` |
//! | what to do with a delivered message or an errored run | `delivery.rs` |
//! | who may do what, who sees what | `authz.rs` |
//! | the operator's verbs | `act.rs` |
//! | error codes and classes, audit kinds, alarm kinds | `error.rs`, `audit.rs`, `alarms.rs` |
//! | an integration's health and circuit | `health.rs` |
//! | account limits | `limits.rs` |
//! | what an account may reach outside (repositories, bases, branches, token) | `access.rs` |
//! | artifacts' content-addressed keys | `artifacts.rs` |
//! | safety flags from a moderation API's scores | `moderation.rs` |

pub mod access;
mod act;
pub mod alarms;
pub mod artifacts;
mod audit;
pub mod authz;
pub mod callback;
mod decide;
pub mod delivery;
mod error;
pub mod events;
pub mod health;
pub mod input;
pub mod limits;
pub mod moderation;
mod production;
pub mod redact;
pub mod schedule;
pub mod webhooks;

pub use act::{Act, Action, FieldChange, OverrideTarget, SuppliedOutput, names};
pub use audit::{AuditEvent, AuditKind, Outcome};
pub use authz::{Actor, Caller, Role, Scope};
pub use decide::{
    Command, Dispatch, DomainError, FailDisposition, MAX_OPERATOR_TEXT, Transition, decide, start,
};
pub use delivery::{ClaimRefusal, claim_refusal};
pub use error::{Classify, ErrorClass, ErrorCode, StepError};
pub use production::{
    Approval, GateKind, GatePolicy, OnExpiry, OverrideMark, PhaseError, PhaseState, PhaseStatus,
    PipelineVersion, Production, ProductionStatus, Wait, output_key,
};

/// What a call asks an integration for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Chat,
    Image,
    Speech,
    /// Tools on an MCP server (streamable HTTP).
    Mcp,
    /// A generic HTTP JSON endpoint (a webhook, an internal service): POST JSON, get JSON.
    Http,
    /// A source-control host's REST API (GitHub's shapes): branches, commits, pull requests.
    Scm,
    /// A moderation API (OpenAI's `/moderations`): category scores for an image or text.
    Moderation,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Image => "image",
            Self::Speech => "speech",
            Self::Mcp => "mcp",
            Self::Http => "http",
            Self::Scm => "scm",
            Self::Moderation => "moderation",
        }
    }
}

/// Milliseconds since the Unix epoch. The domain never reads a clock; callers pass `now`.
pub type Millis = i64;
