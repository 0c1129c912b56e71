//! `shepherd webhooks ...`: subscriptions and their deliveries.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use shepherd::domain::webhooks::{Delivery, DeliveryState, Subscription};
use shepherd::domain::{Caller, Millis};
use shepherd::ops::Ops;
use shepherd::ports::{Clock, SystemClock};
use shepherd::view::time;

#[derive(Subcommand)]
pub enum Webhooks {
    /// The subscriptions (the stack's own by default, or an account's).
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Register an endpoint; prints its signing secret once (`whsec_...`).
    Add {
        /// https:// (http:// only to a loopback address, for local receivers).
        #[arg(long)]
        url: String,
        /// Event types, comma-separated, or `*` for all of them.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// The account whose events it gets; none: the stack's own, every account's events.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// One subscription.
    Show { id: String },
    /// Deliver to it again (clears why it was disabled); replay what failed meanwhile.
    Enable { id: String },
    /// Stop delivering to it; its events are not kept for later.
    Disable { id: String },
    /// A new signing secret; the old one keeps signing beside it for 24 hours.
    Rotate { id: String },
    /// Delete it and its secret.
    Remove { id: String },
    /// Queue a `webhook.test` delivery; `--wait` follows it (exit 3 unless delivered).
    Test {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Its deliveries, newest first; `--failed-since` only the failed ones since then.
    Deliveries {
        id: String,
        /// RFC 3339, epoch milliseconds, or an age (`30m`, `6h`, `2d`).
        #[arg(long, value_parser = when)]
        failed_since: Option<Millis>,
        #[command(flatten)]
        page: shepherd::ops::requests::ListDeliveries,
    },
    /// One delivery with every attempt (time, status, latency, the answer's start).
    Delivery { id: String },
    /// Send a delivery that is not pending again (same webhook-id and body).
    Resend { id: String },
    /// Send again every failed delivery since a time (at most 500, 10 a second, once a minute).
    Replay {
        id: String,
        /// RFC 3339, epoch milliseconds, or an age (`30m`, `6h`, `2d`).
        #[arg(long, value_parser = when)]
        since: Millis,
    },
}

/// An instant: RFC 3339, epoch milliseconds, or an age before now.
pub(crate) fn when(s: &str) -> Result<Millis, String> {
    if let Ok(ms) = s.parse::<Millis>() {
        return Ok(ms);
    }
    if let Some(t) = shepherd::view::parse_time(s) {
        return Ok(t);
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected RFC 3339, epoch milliseconds or an age like 6h"))?;
    let ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: an age ends in m, h or d")),
    };
    Ok(SystemClock.now() - n.saturating_mul(ms))
}

fn subscriptions(subs: &[Subscription]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:<9} {:<10} URL / EVENTS",
        "ID", "STATE", "ACCOUNT"
    );
    for sub in subs {
        let events: Vec<&str> = sub.events.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            s,
            "{:<20} {:<9} {:<10} {}\n{:>42}{}",
            sub.id,
            format!("{:?}", sub.state).to_lowercase(),
            sub.account.as_deref().unwrap_or("(stack)"),
            sub.url,
            "",
            events.join(", ")
        );
        if let Some(why) = &sub.disabled_reason {
            let _ = writeln!(s, "{:>42}disabled: {why}", "");
        }
    }
    s
}

fn deliveries(ds: &[Delivery]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<30} {:<9} {:>8} {:<25} TYPE / SUBJECT",
        "DELIVERY", "STATE", "ATTEMPTS", "CREATED"
    );
    for d in ds {
        let _ = writeln!(
            s,
            "{:<30} {:<9} {:>8} {:<25} {} {}",
            d.id,
            format!("{:?}", d.state).to_lowercase(),
            d.attempts.len(),
            time(d.created_at),
            d.kind,
            d.subject
        );
    }
    s
}

