//! Shepherd: durable, recoverable multi-phase pipelines on AWS serverless.
//!
//! - [`domain`]: the production/phase state machine (pure).
//! - [`ports`]: the traits the runtime needs; [`adapters`]: their AWS SDK implementations.
//! - [`runtime`]: the SQS phase handler (claim, execute, commit, hand-off).
//! - [`tools`]: idempotent calls to AI providers.
//! - [`phases`]: the sample content pipeline.
//! - [`ops`]: what operators and the CLI do (start, list, show).
//! - [`audit`]: projecting the audit events carried by state writes.
//! - [`recovery`]: the recovery sweep (lost dispatches, expired approvals and leases, DLQs).
pub mod adapters;
pub mod alarms;
pub mod audit;
pub mod config;
pub mod dlq;
pub mod domain;
pub mod integrations;
pub mod limits;
pub mod observability;
pub mod ops;
pub mod phases;
pub mod ports;
pub mod recovery;
pub mod redact;
pub mod runtime;
pub mod tools;
pub mod view;
