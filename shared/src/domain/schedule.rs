//! Schedules (F-12): when a schedule's slots fall, and what one tick does with the slots
//! that are due. Pure: the caller gives `now` and whether the schedule's last production is
//! still open, and commits what [`plan`] decides.
//!
//! A slot is one instant the schedule names (a cron match in its time zone, or a multiple
//! of its rate since the epoch). Every slot gets exactly one outcome, stored in the
//! schedule's history: fired (the production it started), or missed with its reason.
//!
//! | due slots | `catch_up` | outcome |
//! |---|---|---|
//! | the newest, within [`ON_TIME`] | any | fired (subject to `overlap`) |
//! | late, and older than `staleness_seconds` | any | missed `stale` |
//! | late | `skip` | missed `downtime` |
//! | late | `latest` | the newest late one fired, unless a slot fired on time; the rest missed `downtime` |
//! | late | `all` | the newest `catch_up_cap` fired in order; the older missed `over_cap` |
//! | any, while paused | any | missed `paused` |
//!
//! Then `overlap`, in slot order, when the last production is still open: `skip` misses
//! the slot (`overlap`); `buffer_one` holds one slot and fires it when the production
//! settles (a second held slot is missed); `allow` fires anyway. A slot fired in this tick
//! counts as open for the next.

use std::str::FromStr as _;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use super::Millis;

/// The newest due slot fires as "on time" within this long of its instant (the tick runs
/// every minute, so one tick may come up to a minute late).
pub const ON_TIME: Millis = 2 * 60_000;
/// Slots one tick decides for one schedule; the rest wait for the next tick (a tick that
/// falls behind carries on). Also what fits in one transaction with the schedule item.
pub const SLOTS_PER_TICK: usize = 50;
/// How far a tick looks through overdue slots to find the newest (a minute schedule down
/// for a week has 10,080): beyond it, the oldest are missed as `downtime` in batches.
pub const SCAN_LIMIT: usize = 20_000;
/// The largest `catch_up_cap`.
pub const MAX_CATCH_UP_CAP: u32 = 50;
/// A backfill's bounds: slots in one request, and slots started per tick.
pub const MAX_BACKFILL_SLOTS: usize = 1_000;
pub const MAX_BACKFILL_PER_TICK: u32 = 20;

/// What to do with slots that were not fired on time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None: every late slot is missed.
    Skip,
    /// The most recent late slot, once.
    #[default]
    Latest,
    /// Every late slot in order, up to `catch_up_cap` (the most recent ones).
    All,
}

/// What to do with a slot while the schedule's last production is still open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Miss it (`overlap`).
    #[default]
    Skip,
    /// Hold one slot and fire it once the production settles.
    BufferOne,
    /// Fire it anyway.
    Allow,
}

/// Why a slot was not fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// Not fired on time (no tick ran), and the catch-up policy does not fire it.
    Downtime,
    Paused,
    /// The last production was still open.
    Overlap,
    /// Older than the staleness budget when a tick saw it.
    Stale,
    /// Beyond `catch_up_cap`.
    OverCap,
    /// The start was refused (the input no longer fits the pipeline, a limit, access).
    Refused,
}

impl MissReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downtime => "downtime",
            Self::Paused => "paused",
            Self::Overlap => "overlap",
            Self::Stale => "stale",
            Self::OverCap => "over_cap",
            Self::Refused => "refused",
        }
    }
}

/// What an admin writes: when, what, and the policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A name people know it by (1-128 of letters, digits and `-_.:`).
    pub name: String,
    /// The account whose productions it starts.
    pub account: String,
    /// The pipeline (the stack's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The input of every production (its `account` is the schedule's).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// A five-field cron expression (minute hour day-of-month month day-of-week), read in
    /// `time_zone`. Exactly one of `cron` and `every_minutes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A rate: a slot at every multiple of this many minutes since the epoch (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_minutes: Option<u32>,
    /// An IANA time zone (`Europe/Paris`); `UTC` by default.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The most late slots `catch_up: all` fires (1-50; 10 by default).
    #[serde(default = "default_cap")]
    pub catch_up_cap: u32,
    /// A late slot older than this is missed (`stale`), whatever the policy (60 s to 7
    /// days; 1 hour by default).
    #[serde(default = "default_staleness")]
    pub staleness_seconds: u64,
    #[serde(default)]
    pub overlap: Overlap,
}

