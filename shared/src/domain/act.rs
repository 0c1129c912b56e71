//! The operator's verbs: one enum, [`Act`], carrying each verb's arguments. The bare verb
//! list, [`Action`], is derived from it (what `available_actions` lists). The HTTP API reads
//! an `Act` from `{"action": <verb>, ...body}`; the CLI derives its subcommands from it
//! (feature `cli`); `decide` takes it. A new verb is one variant here and its rule in
//! `decide`.

use serde::{Deserialize, Serialize};
use strum::{EnumDiscriminants, VariantArray};

/// An operator's action on a production, with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, EnumDiscriminants)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[strum_discriminants(
    name(Action),
    derive(Hash, Serialize, Deserialize, VariantArray),
    serde(rename_all = "snake_case")
)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
pub enum Act {
    /// Hold the production at the next phase boundary (a running phase finishes).
    Pause,
    /// Continue a paused production exactly where it stopped.
    Resume,
    /// Run the failed or dead-lettered phase again (attempt + 1).
    #[cfg_attr(feature = "cli", command(name = "retry", alias = "retry-phase"))]
    #[serde(alias = "retry")]
    RetryPhase,
    /// Approve the phase waiting for approval: the next phase starts.
    Approve,
    /// Re-run the phase waiting for approval (or an earlier one, and every phase after
    /// it), with your feedback in its input.
    Reject {
        /// What the phase should do differently.
        #[cfg_attr(feature = "cli", arg(long))]
        feedback: String,
        /// Re-run from this phase (the gated one or an earlier one); default: the gated one.
        #[cfg_attr(feature = "cli", arg(long, value_name = "PHASE"))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
    },
    /// Change settings of the production's input (e.g. voice); then retry or resume.
    Edit {
        /// FIELD=VALUE, repeatable.
        #[cfg_attr(
            feature = "cli",
            arg(long = "set", value_name = "FIELD=VALUE", required = true)
        )]
        #[serde(with = "as_map")]
        changes: Vec<FieldChange>,
    },
    /// Stop the production for good; every record is kept.
    Cancel,
    /// Admin: skip the open approval gate, or jump to a phase. A reason is required.
    Override {
        /// Why (required; audited).
        #[cfg_attr(feature = "cli", arg(long))]
        reason: String,
        /// Pass the open approval or warnings gate.
        #[cfg_attr(
            feature = "cli",
            arg(long, conflicts_with = "jump_to", required_unless_present = "jump_to")
        )]
        #[serde(default)]
        skip_gate: bool,
        /// Run this phase next: earlier unfinished phases are skipped, later ones reset.
        #[cfg_attr(feature = "cli", arg(long, value_name = "PHASE"))]
        #[serde(default)]
        jump_to: Option<String>,
        /// The output of a phase the jump skips, when a later phase reads it (its JSON,
        /// checked against the phase's output contract). Repeatable.
        #[cfg_attr(
            feature = "cli",
            arg(long = "output", value_name = "PHASE=JSON", requires = "jump_to")
        )]
        #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<SuppliedOutput>,
    },
    /// Admin: clear the override badge (the production's course stays as it is).
    ClearOverride {
        /// Why (required; audited).
        #[cfg_attr(feature = "cli", arg(long))]
        reason: String,
    },
    /// You read the production's warnings (`show` lists them); the held phase may start.
    #[cfg_attr(feature = "cli", command(alias = "ack-warnings"))]
    AcknowledgeWarnings,
}

impl Act {
    pub fn action(&self) -> Action {
        Action::from(self)
    }
}

impl Action {
    pub const ALL: &'static [Action] = <Action as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::RetryPhase => "retry_phase",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Edit => "edit",
            Self::Cancel => "cancel",
            Self::Override => "override",
            Self::AcknowledgeWarnings => "acknowledge_warnings",
            Self::ClearOverride => "clear_override",
        }
    }

    /// The action named `s` (`retry` is accepted for `retry_phase`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = if s == "retry" { "retry_phase" } else { s };
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

/// `pause, cancel`, or `none`: how refusals name what is available.
pub fn names(actions: &[Action]) -> String {
    if actions.is_empty() {
        "none".into()
    } else {
        let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        names.join(", ")
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an admin override sends the production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideTarget {
    /// Pass the open approval gate without an approval.
    SkipGate,
    /// Run this phase next; earlier phases not done are skipped, later ones reset.
    JumpTo(String),
}

/// One field of the production's input to change: `FIELD=VALUE` on the command line,
/// `{"changes": {FIELD: VALUE}}` over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub value: serde_json::Value,
}

impl std::str::FromStr for FieldChange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Self {
                field: k.trim().to_string(),
                value: serde_json::Value::String(v.to_string()),
            }),
            _ => Err(format!("{s:?}: expected FIELD=VALUE")),
        }
    }
}

/// A phase's output an admin supplies for a jump over it: `PHASE=JSON` on the command line,
/// `{"outputs": {PHASE: JSON}}` over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppliedOutput {
    pub phase: String,
    pub output: serde_json::Value,
}

impl std::str::FromStr for SuppliedOutput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((phase, json)) = s.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(format!("{s:?}: expected PHASE=JSON"));
        };
        let output = serde_json::from_str(json)
            .map_err(|e| format!("the output given for {}: not JSON ({e})", phase.trim()))?;
        Ok(Self {
            phase: phase.trim().to_string(),
            output,
        })
    }
}

/// A named JSON value that travels as one member of a JSON object (`{"voice": "onyx"}`).
trait Named: Sized {
    fn parts(&self) -> (&str, &serde_json::Value);
    fn new(name: String, value: serde_json::Value) -> Self;
}

impl Named for FieldChange {
    fn parts(&self) -> (&str, &serde_json::Value) {
        (&self.field, &self.value)
    }
    fn new(field: String, value: serde_json::Value) -> Self {
        Self { field, value }
    }
}

impl Named for SuppliedOutput {
    fn parts(&self) -> (&str, &serde_json::Value) {
        (&self.phase, &self.output)
    }
    fn new(phase: String, output: serde_json::Value) -> Self {
        Self { phase, output }
    }
}

/// A list of [`Named`] values as a JSON object (`changes`, `outputs`).
mod as_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Named;

    pub fn serialize<T: Named, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &serde_json::Value> = items.iter().map(Named::parts).collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, v)| T::new(k, v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_act_reads_from_the_apis_json_and_names_its_action() {
        let act: Act =
            serde_json::from_value(serde_json::json!({"action": "reject", "feedback": "shorter"}))
                .unwrap();
        assert_eq!(act.action(), Action::Reject);
        let edit: Act = serde_json::from_value(
            serde_json::json!({"action": "edit", "changes": {"voice": "onyx"}}),
        )
        .unwrap();
        assert_eq!(
            edit,
            Act::Edit {
                changes: vec!["voice=onyx".parse().unwrap()]
            }
        );
        let typo =
            serde_json::from_value::<Act>(serde_json::json!({"action": "reject", "feedbak": "x"}));
        assert!(typo.unwrap_err().to_string().contains("feedbak"));
        assert_eq!(Action::parse("retry"), Some(Action::RetryPhase));
        assert_eq!(Action::ALL.len(), 10);
    }
}
