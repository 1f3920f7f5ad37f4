//! Bulletins in `pophost`: the `pophost bulletin` commands (over `admin_web::provision::bulletins`
//! as the actor `cli`, so they are checked and audited like the page and the API), and the
//! job `serve` runs every `bulletins.interval_secs` to deliver scheduled bulletins that are due.
//! The store makes delivery exactly once per mailbox (see `mailstore::Bulletins`), so every
//! frontend may run the job, and a bulletin posted for now is delivered by the command itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use admin_web::Actor;
use admin_web::provision::bulletins::{self as ops, BulletinRequest};
use anyhow::Context;
use clap::{Args, Subcommand};
use mailstore::{BulletinId, BulletinState, Store};
use tokio_util::sync::CancellationToken;

use crate::retention::now_ms;

#[derive(Debug, Subcommand)]
pub enum BulletinCommand {
    /// Post a notice into every mailbox of a domain (or of all domains): now, or at `--at`.
    Post(PostArgs),
    /// List bulletins, newest first, with their state and how many mailboxes got them.
    List,
    /// Cancel a scheduled bulletin (mailboxes it already reached keep it).
    Cancel { id: i64 },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["domain", "all"])))]
pub struct PostArgs {
    /// The domain whose mailboxes get it.
    #[arg(long)]
    pub domain: Option<String>,
    /// Every mailbox of every domain.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub subject: String,
    /// The message text (UTF-8); `-` reads standard input.
    #[arg(long)]
    pub body_file: PathBuf,
    /// When to deliver it (RFC 3339, e.g. 2026-12-24T22:00:00Z); default now. Scheduled
    /// bulletins are delivered by a running `pophost serve`.
    #[arg(long)]
    pub at: Option<String>,
}

/// Runs a `pophost bulletin` command; returns what to print.
pub async fn command(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: BulletinCommand,
) -> anyhow::Result<String> {
    Ok(match command {
        BulletinCommand::Post(args) => {
            let body = if args.body_file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the body from stdin")?
            } else {
                std::fs::read_to_string(&args.body_file)
                    .with_context(|| format!("reading {}", args.body_file.display()))?
            };
            let request = BulletinRequest {
                domain: if args.all { None } else { args.domain },
                subject: args.subject,
                body,
                at: args.at,
            };
            let b = ops::post(roles, cli, &request, now_ms()).await?;
            match b.state {
                BulletinState::Delivered => format!(
                    "bulletin {} delivered to {} mailbox(es)",
                    b.id, b.recipients
                ),
                _ => format!(
                    "bulletin {} scheduled for {}",
                    b.id,
                    admin_web::pages::human_time(b.due_at)
                ),
            }
        }
        BulletinCommand::List => {
            let mut out = String::new();
            for b in ops::list(roles, cli).await? {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{} mailbox(es)\t{}\t{}\n",
                    b.id,
                    b.scope,
                    admin_web::pages::human_time(b.due_at),
                    b.state.as_str(),
                    b.recipients,
                    b.author,
                    b.subject,
                ));
            }
            out.trim_end().to_string()
        }
        BulletinCommand::Cancel { id } => {
            ops::cancel(roles, cli, BulletinId(id)).await?;
            format!("bulletin {id} cancelled")
        }
    })
}

/// Delivers due bulletins every `interval` until `shutdown`.
pub async fn run(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.deliver_bulletins(now_ms()).await {
            Ok(done) if !done.is_empty() => {
                tracing::info!(bulletins = done.len(), "scheduled bulletins delivered")
            }
            Ok(_) => {}
            // Retried at the next tick: what was delivered stays recorded, nothing twice.
            Err(e) => tracing::warn!(error = %e, "delivering bulletins failed"),
        }
    }
}
