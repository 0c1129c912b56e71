//! Wiring: the one place adapters are built and handed to the engine, and the Lambda
//! entry points. Configuration is read and checked at init (a bad deployment fails there,
//! naming the variable); the SDK config and clients are built on the first event, because
//! building them loads and parses the TLS root store, which is most of a cold start (see
//! docs/decisions.md). No network at init either way.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sns::SnsEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::adapters::dynamodb::{
    DynamoAccounts, DynamoAlarms, DynamoAudit, DynamoHealth, DynamoIntake, DynamoLedger,
    DynamoOutputs, DynamoProductions, DynamoSchedules, DynamoStream, DynamoWebhooks, stream,
};
use crate::adapters::providers::HttpConnector;
use crate::adapters::{CachedParams, S3Artifacts, SqsQueue, SsmParams};
use crate::audit::Projected;
use crate::config::{Config, ConfigError, StackConfig, Topology};
use crate::integrations::{Integrations, IntegrationsDeps};
use crate::ops::{Ops, OpsError};
use crate::pipeline::Pipelines;
use crate::ports::{ArtifactStore, Clock, Params, Ports, StoreError, SystemClock};
use crate::recovery::{SweepReport, Sweeper};
use crate::runtime::{Executor, PhaseFunction, RunPhase, Stats, Worker};
use crate::stack::Stack;
use crate::tools::ToolDeps;
use crate::write::{Dispatcher, Transitioner};

/// The SDK clients a function uses; built once per process.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub s3: aws_sdk_s3::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sns: aws_sdk_sns::Client,
}

impl AwsClients {
    /// Makes no network call: clients connect on first use.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            // Path-style against an emulator's endpoint (no bucket DNS on 127.0.0.1).
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(sdk.endpoint_url().is_some())
                    .build(),
            ),
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
        }
    }

    /// Every port on AWS for the stack at `topology`. `secret_cache`: how long a function
    /// keeps a parameter's value (operators' tools read every time).
    pub fn ports(
        &self,
        topology: &Topology,
        secret_cache: Option<Duration>,
        provider_timeout: Duration,
    ) -> Ports {
        let ddb = &self.dynamodb;
        let state = &topology.state_table;
        let ssm = SsmParams::new(self.ssm.clone());
        let params: Arc<dyn Params> = match secret_cache {
            Some(ttl) => Arc::new(CachedParams::new(ssm, ttl)),
            None => Arc::new(ssm),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let artifacts: Arc<dyn ArtifactStore> =
            Arc::new(S3Artifacts::new(self.s3.clone(), &topology.artifact_bucket));
        Ports {
            productions: Arc::new(DynamoProductions::new(ddb.clone(), state)),
            outputs: Arc::new(DynamoOutputs::new(ddb.clone(), state, artifacts.clone())),
            accounts: Arc::new(DynamoAccounts::new(ddb.clone(), state)),
            alarms: Arc::new(DynamoAlarms::new(ddb.clone(), state)),
            webhooks: Arc::new(DynamoWebhooks::new(ddb.clone(), state)),
            schedules: Arc::new(DynamoSchedules::new(ddb.clone(), state)),
            intake: Arc::new(DynamoIntake::new(ddb.clone(), state)),
            fetch: fetcher(false),
            health: Arc::new(DynamoHealth::new(ddb.clone(), state)),
            audit: Arc::new(DynamoAudit::new(ddb.clone(), &topology.audit_table)),
            ledger: Arc::new(DynamoLedger::new(
                ddb.clone(),
                &topology.idempotency_table,
                artifacts.clone(),
            )),
            artifacts,
            stream: Arc::new(DynamoStream::new(self.streams.clone())),
            queue: Arc::new(SqsQueue::new(self.sqs.clone())),
            connector: Arc::new(HttpConnector {
                params: params.clone(),
                clock: clock.clone(),
                timeout: provider_timeout,
            }),
            params,
            clock,
        }
    }
}

