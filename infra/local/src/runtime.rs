//! Plays Lambda's part locally: an event source mapping per function event (SQS queues with
//! the template's batch size and partial batch responses; the state table's stream), each
//! calling the same handler the deployed function runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use shepherd::config::Config;
use shepherd::runtime::{PhaseFunction, Stats};
use shepherd::stack::Stack;
use shepherd::wiring::{AwsClients, EventKind, Handler, HandlerName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::provision::{EventSource, LocalFunction, Provisioned};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("function {0}: {1}")]
    Config(String, shepherd::config::ConfigError),
    #[error("function {0}: {1}")]
    WrongEvent(String, shepherd::wiring::WrongEvent),
    #[error("function {0}: {1}")]
    Api(String, String),
}

/// The running pollers. `stop` ends them and waits.
pub struct LocalRuntime {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Per phase: what its runtime did with the messages it received.
    pub stats: HashMap<String, Arc<Stats>>,
    crashes: HashMap<String, CrashPlan>,
    /// Where the HTTP API listens, when asked for.
    pub api_addr: Option<std::net::SocketAddr>,
}

/// When set, the phase's next invocation is killed this long after it starts, the way a
/// Lambda sandbox dies (out of memory, host failure): no code of the function runs after.
type CrashPlan = Arc<std::sync::Mutex<Option<Duration>>>;

/// How functions reach AWS. Each function's handler and its event source polling act as
/// the function's role (assumed by the admin, as the Lambda service would); `make` builds a
/// handler's SDK clients from that role's config, so a benchmark can count the handlers'
/// requests apart from the polling. `exec`: where handlers run (a benchmark measures the
/// CPU of that thread alone).
pub struct Clients {
    pub admin: aws_config::SdkConfig,
    pub make: Arc<dyn Fn(&aws_config::SdkConfig) -> AwsClients + Send + Sync>,
    pub exec: Option<tokio::runtime::Handle>,
    /// Run scheduled functions this often instead of the template's rate (tests).
    pub schedule_every: Option<Duration>,
    /// Serve the HTTP API here (port 0: any free port), callers from this token file.
    pub api: Option<(std::net::SocketAddr, std::path::PathBuf)>,
    /// What the functions run: the stack's pipelines and phase code, as the deployed
    /// bootstrap and API have them (the composition crate's; a test may add fixtures).
    pub stack: Stack,
}

impl Clients {
    /// Functions as their roles, assumed by `admin`, on the current runtime, running the
    /// stack's own pipelines.
    pub fn new(admin: &aws_config::SdkConfig) -> Self {
        Self {
            admin: admin.clone(),
            make: Arc::new(AwsClients::new),
            exec: None,
            schedule_every: None,
            api: None,
            stack: shepherd_stack::stack(),
        }
    }
}

