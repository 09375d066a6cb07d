//! `whereby-trigger init`: write a commented starter config that `check`
//! accepts, so a newcomer edits a working file instead of writing one blind.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write the config; an existing file is never overwritten.
    #[arg(long, value_name = "FILE", default_value = "whereby-trigger.toml")]
    config: PathBuf,
}

/// The starter config. It must stay loadable without any environment
/// variable set (a test runs `check` on it), so the secret comes from
/// `WHEREBY_WEBHOOK_SECRET`, which `serve` reads itself, rather than from a
/// `${NAME}` that would be an error when unset.
pub(crate) const STARTER: &str = r#"# whereby-trigger config: `whereby-trigger check --config whereby-trigger.toml`
# validates it, `whereby-trigger serve --config whereby-trigger.toml` runs it
# (SIGHUP reloads it). Every key is described in the README.

[server]
# port = 8080                     # where Whereby posts (behind your TLS proxy)
# path = "/"
# subdomain = "acme"              # for old payloads that carry no data.subdomain

[verify]
# The signing secret: serve reads WHEREBY_WEBHOOK_SECRET (or --secret) by
# itself. To keep it here instead, list it (several during a rotation):
# secrets = ["${WHEREBY_WEBHOOK_SECRET}"]
# allow_unsigned = true           # local experiments only

# [store]
# dir = "whereby-trigger-data"    # ids, claims and queued deliveries survive restarts

# One assistant per room session, from the first human who joins until the
# session ends. Each [[trigger]] has one action: stdout, run or forward.
[[trigger]]
name = "assistant"
on = ["room.client.joined"]
when = 'has(data.roleName) && data.roleName != "assistant"'   # CEL; `room.numHumans` etc. also work
once_per = "session"              # "event" (default), "room" or "session"
stop_on = ["room.session.ended"]  # stop it when the meeting ends
stdout = true                     # print one JSON line per start and stop
# run = { command = ["python3", "examples/assistant.py", "--room", "{roomUrl}"], timeout = "4h" }
# forward = { url = "http://127.0.0.1:9000/assistants", timeout = "5s" }
"#;

pub(crate) fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    // `create_new` refuses an existing file atomically: someone's edited
    // config is never replaced by the starter.
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.config)
    {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {} already exists; not overwritten (remove it, or give --config ANOTHER.toml)",
                args.config.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot create {}", args.config.display()));
        }
    };
    file.write_all(STARTER.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", args.config.display()))?;
    println!(
        "wrote {path}; next: whereby-trigger check --config {path}",
        path = args.config.display()
    );
    Ok(ExitCode::SUCCESS)
}
