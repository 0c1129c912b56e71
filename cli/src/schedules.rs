//! `shepherd schedule ...`: schedules that start a pipeline by themselves, their slot
//! history, and pause / resume / trigger / backfill.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use shepherd::domain::schedule::{Schedule, ScheduleSpec, SlotOutcome, SlotRecord};
use shepherd::domain::{Caller, Millis};
use shepherd::ops::Ops;
use shepherd::ops::requests::{ListSchedules, ScheduleHistory};
use shepherd::view::time;

use crate::webhooks::{print, when};

#[derive(Subcommand)]
pub enum Schedules {
    /// Schedules, newest first: next slot, last fired and its production, missed count.
    List(#[command(flatten)] ListSchedules),
    /// Add one from a JSON file (admin): {name, account, pipeline?, input, cron |
    /// every_minutes, time_zone?, catch_up?, catch_up_cap?, staleness_seconds?, overlap?}.
    Add {
        /// The schedule as JSON (see docs/schedules.md).
        file: std::path::PathBuf,
    },
    /// One schedule and its slot history: fired -> production, missed -> reason.
    Show {
        id: String,
        #[command(flatten)]
        history: ScheduleHistory,
    },
    /// Pause it with a note: its slots are missed (`paused`) until resumed.
    Pause {
        id: String,
        #[arg(long)]
        note: String,
    },
    /// Resume a paused schedule.
    Resume { id: String },
    /// Start its production now, whatever its slots, pause or overlap.
    Trigger { id: String },
    /// Start its slots in a past range, a few a minute (at most 1,000 slots).
    Backfill {
        id: String,
        /// RFC 3339, epoch milliseconds, or an age (`30m`, `6h`, `2d`).
        #[arg(long, value_parser = when)]
        from: Millis,
        /// RFC 3339, epoch milliseconds, or an age; default: now.
        #[arg(long, value_parser = when)]
        until: Option<Millis>,
        /// Slots started per minute (1-20).
        #[arg(long, default_value_t = 5)]
        per_tick: u32,
    },
    /// Remove it (admin); its history and audit stay.
    Remove { id: String },
}

fn table(list: &[Schedule]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<16} {:<8} {:<22} {:<25} {:>6} {:>6}  LAST PRODUCTION",
        "ID", "NAME", "ACCOUNT", "WHEN", "NEXT SLOT", "FIRED", "MISSED"
    );
    for sc in list {
        let when = match (&sc.spec.cron, sc.spec.every_minutes) {
            (Some(c), _) => format!("{c} {}", sc.spec.time_zone),
            (_, Some(m)) => format!("every {m}m"),
            _ => String::new(),
        };
        let next = match &sc.paused {
            Some(p) => format!("paused: {}", p.note),
            None => time(sc.next_slot),
        };
        let _ = writeln!(
            s,
            "{:<36} {:<16} {:<8} {:<22} {:<25} {:>6} {:>6}  {}",
            sc.id,
            sc.spec.name,
            sc.spec.account,
            when,
            next,
            sc.fired_count,
            sc.missed_count,
            sc.last_fired
                .as_ref()
                .map(|f| f.production.as_str())
                .unwrap_or("-")
        );
    }
    s
}

fn history(records: &[SlotRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<25} {:<8} OUTCOME", "SLOT", "");
    for r in records {
        let outcome = match &r.outcome {
            SlotOutcome::Fired { origin, production } => format!(
                "fired ({}) -> {production}",
                serde_json::to_value(origin)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
            SlotOutcome::Missed { reason, detail } if detail.is_empty() => {
                format!("missed: {}", reason.as_str())
            }
            SlotOutcome::Missed { reason, detail } => {
                format!("missed: {}: {detail}", reason.as_str())
            }
            SlotOutcome::Buffered => "held (overlap: buffer_one)".into(),
        };
        let _ = writeln!(s, "{:<25} {:<8} {outcome}", time(r.slot), "");
    }
    s
}

pub async fn run(ops: &Ops, cmd: Schedules, me: &Caller, json: bool) -> Result<ExitCode> {
    match cmd {
        Schedules::List(q) => {
            let page = ops
                .schedules(q.account.as_deref(), me, q.limit, q.cursor.as_deref())
                .await?;
            print(json, &page.items, || {
                let mut s = table(&page.items);
                if let Some(c) = &page.next {
                    let _ = writeln!(s, "more: --cursor {c}");
                }
                s
            })?;
        }
        Schedules::Add { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec: ScheduleSpec = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a schedule", file.display()))?;
            let sc = ops.create_schedule(spec, me).await?;
            print(json, &sc, || table(std::slice::from_ref(&sc)))?;
        }
        Schedules::Show { id, history: h } => {
            let d = ops.schedule(&id, me, h.limit, h.cursor.as_deref()).await?;
            print(json, &d, || {
                let mut s = table(std::slice::from_ref(&d.schedule));
                s.push('\n');
                s.push_str(&history(&d.history));
                if let Some(c) = &d.history_next {
                    let _ = writeln!(s, "older: --cursor {c}");
                }
                s
            })?;
        }
        Schedules::Pause { id, note } => {
            let sc = ops.pause_schedule(&id, &note, me).await?;
            print(json, &sc, || table(std::slice::from_ref(&sc)))?;
        }
        Schedules::Resume { id } => {
            let sc = ops.resume_schedule(&id, me).await?;
            print(json, &sc, || table(std::slice::from_ref(&sc)))?;
        }
        Schedules::Trigger { id } => {
            let (sc, production) = ops.trigger_schedule(&id, me).await?;
            let v = serde_json::json!({"schedule": sc, "production": production});
            print(json, &v, || format!("started {production}\n"))?;
        }
        Schedules::Backfill {
            id,
            from,
            until,
            per_tick,
        } => {
            let until =
                until.unwrap_or_else(|| shepherd::ports::Clock::now(&shepherd::ports::SystemClock));
            let sc = ops
                .backfill_schedule(&id, from, until, per_tick, me)
                .await?;
            print(json, &sc, || {
                format!(
                    "backfilling {} from {} to {}, {per_tick} a minute\n",
                    sc.id,
                    time(from),
                    time(until)
                )
            })?;
        }
        Schedules::Remove { id } => {
            ops.delete_schedule(&id, me).await?;
            let v = serde_json::json!({"id": id, "deleted": true});
            print(json, &v, || format!("removed {id}\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
