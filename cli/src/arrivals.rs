//! `shepherd connector ...`, `shepherd watcher ...` and `shepherd events ...`: the sources
//! of work that arrives by itself, and what became of each item.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use shepherd::domain::Caller;
use shepherd::domain::events::{
    Connector, ConnectorSpec, EventOutcome, InboundEvent, SourceStats, Watcher,
};
use shepherd::ops::{EventFilter, Ops};
use shepherd::view::time;

use crate::webhooks::print;

#[derive(Subcommand)]
pub enum Connectors {
    /// Connectors with their counts.
    List {
        #[arg(long, env = "SHEPHERD_ACCOUNT")]
        account: Option<String>,
    },
    /// Add one from a JSON file (admin): {name, account, kind: github|standard, pipeline?,
    /// events, mapping, when?, dedupe_window_seconds?}; prints its secret once.
    Add {
        file: std::path::PathBuf,
    },
    Show {
        id: String,
    },
    /// Remove it and its secret (admin); its events stay.
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum Watchers {
    /// Watchers: state, last success, consecutive errors, last error.
    List {
        #[arg(long, env = "SHEPHERD_ACCOUNT")]
        account: Option<String>,
    },
    /// Add one from a JSON file (admin): {name, account, kind: feed|github_issues|<a
    /// pipeline crate's kind>, pipeline?, url | repository + label | params, mapping,
    /// when?, every_minutes?}.
    Add {
        file: std::path::PathBuf,
    },
    /// The kinds a watcher can be: the shipped ones, and those the stack's pipeline crates
    /// add, with the params each takes.
    Kinds,
    Show {
        id: String,
    },
    /// Enable it again (clears its error count; it polls at the next tick).
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    /// Remove it (admin); its events stay.
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum Events {
    /// Arrived events newest first, with what became of each.
    List {
        #[arg(long, env = "SHEPHERD_ACCOUNT")]
        account: Option<String>,
        /// `connector:<id>` or `watcher:<id>`.
        #[arg(long)]
        source: Option<String>,
        /// received, started, deduped, ignored, failed.
        #[arg(long, value_parser = EventOutcome::parse)]
        outcome: Option<EventOutcome>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One event, with its item.
    Show { id: String },
    /// Clear its dedupe key and submit its item again through its source (audited).
    Resubmit {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

fn stats(s: &SourceStats) -> String {
    format!(
        "{} in: {} started, {} deduped, {} ignored, {} failed",
        s.received, s.started, s.deduped, s.ignored, s.failed
    )
}

fn connectors(list: &[Connector]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:<20} {:<8} {:<9} COUNTS",
        "ID", "NAME", "ACCOUNT", "KIND"
    );
    for c in list {
        let _ = writeln!(
            s,
            "{:<22} {:<20} {:<8} {:<9} {}",
            c.id,
            c.spec.name,
            c.spec.account,
            c.spec.kind.as_str(),
            stats(&c.stats)
        );
        if let Some(e) = &c.stats.last_error {
            let _ = writeln!(s, "{:>62}last error: {e}", "");
        }
    }
    s
}

fn watchers(list: &[Watcher]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<16} {:<13} {:<8} {:<25} {:>6}  COUNTS",
        "ID", "NAME", "KIND", "STATE", "LAST SUCCESS", "ERRORS"
    );
    for w in list {
        let _ = writeln!(
            s,
            "{:<36} {:<16} {:<13} {:<8} {:<25} {:>6}  {}",
            w.id,
            w.spec.name,
            w.spec.kind.as_str(),
            format!("{:?}", w.state).to_lowercase(),
            w.last_success_at.map(time).unwrap_or_else(|| "-".into()),
            w.consecutive_errors,
            stats(&w.stats)
        );
        if let Some(e) = w.disabled_reason.as_ref().or(w.last_error.as_ref()) {
            let _ = writeln!(s, "{:>37}{e}", "");
        }
    }
    s
}

fn events(list: &[InboundEvent]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<35} {:<25} {:<34} {:<9} PRODUCTION / WHY",
        "EVENT", "RECEIVED", "SOURCE", "OUTCOME"
    );
    for e in list {
        let what = e
            .production
            .clone()
            .or_else(|| e.error.clone())
            .or_else(|| e.duplicate_of.as_ref().map(|d| format!("duplicate of {d}")))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<35} {:<25} {:<34} {:<9} {what}",
            e.id,
            time(e.received_at),
            e.source,
            e.outcome.as_str()
        );
    }
    s
}

