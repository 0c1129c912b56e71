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

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::domain::{Millis, Production};
use crate::ops::{Ops, OpsError, Role};
use crate::ports::{Actor, InMessage, OutMessage};
use crate::runtime::PhaseMessage;

/// One message in a phase's DLQ, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
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
    /// Only messages of this account's productions (API callers); `None`: every message.
    pub account: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    /// (DLQ message id, phase, production id) of every message moved back.
    pub moved: Vec<(String, String, Option<String>)>,
    pub skipped: usize,
}

/// How long a redrive or discard holds messages it is not moving (released at the end).
const HOLD_SECS: i32 = 60;

impl Ops {
    fn dlqs(&self, phase: Option<&str>) -> Result<Vec<(String, String)>, OpsError> {
        let all: Vec<(String, String)> = self
            .stack
            .dlqs
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        match phase {
            None => Ok(all),
            Some(p) => {
                let found: Vec<_> = all.into_iter().filter(|(k, _)| k == p).collect();
                if found.is_empty() {
                    return Err(OpsError::Invalid(format!("no DLQ for phase {p:?}")));
                }
                Ok(found)
            }
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
            Some(msg) => self.store.get(&msg.production_id).await.ok().flatten(),
            None => None,
        };
        let quarantined = m.attributes.get("shepherd_error").cloned();
        let malformed = quarantined.is_some() || parsed.is_none();
        let last_error = production
            .as_ref()
            .and_then(|p| p.phase(phase))
            .and_then(|ph| ph.last_error.clone());
        let (reason, code) = match (&quarantined, &last_error) {
            (Some(q), _) => (q.clone(), "malformed_message".to_string()),
            (None, Some(e)) => (format!("{}: {}", e.code, e.detail), e.code.clone()),
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
        let mut held: Vec<InMessage> = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let got = self
                .queue
                .receive(dlq, 10, HOLD_SECS)
                .await
                .map_err(|e| OpsError::Invalid(e.to_string()))?;
            if got.is_empty() || got.iter().all(|m| seen.contains(&m.id)) {
                return Ok(held);
            }
            held.extend(got.into_iter().filter(|m| seen.insert(m.id.clone())));
        }
    }

    /// Makes held messages visible again.
    async fn release(&self, dlq: &str, receipts: &[String]) {
        for receipt in receipts {
            let _ = self.queue.change_visibility(dlq, receipt, 0).await;
        }
    }

