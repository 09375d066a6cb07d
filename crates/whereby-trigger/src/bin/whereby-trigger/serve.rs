//! `whereby-trigger serve`.

use std::fs::OpenOptions;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;
use whereby_trigger::actions::stdout::LineSink;
use whereby_trigger::config::Config;
use whereby_trigger::registry::Registry;
use whereby_trigger::rules::engine::Engine;
use whereby_trigger::store::Retention;
use whereby_trigger::units::{parse_duration, parse_size};
use whereby_trigger::verify::check_tolerance;
use whereby_trigger::webhook::{AnyEventType, DEFAULT_TOLERANCE, EventType, SigningSecret};
use whereby_trigger::{DedupLimits, Trigger};

use crate::reload::shutdown_signal;
#[cfg(unix)]
use crate::reload::{VerifyReload, reload_on_sighup};
use crate::store::open_store;

/// How long shutdown waits for `forward` deliveries in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Where the admin listener listens unless told otherwise: loopback only.
const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

/// `--admin-bind` / `[admin] bind`: an address, or `off` for none.
fn admin_bind(value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).with_context(|| {
        format!("admin bind: `{value}` is neither an address (127.0.0.1:9090) nor `off`")
    })
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file with [server], [verify] and [[trigger]] rules. Flags override
    /// the file; SIGHUP reloads its rules and secrets ([server] settings apply
    /// at start).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Port to listen on; 0 picks a free port (the address is logged).
    /// [default: 8080]
    #[arg(long)]
    port: Option<u16>,

    /// Address to listen on. [default: 0.0.0.0]
    #[arg(long)]
    bind: Option<IpAddr>,

    /// Address of the admin listener (GET /metrics, /status, /status.json),
    /// or `off`. Keep it private: the status page shows rooms and deliveries.
    /// [default: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR|off")]
    admin_bind: Option<String>,

    /// Path Whereby posts webhooks to. [default: /]
    #[arg(long)]
    path: Option<String>,

    /// Webhook signing secret from the Whereby dashboard; repeat it during a
    /// rotation. Default: the WHEREBY_WEBHOOK_SECRET environment variable, then
    /// the config file's [verify] secrets. An empty or whitespace-only secret is
    /// refused.
    #[arg(
        long = "secret",
        value_name = "SECRET",
        env = "WHEREBY_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secrets: Vec<String>,

    /// Whether `secrets` came from the environment rather than the flag: an
    /// error about one must say where to look.
    #[arg(skip)]
    secrets_from_env: bool,

    /// The flags about receiving webhooks that the command line gave, which a
    /// worker refuses rather than ignores.
    #[arg(skip)]
    receiving_flags: Vec<&'static str>,

    /// Accept unsigned webhooks when no secret is given (local testing only).
    #[arg(long)]
    allow_unsigned: bool,

    /// How far a signature's timestamp may be from now, either way; at least 1s.
    /// [default: 300s]
    #[arg(long, value_parser = parse_tolerance)]
    tolerance: Option<Duration>,

    /// Domain room URLs are built on: https://{subdomain}.{base-domain}{roomName}.
    #[arg(long, default_value = "whereby.com")]
    base_domain: String,

    /// Subdomain of room URLs for webhooks that carry no data.subdomain
    /// (Whereby's before 2025); a webhook's own subdomain always wins. Overrides
    /// [server] subdomain. [default: none: such webhooks are answered 400]
    #[arg(long, value_name = "SUBDOMAIN")]
    subdomain: Option<String>,

    /// Fire on every event of this type (room.client.joined, room.client.left,
    /// room.session.started, room.session.ended, assistant.requested) and print
    /// it as a JSON line. Repeatable; works with or without --config.
    /// Other types (recording.finished, room.client.knocked, ...) need a
    /// [[trigger]] in --config.
    #[arg(long = "on", value_name = "TYPE", value_parser = parse_on)]
    on: Vec<EventType>,

    /// Largest accepted body. [default: 64KiB]
    #[arg(long, value_parser = parse_size)]
    max_body: Option<usize>,

    /// Longest time a predicate may take before the delivery is answered 503.
    /// [default: 4s]
    #[arg(long, value_parser = parse_duration)]
    predicate_timeout: Option<Duration>,

    /// How many answered event ids are remembered for duplicate suppression.
    #[arg(long, default_value_t = whereby_trigger::deduplicate::DEFAULT_MAX_IDS)]
    dedup_max_ids: usize,

    /// How long an answered event id is remembered.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    dedup_max_age: Duration,

    /// Append every verified webhook to FILE as a JSON line, for `replay`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,

    /// Directory of the durable store (remembered ids, claims, room state,
    /// queued deliveries); created on first start. Overrides [store] dir.
    /// [default: ./whereby-trigger-data]
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    data_dir: Option<PathBuf>,

    /// A PostgreSQL database shared by several servers, instead of a data
    /// directory: postgres://USER@HOST:PORT/DB (the password in the URL or in
    /// PGPASSWORD). Overrides [store] url.
    #[arg(
        long,
        value_name = "URL",
        env = "WHEREBY_TRIGGER_STORE_URL",
        conflicts_with_all = ["ephemeral", "data_dir"]
    )]
    store_url: Option<String>,

    /// This process's name among the servers sharing a store: the holder of
    /// its claims and deliveries, shown in its logs. Unique per process.
    /// [default: HOSTNAME-PID]
    #[arg(long, value_name = "NAME", env = "WHEREBY_TRIGGER_NODE_ID")]
    node_id: Option<String>,

    /// Keep all state in memory only: a restart forgets ids and claims, and
    /// queued deliveries are lost with the process.
    #[arg(long)]
    ephemeral: bool,

    /// Only receive: what the rules decide is queued in the shared store
    /// (--store-url) for `whereby-trigger worker` processes to carry out.
    #[arg(long)]
    no_actions: bool,
}

