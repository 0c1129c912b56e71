//! Wiring: the one place adapters are built and handed to the engine, and the Lambda
//! entry points. Configuration is read and checked at init (a bad deployment fails there,
//! naming the variable); the SDK config and clients are built on the first event, because
//! building them loads and parses the TLS root store, which is most of a cold start (see
//! docs/decisions.md). No network at init either way.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sns::SnsEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::adapters::dynamodb::{
    DynamoAccounts, DynamoAlarms, DynamoAudit, DynamoHealth, DynamoLedger, DynamoOutputs,
    DynamoProductions, DynamoStream, DynamoWebhooks, stream,
};
use crate::adapters::providers::HttpConnector;
use crate::adapters::{CachedParams, S3Artifacts, SqsQueue, SsmParams};
use crate::audit::Projected;
use crate::config::{Config, StackConfig, Topology};
use crate::integrations::{Integrations, IntegrationsDeps};
use crate::ops::{Ops, OpsError};
use crate::ports::{ArtifactStore, Clock, Params, Ports, StoreError, SystemClock};
use crate::recovery::Sweeper;
use crate::runtime::{Executor, Phase, PhaseFunction, RunPhase, Stats, Worker};
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
            health: Arc::new(DynamoHealth::new(ddb.clone(), state)),
            audit: Arc::new(DynamoAudit::new(ddb.clone(), &topology.audit_table)),
            ledger: Arc::new(DynamoLedger::new(ddb.clone(), &topology.idempotency_table)),
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
        tools: ToolDeps {
            integrations,
            ledger: ports.ledger.clone(),
            artifacts: ports.artifacts.clone(),
            clock: ports.clock.clone(),
            outcome_ttl: config.outcome_ttl,
            bad_answer_retries: config.bad_answer_retries,
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

/// The Lambda entry point of the webhook fan-out (the state table's stream).
pub async fn serve_webhook_fanout() -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let fanout = tokio::sync::OnceCell::new();
    let (fanout, config) = (&fanout, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |e: lambda_runtime::LambdaEvent<StreamEvent>| async move {
            let f = on_first_event(fanout, |c| webhook_fanout(&function_ports(&c, config), config)).await;
            let records = e
                .payload
                .records
                .into_iter()
                .map(|r| (r.change.sequence_number.unwrap_or_default(), r.change.new_image));
            let (n, failed) = fan_out_stream(f, records).await;
            tracing::info!(deliveries = n, "webhook events fanned out");
            let mut res = DynamoDbEventResponse::default();
            if let Some((seq, e)) = failed {
                tracing::error!(sequence_number = %seq, error = %e, "a record could not be fanned out; the stream retries from it");
                let mut f = DynamoDbBatchItemFailure::default();
                f.item_identifier = Some(seq);
                res.batch_item_failures.push(f);
            }
            Ok::<_, lambda_runtime::Error>(res)
        },
    ))
    .await
}

/// The webhook deliverer's handler over an SQS batch: the failed messages' ids.
pub async fn deliver_batch(
    deliverer: &crate::webhooks::Deliverer,
    event: SqsEvent,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let messages = event
        .records
        .into_iter()
        .map(|m| (m.message_id.unwrap_or_default(), m.body.unwrap_or_default()))
        .collect();
    let failed = deliverer.handle(messages).await;
    let mut res = aws_lambda_events::event::sqs::SqsBatchResponse::default();
    for id in failed {
        let mut f = aws_lambda_events::event::sqs::BatchItemFailure::default();
        f.item_identifier = id;
        res.batch_item_failures.push(f);
    }
    res
}

/// The Lambda entry point of the webhook deliverer (the webhook queue).
pub async fn serve_webhook_deliverer() -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let deliverer = tokio::sync::OnceCell::new();
    let (deliverer, config) = (&deliverer, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |e: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let d = on_first_event(deliverer, |c| {
                webhook_deliverer(&function_ports(&c, config), config, &c.sns)
            })
            .await;
            Ok::<_, lambda_runtime::Error>(deliver_batch(d, e.payload).await)
        },
    ))
    .await
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