impl LocalRuntime {
    pub async fn start(stack: &Provisioned, clients: &Clients) -> Result<Self, RuntimeError> {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut stats = HashMap::new();
        let mut crashes = HashMap::new();
        let mut api_addr = None;
        // The API first: a phase that hands work to an external job gives it a callback URL
        // on the API (in AWS, the HTTP API's own address).
        let mut functions: Vec<&LocalFunction> = stack.functions.iter().collect();
        functions.sort_by_key(|f| {
            !f.events
                .iter()
                .any(|e| matches!(e, EventSource::Http { .. }))
        });
        for f in functions {
            let local;
            let f = match (api_addr, f.env.get("SHEPHERD_CALLBACK_URL")) {
                (Some(addr), Some(_)) => {
                    let mut with = f.clone();
                    with.env.insert(
                        "SHEPHERD_CALLBACK_URL".into(),
                        format!("http://{addr}/callbacks/"),
                    );
                    local = with;
                    &local
                }
                _ => f,
            };
            let sdk = crate::role_sdk_config(&clients.admin, &f.role_arn).await;
            let http = f
                .events
                .iter()
                .any(|e| matches!(e, EventSource::Http { .. }));
            if http {
                if let Some((addr, tokens)) = &clients.api {
                    let throttle = f.events.iter().find_map(|e| match e {
                        EventSource::Http { throttle, .. } => *throttle,
                        _ => None,
                    });
                    let (addr, task) = serve_api(
                        f,
                        addr,
                        tokens,
                        &sdk,
                        &clients.stack,
                        throttle,
                        stop.subscribe(),
                    )?;
                    api_addr = Some(addr);
                    tasks.push(task);
                }
                continue;
            }
            // The handler the deployed bootstrap would run, from the same registry.
            let handler = Arc::new(handler(f, &(clients.make)(&sdk), &clients.stack)?);
            let name = f.handler.clone();
            let takes = handler.name().event_kind();
            let kind = |given| match given == takes {
                true => Ok(()),
                false => Err(RuntimeError::WrongEvent(
                    f.logical_id.clone(),
                    handler.refuse(given),
                )),
            };
            if let Handler::Phase(p) = &*handler {
                stats.insert(name.clone(), p.stats.clone());
            }
            for source in &f.events {
                match source {
                    EventSource::Sqs {
                        queue_url,
                        batch_size,
                        report_batch_item_failures,
                    } => {
                        kind(EventKind::Sqs)?;
                        let h = handler.clone();
                        let run: SqsHandler = Arc::new(move |event| {
                            let h = h.clone();
                            Box::pin(async move { h.sqs(event).await.unwrap_or_default() })
                        });
                        let crash = CrashPlan::default();
                        crashes.insert(name.clone(), crash.clone());
                        let poller = SqsPoller {
                            crash,
                            sqs: aws_sdk_sqs::Client::new(&sdk),
                            queue_url: queue_url.clone(),
                            batch_size: (*batch_size).clamp(1, 10),
                            partial: *report_batch_item_failures,
                            timeout: Duration::from_secs(f.timeout_secs),
                            runtime: run,
                            exec: clients.exec.clone(),
                        };
                        tasks.push(tokio::spawn(poller.run(stop.subscribe())));
                    }
                    // Served above.
                    EventSource::Http { .. } => {}
                    EventSource::Sns {
                        topic_arn,
                        retries,
                        on_failure,
                    } => {
                        kind(EventKind::Sns)?;
                        let mut poller =
                            SnsPoller::subscribe(&clients.admin, topic_arn, f, handler.clone())
                                .await
                                .map_err(|e| RuntimeError::Api(f.logical_id.clone(), e))?;
                        poller.retries = *retries;
                        poller.on_failure = on_failure
                            .clone()
                            .map(|url| (aws_sdk_sqs::Client::new(&sdk), url));
                        tasks.push(tokio::spawn(poller.run(stop.subscribe())));
                    }
                    EventSource::Schedule { every } => {
                        kind(EventKind::Schedule)?;
                        let every = clients.schedule_every.unwrap_or(*every);
                        tasks.push(tokio::spawn(tick(handler.clone(), every, stop.subscribe())));
                    }
                    EventSource::DynamoDbStream {
                        stream_arn,
                        batch_size,
                        max_retries,
                        on_failure,
                    } => {
                        kind(EventKind::Stream)?;
                        let h = handler.clone();
                        let run: StreamHandler = Arc::new(move |records| {
                            let h = h.clone();
                            Box::pin(async move {
                                h.stream(records)
                                    .await
                                    .ok()
                                    .flatten()
                                    .map(|(s, e)| (s, e.to_string()))
                            })
                        });
                        let poller = StreamPoller {
                            streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
                            handler: run,
                            name: name.clone(),
                            exec: clients.exec.clone(),
                            stream_arn: stream_arn.clone(),
                            batch_size: *batch_size,
                            max_retries: *max_retries,
                            on_failure: on_failure.clone(),
                            sqs: aws_sdk_sqs::Client::new(&sdk),
                        };
                        tasks.push(tokio::spawn(poller.run(stop.subscribe())));
                    }
                }
            }
        }
        info!(
            functions = stack.functions.len(),
            pollers = tasks.len(),
            "local runtime started"
        );
        Ok(Self {
            stop,
            tasks,
            stats,
            crashes,
            api_addr,
        })
    }