/// Watchers' HTTP client: public addresses only, unless the stack allows loopback (the
/// local stack).
pub fn fetcher(allow_loopback: bool) -> Arc<dyn crate::ports::Fetch> {
    Arc::new(crate::adapters::webhook_http::HttpSender::new(
        Duration::from_secs(10),
        allow_loopback,
    ))
}

/// The ports a function runs on, from its configuration.
pub fn function_ports(clients: &AwsClients, config: &Config) -> Ports {
    clients.ports(
        &config.topology,
        Some(config.secret_cache),
        config.provider_timeout,
    )
}

fn transitioner(ports: &Ports) -> Arc<Transitioner> {
    Arc::new(Transitioner::new(
        ports.productions.clone(),
        ports.alarms.clone(),
        ports.clock.clone(),
    ))
}

fn dispatcher(ports: &Ports, config: &Config) -> Arc<Dispatcher> {
    Arc::new(Dispatcher::new(
        ports.queue.clone(),
        Arc::new(config.topology.clone()),
    ))
}

/// A phase function: the edge over a worker over an executor, on `ports`.
pub fn phase_function(phase: Arc<dyn RunPhase>, ports: &Ports, config: &Config) -> PhaseFunction {
    let integrations = Arc::new(Integrations::new(IntegrationsDeps {
        params: ports.params.clone(),
        registry_param: config.integrations_param.clone(),
        health: ports.health.clone(),
        alarms: ports.alarms.clone(),
        connector: ports.connector.clone(),
        clock: ports.clock.clone(),
        policy: config.health_policy(),
    }));
    let executor = Executor {
        phase,
        productions: ports.productions.clone(),
        outputs: ports.outputs.clone(),
        accounts: ports.accounts.clone(),
        tools: ToolDeps {
            integrations,
            ledger: ports.ledger.clone(),
            artifacts: ports.artifacts.clone(),
            clock: ports.clock.clone(),
            outcome_ttl: config.outcome_ttl,
            bad_answer_retries: config.bad_answer_retries,
            callback_url: config.callback_url.clone(),
            job_limits: crate::tools::JobLimits {
                heartbeat: config.job_heartbeat,
                deadline: config.job_deadline,
            },
        },
        timeout: config.function_timeout,
        pipelines: config.pipelines.clone(),
    };
    let worker = Worker {
        executor,
        productions: ports.productions.clone(),
        outputs: ports.outputs.clone(),
        transitioner: transitioner(ports),
        clock: ports.clock.clone(),
        lease: config.function_timeout,
        retry: config.retry_policy(),
        stats: Arc::new(Stats::default()),
    };
    PhaseFunction::new(
        worker,
        dispatcher(ports, config),
        ports.queue.clone(),
        config.retry_base,
    )
}

/// The recovery sweep on `ports`.
pub fn sweeper(ports: &Ports, config: &Config) -> Sweeper {
    Sweeper {
        productions: ports.productions.clone(),
        queue: ports.queue.clone(),
        transitioner: transitioner(ports),
        dispatcher: dispatcher(ports, config),
        clock: ports.clock.clone(),
        lost_dispatch_after: config.lost_dispatch_after,
    }
}

/// The scheduler: every minute, the due schedules' slots (`ops::Ops::run_schedules`). It
/// starts productions as an operator's start does, so it reads the stack's configuration
/// (gates, limits) from SSM on its first tick.
pub struct Scheduler {
    ports: Ports,
    param: String,
    pipelines: Arc<Pipelines>,
    watch_code: crate::runtime::watch::WatchCode,
    ops: tokio::sync::OnceCell<Ops>,
}

impl Scheduler {
    pub fn new(
        ports: &Ports,
        config: &Config,
        watch_code: crate::runtime::watch::WatchCode,
    ) -> Self {
        Self {
            ports: ports.clone(),
            param: config.stack_config_param.clone(),
            pipelines: config.pipelines.clone(),
            watch_code,
            ops: tokio::sync::OnceCell::new(),
        }
    }