fn utc() -> String {
    "UTC".into()
}
fn default_cap() -> u32 {
    10
}
fn default_staleness() -> u64 {
    3600
}

/// When a schedule's slots fall; built from a checked spec.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<Cron>, Tz),
    Every(Millis),
}

impl Timing {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match self {
            Self::Every(step) => Some((t.div_euclid(*step) + 1) * step),
            Self::Cron(cron, tz) => {
                let at =
                    tz.from_utc_datetime(&DateTime::<Utc>::from_timestamp_millis(t)?.naive_utc());
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The first slot at or after `t`.
    pub fn first_from(&self, t: Millis) -> Option<Millis> {
        self.next_after(t - 1)
    }
}

impl ScheduleSpec {
    /// Checks every field; the timing it names.
    pub fn check(&self) -> Result<Timing, String> {
        super::input::id("name", &self.name)?;
        super::input::id("account", &self.account)?;
        if let Some(p) = &self.pipeline {
            super::input::id("pipeline", p)?;
        }
        if !self.input.is_object() {
            return Err("input must be a JSON object (the pipeline's input)".into());
        }
        if !(1..=MAX_CATCH_UP_CAP).contains(&self.catch_up_cap) {
            return Err(format!(
                "catch_up_cap must be 1 to {MAX_CATCH_UP_CAP} (got {})",
                self.catch_up_cap
            ));
        }
        if !(60..=7 * 86_400).contains(&self.staleness_seconds) {
            return Err(format!(
                "staleness_seconds must be 60 to 604800 (got {})",
                self.staleness_seconds
            ));
        }
        let tz = Tz::from_str(&self.time_zone).map_err(|_| {
            format!(
                "time_zone {:?} is not an IANA time zone (e.g. UTC, Europe/Paris)",
                self.time_zone
            )
        })?;
        match (&self.cron, self.every_minutes) {
            (Some(expr), None) => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .year(Year::Disallowed)
                    .build()
                    .parse(expr)
                    .map_err(|e| {
                        format!("cron {expr:?} is not a five-field cron expression: {e}")
                    })?;
                let timing = Timing::Cron(Box::new(cron), tz);
                if timing.next_after(0).is_none() {
                    return Err(format!("cron {expr:?} never matches"));
                }
                Ok(timing)
            }
            (None, Some(m)) if (1..=525_600).contains(&m) => {
                Ok(Timing::Every(Millis::from(m) * 60_000))
            }
            (None, Some(m)) => Err(format!("every_minutes must be 1 to 525600 (got {m})")),
            _ => Err("a schedule has exactly one of cron and every_minutes".into()),
        }
    }
}

/// A schedule held by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Paused {
    pub note: String,
    pub by: String,
    pub at: Millis,
}

/// The last slot a schedule fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fired {
    pub slot: Millis,
    pub production: String,
}

/// A bounded range of slots being started, a few per tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backfill {
    /// The next slot to start.
    pub next: Millis,
    /// The last slot of the range (inclusive).
    pub until: Millis,
    pub per_tick: u32,
    pub by: String,
}

/// A schedule and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: String,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub created_at: Millis,
    pub created_by: String,
    /// The next slot no tick has decided yet.
    pub next_slot: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Fired>,
    /// A slot held by `overlap: buffer_one` until the last production settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
    #[serde(default)]
    pub fired_count: u64,
    #[serde(default)]
    pub missed_count: u64,
    /// Bumped by every write (optimistic concurrency).
    pub version: u64,
}

impl Schedule {
    /// When a tick next has something to do: the next slot, or the next tick while a slot
    /// is held or a backfill runs.
    pub fn due_at(&self, now: Millis) -> Millis {
        if self.buffered.is_some() || self.backfill.is_some() {
            self.next_slot.min(now)
        } else {
            self.next_slot
        }
    }
}