    /// Kills `phase`'s next invocation `after` it starts (failure injection for tests).
    pub fn crash_next(&self, phase: &str, after: Duration) {
        if let Some(plan) = self.crashes.get(phase) {
            *plan.lock().expect("crash plan") = Some(after);
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What an SQS-triggered function does with one batch (a phase, the webhook deliverer).
type SqsHandler = Arc<
    dyn Fn(
            SqsEvent,
        )
            -> futures::future::BoxFuture<'static, aws_lambda_events::event::sqs::SqsBatchResponse>
        + Send
        + Sync,
>;

/// What a stream-triggered function does with one batch of (sequence number, new image):
/// the first record it could not handle, and why.
type StreamHandler = Arc<
    dyn Fn(
            Vec<(
                String,
                HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
            )>,
        ) -> futures::future::BoxFuture<'static, Option<(String, String)>>
        + Send
        + Sync,
>;

/// The function's configuration, as its environment gives it, running `stack`.
pub fn config(f: &LocalFunction, stack: &Stack) -> Result<Config, RuntimeError> {
    Config::from_map(&f.env, stack.pipelines().clone())
        .map_err(|e| RuntimeError::Config(f.logical_id.clone(), e))
}

/// The handler a function runs (its `SHEPHERD_HANDLER`), built as the deployed bootstrap
/// builds it, on `clients`.
pub fn handler(
    f: &LocalFunction,
    clients: &AwsClients,
    stack: &Stack,
) -> Result<Handler, RuntimeError> {
    let name = HandlerName::parse(&f.handler, stack)
        .map_err(|e| RuntimeError::Config(f.logical_id.clone(), e))?;
    Ok(Handler::build(&name, stack, clients, &config(f, stack)?))
}

/// A phase function's handler (tests deliver messages to it themselves).
pub fn phase_runtime(
    f: &LocalFunction,
    clients: &AwsClients,
    stack: &Stack,
) -> Result<PhaseFunction, RuntimeError> {
    match handler(f, clients, stack)? {
        Handler::Phase(p) => Ok(p),
        other => Err(RuntimeError::WrongEvent(
            f.logical_id.clone(),
            other.refuse(EventKind::Sqs),
        )),
    }
}

/// The sweeper's handler (tests run a sweep themselves).
pub fn sweeper(
    f: &LocalFunction,
    clients: &AwsClients,
    stack: &Stack,
) -> Result<shepherd::recovery::Sweeper, RuntimeError> {
    match handler(f, clients, stack)? {
        Handler::Sweeper(s) => Ok(s),
        other => Err(RuntimeError::WrongEvent(
            f.logical_id.clone(),
            other.refuse(EventKind::Schedule),
        )),
    }
}

/// API Gateway's part: the API function's router on a local address.
fn serve_api(
    f: &LocalFunction,
    addr: &std::net::SocketAddr,
    tokens: &std::path::Path,
    sdk: &aws_config::SdkConfig,
    stack: &Stack,
    throttle: Option<(f64, u32)>,
    mut stop: watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, JoinHandle<()>), RuntimeError> {
    let fail = |e: String| RuntimeError::Api(f.logical_id.clone(), e);
    let mut env = f.env.clone();
    env.insert("SHEPHERD_API_TOKENS".into(), tokens.display().to_string());
    let pipelines = stack.pipelines().clone();
    let api = shepherd_api::Api::from_map(&env, Some(sdk.clone()), move || pipelines.clone())
        .map_err(fail)?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    info!(api = %format!("http://{bound}"), "HTTP API listening");
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        let bucket = Arc::new(std::sync::Mutex::new(Bucket::new(throttle)));
        let app = shepherd_api::router(api)
            .layer(axum::middleware::from_fn(move |req, next| {
                let bucket = bucket.clone();
                throttled(bucket, req, next)
            }))
            .layer(axum::middleware::from_fn(loopback_host));
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "HTTP API stopped");
        }
    });
    Ok((bound, task))
}

