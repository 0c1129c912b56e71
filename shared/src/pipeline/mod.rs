//! Pipelines as definitions. A pipeline is declared once, as data, in
//! `pipelines/<name>/v<version>.json`: its input's JSON Schema (which fields an operator may
//! edit on a running production), and its phases in order, each with the function that runs
//! it, its gate, the JSON Schema its output must satisfy, its retry budget, timeout,
//! integrations and concurrency. The engine reads nothing pipeline-specific from anywhere
//! else: the domain sees phase names, and a production's input is a JSON object that only
//! the pipeline's own phases give a type to.
//!
//! | job | file |
//! |---|---|
//! | the definition as written, and its checks | `definition.rs` |
//! | input and output contracts (JSON Schema, `jsonschema`) | `contract.rs` |
//! | the stack's pipelines, every deployed version, pinned by productions | `registry.rs` |
//! | arriving items: their schemas per source kind, filters, mappings to an input | `intake.rs` |
//! | what watchers' sources answer, read; a watcher kind's declaration, checked | `watch.rs` |

mod contract;
mod definition;
pub mod intake;
mod registry;
pub mod watch;

pub use contract::{Input, InputError};
pub use definition::{Definition, DefinitionError, Gate, PhaseDefinition};
pub use registry::{Pipeline, Pipelines, Published};
