//! Ports: the narrow traits the engine needs from the outside world, one per concern.
//! `adapters::dynamodb`, `adapters::sqs`, `adapters::ssm` and `adapters::providers`
//! implement them with AWS and HTTP; `adapters::memory` implements them in memory for fast
//! tests of the engine.
//!
//! | port | concern | DynamoDB item |
//! |---|---|---|
//! | [`Productions`] | the hot item and the input; claim, commit, list, due | `P#<id>` `P` / `B` |
//! | [`Outputs`] | phases' outputs | `P#<id>` `O#<phase>#<attempt>` |
//! | [`Accounts`] | limits and usage | `ACCT#<account>` |
//! | [`Alarms`] | alarms, deduplicated | `ALARM#<type>#<subject>` |
//! | [`HealthStore`] | integrations' health | `INT#<id>` |
//! | [`AuditLog`] | the audit table | audit table |
//! | [`Ledger`] | tool-call outcomes | idempotency table |
//! | [`ArtifactStore`] | images, audio, large outputs | artifact bucket (S3) |
//! | [`StateStream`] | the state table's stream, read again | DynamoDB Streams |
//! | [`Queue`], [`Params`], [`Connector`], [`Clock`] | SQS, SSM, providers, time | |

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Definition;
use crate::domain::alarms::{Alarm, AlarmStatus, Raise};
use crate::domain::artifacts::Artifact;
use crate::domain::events::{
    Connector as EventConnector, EventOutcome, InboundEvent, SourceStats, Watcher,
};
use crate::domain::health::Health;
use crate::domain::limits::{AccountUsage, Limits, Reservation};
use crate::domain::schedule::{Schedule, SlotRecord};
use crate::domain::webhooks::{Delivery, Subscription, SubscriptionState};
use crate::domain::{
    Actor, AuditEvent, Millis, Production, ProductionStatus, StepError, Transition,
};
pub use crate::protocol::{InMessage, OutMessage};

/// A store failure. Every variant is worth a retry except `Corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored item is not readable: {0}")]
    Corrupt(String),
    #[error("production {0} already exists")]
    AlreadyExists(String),
    /// The account's monthly allowance or concurrency limit refused a start.
    #[error("an account limit was reached")]
    LimitReached,
    /// A start's idempotency key is already held (see [`StartKey`]).
    #[error("idempotency key already used by production {}", .0.production)]
    StartKeyUsed(UsedStartKey),
    /// A list's cursor is not one this list gave (malformed, or from another list).
    #[error("cursor is not one this list gave: {0}")]
    BadCursor(String),
}

/// One page of a list and, when more may follow, the opaque cursor of the next page (pass
/// it back as `after`). A page may hold fewer items than asked and still have a next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    pub fn last(items: Vec<T>) -> Self {
        Self { items, next: None }
    }
}

/// A start's idempotency key: within `expires`, a start under the same account and key
/// returns the first production instead of creating another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartKey {
    pub account: String,
    pub key: String,
    /// SHA-256 of the input (canonical JSON): the same key with another input is a conflict.
    pub input_hash: String,
    pub expires: Millis,
}

/// What holds a start key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedStartKey {
    pub production: String,
    pub input_hash: String,
    pub expires: Millis,
}

/// What a conditional claim did.
#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(Production),
    /// The condition failed; the production as it was (`None`: it does not exist).
    Refused(Option<Production>),
}

/// What a conditional commit did.
#[derive(Debug)]
pub enum CommitOutcome {
    Committed,
    /// Someone else changed the production first; here it is as it is now.
    Conflict(Option<Box<Production>>),
}