/// Whether a `Host` header names this machine's loopback (with any port).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The local API answers only requests addressed to a loopback name: a web page that
/// rebinds its own DNS name to 127.0.0.1 sends its name as `Host`, and is refused.
async fn loopback_host(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        return next.run(req).await;
    }
    let body = serde_json::json!({
        "code": "forbidden_host",
        "message": format!("the local API answers only requests to localhost or a loopback address, not Host {host:?}"),
    });
    (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// API Gateway's route throttling: a token bucket of `burst` tokens refilled at `rate` a
/// second (one bucket for the API: the local server has one route).
struct Bucket {
    limits: Option<(f64, f64)>,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn new(throttle: Option<(f64, u32)>) -> Self {
        let limits = throttle.map(|(rate, burst)| (rate, f64::from(burst)));
        Self {
            tokens: limits.map_or(0.0, |(_, burst)| burst),
            limits,
            at: std::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let Some((rate, burst)) = self.limits else {
            return true;
        };
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Past the rate and burst, API Gateway answers 429 with its own JSON body, before the
/// function runs.
async fn throttled(
    bucket: Arc<std::sync::Mutex<Bucket>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if bucket.lock().expect("bucket").take() {
        return next.run(req).await;
    }
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({"message": "Too Many Requests"})),
    )
        .into_response()
}

/// The scheduler's part: one tick per interval.
async fn tick(handler: Arc<Handler>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Ok(Err(e)) = handler.tick().await {
            warn!(handler = handler.name().as_str(), error = %e, "scheduled tick failed");
        }
    }
}

struct SqsPoller {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    batch_size: i32,
    partial: bool,
    timeout: Duration,
    runtime: SqsHandler,
    exec: Option<tokio::runtime::Handle>,
    crash: CrashPlan,
}

impl SqsPoller {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(self.batch_size)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send();
            let out = tokio::select! {
                _ = stop.changed() => return,
                out = receive => out,
            };
            let messages = match out {
                Ok(o) => o.messages.unwrap_or_default(),
                Err(e) => {
                    warn!(queue = %self.queue_url, error = %shepherd::adapters::sdk_error(&e), "receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            self.invoke(messages).await;
        }
    }

    /// One invocation: the handler's answer decides which messages are deleted.
    async fn invoke(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        let records: Vec<SqsMessage> = messages.iter().map(to_event_message).collect();
        let ids: Vec<(String, String)> = messages
            .iter()
            .map(|m| {
                (
                    m.message_id.clone().unwrap_or_default(),
                    m.receipt_handle.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;
        let invocation = (self.runtime)(event);
        // Past the function's timeout Lambda kills the invocation mid-work: so does this
        // (the future is dropped or the task aborted), leaving the claim's lease to expire.
        let crash = self.crash.lock().expect("crash plan").take();
        if let Some(after) = crash {
            warn!(queue = %self.queue_url, ?after, "this invocation will be killed (crash injected)");
        }
        let limit = crash.unwrap_or(self.timeout);
        let answer = match &self.exec {
            Some(exec) => {
                let mut task = exec.spawn(invocation);
                match tokio::time::timeout(limit, &mut task).await {
                    Ok(done) => done.ok(),
                    Err(_) => {
                        task.abort();
                        None
                    }
                }
            }
            None => tokio::time::timeout(limit, invocation).await.ok(),
        };
        if answer.is_none() {
            warn!(queue = %self.queue_url, timeout = ?self.timeout, "invocation timed out and was stopped");
        }
        let failed: Vec<String> = match answer {
            Some(res) if self.partial => res
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Some(res) if res.batch_item_failures.is_empty() => vec![],
            // Without partial responses, or on a timeout, Lambda deletes nothing.
            _ => ids.iter().map(|(id, _)| id.clone()).collect(),
        };
        let entries: Vec<DeleteMessageBatchRequestEntry> = ids
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| !failed.contains(id))
            .map(|(i, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("entry complete")
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            warn!(error = %shepherd::adapters::sdk_error(&e), "delete failed; the messages come back");
        }
    }
}

/// An SQS SDK message in the shape Lambda delivers it.
pub fn to_event_message(m: &aws_sdk_sqs::types::Message) -> SqsMessage {
    let mut out = SqsMessage::default();
    out.message_id = m.message_id.clone();
    out.receipt_handle = m.receipt_handle.clone();
    out.body = m.body.clone();
    out.md5_of_body = m.md5_of_body.clone();
    out.event_source = Some("aws:sqs".into());
    out.attributes = m
        .attributes
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str().to_string(), v.clone()))
        .collect();
    out.message_attributes = m
        .message_attributes
        .iter()
        .flatten()
        .map(|(k, v)| {
            let mut a = SqsMessageAttribute::default();
            a.string_value = v.string_value.clone();
            a.data_type = Some(v.data_type.clone());
            (k.clone(), a)
        })
        .collect();
    out
}

/// The SNS service's part for one subscription: the topic delivers to a queue of the
/// runtime's (SNS to SQS, as the emulator does it; with the admin's identity, as the SNS
/// service's own), and each message reaches the function as an SNS record.
struct SnsPoller {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    subscription_arn: String,
    handler: Arc<Handler>,
    /// Tries after the first (Lambda's asynchronous retries), then the failure queue.
    retries: u32,
    /// Where a notification goes after its last try, with the function's role.
    on_failure: Option<(aws_sdk_sqs::Client, String)>,
}

impl SnsPoller {
    async fn subscribe(
        admin: &aws_config::SdkConfig,
        topic_arn: &str,
        f: &LocalFunction,
        handler: Arc<Handler>,
    ) -> Result<Self, String> {
        let sqs = aws_sdk_sqs::Client::new(admin);
        let sns = aws_sdk_sns::Client::new(admin);
        let topic = topic_arn.rsplit(':').next().unwrap_or("topic");
        let name: String = format!("{topic}-{}-sns", f.logical_id)
            .chars()
            .take(80)
            .collect();
        let err = |e: String| format!("subscribing to {topic_arn}: {e}");
        let queue_url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?
            .queue_url
            .unwrap_or_default();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .unwrap_or_default();
        let subscription_arn = sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?
            .subscription_arn
            .unwrap_or_default();
        Ok(Self {
            sqs,
            queue_url,
            subscription_arn,
            handler,
            retries: 2,
            on_failure: None,
        })
    }

    /// Lambda's on-failure record for an asynchronous invocation that exhausted its tries:
    /// the request (the SNS event) and why. True when it was handed over (or there is
    /// nowhere to hand it: Lambda then drops it, as here).
    async fn fail(&self, record: &aws_lambda_events::event::sns::SnsRecord, error: &str) -> bool {
        let Some((sqs, url)) = &self.on_failure else {
            warn!(
                error,
                "alarm ingest failed on its last try; no failure destination: dropped"
            );
            return true;
        };
        let body = serde_json::json!({
            "version": "1.0",
            "timestamp": shepherd::view::time(shepherd::ports::Clock::now(&shepherd::ports::SystemClock)),
            "requestContext": {
                "requestId": format!("local-{}", record.sns.message_id),
                "functionArn": "local",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": self.retries + 1
            },
            "requestPayload": {"Records": [record]},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": error}
        });
        match sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
        {
            Ok(_) => {
                error!(
                    error,
                    "alarm ingest failed on its last try; sent to its failure queue"
                );
                true
            }
            Err(e) => {
                warn!(error = %shepherd::adapters::sdk_error(&e), "could not send the failure record; tried again");
                false
            }
        }
    }

    /// An SNS envelope (as SNS delivers it to a queue) as the record Lambda gets.
    fn record(&self, body: &str) -> Option<aws_lambda_events::event::sns::SnsRecord> {
        let envelope: serde_json::Value = serde_json::from_str(body).ok()?;
        let mut sns = serde_json::json!({
            "Type": "Notification", "MessageId": "", "TopicArn": "", "Subject": null,
            "Timestamp": "1970-01-01T00:00:00Z", "SignatureVersion": "1", "Signature": "",
            "SigningCertURL": "", "UnsubscribeURL": "", "Message": "", "MessageAttributes": {}
        });
        for (k, v) in envelope.as_object()? {
            if k != "MessageAttributes" {
                sns[k] = v.clone();
            }
        }
        serde_json::from_value(serde_json::json!({
            "EventSource": "aws:sns", "EventVersion": "1.0",
            "EventSubscriptionArn": self.subscription_arn, "Sns": sns
        }))
        .ok()
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(1)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send();
            let out = tokio::select! {
                _ = stop.changed() => return,
                out = receive => out,
            };
            let messages = match out {
                Ok(o) => o.messages.unwrap_or_default(),
                Err(e) => {
                    warn!(error = %shepherd::adapters::sdk_error(&e), "SNS delivery queue: receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for m in messages {
                // One record per invocation, as SNS invokes Lambda; a failure is retried.
                let done = match m.body.as_deref().and_then(|b| self.record(b)) {
                    Some(record) => match self.handler.sns([record.sns.message.as_str()]).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            let tries = m
                                .attributes
                                .as_ref()
                                .and_then(|a| {
                                    a.get(&MessageSystemAttributeName::ApproximateReceiveCount)
                                })
                                .and_then(|n| n.parse::<u32>().ok())
                                .unwrap_or(1);
                            if tries > self.retries {
                                self.fail(&record, &e.to_string()).await
                            } else {
                                warn!(error = %e, tries, "alarm ingest failed; it is tried again");
                                false
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "not the alarm ingest");
                            false
                        }
                    },
                    None => {
                        warn!("not an SNS notification: dropped from the delivery queue");
                        true
                    }
                };
                if done {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .set_receipt_handle(m.receipt_handle)
                        .send()
                        .await;
                }
            }
        }
    }
}

struct StreamPoller {
    streams: aws_sdk_dynamodbstreams::Client,
    /// Where the on-failure record goes (with the function's role, as Lambda sends it).
    sqs: aws_sdk_sqs::Client,
    handler: StreamHandler,
    /// The function's handler, for logs.
    name: String,
    stream_arn: String,
    batch_size: i32,
    max_retries: Option<u32>,
    on_failure: Option<String>,
    exec: Option<tokio::runtime::Handle>,
}

/// One shard being read: its id and where to read next.
struct Shard {
    id: String,
    iterator: String,
    /// The record that failed, and how often it was retried.
    failing: Option<(String, u32)>,
}

impl StreamPoller {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut shards: Vec<Shard> = Vec::new();
        loop {
            if *stop.borrow() {
                return;
            }
            if shards.is_empty() {
                shards = self.open().await;
                if shards.is_empty() {
                    tokio::select! { _ = stop.changed() => return, _ = tokio::time::sleep(Duration::from_millis(500)) => {} }
                    continue;
                }
            }
            let mut next = Vec::new();
            let mut got = 0;
            for mut shard in shards.drain(..) {
                let out = match self
                    .streams
                    .get_records()
                    .shard_iterator(&shard.iterator)
                    .limit(self.batch_size)
                    .send()
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        warn!(error = %shepherd::adapters::sdk_error(&e), "stream read failed");
                        continue;
                    }
                };
                let records: Vec<(String, _)> = out
                    .records
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.dynamodb)
                    .filter_map(|d| Some((d.sequence_number.unwrap_or_default(), d.new_image?)))
                    .collect();
                got += records.len();
                let last = records.last().map(|(s, _)| s.clone());
                let count = records.len();
                // The same handler the deployed projector runs.
                let failed = if records.is_empty() {
                    None
                } else {
                    let run = (self.handler)(records);
                    match &self.exec {
                        Some(exec) => exec.spawn(run).await.unwrap_or(None),
                        None => run.await,
                    }
                };
                let Some((seq, e)) = failed else {
                    shard.failing = None;
                    if let Some(n) = out.next_shard_iterator {
                        shard.iterator = n;
                        next.push(shard);
                    }
                    continue;
                };
                // As a stream mapping with ReportBatchItemFailures: retry from the failed
                // record; past MaximumRetryAttempts, report it and go on after it.
                let tries = match &shard.failing {
                    Some((s, n)) if *s == seq => n + 1,
                    _ => 1,
                };
                use aws_sdk_dynamodbstreams::types::ShardIteratorType as At;
                let at = if self.max_retries.is_some_and(|max| tries > max) {
                    error!(function = %self.name, sequence_number = %seq, error = %e, "a stream record exhausted its retries; sent to the on-failure destination");
                    self.report(&shard.id, &seq, last.as_deref().unwrap_or(&seq), count)
                        .await;
                    shard.failing = None;
                    At::AfterSequenceNumber
                } else {
                    warn!(function = %self.name, sequence_number = %seq, error = %e, tries, "a stream record failed; retrying from it");
                    shard.failing = Some((seq.clone(), tries));
                    At::AtSequenceNumber
                };
                match self
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&self.stream_arn)
                    .shard_id(&shard.id)
                    .shard_iterator_type(at)
                    .sequence_number(&seq)
                    .send()
                    .await
                {
                    Ok(o) => {
                        if let Some(it) = o.shard_iterator {
                            shard.iterator = it;
                        }
                        next.push(shard);
                    }
                    Err(e) => {
                        warn!(error = %shepherd::adapters::sdk_error(&e), "stream iterator lost; reopening");
                    }
                }
            }
            shards = next;
            if got == 0 {
                tokio::select! { _ = stop.changed() => return, _ = tokio::time::sleep(Duration::from_millis(200)) => {} }
            }
        }
    }

    /// Lambda's on-failure record for a stream batch: its shard and sequence range.
    async fn report(&self, shard: &str, start: &str, end: &str, size: usize) {
        let Some(url) = &self.on_failure else {
            warn!("no on-failure destination: the record is skipped");
            return;
        };
        let now = shepherd::view::time(shepherd::ports::Clock::now(&shepherd::ports::SystemClock));
        let body = serde_json::json!({
            "requestContext": {
                "requestId": format!("local-{shard}-{start}"),
                "functionArn": "local",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": self.max_retries.unwrap_or(0) + 1
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": now,
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": start,
                "endSequenceNumber": end,
                "approximateArrivalOfFirstRecord": now,
                "approximateArrivalOfLastRecord": now,
                "batchSize": size,
                "streamArn": self.stream_arn
            }
        });
        if let Err(e) = self
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
        {
            error!(error = %shepherd::adapters::sdk_error(&e), "could not send the on-failure record");
        }
    }

    async fn open(&self) -> Vec<Shard> {
        let Ok(desc) = self
            .streams
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
        else {
            return vec![];
        };
        let shards = desc
            .stream_description
            .and_then(|d| d.shards)
            .unwrap_or_default();
        let mut its = Vec::new();
        for s in shards {
            let Some(id) = s.shard_id else { continue };
            let shard_id = id.clone();
            if let Ok(o) = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(id)
                .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                && let Some(it) = o.shard_iterator
            {
                its.push(Shard {
                    id: shard_id,
                    iterator: it,
                    failing: None,
                });
            }
        }
        its
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_names_are_hosts_of_the_local_api() {
        for ok in [
            "localhost",
            "localhost:8787",
            "127.0.0.1:8787",
            "127.0.0.2",
            "[::1]:8787",
            "LOCALHOST",
        ] {
            assert!(super::is_loopback_host(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example:8787",
            "localhost.evil.example",
            "10.0.0.5:8787",
            "[2001:db8::1]:80",
        ] {
            assert!(!super::is_loopback_host(refused), "{refused}");
        }
    }
}
