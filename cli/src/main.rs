//! `shepherd`: the operator CLI. Human-readable by default, `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};
use shepherd::domain::{Act, Actor, Caller, Production, ProductionStatus, Scope};
use shepherd::ops::{Ops, OpsError, requests};
use shepherd::ports::Clock;

/// What the CLI writes to the terminal: text from the stack (error details, audit
/// details, a receiver's answer) may hold terminal control sequences, which are shown
/// escaped, never sent to the terminal.
macro_rules! out {
    ($($t:tt)*) => { ::std::print!("{}", crate::render::clean(&::std::format!($($t)*))) };
}
macro_rules! outln {
    ($($t:tt)*) => { ::std::println!("{}", crate::render::clean(&::std::format!($($t)*))) };
}
macro_rules! errln {
    ($($t:tt)*) => { ::std::eprintln!("{}", crate::render::clean(&::std::format!($($t)*))) };
}

mod arrivals;
mod identity;
mod render;
mod schedules;
mod webhooks;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a production from a brief file (JSON).
    Start {
        /// The production's input: a JSON file the pipeline's schema accepts (for the
        /// content pipeline, a brief such as events/briefs/tides.json).
        #[arg(value_name = "INPUT")]
        brief: std::path::PathBuf,
        /// The pipeline to run (default: the stack's default pipeline); see `pipelines`.
        #[arg(long)]
        pipeline: Option<String>,
        /// Follow it until it settles.
        #[arg(long)]
        watch: bool,
        /// A repeat under the same key within 24 hours shows the first production and
        /// starts nothing. Default: a hash of the brief file, so a retried command never
        /// starts a second production; give a new key to start the same brief again.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List an account's productions, newest first (`--account`: the CLI acts for the
    /// whole stack, so it names the account).
    List(#[command(flatten)] requests::ListProductions),
    /// Audit events, oldest first: a production's, a trace's, or one type's in a window.
    Audit {
        /// The production whose trail to show.
        #[arg(conflicts_with_all = ["trace", "event_type", "redrive"], required_unless_present_any = ["trace", "event_type", "redrive"])]
        id: Option<String>,
        /// Project again the stream records the audit projector gave up on (its failure
        /// queue; within 24 hours, while the stream holds them).
        #[arg(long, conflicts_with_all = ["trace", "event_type"])]
        redrive: bool,
        #[arg(long)]
        trace: Option<String>,
        /// An event type (e.g. operator.paused, tool_call.unknown, dlq.redriven).
        #[arg(long = "type", conflicts_with = "trace")]
        event_type: Option<String>,
        /// With --type: from this many minutes ago (default 1440, a day).
        #[arg(long, default_value_t = 1440)]
        since_minutes: u64,
        #[command(flatten)]
        page: requests::AuditPage,
    },
    /// A production's phase timeline, attempts, errors and available actions.
    Show { id: String },
    /// A production's artifacts (images, audio, ...) with download links valid 15 minutes;
    /// `--download DIR` saves them as DIR/<phase>/<name>.<ext>, checking each SHA-256.
    Artifacts {
        id: String,
        #[arg(long)]
        download: Option<std::path::PathBuf>,
    },
    /// A phase's output, whole, as JSON (`show` gives a large one by reference); without a
    /// phase, every phase's output.
    Outputs { id: String, phase: Option<String> },
    /// Follow a production until it settles (exit 0 if it completed, 3 if not).
    Watch {
        id: String,
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// An operator action on a production (`shepherd <action> <id> ...`).
    #[command(flatten)]
    Act(Act),
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
        /// Repositories its coding jobs may write to: owner/name or owner/* patterns,
        /// comma-separated, replacing the list (`none`: no repository).
        #[arg(long, value_delimiter = ',')]
        repositories: Option<Vec<String>>,
        /// Base branches its jobs may name besides a repository's default (patterns such as
        /// release/*), replacing the list (`none`: the default branch only).
        #[arg(long, value_delimiter = ',')]
        bases: Option<Vec<String>>,
        /// The prefix of its jobs' branches, ending in / (`none`: shepherd/).
        #[arg(long)]
        branch_prefix: Option<String>,
        /// Its own source-control token's SSM parameter, under
        /// /shepherd/<stack>/accounts/<account>/ (`none`: the stack's token).
        #[arg(long)]
        scm_token_param: Option<String>,
    },
    /// The stack's pipelines: every version, the one new productions start on, and how many
    /// productions each version still has (completed and cancelled ones aside).
    Pipelines,
    /// Integrations (AI providers): list with health (default), enable, disable, test.
    Integrations {
        #[command(subcommand)]
        action: Option<IntegrationAction>,
    },
    /// Outbound webhooks: subscriptions, test-sends, deliveries, resend and replay.
    #[command(subcommand)]
    Webhooks(webhooks::Webhooks),
    /// Schedules: list, add, show (slot history), pause, resume, trigger, backfill, remove.
    #[command(subcommand)]
    Schedule(schedules::Schedules),
    /// Inbound webhook connectors (GitHub, Standard Webhooks): list, add, show, remove.
    #[command(subcommand)]
    Connector(arrivals::Connectors),
    /// Watchers (feeds, labelled GitHub issues, pipeline crates' kinds): list, add, kinds, show,
    /// enable, disable, remove.
    #[command(subcommand)]
    Watcher(arrivals::Watchers),
    /// Arrived events and what became of each: list, show, resubmit.
    #[command(subcommand)]
    Events(arrivals::Events),
    /// Alarms: list (default), acknowledge or resolve one (`<type>#<subject>`).
    Alarms {
        #[command(subcommand)]
        action: Option<AlarmAction>,
        #[command(flatten)]
        list: requests::ListAlarms,
    },
}

/// A list's next page, on stderr so stdout stays the list (text or JSON).
fn more(next: &Option<String>) {
    if let Some(c) = next {
        errln!("more: --cursor {c}");
    }
}

#[derive(Subcommand)]
enum Dlq {
    /// Messages in the DLQs: production, phase, attempt, last error, age.
    List(#[command(flatten)] requests::ListDlq),
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
        #[command(flatten)]
        redrive: requests::Redrive,
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

/// The CLI's command line: the action subcommands come from the domain's `Act`, each
/// taking the production's id first.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let actions = Act::augment_subcommands(clap::Command::new("actions"));
    for action in actions.get_subcommands() {
        let id = Arg::new("id")
            .required(true)
            .value_name("ID")
            .help("The production");
        cmd = cmd.mut_subcommand(action.get_name(), |s| s.arg(id).next_display_order(None));
    }
    cmd
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let target = matches
        .subcommand()
        .and_then(|(_, m)| m.try_get_one::<String>("id").ok().flatten().cloned());
    match run(cli, target).await {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            if matches!(e.downcast_ref::<OpsError>(), Some(OpsError::Forbidden(_))) {
                errln!(
                    "hint: the CLI's role is your IAM identity's {} tag (viewer when untagged)",
                    identity::ROLE_TAG
                );
            }
            ExitCode::from(1)
        }
    }
}

async fn connect(stack: &str) -> Result<Ops> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(Ops::connect(&sdk, stack).await?.0)
}

