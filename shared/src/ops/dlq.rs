//! Dead-letter queues for operators: list, show, redrive (one message or many, filtered and
//! rate-limited) and discard (admin, audited).
//!
//! A redrive moves the original message back to its source queue, as the AWS console and
//! `aws sqs start-message-move-task` do, adding `shepherd_redriven_from` (the DLQ message
//! id) and `shepherd_redriven_by`. The phase runtime accepts a message whose attempt was
//! dead-lettered as a resubmission, whichever tool moved it: attempt + 1, `dlq.redriven`
//! audited with the lineage. Malformed messages are skipped unless asked for (they would
//! only be quarantined again).

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::{Ops, OpsError};
use crate::domain::authz::Permission;
use crate::domain::input;
use crate::domain::{AuditKind, Caller, Millis, Outcome, Production};
use crate::ports::{AuditRecord, InMessage};
use crate::protocol::{PhaseMessage, attr};

/// SQS's longest message retention.
const MAX_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// One message in a phase's DLQ, as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DlqEntry {
    pub phase: String,
    pub message_id: String,
    pub production_id: Option<String>,
    /// The production's account, when the production is known.
    pub account: Option<String>,
    pub attempt: Option<u32>,
    /// `malformed_message: ...`, or the phase's last error (`code: detail`).
    pub reason: String,
    /// The error code a redrive filter matches (`malformed_message` for poison).
    pub code: String,
    pub age_secs: i64,
    pub malformed: bool,
    pub body: String,
}

/// Which DLQ messages a redrive moves.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    pub phase: Option<String>,
    pub code: Option<String>,
    pub older_than: Option<Duration>,
    pub message_id: Option<String>,
    pub include_malformed: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    /// (DLQ message id, phase, production id) of every message moved back.
    pub moved: Vec<(String, String, Option<String>)>,
    pub skipped: usize,
}

/// The most messages a listing or a lookup by id reads from one DLQ.
const PEEK_CAP: usize = 1000;

/// How long a redrive or discard holds messages it is not moving (released at the end).
const HOLD_SECS: i32 = 60;

