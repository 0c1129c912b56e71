//! `shepherd`: the operator CLI. Human-readable by default, `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shepherd::domain::{Brief, Production, ProductionStatus};
use shepherd::ops::Ops;
use shepherd::ports::Actor;

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
        #[arg(long, default_value_t = 20)]
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
        Command::List { account, limit } => {
            let ops = connect(&cli.stack).await?;
            let list = ops.list(&account, limit).await?;
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
    }
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
