//! The one write path: decide -> conditional commit (optimistic, redacted, audited in the
//! same write) -> dispatch. The runtime, operator actions and the sweep all write through
//! [`Transitioner`] and send through [`Dispatcher`]; they differ only in their conflict
//! policy ([`OnConflict`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{error, warn};

use crate::config::Topology;
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::limits::Reservation;
use crate::domain::{
    Actor, AuditEvent, Command, Dispatch, DomainError, Production, Transition, decide,
};
use crate::ports::{
    Alarms, Clock, CommitOutcome, OutMessage, Productions, Queue, StartKey, StoreError,
};
use crate::protocol::PhaseMessage;

/// What a writer does when someone else changed the production first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Decide the same command again on the newer state (at most this many writes): the
    /// runtime, whose result still stands if the state machine still takes it.
    Redecide(u32),
    /// Return [`Written::Conflicted`]: the caller re-reads and decides afresh (operators,
    /// whose input may have changed too, and the sweep, whose command depends on the state).
    GiveUp,
}

/// What a write did.
#[derive(Debug)]
pub enum Written {
    Committed(Box<Transition>),
    /// The state machine refused the command (on the state it was decided on).
    Refused(DomainError),
    /// Someone else wrote first (and the policy was to give up, or the retries ran out).
    Conflicted,
    /// The production no longer exists.
    Gone,
}

/// Writes productions: every change goes through here.
pub struct Transitioner {
    productions: Arc<dyn Productions>,
    alarms: Arc<dyn Alarms>,
    clock: Arc<dyn Clock>,
}

impl Transitioner {
    pub fn new(
        productions: Arc<dyn Productions>,
        alarms: Arc<dyn Alarms>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            productions,
            alarms,
            clock,
        }
    }

    /// Creates a production (and reserves the account's allowance and a slot) from
    /// `domain::start`'s transition.
    pub async fn create(
        &self,
        mut t: Transition,
        input: &serde_json::Value,
        actor: &Actor,
        reservation: &Reservation,
        key: Option<&StartKey>,
    ) -> Result<Transition, StoreError> {
        let leaks = crate::domain::redact::scrub(&mut t, None);
        self.productions
            .create(&t, input, actor, reservation, key)
            .await?;
        self.leaked(&t.production, leaks).await;
        Ok(t)
    }

    /// Decides `cmd` on `p` and commits it with `extra` audit events (and `input`, for an
    /// edit) in the same write.
    pub async fn write(
        &self,
        mut p: Production,
        cmd: Command,
        actor: &Actor,
        extra: &[AuditEvent],
        input: Option<&serde_json::Value>,
        policy: OnConflict,
    ) -> Result<Written, StoreError> {
        let tries = match policy {
            OnConflict::Redecide(n) => n.max(1),
            OnConflict::GiveUp => 1,
        };
        for _ in 0..tries {
            let mut t = match decide(&p, cmd.clone(), self.clock.now()) {
                Ok(t) => t,
                Err(e) => return Ok(Written::Refused(e)),
            };
            t.audit.extend_from_slice(extra);
            // An override's admin is the audit's actor, known here and not to `decide`.
            if let Some(mark) = t.production.overridden.as_mut().filter(|m| m.by.is_empty()) {
                mark.by = actor.0.clone();
            }
            let leaks = crate::domain::redact::scrub(&mut t, Some(&p));
            match self.productions.commit(&t, actor, input).await? {
                CommitOutcome::Committed => {
                    self.leaked(&t.production, leaks).await;
                    return Ok(Written::Committed(Box::new(t)));
                }
                CommitOutcome::Conflict(None) => return Ok(Written::Gone),
                CommitOutcome::Conflict(Some(current)) => p = *current,
            }
        }
        Ok(Written::Conflicted)
    }

    /// After a write that had to redact a known secret format: a critical alarm.
    async fn leaked(&self, p: &Production, leaks: Vec<String>) {
        if leaks.is_empty() {
            return;
        }
        let detail = format!("redacted before storing: {}", leaks.join("; "));
        error!(production = %p.id, detail = %detail, "secret leak detected and redacted");
        self.alarm(
            AlarmKind::SecretLeakDetected,
            p,
            Severity::Critical,
            &detail,
        )
        .await;
    }

    /// `member` recovered: it leaves alarm `id`'s affected set (resolved when empty).
    pub async fn leave(&self, id: &str, member: &str, actor: &Actor) {
        let now = self.clock.now();
        if let Err(e) = self.alarms.leave(id, member, actor, now).await {
            warn!(error = %e, alarm = %id, "could not update the alarm");
        }
    }

    /// Records an alarm; a failure to record it is logged, never the caller's failure.
    pub async fn raise(&self, raise: &Raise) {
        if let Err(e) = self.alarms.raise(raise, self.clock.now()).await {
            warn!(error = %e, kind = %raise.kind, subject = %raise.subject, "could not record the alarm");
        }
    }

    /// Records an alarm about production `p` (its account sees it); a failure to record it
    /// is logged, never the caller's failure.
    pub async fn alarm(&self, kind: AlarmKind, p: &Production, severity: Severity, detail: &str) {
        self.raise(&Raise::production(kind, p, severity, detail))
            .await;
    }
}

