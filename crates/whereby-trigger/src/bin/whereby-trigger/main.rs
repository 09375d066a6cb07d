//! The `whereby-trigger` command: `serve` runs the Trigger, `send` posts sample
//! webhooks to it. Flag parsing and start-up only; the work is in the library.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use whereby_trigger::actions::stdout::LineSink;
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
        // The formatter hands over each line whole, in one call.
        let line = escape_line_separators(buf);
        let queued = line.is_empty()
            || self
                .0
                .as_ref()
                .is_some_and(|sink| sink.try_write_with(|out| out.extend_from_slice(&line)));
        if !queued {
            std::io::stderr().write_all(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `line` with U+2028, U+2029 and U+0085 written as `\u2028`, `\u2029`,
/// `\u0085`: a payload's id or room name may carry them raw, and line
/// splitters that honour them (Python's `str.splitlines`) would cut one log
/// line in two. In a JSON line they can only stand inside strings, where the
/// escape is the same text; in a pretty line it is still readable.
fn escape_line_separators(line: &[u8]) -> Cow<'_, [u8]> {
    // In UTF-8 these start with C2 or E2, bytes that never continue another
    // character: a line without either (nearly every one) is left as it is.
    if memchr::memchr2(0xC2, 0xE2, line).is_none() {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 12);
    let mut rest = line;
    while let Some(at) = memchr::memchr2(0xC2, 0xE2, rest) {
        let (escape, len): (&[u8], usize) = match rest[at..] {
            [0xC2, 0x85, ..] => (b"\\u0085", 2),
            [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
            [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
            _ => (&rest[at..=at], 1),
        };
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(escape);
        rest = &rest[at + len..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
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
    /// /healthz and /readyz). Takes serve's flags; needs --config and
    /// --store-url (or [store] url).
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
    if let (Command::Serve(args), Some(serve)) =
        (&mut cli.command, matches.subcommand_matches("serve"))
    {
        args.note_sources(serve);
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

#[cfg(test)]
mod tests {
    use super::escape_line_separators;

    #[test]
    fn log_lines_escape_every_line_separator_and_nothing_else() {
        // Neither C2 nor E2 in it: the line itself, not a copy.
        let plain = "webhook answered id=\"a\" caf\u{e9}\n";
        assert!(matches!(
            escape_line_separators(plain.as_bytes()),
            std::borrow::Cow::Borrowed(_)
        ));
        let line = "{\"id\":\"a\u{2028}b\u{2029}c\u{85}d\u{2014}\u{a0}\"}\n";
        let escaped = escape_line_separators(line.as_bytes());
        let text = std::str::from_utf8(&escaped).expect("still UTF-8");
        assert_eq!(
            text,
            "{\"id\":\"a\\u2028b\\u2029c\\u0085d\u{2014}\u{a0}\"}\n"
        );
        let value: serde_json::Value = serde_json::from_str(text).expect("still JSON");
        assert_eq!(value["id"], "a\u{2028}b\u{2029}c\u{85}d\u{2014}\u{a0}");
        assert_eq!(text.lines().count(), 1);
    }
}
