//! The config file: server settings, verification, and `[[trigger]]` rules.
//!
//! Parsed from a string with the environment passed in, so a test can load a
//! file that uses every option. Every key is checked (an unknown key is an error
//! that names it), every trigger is compiled (CEL, placeholders, URLs), and
//! every error names its line and trigger. Secrets never appear in an error,
//! a summary or a `Debug` string.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use whereby_webhook::room_url::check_subdomain;
use whereby_webhook::{EventType, RoomUrlError};

#[cfg(feature = "forward")]
use crate::actions::forward::{DEFAULT_MAX_AGE, DEFAULT_MAX_ATTEMPTS, ForwardSpec, RetryPolicy};
use crate::actions::run::{DEFAULT_MAX_RESTARTS, RestartPolicy, RunSpec, StdinMode};
use crate::actions::template::Template;
use crate::limits::Limits;
#[cfg(feature = "cel")]
use crate::rules::cel::When;
use crate::state::claims::OncePer;
use crate::units::{parse_duration, parse_size};

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

/// `[server]`: each value is `None` when the file does not set it, so that
/// command-line flags and built-in defaults can fill in.
///
/// The limits of the accept loop (`header_timeout` to `keep_alive`) have no
/// flags: [`ServerConfig::limits`] fills in [`Limits`]' defaults. Like `bind`
/// and `port`, they are read at start; a reload does not change them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// `bind`
    pub bind: Option<IpAddr>,
    /// `port`
    pub port: Option<u16>,
    /// `path`
    pub path: Option<String>,
    /// `max_body`, in bytes.
    pub max_body: Option<usize>,
    /// `predicate_timeout`
    pub predicate_timeout: Option<Duration>,
    /// `subdomain`: the subdomain of room URLs for webhooks that carry none
    /// (Whereby's before 2025), one DNS label.
    pub subdomain: Option<String>,
    /// `header_timeout`: [`Limits::header_read_timeout`].
    pub header_timeout: Option<Duration>,
    /// `body_timeout`: [`Limits::body_read_timeout`].
    pub body_timeout: Option<Duration>,
    /// `max_header_bytes`: [`Limits::max_header_bytes`], at least
    /// [`MIN_HEADER_BYTES`].
    pub max_header_bytes: Option<usize>,
    /// `max_connections`: [`Limits::max_connections`].
    pub max_connections: Option<usize>,
    /// `request_deadline`: [`Limits::request_deadline`], below
    /// [`WHEREBY_DELIVERY_TIMEOUT`].
    pub request_deadline: Option<Duration>,
    /// `keep_alive`: [`Limits::keep_alive_idle`]; zero turns keep-alive off.
    pub keep_alive: Option<Duration>,
}

impl ServerConfig {
    /// The limits of the accept loop: the file's values, and the defaults of
    /// [`Limits`] for the keys it does not set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use whereby_trigger::limits::Limits;
    /// use whereby_trigger::rules::config::Config;
    ///
    /// let config = Config::from_toml("[server]\nrequest_deadline = \"3s\"\n", &|_: &str| None)?;
    /// assert_eq!(
    ///     config.server.limits(),
    ///     Limits { request_deadline: Duration::from_secs(3), ..Limits::default() }
    /// );
    /// # Ok::<(), whereby_trigger::rules::config::ConfigErrors>(())
    /// ```
    pub fn limits(&self) -> Limits {
        let default = Limits::default();
        Limits {
            header_read_timeout: self.header_timeout.unwrap_or(default.header_read_timeout),
            body_read_timeout: self.body_timeout.unwrap_or(default.body_read_timeout),
            max_header_bytes: self.max_header_bytes.unwrap_or(default.max_header_bytes),
            max_connections: self.max_connections.unwrap_or(default.max_connections),
            request_deadline: self.request_deadline.unwrap_or(default.request_deadline),
            keep_alive_idle: self.keep_alive.unwrap_or(default.keep_alive_idle),
        }
    }
}

/// `[verify]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyConfig {
    /// `secrets`, with `${NAME}` expanded.
    pub secrets: Vec<Secret>,
    /// `tolerance`
    pub tolerance: Option<Duration>,
    /// `allow_unsigned`
    pub allow_unsigned: bool,
}

/// `[store]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `dir`: the data directory of the durable store.
    pub dir: Option<PathBuf>,
}

/// One `[[trigger]]`, validated and compiled.
#[derive(Debug)]
pub struct TriggerConfig {
    /// `name`, unique.
    pub name: Arc<str>,
    /// Line of the trigger's `name` in the file.
    pub line: usize,
    /// `on`: the event types that can fire it.
    pub on: Vec<EventType>,
    /// `when`, compiled.
    #[cfg(feature = "cel")]
    pub when: Option<Arc<When>>,
    /// `once_per`
    pub once_per: OncePer,
    /// `lease`
    pub lease: Duration,
    /// `stop_on`
    pub stop_on: Vec<EventType>,
    /// `run`
    pub run: Option<RunSpec>,
    /// `forward`
    #[cfg(feature = "forward")]
    pub forward: Option<ForwardSpec>,
    /// `stdout`
    pub stdout: bool,
}

