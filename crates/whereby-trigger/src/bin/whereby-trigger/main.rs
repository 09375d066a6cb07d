//! The `whereby-trigger` command: `serve` runs the Trigger, `send` posts sample
//! webhooks to it. Flag parsing and start-up only; the work is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod check;
mod init;
mod outbox;
mod quarantine;
mod reload;
mod replay;
mod send;
mod serve;

/// Start AI assistants in Whereby rooms when Whereby's webhooks say so.
#[derive(Debug, Parser)]
#[command(name = "whereby-trigger", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive Whereby webhooks and print one JSON line per trigger event.
    Serve(serve::ServeArgs),
    /// Post a realistic, signed sample webhook (or a whole meeting) to a server.
    Send(send::SendArgs),
    /// Write a commented starter config (never over an existing file).
    Init(init::InitArgs),
    /// Load and validate a config file, and summarise its triggers.
    Check(check::CheckArgs),
    /// Feed recorded webhooks through a config's rules, without running actions.
    Replay(replay::ReplayArgs),
    /// List, retry or drop queued action deliveries in a data directory.
    Outbox(outbox::OutboxArgs),
    /// List, show, replay or drop the signed webhooks the server refused (400).
    Quarantine(quarantine::QuarantineArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let (Command::Serve(args), Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        args.note_sources(serve);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Init(args) => init::run(args),
            Command::Check(args) => Ok(check::run(args)),
            Command::Replay(args) => replay::run(args),
            Command::Outbox(args) => outbox::run(args),
            Command::Quarantine(args) => quarantine::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
