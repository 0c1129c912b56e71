//! The phase runtime: an SQS batch handler that turns at-least-once delivery into
//! effectively-once phases.
//!
//! dispatch -> **claim** (one conditional update) -> **execute** (tools, idempotent) ->
//! **commit** (one conditional put of state + audit) -> **hand-off** (batched send).
//! Every record is answered on its own (partial batch response): a poison message never
//! blocks its batch.

mod backoff;
mod message;
mod stats;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use tracing::{error, info, warn};

pub use backoff::backoff;
pub use message::{MessageError, PhaseMessage};
pub use stats::Stats;

use crate::adapters::{CachedParams, DynamoOutcomes, DynamoStore, SqsQueue, SsmParams};
use crate::config::Config;
use crate::domain::AuditEvent;
use crate::domain::{
    ClaimRefusal, Command, Dispatch, ErrorClass, FailDisposition, Millis, PhaseError, PhaseStatus,
    Production, ProductionStatus, claim_refusal, decide,
};
use crate::integrations::{Integrations, Policy};
use crate::phases::{Phase, PhaseContext};
use crate::ports::{
    Actor, ClaimOutcome, Clock, CommitOutcome, OutMessage, Outcomes, Queue, Store, StoreError,
    SystemClock,
};
use crate::tools::{StepError, Tools};

/// How one record ended.
#[derive(Debug)]
enum Verdict {
    /// Delete the message.
    Done,
    /// Delete it once this production's next phase has been sent.
    Handoff { production: String, next: Dispatch },
    /// Leave it for SQS to deliver again (its visibility already set).
    Retry,
}

struct Handoff {
    record: String,
    production: String,
    attempt: u32,
}

/// Everything a phase function holds between invocations.
pub struct PhaseRuntime {
    phase: Arc<dyn Phase>,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    outcomes: Arc<dyn Outcomes>,
    integrations: Arc<Integrations>,
    clock: Arc<dyn Clock>,
    config: Config,
    actor: Actor,
    pub stats: Arc<Stats>,
}

/// The SDK clients a function uses; built once per process.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl AwsClients {
    /// Makes no network call: clients connect on first use.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
        }
    }
}

impl PhaseRuntime {
    pub fn from_sdk(phase: Arc<dyn Phase>, sdk: &aws_config::SdkConfig, config: Config) -> Self {
        Self::from_clients(phase, AwsClients::new(sdk), config)
    }