/// A whole config file.
#[derive(Debug, Default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[verify]`
    pub verify: VerifyConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// The `[[trigger]]` tables, in file order.
    pub triggers: Vec<TriggerConfig>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The trigger concerned, if any.
    pub trigger: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    verify: RawVerify,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    trigger: Vec<RawTrigger>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: Option<Spanned<String>>,
    port: Option<u16>,
    path: Option<String>,
    max_body: Option<Spanned<String>>,
    predicate_timeout: Option<Spanned<String>>,
    subdomain: Option<Spanned<toml::Value>>,
    // The limits are read as any value, so that a value of the wrong type is
    // an error that names its key.
    header_timeout: Option<Spanned<toml::Value>>,
    body_timeout: Option<Spanned<toml::Value>>,
    max_header_bytes: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<toml::Value>>,
    request_deadline: Option<Spanned<toml::Value>>,
    keep_alive: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    tolerance: Option<Spanned<String>>,
    #[serde(default)]
    allow_unsigned: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: Spanned<String>,
    on: Spanned<Vec<String>>,
    when: Option<Spanned<String>>,
    once_per: Option<OncePer>,
    lease: Option<Spanned<String>>,
    stop_on: Option<Spanned<Vec<String>>>,
    run: Option<Spanned<RawRun>>,
    forward: Option<Spanned<RawForward>>,
    stdout: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    command: Vec<String>,
    restart: Option<RestartPolicy>,
    max_restarts: Option<u32>,
    stdin: Option<StdinMode>,
    timeout: Option<String>,
    stop_grace: Option<String>,
    max_running: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
