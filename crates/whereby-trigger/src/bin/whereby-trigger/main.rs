//! The `whereby-trigger` command: `serve` runs the Trigger, `send` posts sample
//! webhooks to it. Flag parsing and start-up only; the work is in the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use whereby_trigger::actions::stdout::{LineSink, push_escaping_separators};
use whereby_trigger::config::{LogConfig, LogFormat};

/// See the `mimalloc` dependency in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod init;
mod operated;
mod outbox;
mod quarantine;
mod reload;
mod replay;
mod send;
mod serve;
mod store;

/// Start AI assistants in Whereby rooms when Whereby's webhooks say so.
#[derive(Debug, Parser)]
#[command(name = "whereby-trigger", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr: pretty (coloured on a terminal) or json (one
    /// object per line). Levels come from RUST_LOG (default: info).
    /// [default: the config file's [log] format for `serve`, else pretty]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
}

fn parse_log_format(input: &str) -> Result<LogFormat, String> {
    input
        .parse()
        .map_err(|e: whereby_trigger::config::UnknownLogFormat| e.to_string())
}

impl Cli {
    /// The flag, else the config file's `[log] format` for `serve` (the one
    /// command that runs unattended), else `pretty`. The file is read for that
    /// one key before the rest, since loading the rest may log; a file that
    /// cannot be read is reported by the full load, so it counts as silent here.
    fn log_format(&self) -> LogFormat {
        if let Some(format) = self.log_format {
            return format;
        }
        match &self.command {
            Command::Serve(args) | Command::Worker(args) => args
                .config_path()
                .and_then(LogConfig::peek)
                .and_then(|log| log.format)
                .unwrap_or_default(),
            _ => LogFormat::default(),
        }
    }
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
///
/// With `batched`, lines go through a [`LineSink`] (returned, to be flushed
/// before the process ends) instead of one `write` per line on the thread
/// that logs: a server logs a line or two per webhook, and a system call
/// apiece is a measurable share of what a webhook costs.
fn init_logging(format: LogFormat, batched: bool) -> Option<LineSink> {
    let sink = batched.then(|| LineSink::new(std::io::stderr()));
    let writer = LogWriter(sink.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            // The event's fields beside `message`, and the webhook span's
            // fields under `span`: one flat object a log shipper can index.
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        // `LogFormat` may grow; anything else is for people.
        _ => builder.with_ansi(colour()).init(),
    }
    sink
}

/// Where a log line goes: the batching sink while it is open, else straight
/// to stderr (a line logged after the sink is closed is still shown).
#[derive(Clone)]
struct LogWriter(Option<LineSink>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each line whole, in one call. A payload's
        // id or room name may carry U+2028, U+2029 or U+0085, which line
        // splitters that honour them (Python's `str.splitlines`) would cut
        // the line at: they are escaped, as in every JSON line.
        let queued = buf.is_empty()
            || self
                .0
                .as_ref()
                .is_some_and(|sink| sink.try_write_with(|out| push_escaping_separators(out, buf)));
        if !queued {
            let mut line = Vec::with_capacity(buf.len());
            push_escaping_separators(&mut line, buf);
            std::io::stderr().write_all(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set (no-color.org):
/// escape codes in a file or a pipe are noise.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive Whereby webhooks and print one JSON line per trigger event.
    Serve(serve::ServeArgs),
    /// Carry out the actions that receivers sharing a PostgreSQL store
    /// (`serve --no-actions`) queued; receives no webhooks (its port answers
    /// /healthz and /readyz). Takes serve's flags but those of receiving
    /// (--secret, --allow-unsigned, --tolerance, --max-body, --predicate-timeout,
    /// --on, --record, --no-actions); needs --config and --store-url (or [store]
    /// url).
    Worker(serve::ServeArgs),
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
    if let (Command::Serve(args) | Command::Worker(args), Some((_, sub))) =
        (&mut cli.command, matches.subcommand())
    {
        args.note_sources(sub);
    }
    // The long-running commands batch their log lines; the others write each
    // at once, which keeps their lines in step with what they print.
    let batched = matches!(cli.command, Command::Serve(_) | Command::Worker(_));
    let logs = init_logging(cli.log_format(), batched);
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
            Command::Serve(args) => serve::run(args, serve::Role::Serve).await,
            Command::Worker(args) => serve::run(args, serve::Role::Worker).await,
            Command::Send(args) => send::run(args).await,
            Command::Init(args) => init::run(args),
            Command::Check(args) => Ok(check::run(args)),
            Command::Replay(args) => replay::run(args),
            Command::Outbox(args) => outbox::run(args),
            Command::Quarantine(args) => quarantine::run(args).await,
        }
    });
    // What the runtime's tasks log while it shuts down is still batched, and
    // every batched line is out before the error below.
    drop(runtime);
    if let Some(logs) = logs {
        logs.flush_and_close().wait();
    }
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