#[async_trait]
pub trait Productions: Send + Sync {
    /// Creates the production and its input and reserves the account's allowance and a
    /// concurrency slot, and holds `key` if given, atomically (never overwrites;
    /// `LimitReached` and `StartKeyUsed` change nothing).
    async fn create(
        &self,
        t: &Transition,
        input: &serde_json::Value,
        actor: &Actor,
        reservation: &Reservation,
        key: Option<&StartKey>,
    ) -> Result<(), StoreError>;
    /// Who holds a start key now (`None`: nobody, or it expired by `now`).
    async fn start_key(
        &self,
        account: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<UsedStartKey>, StoreError>;
    /// Consistent read of one production.
    async fn get(&self, id: &str) -> Result<Option<Production>, StoreError>;
    /// One conditional update, no read: the rule of `domain::delivery::claim_refusal`.
    async fn claim(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Writes `t.production` and its audit events in one item write, if the stored version
    /// is still `t.production.version - 1`; with `input`, replaces the input atomically.
    async fn commit(
        &self,
        t: &Transition,
        actor: &Actor,
        input: Option<&serde_json::Value>,
    ) -> Result<CommitOutcome, StoreError>;
    async fn input(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Newest first, one account's productions, optionally only those in one status, at
    /// most `limit`, from `after` (a cursor of the page before). Reads one item per
    /// production returned (an index names them), not one per production the account has.
    async fn list(
        &self,
        account: &str,
        status: Option<ProductionStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Production>, StoreError>;
    /// Ids of productions due for the recovery sweep at `now` (a sparse index query).
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError>;
    /// How many productions not yet completed or cancelled (they may still run a phase)
    /// each pipeline version has, optionally of one account only. Reads every production
    /// (a scan): an operator's question before removing a version, not a hot path.
    async fn open_by_version(
        &self,
        account: Option<&str>,
    ) -> Result<std::collections::BTreeMap<(String, u32), u64>, StoreError>;
}

/// A phase's output and the artifacts it references.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutput {
    pub body: serde_json::Value,
    pub artifacts: Vec<Artifact>,
}

/// A phase's output as it is listed: whole, or (kept in the bucket) by its key and size.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputPeek {
    Whole(StoredOutput),
    InBucket {
        key: String,
        /// Its JSON's length.
        bytes: u64,
        artifacts: Vec<Artifact>,
    },
}

#[async_trait]
pub trait Outputs: Send + Sync {
    /// As `get`, without reading an output kept in the bucket (listing a production should
    /// not download its megabytes).
    async fn peek(&self, id: &str, key: &str) -> Result<Option<OutputPeek>, StoreError> {
        Ok(self.get(id, key).await?.map(OutputPeek::Whole))
    }
    /// Stores a phase's output apart from the hot item; returns its key.
    async fn put(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        output: &StoredOutput,
    ) -> Result<String, StoreError>;
    async fn get(&self, id: &str, key: &str) -> Result<Option<StoredOutput>, StoreError>;
}

/// The artifact bucket. Keys are content addresses (`domain::artifacts`).
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores `body` under `key` unless an object is already there (the same key is the
    /// same content); `true` when it wrote.
    async fn put_new(&self, key: &str, body: &[u8], content_type: &str)
    -> Result<bool, StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A download link valid for `ttl`.
    async fn presign(&self, key: &str, ttl: std::time::Duration) -> Result<String, StoreError>;
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// An account's limits and usage in `month` (`defaults` where it has none).
    async fn usage(
        &self,
        account: &str,
        month: &str,
        defaults: Limits,
    ) -> Result<AccountUsage, StoreError>;
    /// Sets an account's own limits (`None`: the stack's default).
    async fn set_limits(&self, account: &str, limits: Limits) -> Result<(), StoreError>;
    /// What the account may reach outside the stack (nothing, where it was never set).
    async fn access(
        &self,
        account: &str,
    ) -> Result<crate::domain::access::AccountAccess, StoreError>;
    /// Replaces it.
    async fn set_access(
        &self,
        account: &str,
        access: &crate::domain::access::AccountAccess,
    ) -> Result<(), StoreError>;
    /// Releases (`hold == false`) or takes back a production's concurrency slot; idempotent.
    async fn hold_slot(
        &self,
        account: &str,
        production: &str,
        hold: bool,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait Alarms: Send + Sync {
    /// Records an occurrence (deduplicated by type and subject).
    async fn raise(&self, alarm: &Raise, now: Millis) -> Result<(), StoreError>;
    /// Alarms newest first (by last occurrence), at most `limit`, from `after`: those about
    /// `account`'s productions, or every alarm with `None`.
    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Alarm>, StoreError>;
    /// `member` recovered: it leaves the alarm's affected set; an alarm left with no member
    /// is resolved (by `actor`). `false` if there is no such alarm.
    async fn leave(
        &self,
        id: &str,
        member: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Acknowledges or resolves an alarm; `false` if there is no such alarm.
    async fn set_status(
        &self,
        id: &str,
        status: AlarmStatus,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// An integration's health record (a fresh, healthy one if none is stored).
    async fn get(&self, id: &str) -> Result<Health, StoreError>;
    /// Stores `h` if the stored version is `h.version - 1`; `false` if someone else wrote first.
    async fn put(&self, h: &Health) -> Result<bool, StoreError>;
}

/// An HTTP answer to a watcher's poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub status: u16,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// HTTP GET for watchers (feeds, a source-control host's API).
#[async_trait]
pub trait Fetch: Send + Sync {
    /// The answer, whatever its status; `Err` when there was none (refused address,
    /// timeout, connection failure), saying why.
    async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<Fetched, String>;
}

/// What `Intake::begin` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// Stored, holding its dedupe key.
    New,
    /// The key is held (within its window) by this event; nothing was stored.
    Held(Box<InboundEvent>),
}

/// Connectors, arriving events and their dedupe keys, counts per source
/// (`domain::events`).
#[async_trait]
pub trait Intake: Send + Sync {
    async fn create_connector(&self, c: &EventConnector) -> Result<(), StoreError>;
    /// A connector, without its counts (the intake path needs none; `stats` reads them).
    async fn connector(&self, id: &str) -> Result<Option<EventConnector>, StoreError>;
    /// A source's counts (`connector:<id>`, `watcher:<id>`).
    async fn stats(&self, source: &str) -> Result<SourceStats, StoreError>;
    /// One account's connectors, or every account's (`None`), with their counts.
    async fn connectors(&self, account: Option<&str>) -> Result<Vec<EventConnector>, StoreError>;
    async fn delete_connector(&self, id: &str) -> Result<bool, StoreError>;
    /// Stores a new event and claims its source's dedupe key until `until`, together; or
    /// finds the key held at `now` by another event and stores nothing.
    async fn begin(
        &self,
        e: &InboundEvent,
        until: Millis,
        now: Millis,
    ) -> Result<Begun, StoreError>;
    /// Stores an event (a new one without a key, or one's outcome).
    async fn put_event(&self, e: &InboundEvent) -> Result<(), StoreError>;
    async fn event(&self, id: &str) -> Result<Option<InboundEvent>, StoreError>;
    /// Events newest first: one account's, or every account's (`None`).
    async fn events(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<InboundEvent>, StoreError>;
    /// Frees a source's dedupe key; `false` if nothing held it.
    async fn clear_key(&self, source: &str, key: &str) -> Result<bool, StoreError>;
    async fn create_watcher(&self, w: &Watcher) -> Result<(), StoreError>;
    /// A watcher, without its counts.
    async fn watcher(&self, id: &str) -> Result<Option<Watcher>, StoreError>;
    async fn watchers(&self, account: Option<&str>) -> Result<Vec<Watcher>, StoreError>;
    /// Writes `w` if the stored version is `w.version - 1`; `false` if another writer came
    /// first. An enabled watcher is due at `next_poll_at`; a disabled one is never due.
    async fn commit_watcher(&self, w: &Watcher) -> Result<bool, StoreError>;
    async fn delete_watcher(&self, id: &str) -> Result<bool, StoreError>;
    /// Ids of enabled watchers due to poll at `now`, earliest first.
    async fn due_watchers(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Counts one event of `source`; its counts after.
    async fn count(
        &self,
        source: &str,
        outcome: EventOutcome,
        error: Option<&str>,
        now: Millis,
    ) -> Result<SourceStats, StoreError>;
}

/// Schedules and their slot history (`domain::schedule`).
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Stores a new schedule (`AlreadyExists` if its id is taken).
    async fn create(&self, s: &Schedule, now: Millis) -> Result<(), StoreError>;
    /// Consistent read of one schedule.
    async fn get(&self, id: &str) -> Result<Option<Schedule>, StoreError>;
    /// Schedules newest first: one account's (read by key), or every account's (`None`).
    async fn list(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Schedule>, StoreError>;
    /// Ids of schedules with something to do at `now` (a sparse index on the due time),
    /// earliest first, at most `limit`.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Writes `s` and `slots` all or nothing, if the stored schedule's version is
    /// `s.version - 1`; `false` (nothing written) if another writer came first or it is gone.
    async fn commit(
        &self,
        s: &Schedule,
        slots: &[SlotRecord],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// A schedule's slot history, newest first.
    async fn history(
        &self,
        id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<SlotRecord>, StoreError>;
    /// Deletes a schedule (its history stays); `false` if there was none.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;
}

/// Webhook subscriptions and their deliveries (`domain::webhooks`).
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Creates or replaces a subscription.
    async fn put_subscription(&self, s: &Subscription) -> Result<(), StoreError>;
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    /// The subscriptions of `account` (`None`: the stack operators'), oldest first.
    async fn subscriptions(&self, account: Option<&str>) -> Result<Vec<Subscription>, StoreError>;
    /// Records that a delivery to it failed (`true`: keeps the first failure's time) or
    /// succeeded (`false`: clears it); the failing-since time after the write.
    async fn set_failing(
        &self,
        id: &str,
        failing: bool,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError>;
    /// Enables or disables it (with why); `false` when it does not exist.
    async fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Marks a replay of it at `now` unless one was marked after `not_since`; `false` when
    /// one was (replays are rate-limited per subscription).
    async fn mark_replay(
        &self,
        id: &str,
        now: Millis,
        not_since: Millis,
    ) -> Result<bool, StoreError>;
    /// `false` when there was none.
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError>;
    /// Stores a new delivery; `false` (and nothing written) when one with its id exists.
    async fn create_delivery(&self, d: &Delivery) -> Result<bool, StoreError>;
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// Replaces a pending delivery whose attempt count is still `seen` and that no attempt
    /// holds at `now` (an attempt's claim); `false` when that no longer holds.
    async fn claim_delivery(
        &self,
        d: &Delivery,
        seen: u32,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Replaces a delivery whose attempt count is still `seen` (an attempt's result, a
    /// resend); `false` when another attempt has started since.
    async fn save_delivery(&self, d: &Delivery, seen: u32) -> Result<bool, StoreError>;
    /// A subscription's deliveries: all of them newest first, or the failed ones created
    /// at or after `since`, oldest first.
    async fn deliveries(
        &self,
        subscription: &str,
        failed_since: Option<Millis>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Delivery>, StoreError>;
}

/// A receiver's answer to one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAnswer {
    pub status: u16,
    /// The start of its body (at most a few KiB), unredacted.
    pub body: String,
    pub retry_after: Option<String>,
}

/// Sends one signed delivery (an HTTP POST; no redirects followed).
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// The answer, or why there was none.
    async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Result<WebhookAnswer, SendError>;
}

/// Why a webhook attempt got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Not sent: the receiver's address is one a webhook may not reach (a private or
    /// metadata address, written or resolved). Waiting does not cure it.
    Refused(String),
    /// Sent, or tried, and no answer came (refused connection, timeout, TLS, ...).
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "not sent: {why}"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// Reaches people: the stack's notification topic (e-mail subscribers).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, subject: &str, message: &str) -> Result<(), String>;
}

/// A committed change the webhook fan-out turns into events.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Production(CommittedWrite),
    /// An alarm's state after the write, and whether this write opened it.
    Alarm(Alarm, bool),
}

/// A committed production write as the state table's stream delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedWrite {
    pub production_id: String,
    pub account: String,
    pub trace_id: String,
    pub version: u64,
    /// The production's status after the write.
    pub status: Option<ProductionStatus>,
    pub actor: String,
    pub events: Vec<AuditEvent>,
}

impl CommittedWrite {
    /// Its events as audit records, each with its sort key (`<at>#<version>#<i>`, so a
    /// replayed write overwrites the same rows).
    pub fn records(&self) -> impl Iterator<Item = (String, AuditRecord)> + '_ {
        self.events.iter().enumerate().map(|(i, e)| {
            let record = AuditRecord {
                event_type: e.kind.as_str().into(),
                production_id: Some(self.production_id.clone()),
                trace_id: Some(self.trace_id.clone()),
                account: Some(self.account.clone()),
                outcome: e.outcome.as_str().into(),
                actor: self.actor.clone(),
                at: e.at,
                phase: e.phase.clone(),
                attempt: e.attempt,
                detail: (!e.detail.is_empty()).then(|| e.detail.clone()),
            };
            (format!("{:013}#{:010}#{i}", e.at, self.version), record)
        })
    }
}

/// One audit event as stored in the audit table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(rename(deserialize = "et"))]
    pub event_type: String,
    #[serde(default)]
    pub production_id: Option<String>,
    #[serde(rename(deserialize = "tr"), default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    pub outcome: String,
    pub actor: String,
    pub at: Millis,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Which events to read. Every query is a `Query` on the table or one of its indexes.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditQuery {
    /// A production's whole trail.
    Production(String),
    /// Everything one trace touched.
    Trace(String),
    /// One event type within `[since, until)` (epoch milliseconds), of one account (read
    /// by key: another account's volume neither costs nor hides anything) or, for the
    /// stack's operators, of all.
    Type {
        event_type: String,
        since: Millis,
        until: Millis,
        account: Option<String>,
    },
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends the events of committed writes; a replayed write overwrites the same rows.
    async fn append(&self, writes: &[CommittedWrite]) -> Result<usize, StoreError>;
    /// Appends one event that belongs to no production write (a DLQ discard, an
    /// integration switched), filed under `subject` (`DLQ#brief`, `INT#primary`).
    async fn record(&self, subject: &str, record: &AuditRecord) -> Result<(), StoreError>;
    /// Events, oldest first, at most `limit`, from `after` (a cursor of the page before).
    async fn query(
        &self,
        q: &AuditQuery,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError>;
}

/// The state table's stream, read again (records are kept 24 hours).
#[async_trait]
pub trait StateStream: Send + Sync {
    /// The committed writes of shard `shard` from sequence number `from` to `to`
    /// (inclusive), oldest first.
    async fn writes(
        &self,
        stream_arn: &str,
        shard: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<CommittedWrite>, StoreError>;
}

/// Where a tool call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// Being made by `attempt` under the phase's lease.
    InProgress { attempt: u32, lease_until: Millis },
    /// Made; `result` holds the answer.
    Completed,
    /// Failed; `result` holds the error code, and it may be made again.
    Failed,
    /// Made, but its answer was unusable (`result` says why): never replayed; the next
    /// call is a fresh one.
    Rejected,
    /// An external job accepted by `attempt`, whose result comes by callback.
    Waiting { attempt: u32 },
}

/// A recorded tool-call outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub request_hash: String,
    pub status: OutcomeStatus,
    pub result: String,
    /// How many of the call's answers were rejected before this outcome.
    pub tries: u32,
}

/// The call ledger: tool-call outcomes by idempotency key.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn get(&self, key: &str, now: Millis) -> Result<Option<CallOutcome>, StoreError>;
    async fn put(
        &self,
        key: &str,
        outcome: &CallOutcome,
        expires_at: Millis,
    ) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait Queue: Send + Sync {
    /// Receives up to ten messages and hides them for `visibility` seconds.
    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<InMessage>, QueueError>;
    /// Reads up to ten messages, leaving them visible (for a glance, not for finding one:
    /// SQS samples its servers).
    async fn peek(&self, queue_url: &str, max: i32) -> Result<Vec<InMessage>, QueueError> {
        self.receive(queue_url, max, 0).await
    }
    /// As `receive`, asking every server of the queue (SQS's long polling, one second):
    /// a short-polled receive samples some servers and can answer nothing, or not every
    /// message, while messages wait. What scans a whole queue uses this.
    async fn receive_from_all(
        &self,
        queue_url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<InMessage>, QueueError> {
        self.receive(queue_url, max, visibility).await
    }
    /// Messages waiting to be received (SQS's `ApproximateNumberOfMessages`), if known:
    /// a scan skips a queue with none instead of waiting a long poll on it.
    async fn waiting(&self, _queue_url: &str) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
    async fn delete(&self, queue_url: &str, receipt: &str) -> Result<(), QueueError>;
    /// Sends messages (ten per request); returns the ids that failed.
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutMessage],
    ) -> Result<Vec<String>, QueueError>;
    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt: &str,
        seconds: i32,
    ) -> Result<(), QueueError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0} does not exist")]
    Missing(String),
    #[error("parameter {name} could not be read: {reason}")]
    Unavailable { name: String, reason: String },
}

#[async_trait]
pub trait Params: Send + Sync {
    /// Reads a parameter, decrypting SecureStrings.
    async fn get(&self, name: &str) -> Result<String, ParamError>;
    /// Forgets a cached value (a key the provider refused); a no-op without a cache.
    fn invalidate(&self, _name: &str) {}
    /// Writes a SecureString (a webhook's signing secrets), replacing any value.
    async fn put_secret(&self, name: &str, _value: &str) -> Result<(), ParamError> {
        Err(ParamError::Unavailable {
            name: name.into(),
            reason: "this parameter store is read-only".into(),
        })
    }
    /// Deletes a parameter; one that does not exist is not an error.
    async fn delete(&self, name: &str) -> Result<(), ParamError> {
        Err(ParamError::Unavailable {
            name: name.into(),
            reason: "this parameter store is read-only".into(),
        })
    }
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        d.as_millis() as Millis
    }
}

// ---- Providers ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
}

/// What a phase asks an image model for; the provider adapter writes the wire request
/// its model takes (GPT image models answer base64 always; DALL-E is asked for it).
#[derive(Debug, Clone, Serialize)]
pub struct ImageRequest {
    pub model: String,
    pub prompt: String,
    pub n: u32,
    pub size: String,
    /// `png`, `jpeg` or `webp` (GPT image models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
}

/// An image as a provider answered it: its bytes, whatever the wire carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// DALL-E 3 rewrites prompts; the prompt it used.
    pub revised_prompt: Option<String>,
    /// Flags an OpenAI-compatible provider raised on the image (`copyright_risk`,
    /// `attribution_required`, `low_safety_score`); OpenAI's own API sends none.
    pub warnings: Vec<String>,
}