/// The Lambda entry point of a phase function.
pub async fn serve_phase(phase: impl Phase) -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let phase: Arc<dyn RunPhase> = Arc::new(phase);
    let function = tokio::sync::OnceCell::new();
    let (function, phase, config) = (&function, &phase, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            let f = on_first_event(function, |c| {
                phase_function(phase.clone(), &function_ports(&c, config), config)
            })
            .await;
            Ok::<_, lambda_runtime::Error>(f.handle(event.payload).await)
        },
    ))
    .await
}

/// The Lambda entry point of the sweeper (EventBridge Scheduler passes only its `Input`).
pub async fn serve_sweeper() -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let sweeper = tokio::sync::OnceCell::new();
    let (sweeper, config) = (&sweeper, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            let s = on_first_event(sweeper, |c| {
                self::sweeper(&function_ports(&c, config), config)
            })
            .await;
            Ok::<_, lambda_runtime::Error>(s.sweep().await?)
        },
    ))
    .await
}

/// The Lambda entry point of the alarm ingest (the alarm topic's SNS subscription).
pub async fn serve_alarm_ingest() -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let ingest = tokio::sync::OnceCell::new();
    let (ingest, config) = (&ingest, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |e: lambda_runtime::LambdaEvent<SnsEvent>| async move {
            let i = on_first_event(ingest, |c| {
                alarm_ingest(&function_ports(&c, config), config)
            })
            .await;
            let n = i
                .handle(e.payload.records.iter().map(|r| r.sns.message.as_str()))
                .await?;
            tracing::info!(recorded = n, "alarms ingested");
            Ok::<_, lambda_runtime::Error>(())
        },
    ))
    .await
}

/// The Lambda entry point of the audit projector (the state table's stream). A record it
/// cannot project is reported as the batch's first failure; the stream mapping retries
/// from it up to its retry limit, then hands it to the on-failure destination.
pub async fn serve_projector() -> Result<(), lambda_runtime::Error> {
    crate::observability::init();
    let config = Config::from_env()?;
    let ports = tokio::sync::OnceCell::new();
    let (ports, config) = (&ports, &config);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |e: lambda_runtime::LambdaEvent<StreamEvent>| async move {
            let ports = on_first_event(ports, |c| function_ports(&c, config)).await;
            let records = e
                .payload
                .records
                .into_iter()
                .map(|r| (r.change.sequence_number.unwrap_or_default(), r.change.new_image));
            let done = project_stream(ports, records).await;
            let p = done.projected;
            tracing::info!(events = p.events, slots = p.slots, "audit projected");
            let mut res = DynamoDbEventResponse::default();
            if let Some((seq, e)) = done.failed {
                tracing::error!(sequence_number = %seq, error = %e, "a record could not be projected; the stream retries from it");
                let mut f = DynamoDbBatchItemFailure::default();
                f.item_identifier = Some(seq);
                res.batch_item_failures.push(f);
            }
            Ok::<_, lambda_runtime::Error>(res)
        },
    ))
    .await
}

impl Ops {
    /// Reads the stack's configuration from SSM and builds the AWS adapters.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        stack: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        Self::connect_parameter(sdk, &StackConfig::parameter_name(stack)).await
    }

    /// As `connect`, from the configuration parameter's name (what the API function gets).
    pub async fn connect_parameter(
        sdk: &aws_config::SdkConfig,
        name: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        let stack = name
            .strip_prefix("/shepherd/")
            .and_then(|s| s.strip_suffix("/config"))
            .unwrap_or(name);
        let clients = AwsClients::new(sdk);
        let value = SsmParams::new(clients.ssm.clone())
            .get(name)
            .await
            .map_err(|e| {
                OpsError::Config(format!(
                    "could not read {name} (is the stack {stack:?} deployed or the local stack up?): {e}"
                ))
            })?;
        let config: StackConfig = serde_json::from_str(&value)
            .map_err(|e| OpsError::Config(format!("{name} is not a stack configuration: {e}")))?;
        let ports = clients.ports(&config.topology, None, Duration::from_secs(10));
        Ok((Self::new(ports, config.clone()), config))
    }
}
