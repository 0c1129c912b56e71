//! What a phase author needs, in one `use shepherd::prelude::*;`: the phase trait and its
//! context, errors and their codes, the requests a phase's tools take, artifacts, a watcher
//! kind's trait and what its poll returns, and the spec a pipeline crate hands to the stack.

pub use crate::domain::artifacts::Artifact;
pub use crate::domain::{CallKind, Classify, ErrorClass, ErrorCode, StepError};
pub use crate::pipeline::watch::{Poll, Polled};
pub use crate::ports::{
    ChatMessage, ChatRequest, Fetched, ImageRequest, ImageResult, ScmAnswer, ScmRequest,
    SpeechRequest, SpeechResult,
};
pub use crate::runtime::watch::{WatchContext, WatchKind};
pub use crate::runtime::{Phase, PhaseContext, PhaseOutput};
pub use crate::stack::{PipelineSpec, Stack, StackError};
pub use crate::tools::Tools;