    /// One tick: the due schedules' slots fired or missed, the due watchers polled.
    pub async fn tick(&self) -> Result<SourcesTick, OpsError> {
        let ops = self
            .ops
            .get_or_try_init(|| async {
                if self.param.is_empty() {
                    return Err(OpsError::Config(
                        "SHEPHERD_STACK_CONFIG_PARAM is not set: the scheduler reads the stack's configuration from it".into(),
                    ));
                }
                let config = stack_config(self.ports.params.as_ref(), &self.param).await?;
                let mut ports = self.ports.clone();
                ports.fetch = fetcher(config.allow_loopback_webhooks);
                Ok(Ops::new(ports, config, self.pipelines.clone())
                    .with_watch_code(self.watch_code.clone()))
            })
            .await?;
        // One failing does not stop the other.
        let (schedules, watchers) = tokio::join!(ops.run_schedules(), ops.run_watchers());
        match (schedules, watchers) {
            (Ok(schedules), Ok(watchers)) => Ok(SourcesTick {
                schedules,
                watchers,
            }),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }
}

/// What one scheduler tick did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourcesTick {
    pub schedules: crate::ops::ScheduleTick,
    pub watchers: crate::ops::WatchTick,
}

/// What a scheduled handler's tick did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum TickReport {
    Sweep(SweepReport),
    Sources(SourcesTick),
}

/// The alarm-ingest function's handler on `ports`.
pub fn alarm_ingest(ports: &Ports, config: &Config) -> crate::cloudwatch::AlarmIngest {
    crate::cloudwatch::AlarmIngest {
        alarms: ports.alarms.clone(),
        queue: ports.queue.clone(),
        clock: ports.clock.clone(),
        topology: config.topology.clone(),
    }
}

fn outbox(ports: &Ports, config: &Config) -> crate::webhooks::Outbox {
    crate::webhooks::Outbox {
        queue: ports.queue.clone(),
        queue_url: config.webhook_queue.clone(),
        clock: ports.clock.clone(),
    }
}

fn topic(config: &Config) -> Option<String> {
    (!config.notify_topic.is_empty()).then(|| config.notify_topic.clone())
}

fn builtin(config: &Config) -> crate::webhooks::Builtin {
    crate::webhooks::Builtin::new(
        &config.notify_topic,
        &config.publish_webhook_url,
        &config.publish_webhook_secret,
    )
}

/// The webhook fan-out's handler on `ports`.
pub fn webhook_fanout(ports: &Ports, config: &Config) -> crate::webhooks::Fanout {
    crate::webhooks::Fanout {
        store: ports.webhooks.clone(),
        outbox: outbox(ports, config),
        builtin: builtin(config),
    }
}

/// The webhook deliverer's handler on `ports`, sending over HTTP and publishing e-mail
/// to the notification topic with `sns`.
pub fn webhook_deliverer(
    ports: &Ports,
    config: &Config,
    sns: &aws_sdk_sns::Client,
) -> crate::webhooks::Deliverer {
    crate::webhooks::Deliverer {
        store: ports.webhooks.clone(),
        outbox: outbox(ports, config),
        params: ports.params.clone(),
        alarms: ports.alarms.clone(),
        sender: Arc::new(crate::adapters::webhook_http::HttpSender::new(
            config.webhook_timeout,
            config.webhook_allow_loopback,
        )),
        notifier: topic(config).map(|t| {
            Arc::new(crate::adapters::webhook_http::SnsNotifier::new(
                sns.clone(),
                t,
            )) as Arc<dyn crate::ports::Notifier>
        }),
        builtin: builtin(config),
        lease_ms: config.function_timeout.as_millis() as i64,
        schedule: config.webhook_schedule.clone(),
    }
}