impl Ops {
    fn dlqs(&self, phase: Option<&str>) -> Result<Vec<(String, String)>, OpsError> {
        let all = self.stack.topology.dlqs.iter();
        let found: Vec<(String, String)> = all
            .filter(|(k, _)| phase.is_none_or(|p| p == k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match phase {
            Some(p) if found.is_empty() => {
                Err(OpsError::Invalid(format!("no DLQ for phase {p:?}")))
            }
            _ => Ok(found),
        }
    }

    async fn entry(
        &self,
        phase: &str,
        m: &InMessage,
        now: Millis,
    ) -> (DlqEntry, Option<Production>) {
        let parsed = PhaseMessage::parse(&m.body, phase).ok();
        let production = match &parsed {
            Some(msg) => self
                .ports
                .productions
                .get(&msg.production_id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let quarantined = m.attributes.get(attr::ERROR).cloned();
        let malformed = quarantined.is_some() || parsed.is_none();
        let last_error = production
            .as_ref()
            .and_then(|p| p.phase(phase))
            .and_then(|ph| ph.last_error.clone());
        let (reason, code) = match (&quarantined, &last_error) {
            (Some(q), _) => (q.clone(), "malformed_message".to_string()),
            (None, Some(e)) => (format!("{}: {}", e.code, e.detail), e.code.to_string()),
            (None, None) if parsed.is_none() => (
                "body is not a phase message".into(),
                "malformed_message".into(),
            ),
            (None, None) => ("no error recorded".into(), "unknown".into()),
        };
        let entry = DlqEntry {
            phase: phase.into(),
            message_id: m.id.clone(),
            production_id: parsed.as_ref().map(|p| p.production_id.clone()),
            account: production.as_ref().map(|p| p.account.clone()),
            attempt: parsed.as_ref().map(|p| p.attempt),
            reason,
            code,
            age_secs: m.sent_at.map(|s| (now - s) / 1000).unwrap_or(0),
            malformed,
            body: m.body.clone(),
        };
        (entry, production)
    }

    /// Receives every message of a DLQ, hiding each for `HOLD_SECS`; the caller deletes
    /// the ones it moves and releases the rest.
    async fn hold_all(&self, dlq: &str) -> Result<Vec<InMessage>, OpsError> {
        self.hold_until(dlq, usize::MAX, |_| false).await
    }

    /// Receives a DLQ's messages, hiding each for `HOLD_SECS` so the next receive brings
    /// others, until `stop` holds for one, `cap` are held, or none is left. Receives ask
    /// every SQS server (long polling), so "none left" is true and not a sample's
    /// accident; a DLQ with nothing waiting is not polled at all. The caller releases (or
    /// deletes) what it holds.
    async fn hold_until(
        &self,
        dlq: &str,
        cap: usize,
        stop: impl Fn(&InMessage) -> bool,
    ) -> Result<Vec<InMessage>, OpsError> {
        let failed = |e: crate::ports::QueueError| OpsError::Invalid(e.to_string());
        let queue = &self.ports.queue;
        let mut held: Vec<InMessage> = Vec::new();
        if queue.waiting(dlq).await.map_err(failed)? == Some(0) {
            return Ok(held);
        }
        let mut seen = HashSet::new();
        while held.len() < cap {
            let got = queue
                .receive_from_all(dlq, 10, HOLD_SECS)
                .await
                .map_err(failed)?;
            if got.is_empty() || got.iter().all(|m| seen.contains(&m.id)) {
                break;
            }
            let found = got.iter().any(&stop);
            held.extend(got.into_iter().filter(|m| seen.insert(m.id.clone())));
            if found {
                break;
            }
        }
        Ok(held)
    }

    /// Makes held messages visible again.
    async fn release(&self, dlq: &str, receipts: &[String]) {
        for receipt in receipts {
            let _ = self.ports.queue.change_visibility(dlq, receipt, 0).await;
        }
    }

    /// The messages in one phase's DLQ (or all) the caller may see, without taking them:
    /// each is hidden for the moment it is read (so every one is read once) and made
    /// visible again before this returns.
    pub async fn dlq_list(
        &self,
        phase: Option<&str>,
        limit: usize,
        caller: &Caller,
    ) -> Result<Vec<DlqEntry>, OpsError> {
        caller.may(Permission::Read)?;
        input::count("limit", limit, 1000).map_err(OpsError::Invalid)?;
        let now = self.ports.clock.now();
        let mut out = Vec::new();
        for (phase, url) in self.dlqs(phase)? {
            if out.len() >= limit {
                break;
            }
            let held = self.hold_until(&url, PEEK_CAP, |_| false).await?;
            for m in &held {
                let entry = self.entry(&phase, m, now).await.0;
                if caller.sees(entry.account.as_deref()) && out.len() < limit {
                    out.push(entry);
                }
            }
            let receipts: Vec<String> = held.into_iter().map(|m| m.receipt).collect();
            self.release(&url, &receipts).await;
        }
        Ok(out)
    }

    /// One DLQ message, decoded, with its production's current state.
    pub async fn dlq_show(
        &self,
        message_id: &str,
        caller: &Caller,
    ) -> Result<(DlqEntry, Option<Production>), OpsError> {
        input::id("message id", message_id).map_err(OpsError::Invalid)?;
        caller.may(Permission::Read)?;
        // SQS finds no message by id: read each DLQ (every server, each message once)
        // until it shows, then make what was read visible again. The one production read
        // is the found message's.
        let mut found = None;
        for (phase, url) in self.dlqs(None)? {
            let held = self
                .hold_until(&url, PEEK_CAP, |m| m.id == message_id)
                .await?;
            let receipts: Vec<String> = held.iter().map(|m| m.receipt.clone()).collect();
            self.release(&url, &receipts).await;
            if let Some(m) = held.into_iter().find(|m| m.id == message_id) {
                found = Some((phase, m));
                break;
            }
        }
        let not_found = || OpsError::NotFound(format!("DLQ message {message_id}"));
        let (phase, m) = found.ok_or_else(not_found)?;
        let entry = self.entry(&phase, &m, self.ports.clock.now()).await.0;
        if !caller.sees(entry.account.as_deref()) {
            return Err(not_found());
        }
        let production = match &entry.production_id {
            Some(id) => self.ports.productions.get(id).await?,
            None => None,
        };
        Ok((entry, production))
    }

    /// Moves matching DLQ messages the caller may see back to their source queues, at
    /// most `per_second`.
    pub async fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        per_second: u32,
        caller: &Caller,
    ) -> Result<RedriveReport, OpsError> {
        caller.may(Permission::Redrive)?;
        // SQS keeps a message at most 14 days: an older bound matches nothing, and a larger
        // one would overflow the arithmetic of ages.
        if filter.older_than.is_some_and(|d| d > MAX_RETENTION) {
            return Err(OpsError::Invalid(format!(
                "older_than_secs must be at most {} (14 days, SQS's longest retention)",
                MAX_RETENTION.as_secs()
            )));
        }
        let pause = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
        let mut report = RedriveReport::default();
        for (phase, dlq) in self.dlqs(filter.phase.as_deref())? {
            let source = self.stack.topology.queue(&phase)?.to_string();
            let messages = self.hold_all(&dlq).await?;
            let now = self.ports.clock.now();
            let mut held = Vec::new();
            let mut failure = None;
            for m in messages {
                let (entry, _) = self.entry(&phase, &m, now).await;
                let matches = filter.message_id.as_ref().is_none_or(|id| *id == m.id)
                    && filter.code.as_ref().is_none_or(|c| *c == entry.code)
                    && filter
                        .older_than
                        .is_none_or(|d| entry.age_secs >= d.as_secs() as i64)
                    && (!entry.malformed || filter.include_malformed)
                    && caller.sees(entry.account.as_deref());
                if !matches || failure.is_some() {
                    report.skipped += usize::from(failure.is_none());
                    held.push(m.receipt.clone());
                    continue;
                }
                let out = crate::protocol::redriven(&m, &caller.actor.0);
                let sent = self.dispatcher.send_to(&source, out).await;
                if let Err(e) = sent {
                    held.push(m.receipt.clone());
                    failure = Some(OpsError::DispatchFailed {
                        id: entry.production_id.unwrap_or_default(),
                        reason: format!("could not send DLQ message {} back: {e}", m.id),
                    });
                    continue;
                }
                // Sent first, deleted second: a failure in between leaves a duplicate,
                // which the claim dedupes, never a loss.
                let _ = self.ports.queue.delete(&dlq, &m.receipt).await;
                report
                    .moved
                    .push((m.id.clone(), phase.clone(), entry.production_id.clone()));
                tokio::time::sleep(pause).await;
            }
            self.release(&dlq, &held).await;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if filter.message_id.is_some() && report.moved.is_empty() {
            return Err(OpsError::NotFound(format!(
                "DLQ message {} (or it is malformed: pass include_malformed)",
                filter.message_id.as_deref().unwrap_or_default()
            )));
        }
        Ok(report)
    }

    /// Writes one audit row that belongs to no production's state write (a DLQ discard,
    /// an integration switched), filed under `subject`. Redacted like every row.
    pub(crate) async fn audit_row(
        &self,
        subject: &str,
        kind: AuditKind,
        detail: &str,
        production: Option<&Production>,
        caller: &Caller,
    ) -> Result<(), OpsError> {
        let record = AuditRecord {
            event_type: kind.as_str().into(),
            production_id: production.map(|p| p.id.clone()),
            trace_id: production.map(|p| p.trace_id.clone()),
            account: production.map(|p| p.account.clone()),
            outcome: Outcome::Success.as_str().into(),
            actor: caller.actor.0.clone(),
            at: self.ports.clock.now(),
            phase: None,
            attempt: None,
            detail: Some(crate::domain::redact::redact(detail).text),
        };
        self.ports.audit.record(subject, &record).await?;
        Ok(())
    }

    /// Deletes one DLQ message for good (admin). The audit row is written first: if it
    /// cannot be, the message stays.
    pub async fn dlq_discard(
        &self,
        message_id: &str,
        reason: &str,
        caller: &Caller,
    ) -> Result<DlqEntry, OpsError> {
        caller.may(Permission::Discard)?;
        input::id("message id", message_id).map_err(OpsError::Invalid)?;
        if reason.trim().is_empty() {
            return Err(OpsError::Invalid("discard needs a reason".into()));
        }
        input::text("reason", reason, 500).map_err(OpsError::Invalid)?;
        for (phase, dlq) in self.dlqs(None)? {
            let (found, others): (Vec<InMessage>, Vec<InMessage>) = self
                .hold_all(&dlq)
                .await?
                .into_iter()
                .partition(|m| m.id == message_id);
            let others: Vec<String> = others.into_iter().map(|m| m.receipt).collect();
            self.release(&dlq, &others).await;
            let found = found.into_iter().next();
            let Some(m) = found else { continue };
            let now = self.ports.clock.now();
            let (entry, production) = self.entry(&phase, &m, now).await;
            if !caller.sees(entry.account.as_deref()) {
                self.release(&dlq, &[m.receipt]).await;
                break;
            }
            self.audit_row(
                &format!("DLQ#{phase}"),
                AuditKind::DlqDiscarded,
                &format!("phase {phase}, message {}: {}", m.id, reason.trim()),
                production.as_ref(),
                caller,
            )
            .await?;
            self.ports
                .queue
                .delete(&dlq, &m.receipt)
                .await
                .map_err(|e| OpsError::Invalid(e.to_string()))?;
            return Ok(entry);
        }
        Err(OpsError::NotFound(format!("DLQ message {message_id}")))
    }
}