/// The CLI talks to the stack's tables with the caller's AWS credentials: its scope is the
/// whole stack; its actor and role come from that identity (see `identity`).
async fn caller() -> Result<Caller> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let (arn, role) = identity::whoami(&sdk).await?;
    Ok(Caller::new(Actor(format!("cli:{arn}")), role, Scope::Stack))
}

async fn run(cli: Cli, target: Option<String>) -> Result<ExitCode> {
    let brief_text = match &cli.command {
        Command::Start { brief, .. } => std::fs::read_to_string(brief)
            .with_context(|| format!("cannot read input {}", brief.display()))?,
        _ => String::new(),
    };
    let me = caller().await?;
    match cli.command {
        Command::Start {
            watch,
            idempotency_key,
            pipeline,
            brief,
        } => {
            let text = brief_text;
            let key = idempotency_key.unwrap_or_else(|| {
                use sha2::Digest as _;
                // Another pipeline with the same file is another production.
                let named = match &pipeline {
                    Some(name) => format!("{name}\n{text}"),
                    None => text.clone(),
                };
                let digest = hex::encode(sha2::Sha256::digest(named.as_bytes()));
                format!("cli-brief-{}", &digest[..32])
            });
            let ops = connect(&cli.stack).await?;
            // The stack checks the input against the definition it runs (as published);
            // a refused one creates nothing.
            let (p, repeated) = match ops
                .start_once(pipeline.as_deref(), &text, Some(&key), &me)
                .await
            {
                Err(e @ OpsError::InvalidInput(_)) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("invalid input {}", brief.display()))
                    );
                }
                other => other?,
            };
            if cli.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&render::json(&p, None, now()))?
                );
            } else if repeated {
                outln!(
                    "already started as production {} ({}): same brief and key {key} within 24 hours; \
                     nothing new was started (pass --idempotency-key to start another)",
                    p.id,
                    p.status.as_str()
                );
            } else {
                outln!(
                    "started production {} ({} phases, first: {})",
                    p.id,
                    p.phases.len(),
                    p.phases[0].name
                );
            }
            if watch {
                return follow(&ops, &p.id, &me, Duration::from_millis(500), cli.json).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { redrive: true, .. } => {
            let ops = connect(&cli.stack).await?;
            let r = ops.redrive_audit(&me).await?;
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outln!(
                    "{} failure reports: {} writes projected again ({} events); {} left in the queue",
                    r.reports,
                    r.writes,
                    r.events,
                    r.left
                );
            }
            Ok(if r.left == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Audit {
            ref id,
            ref trace,
            ref event_type,
            since_minutes,
            ref page,
            ..
        } => {
            use shepherd::audit::AuditQuery;
            let q = match (id, trace, event_type) {
                (Some(id), _, _) => AuditQuery::Production(id.clone()),
                (_, Some(t), _) => AuditQuery::Trace(t.clone()),
                (_, _, Some(ty)) => {
                    let until = shepherd::ports::SystemClock.now() + 1;
                    let back = i64::try_from(since_minutes)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(60_000);
                    AuditQuery::Type {
                        event_type: ty.clone(),
                        since: until.saturating_sub(back).max(0),
                        until,
                        account: None,
                    }
                }
                _ => anyhow::bail!("audit needs a production id, --trace or --type"),
            };
            let ops = connect(&cli.stack).await?;
            let rows = ops
                .audit(&q, page.limit, page.cursor.as_deref(), &me)
                .await?;
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&rows.items)?);
            } else {
                out!("{}", render::audit(&rows.items));
            }
            more(&rows.next);
            Ok(ExitCode::SUCCESS)
        }
        Command::List(q) => {
            let list = connect(&cli.stack).await?.list_productions(&q, &me).await?;
            if cli.json {
                let v: Vec<_> = list
                    .items
                    .iter()
                    .map(|p| render::json(p, None, now()))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("{}", render::list(&list.items));
            }
            more(&list.next);
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id } => {
            let ops = connect(&cli.stack).await?;
            let p = ops.get(&id, &me).await?;
            let (outputs, artifacts) = ops.detail(&p).await?;
            if cli.json {
                let v = shepherd::view::detail(&p, &outputs, &artifacts, now());
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("{}", render::show(&p));
                out!("{}", render::artifacts(&artifacts));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Outputs { id, phase } => {
            let ops = connect(&cli.stack).await?;
            let p = ops.get(&id, &me).await?;
            let v = match phase {
                Some(phase) => ops
                    .output(&p, &phase, usize::MAX)
                    .await?
                    .body
                    .unwrap_or_default(),
                None => serde_json::to_value(ops.outputs(&p).await?)?,
            };
            outln!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Artifacts { id, download } => {
            let ops = connect(&cli.stack).await?;
            let p = ops.get(&id, &me).await?;
            let artifacts = ops.artifacts(&p).await?;
            match download {
                Some(dir) => {
                    for a in &artifacts {
                        let path = dir.join(&a.phase).join(a.artifact.file_name());
                        let bytes = ops.artifact_bytes(a).await?;
                        let digest = shepherd::domain::artifacts::Artifact::of(
                            &p.id,
                            &a.artifact.name,
                            &bytes,
                            &a.artifact.content_type,
                        );
                        anyhow::ensure!(
                            digest.sha256 == a.artifact.sha256,
                            "{} does not match its SHA-256 (the bucket holds other bytes than the output says)",
                            a.artifact.key
                        );
                        std::fs::create_dir_all(path.parent().expect("a parent"))?;
                        std::fs::write(&path, &bytes)
                            .with_context(|| format!("writing {}", path.display()))?;
                        if !cli.json {
                            outln!(
                                "{}  ({} bytes, sha256 verified)",
                                path.display(),
                                bytes.len()
                            );
                        }
                    }
                    if cli.json {
                        outln!("{}", serde_json::to_string_pretty(&artifacts)?);
                    }
                }
                None if cli.json => outln!("{}", serde_json::to_string_pretty(&artifacts)?),
                None => out!("{}", render::artifacts(&artifacts)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { id, interval_ms } => {
            let ops = connect(&cli.stack).await?;
            follow(
                &ops,
                &id,
                &me,
                Duration::from_millis(interval_ms.max(100)),
                cli.json,
            )
            .await
        }
        Command::Act(ref act) => {
            let id = target.context("the action needs a production id")?;
            self::act(&cli, &me, &id, act.clone()).await
        }
        Command::Dlq(ref cmd) => dlq(&cli, &me, cmd).await,
        Command::Account {
            ref account,
            monthly,
            concurrent,
            ref repositories,
            ref bases,
            ref branch_prefix,
            ref scm_token_param,
        } => {
            let ops = connect(&cli.stack).await?;
            let usage = if monthly.is_some() || concurrent.is_some() {
                let current = ops.account_usage(account, &me).await?.own;
                let limits = shepherd::domain::limits::Limits {
                    monthly_allowance: monthly.map_or(current.monthly_allowance, |l| l.0),
                    max_concurrent: concurrent.map_or(current.max_concurrent, |l| l.0),
                };
                ops.set_limits(account, limits, &me).await?
            } else {
                ops.account_usage(account, &me).await?
            };
            let mut access = ops.account_access(account, &me).await?;
            let changes = [repositories, bases].iter().any(|l| l.is_some())
                || branch_prefix.is_some()
                || scm_token_param.is_some();
            if changes {
                let list = |l: &Vec<String>| -> Vec<String> {
                    l.iter()
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty() && p != "none")
                        .collect()
                };
                let text = |t: &String| Some(t.clone()).filter(|t| t != "none");
                if let Some(r) = repositories {
                    access.repositories = list(r);
                }
                if let Some(b) = bases {
                    access.bases = list(b);
                }
                if let Some(p) = branch_prefix {
                    access.branch_prefix = text(p);
                }
                if let Some(t) = scm_token_param {
                    access.scm_token_param = text(t);
                }
                access = ops.set_account_access(account, access, &me).await?;
            }
            if cli.json {
                let mut shown = serde_json::to_value(&usage)?;
                shown["access"] = serde_json::to_value(&access)?;
                outln!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                let show = |l: Option<u32>| l.map_or("unlimited".to_string(), |n| n.to_string());
                let listed = |l: &[String], none: &str| match l.is_empty() {
                    true => none.to_string(),
                    false => l.join(", "),
                };
                outln!("Account {} ({})", usage.account, usage.month);
                outln!(
                    "  started this month: {} of {}",
                    usage.started_this_month,
                    show(usage.effective.monthly_allowance)
                );
                outln!(
                    "  active now:         {} of {}  {}",
                    usage.active.len(),
                    show(usage.effective.max_concurrent),
                    usage.active.join(" ")
                );
                outln!(
                    "  repositories:       {}",
                    listed(&access.repositories, "none (coding jobs are refused)")
                );
                outln!(
                    "  base branches:      {}",
                    listed(&access.bases, "each repository's default only")
                );
                outln!("  branch prefix:      {}", access.branch_prefix());
                outln!(
                    "  scm token:          {}",
                    access
                        .scm_token_param
                        .as_deref()
                        .unwrap_or("the stack's (ScmTokenParameter)")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pipelines => {
            let list = connect(&cli.stack).await?.pipelines_in_use(&me).await?;
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                out!("{}", render::pipelines(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Integrations { ref action } => {
            let ops = connect(&cli.stack).await?;
            let shown = match action {
                None => {
                    let list = ops.integrations(&me).await?;
                    if cli.json {
                        outln!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        out!("{}", render::integrations(&list));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Some(IntegrationAction::Disable { id, reason }) => {
                    ops.set_integration_enabled(id, false, reason, &me).await?
                }
                Some(IntegrationAction::Enable { id }) => {
                    ops.set_integration_enabled(id, true, "", &me).await?
                }
                Some(IntegrationAction::Test { id }) => {
                    let r = ops.test_integration(id, &me).await?;
                    if cli.json {
                        outln!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        outln!("{}: secret {}; {}", r.id, r.secret, r.reachable);
                    }
                    return Ok(if r.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    });
                }
            };
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                out!("{}", render::integrations(std::slice::from_ref(&shown)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks(cmd) => {
            let ops = connect(&cli.stack).await?;
            webhooks::run(&ops, cmd, &me, cli.json).await
        }
        Command::Schedule(cmd) => {
            let ops = connect(&cli.stack).await?;
            schedules::run(&ops, cmd, &me, cli.json).await
        }
        Command::Connector(cmd) => {
            let ops = connect(&cli.stack).await?;
            arrivals::connector(&ops, cmd, &me, cli.json).await
        }
        Command::Watcher(cmd) => {
            let ops = connect(&cli.stack).await?;
            arrivals::watcher(&ops, cmd, &me, cli.json).await
        }
        Command::Events(cmd) => {
            let ops = connect(&cli.stack).await?;
            arrivals::event(&ops, cmd, &me, cli.json).await
        }
        Command::Alarms {
            ref action,
            ref list,
        } => {
            use shepherd::domain::alarms::AlarmStatus;
            let ops = connect(&cli.stack).await?;
            match action {
                None => {
                    let alarms = ops
                        .alarms(
                            list.account.as_deref(),
                            list.limit,
                            list.cursor.as_deref(),
                            &me,
                        )
                        .await?;
                    if cli.json {
                        outln!("{}", serde_json::to_string_pretty(&alarms.items)?);
                    } else {
                        out!("{}", render::alarms(&alarms.items));
                    }
                    more(&alarms.next);
                }
                Some(AlarmAction::Ack { id }) => {
                    ops.set_alarm(id, AlarmStatus::Acknowledged, &me).await?;
                    outln!("acknowledged {id}");
                }
                Some(AlarmAction::Resolve { id }) => {
                    ops.set_alarm(id, AlarmStatus::Resolved, &me).await?;
                    outln!("resolved {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn dlq(cli: &Cli, me: &Caller, cmd: &Dlq) -> Result<ExitCode> {
    use shepherd::ops::RedriveFilter;
    let ops = connect(&cli.stack).await?;
    let print =
        |v: serde_json::Value| outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    match cmd {
        Dlq::List(q) => {
            let entries = ops.dlq_list(q.phase.as_deref(), q.limit, me).await?;
            if cli.json {
                print(serde_json::to_value(&entries)?);
            } else {
                out!("{}", render::dlq(&entries));
            }
        }
        Dlq::Show { message_id } => {
            let (entry, production) = ops.dlq_show(message_id, me).await?;
            if cli.json {
                print(
                    serde_json::json!({"message": entry, "production": production.as_ref().map(|p| render::json(p, None, now()))}),
                );
            } else {
                out!("{}", render::dlq(std::slice::from_ref(&entry)));
                outln!("\nbody: {}", entry.body);
                if let Some(p) = production {
                    out!("\n{}", render::show(&p));
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
            let r = ops.dlq_redrive(&filter, requests::REDRIVE_RATE, me).await?;
            if cli.json {
                print(serde_json::to_value(&r)?);
            } else {
                outln!(
                    "resubmitted {message_id}: it becomes the phase's next attempt when the runtime takes it"
                );
            }
        }
        Dlq::Redrive {
            phase,
            all: _,
            redrive,
        } => {
            let redrive = requests::Redrive {
                phase: phase.clone(),
                ..redrive.clone()
            };
            let r = ops.dlq_redrive(&redrive.filter(), redrive.rate, me).await?;
            if cli.json {
                print(serde_json::to_value(&r)?);
            } else {
                for (id, phase, production) in &r.moved {
                    outln!(
                        "redriven {id} ({phase}, production {})",
                        production.as_deref().unwrap_or("?")
                    );
                }
                outln!(
                    "{} redriven, {} left in place (filtered out)",
                    r.moved.len(),
                    r.skipped
                );
            }
        }
        Dlq::Discard { message_id, reason } => {
            let e = ops.dlq_discard(message_id, reason, me).await?;
            if cli.json {
                print(serde_json::to_value(&e)?);
            } else {
                outln!(
                    "discarded {message_id} ({}); audited as dlq.discarded",
                    e.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One operator action, then the production as it now is.
async fn act(cli: &Cli, me: &Caller, id: &str, act: Act) -> Result<ExitCode> {
    let name = act.action();
    let ops = connect(&cli.stack).await?;
    let p = ops.act(id, act, me).await?;
    if cli.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&render::json(&p, None, now()))?
        );
    } else {
        outln!("{name}: done. {}", render::banner(&p));
        let actions: Vec<&str> = p
            .available_actions_at(now())
            .iter()
            .map(|a| a.as_str())
            .collect();
        let actions = if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        };
        outln!("Actions now: {actions}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each change until the production settles.
async fn follow(
    ops: &Ops,
    id: &str,
    me: &Caller,
    interval: Duration,
    json: bool,
) -> Result<ExitCode> {
    let mut last: Option<Production> = None;
    loop {
        let p = ops.get(id, me).await?;
        let changed = last.as_ref().is_none_or(|l| l.version != p.version);
        if changed {
            if json {
                outln!("{}", serde_json::to_string(&render::json(&p, None, now()))?);
            } else {
                for line in render::changes(last.as_ref(), &p) {
                    outln!("{line}");
                }
            }
        }
        if p.status.is_settled() {
            if !json {
                out!("\n{}", render::show(&p));
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

/// The wall clock's now (what `available_actions` is computed at).
fn now() -> shepherd::domain::Millis {
    shepherd::ports::Clock::now(&shepherd::ports::SystemClock)
}
