//! Text and JSON views of a production.

use std::fmt::Write;

use shepherd::domain::{Millis, PhaseStatus, Production};
pub use shepherd::view::{banner, json, time};

fn clock(ms: Option<Millis>) -> String {
    ms.map(|m| time(m).get(11..19).unwrap_or_default().to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn show(p: &Production) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Production {}  pipeline {} v{}  account {}",
        p.id, p.pipeline, p.pipeline_version, p.account
    );
    let badge = if p.overridden.is_some() {
        "  [OVERRIDE]"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "Status:   {}  (version {}){badge}",
        p.status.as_str(),
        p.version
    );
    let _ = writeln!(s, "          {}", banner(p));
    let _ = writeln!(
        s,
        "Created:  {}   Updated: {}   Trace: {}",
        time(p.created_at),
        time(p.updated_at),
        p.trace_id
    );
    let actions: Vec<&str> = p
        .available_actions_at(shepherd::ports::Clock::now(&shepherd::ports::SystemClock))
        .iter()
        .map(|a| a.as_str())
        .collect();
    let _ = writeln!(
        s,
        "Actions:  {}",
        if actions.is_empty() {
            "none".into()
        } else {
            actions.join(", ")
        }
    );
    if let Some(o) = &p.overridden {
        let _ = writeln!(
            s,
            "Override: {} by {} at {}: {}",
            o.what,
            o.by,
            time(o.at),
            o.reason
        );
    }
    if !p.warnings.is_empty() {
        let ack = match p.warnings_acknowledged_at {
            Some(at) => format!("acknowledged {}", time(at)),
            None => "not acknowledged".into(),
        };
        let _ = writeln!(s, "Warnings ({ack}):");
        for w in &p.warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<12} {:<14} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "PHASE", "STATUS", "ATTEMPT", "STARTED", "FINISHED", "TOOK", "ERRORS"
    );
    for ph in &p.phases {
        let took = match (ph.started_at, ph.finished_at) {
            (Some(a), Some(b)) if ph.status != PhaseStatus::Running => format!("{} ms", b - a),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<12} {:<14} {:>7} {:>9} {:>9} {:>9} {:>6}",
            ph.name,
            // Running without a worker: its external job works.
            if ph.is_waiting() {
                "waiting (job)"
            } else {
                ph.status.as_str()
            },
            ph.attempt,
            clock(ph.started_at),
            clock(ph.finished_at),
            took,
            ph.error_count
        );
    }
    if p.has_errors() {
        let _ = writeln!(s, "\nErrors (last per phase):");
        for ph in &p.phases {
            if let Some(e) = &ph.last_error {
                let http = e
                    .provider_status
                    .map(|c| format!(", HTTP {c}"))
                    .unwrap_or_default();
                let at = e
                    .integration
                    .as_deref()
                    .map(|i| format!(" at integration {i}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {} attempt {} at {}: {} ({:?}{http}; {} broke{at})\n    {}",
                    ph.name,
                    e.attempt,
                    time(e.at),
                    e.code,
                    e.class,
                    e.code.layer(),
                    e.detail
                );
            }
        }
    }
    s
}

pub fn dlq(entries: &[shepherd::ops::DlqEntry]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<38} {:<8} {:<38} {:>7} {:>8}  REASON",
        "MESSAGE", "PHASE", "PRODUCTION", "ATTEMPT", "AGE"
    );
    for e in entries {
        let attempt = e
            .attempt
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<38} {:<8} {:<38} {:>7} {:>7}s  {}",
            e.message_id,
            e.phase,
            e.production_id.as_deref().unwrap_or("-"),
            attempt,
            e.age_secs,
            e.reason
        );
    }
    if entries.is_empty() {
        let _ = writeln!(s, "(the DLQs are empty)");
    }
    s
}

pub fn artifacts(artifacts: &[shepherd::ops::ArtifactLink]) -> String {
    let mut s = String::new();
    if artifacts.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\nArtifacts (links valid 15 minutes):");
    for a in artifacts {
        let _ = writeln!(
            s,
            "  {:<8} {:<10} {:<11} {:>8} B  {}\n    {}",
            a.phase,
            a.artifact.name,
            a.artifact.content_type,
            a.artifact.bytes,
            a.artifact.key,
            a.url
        );
    }
    s
}

pub fn alarms(alarms: &[shepherd::domain::alarms::Alarm]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<13} {:>5} {:<25} ALARM / DETAIL",
        "SEVERITY", "STATUS", "COUNT", "LAST SEEN"
    );
    for a in alarms {
        let _ = writeln!(
            s,
            "{:<9} {:<13} {:>5} {:<25} {}\n{:>55}{}",
            format!("{:?}", a.severity).to_lowercase(),
            format!("{:?}", a.status).to_lowercase(),
            a.count,
            time(a.last_seen),
            a.id(),
            "",
            a.detail
        );
        if !a.affected.is_empty() {
            let shown: Vec<&str> = a.affected.iter().take(10).map(String::as_str).collect();
            let more = a.affected.len().saturating_sub(shown.len());
            let _ = writeln!(
                s,
                "{:>55}affects {} now: {}{}",
                "",
                a.affected.len(),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    if alarms.is_empty() {
        let _ = writeln!(s, "(no alarms)");
    }
    s
}

pub fn list(ps: &[Production]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<38} {:<18} {:<10} {:<25}",
        "ID", "STATUS", "PHASE", "CREATED"
    );
    for p in ps {
        let phase = p.current_phase().map(|c| c.name.as_str()).unwrap_or("-");
        let _ = writeln!(
            s,
            "{:<38} {:<18} {:<10} {:<25}",
            p.id,
            p.status.as_str(),
            phase,
            time(p.created_at)
        );
    }
    if ps.is_empty() {
        let _ = writeln!(s, "(no productions)");
    }
    s
}