/// A generated image as the call ledger records it: the artifact it was stored as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageResult {
    pub artifact: Artifact,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpeechRequest {
    pub model: String,
    pub input: String,
    pub voice: String,
    pub response_format: String,
}

/// Speech as a provider answered it: audio bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Speech as the call ledger records it: the artifact it was stored as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeechResult {
    pub artifact: Artifact,
    pub format: String,
}

/// One OpenAI-compatible API (or a generic HTTP JSON endpoint). `key` is the call's
/// idempotency key, sent as `Idempotency-Key`.
#[async_trait]
pub trait Provider: Send + Sync {
    async fn chat(&self, req: &ChatRequest, key: &str) -> Result<String, StepError>;
    async fn image(&self, req: &ImageRequest, key: &str) -> Result<GeneratedImage, StepError>;
    async fn speech(&self, req: &SpeechRequest, key: &str) -> Result<Audio, StepError>;
    /// Moderates one image (`image_url`: a URL or a `data:` URL) with `model`: every
    /// category's score.
    async fn moderate(
        &self,
        model: &str,
        image_url: &str,
        key: &str,
    ) -> Result<crate::domain::moderation::Moderation, StepError>;
    /// POST `body` to the base URL itself; the JSON answer back.
    async fn post_json(
        &self,
        body: &serde_json::Value,
        key: &str,
    ) -> Result<serde_json::Value, StepError>;
    /// Whether the API answers with its key (never shows the key): what it said, and ok.
    async fn probe(&self) -> (String, bool);
}

