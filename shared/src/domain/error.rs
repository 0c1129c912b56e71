//! What goes wrong in a phase, classified where it is known: the error class decides between
//! backoff, `failed` and the DLQ; the code names the cause for operators and filters.

use serde::{Deserialize, Serialize};

use super::Millis;

/// Whether another try can help: decides between backoff, `failed` and the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 5xx, timeouts, throttling, 429: back off and try again.
    Retryable,
    /// Validation, content refusal, bad config: no retry can help.
    Permanent,
    /// A bug: the phase panicked.
    Unexpected,
    /// Not now, and not the work's fault: a provider's rate-limit reset, an open circuit, a
    /// disabled provider. The phase waits without spending its retry budget.
    Wait,
}

/// Declares a string-backed vocabulary once: the enum, its wire names, parsing, serde and
/// comparison with `&str` (stored rows and tests name them as text).
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* } other $(#[$om:meta])* $other:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $v,)*
            $(#[$om])* $other(String),
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                match self { $(Self::$v => $s,)* Self::$other(s) => s }
            }
            pub fn parse(s: &str) -> Self {
                match s { $($s => Self::$v,)* other => Self::$other(other.to_string()) }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self { Self::parse(s) }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool { self.as_str() == *other }
        }
        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool { *self == other.as_str() }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// Why a phase failed. The engine's and the providers' codes are listed; a phase may
    /// name its own (`assets_incomplete`), kept as `Phase`.
    ErrorCode {
        StoreUnavailable => "store_unavailable",
        InputMissing => "input_missing",
        InputInvalid => "input_invalid",
        OutputContract => "output_contract",
        PipelineNotDeployed => "pipeline_not_deployed",
        StepUnexpectedError => "step_unexpected_error",
        PhaseTimeout => "phase_timeout",
        OutcomeStore => "outcome_store",
        OutcomeCorrupt => "outcome_corrupt",
        ArtifactStore => "artifact_store",
        IdempotencyKeyCollision => "idempotency_key_collision",
        DeadLetteredUnhandled => "dead_lettered_unhandled",
        ApprovalExpired => "approval_expired",
        MalformedMessage => "malformed_message",
        ProviderRateLimited => "provider_rate_limited",
        ProviderUnavailable => "provider_unavailable",
        ProviderTimeout => "provider_timeout",
        ProviderUnreachable => "provider_unreachable",
        ProviderAuth => "provider_auth",
        ProviderQuotaExhausted => "provider_quota_exhausted",
        ProviderRejected => "provider_rejected",
        ProviderBadResponse => "provider_bad_response",
        ProviderNoImage => "provider_no_image",
        ContentRefused => "content_refused",
        ConfigMissing => "config_missing",
        ConfigUnavailable => "config_unavailable",
        ConfigInvalid => "config_invalid",
        IntegrationMissing => "integration_missing",
        IntegrationNotDeclared => "integration_not_declared",
        IntegrationUnavailable => "integration_unavailable",
        IntegrationHealthUnavailable => "integration_health_unavailable",
        McpTransport => "mcp_transport",
        McpSessionExpired => "mcp_session_expired",
        McpRejected => "mcp_rejected",
        McpError => "mcp_error",
        McpToolFailed => "mcp_tool_failed",
        ScmForbidden => "scm_forbidden",
        ScmNotFound => "scm_not_found",
        ScmConflict => "scm_conflict",
        ScmRejected => "scm_rejected",
        NotAllowed => "not_allowed",
        BranchNotOwned => "branch_not_owned",
        /// Not an error: the phase handed its work to an external job and waits for its
        /// callback (the worker records the wait and lets the message go).
        AwaitingCallback => "awaiting_callback",
        /// The external job's deadline passed without a result.
        CallbackDeadline => "callback_deadline",
        /// The external job reported that it failed.
        JobFailed => "job_failed",
    }
    other
    /// A code a phase defined for itself.
    Phase
}

