//! `shepherd`: the operator CLI. Human-readable by default, `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shepherd::domain::{Brief, OverrideTarget, Production, ProductionStatus};
use shepherd::ops::{OperatorAction, Ops, Role};
use shepherd::ports::{Actor, Clock};

mod render;

#[derive(Parser)]
#[command(name = "shepherd", version, about = "Operate Shepherd productions")]
struct Cli {
    /// The stack to operate (the name given to `sam deploy`, or the local stack's).
    #[arg(
        long,
        global = true,
        env = "SHEPHERD_STACK",
        default_value = "shepherd"
    )]
    stack: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Your role: viewer, operator or admin (admin may override). In AWS the API's
    /// authorizer decides; the CLI talks to the tables directly and trusts this.
    #[arg(long, global = true, env = "SHEPHERD_ROLE", default_value = "operator")]
    role: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a production from a brief file (JSON).
    Start {
        brief: std::path::PathBuf,
        /// Follow it until it settles.
        #[arg(long)]
        watch: bool,
    },
    /// List an account's productions, newest first.
    List {
        #[arg(long, env = "SHEPHERD_ACCOUNT")]
        account: String,
        /// Only productions in this status (e.g. awaiting_approval, failed, dead_lettered).
        #[arg(long, value_parser = ProductionStatus::parse)]
        status: Option<ProductionStatus>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Audit events, oldest first: a production's, a trace's, or one type's in a window.
    Audit {
        /// The production whose trail to show.
        #[arg(conflicts_with_all = ["trace", "event_type"], required_unless_present_any = ["trace", "event_type"])]
        id: Option<String>,
        #[arg(long)]
        trace: Option<String>,
        /// An event type (e.g. operator.paused, tool_call.unknown, dlq.redriven).
        #[arg(long = "type", conflicts_with = "trace")]
        event_type: Option<String>,
        /// With --type: from this many minutes ago (default 1440, a day).
        #[arg(long, default_value_t = 1440)]
        since_minutes: u64,
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// A production's phase timeline, attempts, errors and available actions.
    Show { id: String },
    /// Follow a production until it settles (exit 0 if it completed, 3 if not).
    Watch {
        id: String,
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// Hold the production at the next phase boundary (a running phase finishes).
    Pause { id: String },
    /// Continue a paused production exactly where it stopped.
    Resume { id: String },
    /// Run the failed or dead-lettered phase again (attempt + 1).
    Retry { id: String },
    /// Approve the phase waiting for approval: the next phase starts.
    Approve { id: String },
    /// Re-run the phase waiting for approval, with your feedback in its input.
    Reject {
        id: String,
        #[arg(long)]
        feedback: String,
    },
    /// Change settings (title, topic, audience, tone, voice, language); then retry or resume.
    Edit {
        id: String,
        /// FIELD=VALUE, repeatable.
        #[arg(long = "set", value_name = "FIELD=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Stop the production for good; every record is kept.
    Cancel { id: String },
    /// You read the production's warnings (`show` lists them); publish may start.
    #[command(name = "acknowledge-warnings", alias = "ack-warnings")]
    AcknowledgeWarnings { id: String },
    /// Dead-letter queues: list, show, resubmit, redrive, discard.
    #[command(subcommand)]
    Dlq(Dlq),
    /// An account's limits and usage; admins set them (`none`: the stack's default).
    Account {
        account: String,
        /// Productions it may start per calendar month (UTC).
        #[arg(long, value_parser = limit)]
        monthly: Option<Limit>,
        /// Productions it may have active at once.
        #[arg(long, value_parser = limit)]
        concurrent: Option<Limit>,
    },
    /// Integrations (AI providers): list with health (default), enable, disable, test.
    Integrations {
        #[command(subcommand)]
        action: Option<IntegrationAction>,
    },
    /// Alarms: list (default), acknowledge or resolve one (`<type>#<subject>`).
    Alarms {
        #[command(subcommand)]
        action: Option<AlarmAction>,
    },
    /// Admin: skip the open approval gate, or jump to a phase. A reason is required.
    Override {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, conflicts_with = "jump_to", required_unless_present = "jump_to")]
        skip_gate: bool,
        #[arg(long, value_name = "PHASE")]
        jump_to: Option<String>,
    },
}

#[derive(Subcommand)]
enum Dlq {
    /// Messages in the DLQs: production, phase, attempt, last error, age.
    List {
        #[arg(long)]
        phase: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One message, decoded, with its production's state.
    Show { message_id: String },
    /// Send one message back to its phase queue (after fixing the cause).
    Resubmit {
        message_id: String,
        /// Also for a malformed message (it will be quarantined again unless fixed).
        #[arg(long)]
        include_malformed: bool,
    },
    /// Send messages back to their phase queues, filtered and rate-limited.
    Redrive {
        /// One phase's DLQ.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        phase: Option<String>,
        /// Every phase's DLQ.
        #[arg(long)]
        all: bool,
        /// Only messages whose last error has this code.
        #[arg(long)]
        code: Option<String>,
        /// Only messages at least this many seconds old.
        #[arg(long, value_name = "SECS")]
        older_than: Option<u64>,
        /// Messages per second.
        #[arg(long, default_value_t = 5)]
        rate: u32,
        #[arg(long)]
        include_malformed: bool,
    },
    /// Admin: delete one message for good, with a reason (audited).
    Discard {
        message_id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum IntegrationAction {
    /// Never call it until enabled again (calls fall back along the chain or fail fast).
    Disable {
        id: String,
        #[arg(long)]
        reason: String,
    },
    Enable {
        id: String,
    },
    /// Check its secret exists and its base URL answers with it (never prints the secret).
    Test {
        id: String,
    },
}

#[derive(Subcommand)]
enum AlarmAction {
    /// Seen; someone is on it.
    Ack { id: String },
    /// Fixed; a new occurrence reopens it.
    Resolve { id: String },
}

/// A limit given on the command line: a number, or `none` for the stack's default.
#[derive(Clone, Copy)]
struct Limit(Option<u32>);

fn limit(s: &str) -> Result<Limit, String> {
    match s {
        "none" => Ok(Limit(None)),
        n => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| Limit(Some(n)))
            .ok_or_else(|| format!("{s:?}: expected a number of at least 1, or none")),
    }
}

fn role(name: &str) -> Result<Role> {
    match name {
        "viewer" => Ok(Role::Viewer),
        "operator" => Ok(Role::Operator),
        "admin" => Ok(Role::Admin),
        other => anyhow::bail!("--role {other:?}: expected viewer, operator or admin"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn connect(stack: &str) -> Result<Ops> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(Ops::connect(&sdk, stack).await?.0)
}

fn actor() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor(format!("operator:{user}"))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Start { brief, watch } => {
            let text = std::fs::read_to_string(&brief)
                .with_context(|| format!("cannot read brief {}", brief.display()))?;
            // Refuse a bad brief before touching AWS: nothing is created.
            Brief::parse(&text).with_context(|| format!("invalid brief {}", brief.display()))?;
            let ops = connect(&cli.stack).await?;
            let p = ops.start(&text, &actor()).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&render::json(&p, None))?);
            } else {
                println!(
                    "started production {} ({} phases, first: {})",
                    p.id,
                    p.phases.len(),
                    p.phases[0].name
                );
            }
            if watch {
                return follow(&ops, &p.id, Duration::from_millis(500), cli.json).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            ref id,
            ref trace,
            ref event_type,
            since_minutes,
            limit,
        } => {
            use shepherd::audit::AuditQuery;
            let q = match (id, trace, event_type) {
                (Some(id), _, _) => AuditQuery::Production(id.clone()),
                (_, Some(t), _) => AuditQuery::Trace(t.clone()),
                (_, _, Some(ty)) => {
                    let until = shepherd::ports::SystemClock.now() + 1;
                    AuditQuery::Type {
                        event_type: ty.clone(),
                        since: until - (since_minutes as i64) * 60_000,
                        until,
                    }
                }
                _ => anyhow::bail!("audit needs a production id, --trace or --type"),
            };
            let ops = connect(&cli.stack).await?;
            let rows = ops.audit(&q, limit, None).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render::audit(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            account,
            status,
            limit,
        } => {
            let ops = connect(&cli.stack).await?;
            let list = ops.list(&account, status, limit).await?;
            if cli.json {
                let v: Vec<_> = list.iter().map(|p| render::json(p, None)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", render::list(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id } => {
            let ops = connect(&cli.stack).await?;
            let p = ops.get(&id).await?;
            if cli.json {
                let outputs = ops.outputs(&p).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&render::json(&p, Some(&outputs)))?
                );
            } else {
                print!("{}", render::show(&p));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { id, interval_ms } => {
            let ops = connect(&cli.stack).await?;
            follow(
                &ops,
                &id,
                Duration::from_millis(interval_ms.max(100)),
                cli.json,
            )
            .await
        }
        Command::Pause { ref id } => act(&cli, id, OperatorAction::Pause).await,
        Command::Resume { ref id } => act(&cli, id, OperatorAction::Resume).await,
        Command::Retry { ref id } => act(&cli, id, OperatorAction::RetryPhase).await,
        Command::Approve { ref id } => act(&cli, id, OperatorAction::Approve).await,
        Command::Reject {
            ref id,
            ref feedback,
        } => {
            let feedback = feedback.clone();
            act(&cli, id, OperatorAction::Reject { feedback }).await
        }
        Command::Cancel { ref id } => act(&cli, id, OperatorAction::Cancel).await,
        Command::AcknowledgeWarnings { ref id } => {
            act(&cli, id, OperatorAction::AcknowledgeWarnings).await
        }
        Command::Dlq(ref cmd) => dlq(&cli, cmd).await,
        Command::Account {
            ref account,
            monthly,
            concurrent,
        } => {
            let ops = connect(&cli.stack).await?;
            let usage = if monthly.is_some() || concurrent.is_some() {
                let current = ops.account_usage(account).await?.own;
                let limits = shepherd::limits::Limits {
                    monthly_allowance: monthly.map_or(current.monthly_allowance, |l| l.0),
                    max_concurrent: concurrent.map_or(current.max_concurrent, |l| l.0),
                };
                ops.set_limits(account, limits, role(&cli.role)?).await?
            } else {
                ops.account_usage(account).await?
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&usage)?);
            } else {
                let show = |l: Option<u32>| l.map_or("unlimited".to_string(), |n| n.to_string());
                println!("Account {} ({})", usage.account, usage.month);
                println!(
                    "  started this month: {} of {}",
                    usage.started_this_month,
                    show(usage.effective.monthly_allowance)
                );
                println!(
                    "  active now:         {} of {}  {}",
                    usage.active.len(),
                    show(usage.effective.max_concurrent),
                    usage.active.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Integrations { ref action } => {
            let ops = connect(&cli.stack).await?;
            let role = role(&cli.role)?;
            let shown = match action {
                None => {
                    let list = ops.integrations().await?;
                    if cli.json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        print!("{}", render::integrations(&list));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Some(IntegrationAction::Disable { id, reason }) => {
                    ops.set_integration_enabled(id, false, reason, &actor(), role)
                        .await?
                }
                Some(IntegrationAction::Enable { id }) => {
                    ops.set_integration_enabled(id, true, "", &actor(), role)
                        .await?
                }
                Some(IntegrationAction::Test { id }) => {
                    let r = ops.test_integration(id).await?;
                    if cli.json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        println!("{}: secret {}; {}", r.id, r.secret, r.reachable);
                    }
                    return Ok(if r.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    });
                }
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", render::integrations(std::slice::from_ref(&shown)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Alarms { ref action } => {
            use shepherd::alarms::AlarmStatus;
            let ops = connect(&cli.stack).await?;
            match action {
                None => {
                    let alarms = ops.alarms().await?;
                    if cli.json {
                        println!("{}", serde_json::to_string_pretty(&alarms)?);
                    } else {
                        print!("{}", render::alarms(&alarms));
                    }
                }
                Some(AlarmAction::Ack { id }) => {
                    ops.set_alarm(id, AlarmStatus::Acknowledged, &actor(), role(&cli.role)?)
                        .await?;
                    println!("acknowledged {id}");
                }
                Some(AlarmAction::Resolve { id }) => {
                    ops.set_alarm(id, AlarmStatus::Resolved, &actor(), role(&cli.role)?)
                        .await?;
                    println!("resolved {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Edit { ref id, ref set } => {
            let changes = set
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        Ok((k.trim().to_string(), v.to_string()))
                    }
                    _ => anyhow::bail!("--set {kv:?}: expected FIELD=VALUE"),
                })
                .collect::<Result<Vec<_>>>()?;
            act(&cli, id, OperatorAction::Edit { changes }).await
        }
        Command::Override {
            ref id,
            ref reason,
            skip_gate,
            ref jump_to,
        } => {
            let target = match (skip_gate, jump_to) {
                (true, _) => OverrideTarget::SkipGate,
                (false, Some(phase)) => OverrideTarget::JumpTo(phase.clone()),
                (false, None) => anyhow::bail!("override needs --skip-gate or --jump-to PHASE"),
            };
            let reason = reason.clone();
            act(&cli, id, OperatorAction::Override { reason, target }).await
        }
    }
}

async fn dlq(cli: &Cli, cmd: &Dlq) -> Result<ExitCode> {
    use shepherd::dlq::RedriveFilter;
    let ops = connect(&cli.stack).await?;
    let role = role(&cli.role)?;
    let print =
        |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    match cmd {
        Dlq::List { phase, limit } => {
            let entries = ops.dlq_list(phase.as_deref(), *limit).await?;
            if cli.json {
                print(serde_json::to_value(&entries)?);
            } else {
                print!("{}", render::dlq(&entries));
            }
        }
        Dlq::Show { message_id } => {
            let (entry, production) = ops.dlq_show(message_id).await?;
            if cli.json {
                print(
                    serde_json::json!({"message": entry, "production": production.as_ref().map(|p| render::json(p, None))}),
                );
            } else {
                print!("{}", render::dlq(std::slice::from_ref(&entry)));
                println!("\nbody: {}", entry.body);
                if let Some(p) = production {
                    print!("\n{}", render::show(&p));
                }
            }
        }
        Dlq::Resubmit {
            message_id,
            include_malformed,
        } => {
            let filter = RedriveFilter {
                message_id: Some(message_id.clone()),
                include_malformed: *include_malformed,
                ..Default::default()
            };
            let r = ops.dlq_redrive(&filter, 10, &actor(), role).await?;
            if cli.json {
                print(serde_json::to_value(&r)?);
            } else {
                println!(
                    "resubmitted {message_id}: it becomes the phase's next attempt when the runtime takes it"
                );
            }
        }
        Dlq::Redrive {
            phase,
            all: _,
            code,
            older_than,
            rate,
            include_malformed,
        } => {
            let filter = RedriveFilter {
                phase: phase.clone(),
                code: code.clone(),
                older_than: older_than.map(Duration::from_secs),
                message_id: None,
                include_malformed: *include_malformed,
                account: None,
            };
            let r = ops.dlq_redrive(&filter, *rate, &actor(), role).await?;
            if cli.json {
                print(serde_json::to_value(&r)?);
            } else {
                for (id, phase, production) in &r.moved {
                    println!(
                        "redriven {id} ({phase}, production {})",
                        production.as_deref().unwrap_or("?")
                    );
                }
                println!(
                    "{} redriven, {} left in place (filtered out)",
                    r.moved.len(),
                    r.skipped
                );
            }
        }
        Dlq::Discard { message_id, reason } => {
            let e = ops.dlq_discard(message_id, reason, &actor(), role).await?;
            if cli.json {
                print(serde_json::to_value(&e)?);
            } else {
                println!(
                    "discarded {message_id} ({}); audited as dlq.discarded",
                    e.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One operator action, then the production as it now is.
async fn act(cli: &Cli, id: &str, action: OperatorAction) -> Result<ExitCode> {
    let role = role(&cli.role)?;
    let name = action.name();
    let ops = connect(&cli.stack).await?;
    let p = ops.act(id, action, &actor(), role).await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&render::json(&p, None))?);
    } else {
        println!("{name}: done. {}", render::banner(&p));
        let actions: Vec<&str> = p.available_actions().iter().map(|a| a.as_str()).collect();
        let actions = if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        };
        println!("Actions now: {actions}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each change until the production settles.
async fn follow(ops: &Ops, id: &str, interval: Duration, json: bool) -> Result<ExitCode> {
    let mut last: Option<Production> = None;
    loop {
        let p = ops.get(id).await?;
        let changed = last.as_ref().is_none_or(|l| l.version != p.version);
        if changed {
            if json {
                println!("{}", serde_json::to_string(&render::json(&p, None))?);
            } else {
                for line in render::changes(last.as_ref(), &p) {
                    println!("{line}");
                }
            }
        }
        if p.status.is_settled() {
            if !json {
                print!("\n{}", render::show(&p));
            }
            return Ok(if p.status == ProductionStatus::Completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
        last = Some(p);
        tokio::time::sleep(interval).await;
    }
}
