//! The config file: server settings, verification, and `[[trigger]]` rules.
//!
//! Parsed from a string with the environment passed in, so a test can load a
//! file that uses every option. Every key is checked (an unknown key is an error
//! that names it), every trigger is compiled (CEL, placeholders, URLs), and
//! every error names its line and trigger. Secrets never appear in an error,
//! a summary or a `Debug` string.

//!
//! One file per part of the file: `server` (`[server]`), `verify`
//! (`[verify]`), `store` (`[store]`), `log` (`[log]`), `trigger` (`[[trigger]]`), `raw` (the serde mirrors every key is
//! read into first, so that errors can name keys and lines), `env` (`${NAME}`).

mod env;
mod log;
mod raw;
mod server;
mod store;
mod trigger;
mod verify;

pub(crate) use env::expand;
pub use log::{LogConfig, LogFormat, UnknownLogFormat};
pub use server::ServerConfig;
pub use store::StoreConfig;
pub use trigger::TriggerConfig;
pub use verify::VerifyConfig;

pub use crate::util::closest;

use raw::*;
use server::server_config;
use store::store_config;
use trigger::trigger_config;
use verify::verify_config;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use whereby_webhook::room_url::check_subdomain;
use whereby_webhook::{AnyEventType, RoomUrlError};

#[cfg(feature = "forward")]
use crate::actions::forward::{
    DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_MAX_AGE, ForwardSpec, RetryPolicy, SigningKey,
};
use crate::actions::run::{DEFAULT_MAX_RESTARTS, RestartPolicy, RunSpec, StdinMode, WhenFull};
use crate::actions::template::Template;
use crate::limits::Limits;
#[cfg(feature = "cel")]
use crate::rules::cel::When;
use crate::state::claims::OncePer;
use crate::store::DEFAULT_SHARED_LEASE;
use crate::units::{format_duration, parse_duration, parse_size};

pub use crate::state::claims::DEFAULT_LEASE;

/// Default `run.timeout`.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// Default `run.stop_grace`: time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default `run.max_running`.
pub const DEFAULT_MAX_RUNNING: usize = 50;
/// Default `forward.timeout`, per attempt.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Smallest `[server] max_header_bytes`: room for a request line and a few
/// headers. (hyper's read buffer never goes below 8 KiB, but the cap on the
/// head is exact down to this.)
pub const MIN_HEADER_BYTES: usize = 1024;
/// How long Whereby waits for an answer to a delivery: `[server]
/// request_deadline` must be shorter, or the 503 it gives would never be heard.
pub const WHEREBY_DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A signing secret from the config. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the verifier.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// `bind`: the admin listener's address (`/metrics`, `/status`), or
    /// `"off"`; the command's default is `127.0.0.1:9090`.
    pub bind: Option<String>,
}

/// A whole config file.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[verify]`
    pub verify: VerifyConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// The `[[trigger]]` tables, in file order.
    pub triggers: Vec<TriggerConfig>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigProblem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The trigger concerned, if any.
    pub trigger: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConfigErrors {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// The problems, in file order.
    pub errors: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_deref()
            .map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{file}")?;
            if let Some(line) = error.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
            if let Some(trigger) = &error.trigger {
                write!(f, "trigger `{trigger}`: ")?;
            }
            f.write_str(&error.message)?;
        }
        Ok(())
    }
}

/// Line numbers of byte offsets in the source.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        self.0
            .get(..offset)
            .map_or(0, |before| before.bytes().filter(|b| *b == b'\n').count())
            + 1
    }
}

impl Config {
    /// The longest `lease` of the triggers ([`DEFAULT_LEASE`] without any): how
    /// long an idle room's state must be kept.
    pub fn longest_lease(&self) -> std::time::Duration {
        self.triggers
            .iter()
            .map(|t| t.lease)
            .max()
            .unwrap_or(DEFAULT_LEASE)
    }

