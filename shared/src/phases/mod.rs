//! The phases the stack's pipelines run (`pipelines/*/v*.json` says in which order, with
//! which gates and contracts). Each phase is one Lambda function (`functions/<phase>`);
//! this module holds what each one does. The sample content pipeline: brief -> script ->
//! assets -> voice -> publish; the coding-agent job: plan -> implement -> pull_request.

mod coding;
mod content;

pub use coding::{
    ChangeSet, CodingPlan, FileChange, Implement, Job, PlanPhase, PullRequest, PullRequestOut,
};
pub use content::{
    Assets, AssetsOut, Brief, BriefPhase, Plan, Publish, Script, ScriptOut, Voice, VoiceOut,
};

use crate::runtime::RunPhase;

/// The phase implementation a binary runs (`functions/<binary>`), for the local runtime
/// and tests.
pub fn by_name(name: &str) -> Option<Box<dyn RunPhase>> {
    Some(match name {
        "brief" => Box::new(BriefPhase),
        "script" => Box::new(Script),
        "assets" => Box::new(Assets),
        "voice" => Box::new(Voice),
        "publish" => Box::new(Publish),
        "plan" => Box::new(PlanPhase),
        "implement" => Box::new(Implement),
        "pull-request" => Box::new(PullRequest),
        _ => return None,
    })
}
