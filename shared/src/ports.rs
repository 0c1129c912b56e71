//! Ports: the small traits the runtime needs from the outside world. Adapters in
//! [`crate::adapters`] implement them with the AWS SDK; the same adapters run in tests
//! against the local emulator.

use futures::future::BoxFuture;

use crate::domain::{Brief, Millis, Production, Transition};

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

/// Who did it, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

pub trait Store: Send + Sync {
    /// Creates the production and its brief and reserves the account's allowance and a
    /// concurrency slot, atomically (never overwrites; `LimitReached` changes nothing).
    fn create<'a>(
        &'a self,
        t: &'a Transition,
        brief: &'a Brief,
        actor: &'a Actor,
        reservation: &'a crate::limits::Reservation,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// An account's limits and usage in `month` (`defaults` where it has none).
    fn account<'a>(
        &'a self,
        account: &'a str,
        month: &'a str,
        defaults: crate::limits::Limits,
    ) -> BoxFuture<'a, Result<crate::limits::AccountUsage, StoreError>>;
    /// Sets an account's own limits (`None`: the stack's default).
    fn set_limits<'a>(
        &'a self,
        account: &'a str,
        limits: crate::limits::Limits,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Consistent read of one production.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Production>, StoreError>>;
    /// One conditional update, no read: the rule of `domain::claim_refusal`.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        phase: &'a str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> BoxFuture<'a, Result<ClaimOutcome, StoreError>>;
    /// Writes `t.production` and its audit events in one item write, if the stored
    /// version is still `t.production.version - 1`.
    fn commit<'a>(
        &'a self,
        t: &'a Transition,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>>;
    /// Like `commit`, and replaces the production's brief in the same transaction (edit).
    fn commit_with_brief<'a>(
        &'a self,
        t: &'a Transition,
        brief: &'a Brief,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>>;
    fn get_brief<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Brief>, StoreError>>;
    /// Stores a phase's output apart from the hot item; returns its key.
    fn put_output<'a>(
        &'a self,
        id: &'a str,
        phase: &'a str,
        attempt: u32,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
    fn get_output<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>>;
    /// Records an alarm occurrence (deduplicated by type and subject).
    fn raise_alarm<'a>(
        &'a self,
        alarm: &'a crate::alarms::Raise,
        now: Millis,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn alarms<'a>(&'a self) -> BoxFuture<'a, Result<Vec<crate::alarms::Alarm>, StoreError>>;
    /// Acknowledges or resolves an alarm; `false` if there is no such alarm.
    fn set_alarm_status<'a>(
        &'a self,
        id: &'a str,
        status: crate::alarms::AlarmStatus,
        actor: &'a Actor,
        now: Millis,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Ids of productions due for the recovery sweep at `now` (a sparse index Query).
    fn due<'a>(
        &'a self,
        now: Millis,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// An integration's health record (a fresh, healthy one if none is stored).
    fn health<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<crate::integrations::Health, StoreError>>;
    /// Stores `h` if the stored version is `h.version - 1`; `false` if someone else wrote first.
    fn put_health<'a>(
        &'a self,
        h: &'a crate::integrations::Health,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Newest first, one account's productions, optionally only those in one status.
    fn list<'a>(
        &'a self,
        account: &'a str,
        status: Option<crate::domain::ProductionStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Production>, StoreError>>;
}

#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

/// One message to send; `id` is unique within a batch.
#[derive(Debug, Clone)]
pub struct OutMessage {
    pub id: String,
    pub body: String,
    pub attributes: Vec<(String, String)>,
}

/// A message read from a queue.
#[derive(Debug, Clone, Default)]
pub struct InMessage {
    pub id: String,
    pub body: String,
    pub receipt: String,
    /// When it was first sent (SentTimestamp).
    pub sent_at: Option<crate::domain::Millis>,
    /// Its message attributes' string values (`shepherd_error`, lineage, ...).
    pub attributes: std::collections::BTreeMap<String, String>,
}

pub trait Queue: Send + Sync {
    /// Reads up to ten messages, leaving them visible (for inspection, not processing).
    fn peek<'a>(
        &'a self,
        queue_url: &'a str,
        max: i32,
    ) -> BoxFuture<'a, Result<Vec<InMessage>, QueueError>> {
        self.receive(queue_url, max, 0)
    }
    /// Receives up to ten messages and hides them for `visibility` seconds.
    fn receive<'a>(
        &'a self,
        queue_url: &'a str,
        max: i32,
        visibility: i32,
    ) -> BoxFuture<'a, Result<Vec<InMessage>, QueueError>>;
    fn delete<'a>(
        &'a self,
        queue_url: &'a str,
        receipt: &'a str,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
    /// Sends up to ten messages in one request; returns the ids that failed.
    fn send_batch<'a>(
        &'a self,
        queue_url: &'a str,
        messages: &'a [OutMessage],
    ) -> BoxFuture<'a, Result<Vec<String>, QueueError>>;
    fn change_visibility<'a>(
        &'a self,
        queue_url: &'a str,
        receipt_handle: &'a str,
        seconds: i32,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0} does not exist")]
    Missing(String),
    #[error("parameter {name} could not be read: {reason}")]
    Unavailable { name: String, reason: String },
}

pub trait Params: Send + Sync {
    /// Reads a parameter, decrypting SecureStrings.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<String, ParamError>>;
    /// Forgets a cached value (a key the provider refused); a no-op without a cache.
    fn invalidate(&self, _name: &str) {}
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
}

/// A recorded tool-call outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub request_hash: String,
    pub status: OutcomeStatus,
    pub result: String,
}

pub trait Outcomes: Send + Sync {
    fn get<'a>(
        &'a self,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, Result<Option<Outcome>, StoreError>>;
    fn put<'a>(
        &'a self,
        key: &'a str,
        outcome: &'a Outcome,
        expires_at: Millis,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
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
