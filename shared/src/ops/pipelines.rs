//! The stack's pipelines for operators: every version deployed, which one new productions
//! start on, and how many productions each still has (a version can be removed from
//! `pipelines/` only when none do).

use serde::Serialize;

use super::{Ops, OpsError};
use crate::domain::Caller;
use crate::domain::authz::Permission;
use crate::pipeline::Gate;

/// One pipeline version, as `shepherd pipelines` and `GET /pipelines` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineVersionInfo {
    pub name: String,
    pub version: u32,
    /// New productions of this pipeline start on this version.
    pub latest: bool,
    /// A start that names no pipeline gets this one.
    pub default: bool,
    /// In this deploy's definitions. `false`: productions are pinned to a version the
    /// functions no longer have (their next phase fails, naming it).
    pub deployed: bool,
    pub description: String,
    pub phases: Vec<PhaseInfo>,
    /// Input fields `edit` may change.
    pub editable: Vec<String>,
    /// Productions on this version not completed or cancelled (in the caller's scope).
    pub open: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseInfo {
    pub name: String,
    pub gate: Gate,
}

impl Ops {
    /// Every deployed version of every pipeline, and any version productions are still
    /// pinned to that is no longer deployed; counts in the caller's scope.
    pub async fn pipelines_in_use(
        &self,
        caller: &Caller,
    ) -> Result<Vec<PipelineVersionInfo>, OpsError> {
        caller.may(Permission::Read)?;
        let mut open = self
            .ports
            .productions
            .open_by_version(caller.account())
            .await?;
        let mut out = Vec::new();
        for p in self.pipelines.all() {
            let latest = self
                .pipelines
                .latest(Some(p.name()))
                .is_ok_and(|l| l.version() == p.version());
            out.push(PipelineVersionInfo {
                name: p.name().to_string(),
                version: p.version(),
                latest,
                default: latest && p.name() == self.pipelines.default_name(),
                deployed: true,
                description: p.definition.description.clone(),
                phases: p
                    .definition
                    .phases
                    .iter()
                    .map(|ph| PhaseInfo {
                        name: ph.name.clone(),
                        gate: ph.gate,
                    })
                    .collect(),
                editable: p.editable().to_vec(),
                open: open
                    .remove(&(p.name().to_string(), p.version()))
                    .unwrap_or(0),
            });
        }
        for ((name, version), n) in open {
            out.push(PipelineVersionInfo {
                name,
                version,
                latest: false,
                default: false,
                deployed: false,
                description: String::new(),
                phases: vec![],
                editable: vec![],
                open: n,
            });
        }
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        Ok(out)
    }
}