// Read (and refused, naming the feature) even in a build without `forward`.
#[cfg_attr(not(feature = "forward"), allow(dead_code))]
struct RawForward {
    url: String,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    max_age: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
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
    /// Reads and validates the file at `path`, expanding `${NAME}` from the
    /// process environment.
    ///
    /// # Errors
    /// Every problem found, each with the file, its line and its trigger.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
            file: Some(path.to_owned()),
            errors: vec![ConfigError {
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
    /// use whereby_trigger::rules::config::Config;
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
    /// # Ok::<(), whereby_trigger::rules::config::ConfigErrors>(())
    /// ```
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let lines = Lines(text);
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigErrors {
            file: None,
            errors: vec![ConfigError {
                line: err.span().map(|span| lines.of(span.start)),
                trigger: err.span().and_then(|span| trigger_at(text, span.start)),
                message: err.message().trim().to_owned(),
            }],
        })?;
        let mut errors = Vec::new();
        let server = server_config(raw.server, &lines, &mut errors);
        let verify = verify_config(raw.verify, &lines, env, &mut errors);
        let mut names = HashSet::new();
        let mut triggers = Vec::new();
        for trigger in raw.trigger {
            let line = lines.of(trigger.name.span().start);
            let name = trigger.name.get_ref().clone();
            if !names.insert(name.clone()) {
                errors.push(ConfigError {
                    line: Some(line),
                    trigger: Some(name.clone()),
                    message: "another trigger has the same name".to_owned(),
                });
            }
            let mut problems = Vec::new();
            let compiled = trigger_config(trigger, line, &lines, env, &mut problems);
            errors.extend(problems.into_iter().map(|(line, message)| ConfigError {
                line: Some(line),
                trigger: Some(name.clone()),
                message,
            }));
            triggers.extend(compiled);
        }
        if errors.is_empty() {
            Ok(Config {
                server,
                verify,
                store: raw.store,
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
            "limits: head within {:?} and at most {} bytes, body within {:?}, answer within {:?}, \
             {} connection(s), keep-alive {:?}\n",
            limits.header_read_timeout,
            limits.max_header_bytes,
            limits.body_read_timeout,
            limits.request_deadline,
            limits.max_connections,
            limits.keep_alive_idle,
        ));
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
                "    once per {}, lease {}s\n",
                t.once_per,
                t.lease.as_secs()
            ));
            if !t.stop_on.is_empty() {
                let stop: Vec<&str> = t.stop_on.iter().map(|e| e.as_str()).collect();
                out.push_str(&format!("    stop on {}\n", stop.join(", ")));
            }
            if let Some(run) = &t.run {
                let argv: Vec<String> = run.command.iter().map(ToString::to_string).collect();
                out.push_str(&format!(
                    "    run {:?} (timeout {}s, at most {} at once)\n",
                    argv,
                    run.timeout.as_secs(),
                    run.max_running
                ));
            }
            #[cfg(feature = "forward")]
            if let Some(forward) = &t.forward {
                let headers: Vec<&str> = forward.headers.iter().map(|(k, _)| k.as_str()).collect();
                out.push_str(&format!("    forward to {}", redact_url(&forward.url)));
                if !headers.is_empty() {
                    out.push_str(&format!(" with headers {}", headers.join(", ")));
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

fn server_config(raw: RawServer, lines: &Lines<'_>, errors: &mut Vec<ConfigError>) -> ServerConfig {
    let mut fail = |span: std::ops::Range<usize>, message: String| {
        errors.push(ConfigError {
            line: Some(lines.of(span.start)),
            trigger: None,
            message,
        });
    };
    let bind = raw.bind.and_then(|b| match b.get_ref().parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            fail(
                b.span(),
                format!("server.bind: `{}` is not an IP address", b.get_ref()),
            );
            None
        }
    });
    let max_body = raw.max_body.and_then(|v| {
        parse_size(v.get_ref())
            .map_err(|e| fail(v.span(), format!("server.max_body: {e}")))
            .ok()
    });
    let predicate_timeout = raw.predicate_timeout.and_then(|v| {
        parse_duration(v.get_ref())
            .map_err(|e| fail(v.span(), format!("server.predicate_timeout: {e}")))
            .ok()
    });
    ServerConfig {
        bind,
        port: raw.port,
        path: raw.path,
        max_body,
        predicate_timeout,
        subdomain: limit("subdomain", raw.subdomain, &mut fail, |v| match v {
            toml::Value::String(text) => match check_subdomain(text) {
                Ok(()) => Ok(text.clone()),
                Err(RoomUrlError::Subdomain(reason)) => Err(format!(
                    "`{text}` {reason}; it must be one DNS label such as \"acme\""
                )),
                Err(other) => Err(other.to_string()),
            },
            other => Err(wrong_type(other, "a subdomain such as \"acme\"")),
        }),
        header_timeout: limit("header_timeout", raw.header_timeout, &mut fail, |v| {
            positive_duration(v)
        }),
        body_timeout: limit("body_timeout", raw.body_timeout, &mut fail, |v| {
            positive_duration(v)
        }),
        max_header_bytes: limit("max_header_bytes", raw.max_header_bytes, &mut fail, |v| {
            let bytes = match v {
                toml::Value::String(text) => parse_size(text).map_err(|e| e.to_string())?,
                toml::Value::Integer(n) => usize::try_from(*n).map_err(|_| {
                    format!(
                        "{n} is not a size; it must be at least 1KiB ({MIN_HEADER_BYTES} bytes)"
                    )
                })?,
                other => return Err(wrong_type(other, "a size such as \"16KiB\" or 16384")),
            };
            if bytes < MIN_HEADER_BYTES {
                return Err(format!(
                    "{bytes} bytes is too small to hold a request's line and headers; \
                     it must be at least 1KiB ({MIN_HEADER_BYTES} bytes)"
                ));
            }
            Ok(bytes)
        }),
        max_connections: limit(
            "max_connections",
            raw.max_connections,
            &mut fail,
            |v| match v {
                toml::Value::Integer(n) if *n >= 1 => Ok(usize::try_from(*n).unwrap_or(usize::MAX)),
                toml::Value::Integer(n) => Err(format!("must be at least 1, not {n}")),
                other => Err(wrong_type(other, "a whole number such as 1024")),
            },
        ),
        request_deadline: limit("request_deadline", raw.request_deadline, &mut fail, |v| {
            let deadline = positive_duration(v)?;
            if deadline >= WHEREBY_DELIVERY_TIMEOUT {
                return Err(format!(
                    "must be below 5s, not {deadline:?}: Whereby gives up on a delivery \
                     after 5 s, so an answer at or past that is never heard and the \
                     deadline is useless (the default is 4500ms)"
                ));
            }
            Ok(deadline)
        }),
        // Zero is allowed here: it turns keep-alive off, as in `Limits`.
        keep_alive: limit("keep_alive", raw.keep_alive, &mut fail, |v| match v {
            toml::Value::String(text) => parse_duration(text).map_err(|e| e.to_string()),
            other => Err(wrong_type(other, DURATION_EXAMPLE)),
        }),
    }
}

/// How a duration is written in `[server]`.
const DURATION_EXAMPLE: &str = "a duration string such as \"5s\" or \"500ms\"";

/// Reads one setting of `[server]` with `read`; an error names `server.{key}`
/// and is reported on the value's line.
fn limit<T>(
    key: &str,
    value: Option<Spanned<toml::Value>>,
    fail: &mut dyn FnMut(std::ops::Range<usize>, String),
    read: impl FnOnce(&toml::Value) -> Result<T, String>,
) -> Option<T> {
    let value = value?;
    read(value.get_ref())
        .map_err(|message| fail(value.span(), format!("server.{key}: {message}")))
        .ok()
}

/// A duration longer than zero.
fn positive_duration(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::String(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
            Ok(d) => Ok(d),
            Err(e) => Err(e.to_string()),
        },
        other => Err(wrong_type(other, DURATION_EXAMPLE)),
    }
}

/// The complaint about a value of the wrong TOML type.
fn wrong_type(value: &toml::Value, expected: &str) -> String {
    let found = match value {
        toml::Value::Integer(n) => format!("integer `{n}`"),
        toml::Value::Float(x) => format!("float `{x}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::String(text) => format!("string {text:?}"),
        other => other.type_str().to_owned(),
    };
    format!("expected {expected}, found {found}")
}

fn verify_config(
    raw: RawVerify,
    lines: &Lines<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> VerifyConfig {
    let mut secrets = Vec::new();
    for secret in raw.secrets {
        match expand(secret.get_ref(), env) {
            Ok(value) if value.is_empty() => errors.push(ConfigError {
                line: Some(lines.of(secret.span().start)),
                trigger: None,
                message: "verify.secrets: a secret is empty".to_owned(),
            }),
            Ok(value) => secrets.push(Secret(value)),
            Err(message) => errors.push(ConfigError {
                line: Some(lines.of(secret.span().start)),
                trigger: None,
                message: format!("verify.secrets: {message}"),
            }),
        }
    }
    let tolerance = raw
        .tolerance
        .and_then(|v| match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(ConfigError {
                    line: Some(lines.of(v.span().start)),
                    trigger: None,
                    message: format!("verify.tolerance: {e}"),
                });
                None
            }
        });
    VerifyConfig {
        secrets,
        tolerance,
        allow_unsigned: raw.allow_unsigned,
    }
}

