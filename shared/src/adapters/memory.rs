//! Every port in memory, for fast tests of the engine (runtime, operator actions, sweep).
//! Semantics follow the DynamoDB adapters: the claim is the rule of
//! `domain::delivery::claim_refusal`, commits are conditional on the version, alarms
//! deduplicate by type and subject. What a DynamoDB stream would carry is kept in
//! [`Memory::committed`] for a test to project. Never what a user runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;

use crate::domain::alarms::{Alarm, AlarmStatus, Raise};
use crate::domain::events::{
    Connector, EventOutcome, InboundEvent, SourceStats, Watcher, WatcherState,
};
use crate::domain::health::Health;
use crate::domain::limits::{AccountUsage, Limits, Reservation};
use crate::domain::schedule::{Schedule, SlotRecord};
use crate::domain::webhooks::{Delivery, DeliveryState, Subscription, SubscriptionState};
use crate::domain::{
    Actor, Command, Millis, Production, ProductionStatus, Transition, claim_refusal, decide,
};
use crate::ports::{
    Accounts, Alarms, ArtifactStore, AuditLog, AuditQuery, AuditRecord, Begun, CallOutcome,
    ClaimOutcome, Clock, CommitOutcome, CommittedWrite, HealthStore, InMessage, Intake, Ledger,
    OutMessage, Outputs, Page, ParamError, Params, Productions, Queue, QueueError, Schedules,
    StartKey, StateStream, StoreError, StoredOutput, UsedStartKey, Webhooks,
};

#[derive(Default)]
struct Account {
    limits: Limits,
    started: BTreeMap<String, u32>,
    active: HashSet<String>,
    access: crate::domain::access::AccountAccess,
}

#[derive(Debug, Clone)]
struct Queued {
    message: InMessage,
    visible_at: Millis,
    receives: u32,
}

#[derive(Default)]
struct State {
    productions: BTreeMap<String, Production>,
    inputs: HashMap<String, serde_json::Value>,
    outputs: HashMap<(String, String), StoredOutput>,
    artifacts: HashMap<String, Vec<u8>>,
    accounts: HashMap<String, Account>,
    alarms: BTreeMap<String, Alarm>,
    subscriptions: BTreeMap<String, Subscription>,
    deliveries: BTreeMap<String, Delivery>,
    replays: HashMap<String, Millis>,
    health: HashMap<String, Health>,
    audit: Vec<(String, String, AuditRecord)>,
    ledger: HashMap<String, (CallOutcome, Millis)>,
    queues: HashMap<String, Vec<Queued>>,
    params: HashMap<String, String>,
    committed: Vec<CommittedWrite>,
    start_keys: HashMap<(String, String), UsedStartKey>,
    /// Schedules with their due time, and slot records by (schedule, slot, at).
    schedules: BTreeMap<String, (Schedule, Millis)>,
    slots: BTreeMap<(String, Millis, Millis), SlotRecord>,
    connectors: BTreeMap<String, Connector>,
    events: BTreeMap<String, InboundEvent>,
    /// (source, key) -> (event, held until).
    dedupe: HashMap<(String, String), (String, Millis)>,
    source_stats: HashMap<String, SourceStats>,
    watchers: BTreeMap<String, Watcher>,
    /// Watcher commits to fail, for tests (a crash between the starts and the cursor).
    failing_watcher_commits: u32,
    next_id: u64,
    /// Writes to fail, for tests: each `fail_next` call fails one write.
    failing_writes: u32,
}

/// Every port in memory, with a clock a test moves by hand.
#[derive(Default)]
pub struct Memory {
    state: Mutex<State>,
    now: AtomicI64,
}

impl Clock for Memory {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

impl Memory {
    pub fn new(now: Millis) -> Self {
        let m = Self::default();
        m.now.store(now, Ordering::SeqCst);
        m
    }

    pub fn advance(&self, ms: Millis) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory state")
    }

    /// The committed writes not yet taken (what the stream would deliver).
    pub fn committed(&self) -> Vec<CommittedWrite> {
        std::mem::take(&mut self.state().committed)
    }

