//! `whereby-trigger quarantine`: the signed webhooks the server refused (400),
//! kept in its data directory so that none is lost without a trace. After an
//! upgrade or a config change (a default subdomain, say) `replay` posts one to
//! the running server again, signed afresh, and drops it once accepted.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use whereby_trigger::store::Quarantined;

use crate::operated::StoreArgs;
use whereby_trigger::webhook::{SIGNATURE_HEADER, SigningSecret, unix_now};

#[derive(Debug, Args)]
pub(crate) struct QuarantineArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(subcommand)]
    command: QuarantineCommand,
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// The refused webhooks: id, when, the answer's code, field and error, size.
    List,
    /// Print one refused webhook's body as received.
    Show {
        /// The webhook's quarantine id, as `list` shows it.
        id: String,
    },
    /// Post a refused webhook to the server again, signed now; dropped from the
    /// quarantine once the server answers 2xx, kept (and the answer printed)
    /// otherwise.
    Replay {
        /// The webhook's quarantine id, as `list` shows it.
        id: String,
        /// URL of the server's webhook endpoint.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080/")]
        to: String,
        /// Secret to sign with (one the server accepts). Default: the
        /// WHEREBY_WEBHOOK_SECRET environment variable; with neither, it is
        /// posted unsigned.
        #[arg(long, env = "WHEREBY_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Remove a refused webhook for good.
    Drop {
        /// The webhook's quarantine id, as `list` shows it.
        id: String,
    },
}

pub(crate) async fn run(args: QuarantineArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let find = |id: &str| -> anyhow::Result<Quarantined> {
        store
            .store()
            .quarantined()?
            .into_iter()
            .find(|q| q.id == id)
            .with_context(|| format!("no quarantined webhook with id {id}"))
    };
    match args.command {
        QuarantineCommand::List => {
            let kept = store.store().quarantined()?;
            if kept.is_empty() {
                println!("the quarantine is empty");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            for q in kept {
                println!(
                    "{}\t{}s ago\tcode={}{} bytes={} error={:?}",
                    q.id,
                    (now - q.at_ms).max(0) / 1000,
                    q.code,
                    q.field.map(|f| format!(" field={f}")).unwrap_or_default(),
                    q.body.len(),
                    q.error
                );
            }
        }
        QuarantineCommand::Show { id } => {
            let q = find(&id)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&q.body)?;
            out.write_all(b"\n")?;
        }
        QuarantineCommand::Replay { id, to, secret } => {
            let q = find(&id)?;
            let mut request = reqwest::Client::new()
                .post(&to)
                .header("content-type", "application/json");
            match secret.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(secret) => {
                    let header = SigningSecret::new(secret).sign(unix_now(), &q.body);
                    request = request.header(SIGNATURE_HEADER, header);
                }
                None => eprintln!("note: posting unsigned (no --secret or WHEREBY_WEBHOOK_SECRET)"),
            }
            let response = request
                .body(q.body)
                .send()
                .await
                .with_context(|| format!("cannot reach {to}"))?;
            let status = response.status();
            let answer = response.text().await.unwrap_or_default();
            println!("HTTP {status}");
            println!("{answer}");
            if !status.is_success() {
                eprintln!("{id} stays in the quarantine");
                return Ok(ExitCode::from(1));
            }
            store.drop_quarantined(&id)?;
            eprintln!("{id} accepted and dropped from the quarantine");
        }
        QuarantineCommand::Drop { id } => {
            if !store.drop_quarantined(&id)? {
                bail!("no quarantined webhook with id {id}");
            }
            println!("{id} dropped");
        }
    }
    Ok(ExitCode::SUCCESS)
}
