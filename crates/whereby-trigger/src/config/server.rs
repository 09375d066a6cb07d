//! `[server]`: address, path, body and predicate limits, the default subdomain,
//! and the accept loop's limits.

use super::*;

/// `[server]`: each value is `None` when the file does not set it, so that
/// command-line flags and built-in defaults can fill in.
///
/// The limits of the accept loop (`header_timeout` to `keep_alive`) have no
/// flags: [`ServerConfig::limits`] fills in [`Limits`]' defaults. Like `bind`
/// and `port`, they are read at start; a reload does not change them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// use whereby_trigger::config::Config;
    ///
    /// let config = Config::from_toml("[server]\nrequest_deadline = \"3s\"\n", &|_: &str| None)?;
    /// assert_eq!(
    ///     config.server.limits(),
    ///     Limits { request_deadline: Duration::from_secs(3), ..Limits::default() }
    /// );
    /// # Ok::<(), whereby_trigger::config::ConfigErrors>(())
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

pub(super) fn server_config(
    raw: RawServer,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigProblem>,
) -> ServerConfig {
    let mut fail = |span: std::ops::Range<usize>, message: String| {
        errors.push(ConfigProblem {
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
pub(super) fn wrong_type(value: &toml::Value, expected: &str) -> String {
    let found = match value {
        toml::Value::Integer(n) => format!("integer `{n}`"),
        toml::Value::Float(x) => format!("float `{x}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::String(text) => format!("string {text:?}"),
        other => other.type_str().to_owned(),
    };
    format!("expected {expected}, found {found}")
}