/// Validates one trigger; problems are `(line, message)` pairs, each on the
/// line of the key at fault.
fn trigger_config(
    raw: RawTrigger,
    line: usize,
    lines: &Lines<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<(usize, String)>,
) -> Option<TriggerConfig> {
    let start = problems.len();
    let at = |span: std::ops::Range<usize>| lines.of(span.start);
    let name = raw.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push((
            line,
            "name: use letters, digits, '-', '_' and '.' only".to_owned(),
        ));
    }
    let on_line = at(raw.on.span());
    let on = event_types("on", raw.on.get_ref(), &mut |m| problems.push((on_line, m)));
    if raw.on.get_ref().is_empty() {
        problems.push((on_line, "on: list at least one event type".to_owned()));
    }
    let stop_on = raw.stop_on.map_or_else(Vec::new, |stop_on| {
        let stop_line = at(stop_on.span());
        event_types("stop_on", stop_on.get_ref(), &mut |m| {
            problems.push((stop_line, m));
        })
    });
    let lease = match &raw.lease {
        Some(lease) => {
            let lease_line = at(lease.span());
            duration("lease", Some(lease.get_ref()), DEFAULT_LEASE, &mut |m| {
                problems.push((lease_line, m));
            })
        }
        None => DEFAULT_LEASE,
    };

    let run = raw.run.map(|run| {
        let run_line = at(run.span());
        let mut fail = |m: String| problems.push((run_line, m));
        run_spec(run.into_inner(), env, &mut fail)
    });

    let has_forward = raw.forward.is_some();
    #[cfg(feature = "forward")]
    let forward = raw.forward.and_then(|forward| {
        let forward_line = at(forward.span());
        let mut fail = |m: String| problems.push((forward_line, m));
        forward_spec(forward.into_inner(), env, &mut fail)
    });
    #[cfg(not(feature = "forward"))]
    if let Some(forward) = &raw.forward {
        problems.push((at(forward.span()), missing_feature("forward", "forward")));
    }

    let stdout = raw.stdout.unwrap_or(false);
    if run.is_none() && !has_forward && !stdout {
        problems.push((
            line,
            "has no action: give it `run`, `forward` or `stdout = true`".to_owned(),
        ));
    }

    #[cfg(not(feature = "cel"))]
    if let Some(when) = &raw.when {
        problems.push((lines.of(when.span().start), missing_feature("when", "cel")));
    }
    #[cfg(feature = "cel")]
    let when = raw.when.and_then(|when| {
        // A multi-line string drops the line break right after its opening
        // quotes, so its first line is the next one in the file.
        let opening = lines.0.get(when.span().start..).unwrap_or_default();
        let skipped = ["\"\"\"\n", "'''\n", "\"\"\"\r\n", "'''\r\n"]
            .iter()
            .any(|quote| opening.starts_with(quote));
        let when_line = lines.of(when.span().start) + usize::from(skipped);
        When::compile(when.get_ref())
            .map(Arc::new)
            .map_err(|err| {
                let line = when_line + err.line.map_or(0, |l| l.saturating_sub(1));
                problems.push((line, format!("when: {}", err.message)));
            })
            .ok()
    });

    (problems.len() == start).then(|| TriggerConfig {
        name: Arc::from(raw.name.into_inner()),
        line,
        on,
        #[cfg(feature = "cel")]
        when,
        once_per: raw.once_per.unwrap_or_default(),
        lease,
        stop_on,
        run,
        #[cfg(feature = "forward")]
        forward,
        stdout,
    })
}

/// The error of a key whose cargo feature this build lacks.
#[cfg(not(all(feature = "cel", feature = "forward")))]
fn missing_feature(key: &str, feature: &str) -> String {
    format!("{key}: needs whereby-trigger built with the `{feature}` feature")
}

fn run_spec(
    run: RawRun,
    env: &dyn Fn(&str) -> Option<String>,
    fail: &mut dyn FnMut(String),
) -> RunSpec {
    let mut command = Vec::new();
    // An expanded value is data, not template: its braces are escaped so an
    // environment variable can never inject a placeholder.
    let template_env = |name: &str| env(name).map(|v| v.replace('{', "{{").replace('}', "}}"));
    for arg in &run.command {
        match expand(arg, &template_env)
            .and_then(|arg| Template::compile(&arg).map_err(|e| e.to_string()))
        {
            Ok(template) => command.push(template),
            Err(message) => fail(format!("run.command: {message}")),
        }
    }
    let spec = RunSpec {
        command,
        stdin: run.stdin.unwrap_or(StdinMode::Event),
        timeout: duration(
            "run.timeout",
            run.timeout.as_deref(),
            DEFAULT_RUN_TIMEOUT,
            fail,
        ),
        stop_grace: duration(
            "run.stop_grace",
            run.stop_grace.as_deref(),
            DEFAULT_STOP_GRACE,
            fail,
        ),
        max_running: run.max_running.unwrap_or(DEFAULT_MAX_RUNNING),
        restart: run.restart.unwrap_or_default(),
        max_restarts: run.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
    };
    if let Err(err) = spec.validate() {
        fail(format!("run: {err}"));
    }
    spec
}

