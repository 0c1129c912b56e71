//! The domain: productions, phases and their state machine. Pure: no AWS, no I/O, no clock.
//! Every state change is `decide(production, command, now) -> Transition`.

mod brief;
mod production;
mod transition;

pub use brief::{Brief, BriefError, VOICES};
pub use production::{
    Action, Approval, ErrorClass, GateKind, GatePolicy, OnExpiry, PhaseError, PhaseState,
    PhaseStatus, Production, ProductionStatus,
};
pub use transition::{
    AuditEvent, ClaimRefusal, Command, Dispatch, DomainError, FailDisposition, OverrideTarget,
    Transition, claim_refusal, decide, start,
};

/// Milliseconds since the Unix epoch. The domain never reads a clock; callers pass `now`.
pub type Millis = i64;