/// One MCP server's session.
#[async_trait]
pub trait McpSession: Send + Sync {
    /// Calls one tool; its structured result, or its text parsed as JSON, or its text.
    async fn call_tool(
        &self,
        name: &str,
        arguments: &serde_json::Value,
    ) -> Result<serde_json::Value, StepError>;
    /// Forgets the session: the next call starts a new one.
    async fn disconnect(&self);
}

/// One request to a source-control host's REST API: `path` is relative to the
/// integration's base URL (`/repos/acme/widgets/pulls?head=acme:x`), `body` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScmRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// The SSM parameter of the token to send (an account's own); none: the stack's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_param: Option<String>,
}

impl ScmRequest {
    /// The same request made with the token in `param` (an account's own), if any.
    pub fn with_token(mut self, param: Option<&str>) -> Self {
        self.token_param = param.map(str::to_string);
        self
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            body: None,
            token_param: None,
        }
    }
    pub fn send(method: &str, path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            body: Some(body),
            token_param: None,
        }
    }
}

/// What the host answered: a success (2xx), or a 422 (the request does not fit the
/// repository as it is: a branch or pull request that already exists, a missing `sha`),
/// which the phase reads. Everything else is an error (`scm_forbidden`, `scm_not_found`,
/// `scm_conflict`, the provider codes for 401, rate limits and 5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScmAnswer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl ScmAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The host's `message` (GitHub's error bodies), or "".
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// A source-control host (GitHub's REST API shapes).
#[async_trait]
pub trait Scm: Send + Sync {
    async fn send(&self, req: &ScmRequest) -> Result<ScmAnswer, StepError>;
}