/// How a fired slot came to be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    OnTime,
    CatchUp,
    Buffered,
    Backfill,
    Trigger,
}

/// One slot's outcome, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SlotOutcome {
    Fired {
        origin: Origin,
        production: String,
    },
    Missed {
        reason: MissReason,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// Held by `buffer_one`; a later record says what became of it.
    Buffered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotRecord {
    pub slot: Millis,
    /// When the tick decided it.
    pub at: Millis,
    #[serde(flatten)]
    pub outcome: SlotOutcome,
}

/// What one tick does with one schedule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickPlan {
    /// Slots to start, in order.
    pub fire: Vec<(Millis, Origin)>,
    pub missed: Vec<(Millis, MissReason)>,
    /// A slot newly held by `buffer_one`.
    pub held: Option<Millis>,
    /// The held slot after this tick.
    pub buffered: Option<Millis>,
    pub backfill: Option<Backfill>,
    pub next_slot: Millis,
}

/// What one tick at `now` does with `s`, whose last production is open or not.
pub fn plan(s: &Schedule, timing: &Timing, now: Millis, previous_open: bool) -> TickPlan {
    let stale = |slot: Millis| now - slot > s.spec.staleness_seconds as Millis * 1000;
    // The due slots, oldest first, as far as the scan goes.
    let mut due = Vec::new();
    let mut next = Some(s.next_slot);
    while let Some(slot) = next.filter(|t| *t <= now && due.len() < SCAN_LIMIT) {
        due.push(slot);
        next = timing.next_after(slot);
    }
    let scanned_all = next.is_none_or(|t| t > now);
    let mut decided: Vec<(Millis, Result<Origin, MissReason>)> = Vec::with_capacity(due.len());
    if s.paused.is_some() {
        decided.extend(due.iter().map(|t| (*t, Err(MissReason::Paused))));
    } else {
        let on_time = (scanned_all && due.last().is_some_and(|t| now - t <= ON_TIME))
            .then(|| due.pop())
            .flatten();
        let late_fresh: Vec<Millis> = due.iter().copied().filter(|t| !stale(*t)).collect();
        // Late slots the policy fires (only when the scan reached the newest).
        let fire_late: &[Millis] = match (s.spec.catch_up, scanned_all) {
            (_, false) | (CatchUp::Skip, _) => &[],
            (CatchUp::Latest, _) if on_time.is_some() => &[],
            (CatchUp::Latest, _) => late_fresh.last().map(std::slice::from_ref).unwrap_or(&[]),
            (CatchUp::All, _) => {
                let cap = s.spec.catch_up_cap as usize;
                &late_fresh[late_fresh.len().saturating_sub(cap)..]
            }
        };
        for t in &due {
            let outcome = if fire_late.contains(t) {
                Ok(Origin::CatchUp)
            } else if stale(*t) {
                Err(MissReason::Stale)
            } else if s.spec.catch_up == CatchUp::All && scanned_all {
                Err(MissReason::OverCap)
            } else {
                Err(MissReason::Downtime)
            };
            decided.push((*t, outcome));
        }
        decided.extend(on_time.map(|t| (t, Ok(Origin::OnTime))));
    }
    // At most SLOTS_PER_TICK decisions now; the rest wait for the next tick.
    let mut rest = decided.split_off(decided.len().min(SLOTS_PER_TICK));
    let next_slot = match rest.first() {
        Some((t, _)) => *t,
        None => next.unwrap_or(Millis::MAX),
    };
    rest.clear();

    let mut out = TickPlan {
        next_slot,
        buffered: s.buffered,
        ..TickPlan::default()
    };
    let mut open = previous_open;
    if let Some(held) = s.buffered.filter(|_| !open && s.paused.is_none()) {
        out.buffered = None;
        if stale(held) {
            out.missed.push((held, MissReason::Stale));
        } else {
            out.fire.push((held, Origin::Buffered));
            open = true;
        }
    }
    for (t, outcome) in decided {
        match outcome {
            Err(reason) => out.missed.push((t, reason)),
            Ok(origin) if !open || s.spec.overlap == Overlap::Allow => {
                out.fire.push((t, origin));
                open = true;
            }
            Ok(_) if s.spec.overlap == Overlap::BufferOne && out.buffered.is_none() => {
                out.buffered = Some(t);
                out.held = Some(t);
            }
            Ok(_) => out.missed.push((t, MissReason::Overlap)),
        }
    }
    // A backfill starts its next few slots, whatever the overlap (the operator asked for
    // them); a slot already started within the start key's day is the same production.
    if let Some(b) = &s.backfill {
        if s.paused.is_none() {
            let mut slot = Some(b.next);
            let mut n = 0;
            while let Some(t) = slot.filter(|t| *t <= b.until && n < b.per_tick) {
                out.fire.push((t, Origin::Backfill));
                n += 1;
                slot = timing.next_after(t);
            }
            out.backfill = slot
                .filter(|t| *t <= b.until)
                .map(|next| Backfill { next, ..b.clone() });
        } else {
            out.backfill = Some(b.clone());
        }
    }
    out
}