    /// Reads and validates the file at `path`, expanding `${NAME}` from the
    /// process environment.
    ///
    /// # Errors
    /// Every problem found, each with the file, its line and its trigger.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
            file: Some(path.to_owned()),
            errors: vec![ConfigProblem {
                line: None,
                trigger: None,
                message: format!("cannot read the file: {err}"),
            }],
        })?;
        Config::from_toml(&text, &|name| std::env::var(name).ok()).map_err(|mut errors| {
            errors.file = Some(path.to_owned());
            errors
        })
    }

    /// Parses and validates a config, looking `${NAME}` up with `env`.
    ///
    /// # Errors
    /// Every problem found, each with its line and trigger.
    ///
    /// ```
    /// use whereby_trigger::config::Config;
    ///
    /// let toml = r#"
    /// [verify]
    /// secrets = ["${SECRET}"]
    ///
    /// [[trigger]]
    /// name = "note-taker"
    /// on = ["room.session.started"]
    /// stdout = true
    /// "#;
    /// let env = |name: &str| (name == "SECRET").then(|| "whsec_x".to_owned());
    /// let config = Config::from_toml(toml, &env)?;
    /// assert_eq!(&*config.triggers[0].name, "note-taker");
    ///
    /// let err = Config::from_toml(toml, &|_: &str| None).unwrap_err();
    /// assert!(err.to_string().contains("SECRET"));
    /// # Ok::<(), whereby_trigger::config::ConfigErrors>(())
    /// ```
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let lines = Lines(text);
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigErrors {
            file: None,
            errors: vec![ConfigProblem {
                line: err.span().map(|span| lines.of(span.start)),
                trigger: err.span().and_then(|span| trigger_at(text, span.start)),
                message: err.message().trim().to_owned(),
            }],
        })?;
        let mut errors = Vec::new();
        let server = server_config(raw.server, &lines, &mut errors);
        let verify = verify_config(raw.verify, &lines, env, &mut errors);
        let store = store_config(raw.store, &lines, env, &mut errors);
        let mut names = HashSet::new();
        let mut triggers = Vec::new();
        for trigger in raw.trigger {
            let line = lines.of(trigger.name.span().start);
            let name = trigger.name.get_ref().clone();
            if !names.insert(name.clone()) {
                errors.push(ConfigProblem {
                    line: Some(line),
                    trigger: Some(name.clone()),
                    message: "another trigger has the same name".to_owned(),
                });
            }
            let mut problems = Vec::new();
            let compiled = trigger_config(trigger, line, &lines, env, &mut problems);
            errors.extend(problems.into_iter().map(|(line, message)| ConfigProblem {
                line: Some(line),
                trigger: Some(name.clone()),
                message,
            }));
            triggers.extend(compiled);
        }
        // Triggers sharing a claim must claim the same thing, or "whichever
        // fires first holds the room" would not hold.
        for (i, trigger) in triggers.iter().enumerate() {
            if let Some(first) = triggers[..i]
                .iter()
                .find(|t| t.claim == trigger.claim && t.once_per != trigger.once_per)
            {
                errors.push(ConfigProblem {
                    line: Some(trigger.claim_line),
                    trigger: Some(trigger.name.to_string()),
                    message: format!(
                        "claim: `{}` is shared with trigger `{}`, whose once_per is {}: triggers sharing a claim need the same once_per",
                        trigger.claim, first.name, first.once_per
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(Config {
                server,
                verify,
                store,
                log: raw.log,
                admin: raw.admin,
                triggers,
            })
        } else {
            Err(ConfigErrors { file: None, errors })
        }
    }

    /// A human summary for `check`: the triggers and what they do. Shows which
    /// secrets and headers are set, never their values.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let secrets = self.verify.secrets.len();
        out.push_str(&match (secrets, self.verify.allow_unsigned) {
            (0, true) => "signatures: not required (allow_unsigned)\n".to_owned(),
            (0, false) => "signatures: required, but no secret is set here\n".to_owned(),
            (n, _) => format!("signatures: required, {n} secret(s)\n"),
        });
        out.push_str(&match &self.server.subdomain {
            Some(subdomain) => {
                format!("subdomain: webhooks without data.subdomain use {subdomain}\n")
            }
            None => "subdomain: every webhook must carry data.subdomain (no default)\n".to_owned(),
        });
        let limits = self.server.limits();
        out.push_str(&format!(
            "limits: head within {} and at most {} bytes, body within {}, answer within {}, \
             {} connection(s), keep-alive {}\n",
            format_duration(limits.header_read_timeout),
            limits.max_header_bytes,
            format_duration(limits.body_read_timeout),
            format_duration(limits.request_deadline),
            limits.max_connections,
            format_duration(limits.keep_alive_idle),
        ));
        // The database URL may hold a password: only that there is one.
        out.push_str(&match (&self.store.dir, &self.store.url) {
            (_, Some(_)) => format!(
                "store: a shared PostgreSQL database (store.url), deliveries leased for {}\n",
                format_duration(self.store.lease.unwrap_or(DEFAULT_SHARED_LEASE))
            ),
            (Some(dir), None) => format!("store: data directory {}\n", dir.display()),
            (None, None) => {
                "store: not set here (the server's --data-dir, --store-url or its default)\n"
                    .to_owned()
            }
        });
        out.push_str(&match &self.admin.bind {
            Some(bind) => format!("admin: {bind}\n"),
            None => "admin: not set here (the server's --admin-bind or its default)\n".to_owned(),
        });
        out.push_str(&format!("{} trigger(s)\n", self.triggers.len()));
        for t in &self.triggers {
            let on: Vec<&str> = t.on.iter().map(|e| e.as_str()).collect();
            out.push_str(&format!(
                "- {} (line {}): on {}\n",
                t.name,
                t.line,
                on.join(", ")
            ));
            #[cfg(feature = "cel")]
            if let Some(when) = &t.when {
                out.push_str(&format!("    when {}\n", when.source()));
            }
            out.push_str(&format!(
                "    once per {}, lease {}",
                t.once_per,
                format_duration(t.lease)
            ));
            if *t.claim != *t.name {
                out.push_str(&format!(", claim `{}`", t.claim));
            }
            out.push('\n');
            if !t.stop_on.is_empty() {
                let stop: Vec<&str> = t.stop_on.iter().map(|e| e.as_str()).collect();
                out.push_str(&format!("    stop on {}\n", stop.join(", ")));
            }
            #[cfg(feature = "cel")]
            if let Some(stop_when) = &t.stop_when {
                out.push_str(&format!("    stop when {}\n", stop_when.source()));
            }
            if let Some(after) = t.stop_after {
                out.push_str(&format!(
                    "    stop after {} (cancelled if the reason no longer holds)\n",
                    format_duration(after)
                ));
            }
            if let Some(run) = &t.run {
                let argv: Vec<String> = run.command.iter().map(ToString::to_string).collect();
                out.push_str(&format!(
                    "    run {:?} (timeout {}, at most {} at once, {})\n",
                    argv,
                    format_duration(run.timeout),
                    run.max_running,
                    match run.when_full {
                        WhenFull::Wait => "further starts wait",
                        WhenFull::Drop => "further starts dropped",
                    }
                ));
            }
            #[cfg(feature = "forward")]
            if let Some(forward) = &t.forward {
                let headers: Vec<&str> = forward.headers.iter().map(|(k, _)| k.as_str()).collect();
                out.push_str(&format!("    forward to {}", redact_url(&forward.url)));
                if !headers.is_empty() {
                    out.push_str(&format!(" with headers {}", headers.join(", ")));
                }
                // How many secrets, never their values.
                match forward.signing_secrets.len() {
                    0 => {}
                    1 => out.push_str(", signed (Standard Webhooks)"),
                    n => out.push_str(&format!(", signed (Standard Webhooks, {n} secrets)")),
                }
                out.push('\n');
            }
            if t.stdout {
                out.push_str("    stdout\n");
            }
        }
        out
    }
}

/// The name of the `[[trigger]]` table that holds byte `offset`, for errors the
/// typed parse reports without it (an unknown key inside a trigger). Only
/// possible when the file is valid TOML.
fn trigger_at(text: &str, offset: usize) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let before = text.get(..offset)?;
    let mut index = None;
    for line in before.lines() {
        let line = line.trim_start();
        if line.starts_with("[[trigger]]") {
            index = Some(index.map_or(0, |i| i + 1));
        } else if line.starts_with('[') {
            // Another table began after the last trigger.
            index = None;
        }
    }
    let trigger = table.get("trigger")?.as_array()?.get(index?)?;
    Some(trigger.get("name")?.as_str()?.to_owned())
}