    /// The next `n` watcher commits fail, as a crash between a poll's starts and its
    /// cursor would leave it.
    pub fn fail_watcher_commits(&self, n: u32) {
        self.state().failing_watcher_commits = n;
    }

    /// The next `n` production writes fail as if the store were unavailable.
    pub fn fail_writes(&self, n: u32) {
        self.state().failing_writes = n;
    }

    pub fn set_param(&self, name: &str, value: &str) {
        self.state().params.insert(name.into(), value.into());
    }

    /// Every message in a queue (visible or not), oldest first.
    pub fn messages(&self, url: &str) -> Vec<InMessage> {
        self.state()
            .queues
            .get(url)
            .map(|q| q.iter().map(|m| m.message.clone()).collect())
            .unwrap_or_default()
    }

    /// Replaces the stored production (a test setting up a state directly).
    pub fn put_production(&self, p: Production) {
        self.state().productions.insert(p.id.clone(), p);
    }

    fn write(&self, s: &mut State) -> Result<(), StoreError> {
        if s.failing_writes > 0 {
            s.failing_writes -= 1;
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        Ok(())
    }

    fn record(s: &mut State, t: &Transition, actor: &Actor) {
        if !t.audit.is_empty() {
            let p = &t.production;
            s.committed.push(CommittedWrite {
                production_id: p.id.clone(),
                account: p.account.clone(),
                trace_id: p.trace_id.clone(),
                version: p.version,
                status: Some(p.status),
                actor: actor.0.clone(),
                events: t.audit.clone(),
            });
        }
    }
}

#[async_trait]
impl Productions for Memory {
    async fn create(
        &self,
        t: &Transition,
        input: &serde_json::Value,
        actor: &Actor,
        r: &Reservation,
        key: Option<&StartKey>,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        self.write(&mut s)?;
        let p = &t.production;
        if s.productions.contains_key(&p.id) {
            return Err(StoreError::AlreadyExists(p.id.clone()));
        }
        if let Some(k) = key {
            let held = s.start_keys.get(&(k.account.clone(), k.key.clone()));
            if let Some(used) = held.filter(|u| u.expires > p.created_at) {
                return Err(StoreError::StartKeyUsed(used.clone()));
            }
        }
        let account = s.accounts.entry(r.account.clone()).or_default();
        let started = account.started.get(&r.month).copied().unwrap_or(0);
        let allowance = account
            .limits
            .monthly_allowance
            .or(r.defaults.monthly_allowance);
        let max = account.limits.max_concurrent.or(r.defaults.max_concurrent);
        if allowance.is_some_and(|a| started >= a)
            || max.is_some_and(|m| account.active.len() as u32 >= m)
        {
            return Err(StoreError::LimitReached);
        }
        account.started.insert(r.month.clone(), started + 1);
        account.active.insert(p.id.clone());
        s.productions.insert(p.id.clone(), p.clone());
        s.inputs.insert(p.id.clone(), input.clone());
        if let Some(k) = key {
            s.start_keys.insert(
                (k.account.clone(), k.key.clone()),
                UsedStartKey {
                    production: p.id.clone(),
                    input_hash: k.input_hash.clone(),
                    expires: k.expires,
                },
            );
        }
        Self::record(&mut s, t, actor);
        Ok(())
    }