    /// The messages in one phase's DLQ (or all), without taking them.
    pub async fn dlq_list(
        &self,
        phase: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DlqEntry>, OpsError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for (phase, url) in self.dlqs(phase)? {
            let mut seen = HashSet::new();
            let mut idle_rounds = 0;
            while out.len() < limit && idle_rounds < 2 {
                let got = self
                    .queue
                    .peek(&url, 10)
                    .await
                    .map_err(|e| OpsError::Invalid(e.to_string()))?;
                let before = seen.len();
                for m in got {
                    if seen.insert(m.id.clone()) {
                        out.push(self.entry(&phase, &m, now).await.0);
                    }
                }
                idle_rounds = if seen.len() == before {
                    idle_rounds + 1
                } else {
                    0
                };
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One DLQ message, decoded, with its production's current state.
    pub async fn dlq_show(
        &self,
        message_id: &str,
    ) -> Result<(DlqEntry, Option<Production>), OpsError> {
        let entry = self
            .dlq_list(None, 1000)
            .await?
            .into_iter()
            .find(|e| e.message_id == message_id)
            .ok_or_else(|| OpsError::NotFound(format!("DLQ message {message_id}")))?;
        let production = match &entry.production_id {
            Some(id) => self.store.get(id).await?,
            None => None,
        };
        Ok((entry, production))
    }

    /// Moves matching DLQ messages back to their source queues, at most `per_second`.
    pub async fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        per_second: u32,
        actor: &Actor,
        role: Role,
    ) -> Result<RedriveReport, OpsError> {
        if role < Role::Operator {
            return Err(OpsError::Forbidden(
                "redrive needs the Operator role".into(),
            ));
        }
        let pause = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
        let mut report = RedriveReport::default();
        for (phase, dlq) in self.dlqs(filter.phase.as_deref())? {
            let source = self
                .queues
                .get(&phase)
                .cloned()
                .ok_or_else(|| OpsError::Config(format!("no queue for phase {phase}")))?;
            let messages = self.hold_all(&dlq).await?;
            let now = self.clock.now();
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
                    && filter
                        .account
                        .as_ref()
                        .is_none_or(|a| entry.account.as_ref() == Some(a));
                if !matches || failure.is_some() {
                    report.skipped += usize::from(failure.is_none());
                    held.push(m.receipt.clone());
                    continue;
                }
                let out = OutMessage {
                    id: "redrive".into(),
                    body: m.body.clone(),
                    attributes: vec![
                        ("shepherd_redriven_from".into(), m.id.clone()),
                        ("shepherd_redriven_by".into(), actor.0.clone()),
                    ],
                };
                let sent = self
                    .queue
                    .send_batch(&source, std::slice::from_ref(&out))
                    .await;
                if !matches!(sent, Ok(ref failed) if failed.is_empty()) {
                    held.push(m.receipt.clone());
                    failure = Some(OpsError::DispatchFailed {
                        id: entry.production_id.unwrap_or_default(),
                        reason: format!("could not send DLQ message {} back: {sent:?}", m.id),
                    });
                    continue;
                }
                // Sent first, deleted second: a failure in between leaves a duplicate,
                // which the claim dedupes, never a loss.
                let _ = self.queue.delete(&dlq, &m.receipt).await;
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
    /// an integration switched): `pk` names what it is about. Redacted like every row.
    pub(crate) async fn audit_row(
        &self,
        pk: &str,
        event_type: &str,
        detail: &str,
        production: Option<&Production>,
        actor: &Actor,
    ) -> Result<(), OpsError> {
        let Some((client, table)) = &self.audit else {
            return Err(OpsError::Config("no audit table configured".into()));
        };
        let now = self.clock.now();
        let s = |v: &str| AttributeValue::S(v.to_string());
        let mut item = std::collections::HashMap::from([
            ("pk".to_string(), s(pk)),
            (
                "sk".to_string(),
                s(&format!("{now:013}#{}", uuid::Uuid::now_v7().simple())),
            ),
            ("et".to_string(), s(event_type)),
            ("outcome".to_string(), s("success")),
            ("actor".to_string(), s(&actor.0)),
            ("at".to_string(), AttributeValue::N(now.to_string())),
            ("detail".to_string(), s(&crate::redact::redact(detail).text)),
        ]);
        if let Some(p) = production {
            item.insert("production_id".into(), s(&p.id));
            item.insert("tr".into(), s(&p.trace_id));
            item.insert("account".into(), s(&p.account));
        }
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| {
                OpsError::Store(crate::ports::StoreError::Unavailable(
                    crate::adapters::sdk_error(&e),
                ))
            })?;
        Ok(())
    }

    /// Deletes one DLQ message for good (admin). The audit row is written first: if it
    /// cannot be, the message stays.
    pub async fn dlq_discard(
        &self,
        message_id: &str,
        reason: &str,
        actor: &Actor,
        role: Role,
    ) -> Result<DlqEntry, OpsError> {
        if role < Role::Admin {
            return Err(OpsError::Forbidden("discard needs the Admin role".into()));
        }
        if reason.trim().is_empty() {
            return Err(OpsError::Invalid("discard needs a reason".into()));
        }
        if self.audit.is_none() {
            return Err(OpsError::Config(
                "no audit table configured; nothing discarded".into(),
            ));
        }
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
            let now = self.clock.now();
            let (entry, production) = self.entry(&phase, &m, now).await;
            self.audit_row(
                &format!("DLQ#{phase}"),
                "dlq.discarded",
                &format!("phase {phase}, message {}: {}", m.id, reason.trim()),
                production.as_ref(),
                actor,
            )
            .await?;
            self.queue
                .delete(&dlq, &m.receipt)
                .await
                .map_err(|e| OpsError::Invalid(e.to_string()))?;
            return Ok(entry);
        }
        Err(OpsError::NotFound(format!("DLQ message {message_id}")))
    }
}
