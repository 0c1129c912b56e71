//! Schedules (F-12): what admins and operators do with them, and the tick that fires their
//! due slots. The rule of each tick is `domain::schedule::plan`; here it is carried out:
//! each slot to fire is a start under the key `schedule:<id>:<slot>`, so two overlapping
//! ticks, or a tick retried after a crash, start one production per slot; then the
//! schedule and the slots' outcomes are committed together, conditional on the schedule's
//! version (a tick that loses re-reads and re-decides; its starts are the same
//! productions). A slot that starts nothing is `schedule.missed` in the audit and raises
//! the schedule's `schedule_missed` alarm.

use futures::StreamExt as _;
use serde::Serialize;

use super::{Ops, OpsError};
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::authz::Permission;
use crate::domain::schedule::{
    self, Backfill, Fired, MAX_BACKFILL_PER_TICK, Origin, Overlap, Paused, Schedule, ScheduleSpec,
    SlotOutcome, SlotRecord,
};
use crate::domain::{Actor, AuditKind, Caller, Millis, Outcome, Role, Scope, input};
use crate::ports::Page;
use crate::view;

/// Due schedules one tick reads; more wait for the next tick.
pub const DUE_PER_TICK: usize = 2_000;
/// Schedules a tick works on at once.
const CONCURRENCY: usize = 8;
/// Tries of one schedule's tick against concurrent writers.
const TRIES: usize = 4;

/// What one scheduler tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleTick {
    pub due: usize,
    pub fired: usize,
    pub missed: usize,
    pub held: usize,
    /// Found due but already handled (another tick won).
    pub skipped: usize,
    pub errors: usize,
}

/// A schedule with the newest of its slot history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleDetail {
    #[serde(flatten)]
    pub schedule: Schedule,
    pub history: Vec<SlotRecord>,
    /// The cursor of older history, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_next: Option<String>,
}

/// A slot's start that did not happen.
enum NotStarted {
    /// Refused for good (the input, a limit, access): the slot is missed.
    Refused(String),
    /// The store failed: nothing is committed, the next tick tries the slot again.
    Later(OpsError),
}

impl Ops {
    /// Creates a schedule (admin): its spec checked, its input checked against the
    /// pipeline's schema now (a bad one is refused here, not at 3 a.m.).
    pub async fn create_schedule(
        &self,
        spec: ScheduleSpec,
        caller: &Caller,
    ) -> Result<Schedule, OpsError> {
        caller.may(Permission::ManageSources)?;
        if !caller.sees(Some(&spec.account)) {
            return Err(OpsError::Forbidden(format!(
                "account {:?} is not yours",
                spec.account
            )));
        }
        let timing = spec.check().map_err(OpsError::Invalid)?;
        let input = self.schedule_input(&spec)?;
        let pipeline = self
            .pipelines
            .latest(spec.pipeline.as_deref())
            .map_err(OpsError::Invalid)?;
        let parsed = pipeline.parse_input(&input)?;
        self.check_access(&pipeline.definition, &parsed.account, &parsed.value)
            .await?;
        let now = self.ports.clock.now();
        let next_slot = timing
            .next_after(now)
            .ok_or_else(|| OpsError::Invalid("the schedule has no slot after now".into()))?;
        let s = Schedule {
            id: format!("sch_{}", uuid::Uuid::now_v7().simple()),
            spec,
            created_at: now,
            created_by: caller.actor.0.clone(),
            next_slot,
            paused: None,
            last_fired: None,
            buffered: None,
            backfill: None,
            fired_count: 0,
            missed_count: 0,
            version: 1,
        };
        self.ports.schedules.create(&s, now).await?;
        self.schedule_audit(&s, AuditKind::ScheduleCreated, None, &describe(&s), caller)
            .await;
        Ok(s)
    }

