//! `whereby-trigger outbox`: see and manage queued action deliveries, also
//! while the server runs (SQLite in WAL mode allows it; a shared database too).

use std::process::ExitCode;
use std::time::Duration;

use crate::operated::StoreArgs;
use anyhow::bail;
use clap::{Args, Subcommand};
use whereby_trigger::store::Delivery;
use whereby_trigger::units::format_duration;

#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Pending and dead deliveries: id, status, trigger, action, attempts, when
    /// the next attempt is due, last error.
    List {
        /// One JSON array of objects (id, status, trigger, kind, action,
        /// room_url, attempts, created_ms, retry_at_ms, last_error, node), for
        /// scripts.
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
                        "retry_at_ms": d.retry_at_ms,
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
            let now_ms = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX);
            for d in deliveries {
                let next = next_in(&d, now_ms);
                println!(
                    "{}\t{}\ttrigger={} kind={} action={} attempts={}{}{}{}",
                    d.id,
                    d.status.as_str(),
                    d.trigger,
                    d.kind,
                    d.action,
                    d.attempts,
                    next,
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

/// ` next_in=30s` for a pending delivery whose next attempt is still to come;
/// nothing when it is due (it is attempted at once), dead, or never failed.
fn next_in(d: &Delivery, now_ms: i64) -> String {
    d.retry_in(now_ms)
        .map(|wait| {
            // Rounded up to a whole second: "next_in=0s" would read as now.
            let secs = wait.as_millis().div_ceil(1000);
            let secs = u64::try_from(secs).unwrap_or(u64::MAX);
            format!(" next_in={}", format_duration(Duration::from_secs(secs)))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whereby_trigger::store::DeliveryStatus;

    #[test]
    fn the_wait_before_the_next_attempt_is_shown_while_it_lasts() {
        let mut d = whereby_trigger::store::Delivery {
            id: "t:e:forward".into(),
            trigger: "t".into(),
            kind: "forward".into(),
            action: "start".into(),
            claim: String::new(),
            room_url: String::new(),
            room: None,
            webhook: "{}".into(),
            attempts: 1,
            created_ms: 0,
            status: DeliveryStatus::Pending,
            last_error: Some("HTTP 503".into()),
            retry_at_ms: Some(100_000),
            node: String::new(),
        };
        assert_eq!(next_in(&d, 10_000), " next_in=90s");
        assert_eq!(next_in(&d, 99_999), " next_in=1s");
        assert_eq!(next_in(&d, 100_000), "");
        assert_eq!(next_in(&d, 200_000), "");
        d.status = DeliveryStatus::Dead;
        assert_eq!(next_in(&d, 10_000), "");
        d.status = DeliveryStatus::Pending;
        d.retry_at_ms = None;
        assert_eq!(next_in(&d, 10_000), "");
    }
}
