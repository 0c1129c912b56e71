//! The sample content pipeline: brief -> script -> assets -> voice -> publish. Each phase
//! is one Lambda function (`functions/<phase>`); this module holds what each one does.

mod content;

pub use content::{
    Assets, AssetsOut, BriefPhase, Plan, Publish, Script, ScriptOut, Voice, VoiceOut,
};

use crate::runtime::RunPhase;

/// The pipeline's phases, in order.
pub const CONTENT_PIPELINE: [&str; 5] = ["brief", "script", "assets", "voice", "publish"];
pub const CONTENT_PIPELINE_NAME: &str = "content";

/// The phase implementation for a name, for the local runtime and tests.
pub fn by_name(name: &str) -> Option<Box<dyn RunPhase>> {
    Some(match name {
        "brief" => Box::new(BriefPhase),
        "script" => Box::new(Script),
        "assets" => Box::new(Assets),
        "voice" => Box::new(Voice),
        "publish" => Box::new(Publish),
        _ => return None,
    })
}