    /// Schedules the caller sees, newest first: one account's, or (stack operators) all.
    pub async fn schedules(
        &self,
        account: Option<&str>,
        caller: &Caller,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Schedule>, OpsError> {
        caller.may(Permission::Read)?;
        let account = super::events::scoped(caller, account)?;
        Ok(self.ports.schedules.list(account, limit, after).await?)
    }

    /// One schedule and its newest slots (fired -> production, missed -> reason).
    pub async fn schedule(
        &self,
        id: &str,
        caller: &Caller,
        limit: usize,
        after: Option<&str>,
    ) -> Result<ScheduleDetail, OpsError> {
        caller.may(Permission::Read)?;
        let schedule = self.visible_schedule(id, caller).await?;
        let history = self.ports.schedules.history(id, limit, after).await?;
        Ok(ScheduleDetail {
            schedule,
            history: history.items,
            history_next: history.next,
        })
    }

    /// Pauses a schedule with a note (operator): its slots are missed as `paused` until
    /// it is resumed.
    pub async fn pause_schedule(
        &self,
        id: &str,
        note: &str,
        caller: &Caller,
    ) -> Result<Schedule, OpsError> {
        caller.may(Permission::OperateSources)?;
        input::text("note", note, 500).map_err(OpsError::Invalid)?;
        let now = self.ports.clock.now();
        let s = self
            .change_schedule(id, caller, |s| {
                if let Some(p) = &s.paused {
                    return Err(OpsError::Busy(format!(
                        "schedule {id} is already paused (by {}: {})",
                        p.by, p.note
                    )));
                }
                s.paused = Some(Paused {
                    note: note.into(),
                    by: caller.actor.0.clone(),
                    at: now,
                });
                Ok(())
            })
            .await?;
        self.schedule_audit(&s, AuditKind::SchedulePaused, None, note, caller)
            .await;
        Ok(s)
    }

    /// Resumes a paused schedule (operator): its next slot fires as usual.
    pub async fn resume_schedule(&self, id: &str, caller: &Caller) -> Result<Schedule, OpsError> {
        caller.may(Permission::OperateSources)?;
        let s = self
            .change_schedule(id, caller, |s| match s.paused.take() {
                Some(_) => Ok(()),
                None => Err(OpsError::Busy(format!("schedule {id} is not paused"))),
            })
            .await?;
        self.schedule_audit(&s, AuditKind::ScheduleResumed, None, "resumed", caller)
            .await;
        Ok(s)
    }

    /// Starts the schedule's production now (operator), whatever its slots, pause or
    /// overlap; recorded in its history as a `trigger` slot.
    pub async fn trigger_schedule(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<(Schedule, String), OpsError> {
        caller.may(Permission::OperateSources)?;
        let s = self.visible_schedule(id, caller).await?;
        let now = self.ports.clock.now();
        let key = format!("schedule:{id}:trigger:{now}");
        let production = match self.fire(&s, &key).await {
            Ok(p) => p,
            Err(NotStarted::Refused(why)) => return Err(OpsError::Invalid(why)),
            Err(NotStarted::Later(e)) => return Err(e),
        };
        let record = SlotRecord {
            slot: now,
            at: now,
            outcome: SlotOutcome::Fired {
                origin: Origin::Trigger,
                production: production.clone(),
            },
        };
        let s = self
            .change_schedule_with(id, caller, std::slice::from_ref(&record), |s| {
                s.last_fired = Some(Fired {
                    slot: now,
                    production: production.clone(),
                });
                s.fired_count += 1;
                Ok(())
            })
            .await?;
        self.slot_event(&s, &record).await;
        self.schedule_audit(
            &s,
            AuditKind::ScheduleTriggered,
            Some(&production),
            &format!("triggered by hand: production {production}"),
            caller,
        )
        .await;
        Ok((s, production))
    }

    /// Starts the schedule's slots in `[from, until]` (operator), at most `per_tick` a
    /// minute; one backfill at a time, at most `schedule::MAX_BACKFILL_SLOTS` slots.
    pub async fn backfill_schedule(
        &self,
        id: &str,
        from: Millis,
        until: Millis,
        per_tick: u32,
        caller: &Caller,
    ) -> Result<Schedule, OpsError> {
        caller.may(Permission::OperateSources)?;
        if !(1..=MAX_BACKFILL_PER_TICK).contains(&per_tick) {
            return Err(OpsError::Invalid(format!(
                "per_tick must be 1 to {MAX_BACKFILL_PER_TICK} (got {per_tick})"
            )));
        }
        let now = self.ports.clock.now();
        if until > now {
            return Err(OpsError::Invalid(
                "a backfill's until must not be in the future (its slots will fire by themselves)"
                    .into(),
            ));
        }
        let mut slots = 0;
        let s = self
            .change_schedule(id, caller, |s| {
                if s.backfill.is_some() {
                    return Err(OpsError::Busy(format!(
                        "schedule {id} is already backfilling; wait for it to finish"
                    )));
                }
                let timing = s.spec.check().map_err(OpsError::Invalid)?;
                slots =
                    schedule::backfill_slots(&timing, from, until).map_err(OpsError::Invalid)?;
                s.backfill = Some(Backfill {
                    next: timing.first_from(from).expect("the range holds a slot"),
                    until,
                    per_tick,
                    by: caller.actor.0.clone(),
                });
                Ok(())
            })
            .await?;
        let detail = format!(
            "backfill of {slots} slots from {} to {}, {per_tick} a minute",
            view::time(from),
            view::time(until)
        );
        self.schedule_audit(&s, AuditKind::ScheduleBackfill, None, &detail, caller)
            .await;
        Ok(s)
    }

    /// Removes a schedule (admin); its history and audit stay.
    pub async fn delete_schedule(&self, id: &str, caller: &Caller) -> Result<(), OpsError> {
        caller.may(Permission::ManageSources)?;
        let s = self.visible_schedule(id, caller).await?;
        if !self.ports.schedules.delete(id).await? {
            return Err(OpsError::NotFound(format!("schedule {id}")));
        }
        self.schedule_audit(&s, AuditKind::ScheduleDeleted, None, &describe(&s), caller)
            .await;
        Ok(())
    }

    /// The scheduler's tick: every due schedule's slots decided and carried out. One
    /// schedule's failure is counted and logged; the others go on, and its slots wait for
    /// the next tick.
    pub async fn run_schedules(&self) -> Result<ScheduleTick, OpsError> {
        let now = self.ports.clock.now();
        let due = self.ports.schedules.due(now, DUE_PER_TICK).await?;
        let mut report = ScheduleTick {
            due: due.len(),
            ..ScheduleTick::default()
        };
        let results: Vec<_> = futures::stream::iter(due)
            .map(|id| async move { (self.tick_schedule(&id, now).await, id) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (res, id) in results {
            match res {
                Ok(Some(t)) => {
                    report.fired += t.fired;
                    report.missed += t.missed;
                    report.held += t.held;
                }
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    report.errors += 1;
                    tracing::error!(schedule = %id, error = %e, "schedule tick failed; its slots wait for the next tick");
                }
            }
        }
        if report.due > 0 {
            crate::metrics::Document::new()
                .count("ScheduleFired", report.fired as u64)
                .count("ScheduleMissed", report.missed as u64)
                .count("ScheduleErrors", report.errors as u64)
                .emit();
        }
        Ok(report)
    }

    /// One schedule's tick at `now`: `None` when another tick already did it.
    async fn tick_schedule(&self, id: &str, now: Millis) -> Result<Option<ScheduleTick>, OpsError> {
        for _ in 0..TRIES {
            let Some(s) = self.ports.schedules.get(id).await? else {
                return Ok(None);
            };
            if s.due_at(now) > now {
                return Ok(None);
            }
            let timing = s.spec.check().map_err(|e| {
                OpsError::Config(format!(
                    "schedule {id} holds a spec that no longer checks: {e}"
                ))
            })?;
            let open = match (&s.last_fired, s.spec.overlap) {
                (Some(f), Overlap::Skip | Overlap::BufferOne) => self
                    .ports
                    .productions
                    .get(&f.production)
                    .await?
                    .is_some_and(|p| !p.status.is_settled()),
                _ => false,
            };
            let plan = schedule::plan(&s, &timing, now, open);
            let mut next = s.clone();
            let mut records = Vec::new();
            let mut tick = ScheduleTick::default();
            for (slot, origin) in &plan.fire {
                let key = format!("schedule:{id}:{slot}");
                let outcome = match self.fire(&s, &key).await {
                    Ok(production) => {
                        next.last_fired = Some(Fired {
                            slot: *slot,
                            production: production.clone(),
                        });
                        next.fired_count += 1;
                        tick.fired += 1;
                        SlotOutcome::Fired {
                            origin: *origin,
                            production,
                        }
                    }
                    Err(NotStarted::Refused(detail)) => {
                        next.missed_count += 1;
                        tick.missed += 1;
                        SlotOutcome::Missed {
                            reason: schedule::MissReason::Refused,
                            detail,
                        }
                    }
                    Err(NotStarted::Later(e)) => return Err(e),
                };
                records.push(SlotRecord {
                    slot: *slot,
                    at: now,
                    outcome,
                });
            }
            for (slot, reason) in &plan.missed {
                next.missed_count += 1;
                tick.missed += 1;
                records.push(SlotRecord {
                    slot: *slot,
                    at: now,
                    outcome: SlotOutcome::Missed {
                        reason: *reason,
                        detail: String::new(),
                    },
                });
            }
            if let Some(slot) = plan.held {
                tick.held += 1;
                records.push(SlotRecord {
                    slot,
                    at: now,
                    outcome: SlotOutcome::Buffered,
                });
            }
            next.next_slot = plan.next_slot;
            next.buffered = plan.buffered;
            next.backfill = plan.backfill;
            next.version += 1;
            if !self.ports.schedules.commit(&next, &records, now).await? {
                // Another writer (a tick, an operator) came first: decide again on what
                // it wrote. Slots this try started are the same productions next time.
                continue;
            }
            self.after_tick(&next, &records).await;
            return Ok(Some(tick));
        }
        Err(OpsError::Busy(format!(
            "schedule {id} changed under {TRIES} tries of its tick"
        )))
    }

    /// The audit rows and the alarm of a committed tick. The history is already stored;
    /// a failure here is logged, not retried (the history is what operators read).
    async fn after_tick(&self, s: &Schedule, records: &[SlotRecord]) {
        let system = Caller::new(
            Actor(format!("schedule:{}", s.id)),
            Role::Admin,
            Scope::Account(s.spec.account.clone()),
        );
        let mut missed = Vec::new();
        for r in records {
            let (kind, production, detail) = match &r.outcome {
                SlotOutcome::Fired { origin, production } => (
                    AuditKind::ScheduleFired,
                    Some(production.as_str()),
                    format!(
                        "slot {} fired ({}): production {production}",
                        view::time(r.slot),
                        serde_json::to_value(origin)
                            .expect("origin serialises")
                            .as_str()
                            .unwrap_or_default()
                    ),
                ),
                SlotOutcome::Missed { reason, detail } => {
                    missed.push(format!("{} ({})", view::time(r.slot), reason.as_str()));
                    (
                        AuditKind::ScheduleMissed,
                        None,
                        format!(
                            "slot {} missed: {}{}{detail}",
                            view::time(r.slot),
                            reason.as_str(),
                            if detail.is_empty() { "" } else { ": " }
                        ),
                    )
                }
                SlotOutcome::Buffered => continue,
            };
            self.schedule_audit(s, kind, production, &detail, &system)
                .await;
            self.slot_event(s, r).await;
        }
        if missed.is_empty() {
            return;
        }
        let shown: Vec<&str> = missed.iter().rev().take(5).map(String::as_str).collect();
        let mut raise = Raise::new(
            AlarmKind::ScheduleMissed,
            &s.id,
            Severity::Warning,
            format!(
                "schedule {} ({}) missed {} slot(s), latest {}; see `shepherd schedule show {}`",
                s.spec.name,
                s.id,
                missed.len(),
                shown.join(", "),
                s.id
            ),
        );
        raise.account = Some(s.spec.account.clone());
        if let Err(e) = self
            .ports
            .alarms
            .raise(&raise, self.ports.clock.now())
            .await
        {
            tracing::error!(schedule = %s.id, error = %e, "could not raise the schedule's alarm");
        }
    }

    /// A decided slot as an arrived event (`GET /events?source=schedule:<id>`), so every
    /// source's items are read in one place. Its id is the slot's: a retried tick writes
    /// the same event. Best effort: the slot history is the record.
    async fn slot_event(&self, s: &Schedule, r: &SlotRecord) {
        let (outcome, production, error, origin) = match &r.outcome {
            SlotOutcome::Fired { origin, production } => (
                crate::domain::events::EventOutcome::Started,
                Some(production.clone()),
                None,
                serde_json::to_value(origin).unwrap_or_default(),
            ),
            SlotOutcome::Missed { reason, detail } => (
                crate::domain::events::EventOutcome::Missed,
                None,
                Some(match detail.is_empty() {
                    true => reason.as_str().to_string(),
                    false => format!("{}: {detail}", reason.as_str()),
                }),
                serde_json::Value::Null,
            ),
            SlotOutcome::Buffered => return,
        };
        let e = crate::domain::events::InboundEvent {
            id: format!("ev_{}_{}", s.id, r.slot),
            source: format!("schedule:{}", s.id),
            account: s.spec.account.clone(),
            kind: crate::domain::events::SourceKind::Schedule,
            event_type: "slot".into(),
            dedupe_key: r.slot.to_string(),
            received_at: r.at,
            outcome,
            production,
            error,
            duplicate_of: None,
            resubmitted_from: None,
            payload: serde_json::json!({"slot": view::time(r.slot), "origin": origin}),
        };
        let stored = self.ports.intake.put_event(&e).await;
        let counted = match stored {
            Ok(()) => self
                .ports
                .intake
                .count(&e.source, outcome, e.error.as_deref(), r.at)
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = counted {
            tracing::warn!(schedule = %s.id, error = %err, "a slot's event was not stored; its history has it");
        }
    }

    /// Starts the schedule's production under `key`: its id.
    async fn fire(&self, s: &Schedule, key: &str) -> Result<String, NotStarted> {
        let input = self
            .schedule_input(&s.spec)
            .map_err(|e| NotStarted::Refused(e.to_string()))?;
        // The schedule acts for the admin who made it, within its account.
        let caller = Caller::new(
            Actor(format!("schedule:{}", s.id)),
            Role::Admin,
            Scope::Account(s.spec.account.clone()),
        );
        match self
            .start_once(s.spec.pipeline.as_deref(), &input, Some(key), &caller)
            .await
        {
            Ok((p, _)) => Ok(p.id),
            // Created; the sweep sends its first message.
            Err(OpsError::DispatchFailed { id, .. }) => Ok(id),
            Err(e @ (OpsError::Store(_) | OpsError::Config(_))) => Err(NotStarted::Later(e)),
            Err(e) => Err(NotStarted::Refused(e.to_string())),
        }
    }

    /// The schedule's input with its account.
    fn schedule_input(&self, spec: &ScheduleSpec) -> Result<String, OpsError> {
        let mut input = spec.input.clone();
        let obj = input
            .as_object_mut()
            .ok_or_else(|| OpsError::Invalid("input must be a JSON object".into()))?;
        match obj.get("account") {
            Some(a) if a != &serde_json::Value::String(spec.account.clone()) => {
                return Err(OpsError::Invalid(format!(
                    "input.account {a} is not the schedule's account {:?}",
                    spec.account
                )));
            }
            _ => {
                obj.insert("account".into(), spec.account.clone().into());
            }
        }
        Ok(input.to_string())
    }

    async fn visible_schedule(&self, id: &str, caller: &Caller) -> Result<Schedule, OpsError> {
        input::id("schedule id", id).map_err(OpsError::Invalid)?;
        match self.ports.schedules.get(id).await? {
            Some(s) if caller.sees(Some(&s.spec.account)) => Ok(s),
            _ => Err(OpsError::NotFound(format!("schedule {id}"))),
        }
    }

    async fn change_schedule(
        &self,
        id: &str,
        caller: &Caller,
        change: impl FnMut(&mut Schedule) -> Result<(), OpsError>,
    ) -> Result<Schedule, OpsError> {
        self.change_schedule_with(id, caller, &[], change).await
    }

    /// Applies `change` to the schedule as stored and commits it with `slots`, again on a
    /// concurrent write (a tick).
    async fn change_schedule_with(
        &self,
        id: &str,
        caller: &Caller,
        slots: &[SlotRecord],
        mut change: impl FnMut(&mut Schedule) -> Result<(), OpsError>,
    ) -> Result<Schedule, OpsError> {
        for _ in 0..TRIES {
            let mut s = self.visible_schedule(id, caller).await?;
            change(&mut s)?;
            s.version += 1;
            if self
                .ports
                .schedules
                .commit(&s, slots, self.ports.clock.now())
                .await?
            {
                return Ok(s);
            }
        }
        Err(OpsError::Busy(format!(
            "schedule {id} is changing; try again"
        )))
    }

    /// An audit row under `SCHED#<id>` (best effort: the change is already stored).
    async fn schedule_audit(
        &self,
        s: &Schedule,
        kind: AuditKind,
        production: Option<&str>,
        detail: &str,
        caller: &Caller,
    ) {
        let outcome = match kind {
            AuditKind::ScheduleMissed => Outcome::Failure,
            _ => Outcome::Success,
        };
        self.source_audit(
            &format!("SCHED#{}", s.id),
            &s.spec.account,
            kind,
            production,
            &format!("schedule {}: {detail}", s.id),
            outcome,
            &caller.actor,
        )
        .await;
    }
}

/// One line of what a schedule does.
fn describe(s: &Schedule) -> String {
    let when = match (&s.spec.cron, s.spec.every_minutes) {
        (Some(c), _) => format!("cron {c:?} in {}", s.spec.time_zone),
        (_, Some(m)) => format!("every {m} minute(s)"),
        _ => String::new(),
    };
    format!(
        "{} ({}): {when}, pipeline {}, catch_up {:?}, overlap {:?}",
        s.spec.name,
        s.id,
        s.spec.pipeline.as_deref().unwrap_or("(default)"),
        s.spec.catch_up,
        s.spec.overlap
    )
}