/// A URL as `check` may show it: without a password or a query, which may
/// hold secrets (as the `forward` action logs it).
#[cfg(feature = "forward")]
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => crate::actions::forward::redact_url(&parsed),
        Err(_) => "(not a URL)".to_owned(),
    }
}

// The examples use every key, `when` and `forward` included.
#[cfg(all(test, feature = "cel", feature = "forward"))]
#[path = "tests.rs"]
mod tests;

#[cfg(all(test, not(all(feature = "cel", feature = "forward"))))]
mod without_features {
    use super::*;

    #[test]
    fn keys_of_a_missing_feature_are_refused_naming_it() {
        let toml = "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n\
                    when = 'true'\nforward = { url = \"http://127.0.0.1:1/\" }\n";
        let errors = Config::from_toml(toml, &|_: &str| None).unwrap_err().errors;
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        #[cfg(not(feature = "cel"))]
        assert!(
            messages.contains(&"when: needs whereby-trigger built with the `cel` feature"),
            "{messages:?}"
        );
        #[cfg(not(feature = "forward"))]
        assert!(
            messages.contains(&"forward: needs whereby-trigger built with the `forward` feature"),
            "{messages:?}"
        );
        assert!(errors.iter().all(|e| e.line.is_some()), "{errors:?}");
    }
}
