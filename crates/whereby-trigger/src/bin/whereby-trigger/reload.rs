//! SIGHUP: reload the config file's rules and secrets; SIGINT and SIGTERM:
//! stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use whereby_trigger::config::{Config, VerifyConfig};
use whereby_trigger::registry::Registry;
use whereby_trigger::rules::engine::Engine;
use whereby_trigger::verify::Verification;
use whereby_trigger::webhook::{DEFAULT_TOLERANCE, SigningSecret};

/// What a reload may change of signature checks.
#[cfg(unix)]
pub(crate) struct VerifyReload {
    pub(crate) verification: Verification,
    /// Whether the secrets in force came from the file (not `--secret` or
    /// `WHEREBY_WEBHOOK_SECRET`), and so follow it.
    pub(crate) secrets_from_file: bool,
    /// `--tolerance`, which wins over the file's.
    pub(crate) tolerance_flag: Option<Duration>,
}

#[cfg(unix)]
impl VerifyReload {
    /// Applies the reloaded `[verify]` when it differs from `current`.
    fn apply(&self, path: &std::path::Path, current: &VerifyConfig, new: &VerifyConfig) {
        if new == current {
            return;
        }
        if !self.secrets_from_file {
            tracing::warn!(
                file = %path.display(),
                "[verify] changed in the file, but the secrets given by --secret or \
                 WHEREBY_WEBHOOK_SECRET stay until the next start"
            );
            return;
        }
        let secrets: Vec<SigningSecret> = new
            .secrets
            .iter()
            .map(|s| SigningSecret::new(s.expose()))
            .collect();
        let count = secrets.len();
        let tolerance = self
            .tolerance_flag
            .or(new.tolerance)
            .unwrap_or(DEFAULT_TOLERANCE);
        match self.verification.replace_secrets(secrets, tolerance) {
            Ok(()) => tracing::info!(
                file = %path.display(), secrets = count, tolerance_s = tolerance.as_secs(),
                "signature checks reloaded"
            ),
            Err(err) => tracing::error!(file = %path.display(), %err, "[verify] not reloaded"),
        }
        if new.allow_unsigned != current.allow_unsigned {
            tracing::warn!(file = %path.display(),
                "[verify] allow_unsigned changed in the file; it takes effect at the next start");
        }
    }
}

/// Reloads the config on SIGHUP: a valid file replaces the rules for new events
/// (claims and running processes carry on) and the signing secrets (when they
/// come from the file); an invalid one is logged and the old rules stay.
/// Server settings (`[server]`: address, path, limits) and `[log]` need a
/// restart: a change to them (from `started`, the file's at start) is logged.
/// The signal handler is installed by the caller before the server reports
/// readiness, so an early SIGHUP reloads instead of killing the process. A
/// file with no trigger is refused unless `--on` (`on_flags`) still fires.
#[cfg(unix)]
pub(crate) async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    path: PathBuf,
    started: (
        whereby_trigger::config::ServerConfig,
        whereby_trigger::config::VerifyConfig,
        whereby_trigger::config::LogConfig,
    ),
    verify: VerifyReload,
    actions: Arc<Registry>,
    engine: Arc<Engine>,
    on_flags: bool,
) {
    let (started_server, mut current_verify, started_log) = started;
    while hup.recv().await.is_some() {
        match Config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                // An emptied file (or one cut short while being written) would
                // answer every later webhook `not_matched`, which Whereby never
                // retries: refused like an invalid one.
                if config.triggers.is_empty() && !on_flags {
                    return Err(format!(
                        "{}: no [[trigger]] left, and no --on: every webhook would be answered not_matched",
                        path.display()
                    ));
                }
                let rules = actions.rules(&config).map_err(|e| e.to_string())?;
                Ok((rules, config.server, config.verify, config.log))
            }) {
            Ok((rules, server, new_verify, log)) => {
                let count = rules.len();
                engine.replace_rules(rules);
                verify.apply(&path, &current_verify, &new_verify);
                current_verify = new_verify;
                tracing::info!(file = %path.display(), triggers = count, "config reloaded");
                if server != started_server {
                    tracing::warn!(
                        file = %path.display(),
                        "[server] settings changed in the file; they take effect at the next start"
                    );
                }
                if log != started_log {
                    // The subscriber is installed once, before the file is read.
                    tracing::warn!(
                        file = %path.display(),
                        "[log] changed in the file; it takes effect at the next start"
                    );
                }
            }
            Err(errors) => {
                tracing::error!(file = %path.display(), %errors, "config not reloaded; the old rules stay");
            }
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives just
/// after the server says it listens is never missed) and returns a future that
/// completes on either.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down: finishing requests in flight");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: finishing requests in flight");
        })
    }
}