    async fn start_key(
        &self,
        account: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<UsedStartKey>, StoreError> {
        Ok(self
            .state()
            .start_keys
            .get(&(account.to_string(), key.to_string()))
            .filter(|u| u.expires > now)
            .cloned())
    }

    async fn get(&self, id: &str) -> Result<Option<Production>, StoreError> {
        Ok(self.state().productions.get(id).cloned())
    }

    async fn claim(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut s = self.state();
        self.write(&mut s)?;
        let Some(p) = s.productions.get(id).cloned() else {
            return Ok(ClaimOutcome::Refused(None));
        };
        if claim_refusal(&p, phase, attempt, now).is_some() {
            return Ok(ClaimOutcome::Refused(Some(p)));
        }
        let claim = Command::Claim {
            phase: phase.into(),
            attempt,
            lease_until,
        };
        let t = decide(&p, claim, now).expect("claimable: checked above");
        s.productions.insert(id.into(), t.production.clone());
        Ok(ClaimOutcome::Claimed(t.production))
    }

    async fn commit(
        &self,
        t: &Transition,
        actor: &Actor,
        input: Option<&serde_json::Value>,
    ) -> Result<CommitOutcome, StoreError> {
        let mut s = self.state();
        self.write(&mut s)?;
        let p = &t.production;
        match s.productions.get(&p.id) {
            Some(stored) if stored.version + 1 == p.version => {}
            other => return Ok(CommitOutcome::Conflict(other.cloned().map(Box::new))),
        }
        s.productions.insert(p.id.clone(), p.clone());
        if let Some(b) = input {
            s.inputs.insert(p.id.clone(), b.clone());
        }
        Self::record(&mut s, t, actor);
        Ok(CommitOutcome::Committed)
    }

    async fn open_by_version(
        &self,
        account: Option<&str>,
    ) -> Result<std::collections::BTreeMap<(String, u32), u64>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        for p in self.state().productions.values() {
            let open = !matches!(
                p.status,
                ProductionStatus::Completed | ProductionStatus::Cancelled
            );
            if open && account.is_none_or(|a| a == p.account) {
                *counts
                    .entry((p.pipeline.clone(), p.pipeline_version))
                    .or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    async fn input(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.state().inputs.get(id).cloned())
    }

    async fn list(
        &self,
        account: &str,
        status: Option<ProductionStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Production>, StoreError> {
        let mut found: Vec<(String, Production)> = self
            .state()
            .productions
            .values()
            .filter(|p| p.account == account && status.is_none_or(|s| s == p.status))
            .map(|p| (format!("{:013}#{}", p.created_at, p.id), p.clone()))
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0));
        page(found, limit, after, |k, c| k < c)
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let s = self.state();
        let mut due: Vec<(Millis, String)> = s
            .productions
            .values()
            .filter_map(|p| p.due_at.filter(|d| *d <= now).map(|d| (d, p.id.clone())))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }
}

#[async_trait]
impl Outputs for Memory {
    async fn put(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        output: &StoredOutput,
    ) -> Result<String, StoreError> {
        let mut s = self.state();
        self.write(&mut s)?;
        let key = crate::domain::output_key(phase, attempt);
        s.outputs.insert((id.into(), key.clone()), output.clone());
        Ok(key)
    }

    async fn get(&self, id: &str, key: &str) -> Result<Option<StoredOutput>, StoreError> {
        Ok(self
            .state()
            .outputs
            .get(&(id.to_string(), key.to_string()))
            .cloned())
    }
}

#[async_trait]
impl ArtifactStore for Memory {
    async fn put_new(&self, key: &str, body: &[u8], _: &str) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.artifacts.contains_key(key) {
            return Ok(false);
        }
        self.write(&mut s)?;
        s.artifacts.insert(key.into(), body.to_vec());
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().artifacts.get(key).cloned())
    }

    async fn presign(&self, key: &str, _: std::time::Duration) -> Result<String, StoreError> {
        Ok(format!("mem://artifacts/{key}"))
    }
}

#[async_trait]
impl StateStream for Memory {
    /// The memory keeps no stream positions: every committed write, as a test projects it.
    async fn writes(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Vec<CommittedWrite>, StoreError> {
        Ok(self.committed())
    }
}

#[async_trait]
impl Accounts for Memory {
    async fn usage(
        &self,
        account: &str,
        month: &str,
        defaults: Limits,
    ) -> Result<AccountUsage, StoreError> {
        let s = self.state();
        let a = s.accounts.get(account);
        let own = a.map(|a| a.limits).unwrap_or_default();
        let active = a
            .map(|a| a.active.iter().cloned().collect())
            .unwrap_or_default();
        let started = a.and_then(|a| a.started.get(month).copied()).unwrap_or(0);
        Ok(AccountUsage::new(
            account, month, started, own, defaults, active,
        ))
    }

    async fn set_limits(&self, account: &str, limits: Limits) -> Result<(), StoreError> {
        self.state()
            .accounts
            .entry(account.into())
            .or_default()
            .limits = limits;
        Ok(())
    }

