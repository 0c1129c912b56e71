//! `shepherd-bench`: what the engine costs per phase transition, measured on the local stack.
//!
//! Runs productions through the real handlers against the emulator and counts every AWS
//! request the handlers make (SDK interceptor), separating the engine's own requests (claim,
//! commit, audit projection, hand-off) from the work's (briefs, outputs, tool outcomes).
//! Prices them at AWS list prices. Measures the handler thread's CPU per message, each
//! function's cold start (process start to its first Runtime API request) beside a bare
//! lambda_runtime hello-world, and bootstrap sizes. Not a test: it prints figures.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use clap::Parser;
use serde_json::Value;
use shepherd::domain::{Actor, Caller, ProductionStatus, Role, Scope};
use shepherd::ops::{Ops, StackConfig};
use shepherd::runtime::Stats;
use shepherd::wiring::AwsClients;
use shepherd_local::provider::ProviderServer;
use shepherd_local::provision::provision;
use shepherd_local::runtime::{Clients, LocalRuntime};

// AWS list prices (us-east-1), dollars per million.
const WRITE_UNIT: f64 = 0.625;
const READ_UNIT: f64 = 0.125;
const SQS_REQUEST: f64 = 0.40;
const LAMBDA_INVOCATION: f64 = 0.20;
const S3_PUT: f64 = 5.00;
const S3_GET: f64 = 0.40;
const TEMPLATE_BATCH: f64 = 10.0;

/// What is measured: (label, binary, its `SHEPHERD_HANDLER`), the bare hello-world
/// baseline first. Every function but the API runs the one bootstrap.
const MEASURED: [(&str, &str, &str); 10] = [
    ("bench-hello", "bench-hello", ""),
    ("brief", "bootstrap", "brief"),
    ("pull_request", "bootstrap", "pull_request"),
    ("sweeper", "bootstrap", "sweeper"),
    ("scheduler", "bootstrap", "scheduler"),
    ("audit-projector", "bootstrap", "audit-projector"),
    ("webhook-fanout", "bootstrap", "webhook-fanout"),
    ("webhook-deliver", "bootstrap", "webhook-deliver"),
    ("alarm-ingest", "bootstrap", "alarm-ingest"),
    ("api", "api", ""),
];

/// The binaries a build before one bootstrap had, by the same labels (`--before`).
const BEFORE: [(&str, &str); 8] = [
    ("brief", "brief"),
    ("pull_request", "pull-request"),
    ("sweeper", "sweeper"),
    ("audit-projector", "audit-projector"),
    ("webhook-fanout", "webhook-fanout"),
    ("webhook-deliver", "webhook-deliver"),
    ("alarm-ingest", "alarm-ingest"),
    ("api", "api"),
];

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:5005"
    )]
    endpoint: String,
    #[arg(long, default_value_t = 20)]
    productions: usize,
    #[arg(long, default_value_t = 3)]
    scenes: u32,
    /// Where the release bootstraps are (cargo build --release).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where sam build put the arm64 bootstraps, if it ran.
    #[arg(long, default_value = ".local/sam-build")]
    sam_build_dir: PathBuf,
    #[arg(long, default_value_t = 20)]
    cold_starts: usize,
    /// Also measure, side by side, the release binaries of an earlier build in this folder
    /// (one binary per function: `brief`, `sweeper`, `api`, ...).
    #[arg(long)]
    before: Option<PathBuf>,
    /// Only cold starts and sizes (no emulator needed).
    #[arg(long)]
    cold_starts_only: bool,
    /// Only the arrivals figures: a scheduler tick over `--schedules` schedules of which
    /// `--due` are due, 1,000 due slots, and inbound webhook events.
    #[arg(long)]
    arrivals: bool,
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    #[arg(long, default_value_t = 100)]
    due: usize,
    /// Which pipeline the productions run: `content` (briefs of `--scenes` scenes) or
    /// `coding` (jobs against the local GitHub-shaped host and agent runner, plans
    /// approved by the bench as an operator).
    #[arg(long, default_value = "content")]
    pipeline: String,
    /// Only the transitions (no cold starts, no sizes).
    #[arg(long)]
    transitions_only: bool,
}

/// Counts requests by class, and the write units of the engine's writes.
#[derive(Debug, Default)]
struct Counter {
    requests: Mutex<BTreeMap<String, u64>>,
    write_units: Mutex<BTreeMap<String, f64>>,
    hot_item_bytes: Mutex<Vec<usize>>,
}

