//! `whereby-trigger serve`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;
use whereby_trigger::units::{parse_duration, parse_size};
use whereby_trigger::webhook::{
    AssistantRequested, EventType, RoomClientJoined, RoomClientLeft, RoomSessionEnded,
    RoomSessionStarted,
};
use whereby_trigger::{DedupLimits, Trigger, TriggerBuilder, TriggerEvents};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Port to listen on; 0 picks a free port (the address is logged).
    #[arg(long, default_value_t = 8080)]
    port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,

    /// Path Whereby posts webhooks to.
    #[arg(long, default_value = "/")]
    path: String,

    /// Webhook signing secret from the Whereby dashboard; repeat it during a
    /// rotation. Default: the WHEREBY_WEBHOOK_SECRET environment variable.
    #[arg(
        long = "secret",
        value_name = "SECRET",
        env = "WHEREBY_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    secrets: Vec<String>,

    /// Accept unsigned webhooks when no secret is given (local testing only).
    #[arg(long)]
    allow_unsigned: bool,

    /// How far a signature's timestamp may be from now, either way.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    tolerance: Duration,

    /// Domain room URLs are built on: https://{subdomain}.{base-domain}{roomName}.
    #[arg(long, default_value = "whereby.com")]
    base_domain: String,

    /// Fire on every event of this type (room.client.joined, room.client.left,
    /// room.session.started, room.session.ended, assistant.requested). Repeatable.
    /// Without it no event fires.
    #[arg(long = "on", value_name = "TYPE")]
    on: Vec<EventType>,

    /// Largest accepted body.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    max_body: usize,

    /// Longest time a predicate may take before the delivery is answered 503.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    predicate_timeout: Duration,

    /// How many answered event ids are remembered for duplicate suppression.
    #[arg(long, default_value_t = whereby_trigger::deduplicate::DEFAULT_MAX_IDS)]
    dedup_max_ids: usize,

    /// How long an answered event id is remembered.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    dedup_max_age: Duration,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let secrets: Vec<String> = args.secrets.into_iter().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() && !args.allow_unsigned {
        bail!(
            "no signing secret: pass --secret or set WHEREBY_WEBHOOK_SECRET \
             (or --allow-unsigned to accept unsigned webhooks, for local testing only)"
        );
    }
    if args.on.is_empty() {
        tracing::warn!("no --on TYPE given: every webhook will be answered not_matched");
    }
    let mut builder = Trigger::builder()
        .port(args.port)
        .bind(args.bind)
        .path(args.path)
        .tolerance(args.tolerance)
        .base_domain(args.base_domain)
        .max_body(args.max_body)
        .predicate_timeout(args.predicate_timeout)
        .dedup_limits(DedupLimits {
            max_ids: args.dedup_max_ids,
            max_age: args.dedup_max_age,
        });
    for secret in secrets {
        builder = builder.secret(secret);
    }
    for event_type in args.on {
        builder = fire_on(builder, event_type);
    }
    let trigger = builder.build().context("invalid settings")?;

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let printer = spawn_printer(trigger.subscribe());
    trigger.serve(listener, shutdown_signal()).await?;
    // The stream has ended: wait until every event is on stdout.
    printer
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout writer panicked"))?;
    Ok(ExitCode::SUCCESS)
}

fn fire_on(builder: TriggerBuilder, event_type: EventType) -> TriggerBuilder {
    match event_type {
        EventType::RoomClientJoined => builder.on(|_: &RoomClientJoined| true),
        EventType::RoomClientLeft => builder.on(|_: &RoomClientLeft| true),
        EventType::RoomSessionStarted => builder.on(|_: &RoomSessionStarted| true),
        EventType::RoomSessionEnded => builder.on(|_: &RoomSessionEnded| true),
        EventType::AssistantRequested => builder.on(|_: &AssistantRequested| true),
    }
}

/// Writes each event as a JSON line on a thread of its own, so a slow reader of
/// stdout never stalls the server's workers.
fn spawn_printer(mut events: TriggerEvents) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        while let Some(event) = events.blocking_recv() {
            let mut out = stdout.lock();
            if let Err(err) = out
                .write_all(&event.to_json_line())
                .and_then(|()| out.flush())
            {
                tracing::error!(room_url = %event.room_url, %err, "cannot write a trigger event to stdout");
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