#[cfg(feature = "forward")]
fn forward_spec(
    forward: RawForward,
    env: &dyn Fn(&str) -> Option<String>,
    fail: &mut dyn FnMut(String),
) -> Option<ForwardSpec> {
    let url = expand(&forward.url, env)
        .map_err(|message| fail(format!("forward.url: {message}")))
        .ok()?;
    let mut headers = Vec::new();
    for (name, value) in &forward.headers {
        match expand(value, env) {
            Ok(value) => headers.push((name.clone(), value)),
            Err(message) => fail(format!("forward.headers.{name}: {message}")),
        }
    }
    let spec = ForwardSpec {
        url,
        timeout: duration(
            "forward.timeout",
            forward.timeout.as_deref(),
            DEFAULT_FORWARD_TIMEOUT,
            fail,
        ),
        headers,
        retry: RetryPolicy {
            max_attempts: forward.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            max_age: duration(
                "forward.max_age",
                forward.max_age.as_deref(),
                DEFAULT_MAX_AGE,
                fail,
            ),
            ..RetryPolicy::default()
        },
    };
    if let Err(err) = spec.validate() {
        fail(format!("forward: {err}"));
    }
    if cfg!(not(feature = "tls")) && spec.url.starts_with("https:") {
        fail("forward.url: https needs whereby-trigger built with the `tls` feature".to_owned());
    }
    Some(spec)
}

fn event_types(key: &str, names: &[String], fail: &mut dyn FnMut(String)) -> Vec<EventType> {
    names
        .iter()
        .filter_map(|name| {
            name.parse::<EventType>()
                .map_err(|e| fail(format!("{key}: {e}")))
                .ok()
        })
        .collect()
}

fn duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    fail: &mut dyn FnMut(String),
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            fail(format!("{key}: must be longer than zero"));
            default
        }
        Some(Err(e)) => {
            fail(format!("{key}: {e}"));
            default
        }
    }
}

