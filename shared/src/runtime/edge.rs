//! The Lambda/SQS edge: an SQS event in, a partial batch response out. Each record is
//! answered on its own (a poison message never blocks its batch); the worker's verdicts are
//! carried out here: visibility changes, quarantine to the DLQ, and the batch's hand-offs
//! sent together (one `SendMessageBatch` per phase).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use tracing::{error, warn};

use super::{Stats, Verdict, Worker};
use crate::ports::Queue;
use crate::protocol::attr;
use crate::write::{Dispatcher, Handoff};

/// One SQS record as the worker needs it.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub message_id: String,
    pub receipt: Option<String>,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    /// The DLQ message id a redrive gave it, if any.
    pub redriven_from: Option<String>,
}

impl From<&SqsMessage> for Delivered {
    fn from(m: &SqsMessage) -> Self {
        Self {
            message_id: m.message_id.clone().unwrap_or_default(),
            receipt: m.receipt_handle.clone(),
            body: m.body.clone().unwrap_or_default(),
            receive_count: m
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            redriven_from: m
                .message_attributes
                .get(attr::REDRIVEN_FROM)
                .and_then(|a| a.string_value.clone()),
        }
    }
}

/// A phase function: everything it holds between invocations.
pub struct PhaseFunction {
    worker: Worker,
    dispatcher: Arc<Dispatcher>,
    queue: Arc<dyn Queue>,
    /// A lost hand-off's record comes back after this (the first backoff step).
    retry_base: Duration,
    pub stats: Arc<Stats>,
}

impl PhaseFunction {
    pub fn new(
        worker: Worker,
        dispatcher: Arc<Dispatcher>,
        queue: Arc<dyn Queue>,
        retry_base: Duration,
    ) -> Self {
        Self {
            stats: worker.stats.clone(),
            worker,
            dispatcher,
            queue,
            retry_base,
        }
    }

    pub fn phase_name(&self) -> &'static str {
        self.worker.phase()
    }

    /// Handles one batch; the response lists the records SQS must deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let records: Vec<Delivered> = event.records.iter().map(Delivered::from).collect();
        // Records run concurrently (a batch is at most ten); each is answered on its own.
        let verdicts =
            futures::future::join_all(records.iter().map(|d| self.worker.process(d))).await;
        let mut failed: Vec<&Delivered> = Vec::new();
        let mut handoffs = Vec::new();
        for (d, verdict) in records.iter().zip(verdicts) {
            match verdict {
                Verdict::Done => {}
                Verdict::Handoff { production, next } => handoffs.push(Handoff {
                    id: d.message_id.clone(),
                    production,
                    dispatch: next,
                }),
                Verdict::Retry { after } => {
                    if let Some(after) = after {
                        self.set_visibility(d, after).await;
                    }
                    failed.push(d);
                }
                Verdict::Resend { after } => {
                    let delay = after.as_secs_f64().ceil() as u32;
                    if let Err(e) = self
                        .dispatcher
                        .resend(self.phase_name(), &d.body, delay)
                        .await
                    {
                        warn!(error = %e, "could not re-send a held message; it waits in place");
                        self.set_visibility(d, after).await;
                        failed.push(d);
                    }
                }
                Verdict::DeadLetter => {
                    if let Err(e) = self
                        .dispatcher
                        .dead_letter(self.phase_name(), &d.body)
                        .await
                    {
                        // Visible at once: SQS's redrive policy moves it on the last receive.
                        error!(error = %e, "could not move the message to the DLQ");
                        self.set_visibility(d, Duration::ZERO).await;
                        failed.push(d);
                    }
                }
                Verdict::Quarantine(reason) => {
                    if !self.quarantine(d, &reason).await {
                        failed.push(d);
                    }
                }
            }
        }
        // The records whose successor could not be sent come back after the first backoff
        // step: their redelivery finds the phase finished and sends the successor again.
        let lost = self.dispatcher.send(&handoffs).await;
        self.stats.add(&self.stats.handoff_failed, lost.len());
        for h in handoffs.iter().filter(|h| lost.contains(&h.id)) {
            self.worker.handoff_lost(&h.production, &h.dispatch).await;
        }
        for d in records.iter().filter(|d| lost.contains(&d.message_id)) {
            self.set_visibility(d, self.retry_base.max(Duration::from_secs(1)))
                .await;
            failed.push(d);
        }
        let mut res = SqsBatchResponse::default();
        for d in failed {
            let mut f = BatchItemFailure::default();
            f.item_identifier = d.message_id.clone();
            res.batch_item_failures.push(f);
        }
        res
    }

    /// A message no retry can fix: moved to the phase's DLQ at once, with the reason, so
    /// it is neither lost nor retried `maxReceiveCount` times. `false`: it stays for the
    /// redrive policy.
    async fn quarantine(&self, d: &Delivered, reason: &str) -> bool {
        self.stats.inc(&self.stats.poison);
        warn!(message_id = %d.message_id, reason, "malformed message quarantined");
        match self
            .dispatcher
            .quarantine(self.phase_name(), &d.body, reason, &d.message_id)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                error!(error = %e, "could not quarantine; leaving it for the redrive policy");
                false
            }
        }
    }

    async fn set_visibility(&self, d: &Delivered, after: Duration) {
        let Some(receipt) = d.receipt.as_deref() else {
            return;
        };
        let Ok(url) = self.dispatcher.topology().queue(self.phase_name()) else {
            return;
        };
        let secs = after.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32;
        if let Err(e) = self.queue.change_visibility(url, receipt, secs).await {
            // The queue's own visibility timeout still brings the message back.
            self.stats.inc(&self.stats.visibility_failed);
            warn!(error = %e, "could not change visibility");
        }
    }
}