/// One line per phase or production status that changed since `before`.
pub fn changes(before: Option<&Production>, p: &Production) -> Vec<String> {
    let mut lines = Vec::new();
    let stamp = clock(Some(p.updated_at));
    for ph in &p.phases {
        let old = before.and_then(|b| b.phase(&ph.name));
        let moved = old.is_none_or(|o| {
            o.status != ph.status || o.attempt != ph.attempt || o.error_count != ph.error_count
        });
        if moved && (before.is_some() || ph.status != PhaseStatus::Pending) {
            let err = match (&ph.last_error, old.map(|o| o.error_count)) {
                (Some(e), Some(n)) if n < ph.error_count => format!("  [{}: {}]", e.code, e.detail),
                _ => String::new(),
            };
            lines.push(format!(
                "{stamp}  {:<8} {:<14} attempt {}{err}",
                ph.name,
                ph.status.as_str(),
                ph.attempt
            ));
        }
    }
    if before.is_none_or(|b| b.status != p.status) {
        lines.push(format!(
            "{stamp}  production {}: {}",
            p.status.as_str(),
            banner(p)
        ));
    }
    lines
}

pub fn audit(rows: &[shepherd::audit::AuditRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<25} {:<26} {:<8} {:<14} {:<24} PRODUCTION / DETAIL",
        "AT", "EVENT", "OUTCOME", "PHASE", "ACTOR"
    );
    for r in rows {
        let phase = match (&r.phase, r.attempt) {
            (Some(p), Some(a)) => format!("{p}#{a}"),
            (Some(p), None) => p.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<25} {:<26} {:<8} {:<14} {:<24} {}",
            time(r.at),
            r.event_type,
            r.outcome,
            phase,
            r.actor,
            r.production_id.as_deref().unwrap_or("-"),
        );
        if let Some(d) = &r.detail {
            let _ = writeln!(s, "{:>26}{d}", "");
        }
    }
    if rows.is_empty() {
        let _ = writeln!(s, "(no audit events)");
    }
    s
}

pub fn integrations(list: &[shepherd::ops::IntegrationView]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<3} {:<12} {:<12} {:>6} {:<25} BASE URL / LAST ERROR",
        "#", "INTEGRATION", "STATUS", "ERRORS", "RATE LIMIT RESETS"
    );
    for i in list {
        let status = format!("{:?}", i.status).to_lowercase();
        let resets = i
            .health
            .rate_limit_resets_at
            .map(time)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<3} {:<12} {:<12} {:>6} {:<25} {}",
            i.position, i.id, status, i.health.consecutive_errors, resets, i.base_url
        );
        if let Some(e) = &i.health.last_error {
            let _ = writeln!(s, "{:>64}{e}", "");
        }
        if let Some(r) = &i.health.disabled_reason {
            let _ = writeln!(s, "{:>64}disabled: {r}", "");
        }
    }
    if list.is_empty() {
        let _ = writeln!(s, "(no integrations configured)");
    }
    s
}

/// `shepherd pipelines`: one line per version; the phases with their gates.
pub fn pipelines(list: &[shepherd::ops::PipelineVersionInfo]) -> String {
    use shepherd::pipeline::Gate;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>7} {:<18} {:>5}  PHASES",
        "PIPELINE", "VERSION", "STATE", "OPEN"
    );
    for p in list {
        let state = match (p.deployed, p.latest, p.default) {
            (false, _, _) => "NOT DEPLOYED",
            (true, true, true) => "latest, default",
            (true, true, false) => "latest",
            (true, false, _) => "older",
        };
        let phases: Vec<String> = p
            .phases
            .iter()
            .map(|ph| match ph.gate {
                Gate::None => ph.name.clone(),
                Gate::Approval => format!("{} [approval]", ph.name),
                Gate::AcknowledgeWarnings => format!("[warnings acknowledged] {}", ph.name),
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:<18} {:>5}  {}",
            p.name,
            format!("v{}", p.version),
            state,
            p.open,
            phases.join(" -> ")
        );
    }
    s
}

/// `text` with every control character but newline and tab (C0, DEL, C1: what drives a
/// terminal, such as ESC sequences) shown as an escape, so text from the stack cannot
/// move the cursor, rewrite the screen or set the window title.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match bad(c) {
                true => c.escape_unicode().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod clean_tests {
    #[test]
    fn control_sequences_are_shown_not_sent() {
        assert_eq!(super::clean("ok\n\tfine"), "ok\n\tfine");
        assert_eq!(
            super::clean("red \u{1b}[31mtext\u{7}\u{9b}"),
            "red \\u{1b}[31mtext\\u{7}\\u{9b}"
        );
    }
}