/// A phase message to send: which production's which phase; `id` names it in its batch.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub id: String,
    pub production: String,
    pub dispatch: Dispatch,
}

/// Why a dispatch was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DispatchError(pub String);

/// Sends what the write path decided: phase messages, quarantined and redriven messages.
pub struct Dispatcher {
    queue: Arc<dyn Queue>,
    topology: Arc<Topology>,
}

impl Dispatcher {
    pub fn new(queue: Arc<dyn Queue>, topology: Arc<Topology>) -> Self {
        Self { queue, topology }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Sends phase messages, one `SendMessageBatch` per phase; returns the ids not sent.
    pub async fn send(&self, items: &[Handoff]) -> Vec<String> {
        let mut by_phase: BTreeMap<&str, Vec<&Handoff>> = BTreeMap::new();
        for h in items {
            by_phase.entry(&h.dispatch.phase).or_default().push(h);
        }
        let mut lost = Vec::new();
        for (phase, items) in by_phase {
            let all = || items.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            let url = match self.topology.queue(phase) {
                Ok(u) => u,
                Err(e) => {
                    error!(error = %e, "no queue to dispatch to");
                    lost.extend(all());
                    continue;
                }
            };
            let messages: Vec<OutMessage> = items
                .iter()
                .map(|h| PhaseMessage::new(&h.production, phase, h.dispatch.attempt).out(&h.id))
                .collect();
            match self.queue.send_batch(url, &messages).await {
                Ok(failed) => lost.extend(failed),
                Err(e) => {
                    error!(error = %e, phase, "dispatch failed");
                    lost.extend(all());
                }
            }
        }
        lost
    }

    /// Sends one production's next phase message.
    pub async fn send_one(&self, production: &str, d: &Dispatch) -> Result<(), DispatchError> {
        let url = self
            .topology
            .queue(&d.phase)
            .map_err(|e| DispatchError(e.to_string()))?;
        let msg = PhaseMessage::new(production, &d.phase, d.attempt).out("one");
        self.send_to(url, msg).await
    }

    /// Moves a message no retry can fix to `phase`'s DLQ with its reason.
    pub async fn quarantine(
        &self,
        phase: &str,
        body: &str,
        reason: &str,
        source_id: &str,
    ) -> Result<(), DispatchError> {
        let dlq = self
            .topology
            .dlq(phase)
            .map_err(|e| DispatchError(e.to_string()))?;
        let out = crate::protocol::quarantined(body, reason, source_id);
        self.send_to(dlq, out).await
    }

    /// Sends `body` to `phase`'s queue again after `delay` (a hold).
    pub async fn resend(&self, phase: &str, body: &str, delay: u32) -> Result<(), DispatchError> {
        let url = self
            .topology
            .queue(phase)
            .map_err(|e| DispatchError(e.to_string()))?;
        self.send_to(url, crate::protocol::again(body, Some(delay)))
            .await
    }

    /// Moves `body` to `phase`'s DLQ as it is (its attempt was dead-lettered; a redrive
    /// sends it back).
    pub async fn dead_letter(&self, phase: &str, body: &str) -> Result<(), DispatchError> {
        let dlq = self
            .topology
            .dlq(phase)
            .map_err(|e| DispatchError(e.to_string()))?;
        self.send_to(dlq, crate::protocol::again(body, None)).await
    }

    /// Sends one message to a queue.
    pub async fn send_to(&self, url: &str, msg: OutMessage) -> Result<(), DispatchError> {
        match self.queue.send_batch(url, std::slice::from_ref(&msg)).await {
            Ok(failed) if failed.is_empty() => Ok(()),
            Ok(_) => Err(DispatchError("SQS refused the message".into())),
            Err(e) => Err(DispatchError(e.to_string())),
        }
    }
}