    async fn access(
        &self,
        account: &str,
    ) -> Result<crate::domain::access::AccountAccess, StoreError> {
        Ok(self
            .state()
            .accounts
            .get(account)
            .map(|a| a.access.clone())
            .unwrap_or_default())
    }

    async fn set_access(
        &self,
        account: &str,
        access: &crate::domain::access::AccountAccess,
    ) -> Result<(), StoreError> {
        self.state()
            .accounts
            .entry(account.into())
            .or_default()
            .access = access.clone();
        Ok(())
    }

    async fn hold_slot(
        &self,
        account: &str,
        production: &str,
        hold: bool,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        let active = &mut s.accounts.entry(account.into()).or_default().active;
        if hold {
            active.insert(production.into());
        } else {
            active.remove(production);
        }
        Ok(())
    }
}

#[async_trait]
impl Alarms for Memory {
    async fn raise(&self, a: &Raise, now: Millis) -> Result<(), StoreError> {
        let id = format!("{}#{}", a.kind, a.subject);
        let mut s = self.state();
        let alarm = s.alarms.entry(id).or_insert_with(|| Alarm {
            kind: a.kind.clone(),
            subject: a.subject.clone(),
            account: a.account.clone(),
            severity: a.severity,
            status: AlarmStatus::Open,
            count: 0,
            first_seen: now,
            last_seen: now,
            detail: String::new(),
            handled_by: None,
            affected: vec![],
        });
        for m in &a.affected {
            if !alarm.affected.contains(m) {
                alarm.affected.push(m.clone());
            }
        }
        alarm.count += 1;
        alarm.last_seen = now;
        alarm.severity = a.severity;
        alarm.detail = a.detail.clone();
        alarm.status = AlarmStatus::Open;
        alarm.handled_by = None;
        Ok(())
    }

    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Alarm>, StoreError> {
        let mut alarms: Vec<(String, Alarm)> = self
            .state()
            .alarms
            .values()
            .filter(|a| account.is_none() || a.account.as_deref() == account)
            .map(|a| (format!("{:013}#{}", a.last_seen, a.id()), a.clone()))
            .collect();
        alarms.sort_by(|a, b| b.0.cmp(&a.0));
        page(alarms, limit, after, |k, c| k < c)
    }

    async fn leave(
        &self,
        id: &str,
        member: &str,
        actor: &Actor,
        _now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(match self.state().alarms.get_mut(id) {
            Some(a) => {
                a.affected.retain(|m| m != member);
                if a.affected.is_empty() && a.status != AlarmStatus::Resolved {
                    a.status = AlarmStatus::Resolved;
                    a.handled_by = Some(actor.0.clone());
                }
                true
            }
            None => false,
        })
    }

    async fn set_status(
        &self,
        id: &str,
        status: AlarmStatus,
        actor: &Actor,
        _now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(match self.state().alarms.get_mut(id) {
            Some(a) => {
                a.status = status;
                a.handled_by = Some(actor.0.clone());
                true
            }
            None => false,
        })
    }
}

#[async_trait]
impl HealthStore for Memory {
    async fn get(&self, id: &str) -> Result<Health, StoreError> {
        Ok(self
            .state()
            .health
            .get(id)
            .cloned()
            .unwrap_or_else(|| Health::new(id)))
    }

    async fn put(&self, h: &Health) -> Result<bool, StoreError> {
        let mut s = self.state();
        let stored = s.health.get(&h.id).map(|c| c.version).unwrap_or(0);
        if stored + 1 != h.version.max(1) {
            return Ok(false);
        }
        s.health.insert(h.id.clone(), h.clone());
        Ok(true)
    }
}

#[async_trait]
impl AuditLog for Memory {
    async fn append(&self, writes: &[CommittedWrite]) -> Result<usize, StoreError> {
        let mut s = self.state();
        let mut n = 0;
        for w in writes {
            let pk = format!("P#{}", w.production_id);
            for (sk, record) in w.records() {
                s.audit.retain(|(p, k, _)| !(p == &pk && k == &sk));
                s.audit.push((pk.clone(), sk, record));
                n += 1;
            }
        }
        Ok(n)
    }

