//! Shepherd: durable, recoverable multi-phase pipelines on AWS serverless.
//!
//! Layers, lowest first; a module imports only from its own layer or lower ones (checked by
//! `tests/layers.rs`):
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 0 | [`domain`] | the rules: `decide`, delivery policy, authorization, vocabularies (pure) |
//! | 1 | [`pipeline`] | pipeline definitions, their input and output contracts, versions (pure) |
//! | 2 | [`protocol`], [`config`], [`view`], [`observability`], [`metrics`] | wire formats, configuration, presentation, logs and EMF metrics |
//! | 3 | [`ports`] | the narrow traits the engine needs |
//! | 4 | [`adapters`] | DynamoDB, SQS, SSM, providers, and in memory |
//! | 5 | [`write`], [`integrations`], [`tools`], [`audit`], [`cloudwatch`], [`webhooks`] | the write path, routing, the call ledger, the audit projection, CloudWatch alarms in, webhooks out |
//! | 6 | [`runtime`], [`recovery`], [`stack`] | the phase runtime, the sweep, a stack's pipelines and their phase code |
//! | 7 | [`ops`] | what operators do (CLI and API) |
//! | 8 | [`wiring`], [`prelude`] | the one place adapters are built; the Lambda entry points; a phase author's one `use` |
//!
//! The engine knows no pipeline: each is its own crate (`pipelines/<name>`), registered
//! once in the composition crate (`pipelines/stack`) as a [`stack::PipelineSpec`].
pub mod adapters;
pub mod audit;
pub mod cloudwatch;
pub mod config;
pub mod domain;
pub mod integrations;
pub mod metrics;
pub mod observability;
pub mod ops;
pub mod pipeline;
pub mod ports;
pub mod prelude;
pub mod protocol;
pub mod recovery;
pub mod runtime;
pub mod stack;
pub mod tools;
pub mod view;
pub mod webhooks;
pub mod wiring;
pub mod write;