#[derive(Debug, Clone)]
struct Counting(Arc<Counter>, &'static str);

fn attr_size(v: &Value) -> usize {
    let Some((t, x)) = v.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match t.as_str() {
        "S" => x.as_str().map_or(0, str::len),
        "N" => x.as_str().map_or(0, |n| n.len().div_ceil(2) + 1),
        "M" => {
            3 + x.as_object().map_or(0, |m| {
                m.iter().map(|(k, v)| k.len() + attr_size(v) + 1).sum()
            })
        }
        "L" => {
            3 + x
                .as_array()
                .map_or(0, |l| l.iter().map(|v| attr_size(v) + 1).sum())
        }
        _ => 1,
    }
}

fn item_size(item: &Value) -> usize {
    item.as_object()
        .map_or(0, |m| m.iter().map(|(k, v)| k.len() + attr_size(v)).sum())
}

/// The state table's index keys of each production (by_account, by_status, by_due), shared
/// by the start and engine counters, to count what each write costs its indexes.
static INDEX_KEYS: std::sync::LazyLock<Mutex<HashMap<String, [Option<String>; 3]>>> =
    std::sync::LazyLock::new(Default::default);

fn index_keys(item: &Value) -> [Option<String>; 3] {
    let s = |k: &str| item[k]["S"].as_str().map(String::from);
    let n = |k: &str| item[k]["N"].as_str().map(String::from);
    let both = |a: Option<String>, b: Option<String>| Some(format!("{}|{}", a?, b?));
    [
        both(s("gpk"), s("gsk")),
        both(s("spk"), s("gsk")),
        both(s("dpk"), n("dat")),
    ]
}

/// Index write units of a write that leaves production `pk` with index keys `new` (`None`
/// in `keep` slots: unchanged): DynamoDB writes an index entry when the item gains its key
/// (1 unit: KEYS_ONLY entries are small), loses it (1) or changes it (2: a delete, a put).
fn index_units(pk: &str, new: [Option<String>; 3], keep: [bool; 3]) -> f64 {
    let mut all = INDEX_KEYS.lock().expect("lock");
    let old = all.entry(pk.to_string()).or_default();
    let mut units = 0.0;
    for i in 0..3 {
        if keep[i] {
            continue;
        }
        units += match (&old[i], &new[i]) {
            (None, None) => 0.0,
            (Some(a), Some(b)) if a == b => 0.0,
            (Some(_), Some(_)) => 2.0,
            _ => 1.0,
        };
        old[i] = new[i].clone();
    }
    units
}

/// The index write units of one state-table request.
fn index_write_units(op: &str, body: &Value) -> f64 {
    if !body["TableName"]
        .as_str()
        .unwrap_or_default()
        .ends_with("-state")
    {
        return 0.0;
    }
    let production = |item: &Value| item["sk"]["S"] == "P" && item["pk"]["S"].is_string();
    match op {
        "PutItem" if production(&body["Item"]) => {
            let item = &body["Item"];
            index_units(
                item["pk"]["S"].as_str().unwrap_or_default(),
                index_keys(item),
                [false; 3],
            )
        }
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| &t["Put"]["Item"])
            .filter(|i| production(i))
            .map(|i| {
                index_units(
                    i["pk"]["S"].as_str().unwrap_or_default(),
                    index_keys(i),
                    [false; 3],
                )
            })
            .sum(),
        // A claim removes the by_due key and leaves the others.
        "UpdateItem"
            if body["Key"]["sk"]["S"] == "P"
                && body["UpdateExpression"]
                    .as_str()
                    .is_some_and(|e| e.contains("REMOVE")) =>
        {
            let pk = body["Key"]["pk"]["S"].as_str().unwrap_or_default();
            index_units(pk, [None, None, None], [true, true, false])
        }
        _ => 0.0,
    }
}

/// The webhook fan-out's and deliverer's requests, counted apart from the engine's: their
/// class and write units (a delivery's item and its index entries).
fn webhook_class(op: &str, body: &Value) -> Option<(String, f64, Option<usize>)> {
    let pk = body["Item"]["pk"]["S"]
        .as_str()
        .or(body["Key"]["pk"]["S"].as_str())
        .unwrap_or_default();
    let listing = body["ExpressionAttributeValues"][":p"]["S"]
        .as_str()
        .unwrap_or_default();
    let queue = body["QueueUrl"].as_str().unwrap_or_default();
    let ours = pk.starts_with("DELIVERY#")
        || pk.starts_with("WEBHOOK#")
        || listing.starts_with("WEBHOOKS#")
        || queue.ends_with("-webhooks")
        || body["TopicArn"].is_string();
    if !ours {
        return None;
    }
    let units = match op {
        "PutItem" => {
            let item = &body["Item"];
            wcu(item_size(item)) + index_units(pk, index_keys(item), [false; 3])
        }
        _ => 0.0,
    };
    Some((format!("webhooks: {op}"), units, None))
}