    async fn record(&self, subject: &str, record: &AuditRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        s.next_id += 1;
        let sk = format!("{:013}#{:010}", record.at, s.next_id);
        s.audit.push((subject.into(), sk, record.clone()));
        Ok(())
    }

    async fn query(
        &self,
        q: &AuditQuery,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let s = self.state();
        let rows: Vec<&(String, String, AuditRecord)> = s
            .audit
            .iter()
            .filter(|(pk, _, r)| match q {
                AuditQuery::Production(id) => *pk == format!("P#{id}"),
                AuditQuery::Trace(t) => r.trace_id.as_deref() == Some(t.as_str()),
                AuditQuery::Type {
                    event_type,
                    since,
                    until,
                    account,
                } => {
                    r.event_type == *event_type
                        && r.at >= *since
                        && r.at < *until
                        && (account.is_none() || r.account == *account)
                }
            })
            .collect();
        let mut rows: Vec<(String, AuditRecord)> = rows
            .into_iter()
            .map(|(pk, sk, r)| (format!("{sk}#{pk}"), r.clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        page(rows, limit, after, |k, c| k > c)
    }
}

#[async_trait]
impl Ledger for Memory {
    async fn get(&self, key: &str, now: Millis) -> Result<Option<CallOutcome>, StoreError> {
        Ok(self
            .state()
            .ledger
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(o, _)| o.clone()))
    }

    async fn put(
        &self,
        key: &str,
        outcome: &CallOutcome,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        self.state()
            .ledger
            .insert(key.into(), (outcome.clone(), expires_at));
        Ok(())
    }
}

#[async_trait]
impl Queue for Memory {
    async fn receive(
        &self,
        url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<InMessage>, QueueError> {
        let now = self.now();
        let mut s = self.state();
        let mut out = Vec::new();
        for q in s.queues.entry(url.into()).or_default().iter_mut() {
            if out.len() >= max.clamp(1, 10) as usize {
                break;
            }
            if q.visible_at <= now {
                q.visible_at = now + i64::from(visibility) * 1000;
                q.receives += 1;
                q.message.receipt = format!("{}#{}", q.message.id, q.receives);
                out.push(q.message.clone());
            }
        }
        Ok(out)
    }

    async fn delete(&self, url: &str, receipt: &str) -> Result<(), QueueError> {
        if let Some(q) = self.state().queues.get_mut(url) {
            q.retain(|m| m.message.receipt != receipt);
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        url: &str,
        messages: &[OutMessage],
    ) -> Result<Vec<String>, QueueError> {
        let now = self.now();
        let mut s = self.state();
        for m in messages {
            s.next_id += 1;
            let id = format!("m-{}", s.next_id);
            s.queues.entry(url.into()).or_default().push(Queued {
                message: InMessage {
                    id,
                    body: m.body.clone(),
                    receipt: String::new(),
                    sent_at: Some(now),
                    attributes: m.attributes.iter().cloned().collect(),
                },
                visible_at: now + i64::from(m.delay.unwrap_or(0)) * 1000,
                receives: 0,
            });
        }
        Ok(vec![])
    }

    async fn change_visibility(
        &self,
        url: &str,
        receipt: &str,
        seconds: i32,
    ) -> Result<(), QueueError> {
        let now = self.now();
        if let Some(q) = self.state().queues.get_mut(url)
            && let Some(m) = q.iter_mut().find(|m| m.message.receipt == receipt)
        {
            m.visible_at = now + i64::from(seconds) * 1000;
        }
        Ok(())
    }
}

#[async_trait]
impl Params for Memory {
    async fn get(&self, name: &str) -> Result<String, ParamError> {
        self.state()
            .params
            .get(name)
            .cloned()
            .ok_or_else(|| ParamError::Missing(name.into()))
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), ParamError> {
        self.state().params.insert(name.into(), value.into());
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), ParamError> {
        self.state().params.remove(name);
        Ok(())
    }
}

impl Memory {
    /// Every port on this memory, with `connector` for the providers.
    pub fn ports(
        self: &std::sync::Arc<Self>,
        connector: std::sync::Arc<dyn crate::ports::Connector>,
    ) -> crate::ports::Ports {
        crate::ports::Ports {
            productions: self.clone(),
            outputs: self.clone(),
            accounts: self.clone(),
            alarms: self.clone(),
            webhooks: self.clone(),
            schedules: self.clone(),
            intake: self.clone(),
            fetch: self.clone(),
            health: self.clone(),
            audit: self.clone(),
            ledger: self.clone(),
            artifacts: self.clone(),
            stream: self.clone(),
            queue: self.clone(),
            params: self.clone(),
            connector,
            clock: self.clone(),
        }
    }
}

#[async_trait]
impl Schedules for Memory {
    async fn create(&self, sc: &Schedule, now: Millis) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.schedules.contains_key(&sc.id) {
            return Err(StoreError::AlreadyExists(sc.id.clone()));
        }
        s.schedules
            .insert(sc.id.clone(), (sc.clone(), sc.due_at(now)));
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        Ok(self.state().schedules.get(id).map(|(s, _)| s.clone()))
    }

    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Schedule>, StoreError> {
        let s = self.state();
        let mut rows: Vec<(String, Schedule)> = s
            .schedules
            .values()
            .filter(|(sc, _)| account.is_none_or(|a| sc.spec.account == a))
            .map(|(sc, _)| (format!("{:013}#{}", sc.created_at, sc.id), sc.clone()))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0));
        page(rows, limit, after, |k, c| k < c)
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let s = self.state();
        let mut due: Vec<(Millis, String)> = s
            .schedules
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (_, at))| (*at, id.clone()))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn commit(
        &self,
        sc: &Schedule,
        slots: &[SlotRecord],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        self.write(&mut s)?;
        match s.schedules.get(&sc.id) {
            Some((stored, _)) if stored.version + 1 == sc.version => {}
            _ => return Ok(false),
        }
        s.schedules
            .insert(sc.id.clone(), (sc.clone(), sc.due_at(now)));
        for r in slots {
            s.slots.insert((sc.id.clone(), r.slot, r.at), r.clone());
        }
        Ok(true)
    }