/// What a process of the command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `serve`: receives webhooks, and carries out actions unless
    /// `--no-actions`.
    Serve,
    /// `worker`: carries out what receivers queued; receives nothing.
    Worker,
}

impl ServeArgs {
    /// `--config`, which logging reads `[log]` from before `run` loads it.
    pub(crate) fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// Records where clap found the values that came from more than one place.
    pub(crate) fn note_sources(&mut self, matches: &clap::ArgMatches) {
        self.secrets_from_env =
            matches.value_source("secrets") == Some(clap::parser::ValueSource::EnvVariable);
        // From the environment (a secret exported for the receivers beside
        // it) is no mistake; only what was typed for this command is.
        self.receiving_flags = RECEIVING_FLAGS
            .iter()
            .filter(|(id, _)| {
                matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|&(_, flag)| flag)
            .collect();
    }
}

/// The flags (clap's id, then as typed) that only a server receiving webhooks
/// uses. `--port` and `--bind` are not among them: a worker answers its probes.
const RECEIVING_FLAGS: [(&str, &str); 8] = [
    ("secrets", "--secret"),
    ("allow_unsigned", "--allow-unsigned"),
    ("tolerance", "--tolerance"),
    ("max_body", "--max-body"),
    ("predicate_timeout", "--predicate-timeout"),
    ("on", "--on"),
    ("record", "--record"),
    ("no_actions", "--no-actions"),
];

/// `--tolerance`: a duration of at least 1 s.
fn parse_tolerance(input: &str) -> Result<Duration, String> {
    let tolerance = parse_duration(input).map_err(|e| e.to_string())?;
    check_tolerance(tolerance).map_err(|e| e.to_string())
}

/// `--on`: one of the five types the typed Trigger behind it evaluates. Another
/// type Whereby documents gets a pointer to a config's `on`, which takes it,
/// instead of a bare refusal; a misspelt one only the refusal.
fn parse_on(input: &str) -> Result<EventType, String> {
    input
        .parse::<EventType>()
        .map_err(|err| match input.parse::<AnyEventType>() {
            Ok(other) if other.is_documented() => format!(
                "{err}; to act on {input}, use a config file: [[trigger]] on = [\"{input}\"] with \
                 an action (see `whereby-trigger init`), then serve --config FILE"
            ),
            _ => err.to_string(),
        })
}

/// The data directory when neither the flag nor the config names one.
pub(crate) const DEFAULT_DATA_DIR: &str = "whereby-trigger-data";

/// The secrets webhooks are verified with (the flag's or the environment's,
/// else the file's), and whether they came from the file (those follow it on
/// reload). Says in one log line whether signatures are checked and where the
/// secrets came from, never their values.
fn signing_secrets(
    args: &ServeArgs,
    config: &Config,
    role: Role,
) -> anyhow::Result<(Vec<String>, bool)> {
    let source = if args.secrets_from_env {
        "WHEREBY_WEBHOOK_SECRET"
    } else {
        "--secret"
    };
    // A worker never uses a secret (one typed for it is refused by `run`; one in
    // the environment is the receivers'), so it does not judge one either.
    for secret in args.secrets.iter().filter(|_| role == Role::Serve) {
        if let Err(e) = SigningSecret::try_new(secret) {
            bail!("{source}: {e}; give the secret from the Whereby dashboard");
        }
    }
    let mut secrets = args.secrets.clone();
    // Secrets from the file follow it on reload; those of the flag or the
    // environment stay as given.
    let secrets_from_file = secrets.is_empty();
    if secrets.is_empty() {
        secrets = config
            .verify
            .secrets
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
    }
    // A worker checks no signature: it receives nothing.
    let allow_unsigned =
        args.allow_unsigned || config.verify.allow_unsigned || role == Role::Worker;
    if secrets.is_empty() && !allow_unsigned {
        bail!(
            "no signing secret: pass --secret or set WHEREBY_WEBHOOK_SECRET or [verify] secrets \
             (or --allow-unsigned to accept unsigned webhooks, for local testing only)"
        );
    }
    // One line that says whether signatures are checked and where the secrets
    // came from (never their values): an `allow_unsigned` file started with
    // WHEREBY_WEBHOOK_SECRET still exported checks signatures, and without this
    // line nothing says why every unsigned request gets 401.
    if role == Role::Worker {
        // Nothing to say about signatures: it checks none, as it receives none.
    } else if secrets.is_empty() {
        tracing::warn!("signatures NOT checked: no secret, and unsigned webhooks are allowed");
    } else {
        let from = if !secrets_from_file {
            source.to_owned()
        } else {
            match &args.config {
                Some(path) => format!("[verify] secrets in {}", path.display()),
                None => "[verify] secrets".to_owned(),
            }
        };
        let unsigned = if allow_unsigned {
            " (allow_unsigned has no effect while a secret is set)"
        } else {
            ""
        };
        tracing::info!(
            "signatures checked: {} secret(s) from {from}{unsigned}",
            secrets.len()
        );
    }
    Ok((secrets, secrets_from_file))
}

pub(crate) async fn run(args: ServeArgs, role: Role) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?,
        None => Config::default(),
    };
    let shared =
        args.store_url.is_some() || (args.data_dir.is_none() && config.store.url.is_some());
    if role == Role::Worker {
        if args.config.is_none() {
            bail!("a worker carries out the actions of a config: give it --config");
        }
        if !shared || args.ephemeral {
            bail!(
                "a worker takes its work from the store receivers share: give it --store-url or [store] url"
            );
        }
        if !args.receiving_flags.is_empty() {
            bail!(
                "{} {} for `serve`: a worker receives no webhooks",
                args.receiving_flags.join(", "),
                if args.receiving_flags.len() == 1 {
                    "is"
                } else {
                    "are"
                }
            );
        }
    }
    if args.no_actions && (!shared || args.ephemeral) {
        bail!(
            "--no-actions leaves the actions to workers, which share the store: give it --store-url or [store] url"
        );
    }
    let runs_actions = !args.no_actions;
    let (secrets, secrets_from_file) = signing_secrets(&args, &config, role)?;
    if args.on.is_empty() && config.triggers.is_empty() {
        match role {
            Role::Serve => tracing::warn!(
                "no --on TYPE and no [[trigger]]: every webhook will be answered not_matched"
            ),
            Role::Worker => {
                tracing::warn!("no [[trigger]]: this worker has no action to carry out")
            }
        }
    }

    let stdout = LineSink::stdout();
    let actions = Arc::new(Registry::new(stdout.clone()));
    let engine = Arc::new(Engine::new(actions.rules(&config)?));

    // The file's [server] settings, then the flags over them.
    let mut builder = Trigger::builder()
        .server_config(&config.server)
        .tolerance(
            args.tolerance
                .or(config.verify.tolerance)
                .unwrap_or(DEFAULT_TOLERANCE),
        )
        .base_domain(args.base_domain.clone())
        .dedup_limits(DedupLimits {
            max_ids: args.dedup_max_ids,
            max_age: args.dedup_max_age,
        });
    if let Some(port) = args.port {
        builder = builder.port(port);
    }
    if let Some(bind) = args.bind {
        builder = builder.bind(bind);
    }
    let admin = args
        .admin_bind
        .as_deref()
        .or(config.admin.bind.as_deref())
        .unwrap_or(DEFAULT_ADMIN_BIND);
    builder = builder.admin(admin_bind(admin)?);
    if let Some(path) = args.path.clone() {
        builder = builder.path(path);
    }
    if let Some(max_body) = args.max_body {
        builder = builder.max_body(max_body);
    }
    if let Some(timeout) = args.predicate_timeout {
        builder = builder.predicate_timeout(timeout);
    }
    if let Some(subdomain) = args.subdomain.clone() {
        builder = builder.default_subdomain(subdomain);
    }
    builder = builder
        .run_actions(runs_actions)
        .receive_webhooks(role == Role::Serve);
    if !args.ephemeral {
        let retention = Retention::new(args.dedup_max_age, config.longest_lease());
        let store = open_store(
            args.store_url.as_deref(),
            args.data_dir.as_deref(),
            args.node_id.clone(),
            &config,
            runs_actions,
        )?;
        builder = builder.store(store, retention);
    }
    // With a config file the engine is attached even without triggers, so that
    // a reload can add some.
    if args.config.is_some() {
        builder = builder.rules(engine.clone());
    }
    for secret in secrets {
        builder = builder.secret(secret);
    }
    for event_type in &args.on {
        builder = builder.on_every(*event_type);
    }
    if let Some(path) = &args.record {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for recording", path.display()))?;
        builder = builder.record_webhooks(LineSink::new(file));
    }
    // When the server stops: assistants are stopped and deliveries in flight
    // drained, then every event is on stdout and in the recording, then what
    // the actions reported is flushed with the store.
    let draining = actions.clone();
    builder = builder
        .on_shutdown(move || async move { draining.shutdown(DRAIN).await })
        .print_events(stdout);
    let trigger = builder.build().context("invalid settings")?;
    if let Some(restored) = trigger.restored() {
        tracing::info!(
            ids = restored.ids,
            claims = restored.claims,
            rooms = restored.rooms,
            pending = restored.pending,
            dead = restored.dead,
            "state restored"
        );
    }

    let addr = trigger.addr();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let shutdown = shutdown_signal()?;
    #[cfg(unix)]
    let reloader = match &args.config {
        Some(path) => {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?;
            Some(tokio::spawn(reload_on_sighup(
                hup,
                path.clone(),
                (
                    config.server.clone(),
                    config.verify.clone(),
                    config.log.clone(),
                ),
                VerifyReload {
                    verification: trigger.verification(),
                    secrets_from_file,
                    tolerance_flag: args.tolerance,
                },
                actions.clone(),
                engine.clone(),
                !args.on.is_empty(),
            )))
        }
        None => None,
    };
    #[cfg(not(unix))]
    let reloader: Option<tokio::task::JoinHandle<()>> = None;
    trigger.serve(listener, shutdown).await?;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    Ok(ExitCode::SUCCESS)
}