/// Expands `${NAME}` from `env`; `$${` stands for a literal `${`.
///
/// # Errors
/// Names the variable that is not set, or the `${` that is not closed.
pub fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "`${` without its closing `}`".to_owned())?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{name}}}` is not a variable name"));
            }
            let value =
                env(name).ok_or_else(|| format!("the environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// The examples use every key, `when` and `forward` included.
#[cfg(all(test, feature = "cel", feature = "forward"))]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "WHEREBY_WEBHOOK_SECRET" => Some("whsec_from_env".to_owned()),
            "ASSISTANT_API_TOKEN" => Some("tok-123".to_owned()),
            _ => None,
        }
    }

    /// The issue's example, every key set.
    const FULL: &str = r#"
[server]
bind = "0.0.0.0"
port = 8080
path = "/"
max_body = "64KiB"
predicate_timeout = "4s"
header_timeout = "10s"
body_timeout = "3s"
max_header_bytes = "16KiB"
max_connections = 1024
request_deadline = "4500ms"
keep_alive = "6s"

[verify]
secrets = ["${WHEREBY_WEBHOOK_SECRET}"]
tolerance = "5m"
allow_unsigned = false

[store]
dir = "/var/lib/whereby-trigger"

[[trigger]]
name = "note-taker"
on = ["room.session.started", "assistant.requested"]
when = 'data.subdomain == "acme" && room.numClients >= 2'
once_per = "session"
lease = "12h"
stop_on = ["room.session.ended"]
run = { command = ["python3", "assistant.py", "--room", "{roomUrl}"], stdin = "event", timeout = "4h", stop_grace = "10s", max_running = 50, restart = "always", max_restarts = 3 }
forward = { url = "http://127.0.0.1:9000/assistants", timeout = "5s", headers = { Authorization = "Bearer ${ASSISTANT_API_TOKEN}" }, max_attempts = 12, max_age = "30m" }
stdout = true
"#;

    #[test]
    fn the_full_example_loads() {
        let c = Config::from_toml(FULL, &env).unwrap();
        assert_eq!(c.server.port, Some(8080));
        assert_eq!(c.server.max_body, Some(65_536));
        // The example spells out the defaults.
        assert_eq!(c.server.limits(), Limits::default());
        assert_eq!(c.server.max_connections, Some(1024));
        assert_eq!(c.verify.secrets[0].expose(), "whsec_from_env");
        assert_eq!(c.verify.tolerance, Some(Duration::from_secs(300)));
        let t = &c.triggers[0];
        assert_eq!(t.line, 24);
        assert_eq!(
            t.on,
            [EventType::RoomSessionStarted, EventType::AssistantRequested]
        );
        assert_eq!(t.once_per, OncePer::Session);
        assert_eq!(t.stop_on, [EventType::RoomSessionEnded]);
        let run = t.run.as_ref().unwrap();
        assert_eq!(run.command.len(), 4);
        assert_eq!(run.max_running, 50);
        assert_eq!(run.restart, crate::actions::run::RestartPolicy::Always);
        assert_eq!(run.max_restarts, 3);
        assert_eq!(
            c.store.dir.as_deref(),
            Some(std::path::Path::new("/var/lib/whereby-trigger"))
        );
        let forward = t.forward.as_ref().unwrap();
        assert_eq!(
            forward.headers,
            [("Authorization".to_owned(), "Bearer tok-123".to_owned())]
        );
        assert!(t.stdout);
    }

    #[test]
    fn secrets_never_show() {
        let c = Config::from_toml(FULL, &env).unwrap();
        for shown in [format!("{c:?}"), c.summary()] {
            assert!(!shown.contains("whsec_from_env"), "{shown}");
            assert!(!shown.contains("tok-123"), "{shown}");
        }
        assert!(c.summary().contains("note-taker"));
        assert!(c.summary().contains("Authorization"));
    }

    #[test]
    fn the_summary_shows_the_limits_in_force() {
        let c = Config::from_toml(
            "[server]\nrequest_deadline = \"3s\"\nmax_connections = 7\n",
            &env,
        )
        .unwrap();
        let limits = c
            .summary()
            .lines()
            .find(|l| l.starts_with("limits:"))
            .map(str::to_owned)
            .expect("a limits line");
        assert!(limits.contains("answer within 3s"), "{limits}");
        assert!(limits.contains("7 connection(s)"), "{limits}");
        // Keys left out show their defaults.
        assert!(limits.contains("at most 16384 bytes"), "{limits}");
    }

    #[test]
    fn defaults() {
        let c = Config::from_toml(
            "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert!(!c.verify.allow_unsigned);
        let t = &c.triggers[0];
        assert_eq!(t.once_per, OncePer::Event);
        assert_eq!(t.lease, DEFAULT_LEASE);
        assert!(t.when.is_none() && t.run.is_none() && t.forward.is_none());
    }

    fn errors(toml: &str) -> Vec<ConfigError> {
        Config::from_toml(toml, &env).unwrap_err().errors
    }

    fn server(toml: &str) -> ServerConfig {
        Config::from_toml(toml, &env)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"))
            .server
    }

    #[test]
    fn server_subdomain_is_one_dns_label() {
        assert_eq!(server("").subdomain, None);
        assert_eq!(
            server("[server]\nsubdomain = \"acme\"\n")
                .subdomain
                .as_deref(),
            Some("acme")
        );
        for bad in ["\"acme.evil.com\"", "\"\"", "\"-a\"", "\"xn--a\""] {
            let e = errors(&format!("[server]\nport = 1\nsubdomain = {bad}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].line, Some(3), "{bad}");
            assert!(
                e[0].message.starts_with("server.subdomain: "),
                "{}",
                e[0].message
            );
            assert!(e[0].message.contains("one DNS label"), "{}", e[0].message);
        }
        let e = errors("[server]\nsubdomain = 5\n");
        assert!(e[0].message.starts_with("server.subdomain: "), "{:?}", e[0]);
        let summary = Config::from_toml("[server]\nsubdomain = \"acme\"\n", &env)
            .unwrap()
            .summary();
        assert!(
            summary.contains("webhooks without data.subdomain use acme"),
            "{summary}"
        );
    }

    #[test]
    fn server_limits_parse() {
        let s = server(
            "[server]\n\
             header_timeout = \"2s\"\n\
             body_timeout = \"750ms\"\n\
             max_header_bytes = \"4KiB\"\n\
             max_connections = 64\n\
             request_deadline = \"4999ms\"\n\
             keep_alive = \"1m\"\n",
        );
        assert_eq!(s.header_timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.body_timeout, Some(Duration::from_millis(750)));
        assert_eq!(s.max_header_bytes, Some(4096));
        assert_eq!(s.max_connections, Some(64));
        assert_eq!(s.request_deadline, Some(Duration::from_millis(4999)));
        assert_eq!(s.keep_alive, Some(Duration::from_secs(60)));
        assert_eq!(
            s.limits(),
            Limits {
                header_read_timeout: Duration::from_secs(2),
                body_read_timeout: Duration::from_millis(750),
                max_header_bytes: 4096,
                max_connections: 64,
                request_deadline: Duration::from_millis(4999),
                keep_alive_idle: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn max_header_bytes_takes_the_forms_of_max_body_and_integers() {
        for (value, bytes) in [
            ("16384", 16_384),
            ("\"16384\"", 16_384),
            ("\"8KiB\"", 8_192),
            ("\"2kb\"", 2_000),
            ("\"1MiB\"", 1_048_576),
            // The smallest allowed, below hyper's 8 KiB buffer floor: the cap
            // on the head is exact all the same.
            ("1024", 1_024),
            ("\"1KiB\"", 1_024),
        ] {
            let s = server(&format!("[server]\nmax_header_bytes = {value}\n"));
            assert_eq!(s.max_header_bytes, Some(bytes), "{value}");
            assert_eq!(s.limits().max_header_bytes, bytes, "{value}");
        }
    }

    #[test]
    fn server_limits_default_to_those_of_limits() {
        // No [server] table, an empty one, or one with other keys only.
        for toml in [
            "",
            "[server]\n",
            "[server]\nport = 9000\nmax_body = \"1KiB\"\n",
        ] {
            let s = server(toml);
            assert_eq!(
                (
                    s.header_timeout,
                    s.body_timeout,
                    s.max_header_bytes,
                    s.max_connections,
                    s.request_deadline,
                    s.keep_alive
                ),
                (None, None, None, None, None, None),
                "{toml:?}"
            );
            let limits = s.limits();
            assert_eq!(limits, Limits::default(), "{toml:?}");
            assert_eq!(
                limits.header_read_timeout,
                crate::limits::DEFAULT_HEADER_READ_TIMEOUT
            );
            assert_eq!(
                limits.body_read_timeout,
                crate::limits::DEFAULT_BODY_READ_TIMEOUT
            );
            assert_eq!(
                limits.max_header_bytes,
                crate::limits::DEFAULT_MAX_HEADER_BYTES
            );
            assert_eq!(
                limits.max_connections,
                crate::limits::DEFAULT_MAX_CONNECTIONS
            );
            assert_eq!(
                limits.request_deadline,
                crate::limits::DEFAULT_REQUEST_DEADLINE
            );
            assert_eq!(
                limits.keep_alive_idle,
                crate::limits::DEFAULT_KEEP_ALIVE_IDLE
            );
        }
        // One key set leaves the others at their defaults.
        let s = server("[server]\nmax_connections = 8\n");
        assert_eq!(
            s.limits(),
            Limits {
                max_connections: 8,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn keep_alive_zero_turns_keep_alive_off() {
        let s = server("[server]\nkeep_alive = \"0s\"\n");
        assert_eq!(s.keep_alive, Some(Duration::ZERO));
        assert_eq!(s.limits().keep_alive_idle, Duration::ZERO);
        // A bare number in a string is seconds, as in every duration.
        let s = server("[server]\nkeep_alive = \"6\"\n");
        assert_eq!(s.keep_alive, Some(Duration::from_secs(6)));
    }

    /// Each refused value, as `(key, value, what the message says)`.
    const REFUSED: &[(&str, &str, &str)] = &[
        ("header_timeout", "\"0s\"", "longer than zero"),
        ("header_timeout", "\"0ms\"", "longer than zero"),
        ("header_timeout", "10", "expected a duration string"),
        ("header_timeout", "\"10 sec\"", "not a valid duration"),
        ("body_timeout", "\"0s\"", "longer than zero"),
        ("body_timeout", "\"-1s\"", "not a valid duration"),
        ("body_timeout", "3.5", "expected a duration string"),
        ("max_header_bytes", "0", "at least 1KiB"),
        ("max_header_bytes", "\"0KiB\"", "at least 1KiB"),
        ("max_header_bytes", "1023", "at least 1KiB"),
        ("max_header_bytes", "\"1000B\"", "at least 1KiB"),
        ("max_header_bytes", "-16384", "at least 1KiB"),
        ("max_header_bytes", "\"16 kilobytes\"", "not a valid size"),
        ("max_header_bytes", "true", "expected a size"),
        ("max_connections", "0", "at least 1"),
        ("max_connections", "-1", "at least 1"),
        ("max_connections", "\"1024\"", "expected a whole number"),
        ("request_deadline", "\"0s\"", "longer than zero"),
        ("request_deadline", "\"5s\"", "below 5s"),
        ("request_deadline", "\"5000ms\"", "below 5s"),
        ("request_deadline", "\"1m\"", "Whereby gives up"),
        ("request_deadline", "4", "expected a duration string"),
        ("keep_alive", "6", "expected a duration string"),
        ("keep_alive", "\"6 seconds\"", "not a valid duration"),
    ];

    #[test]
    fn refused_server_limits_name_their_key_and_line() {
        for (key, value, says) in REFUSED {
            // On line 4, after other keys, so the line is not a lucky default.
            let toml = format!("[server]\nport = 9000\n\n{key} = {value}\n");
            let e = errors(&toml);
            assert_eq!(e.len(), 1, "{toml}: {e:?}");
            assert_eq!(e[0].line, Some(4), "{toml}: {e:?}");
            assert_eq!(e[0].trigger, None, "{toml}: {e:?}");
            assert!(
                e[0].message.starts_with(&format!("server.{key}: ")),
                "{toml}: {e:?}"
            );
            assert!(e[0].message.contains(says), "{toml}: {e:?}");
            let shown = ConfigErrors {
                file: Some("w.toml".into()),
                errors: e,
            }
            .to_string();
            assert!(
                shown.starts_with(&format!("w.toml:4: server.{key}: ")),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_late_request_deadline_says_why() {
        let e = errors("[server]\nrequest_deadline = \"5s\"\n");
        assert_eq!(e[0].line, Some(2));
        let message = &e[0].message;
        for needed in ["server.request_deadline", "below 5s", "5 s", "useless"] {
            assert!(message.contains(needed), "{message}");
        }
    }

    #[test]
    fn every_refused_limit_is_reported_on_its_own_line() {
        let toml = "[server]\n\
                    header_timeout = \"0s\"\n\
                    body_timeout = \"0s\"\n\
                    max_header_bytes = 512\n\
                    max_connections = 0\n\
                    request_deadline = \"5s\"\n\
                    keep_alive = \"soon\"\n";
        let e = errors(toml);
        let found: Vec<(Option<usize>, &str)> = e
            .iter()
            .map(|e| (e.line, e.message.split(':').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(2), "server.header_timeout"),
                (Some(3), "server.body_timeout"),
                (Some(4), "server.max_header_bytes"),
                (Some(5), "server.max_connections"),
                (Some(6), "server.request_deadline"),
                (Some(7), "server.keep_alive"),
            ]
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = errors("[server]\nprot = 80\n");
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("prot"), "{:?}", e);
        let e = errors(
            "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\nwhen_ = 'true'\n",
        );
        assert!(e[0].message.contains("when_"), "{:?}", e);
        assert_eq!(e[0].line, Some(5));
        assert_eq!(e[0].trigger.as_deref(), Some("t"));
        let two = "[[trigger]]\nname = \"a\"\non = [\"room.client.joined\"]\nstdout = true\n\n\
                   [[trigger]]\nname = \"b\"\non = [\"room.client.joined\"]\ncolour = 1\nstdout = true\n";
        assert_eq!(errors(two)[0].trigger.as_deref(), Some("b"));
        assert_eq!(errors("[server]\nprot = 80\n")[0].trigger, None);
        let e = errors(
            "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nrun = { command = [\"x\"], stdn = \"none\" }\n",
        );
        assert!(e[0].message.contains("stdn"), "{:?}", e);
        assert!(errors("[stor]\ndir = \"x\"\n")[0].message.contains("stor"));
    }

    #[test]
    fn trigger_errors_name_trigger_and_line() {
        let toml = r#"
[[trigger]]
name = "a"
on = ["room.client.joined"]
stdout = true

[[trigger]]
name = "b"
on = ["room.client.knocked"]
when = """
data.subdomain ==
   && true"""
run = { command = ["x", "{rom}"] }

[[trigger]]
name = "a"
on = ["room.client.left"]
when = 'foo > 1'
forward = { url = "ftp://x", headers = { X = "${NOPE}" } }
"#;
        let e = errors(toml);
        let find = |needle: &str| {
            e.iter()
                .find(|e| e.message.contains(needle))
                .unwrap_or_else(|| panic!("no error mentions {needle}: {e:#?}"))
        };
        let knocked = find("room.client.knocked");
        assert_eq!(
            (knocked.trigger.as_deref(), knocked.line),
            (Some("b"), Some(9))
        );
        let cel = find("when:");
        assert_eq!((cel.trigger.as_deref(), cel.line), (Some("b"), Some(12)));
        assert!(find("{rom}").trigger.as_deref() == Some("b"));
        let dup = find("same name");
        assert_eq!(dup.line, Some(16));
        assert_eq!(find("`foo`").trigger.as_deref(), Some("a"));
        assert!(find("NOPE").message.contains("not set"));
        find("ftp");
    }

    #[test]
    fn a_trigger_needs_an_action_and_events() {
        let e = errors("[[trigger]]\nname = \"t\"\non = []\n");
        assert!(e.iter().any(|e| e.message.contains("no action")));
        assert!(
            e.iter()
                .any(|e| e.message.contains("at least one event type"))
        );
        let e = errors(
            "[[trigger]]\nname = \"t t\"\non = [\"room.client.joined\"]\nstdout = true\nlease = \"0s\"\n",
        );
        assert!(e.iter().any(|e| e.message.contains("name:")));
        assert!(e.iter().any(|e| e.message.contains("lease")));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = errors("[server]\nport = \n");
        assert_eq!(e[0].line, Some(2), "{e:?}");
        let shown = ConfigErrors {
            file: Some("w.toml".into()),
            errors: e,
        }
        .to_string();
        assert!(shown.starts_with("w.toml:2: "), "{shown}");
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand("a${ASSISTANT_API_TOKEN}b", &env).unwrap(),
            "atok-123b"
        );
        assert_eq!(expand("$HOME $${X} $", &env).unwrap(), "$HOME ${X} $");
        assert!(expand("${UNSET_X}", &env).unwrap_err().contains("UNSET_X"));
        assert!(expand("${A", &env).is_err());
        assert!(expand("${A-B}", &env).is_err());
    }

    #[test]
    fn environment_values_cannot_inject_placeholders() {
        let env = |name: &str| (name == "ARG").then(|| "{roomUrl}".to_owned());
        let toml = "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nrun = { command = [\"echo\", \"${ARG}\", \"{roomUrl}\"] }\n";
        let config = Config::from_toml(toml, &env).unwrap();
        let command = &config.triggers[0].run.as_ref().unwrap().command;
        // The variable's braces stay literal; the file's own placeholder works.
        assert_eq!(command[1].to_string(), "{{roomUrl}}");
        assert_eq!(command[2].to_string(), "{roomUrl}");
    }
}

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