/// The webhook fan-out's handler over stream records (sequence number, new image): the
/// sequence number of the first record it could not fan out, and why.
pub async fn fan_out_stream<I: Into<serde_dynamo::Item>>(
    fanout: &crate::webhooks::Fanout,
    records: impl IntoIterator<Item = (String, I)>,
) -> (usize, Option<(String, StoreError)>) {
    let (seqs, changes): (Vec<String>, Vec<_>) = records
        .into_iter()
        .filter_map(|(seq, image)| stream::change(image).map(|c| (seq, c)))
        .unzip();
    let done = fanout.handle(&changes).await;
    (
        done.deliveries,
        done.failed.map(|(i, e)| (seqs[i].clone(), e)),
    )
}

/// The webhook deliverer's handler over an SQS batch: the failed messages' ids.
pub async fn deliver_batch(
    deliverer: &crate::webhooks::Deliverer,
    event: SqsEvent,
) -> SqsBatchResponse {
    let messages = event
        .records
        .into_iter()
        .map(|m| (m.message_id.unwrap_or_default(), m.body.unwrap_or_default()))
        .collect();
    let failed = deliverer.handle(messages).await;
    let mut res = SqsBatchResponse::default();
    for id in failed {
        let mut f = BatchItemFailure::default();
        f.item_identifier = id;
        res.batch_item_failures.push(f);
    }
    res
}

/// What the audit projector did with a batch of stream records.
#[derive(Debug)]
pub struct StreamProjection {
    pub projected: Projected,
    /// The sequence number of the first record that could not be projected, and why
    /// (the stream mapping retries from it: `ReportBatchItemFailures`).
    pub failed: Option<(String, StoreError)>,
}

/// The audit projector's handler: the committed writes of stream records (sequence
/// number, new image; the Lambda event's, or the streams SDK's in the local runtime),
/// projected in order.
pub async fn project_stream<I: Into<serde_dynamo::Item>>(
    ports: &Ports,
    records: impl IntoIterator<Item = (String, I)>,
) -> StreamProjection {
    let (seqs, writes): (Vec<String>, Vec<_>) = records
        .into_iter()
        .filter_map(|(seq, image)| stream::committed_write(image).map(|w| (seq, w)))
        .unzip();
    let done =
        crate::audit::project_in_order(ports.audit.as_ref(), ports.accounts.as_ref(), &writes)
            .await;
    StreamProjection {
        projected: done.projected,
        failed: done.failed.map(|(i, e)| (seqs[i].clone(), e)),
    }
}

/// What a function does, named by its `SHEPHERD_HANDLER` variable: a phase by its name, or
/// one of the platform's own handlers. One bootstrap serves them all; each is still its
/// own Lambda function (own queue or trigger, role, timeout, alarms, concurrency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerName {
    /// A phase of the stack's pipelines (its SQS queue).
    Phase(String),
    /// The recovery sweep (EventBridge Scheduler, every minute).
    Sweeper,
    /// Schedules' due slots (EventBridge Scheduler, every minute).
    Scheduler,
    /// The state table's stream -> the audit table.
    AuditProjector,
    /// The state table's stream -> stored webhook deliveries.
    WebhookFanout,
    /// The webhook queue -> receivers and e-mail.
    WebhookDeliver,
    /// The alarm topic (SNS) -> the alarm store.
    AlarmIngest,
}

/// The environment variable that names a function's handler.
pub const HANDLER_VARIABLE: &str = "SHEPHERD_HANDLER";

/// The events a handler takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Sqs,
    Stream,
    Sns,
    Schedule,
}