fn wcu(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

impl Counting {
    fn classify(&self, target: &str, body: &Value) -> (String, f64, Option<usize>) {
        let op = target.rsplit('.').next().unwrap_or(target);
        if let Some(class) = webhook_class(op, body) {
            return class;
        }
        let table = body["TableName"].as_str().unwrap_or_default();
        let kind = |t: &str| {
            if t.ends_with("-state") {
                "state"
            } else if t.ends_with("-idempotency") {
                "outcomes"
            } else if t.ends_with("-audit") {
                "audit"
            } else {
                "other"
            }
        };
        match op {
            // The projector's release of an account's concurrency slot (once per production).
            "UpdateItem"
                if kind(table) == "state"
                    && body["Key"]["pk"]["S"]
                        .as_str()
                        .is_some_and(|pk| pk.starts_with("ACCT#")) =>
            {
                (
                    "engine: dynamodb slot release (UpdateItem)".into(),
                    1.0,
                    None,
                )
            }
            "UpdateItem" if kind(table) == "state" => {
                ("engine: dynamodb claim (UpdateItem)".into(), 0.0, None)
            }
            "PutItem" if kind(table) == "state" && body["Item"]["sk"]["S"] == "P" => {
                let size = item_size(&body["Item"]);
                (
                    "engine: dynamodb commit (PutItem)".into(),
                    wcu(size),
                    Some(size),
                )
            }
            "PutItem" => (
                format!("work: dynamodb PutItem {}", kind(table)),
                wcu(item_size(&body["Item"])),
                None,
            ),
            "GetItem" => (format!("work: dynamodb GetItem {}", kind(table)), 0.0, None),
            "BatchWriteItem" => {
                let n: usize = body["RequestItems"].as_object().map_or(0, |m| {
                    m.values().filter_map(Value::as_array).map(Vec::len).sum()
                });
                (
                    "engine: dynamodb audit projection (BatchWriteItem)".into(),
                    n as f64,
                    None,
                )
            }
            "SendMessageBatch" | "SendMessage" => {
                (format!("engine: sqs {op} (hand-off)"), 0.0, None)
            }
            "ChangeMessageVisibility" => (
                "engine: sqs ChangeMessageVisibility (backoff)".into(),
                0.0,
                None,
            ),
            "TransactWriteItems" => {
                let n = body["TransactItems"].as_array().map_or(0, Vec::len);
                (
                    format!("{}: dynamodb create (TransactWriteItems)", self.1),
                    2.0 * n as f64,
                    None,
                )
            }
            other => (format!("{}: {other}", self.1), 0.0, None),
        }
    }
}

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "shepherd-bench-counter"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request();
        if req.headers().get("x-amz-target").is_none() && self.1 != "start" {
            // S3's REST calls: an artifact written or read.
            let op = match req.method() {
                "PUT" => "PutObject",
                "GET" => "GetObject",
                other => other,
            };
            *self
                .0
                .requests
                .lock()
                .expect("lock")
                .entry(format!("work: s3 {op}"))
                .or_default() += 1;
            return Ok(());
        }
        let target = req
            .headers()
            .get("x-amz-target")
            .unwrap_or("unknown")
            .to_string();
        let body: Value = req
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let op = target.rsplit('.').next().unwrap_or(&target).to_string();
        let index = index_write_units(&op, &body);
        if index > 0.0 {
            let class = format!("{}: dynamodb index writes (GSI)", self.1);
            *self
                .0
                .write_units
                .lock()
                .expect("lock")
                .entry(class)
                .or_default() += index;
        }
        let (class, units, size) = if self.1 == "engine" {
            self.classify(&target, &body)
        } else {
            let mut c = self.classify(&target, &body);
            c.0 = format!(
                "{}: {}",
                self.1,
                target.rsplit('.').next().unwrap_or(&target)
            );
            c
        };
        *self
            .0
            .requests
            .lock()
            .expect("lock")
            .entry(class.clone())
            .or_default() += 1;
        if units > 0.0 {
            *self
                .0
                .write_units
                .lock()
                .expect("lock")
                .entry(class)
                .or_default() += units;
        }
        if let Some(s) = size {
            self.0.hot_item_bytes.lock().expect("lock").push(s);
        }
        Ok(())
    }
}

fn counted_clients(sdk: &aws_config::SdkConfig, counter: Counting) -> AwsClients {
    AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(sdk)
                .interceptor(counter.clone())
                .build(),
        ),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(true)
                .interceptor(counter.clone())
                .build(),
        ),
        streams: aws_sdk_dynamodbstreams::Client::new(sdk),
        sns: aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(sdk)
                .interceptor(counter)
                .build(),
        ),
    }
}

/// The sum of the counts whose key `keep` accepts.
fn summed<V: Copy + std::iter::Sum<V>>(m: &BTreeMap<String, V>, keep: impl Fn(&str) -> bool) -> V {
    m.iter().filter(|(k, _)| keep(k)).map(|(_, v)| *v).sum()
}

/// CPU time this thread has run, in nanoseconds (Linux schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.arrivals {
        return arrivals(&args).await;
    }
    if !args.cold_starts_only {
        transitions(&args).await?;
    }
    if args.transitions_only {
        return Ok(());
    }
    cold_starts(&args)?;
    sizes(&args);
    Ok(())
}

