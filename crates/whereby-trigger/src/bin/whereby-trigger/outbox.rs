//! `whereby-trigger outbox`: see and manage queued action deliveries, also
//! while the server runs (SQLite in WAL mode allows it; a shared database too).

use std::process::ExitCode;

use crate::operated::StoreArgs;
use anyhow::bail;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Pending and dead deliveries: id, status, trigger, action, attempts, last error.
    List {
        /// One JSON array of objects (id, status, trigger, kind, action,
        /// room_url, attempts, created_ms, last_error), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make a delivery (or, with --all, every dead one) pending again, with a fresh
    /// attempt count and max_age; a running server picks it up within seconds, a
    /// stopped one at its next start.
    Retry {
        /// The delivery's id, as `list` shows it.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every dead delivery.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a delivery for good.
    Drop {
        /// The delivery's id, as `list` shows it.
        id: String,
    },
}

pub(crate) fn run(args: OutboxArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    match args.command {
        OutboxCommand::List { json: true } => {
            let list: Vec<serde_json::Value> = store
                .store()
                .deliveries()?
                .into_iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id,
                        "status": d.status.as_str(),
                        "trigger": d.trigger,
                        "kind": d.kind,
                        "action": d.action,
                        "room_url": d.room_url,
                        "attempts": d.attempts,
                        "created_ms": d.created_ms,
                        "last_error": d.last_error,
                        "node": d.node,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(list));
        }
        OutboxCommand::List { json: false } => {
            let deliveries = store.store().deliveries()?;
            if deliveries.is_empty() {
                println!("the outbox is empty");
            }
            for d in deliveries {
                println!(
                    "{}\t{}\ttrigger={} kind={} action={} attempts={}{}{}",
                    d.id,
                    d.status.as_str(),
                    d.trigger,
                    d.kind,
                    d.action,
                    d.attempts,
                    if d.node.is_empty() {
                        String::new()
                    } else {
                        format!(" node={}", d.node)
                    },
                    d.last_error
                        .map(|e| format!(" last_error={e:?}"))
                        .unwrap_or_default()
                );
            }
        }
        OutboxCommand::Retry { all: true, .. } => {
            println!("{} delivery(ies) made pending again", store.retry_dead()?);
        }
        OutboxCommand::Retry { id, .. } => {
            let id = id.unwrap_or_default();
            if !store.retry(&id)? {
                bail!("no delivery with id {id}");
            }
            println!("{id} is pending again");
        }
        OutboxCommand::Drop { id } => {
            if !store.drop_delivery(&id)? {
                bail!("no delivery with id {id}");
            }
            println!("{id} dropped");
        }
    }
    Ok(ExitCode::SUCCESS)
}