impl ErrorCode {
    /// Which layer broke, for a phase's `status_message`: the work's own input or output,
    /// the phase's code, a model provider, the agent runner or another HTTP service, an
    /// MCP server, the source-control host, Shepherd's configuration, or the engine
    /// (its stores, queues and timers).
    pub fn layer(&self) -> &'static str {
        match self {
            Self::InputMissing | Self::InputInvalid => "input",
            Self::NotAllowed | Self::BranchNotOwned => "account access",
            Self::OutputContract => "output contract",
            Self::ProviderRateLimited
            | Self::ProviderUnavailable
            | Self::ProviderTimeout
            | Self::ProviderUnreachable
            | Self::ProviderAuth
            | Self::ProviderQuotaExhausted
            | Self::ProviderRejected
            | Self::ProviderBadResponse
            | Self::ProviderNoImage
            | Self::ContentRefused
            | Self::AwaitingCallback
            | Self::CallbackDeadline
            | Self::JobFailed => "provider",
            Self::McpTransport
            | Self::McpSessionExpired
            | Self::McpRejected
            | Self::McpError
            | Self::McpToolFailed => "mcp server",
            Self::ScmForbidden | Self::ScmNotFound | Self::ScmConflict | Self::ScmRejected => {
                "source control"
            }
            Self::ConfigMissing
            | Self::ConfigUnavailable
            | Self::ConfigInvalid
            | Self::IntegrationMissing
            | Self::IntegrationNotDeclared
            | Self::IntegrationUnavailable
            | Self::PipelineNotDeployed => "configuration",
            Self::StepUnexpectedError | Self::Phase(_) => "phase code",
            Self::StoreUnavailable
            | Self::PhaseTimeout
            | Self::OutcomeStore
            | Self::OutcomeCorrupt
            | Self::ArtifactStore
            | Self::IdempotencyKeyCollision
            | Self::DeadLetteredUnhandled
            | Self::IntegrationHealthUnavailable
            | Self::MalformedMessage => "engine",
            Self::ApprovalExpired => "approval",
        }
    }

    /// Errors that say the provider, not the request, is unwell (they count against its
    /// health; a content refusal never does).
    pub fn is_provider_outage(&self) -> bool {
        matches!(
            self,
            Self::ProviderUnavailable
                | Self::ProviderTimeout
                | Self::ProviderUnreachable
                | Self::ProviderAuth
                | Self::McpTransport
                | Self::McpSessionExpired
        )
    }
}

/// A failed phase run (or one of its steps): what the runtime needs to decide between
/// backoff, `failed` and the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct StepError {
    pub code: ErrorCode,
    pub class: ErrorClass,
    pub detail: String,
    pub provider_status: Option<u16>,
    /// Do not try again before this time (a provider's rate-limit reset).
    pub retry_at: Option<Millis>,
    /// The integration (registry id) whose answer this is, when one was called.
    pub integration: Option<String>,
}

impl StepError {
    pub fn new(code: impl Into<ErrorCode>, class: ErrorClass, detail: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            class,
            detail: super::redact::redact(&detail.into()).text,
            provider_status: None,
            retry_at: None,
            integration: None,
        }
    }
    pub fn retryable(code: impl Into<ErrorCode>, detail: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Retryable, detail)
    }
    pub fn permanent(code: impl Into<ErrorCode>, detail: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Permanent, detail)
    }
    pub fn unexpected(code: impl Into<ErrorCode>, detail: impl Into<String>) -> Self {
        Self::new(code, ErrorClass::Unexpected, detail)
    }
    /// A wait until `until` (if known), not an attempt.
    pub fn wait(
        code: impl Into<ErrorCode>,
        detail: impl Into<String>,
        until: Option<Millis>,
    ) -> Self {
        let mut e = Self::new(code, ErrorClass::Wait, detail);
        e.retry_at = until;
        e
    }
}

/// Marks where a failure's class is known: `store.get(..).await.retryable(code)?`.
pub trait Classify<T> {
    fn retryable(self, code: ErrorCode) -> Result<T, StepError>;
    fn permanent(self, code: ErrorCode) -> Result<T, StepError>;
}

impl<T, E: std::fmt::Display> Classify<T> for Result<T, E> {
    fn retryable(self, code: ErrorCode) -> Result<T, StepError> {
        self.map_err(|e| StepError::retryable(code, e.to_string()))
    }
    fn permanent(self, code: ErrorCode) -> Result<T, StepError> {
        self.map_err(|e| StepError::permanent(code, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_as_text_and_unknown_ones_are_a_phases_own() {
        assert_eq!(
            ErrorCode::parse("provider_timeout"),
            ErrorCode::ProviderTimeout
        );
        assert_eq!(ErrorCode::ProviderTimeout, "provider_timeout");
        let own = ErrorCode::parse("assets_incomplete");
        assert_eq!(own, ErrorCode::Phase("assets_incomplete".into()));
        let json = serde_json::to_string(&own).unwrap();
        assert_eq!(json, "\"assets_incomplete\"");
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), own);
    }
}