impl HandlerName {
    /// The platform's handlers, by the name `SHEPHERD_HANDLER` gives them.
    pub const PLATFORM: [(&'static str, HandlerName); 6] = [
        ("sweeper", HandlerName::Sweeper),
        ("scheduler", HandlerName::Scheduler),
        ("audit-projector", HandlerName::AuditProjector),
        ("webhook-fanout", HandlerName::WebhookFanout),
        ("webhook-deliver", HandlerName::WebhookDeliver),
        ("alarm-ingest", HandlerName::AlarmIngest),
    ];

    /// The handler `name` names in `stack`: a platform handler, or one of its phases.
    pub fn parse(name: &str, stack: &Stack) -> Result<Self, ConfigError> {
        if let Some((_, h)) = Self::PLATFORM.iter().find(|(n, _)| *n == name) {
            return Ok(h.clone());
        }
        if stack.phase(name).is_some() {
            return Ok(Self::Phase(name.to_string()));
        }
        let platform: Vec<&str> = Self::PLATFORM.iter().map(|(n, _)| *n).collect();
        Err(ConfigError::Invalid {
            name: HANDLER_VARIABLE,
            problem: format!(
                "{name:?} is no handler of this stack: its phases are {}; the platform's {}",
                stack.phase_names().join(", "),
                platform.join(", ")
            ),
        })
    }

    /// The handler the environment names.
    pub fn from_env(stack: &Stack) -> Result<Self, ConfigError> {
        let name = std::env::var(HANDLER_VARIABLE)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing(HANDLER_VARIABLE))?;
        Self::parse(&name, stack)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Phase(p) => p,
            other => Self::PLATFORM
                .iter()
                .find(|(_, h)| h == other)
                .map(|(n, _)| *n)
                .unwrap_or_default(),
        }
    }

    pub fn event_kind(&self) -> EventKind {
        match self {
            Self::Phase(_) | Self::WebhookDeliver => EventKind::Sqs,
            Self::AuditProjector | Self::WebhookFanout => EventKind::Stream,
            Self::AlarmIngest => EventKind::Sns,
            Self::Sweeper | Self::Scheduler => EventKind::Schedule,
        }
    }
}

/// An event a handler does not take (a template wiring a queue to the sweeper, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler {handler} takes {takes:?} events, not {given:?}")]
pub struct WrongEvent {
    pub handler: String,
    pub takes: EventKind,
    pub given: EventKind,
}

/// A handler built on its function's ports: what the Lambda bootstrap runs, and what the
/// local runtime calls for each event its pollers receive.
pub enum Handler {
    Phase(PhaseFunction),
    WebhookDeliver(crate::webhooks::Deliverer),
    Sweeper(Sweeper),
    Scheduler(Box<Scheduler>),
    AuditProjector(Ports),
    WebhookFanout(crate::webhooks::Fanout),
    AlarmIngest(crate::cloudwatch::AlarmIngest),
}

impl Handler {
    /// Builds the handler `name` on `clients` (no network call).
    pub fn build(name: &HandlerName, stack: &Stack, clients: &AwsClients, config: &Config) -> Self {
        // Built once per process, on its first event: that is the cold start.
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME");
        crate::metrics::cold_start(function.as_deref().unwrap_or(name.as_str()));
        let ports = function_ports(clients, config);
        match name {
            HandlerName::Phase(p) => {
                let code = stack
                    .phase(p)
                    .expect("HandlerName::parse admits only the stack's phases");
                Self::Phase(phase_function(code, &ports, config))
            }
            HandlerName::WebhookDeliver => {
                Self::WebhookDeliver(webhook_deliverer(&ports, config, &clients.sns))
            }
            HandlerName::Sweeper => Self::Sweeper(sweeper(&ports, config)),
            HandlerName::Scheduler => {
                Self::Scheduler(Box::new(Scheduler::new(&ports, config, stack.watch_code())))
            }
            HandlerName::AuditProjector => Self::AuditProjector(ports),
            HandlerName::WebhookFanout => Self::WebhookFanout(webhook_fanout(&ports, config)),
            HandlerName::AlarmIngest => Self::AlarmIngest(alarm_ingest(&ports, config)),
        }
    }

    /// Its name, as `SHEPHERD_HANDLER` gives it.
    pub fn name(&self) -> HandlerName {
        match self {
            Self::Phase(p) => HandlerName::Phase(p.phase_name().to_string()),
            Self::WebhookDeliver(_) => HandlerName::WebhookDeliver,
            Self::Sweeper(_) => HandlerName::Sweeper,
            Self::Scheduler(_) => HandlerName::Scheduler,
            Self::AuditProjector(_) => HandlerName::AuditProjector,
            Self::WebhookFanout(_) => HandlerName::WebhookFanout,
            Self::AlarmIngest(_) => HandlerName::AlarmIngest,
        }
    }