/// The slots of `[from, until]`, for a backfill: an error names the bound.
pub fn backfill_slots(timing: &Timing, from: Millis, until: Millis) -> Result<usize, String> {
    if until < from {
        return Err("a backfill's until is before its from".into());
    }
    let mut n = 0;
    let mut slot = timing.first_from(from);
    while let Some(t) = slot.filter(|t| *t <= until) {
        n += 1;
        if n > MAX_BACKFILL_SLOTS {
            return Err(format!(
                "a backfill covers at most {MAX_BACKFILL_SLOTS} slots; this range has more"
            ));
        }
        slot = timing.next_after(t);
    }
    if n == 0 {
        return Err("the range holds no slot of this schedule".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;
    // 2026-03-01T00:00:00Z
    const T0: Millis = 1_772_323_200_000;

    fn spec(every: u32) -> ScheduleSpec {
        serde_json::from_value(serde_json::json!({
            "name": "nightly", "account": "acme", "input": {"topic": "x"},
            "every_minutes": every
        }))
        .unwrap()
    }

    fn schedule(spec: ScheduleSpec, next: Millis) -> Schedule {
        Schedule {
            id: "s1".into(),
            spec,
            created_at: 0,
            created_by: "u".into(),
            next_slot: next,
            paused: None,
            last_fired: None,
            buffered: None,
            backfill: None,
            fired_count: 0,
            missed_count: 0,
            version: 1,
        }
    }

    fn run(s: &Schedule, now: Millis, open: bool) -> TickPlan {
        plan(s, &s.spec.check().unwrap(), now, open)
    }

    #[test]
    fn an_on_time_slot_fires_and_the_next_is_the_following_one() {
        let s = schedule(spec(10), T0);
        let p = run(&s, T0 + 30_000, false);
        assert_eq!(p.fire, vec![(T0, Origin::OnTime)]);
        assert!(p.missed.is_empty());
        assert_eq!(p.next_slot, T0 + 10 * MIN);
        // Nothing due: nothing to do.
        let p = run(&schedule(spec(10), T0 + 10 * MIN), T0 + MIN, false);
        assert_eq!((p.fire.len(), p.missed.len()), (0, 0));
    }

    #[test]
    fn after_downtime_each_policy_fires_what_it_says_and_misses_the_rest_with_a_reason() {
        // Six slots of 10 minutes went by without a tick; now is 5 minutes after the last.
        let now = T0 + 55 * MIN;
        let slots: Vec<Millis> = (0..6).map(|i| T0 + i * 10 * MIN).collect();
        let mut sp = spec(10);
        sp.catch_up = CatchUp::Skip;
        let p = run(&schedule(sp.clone(), T0), now, false);
        assert!(p.fire.is_empty());
        assert_eq!(
            p.missed,
            slots
                .iter()
                .map(|t| (*t, MissReason::Downtime))
                .collect::<Vec<_>>()
        );
        assert_eq!(p.next_slot, T0 + 60 * MIN);

        sp.catch_up = CatchUp::Latest;
        let p = run(&schedule(sp.clone(), T0), now, false);
        assert_eq!(p.fire, vec![(slots[5], Origin::CatchUp)]);
        assert_eq!(p.missed.len(), 5);

        // all, cap 2, staleness 40 minutes: the two oldest are stale, the two newest fire,
        // the two between are over the cap.
        sp.catch_up = CatchUp::All;
        sp.catch_up_cap = 2;
        sp.staleness_seconds = 40 * 60;
        sp.overlap = Overlap::Allow;
        let p = run(&schedule(sp, T0), now, false);
        assert_eq!(
            p.fire,
            vec![(slots[4], Origin::CatchUp), (slots[5], Origin::CatchUp)]
        );
        assert_eq!(
            p.missed,
            vec![
                (slots[0], MissReason::Stale),
                (slots[1], MissReason::Stale),
                (slots[2], MissReason::OverCap),
                (slots[3], MissReason::OverCap)
            ]
        );
    }

    #[test]
    fn a_latest_slot_past_the_staleness_budget_is_missed_not_fired() {
        let mut sp = spec(60);
        sp.staleness_seconds = 600;
        let p = run(&schedule(sp, T0), T0 + 30 * MIN, false);
        assert!(p.fire.is_empty());
        assert_eq!(p.missed, vec![(T0, MissReason::Stale)]);
    }

    #[test]
    fn overlap_skip_buffer_one_and_allow() {
        let mut sp = spec(10);
        let p = run(&schedule(sp.clone(), T0), T0, true);
        assert_eq!(p.missed, vec![(T0, MissReason::Overlap)]);

        sp.overlap = Overlap::BufferOne;
        let s = schedule(sp.clone(), T0);
        let p = run(&s, T0, true);
        assert_eq!((p.held, p.buffered, p.fire.len()), (Some(T0), Some(T0), 0));
        // Still open at the next slot: that one is missed, the held one stays.
        let mut s = Schedule {
            buffered: Some(T0),
            next_slot: T0 + 10 * MIN,
            ..s
        };
        let p = run(&s, T0 + 10 * MIN, true);
        assert_eq!(p.missed, vec![(T0 + 10 * MIN, MissReason::Overlap)]);
        assert_eq!(p.buffered, Some(T0));
        // It settled: the held slot fires at the next tick, even with no slot due.
        s.next_slot = T0 + 20 * MIN;
        assert_eq!(s.due_at(T0 + 11 * MIN), T0 + 11 * MIN);
        let p = run(&s, T0 + 11 * MIN, false);
        assert_eq!(
            (p.fire.clone(), p.buffered),
            (vec![(T0, Origin::Buffered)], None)
        );

        sp.overlap = Overlap::Allow;
        let p = run(&schedule(sp, T0), T0, true);
        assert_eq!(p.fire, vec![(T0, Origin::OnTime)]);
    }

    #[test]
    fn paused_slots_are_missed_as_paused() {
        let mut s = schedule(spec(10), T0);
        s.paused = Some(Paused {
            note: "release".into(),
            by: "o".into(),
            at: T0,
        });
        let p = run(&s, T0 + 25 * MIN, false);
        assert_eq!(
            p.missed,
            vec![
                (T0, MissReason::Paused),
                (T0 + 10 * MIN, MissReason::Paused),
                (T0 + 20 * MIN, MissReason::Paused)
            ]
        );
        assert_eq!(p.next_slot, T0 + 30 * MIN);
    }

    #[test]
    fn a_long_outage_is_decided_a_bounded_batch_per_tick() {
        let mut sp = spec(1);
        sp.catch_up = CatchUp::Latest;
        let s = schedule(sp, T0);
        let now = T0 + 120 * MIN + 30_000;
        let p = run(&s, now, false);
        assert_eq!(p.missed.len() + p.fire.len(), SLOTS_PER_TICK);
        assert!(p.fire.is_empty(), "the newest is not in the first batch");
        assert_eq!(p.next_slot, T0 + SLOTS_PER_TICK as Millis * MIN);
        // The last batch fires the newest on time.
        let s = Schedule {
            next_slot: T0 + 100 * MIN,
            ..s
        };
        let p = run(&s, now, false);
        assert_eq!(p.fire, vec![(T0 + 120 * MIN, Origin::OnTime)]);
    }

    #[test]
    fn a_daily_cron_across_a_daylight_saving_change_fires_once_a_day_at_local_time() {
        let sp: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "morning", "account": "acme", "input": {},
            "cron": "30 2 * * *", "time_zone": "Europe/Paris"
        }))
        .unwrap();
        let timing = sp.check().unwrap();
        // 2026-03-28 .. 2026-03-31: Paris springs forward on the 29th (02:00 -> 03:00).
        let start = 1_774_656_000_000; // 2026-03-28T00:00:00Z
        let mut t = start;
        let mut slots = vec![];
        for _ in 0..3 {
            t = timing.next_after(t).unwrap();
            slots.push(
                DateTime::<Utc>::from_timestamp_millis(t)
                    .unwrap()
                    .to_rfc3339(),
            );
        }
        assert_eq!(
            slots,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST, once
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        // Fall back (25 October 2026): 02:30 happens twice (00:30 UTC in summer time, 01:30
        // in winter time), fired once, at the first.
        let mut t = 1_792_800_000_000; // 2026-10-24T00:00:00Z
        let mut days = vec![];
        for _ in 0..3 {
            t = timing.next_after(t).unwrap();
            days.push(
                DateTime::<Utc>::from_timestamp_millis(t)
                    .unwrap()
                    .to_rfc3339(),
            );
        }
        assert_eq!(
            days,
            [
                "2026-10-24T00:30:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn a_bad_spec_is_refused_naming_the_field() {
        let mut sp = spec(10);
        sp.time_zone = "Mars/Olympus".into();
        assert!(
            sp.check()
                .unwrap_err()
                .contains("time_zone \"Mars/Olympus\"")
        );
        let mut sp = spec(10);
        sp.cron = Some("* * * * *".into());
        assert!(
            sp.check()
                .unwrap_err()
                .contains("exactly one of cron and every_minutes")
        );
        let mut sp = spec(10);
        sp.every_minutes = None;
        sp.cron = Some("61 * * * *".into());
        assert!(sp.check().unwrap_err().starts_with("cron \"61 * * * *\""));
        sp.cron = Some("0 0 * * * *".into());
        assert!(sp.check().is_err(), "seconds are refused");
        let mut sp = spec(10);
        sp.catch_up_cap = 0;
        assert!(sp.check().unwrap_err().contains("catch_up_cap"));
    }

    #[test]
    fn a_backfill_starts_a_few_slots_per_tick_until_its_range_is_done() {
        let mut s = schedule(spec(10), T0 + 100 * MIN);
        let timing = s.spec.check().unwrap();
        assert_eq!(backfill_slots(&timing, T0, T0 + 45 * MIN), Ok(5));
        assert!(
            backfill_slots(&timing, T0, T0 + 20_000 * MIN)
                .unwrap_err()
                .contains("at most")
        );
        s.backfill = Some(Backfill {
            next: T0,
            until: T0 + 45 * MIN,
            per_tick: 2,
            by: "o".into(),
        });
        let p = run(&s, T0 + 61 * MIN, true);
        assert_eq!(
            p.fire,
            vec![(T0, Origin::Backfill), (T0 + 10 * MIN, Origin::Backfill)]
        );
        assert_eq!(p.backfill.as_ref().unwrap().next, T0 + 20 * MIN);
        s.backfill = Some(Backfill {
            next: T0 + 40 * MIN,
            ..s.backfill.unwrap()
        });
        let p = run(&s, T0 + 62 * MIN, true);
        assert_eq!((p.fire.len(), p.backfill), (1, None));
    }
}
