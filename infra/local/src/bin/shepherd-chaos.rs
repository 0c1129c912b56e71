//! `shepherd-chaos`: how the engine holds up at realistic fault rates, measured on the
//! local stack. Not a test: it prints figures.
//!
//! Runs N productions through every function (the local runtime, each function with its
//! own IAM role) against the fake provider with faults injected at random at the given
//! rates (5xx, 429 with `Retry-After`, answers slower than the provider timeout,
//! connections dropped mid-answer), kills invocations at random (a dying Lambda sandbox)
//! and delivers phase messages twice. Then it counts how the productions ended
//! (completed / dead-lettered / failed / not settled, i.e. lost), the finished provider
//! calls that were made again (split into those whose outcome Shepherd could not know, a
//! timeout, a dropped connection or a killed worker, and those it knew: always 0), and how
//! long everything took to settle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rand::Rng;
use shepherd::audit::AuditQuery;
use shepherd::domain::{Actor, Caller, ProductionStatus, Role, Scope};
use shepherd::ops::Ops;
use shepherd::ports::Clock;
use shepherd::protocol::PhaseMessage;
use shepherd_local::provider::{Fault, FaultRule, Latency, ProviderServer};
use shepherd_local::provision::provision;
use shepherd_local::runtime::{Clients, LocalRuntime};

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:5005"
    )]
    endpoint: String,
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    #[arg(long, default_value_t = 200)]
    productions: usize,
    #[arg(long, default_value_t = 2)]
    scenes: u32,
    /// Share of provider calls answered 500.
    #[arg(long, default_value_t = 0.10)]
    server_errors: f64,
    /// Share of provider calls answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.05)]
    rate_limits: f64,
    #[arg(long, default_value_t = 2)]
    reset_secs: u64,
    /// Share of provider calls answered after the provider timeout (the work done).
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Share of provider calls whose connection drops mid-answer (the work done).
    #[arg(long, default_value_t = 0.0)]
    drops: f64,
    /// Invocations killed mid-flight, spread over the run.
    #[arg(long, default_value_t = 0)]
    crashes: u32,
    /// Chance per production and poll that its current phase's message is sent again.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// How long the fake provider takes, PATH=MEDIAN_MS:TAIL_MS (log-normal, the tail the
    /// 99th percentile; a real image model: `images=8000:60000`); repeatable.
    #[arg(long, value_name = "PATH=MEDIAN_MS:TAIL_MS")]
    latency: Vec<Latency>,
    /// Template parameters (`Name=value`), as `sam deploy --parameter-overrides`.
    #[arg(long = "param")]
    params: Vec<String>,
    /// Give up waiting after this long.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
}