    /// What it is not built for, named.
    pub fn refuse(&self, given: EventKind) -> WrongEvent {
        let name = self.name();
        WrongEvent {
            handler: name.as_str().to_string(),
            takes: name.event_kind(),
            given,
        }
    }

    /// A batch of SQS messages (a phase's queue, the webhook queue).
    pub async fn sqs(&self, event: SqsEvent) -> Result<SqsBatchResponse, WrongEvent> {
        match self {
            Self::Phase(f) => Ok(f.handle(event).await),
            Self::WebhookDeliver(d) => Ok(deliver_batch(d, event).await),
            _ => Err(self.refuse(EventKind::Sqs)),
        }
    }

    /// A batch of the state table's stream records (sequence number, new image): the
    /// first record it could not handle, and why (the mapping retries from it).
    pub async fn stream<I: Into<serde_dynamo::Item>>(
        &self,
        records: impl IntoIterator<Item = (String, I)>,
    ) -> Result<Option<(String, StoreError)>, WrongEvent> {
        match self {
            Self::AuditProjector(ports) => {
                let done = project_stream(ports, records).await;
                let p = &done.projected;
                tracing::info!(events = p.events, slots = p.slots, "audit projected");
                Ok(done.failed)
            }
            Self::WebhookFanout(fanout) => {
                let (n, failed) = fan_out_stream(fanout, records).await;
                tracing::info!(deliveries = n, "webhook events fanned out");
                Ok(failed)
            }
            _ => Err(self.refuse(EventKind::Stream)),
        }
    }

    /// The alarm topic's messages: how many alarms were recorded.
    pub async fn sns<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a str>,
    ) -> Result<Result<usize, StoreError>, WrongEvent> {
        match self {
            Self::AlarmIngest(i) => Ok(i.handle(messages).await),
            _ => Err(self.refuse(EventKind::Sns)),
        }
    }

    /// A scheduled tick: what it did, or why it failed.
    pub async fn tick(&self) -> Result<Result<TickReport, String>, WrongEvent> {
        match self {
            Self::Sweeper(s) => Ok(s
                .sweep()
                .await
                .map(TickReport::Sweep)
                .map_err(|e| e.to_string())),
            Self::Scheduler(s) => Ok(s
                .tick()
                .await
                .map(TickReport::Sources)
                .map_err(|e| e.to_string())),
            _ => Err(self.refuse(EventKind::Schedule)),
        }
    }
}

/// Builds `T` from the SDK on the first event, once.
async fn on_first_event<T>(
    cell: &tokio::sync::OnceCell<T>,
    build: impl FnOnce(AwsClients) -> T,
) -> &T {
    cell.get_or_init(|| async {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        build(AwsClients::new(&sdk))
    })
    .await
}