    async fn history(
        &self,
        id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<SlotRecord>, StoreError> {
        let s = self.state();
        let rows: Vec<(String, SlotRecord)> = s
            .slots
            .iter()
            .rev()
            .filter(|((sid, _, _), _)| sid == id)
            .map(|((_, slot, at), r)| (format!("{slot:013}#{at:013}"), r.clone()))
            .collect();
        page(rows, limit, after, |k, c| k < c)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state().schedules.remove(id).is_some())
    }
}

/// No network in memory: a test gives its ports a `Fetch` of its own.
#[async_trait]
impl crate::ports::Fetch for Memory {
    async fn get(
        &self,
        url: &str,
        _headers: &[(&str, String)],
    ) -> Result<crate::ports::Fetched, String> {
        Err(format!("no network in memory ({url})"))
    }
}

#[async_trait]
impl Intake for Memory {
    async fn create_connector(&self, c: &Connector) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.connectors.contains_key(&c.id) {
            return Err(StoreError::AlreadyExists(c.id.clone()));
        }
        s.connectors.insert(c.id.clone(), c.clone());
        Ok(())
    }

    async fn connector(&self, id: &str) -> Result<Option<Connector>, StoreError> {
        Ok(self.state().connectors.get(id).cloned())
    }

    async fn stats(&self, source: &str) -> Result<SourceStats, StoreError> {
        Ok(self
            .state()
            .source_stats
            .get(source)
            .cloned()
            .unwrap_or_default())
    }

    async fn connectors(&self, account: Option<&str>) -> Result<Vec<Connector>, StoreError> {
        let ids: Vec<String> = {
            let s = self.state();
            s.connectors
                .values()
                .filter(|c| account.is_none_or(|a| c.spec.account == a))
                .map(|c| c.id.clone())
                .collect()
        };
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.connector(&id).await?);
        }
        Ok(out)
    }

    async fn delete_connector(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state().connectors.remove(id).is_some())
    }

    async fn begin(
        &self,
        e: &InboundEvent,
        until: Millis,
        now: Millis,
    ) -> Result<Begun, StoreError> {
        let mut s = self.state();
        let k = (e.source.clone(), e.dedupe_key.clone());
        if let Some((holder, exp)) = s.dedupe.get(&k)
            && *exp >= now
        {
            let first = s.events.get(holder).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "dedupe key names event {holder}, which does not exist"
                ))
            })?;
            return Ok(Begun::Held(Box::new(first)));
        }
        s.dedupe.insert(k, (e.id.clone(), until));
        s.events.insert(e.id.clone(), e.clone());
        Ok(Begun::New)
    }

    async fn put_event(&self, e: &InboundEvent) -> Result<(), StoreError> {
        self.state().events.insert(e.id.clone(), e.clone());
        Ok(())
    }

    async fn event(&self, id: &str) -> Result<Option<InboundEvent>, StoreError> {
        Ok(self.state().events.get(id).cloned())
    }

    async fn events(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<InboundEvent>, StoreError> {
        let s = self.state();
        let mut rows: Vec<(String, InboundEvent)> = s
            .events
            .values()
            .filter(|e| account.is_none_or(|a| e.account == a))
            .map(|e| (format!("{:013}#{}", e.received_at, e.id), e.clone()))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0));
        page(rows, limit, after, |k, c| k < c)
    }

    async fn clear_key(&self, source: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .dedupe
            .remove(&(source.to_string(), key.to_string()))
            .is_some())
    }

    async fn create_watcher(&self, w: &Watcher) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.watchers.contains_key(&w.id) {
            return Err(StoreError::AlreadyExists(w.id.clone()));
        }
        s.watchers.insert(w.id.clone(), w.clone());
        Ok(())
    }

    async fn watcher(&self, id: &str) -> Result<Option<Watcher>, StoreError> {
        Ok(self.state().watchers.get(id).cloned())
    }

    async fn watchers(&self, account: Option<&str>) -> Result<Vec<Watcher>, StoreError> {
        let ids: Vec<String> = self
            .state()
            .watchers
            .values()
            .filter(|w| account.is_none_or(|a| w.spec.account == a))
            .map(|w| w.id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.watcher(&id).await?);
        }
        Ok(out)
    }

    async fn commit_watcher(&self, w: &Watcher) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.failing_watcher_commits > 0 {
            s.failing_watcher_commits -= 1;
            return Err(StoreError::Unavailable(
                "injected watcher commit failure".into(),
            ));
        }
        match s.watchers.get(&w.id) {
            Some(stored) if stored.version + 1 == w.version => {}
            _ => return Ok(false),
        }
        s.watchers.insert(w.id.clone(), w.clone());
        Ok(true)
    }

    async fn delete_watcher(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state().watchers.remove(id).is_some())
    }

    async fn due_watchers(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let s = self.state();
        let mut due: Vec<(Millis, String)> = s
            .watchers
            .values()
            .filter(|w| w.state == WatcherState::Enabled && w.next_poll_at <= now)
            .map(|w| (w.next_poll_at, w.id.clone()))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn count(
        &self,
        source: &str,
        outcome: EventOutcome,
        error: Option<&str>,
        now: Millis,
    ) -> Result<SourceStats, StoreError> {
        let mut s = self.state();
        let st = s.source_stats.entry(source.to_string()).or_default();
        st.received += 1;
        st.last_event_at = Some(now);
        match outcome {
            EventOutcome::Received => {}
            EventOutcome::Started => {
                st.started += 1;
                st.consecutive_failures = 0;
            }
            EventOutcome::Deduped => st.deduped += 1,
            EventOutcome::Ignored | EventOutcome::Missed => st.ignored += 1,
            EventOutcome::Failed => {
                st.failed += 1;
                st.consecutive_failures += 1;
                st.last_error = error.map(String::from);
            }
        }
        Ok(st.clone())
    }
}