async fn transitions(args: &Args) -> Result<()> {
    let sdk = shepherd_local::sdk_config(&args.endpoint).await;
    let provider = ProviderServer::start("127.0.0.1:0".parse()?, "local-provider-key").await?;
    let scm = shepherd_local::scm::ScmServer::start("127.0.0.1:0".parse()?).await?;
    let agent = shepherd_local::agent::AgentServer::start("127.0.0.1:0".parse()?).await?;
    let stack_name = format!("bench{}", std::process::id());
    let params = HashMap::from([
        ("ProviderBaseUrl".to_string(), provider.base_url()),
        ("ScmBaseUrl".to_string(), scm.base_url()),
        ("AgentRunnerUrl".to_string(), agent.url()),
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        // Its receiver listens on loopback.
        ("AllowLoopbackWebhooks".to_string(), "true".to_string()),
        // Its productions all start at once, in one account.
        ("DefaultMaxConcurrent".to_string(), "0".to_string()),
        ("DefaultMonthlyAllowance".to_string(), "0".to_string()),
    ]);
    let stack = provision(&sdk, Path::new("template.yaml"), &stack_name, &params)
        .await
        .context("provisioning (is the emulator up?)")?;

    // Handlers run on their own thread so its CPU time is theirs alone.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handler_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tx.send(rt.handle().clone()).expect("send handle");
        rt.block_on(async {
            let _ = stop_rx.await;
        });
    });
    let exec = rx.recv()?;
    let engine = Arc::new(Counter::default());
    let starts = Arc::new(Counter::default());
    let clients = Clients {
        admin: sdk.clone(),
        make: {
            let engine = engine.clone();
            Arc::new(move |sdk: &aws_config::SdkConfig| {
                counted_clients(sdk, Counting(engine.clone(), "engine"))
            })
        },
        exec: Some(exec.clone()),
        schedule_every: None,
        api: None,
        stack: shepherd_stack::stack(),
    };
    let cpu_before = exec.spawn(async { thread_cpu_ns() }).await?;
    let runtime = LocalRuntime::start(&stack, &clients).await?;

    let config: StackConfig = {
        let ssm = aws_sdk_ssm::Client::new(&sdk);
        let v = ssm
            .get_parameter()
            .name(StackConfig::parameter_name(&stack_name))
            .send()
            .await?;
        serde_json::from_str(&v.parameter.and_then(|p| p.value).unwrap_or_default())?
    };
    let start_clients = counted_clients(&sdk, Counting(starts.clone(), "start"));
    let ops = Ops::new(
        start_clients.ports(&config.topology, None, Duration::from_secs(10)),
        config.clone(),
        clients.stack.pipelines().clone(),
    );
    let me = Caller::new(Actor("operator:bench".into()), Role::Operator, Scope::Stack);
    // One stack-wide subscription to every event, as a stack with one receiver has: the
    // webhook figures are per delivered event, apart from the engine's.
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receiver = {
        let hits = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/hook")
    };
    let admin = Caller::new(Actor("operator:bench".into()), Role::Admin, Scope::Stack);
    ops.create_webhook(None, &receiver, &["*".into()], "bench", &admin)
        .await?;
    let input = match args.pipeline.as_str() {
        "content" => serde_json::json!({"account": "bench", "title": "Bench", "topic": "Counting requests", "scenes": args.scenes}),
        "coding" => {
            // Its account must be allowed the repository; its plan's approval is required
            // (approved below, as an operator would).
            let access = shepherd::domain::access::AccountAccess {
                repositories: vec![shepherd_local::scm::REPOSITORY.into()],
                ..Default::default()
            };
            ops.set_account_access("bench", access, &admin).await?;
            serde_json::json!({"account": "bench", "repository": shepherd_local::scm::REPOSITORY, "task": "Count requests"})
        }
        other => bail!("--pipeline {other}: this stack runs content and coding"),
    }
    .to_string();
    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..args.productions {
        let (p, _) = ops
            .start_once(Some(&args.pipeline), &input, None, &me)
            .await?;
        ids.push(p.id);
    }
    for id in &ids {
        loop {
            let p = ops.get(id, &me).await?;
            if p.status == ProductionStatus::Completed {
                break;
            }
            if p.status == ProductionStatus::AwaitingApproval {
                ops.act(id, shepherd::domain::Act::Approve, &me).await?;
                continue;
            }
            if p.status.is_settled() || began.elapsed() > Duration::from_secs(300) {
                bail!("production {id} ended {:?}", p.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let phases = clients
        .stack
        .pipelines()
        .latest(Some(&args.pipeline))
        .map(|p| p.definition.phases.len())
        .map_err(anyhow::Error::msg)?;
    // Let the audit projection catch up (created, one per phase, completed).
    let audit_target = (ids.len() * (phases + 2)) as f64;
    let wait = Instant::now();
    while engine
        .write_units
        .lock()
        .expect("lock")
        .get("engine: dynamodb audit projection (BatchWriteItem)")
        .copied()
        .unwrap_or(0.0)
        < audit_target
        && wait.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every production's created and completed events reach the receiver.
    let expected_events = 2 * ids.len() as u64;
    let wait = Instant::now();
    while hits.load(std::sync::atomic::Ordering::SeqCst) < expected_events
        && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = hits.load(std::sync::atomic::Ordering::SeqCst);
    let elapsed = began.elapsed();
    let cpu_after = exec.spawn(async { thread_cpu_ns() }).await?;
    let messages: u64 = runtime
        .stats
        .values()
        .map(|s| Stats::get(&s.received))
        .sum();
    runtime.stop().await;
    let _ = stop_tx.send(());
    let _ = handler_thread.join();
    provider.stop().await;

    let transitions = (ids.len() * phases) as f64;
    println!(
        "# Engine cost per phase transition ({} pipeline)",
        args.pipeline
    );
    println!(
        "{} productions x {} phases = {} transitions, {} messages handled, {:.1} s wall",
        ids.len(),
        phases,
        transitions,
        messages,
        elapsed.as_secs_f64()
    );
    println!();
    println!(
        "{:<58} {:>10} {:>14}",
        "requests by the handlers", "total", "per transition"
    );
    let requests = engine.requests.lock().expect("lock").clone();
    for (k, v) in &requests {
        println!("{k:<58} {v:>10} {:>14.3}", *v as f64 / transitions);
    }
    let units = engine.write_units.lock().expect("lock").clone();
    // Webhooks, per delivered event.
    let webhooks = |k: &str| k.starts_with("webhooks:");
    let per = |n: u64| n as f64 / delivered.max(1) as f64;
    let hook_reads = per(summed(&requests, |k| {
        webhooks(k) && (k.contains("GetItem") || k.contains("Query"))
    }));
    let hook_sends = per(summed(&requests, |k| {
        webhooks(k) && k.contains("SendMessage")
    }));
    let hook_wu_per = summed(&units, webhooks) / delivered.max(1) as f64;
    // The deliverer's mapping receives and deletes in batches of 5; one invocation a batch.
    let hook_cost = hook_wu_per * WRITE_UNIT
        + hook_reads * READ_UNIT
        + hook_sends * SQS_REQUEST
        + 2.0 / 5.0 * SQS_REQUEST
        + LAMBDA_INVOCATION / 5.0;
    println!();
    println!(
        "# Webhooks: {delivered} events delivered to one stack-wide subscription (expected {expected_events})"
    );
    for (k, v) in requests.iter().filter(|(k, _)| webhooks(k)) {
        println!("{k:<58} {v:>10} {:>14.3} per event", per(*v));
    }
    println!(
        "per delivered event: {hook_wu_per:.2} write units, {hook_reads:.2} reads, {hook_sends:.2} SQS sends; {hook_cost:.3} $ per million events (batch 5)"
    );
    let engine_ddb_requests = summed(&requests, |k| {
        k.starts_with("engine: dynamodb") && !k.contains("audit")
    });
    let engine_sqs = summed(&requests, |k| k.starts_with("engine: sqs"));
    let sizes = engine.hot_item_bytes.lock().expect("lock").clone();
    let max_hot = sizes.iter().copied().max().unwrap_or(0);
    let mean_hot = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    // A claim's write units follow the item's size, like the commit's.
    let claims = requests
        .get("engine: dynamodb claim (UpdateItem)")
        .copied()
        .unwrap_or(0) as f64;
    let commit_wcu = units
        .get("engine: dynamodb commit (PutItem)")
        .copied()
        .unwrap_or(0.0);
    let claim_wcu = claims * wcu(max_hot);
    let audit_wcu = units
        .get("engine: dynamodb audit projection (BatchWriteItem)")
        .copied()
        .unwrap_or(0.0);
    let slot_wcu = units
        .get("engine: dynamodb slot release (UpdateItem)")
        .copied()
        .unwrap_or(0.0);
    let index_wcu = units
        .get("engine: dynamodb index writes (GSI)")
        .copied()
        .unwrap_or(0.0);
    let wcu_per = (claim_wcu + commit_wcu + audit_wcu + slot_wcu + index_wcu) / transitions;
    println!();
    println!(
        "hot state item: mean {mean_hot:.0} B, max {max_hot} B ({} write unit per claim/commit)",
        wcu(max_hot)
    );
    println!(
        "engine DynamoDB requests per transition (claim + commit): {:.2}",
        engine_ddb_requests as f64 / transitions
    );
    println!(
        "engine SQS sends per transition: {:.2}",
        engine_sqs as f64 / transitions
    );
    println!(
        "engine write units per transition: claim {:.2} + commit {:.2} + audit {:.2} + slot release {:.2} + index entries {:.2} = {wcu_per:.2}; read units: 0 (the claim returns the item)",
        claim_wcu / transitions,
        commit_wcu / transitions,
        audit_wcu / transitions,
        slot_wcu / transitions,
        index_wcu / transitions
    );
    println!(
        "handler CPU per message: {:.0} µs (the handler thread's CPU time / messages, debug or release as built)",
        (cpu_after - cpu_before) as f64 / 1000.0 / messages.max(1) as f64
    );
    let starts_req = starts.requests.lock().expect("lock").clone();
    println!(
        "per production start (not a transition): {starts_req:?}, {:.0} write units",
        starts
            .write_units
            .lock()
            .expect("lock")
            .values()
            .sum::<f64>()
            / ids.len() as f64
    );

    // The claim returns the item (ReturnValues), so the engine reads nothing on the happy path.
    let engine_read_units = 0.0;
    let ddb = wcu_per * WRITE_UNIT + engine_read_units * READ_UNIT;
    let sqs = engine_sqs as f64 / transitions * SQS_REQUEST;
    let esm_full = 2.0 / TEMPLATE_BATCH * SQS_REQUEST; // one receive + one delete per full batch
    let lambda = LAMBDA_INVOCATION / TEMPLATE_BATCH;
    let total = ddb + sqs + esm_full + lambda;
    println!();
    println!("# Dollars per million transitions at list prices");
    println!("DynamoDB writes ({wcu_per:.2} WU x $0.625)          {ddb:>6.3}");
    println!("SQS hand-off sends                        {sqs:>6.3}");
    println!("SQS receive + delete by the mapping (batch 10) {esm_full:>6.3}");
    println!("Lambda invocations (batch 10)             {lambda:>6.3}");
    println!(
        "total                                      {total:>6.3}   (budget 2.50; Step Functions Standard 25.00)"
    );
    println!(
        "at batch size 1 (a quiet queue): {:.3}",
        ddb + sqs + 2.0 * SQS_REQUEST + LAMBDA_INVOCATION
    );

    // Everything Shepherd writes for a transition: the engine, plus the call ledger, the
    // outputs and the artifacts (the work's own cost, counted apart).
    let work_wu = summed(&units, |k| k.starts_with("work: dynamodb PutItem")) / transitions;
    // The work's reads; the webhooks' are counted per event above.
    let reads = summed(&requests, |k| {
        k.starts_with("work:") && k.contains("GetItem")
    }) as f64
        / transitions;
    let s3_put = requests.get("work: s3 PutObject").copied().unwrap_or(0) as f64 / transitions;
    let s3_get = requests.get("work: s3 GetObject").copied().unwrap_or(0) as f64 / transitions;
    let all_in =
        total + work_wu * WRITE_UNIT + reads * READ_UNIT + s3_put * S3_PUT + s3_get * S3_GET;
    println!();
    println!(
        "# All in: everything Shepherd writes per transition (engine + ledger + outputs + artifacts)"
    );
    println!(
        "work write units {work_wu:.2} (x $0.625), reads {reads:.2} (x $0.125, strong), S3 PUTs {s3_put:.2} (x $5.00), GETs {s3_get:.2} (x $0.40)"
    );
    println!(
        "total {all_in:.3} $ per million transitions (engine alone {total:.3}; budget 3.50 all in)"
    );
    Ok(())
}

/// Starts `bin` against a fake Runtime API and returns the time to its first request.
fn one_cold_start(bin: &Path, env: &HashMap<String, String>) -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let mut child = std::process::Command::new(bin)
        .env_clear()
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    listener.set_nonblocking(false)?;
    let (mut conn, _) = listener.accept()?;
    let took = start.elapsed();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    if !String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next") {
        bail!("{} did not ask for an invocation first", bin.display());
    }
    Ok(took)
}

fn cold_starts(args: &Args) -> Result<()> {
    let template_env: HashMap<String, String> = {
        // The functions need their configuration to start; values are not used at init.
        let mut e = HashMap::new();
        for (k, v) in [
            ("SHEPHERD_STATE_TABLE", "bench-state"),
            ("SHEPHERD_IDEMPOTENCY_TABLE", "bench-idempotency"),
            ("SHEPHERD_AUDIT_TABLE", "bench-audit"),
            (
                "SHEPHERD_QUEUE_PREFIX",
                "http://127.0.0.1:9/123456789012/bench-",
            ),
            // What the functions of an earlier build read instead of the prefix.
            (
                "SHEPHERD_QUEUES",
                "brief=http://127.0.0.1:9/q/brief,script=http://127.0.0.1:9/q/script,assets=http://127.0.0.1:9/q/assets,voice=http://127.0.0.1:9/q/voice,publish=http://127.0.0.1:9/q/publish,plan=http://127.0.0.1:9/q/plan,implement=http://127.0.0.1:9/q/implement,pull_request=http://127.0.0.1:9/q/pull_request",
            ),
            ("SHEPHERD_DLQS", "brief=http://127.0.0.1:9/q/brief-dlq"),
            (
                "SHEPHERD_INTEGRATIONS_PARAM",
                "/shepherd/bench/integrations",
            ),
            ("SHEPHERD_STACK_CONFIG_PARAM", "/shepherd/bench/config"),
            ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDBENCH"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_SESSION_TOKEN", "bench"),
            // A closed port: a function that called AWS at init would show it here.
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ] {
            e.insert(k.to_string(), v.to_string());
        }
        e
    };
    println!();
    println!(
        "# Cold start: process start to first Runtime API request ({} runs each, median / p90)",
        args.cold_starts
    );
    // (label, binary path, environment)
    let mut runs: Vec<(String, PathBuf, HashMap<String, String>)> = Vec::new();
    for (label, bin, handler) in MEASURED {
        let path = args.bin_dir.join(bin);
        if !path.exists() {
            println!("{label:<24} not built (cargo build --release -p {bin})");
            continue;
        }
        let mut env = template_env.clone();
        if !handler.is_empty() {
            env.insert("SHEPHERD_HANDLER".into(), handler.into());
        }
        runs.push((label.to_string(), path, env));
    }
    if let Some(dir) = &args.before {
        for (label, bin) in BEFORE {
            let path = dir.join(bin);
            if path.exists() {
                runs.push((format!("{label} (before)"), path, template_env.clone()));
            } else {
                println!("{label:<24} (before): {} not found", path.display());
            }
        }
    }
    // Interleaved, in a new random order each round: drift on a shared machine touches them
    // all alike, and no binary always runs right after another (the page cache, the CPU's
    // frequency).
    let mut times: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    for _ in 0..args.cold_starts {
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rand::rng());
        for &i in &order {
            let (label, path, env) = &runs[i];
            let t = one_cold_start(path, env)?;
            times.entry(label.clone()).or_default().push(t);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let baseline = times.get_mut("bench-hello").map(|v| median(v).0);
    for (label, _, _) in &runs {
        let (m, p90) = median(times.get_mut(label).expect("measured"));
        let ratio = match (baseline, label.as_str()) {
            (_, "bench-hello") | (None, _) => "baseline".to_string(),
            (Some(b), _) => format!("{:.2}x hello", m.as_secs_f64() / b.as_secs_f64()),
        };
        println!(
            "{label:<24} {:>7.2} ms / {:>7.2} ms   {ratio}",
            m.as_secs_f64() * 1000.0,
            p90.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

fn sizes(args: &Args) {
    println!();
    println!("# Release bootstrap sizes");
    let mb = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| format!("{:.2} MB", m.len() as f64 / 1e6))
            .unwrap_or_else(|_| "-".into())
    };
    // Every function but the API has the bootstrap: SAM builds it once (one build
    // definition), and each function's folder holds a copy.
    for (bin, logical) in [
        ("bench-hello", ""),
        ("bootstrap", "BriefFunction"),
        ("api", "ApiFunction"),
    ] {
        let arm = match logical {
            "" => "-".to_string(),
            l => mb(&args.sam_build_dir.join(l).join("bootstrap")),
        };
        println!(
            "{bin:<16} x86_64 {:>9}   arm64 (sam build) {arm:>9}",
            mb(&args.bin_dir.join(bin))
        );
    }
    if let Some(dir) = &args.before {
        for (label, bin) in BEFORE {
            println!("{label:<16} (before) x86_64 {:>9}", mb(&dir.join(bin)));
        }
    }
}

/// Requests by operation and estimated write units, of one labelled client.
#[derive(Debug, Default)]
struct Tally {
    requests: Mutex<BTreeMap<String, u64>>,
    write_units: Mutex<f64>,
}

#[derive(Debug, Clone)]
struct Tallying(Arc<Tally>);

impl Intercept for Tallying {
    fn name(&self) -> &'static str {
        "shepherd-bench-tally"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request();
        let target = req
            .headers()
            .get("x-amz-target")
            .unwrap_or("s3")
            .to_string();
        let op = target.rsplit('.').next().unwrap_or(&target).to_string();
        let body: Value = req
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        // Base-table units (a transaction's writes cost double); index entries not counted.
        let units = match op.as_str() {
            "PutItem" => wcu(item_size(&body["Item"])),
            "UpdateItem" | "DeleteItem" => 1.0,
            "TransactWriteItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| match t.get("Put") {
                    Some(p) => 2.0 * wcu(item_size(&p["Item"])),
                    None => 2.0,
                })
                .sum(),
            _ => 0.0,
        };
        *self.0.write_units.lock().expect("lock") += units;
        *self.0.requests.lock().expect("lock").entry(op).or_default() += 1;
        Ok(())
    }
}