/// The Lambda entry point of every function but the API: runs the handler
/// `SHEPHERD_HANDLER` names (a phase of `stack`, the sweeper, the audit projector, webhook
/// fan-out and delivery, alarm intake). A bad name or configuration fails at init, naming
/// the variable; the SDK clients are built on the first event.
pub async fn serve(stack: Stack) -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let name = HandlerName::from_env(&stack)?;
    let config = Config::from_env(stack.pipelines().clone())?;
    if name == HandlerName::Scheduler && config.stack_config_param.is_empty() {
        return Err(ConfigError::Missing("SHEPHERD_STACK_CONFIG_PARAM").into());
    }
    let handler = tokio::sync::OnceCell::new();
    let (handler, name, stack, config) = (&handler, &name, &stack, &config);
    let get = move || on_first_event(handler, move |c| Handler::build(name, stack, &c, config));
    use lambda_runtime::{LambdaEvent, run, service_fn};
    match name.event_kind() {
        EventKind::Sqs => {
            run(service_fn(move |e: LambdaEvent<SqsEvent>| async move {
                Ok::<_, lambda_runtime::Error>(get().await.sqs(e.payload).await?)
            }))
            .await
        }
        EventKind::Stream => {
            run(service_fn(move |e: LambdaEvent<StreamEvent>| async move {
                let records = e.payload.records.into_iter().map(|r| {
                    (
                        r.change.sequence_number.unwrap_or_default(),
                        r.change.new_image,
                    )
                });
                let mut res = DynamoDbEventResponse::default();
                if let Some((seq, e)) = get().await.stream(records).await? {
                    tracing::error!(sequence_number = %seq, error = %e, "a record could not be handled; the stream retries from it");
                    let mut f = DynamoDbBatchItemFailure::default();
                    f.item_identifier = Some(seq);
                    res.batch_item_failures.push(f);
                }
                Ok::<_, lambda_runtime::Error>(res)
            }))
            .await
        }
        EventKind::Sns => {
            run(service_fn(move |e: LambdaEvent<SnsEvent>| async move {
                let messages = e.payload.records.iter().map(|r| r.sns.message.as_str());
                let n = get().await.sns(messages).await??;
                tracing::info!(recorded = n, "alarms ingested");
                Ok::<_, lambda_runtime::Error>(())
            }))
            .await
        }
        // EventBridge Scheduler passes only its `Input`.
        EventKind::Schedule => {
            run(service_fn(
                move |_: LambdaEvent<serde_json::Value>| async move {
                    Ok::<_, lambda_runtime::Error>(get().await.tick().await??)
                },
            ))
            .await
        }
    }
}

impl Ops {
    /// Reads the stack's configuration and the pipeline definitions it published from SSM
    /// (what its template wrote) and builds the AWS adapters: the operators' tools run
    /// against the stack as deployed, not against definitions compiled into them.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        stack: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        let name = StackConfig::parameter_name(stack);
        let ssm = SsmParams::new(aws_sdk_ssm::Client::new(sdk));
        let config = stack_config(&ssm, &name).await?;
        let pipelines = published_pipelines(&ssm, &name, &config).await?;
        Ok(Self::on(sdk, config, pipelines))
    }

    /// As `connect`, from the configuration parameter's name, running `pipelines` (the
    /// API's, compiled into it from the composition crate).
    pub async fn connect_parameter(
        sdk: &aws_config::SdkConfig,
        name: &str,
        pipelines: Arc<Pipelines>,
    ) -> Result<(Self, StackConfig), OpsError> {
        let ssm = SsmParams::new(aws_sdk_ssm::Client::new(sdk));
        let config = stack_config(&ssm, name).await?;
        Ok(Self::on(sdk, config, pipelines))
    }

    fn on(
        sdk: &aws_config::SdkConfig,
        config: StackConfig,
        pipelines: Arc<Pipelines>,
    ) -> (Self, StackConfig) {
        let mut ports = AwsClients::new(sdk).ports(&config.topology, None, Duration::from_secs(10));
        ports.fetch = fetcher(config.allow_loopback_webhooks);
        let ops = Self::new(ports, config, pipelines);
        let config = ops.stack().clone();
        (ops, config)
    }
}

/// The stack configuration in parameter `name`.
async fn stack_config(ssm: &dyn Params, name: &str) -> Result<StackConfig, OpsError> {
    let stack = name
        .strip_prefix("/shepherd/")
        .and_then(|s| s.strip_suffix("/config"))
        .unwrap_or(name);
    let value = ssm.get(name).await.map_err(|e| {
        OpsError::Config(format!(
            "could not read {name} (is the stack {stack:?} deployed or the local stack up?): {e}"
        ))
    })?;
    serde_json::from_str(&value)
        .map_err(|e| OpsError::Config(format!("{name} is not a stack configuration: {e}")))
}

