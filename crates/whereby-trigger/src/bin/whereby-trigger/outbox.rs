//! `whereby-trigger outbox`: see and manage queued action deliveries, also
//! while the server runs (the store is SQLite in WAL mode).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use whereby_trigger::store::SqliteStore;

#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    /// The server's data directory. [default: ./whereby-trigger-data]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

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
    let dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(crate::serve::DEFAULT_DATA_DIR));
    // "No store" only when there is none: `exists()` would also say false for
    // a store that cannot be read (permissions, a file where the directory
    // should be), which needs another fix.
    let db = dir.join(whereby_trigger::store::DB_FILE);
    match db.try_exists() {
        Ok(true) => {}
        Ok(false) => bail!(
            "no store in {} (start the server with --data-dir {0} first)",
            dir.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read the store {}", db.display()));
        }
    }
    // Beside a running server: the directory's lock is the server's.
    let store = SqliteStore::open_shared(&dir)?;
    match args.command {
        OutboxCommand::List { json: true } => {
            let list: Vec<serde_json::Value> = store
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
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(list));
        }
        OutboxCommand::List { json: false } => {
            let deliveries = store.deliveries()?;
            if deliveries.is_empty() {
                println!("the outbox is empty");
            }
            for d in deliveries {
                println!(
                    "{}\t{}\ttrigger={} kind={} action={} attempts={}{}",
                    d.id,
                    d.status.as_str(),
                    d.trigger,
                    d.kind,
                    d.action,
                    d.attempts,
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