fn tallied_clients(sdk: &aws_config::SdkConfig, t: &Arc<Tally>) -> AwsClients {
    let i = Tallying(t.clone());
    AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .interceptor(i.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .interceptor(i.clone())
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(sdk)
                .interceptor(i)
                .build(),
        ),
        s3: aws_sdk_s3::Client::new(sdk),
        streams: aws_sdk_dynamodbstreams::Client::new(sdk),
        sns: aws_sdk_sns::Client::new(sdk),
    }
}

fn report(label: &str, t: &Tally, per: f64, elapsed: Duration) {
    let requests = t.requests.lock().expect("lock").clone();
    let total: u64 = requests.values().sum();
    let units = *t.write_units.lock().expect("lock");
    println!(
        "{label}: {total} requests ({:.2} per item), {units:.1} write units ({:.2} per item), {:.2} s",
        total as f64 / per,
        units / per,
        elapsed.as_secs_f64()
    );
    for (op, n) in requests {
        println!("    {op:<22} {n}");
    }
}

/// The arrivals figures (#24): what a scheduler tick costs with many schedules and a few
/// due, what 1,000 due slots cost, and what one inbound webhook event costs.
async fn arrivals(args: &Args) -> Result<()> {
    use futures::StreamExt as _;
    use shepherd::domain::schedule::{Schedule, ScheduleSpec};
    let sdk = shepherd_local::sdk_config(&args.endpoint).await;
    let stack_name = format!("benchsched{}", std::process::id());
    let params = HashMap::from([
        ("DefaultMaxConcurrent".to_string(), "0".to_string()),
        ("DefaultMonthlyAllowance".to_string(), "0".to_string()),
    ]);
    provision(&sdk, Path::new("template.yaml"), &stack_name, &params)
        .await
        .context("provisioning (is the emulator up?)")?;

    let config: StackConfig = {
        let v = aws_sdk_ssm::Client::new(&sdk)
            .get_parameter()
            .name(StackConfig::parameter_name(&stack_name))
            .send()
            .await?;
        serde_json::from_str(&v.parameter.and_then(|p| p.value).unwrap_or_default())?
    };
    let app = shepherd_stack::stack();
    let plain = AwsClients::new(&sdk).ports(&config.topology, None, Duration::from_secs(10));
    let now = shepherd::ports::Clock::now(&shepherd::ports::SystemClock);
    let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
        "name": "bench", "account": "bench", "every_minutes": 1440,
        "input": {"title": "Bench", "topic": "Counting a tick", "scenes": 1},
        "overlap": "allow"}))?;
    let seed = |n: usize, due: bool, tag: &'static str| {
        let plain = plain.clone();
        let spec = spec.clone();
        async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let plain = plain.clone();
                    let spec = spec.clone();
                    async move {
                        let s = Schedule {
                            id: format!("sch_{tag}{i:06}"),
                            spec,
                            created_at: now,
                            created_by: "bench".into(),
                            next_slot: if due { now - 30_000 } else { now + 86_400_000 },
                            paused: None,
                            last_fired: None,
                            buffered: None,
                            backfill: None,
                            fired_count: 0,
                            missed_count: 0,
                            version: 1,
                        };
                        plain.schedules.create(&s, now).await
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
        }
    };
    let t0 = Instant::now();
    seed(args.schedules - args.due, false, "idle").await?;
    seed(args.due, true, "due").await?;
    println!(
        "# Arrivals: {} schedules seeded ({} due) in {:.1} s",
        args.schedules,
        args.due,
        t0.elapsed().as_secs_f64()
    );
    let tick = |tally: Arc<Tally>| {
        let ports =
            tallied_clients(&sdk, &tally).ports(&config.topology, None, Duration::from_secs(10));
        Ops::new(ports, config.clone(), app.pipelines().clone())
    };
    let tally = Arc::new(Tally::default());
    let ops = tick(tally.clone());
    let t1 = Instant::now();
    let done = ops.run_schedules().await?;
    report(
        &format!(
            "one tick, {} schedules, {} due ({} fired)",
            args.schedules, done.due, done.fired
        ),
        &tally,
        done.due.max(1) as f64,
        t1.elapsed(),
    );
    seed(1000, true, "thousand").await?;
    let tally = Arc::new(Tally::default());
    let ops = tick(tally.clone());
    let t2 = Instant::now();
    let done = ops.run_schedules().await?;
    report(
        &format!("1,000 due slots ({} fired)", done.fired),
        &tally,
        done.fired.max(1) as f64,
        t2.elapsed(),
    );

    // Inbound webhooks: a Standard Webhooks connector, 50 signed events.
    let admin = Caller::new(Actor("admin:bench".into()), Role::Admin, Scope::Stack);
    let plain_ops = Ops::new(plain.clone(), config.clone(), app.pipelines().clone());
    let created = plain_ops
        .create_connector(
            serde_json::from_value(serde_json::json!({"name": "bench", "account": "bench",
                "kind": "standard", "events": ["brief.requested"],
                "mapping": {"title": "/data/title", "topic": "/data/topic", "scenes": {"value": 1}}}))?,
            &admin,
        )
        .await?;
    let wh = standardwebhooks::Webhook::new(&created.secret)?;
    let tally = Arc::new(Tally::default());
    let ops = tick(tally.clone());
    let n = 50;
    let t3 = Instant::now();
    for i in 0..n {
        let body =
            serde_json::json!({"type": "brief.requested", "timestamp": "2026-12-07T10:00:00Z",
            "data": {"title": format!("Bench {i}"), "topic": "Counting an event"}})
            .to_string();
        let ts = shepherd::ports::Clock::now(&shepherd::ports::SystemClock) / 1000;
        let id = format!("msg_bench{i}");
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", id.parse()?);
        headers.insert("webhook-timestamp", ts.to_string().parse()?);
        headers.insert(
            "webhook-signature",
            wh.sign(&id, ts, body.as_bytes())?.parse()?,
        );
        ops.receive(&created.connector.id, &headers, body.as_bytes())
            .await?;
    }
    report(
        "one inbound event (started)",
        &tally,
        n as f64,
        t3.elapsed(),
    );
    Ok(())
}