const PROVIDER_TIMEOUT_SECS: u64 = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sdk = shepherd_local::sdk_config(&args.endpoint).await;
    let provider = ProviderServer::start("127.0.0.1:0".parse()?, "local-provider-key").await?;
    // The template's defaults, except a 1 s retry base and a 3 s provider timeout (the
    // fake answers in milliseconds; "slow" answers take 4 s). With crashes, a shorter
    // function timeout and visibility bring killed invocations back within two minutes.
    let mut params: HashMap<String, String> = [
        ("ProviderBaseUrl", provider.base_url()),
        ("RetryBaseSeconds", "1".into()),
        ("ProviderTimeoutSeconds", PROVIDER_TIMEOUT_SECS.to_string()),
        // Its productions all start at once, in one account.
        ("DefaultMaxConcurrent", "0".to_string()),
        ("DefaultMonthlyAllowance", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if args.crashes > 0 {
        params.insert("PhaseTimeoutSeconds".into(), "20".into());
        params.insert("QueueVisibilitySeconds".into(), "120".into());
    }
    for p in &args.params {
        let (k, v) = p.split_once('=').context("--param takes Name=value")?;
        params.insert(k.into(), v.into());
    }
    // "Slow" answers come a second after the stack's provider timeout.
    let provider_timeout: u64 = params["ProviderTimeoutSeconds"]
        .parse()
        .context("ProviderTimeoutSeconds")?;
    for l in &args.latency {
        provider.add_latency(l.clone());
    }
    let stack_name = format!("chaos{}", std::process::id());
    let stack = provision(&sdk, &args.template, &stack_name, &params)
        .await
        .context("provisioning (is the emulator up?)")?;
    let mut clients = Clients::new(&sdk);
    clients.schedule_every = Some(Duration::from_secs(10));
    let runtime = LocalRuntime::start(&stack, &clients).await?;
    let (ops, config) = Ops::connect(&sdk, &stack_name).await?;
    let me = Caller::new(Actor("operator:chaos".into()), Role::Operator, Scope::Stack);

    // Faults: the first rule that applies to a call decides it.
    let rules = [
        (args.server_errors, Fault::Status(500)),
        (
            args.rate_limits,
            Fault::RateLimit {
                reset_secs: args.reset_secs,
            },
        ),
        (
            args.slow,
            Fault::Slow {
                ms: (provider_timeout + 1) * 1000,
            },
        ),
        (args.drops, Fault::Drop(true)),
    ];
    for (rate, fault) in rules {
        if rate > 0.0 {
            provider.add_fault(FaultRule::new("/v1/", fault).rate(rate));
        }
    }

    let brief = |n: usize| {
        serde_json::json!({"account": "chaos", "title": format!("Chaos {n}"),
            "topic": "Faults at realistic rates", "scenes": args.scenes, "voice": "nova"})
        .to_string()
    };
    let began = Instant::now();
    let started_at = shepherd::ports::SystemClock.now();
    let mut ids = Vec::new();
    for n in 0..args.productions {
        ids.push(ops.start(&brief(n), &me).await?.id);
    }
    println!(
        "started {} productions in {:.1} s",
        ids.len(),
        began.elapsed().as_secs_f64()
    );

    // The default pipeline's phases (what `ops.start` runs).
    let phases: Vec<String> = ops
        .pipelines()
        .latest(None)
        .map_err(anyhow::Error::msg)?
        .definition
        .phase_names()
        .into_iter()
        .map(String::from)
        .collect();
    let mut crashes_left = args.crashes;
    let mut pending: BTreeSet<String> = ids.iter().cloned().collect();
    let mut ended: BTreeMap<String, ProductionStatus> = BTreeMap::new();
    let mut duplicates_sent = 0;
    let mut last_settled = Duration::ZERO;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    while !pending.is_empty() && began.elapsed() < Duration::from_secs(args.timeout_secs) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if crashes_left > 0 && rand::rng().random_bool(0.5) {
            let phase = &phases[rand::rng().random_range(0..phases.len())];
            runtime.crash_next(
                phase,
                Duration::from_millis(rand::rng().random_range(50..1500)),
            );
            crashes_left -= 1;
        }
        for id in pending.clone() {
            let p = ops.get(&id, &me).await?;
            if p.status.is_settled() {
                pending.remove(&id);
                ended.insert(id, p.status);
                last_settled = began.elapsed();
                continue;
            }
            if args.duplicates > 0.0
                && rand::rng().random_bool(args.duplicates)
                && let Some(ph) = p.current_phase()
            {
                let body = PhaseMessage::new(&p.id, &ph.name, ph.attempt).to_body();
                if sqs
                    .send_message()
                    .queue_url(config.topology.queue(&ph.name)?)
                    .message_body(body)
                    .send()
                    .await
                    .is_ok()
                {
                    duplicates_sent += 1;
                }
            }
        }
    }

    // Which provider calls were made more than once, and whether Shepherd could know
    // they had finished (a timeout, a dropped answer, a killed worker: it could not).
    let calls = provider.calls();
    let until = shepherd::ports::SystemClock.now() + 1;
    let mut unknown_keys = BTreeSet::new();
    // A query answers at most 1,000 events a page: follow the cursors.
    let mut rows = Vec::new();
    for event_type in ["tool_call.unknown", "tool_call.failed"] {
        let q = AuditQuery::Type {
            event_type: event_type.into(),
            since: started_at,
            until,
            account: None,
        };
        let mut after = None;
        loop {
            let got = ops.audit(&q, 1000, after.as_deref(), &me).await?;
            rows.extend(got.items.into_iter().map(|r| (event_type, r)));
            match got.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    {
        for (event_type, r) in rows {
            let detail = r.detail.unwrap_or_default();
            let unknowable = event_type == "tool_call.unknown"
                || ["provider_timeout", "provider_unreachable"]
                    .iter()
                    .any(|c| detail.contains(c));
            if unknowable && let Some(key) = detail.split(':').next() {
                unknown_keys.insert(key.trim().to_string());
            }
        }
    }
    let repeated: Vec<(&String, &u64)> = calls.by_key.iter().filter(|(_, n)| **n > 1).collect();
    let (explained, unexplained): (Vec<_>, Vec<_>) = repeated
        .iter()
        .partition(|(k, _)| unknown_keys.contains(k.as_str()));
    let extra = |v: &[&(&String, &u64)]| v.iter().map(|(_, n)| **n - 1).sum::<u64>();
    let count = |s: ProductionStatus| ended.values().filter(|e| **e == s).count();
    let total = ids.len() as f64;
    let dead = count(ProductionStatus::DeadLettered);
    let stats: BTreeMap<String, String> = runtime
        .stats
        .iter()
        .map(|(k, s)| {
            use shepherd::runtime::Stats as S;
            (
                k.clone(),
                format!(
                    "claimed {} retried {} held {} reconciled {} duplicate/stale {}",
                    S::get(&s.claimed),
                    S::get(&s.retried),
                    S::get(&s.held),
                    S::get(&s.reconciled),
                    S::get(&s.duplicate) + S::get(&s.stale)
                ),
            )
        })
        .collect();
    // How long each phase took where it succeeded (its last attempt), over the completed.
    let mut took: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, status) in &ended {
        if *status != ProductionStatus::Completed {
            continue;
        }
        for ph in ops.get(id, &me).await?.phases {
            if let (Some(a), Some(b)) = (ph.started_at, ph.finished_at) {
                took.entry(ph.name).or_default().push(b - a);
            }
        }
    }
    runtime.stop().await;
    provider.stop().await;

    println!("\n# Chaos run");
    println!(
        "{} productions x {} phases, {} scenes; faults: {:.0}% 5xx, {:.0}% 429 (reset {} s), {:.0}% slow, {:.0}% dropped; {} crashes; {} duplicate deliveries",
        ids.len(),
        phases.len(),
        args.scenes,
        args.server_errors * 100.0,
        args.rate_limits * 100.0,
        args.reset_secs,
        args.slow * 100.0,
        args.drops * 100.0,
        args.crashes - crashes_left,
        duplicates_sent
    );
    for l in &args.latency {
        println!(
            "latency of {}: median {} ms, 99th percentile {} ms",
            l.path, l.median_ms, l.tail_ms
        );
    }
    println!(
        "provider calls received {}, served {}",
        calls.received,
        calls.served.values().sum::<u64>()
    );
    println!();
    println!("{:<44} {:>8} {:>8}", "", "count", "share");
    for (what, n) in [
        ("completed", count(ProductionStatus::Completed)),
        ("dead-lettered", dead),
        ("failed", count(ProductionStatus::Failed)),
        ("not settled in time (lost?)", pending.len()),
    ] {
        println!("{what:<44} {n:>8} {:>7.1}%", n as f64 * 100.0 / total);
    }
    println!(
        "{:<44} {:>8}",
        "finished calls made again, outcome known",
        extra(&unexplained)
    );
    println!(
        "{:<44} {:>8}",
        "finished calls made again, outcome unknown",
        extra(&explained)
    );
    println!(
        "{:<44} {:>7.1} s",
        "time until the last production settled",
        last_settled.as_secs_f64()
    );
    println!("\nper phase:");
    for (k, v) in stats {
        let at = |v: &[i64], q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        let time = match took.get_mut(&k) {
            Some(t) if !t.is_empty() => {
                t.sort();
                format!(
                    "; took {:.1} s median, {:.1} s p95, {:.1} s max",
                    at(t, 0.5),
                    at(t, 0.95),
                    at(t, 1.0)
                )
            }
            _ => String::new(),
        };
        println!("  {k:<8} {v}{time}");
    }
    if !unexplained.is_empty() {
        println!("\nrepeated although the outcome was recorded: {unexplained:?}");
    }
    for (id, status) in &ended {
        if *status == ProductionStatus::Completed {
            continue;
        }
        let p = ops.get(id, &me).await?;
        for ph in p.phases.iter().filter(|ph| ph.last_error.is_some()) {
            let e = ph.last_error.as_ref().expect("filtered");
            println!(
                "{} {id}: {} attempt {} retries {} holds {} errors {}: {} {}",
                status.as_str(),
                ph.name,
                ph.attempt,
                ph.retries,
                ph.holds,
                ph.error_count,
                e.code,
                e.detail.chars().take(160).collect::<String>()
            );
        }
    }
    for id in &pending {
        let p = ops.get(id, &me).await?;
        println!(
            "not settled: {id} {} {}",
            p.status.as_str(),
            shepherd::view::banner(&p)
        );
    }
    Ok(())
}
