//! How a production reads to people and scripts: the same in the CLI and the HTTP API.

use std::collections::BTreeMap;

use crate::domain::{Millis, Production, ProductionStatus};

/// RFC 3339 time of epoch milliseconds.
pub fn time(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A production as JSON at `now`: its state, `available_actions`, `summary` (the banner)
/// and, when given, its outputs.
pub fn json(
    p: &Production,
    outputs: Option<&BTreeMap<String, serde_json::Value>>,
    now: Millis,
) -> serde_json::Value {
    let mut v = serde_json::to_value(p).expect("production serialises");
    v["available_actions"] =
        serde_json::to_value(p.available_actions_at(now)).expect("actions serialise");
    v["summary"] = banner(p).into();
    for (i, ph) in p.phases.iter().enumerate() {
        v["phases"][i]["status_message"] = ph.status_message().into();
    }
    if let Some(o) = outputs {
        v["outputs"] = serde_json::to_value(o).expect("outputs serialise");
    }
    v
}

/// An output longer than this (its JSON) is shown by reference.
pub const OUTPUT_INLINE_MAX: usize = 64 * 1024;
/// The outputs shown whole together stay under this; the rest by reference.
pub const OUTPUTS_INLINE_BUDGET: usize = 512 * 1024;

/// How a production shows an output it does not give whole: where to fetch it, its JSON's
/// length and SHA-256.
pub fn reference(id: &str, phase: &str, bytes: u64, sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "$ref": format!("/productions/{id}/outputs/{phase}"),
        "bytes": bytes,
        "sha256": sha256,
    })
}

/// A production with its outputs and its artifacts' download links (`show`, `GET
/// /productions/{id}`). An output over [`OUTPUT_INLINE_MAX`], or past
/// [`OUTPUTS_INLINE_BUDGET`] with those before it, is a reference to fetch it on its own:
/// `{"$ref": "/productions/<id>/outputs/<phase>", "bytes": n, "sha256": ...}`, so a
/// production with a change set of megabytes still reads in well under a megabyte.
pub fn detail(
    p: &Production,
    outputs: &BTreeMap<String, serde_json::Value>,
    artifacts: &[impl serde::Serialize],
    now: Millis,
) -> serde_json::Value {
    use sha2::Digest as _;
    let mut shown = BTreeMap::new();
    let mut spent = 0;
    // In the phases' order: the early, small ones whole.
    for ph in &p.phases {
        let Some(o) = outputs.get(&ph.name) else {
            continue;
        };
        let text = serde_json::to_string(o).expect("outputs serialise");
        let v = if text.len() <= OUTPUT_INLINE_MAX && spent + text.len() <= OUTPUTS_INLINE_BUDGET {
            spent += text.len();
            o.clone()
        } else {
            let sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
            reference(&p.id, &ph.name, text.len() as u64, &sha256)
        };
        shown.insert(ph.name.clone(), v);
    }
    let mut v = json(p, Some(&shown), now);
    v["artifacts"] = serde_json::to_value(artifacts).expect("artifacts serialise");
    v
}

/// What an operator must know first, in one sentence.
pub fn banner(p: &Production) -> String {
    let current = p.current_phase().map(|c| c.name.as_str()).unwrap_or("-");
    match p.status {
        ProductionStatus::Queued => format!("Queued: phase {current} waits for a worker."),
        // Its external job works; nothing of Shepherd's runs.
        ProductionStatus::Running if p.phases.iter().any(|ph| ph.is_waiting()) => {
            let ph = p.phases.iter().find(|ph| ph.is_waiting()).expect("found");
            format!("Phase {} is {}.", ph.name, ph.status_message())
        }
        ProductionStatus::Running => format!("Running phase {current}."),
        ProductionStatus::AwaitingApproval
            if p.approval
                .as_ref()
                .is_some_and(|a| a.kind == crate::domain::GateKind::Warnings) =>
        {
            let held = p
                .gates
                .acknowledge_before
                .as_deref()
                .unwrap_or("the next phase");
            format!(
                "{held} waits until the warnings are acknowledged (acknowledge_warnings): {}",
                p.warnings.join("; ")
            )
        }
        ProductionStatus::AwaitingApproval => {
            let until = p
                .approval
                .as_ref()
                .map(|a| time(a.expires_at))
                .unwrap_or_default();
            format!(
                "Phase {current} waits for approval (approve, or reject with feedback) until {until}."
            )
        }
        ProductionStatus::Paused => {
            format!(
                "Paused at phase {current}; the next phase will not start automatically. Use resume to continue."
            )
        }
        ProductionStatus::Failed => {
            format!(
                "Phase {current} failed; the next phase will not start automatically. Use retry_phase to try again."
            )
        }
        ProductionStatus::DeadLettered => format!(
            "Phase {current} exhausted its retries and its message is in the DLQ. Fix the cause, then retry_phase."
        ),
        ProductionStatus::Completed => "Completed: every phase succeeded.".into(),
        ProductionStatus::Cancelled => "Cancelled; all records are kept.".into(),
    }
}

/// Epoch milliseconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}
