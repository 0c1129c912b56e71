//! Shepherd: durable, recoverable multi-phase pipelines on AWS serverless.
//!
//! Layers, lowest first; a module imports only from its own layer or lower ones (checked by
//! `tests/layers.rs`):
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 0 | [`domain`] | the rules: `decide`, delivery policy, authorization, vocabularies (pure) |
//! | 1 | [`protocol`], [`config`], [`view`], [`observability`] | wire formats, configuration, presentation |
//! | 2 | [`ports`] | the narrow traits the engine needs |
//! | 3 | [`adapters`] | DynamoDB, SQS, SSM, providers, and in memory |
//! | 4 | [`write`], [`integrations`], [`tools`], [`audit`], [`cloudwatch`] | the write path, routing, the call ledger, the audit projection, CloudWatch alarms in |
//! | 5 | [`runtime`], [`recovery`], [`phases`] | the phase runtime, the sweep, the sample pipeline |
//! | 6 | [`ops`] | what operators do (CLI and API) |
//! | 7 | [`wiring`] | the one place adapters are built; the Lambda entry points |
pub mod adapters;
pub mod audit;
pub mod cloudwatch;
pub mod config;
pub mod domain;
pub mod integrations;
pub mod observability;
pub mod ops;
pub mod phases;
pub mod ports;
pub mod protocol;
pub mod recovery;
pub mod runtime;
pub mod tools;
pub mod view;
pub mod webhooks;
pub mod wiring;
pub mod write;