/// Makes the clients of the registry's integrations (one per integration, kept by the
/// caller).
pub trait Connector: Send + Sync {
    fn provider(&self, id: &str, def: &Definition) -> Arc<dyn Provider>;
    fn mcp(&self, id: &str, def: &Definition) -> Arc<dyn McpSession>;
    fn scm(&self, id: &str, def: &Definition) -> Arc<dyn Scm>;
}

/// Every port one deployment's code uses, built in one place (`wiring` for AWS,
/// `adapters::memory` for tests).
#[derive(Clone)]
pub struct Ports {
    pub productions: Arc<dyn Productions>,
    pub outputs: Arc<dyn Outputs>,
    pub accounts: Arc<dyn Accounts>,
    pub alarms: Arc<dyn Alarms>,
    pub webhooks: Arc<dyn Webhooks>,
    pub schedules: Arc<dyn Schedules>,
    pub intake: Arc<dyn Intake>,
    pub fetch: Arc<dyn Fetch>,
    pub health: Arc<dyn HealthStore>,
    pub audit: Arc<dyn AuditLog>,
    pub ledger: Arc<dyn Ledger>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub stream: Arc<dyn StateStream>,
    pub queue: Arc<dyn Queue>,
    pub params: Arc<dyn Params>,
    pub connector: Arc<dyn Connector>,
    pub clock: Arc<dyn Clock>,
}