    /// Builds the AWS adapters over `clients`.
    pub fn from_clients(phase: Arc<dyn Phase>, clients: AwsClients, config: Config) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let params = Arc::new(CachedParams::new(
            SsmParams::new(clients.ssm),
            config.secret_cache,
        ));
        let ddb = clients.dynamodb;
        let store: Arc<dyn Store> = Arc::new(DynamoStore::new(ddb.clone(), &config.state_table));
        let integrations = Arc::new(Integrations::new(
            params,
            &config.integrations_param,
            store.clone(),
            clock.clone(),
            Policy {
                threshold: config.integration_error_threshold,
                cooldown: config.circuit_cooldown.as_millis() as Millis,
            },
            config.provider_timeout,
        ));
        Self {
            actor: Actor(format!("system:{}", phase.name())),
            phase,
            store,
            queue: Arc::new(SqsQueue::new(clients.sqs)),
            outcomes: Arc::new(DynamoOutcomes::new(ddb, &config.idempotency_table)),
            integrations,
            clock,
            config,
            stats: Arc::new(Stats::default()),
        }
    }

    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    /// Handles one batch; the response lists the records SQS must deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // Records run concurrently (a batch is at most ten); each is answered on its own.
        let verdicts =
            futures::future::join_all(event.records.iter().map(|m| self.process_record(m))).await;

        let mut failed: Vec<String> = Vec::new();
        // Successors grouped by phase: one SendMessageBatch per phase per batch.
        let mut handoffs: BTreeMap<String, Vec<Handoff>> = BTreeMap::new();
        for (record, v) in verdicts {
            match v {
                Verdict::Done => {}
                Verdict::Retry => failed.push(record),
                Verdict::Handoff { production, next } => {
                    handoffs.entry(next.phase).or_default().push(Handoff {
                        record,
                        production,
                        attempt: next.attempt,
                    });
                }
            }
        }
        for (phase, items) in handoffs {
            let lost = self.hand_off(&phase, &items).await;
            // Back after the first backoff step, not the queue's whole visibility timeout:
            // the redelivery finds the phase finished and sends its successor again.
            let wait = self.config.retry_base.as_secs().max(1) as i32;
            for m in event
                .records
                .iter()
                .filter(|m| m.message_id.as_ref().is_some_and(|id| lost.contains(id)))
            {
                self.set_visibility(m, wait).await;
            }
            failed.extend(lost);
        }
        let mut res = SqsBatchResponse::default();
        for id in failed {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            res.batch_item_failures.push(f);
        }
        res
    }

    /// Sends the successors of one batch in one request; returns the records whose send failed.
    async fn hand_off(&self, phase: &str, items: &[Handoff]) -> Vec<String> {
        let all = || items.iter().map(|h| h.record.clone()).collect();
        let url = match self.config.queue_url(phase) {
            Ok(u) => u,
            Err(e) => {
                error!(error = %e, "no queue to hand off to");
                return all();
            }
        };
        let messages: Vec<OutMessage> = items
            .iter()
            .map(|h| OutMessage {
                id: h.record.clone(),
                body: PhaseMessage::new(&h.production, phase, h.attempt).to_body(),
                attributes: vec![],
            })
            .collect();
        match self.queue.send_batch(url, &messages).await {
            Ok(failed) => {
                self.stats.add(&self.stats.handoff_failed, failed.len());
                failed
            }
            Err(e) => {
                // The records come back; their claim finds the phase finished and re-sends.
                error!(error = %e, phase, "hand-off failed");
                self.stats.add(&self.stats.handoff_failed, items.len());
                all()
            }
        }
    }

    async fn process_record(&self, m: &SqsMessage) -> (String, Verdict) {
        (
            m.message_id.clone().unwrap_or_default(),
            self.process(m).await,
        )
    }

    async fn process(&self, m: &SqsMessage) -> Verdict {
        self.stats.inc(&self.stats.received);
        let receive_count: u32 = m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let msg = match PhaseMessage::parse(m.body.as_deref().unwrap_or(""), self.phase.name()) {
            Ok(msg) => msg,
            Err(e) => return self.quarantine(m, &e.to_string()).await,
        };
        let now = self.clock.now();
        let lease_until = now + self.config.function_timeout.as_millis() as Millis;
        let claimed = self
            .store
            .claim(
                &msg.production_id,
                &msg.phase,
                msg.attempt,
                lease_until,
                now,
            )
            .await;
        let production = match claimed {
            Ok(ClaimOutcome::Claimed(p)) => p,
            Ok(ClaimOutcome::Refused(None)) => {
                return self
                    .quarantine(
                        m,
                        &format!("production {} does not exist", msg.production_id),
                    )
                    .await;
            }
            Ok(ClaimOutcome::Refused(Some(p))) => {
                return self.refused(m, &msg, &p, now, receive_count).await;
            }
            Err(e) => {
                warn!(error = %e, production = %msg.production_id, "claim failed; will retry");
                return self.back_off(m, receive_count, None).await;
            }
        };
        self.stats.inc(&self.stats.claimed);
        info!(production = %production.id, trace = %production.trace_id, phase = %msg.phase,
              attempt = msg.attempt, receive_count, "phase claimed");

        let (result, events) = self.execute(&production).await;
        if events.iter().any(|e| e.kind == "tool_call.deduped") {
            let raise = crate::alarms::Raise {
                kind: "tool_call_deduped".into(),
                subject: production.id.clone(),
                severity: crate::alarms::Severity::Critical,
                detail: format!(
                    "phase {}: a tool call's key was reused for a different request; the call was refused",
                    msg.phase
                ),
            };
            if let Err(e) = self.store.raise_alarm(&raise, self.clock.now()).await {
                warn!(error = %e, "could not record the alarm");
            }
        }
        let now = self.clock.now();
        let (command, disposition) = match result {
            Ok(output) => match self
                .store
                .put_output(&production.id, &msg.phase, msg.attempt, &output)
                .await
            {
                Ok(key) => (
                    Command::Succeed {
                        phase: msg.phase.clone(),
                        attempt: msg.attempt,
                        output: key,
                        warnings: crate::phases::output_warnings(&output),
                    },
                    None,
                ),
                Err(e) => return self.after_lost_commit(m, &production, &msg, e).await,
            },
            Err(step) => {
                let disposition = match step.class {
                    ErrorClass::Retryable if receive_count >= self.config.max_receive_count => {
                        FailDisposition::DeadLetter
                    }
                    ErrorClass::Retryable => FailDisposition::Retry,
                    ErrorClass::Permanent | ErrorClass::Unexpected => FailDisposition::Stop,
                };
                warn!(production = %production.id, phase = %msg.phase, attempt = msg.attempt,
                      code = %step.code, class = ?step.class, disposition = ?disposition,
                      "phase errored");
                let mut error = PhaseError::new(&step.code, step.class, &step.detail);
                error.provider_status = step.provider_status;
                let cmd = Command::Fail {
                    phase: msg.phase.clone(),
                    attempt: msg.attempt,
                    error,
                    disposition,
                };
                (cmd, Some((disposition, step)))
            }
        };
        let events: Vec<AuditEvent> = events
            .into_iter()
            .map(|e| e.phase(&msg.phase, msg.attempt))
            .collect();
        let committed = match self
            .commit_with(production.clone(), command, now, &events)
            .await
        {
            Ok(c) => c,
            Err(e) => return self.after_lost_commit(m, &production, &msg, e).await,
        };
        let Some(transition) = committed else {
            self.stats.inc(&self.stats.superseded);
            return Verdict::Done;
        };
        match disposition {
            None => {
                self.stats.inc(&self.stats.succeeded);
                match transition.dispatch {
                    Some(next) => Verdict::Handoff {
                        production: production.id.clone(),
                        next,
                    },
                    None => Verdict::Done,
                }
            }
            Some((FailDisposition::Retry, step)) => {
                self.stats.inc(&self.stats.retried);
                self.back_off(m, receive_count, step.retry_at).await
            }
            Some((FailDisposition::DeadLetter, _)) => {
                // Visible at once: the next receive moves it to the DLQ.
                self.stats.inc(&self.stats.dead_lettered);
                self.set_visibility(m, 0).await;
                Verdict::Retry
            }
            Some((FailDisposition::Stop, _)) => {
                self.stats.inc(&self.stats.failed);
                Verdict::Done
            }
        }
    }

    /// Runs the phase: loads its inputs, catches a panic, bounds its time. Also returns the
    /// audit events of its tool calls, which ride in the commit.
    async fn execute(
        &self,
        p: &Production,
    ) -> (Result<serde_json::Value, StepError>, Vec<AuditEvent>) {
        let ctx = match self.context(p).await {
            Ok(ctx) => ctx,
            Err(e) => return (Err(e), vec![]),
        };
        let result = self.run_bounded(p, &ctx).await;
        (result, ctx.tools.take_events())
    }

    async fn run_bounded(
        &self,
        p: &Production,
        ctx: &PhaseContext,
    ) -> Result<serde_json::Value, StepError> {
        let budget = self
            .config
            .function_timeout
            .saturating_sub(std::time::Duration::from_secs(2))
            .max(std::time::Duration::from_secs(1));
        let run = AssertUnwindSafe(self.phase.run(ctx)).catch_unwind();
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                error!(production = %p.id, phase = self.phase.name(), panic = %what, "phase panicked");
                Err(StepError {
                    class: ErrorClass::Unexpected,
                    ..StepError::permanent(
                        "step_unexpected_error",
                        format!("the phase panicked: {what}"),
                    )
                })
            }
            Err(_) => Err(StepError::retryable(
                "phase_timeout",
                format!("the phase ran longer than {} s", budget.as_secs()),
            )),
        }
    }

    async fn context(&self, p: &Production) -> Result<PhaseContext, StepError> {
        use crate::tools::Classify;
        let brief = self
            .store
            .get_brief(&p.id)
            .await
            .retryable("store_unavailable")?
            .ok_or_else(|| {
                StepError::permanent("brief_missing", format!("production {} has no brief", p.id))
            })?;
        let mut inputs = BTreeMap::new();
        for ph in &p.phases {
            if ph.name == self.phase.name() {
                break;
            }
            if let (PhaseStatus::Succeeded, Some(key)) = (ph.status, &ph.output) {
                let out = self
                    .store
                    .get_output(&p.id, key)
                    .await
                    .retryable("store_unavailable")?;
                if let Some(out) = out {
                    inputs.insert(ph.name.clone(), out);
                }
            }
        }
        let tools = Tools::new(
            self.integrations.clone(),
            self.outcomes.clone(),
            self.clock.clone(),
            crate::tools::Run {
                production_id: &p.id,
                phase: self.phase.name(),
                revision: p.revision,
                attempt: p.phase(self.phase.name()).map(|ph| ph.attempt).unwrap_or(1),
                lease_until: p
                    .phase(self.phase.name())
                    .and_then(|ph| ph.lease_until)
                    .unwrap_or_default(),
            },
            self.config.outcome_ttl,
        );
        let feedback = p
            .phase(self.phase.name())
            .and_then(|ph| ph.feedback.clone());
        Ok(PhaseContext {
            feedback,
            production: p.clone(),
            brief,
            inputs,
            tools,
        })
    }

    /// Applies `cmd` and writes it; on a version conflict, re-applies to the newer state.
    /// `None`: the state machine refused it (the attempt was superseded by an operator).
    async fn commit(
        &self,
        p: Production,
        cmd: Command,
        now: Millis,
    ) -> Result<Option<crate::domain::Transition>, StoreError> {
        self.commit_with(p, cmd, now, &[]).await
    }

    /// `commit`, with `extra` audit events (the tool calls') in the same write.
    async fn commit_with(
        &self,
        mut p: Production,
        cmd: Command,
        now: Millis,
        extra: &[AuditEvent],
    ) -> Result<Option<crate::domain::Transition>, StoreError> {
        for _ in 0..5 {
            let t = match decide(&p, cmd.clone(), now) {
                Ok(mut t) => {
                    t.audit.extend_from_slice(extra);
                    t
                }
                Err(e) => {
                    warn!(production = %p.id, error = %e, "result discarded");
                    return Ok(None);
                }
            };
            match self.store.commit(&t, &self.actor).await? {
                CommitOutcome::Committed => return Ok(Some(t)),
                CommitOutcome::Conflict(Some(current)) => p = *current,
                CommitOutcome::Conflict(None) => return Ok(None),
            }
        }
        Err(StoreError::Unavailable("commit kept conflicting".into()))
    }

    async fn refused(
        &self,
        m: &SqsMessage,
        msg: &PhaseMessage,
        p: &Production,
        now: Millis,
        receive_count: u32,
    ) -> Verdict {
        let refusal = claim_refusal(p, &msg.phase, msg.attempt, now);
        let dead = p
            .phase(&msg.phase)
            .is_some_and(|ph| ph.status == PhaseStatus::DeadLettered && ph.attempt == msg.attempt);
        if dead && p.status == ProductionStatus::DeadLettered {
            return self.redriven(m, msg, p.clone(), now).await;
        }
        if refusal == Some(ClaimRefusal::LeaseExpired) {
            return self.reconcile(msg, p.clone(), now).await;
        }
        let counter = match refusal {
            Some(ClaimRefusal::Duplicate) => &self.stats.duplicate,
            Some(ClaimRefusal::Paused) => &self.stats.paused,
            Some(ClaimRefusal::NotRunnable) => &self.stats.not_runnable,
            _ => &self.stats.stale,
        };
        self.stats.inc(counter);
        info!(production = %p.id, phase = %msg.phase, attempt = msg.attempt, refusal = ?refusal,
              "message acknowledged without running");
        // A redelivered message whose phase finished but whose successor never got its
        // message (hand-off lost): send it again. The successor's claim dedupes.
        if refusal == Some(ClaimRefusal::AlreadyFinished) && receive_count > 1 {
            let i = p.phases.iter().position(|ph| ph.name == msg.phase);
            if let Some(next) = i.and_then(|i| p.phases.get(i + 1))
                && p.phases[i.unwrap_or(0)].status == PhaseStatus::Succeeded
                && next.status == PhaseStatus::Queued
            {
                self.stats.inc(&self.stats.handoff_resent);
                return Verdict::Handoff {
                    production: p.id.clone(),
                    next: Dispatch {
                        phase: next.name.clone(),
                        attempt: next.attempt,
                    },
                };
            }
        }
        Verdict::Done
    }

    /// The attempt's worker died or timed out mid-phase (its message came back after the
    /// lease). The sweeper's recovery, applied at once: `tool_call.unknown`, attempt + 1,
    /// dispatched; recorded tool outcomes are reused, unrecorded calls retried under their keys.
    async fn reconcile(&self, msg: &PhaseMessage, p: Production, now: Millis) -> Verdict {
        let cmd = Command::Reconcile {
            phase: msg.phase.clone(),
        };
        warn!(production = %p.id, phase = %msg.phase, attempt = msg.attempt,
              "lease expired mid-phase; reconciling as the next attempt");
        self.recover(p, cmd, now, &self.stats.reconciled).await
    }

    /// Commits a recovery (reconcile, redrive) and hands the new attempt off.
    async fn recover(
        &self,
        p: Production,
        cmd: Command,
        now: Millis,
        counter: &std::sync::atomic::AtomicU64,
    ) -> Verdict {
        match self.commit(p, cmd, now).await {
            Ok(Some(t)) => {
                self.stats.inc(counter);
                info!(production = %t.production.id, version = t.production.version, "recovered");
                match t.dispatch {
                    Some(next) => Verdict::Handoff {
                        production: t.production.id.clone(),
                        next,
                    },
                    None => Verdict::Done,
                }
            }
            // Someone else (a sweep, an operator) moved it on first.
            Ok(None) => Verdict::Done,
            Err(e) => {
                warn!(error = %e, "the recovery could not be stored; the message comes back");
                Verdict::Retry
            }
        }
    }

    /// A dead-lettered attempt's message is back in the phase queue: an operator redrove it
    /// (Shepherd, the console or `start-message-move-task`, all alike). Run it as a new
    /// attempt; the audit keeps which message became which attempt.
    async fn redriven(
        &self,
        m: &SqsMessage,
        msg: &PhaseMessage,
        p: Production,
        now: Millis,
    ) -> Verdict {
        let message_id = m
            .message_attributes
            .get("shepherd_redriven_from")
            .and_then(|a| a.string_value.clone())
            .or_else(|| m.message_id.clone())
            .unwrap_or_default();
        let cmd = Command::Redrive {
            phase: msg.phase.clone(),
            attempt: msg.attempt,
            message_id,
        };
        info!(production = %p.id, phase = %msg.phase, "redriven message accepted");
        self.recover(p, cmd, now, &self.stats.redriven).await
    }

    /// The phase ran but its result could not be stored: deliver again after the lease, when
    /// the claim can be taken again; recorded tool outcomes make the re-run cheap.
    async fn after_lost_commit(
        &self,
        m: &SqsMessage,
        p: &Production,
        msg: &PhaseMessage,
        e: StoreError,
    ) -> Verdict {
        error!(production = %p.id, phase = %msg.phase, error = %e, "commit failed; will re-run after the lease");
        let lease = p
            .phase(&msg.phase)
            .and_then(|ph| ph.lease_until)
            .unwrap_or(0);
        let wait = ((lease - self.clock.now()) / 1000 + 1).max(1);
        self.set_visibility(m, wait.min(43_200) as i32).await;
        Verdict::Retry
    }

    async fn back_off(
        &self,
        m: &SqsMessage,
        receive_count: u32,
        retry_at: Option<Millis>,
    ) -> Verdict {
        let mut delay = backoff(
            receive_count,
            self.config.retry_base,
            self.config.retry_cap,
            rand::random(),
        );
        if let Some(at) = retry_at {
            let until = std::time::Duration::from_millis((at - self.clock.now()).max(0) as u64);
            delay = delay.max(until);
        }
        let secs = delay.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32;
        self.set_visibility(m, secs).await;
        Verdict::Retry
    }

    async fn set_visibility(&self, m: &SqsMessage, seconds: i32) {
        let Some(receipt) = m.receipt_handle.as_deref() else {
            return;
        };
        let url = self.own_queue_url();
        if let Err(e) = self.queue.change_visibility(url, receipt, seconds).await {
            // The queue's own visibility timeout still brings the message back.
            warn!(error = %e, "could not change visibility");
        }
    }

    fn own_queue_url(&self) -> &str {
        self.config
            .queues
            .get(self.phase.name())
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// A message no retry can fix: moved to the phase's DLQ at once, with the reason, so it
    /// is neither lost nor retried `maxReceiveCount` times.
    async fn quarantine(&self, m: &SqsMessage, reason: &str) -> Verdict {
        self.stats.inc(&self.stats.poison);
        let id = m.message_id.clone().unwrap_or_default();
        warn!(message_id = %id, reason, "malformed message quarantined");
        let Some(dlq) = self.config.dlqs.get(self.phase.name()) else {
            error!("no DLQ configured; leaving the message for the redrive policy");
            return Verdict::Retry;
        };
        let out = OutMessage {
            id: "q".into(),
            body: m.body.clone().unwrap_or_default(),
            attributes: vec![
                (
                    "shepherd_error".into(),
                    format!("malformed_message: {reason}"),
                ),
                ("shepherd_source_message_id".into(), id),
            ],
        };
        match self.queue.send_batch(dlq, std::slice::from_ref(&out)).await {
            Ok(failed) if failed.is_empty() => Verdict::Done,
            other => {
                error!(result = ?other.map(|_| "entry failed"), "could not quarantine; leaving it for the redrive policy");
                Verdict::Retry
            }
        }
    }
}

/// The Lambda entry point of a phase function. Configuration is read and checked at init
/// (a bad deployment fails there, naming the variable); the SDK config and clients are
/// built on the first event, because building them loads and parses the TLS root store,
/// which is most of a cold start (see docs/decisions.md). No network at init either way.
pub async fn serve(phase: impl Phase + 'static) -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let phase: Arc<dyn Phase> = Arc::new(phase);
    let runtime = tokio::sync::OnceCell::new();
    let (runtime, phase, config) = (&runtime, &phase, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let runtime = runtime
                .get_or_init(|| async {
                    let sdk =
                        aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                    PhaseRuntime::from_sdk(phase.clone(), &sdk, config.clone())
                })
                .await;
            Ok::<_, lambda_runtime::Error>(runtime.handle(event.payload).await)
        },
    ))
    .await
}