/// A page of `items` (sorted, each with its position key) after cursor `after` (`m:<key>`),
/// `beyond(key, cursor)` saying whether a key comes after the cursor in the list's order.
#[async_trait]
impl Webhooks for Memory {
    async fn put_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        self.state().subscriptions.insert(s.id.clone(), s.clone());
        Ok(())
    }
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.state().subscriptions.get(id).cloned())
    }
    async fn subscriptions(&self, account: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        let mut out: Vec<Subscription> = self
            .state()
            .subscriptions
            .values()
            .filter(|s| s.account.as_deref() == account)
            .cloned()
            .collect();
        out.sort_by_key(|s| (s.created_at, s.id.clone()));
        Ok(out)
    }
    async fn set_failing(
        &self,
        id: &str,
        failing: bool,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let mut st = self.state();
        let Some(s) = st.subscriptions.get_mut(id) else {
            return Ok(None);
        };
        s.failing_since = if failing {
            Some(s.failing_since.unwrap_or(now))
        } else {
            None
        };
        Ok(s.failing_since)
    }
    async fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut st = self.state();
        let Some(s) = st.subscriptions.get_mut(id) else {
            return Ok(false);
        };
        s.state = state;
        s.disabled_reason = reason.map(String::from);
        if reason.is_none() {
            s.failing_since = None;
        }
        Ok(true)
    }
    async fn mark_replay(
        &self,
        id: &str,
        now: Millis,
        not_since: Millis,
    ) -> Result<bool, StoreError> {
        let mut st = self.state();
        let last = st.replays.get(id).copied();
        if last.is_some_and(|l| l > not_since) {
            return Ok(false);
        }
        st.replays.insert(id.into(), now);
        Ok(true)
    }
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state().subscriptions.remove(id).is_some())
    }
    async fn create_delivery(&self, d: &Delivery) -> Result<bool, StoreError> {
        let mut st = self.state();
        if st.deliveries.contains_key(&d.id) {
            return Ok(false);
        }
        st.deliveries.insert(d.id.clone(), d.clone());
        Ok(true)
    }
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.state().deliveries.get(id).cloned())
    }
    async fn claim_delivery(
        &self,
        d: &Delivery,
        seen: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut st = self.state();
        let free = st.deliveries.get(&d.id).is_some_and(|cur| {
            cur.attempts_started == seen
                && cur.state == DeliveryState::Pending
                && cur.lease_until.is_none_or(|l| l < now)
        });
        if free {
            st.deliveries.insert(d.id.clone(), d.clone());
        }
        Ok(free)
    }
    async fn save_delivery(&self, d: &Delivery, seen: u32) -> Result<bool, StoreError> {
        let mut st = self.state();
        let mine = st
            .deliveries
            .get(&d.id)
            .is_some_and(|cur| cur.attempts_started == seen);
        if mine {
            st.deliveries.insert(d.id.clone(), d.clone());
        }
        Ok(mine)
    }
    async fn deliveries(
        &self,
        subscription: &str,
        failed_since: Option<Millis>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError> {
        let mut items: Vec<(String, Delivery)> = self
            .state()
            .deliveries
            .values()
            .filter(|d| d.subscription == subscription)
            .filter(|d| {
                failed_since.is_none_or(|t| d.state == DeliveryState::Failed && d.created_at >= t)
            })
            .map(|d| (format!("{:013}#{}", d.created_at, d.id), d.clone()))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        if failed_since.is_none() {
            items.reverse();
            return page(items, limit, after, |k, c| k < c);
        }
        page(items, limit, after, |k, c| k > c)
    }
}

fn page<T>(
    items: Vec<(String, T)>,
    limit: usize,
    after: Option<&str>,
    beyond: impl Fn(&str, &str) -> bool,
) -> Result<Page<T>, StoreError> {
    let cursor = match after {
        Some(c) => Some(
            c.strip_prefix("m:")
                .ok_or_else(|| StoreError::BadCursor("not a cursor of this store".into()))?,
        ),
        None => None,
    };
    let limit = limit.clamp(1, 1000);
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| cursor.is_none_or(|c| beyond(k, c)))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = more.then(|| format!("m:{}", rest[rest.len() - 1].0));
    Ok(Page {
        items: rest.into_iter().map(|(_, t)| t).collect(),
        next,
    })
}