/// The pipelines the stack at `name` published (its index, then each version's definition).
async fn published_pipelines(
    ssm: &SsmParams,
    name: &str,
    config: &StackConfig,
) -> Result<Arc<Pipelines>, OpsError> {
    let index = &config.pipelines_param;
    if index.is_empty() {
        return Err(OpsError::Config(format!(
            "{name} names no published pipelines (pipelines_param): deploy the stack's \
             current template, whose generated region publishes them"
        )));
    }
    let text = ssm
        .get(index)
        .await
        .map_err(|e| OpsError::Config(format!("could not read the stack's pipelines: {e}")))?;
    let published: crate::pipeline::Published = serde_json::from_str(&text)
        .map_err(|e| OpsError::Config(format!("{index} is not a pipeline index: {e}")))?;
    let texts = ssm
        .get_many(&published.definitions)
        .await
        .map_err(|e| OpsError::Config(format!("could not read a pipeline definition: {e}")))?;
    let definitions = published.definitions.iter().cloned().zip(texts).collect();
    let pipelines = Pipelines::from_published(&published, definitions)
        .map_err(|e| OpsError::Config(e.to_string()))?;
    // The watcher kinds the stack's crates add, as declared (checking a watcher needs no
    // more; the scheduler, which polls, has their code compiled in).
    let mut kinds = Vec::new();
    if !published.watch_kinds.is_empty() {
        let texts = ssm.get_many(&published.watch_kinds).await.map_err(|e| {
            OpsError::Config(format!("could not read a watcher kind's declaration: {e}"))
        })?;
        for (param, text) in published.watch_kinds.iter().zip(texts) {
            let declared = serde_json::from_str(&text).map_err(|e| {
                OpsError::Config(format!("{param} is not a watcher kind's declaration: {e}"))
            })?;
            kinds.push(declared);
        }
    }
    pipelines
        .with_watch_kinds(kinds)
        .map(Arc::new)
        .map_err(OpsError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StepError;
    use crate::runtime::{Phase, PhaseContext, PhaseOutput};
    use crate::stack::PipelineSpec;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Out;
    impl PhaseOutput for Out {}
    struct Draft;
    impl Phase for Draft {
        const NAME: &'static str = "draft";
        type Output = Out;
        async fn run(&self, _: &PhaseContext) -> Result<Out, StepError> {
            Ok(Out)
        }
    }

    fn stack() -> Stack {
        let definition = serde_json::json!({"name": "t", "version": 1,
            "input": {"type": "object", "required": ["account"],
                      "properties": {"account": {"type": "string"}}},
            "phases": [{"name": "draft", "output": {}, "max_tries": 3,
                        "timeout_seconds": 30, "concurrency": 5}]});
        Stack::builder()
            .pipeline(
                PipelineSpec::new()
                    .definition("t.json", &definition.to_string())
                    .phase(Draft),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn a_handler_is_a_phase_of_the_stack_or_one_of_the_platforms() {
        let stack = stack();
        let phase = HandlerName::parse("draft", &stack).unwrap();
        assert_eq!(phase, HandlerName::Phase("draft".into()));
        assert_eq!(
            (phase.as_str(), phase.event_kind()),
            ("draft", EventKind::Sqs)
        );
        for (name, kind) in [
            ("sweeper", EventKind::Schedule),
            ("scheduler", EventKind::Schedule),
            ("audit-projector", EventKind::Stream),
            ("webhook-fanout", EventKind::Stream),
            ("webhook-deliver", EventKind::Sqs),
            ("alarm-ingest", EventKind::Sns),
        ] {
            let h = HandlerName::parse(name, &stack).unwrap();
            assert_eq!((h.as_str(), h.event_kind()), (name, kind));
        }
        assert_eq!(
            HandlerName::parse("brief", &stack).unwrap_err().to_string(),
            "configuration SHEPHERD_HANDLER is invalid: \"brief\" is no handler of this stack: \
             its phases are draft; the platform's sweeper, scheduler, audit-projector, webhook-fanout, \
             webhook-deliver, alarm-ingest"
        );
    }
}