fn delivery(d: &Delivery) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Delivery {} ({}) to {}: {}",
        d.id,
        d.kind,
        d.subscription,
        format!("{:?}", d.state).to_lowercase()
    );
    if d.state == DeliveryState::Pending {
        let _ = writeln!(s, "  next attempt not before {}", time(d.due));
    }
    for (i, a) in d.attempts.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:>2}. {}  {:>4}  {:>6} ms  {}",
            i + 1,
            time(a.at),
            a.status
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            a.latency_ms,
            a.excerpt.replace('\n', " ")
        );
    }
    s
}

pub(crate) fn print<T: serde::Serialize>(
    json: bool,
    v: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(v)?);
    } else {
        out!("{}", text());
    }
    Ok(())
}

pub async fn run(ops: &Ops, cmd: Webhooks, me: &Caller, json: bool) -> Result<ExitCode> {
    match cmd {
        Webhooks::List { account } => {
            let subs = ops.webhooks(account.as_deref(), me).await?;
            print(json, &subs, || subscriptions(&subs))?;
        }
        Webhooks::Add {
            url,
            events,
            account,
            description,
        } => {
            let c = ops
                .create_webhook(account.as_deref(), &url, &events, &description, me)
                .await?;
            print(json, &c, || {
                format!(
                    "{}signing secret (shown once; verify deliveries with it): {}\n",
                    subscriptions(std::slice::from_ref(&c.subscription)),
                    c.secret
                )
            })?;
        }
        Webhooks::Show { id } => {
            let sub = ops.webhook(&id, me).await?;
            print(json, &sub, || subscriptions(std::slice::from_ref(&sub)))?;
        }
        Webhooks::Enable { id } => {
            let sub = ops.set_webhook(&id, true, me).await?;
            print(json, &sub, || subscriptions(std::slice::from_ref(&sub)))?;
        }
        Webhooks::Disable { id } => {
            let sub = ops.set_webhook(&id, false, me).await?;
            print(json, &sub, || subscriptions(std::slice::from_ref(&sub)))?;
        }
        Webhooks::Rotate { id } => {
            let secret = ops.rotate_webhook(&id, me).await?;
            let v = serde_json::json!({"id": id, "secret": secret});
            print(json, &v, || {
                format!(
                    "new signing secret of {id} (the old one signs too for 24 hours): {secret}\n"
                )
            })?;
        }
        Webhooks::Remove { id } => {
            ops.delete_webhook(&id, me).await?;
            outln!("deleted {id}");
        }
        Webhooks::Test { id, wait } => {
            let d = ops.test_webhook(&id, me).await?;
            if !wait {
                print(json, &d, || {
                    format!("queued {} (shepherd webhooks delivery {})\n", d.id, d.id)
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let until = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let now = ops.delivery(&d.id, me).await?;
                if now.state != DeliveryState::Pending || std::time::Instant::now() > until {
                    print(json, &now, || delivery(&now))?;
                    return Ok(if now.state == DeliveryState::Delivered {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Webhooks::Deliveries {
            id,
            failed_since,
            page,
        } => {
            let page = ops
                .deliveries(&id, failed_since, page.limit, page.cursor.as_deref(), me)
                .await?;
            print(json, &page.items, || deliveries(&page.items))?;
            crate::more(&page.next);
        }
        Webhooks::Delivery { id } => {
            let d = ops.delivery(&id, me).await?;
            print(json, &d, || delivery(&d))?;
        }
        Webhooks::Resend { id } => {
            let d = ops.resend(&id, me).await?;
            print(json, &d, || format!("queued {} again\n", d.id))?;
        }
        Webhooks::Replay { id, since } => {
            let r = ops.replay(&id, since, me).await?;
            print(json, &r, || {
                let mut s = format!(
                    "queued {} failed deliveries since {} again\n",
                    r.resent.len(),
                    time(since)
                );
                if r.more {
                    s.push_str("more are failed: replay again in a minute\n");
                }
                s
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