fn read<T: serde::de::DeserializeOwned>(file: &std::path::Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a {what}", file.display()))
}

pub async fn connector(ops: &Ops, cmd: Connectors, me: &Caller, json: bool) -> Result<ExitCode> {
    match cmd {
        Connectors::List { account } => {
            let list = ops.connectors(account.as_deref(), me).await?;
            print(json, &list, || connectors(&list))?;
        }
        Connectors::Add { file } => {
            let spec: ConnectorSpec = read(&file, "connector")?;
            let c = ops.create_connector(spec, me).await?;
            print(json, &c, || {
                format!(
                    "{}the sender posts to <API>{} signed with (shown once): {}\n",
                    connectors(std::slice::from_ref(&c.connector)),
                    c.path,
                    c.secret
                )
            })?;
        }
        Connectors::Show { id } => {
            let c = ops.connector(&id, me).await?;
            print(json, &c, || connectors(std::slice::from_ref(&c)))?;
        }
        Connectors::Remove { id } => {
            ops.delete_connector(&id, me).await?;
            let v = serde_json::json!({"id": id, "deleted": true});
            print(json, &v, || format!("removed {id}\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watcher(ops: &Ops, cmd: Watchers, me: &Caller, json: bool) -> Result<ExitCode> {
    let one = match cmd {
        Watchers::List { account } => {
            let list = ops.watchers(account.as_deref(), me).await?;
            print(json, &list, || watchers(&list))?;
            return Ok(ExitCode::SUCCESS);
        }
        Watchers::Add { file } => ops.create_watcher(read(&file, "watcher")?, me).await?,
        Watchers::Kinds => {
            let kinds = ops.watch_kinds(me)?;
            print(json, &kinds, || watch_kinds(&kinds))?;
            return Ok(ExitCode::SUCCESS);
        }
        Watchers::Show { id } => ops.watcher(&id, me).await?,
        Watchers::Enable { id } => ops.set_watcher_enabled(&id, true, me).await?,
        Watchers::Disable { id } => ops.set_watcher_enabled(&id, false, me).await?,
        Watchers::Remove { id } => {
            ops.delete_watcher(&id, me).await?;
            let v = serde_json::json!({"id": id, "deleted": true});
            print(json, &v, || format!("removed {id}\n"))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print(json, &one, || watchers(std::slice::from_ref(&one)))?;
    Ok(ExitCode::SUCCESS)
}

/// One line per kind: its name and what it watches, then the params it takes.
fn watch_kinds(kinds: &[shepherd::pipeline::watch::DeclaredKind]) -> String {
    let mut out = String::new();
    for k in shepherd::pipeline::watch::BUILT_IN_KINDS {
        out.push_str(&format!("{k:<16} shipped (docs/arrivals.md)\n"));
    }
    for k in kinds {
        out.push_str(&format!("{:<16} {}\n", k.name, k.about));
        out.push_str(&format!("{:<16} params: {}\n", "", k.params));
    }
    out
}

pub async fn event(ops: &Ops, cmd: Events, me: &Caller, json: bool) -> Result<ExitCode> {
    match cmd {
        Events::List {
            account,
            source,
            outcome,
            limit,
            cursor,
        } => {
            let filter = EventFilter {
                account,
                source,
                outcome,
            };
            let page = ops.events(&filter, me, limit, cursor.as_deref()).await?;
            print(json, &page.items, || {
                let mut s = events(&page.items);
                if let Some(c) = &page.next {
                    let _ = writeln!(s, "more: --cursor {c}");
                }
                s
            })?;
        }
        Events::Show { id } => {
            let e = ops.event(&id, me).await?;
            print(json, &e, || {
                format!(
                    "{}\n{}\n",
                    events(std::slice::from_ref(&e)),
                    serde_json::to_string_pretty(&e.payload).unwrap_or_default()
                )
            })?;
        }
        Events::Resubmit { id, reason } => {
            let e = ops.resubmit_event(&id, &reason, me).await?;
            print(json, &e, || events(std::slice::from_ref(&e)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
