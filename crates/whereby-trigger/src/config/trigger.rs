//! `[[trigger]]`: events, `when`, `once_per`, `stop_on` and the actions.

use super::server::wrong_type;
use super::*;

/// One `[[trigger]]`, validated and compiled.
#[derive(Debug)]
#[non_exhaustive]
pub struct TriggerConfig {
    /// `name`, unique.
    pub name: Arc<str>,
    /// Line of the trigger's `name` in the file.
    pub line: usize,
    /// `on`: the event types that can fire it.
    pub on: Vec<AnyEventType>,
    /// `when`, compiled.
    #[cfg(feature = "cel")]
    pub when: Option<Arc<When>>,
    /// Line where `when`'s expression starts, or of the trigger's `name`
    /// without one.
    #[cfg(feature = "cel")]
    pub when_line: usize,
    /// `once_per`
    pub once_per: OncePer,
    /// `lease`
    pub lease: Duration,
    /// `claim`: the name its claims are held under; its own name by default.
    pub claim: Arc<str>,
    /// Line of `claim` in the file, or of the trigger's `name` without one.
    pub claim_line: usize,
    /// `stop_on`
    pub stop_on: Vec<AnyEventType>,
    /// `stop_when`, compiled.
    #[cfg(feature = "cel")]
    pub stop_when: Option<Arc<When>>,
    /// Line where `stop_when`'s expression starts, or of the trigger's `name`
    /// without one.
    #[cfg(feature = "cel")]
    pub stop_when_line: usize,
    /// `stop_after`
    pub stop_after: Option<Duration>,
    /// `run`
    pub run: Option<RunSpec>,
    /// `forward`
    #[cfg(feature = "forward")]
    pub forward: Option<ForwardSpec>,
    /// `stdout`
    pub stdout: bool,
}

/// Validates one trigger; problems are `(line, message)` pairs, each on the
/// line of the key at fault.
pub(super) fn trigger_config(
    raw: RawTrigger,
    line: usize,
    lines: &Lines<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<(usize, String)>,
) -> Option<TriggerConfig> {
    let start = problems.len();
    let at = |span: std::ops::Range<usize>| lines.of(span.start);
    let name = raw.name.get_ref();
    if !valid_name(name) {
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
    let claim_line = raw.claim.as_ref().map_or(line, |c| at(c.span()));
    let claim: Arc<str> = match raw.claim {
        Some(claim) => {
            let claim = claim.into_inner();
            if !valid_name(&claim) {
                problems.push((
                    claim_line,
                    "claim: use letters, digits, '-', '_' and '.' only".to_owned(),
                ));
            }
            Arc::from(claim)
        }
        None => Arc::from(name.as_str()),
    };
    let once_per = raw.once_per.unwrap_or_default();
    if claim_line != line && once_per == OncePer::Event {
        // Two events never share an event's claim: naming one would share nothing.
        problems.push((
            claim_line,
            "claim: needs once_per = \"room\" or \"session\" (an event's claim is never shared)"
                .to_owned(),
        ));
    }
    if let Some(after) = &raw.stop_after
        && stop_on.is_empty()
        && raw.stop_when.is_none()
    {
        problems.push((
            at(after.span()),
            "stop_after: there is no stop to wait for: add stop_on or stop_when".to_owned(),
        ));
    }
    let stop_after = raw.stop_after.as_ref().map(|after| {
        let after_line = at(after.span());
        duration(
            "stop_after",
            Some(after.get_ref()),
            DEFAULT_LEASE,
            &mut |m| {
                problems.push((after_line, m));
            },
        )
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
        let mut forward = forward.into_inner();
        // Checked apart, so that an error names the secret's own line.
        let signing_secrets = forward
            .signing_secret
            .take()
            .map_or_else(Vec::new, |secrets| {
                let secrets_line = at(secrets.span());
                signing_secrets(secrets.into_inner(), env, &mut |m| {
                    problems.push((secrets_line, m));
                })
            });
        let mut fail = |m: String| problems.push((forward_line, m));
        forward_spec(forward, signing_secrets, env, &mut fail)
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
    for (key, when) in [("when", &raw.when), ("stop_when", &raw.stop_when)] {
        if let Some(when) = when {
            problems.push((lines.of(when.span().start), missing_feature(key, "cel")));
        }
    }
    #[cfg(feature = "cel")]
    let (when_line, stop_when_line) = (
        raw.when
            .as_ref()
            .map_or(line, |when| expression_line(when, lines)),
        raw.stop_when
            .as_ref()
            .map_or(line, |when| expression_line(when, lines)),
    );
    #[cfg(feature = "cel")]
    let when = raw
        .when
        .and_then(|when| compile_when("when", &when, Some(on.as_slice()), lines, problems));
    #[cfg(feature = "cel")]
    let stop_when = raw
        .stop_when
        .and_then(|when| compile_when("stop_when", &when, None, lines, problems));

    (problems.len() == start).then(|| TriggerConfig {
        name: Arc::from(raw.name.into_inner()),
        line,
        on,
        #[cfg(feature = "cel")]
        when,
        #[cfg(feature = "cel")]
        when_line,
        once_per,
        lease,
        claim,
        claim_line,
        stop_on,
        #[cfg(feature = "cel")]
        stop_when,
        #[cfg(feature = "cel")]
        stop_when_line,
        stop_after,
        run,
        #[cfg(feature = "forward")]
        forward,
        stdout,
    })
}

/// Whether `name` is a usable trigger or claim name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The error of a key whose cargo feature this build lacks.
#[cfg(not(all(feature = "cel", feature = "forward")))]
fn missing_feature(key: &str, feature: &str) -> String {
    format!("{key}: needs whereby-trigger built with the `{feature}` feature")
}

/// Compiles a CEL condition; a problem is reported on the line of the
/// expression where it is.
#[cfg(feature = "cel")]
fn compile_when(
    key: &str,
    when: &Spanned<String>,
    // The types a `when` is evaluated on, to check the `data.FIELD`s it names;
    // `None` for `stop_when`, which runs after an event of any type.
    on: Option<&[AnyEventType]>,
    lines: &Lines<'_>,
    problems: &mut Vec<(usize, String)>,
) -> Option<Arc<When>> {
    let when_line = expression_line(when, lines);
    let compiled = When::compile(when.get_ref())
        .map(Arc::new)
        .map_err(|err| {
            let line = when_line + err.line.map_or(0, |l| l.saturating_sub(1));
            problems.push((line, format!("{key}: {}", err.message)));
        })
        .ok()?;
    let unknown = on.map_or_else(Vec::new, |on| {
        crate::rules::cel::unknown_data_fields(&compiled, on)
    });
    if !unknown.is_empty() {
        for problem in unknown {
            problems.push((when_line, format!("{key}: {problem}")));
        }
        return None;
    }
    Some(compiled)
}

/// The line where a CEL expression's text starts: a multi-line string drops
/// the line break right after its opening quotes, so its first line is the
/// next one in the file.
#[cfg(feature = "cel")]
fn expression_line(when: &Spanned<String>, lines: &Lines<'_>) -> usize {
    let opening = lines.0.get(when.span().start..).unwrap_or_default();
    let skipped = ["\"\"\"\n", "'''\n", "\"\"\"\r\n", "'''\r\n"]
        .iter()
        .any(|quote| opening.starts_with(quote));
    lines.of(when.span().start) + usize::from(skipped)
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
        when_full: when_full(run.when_full, fail),
        restart: run.restart.unwrap_or_default(),
        max_restarts: run.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
    };
    if let Err(err) = spec.validate() {
        fail(format!("run: {err}"));
    }
    spec
}

/// `run.when_full`, read by [`WhenFull`]'s own `Deserialize` so that the file
/// takes exactly what a user of the library can write.
fn when_full(value: Option<toml::Value>, fail: &mut dyn FnMut(String)) -> WhenFull {
    use serde::de::value::{Error, StrDeserializer};
    let read = match value {
        None => return WhenFull::default(),
        Some(toml::Value::String(text)) => {
            WhenFull::deserialize(StrDeserializer::<Error>::new(&text)).map_err(|e| e.to_string())
        }
        Some(other) => Err(wrong_type(&other, "\"wait\" or \"drop\"")),
    };
    read.unwrap_or_else(|message| {
        fail(format!("run.when_full: {message}"));
        WhenFull::default()
    })
}

/// `forward.signing_secret`, expanded and checked: the secrets that are valid
/// (an invalid one is reported through `fail`, which refuses the config).
#[cfg(feature = "forward")]
fn signing_secrets(
    raw: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    fail: &mut dyn FnMut(String),
) -> Vec<String> {
    let strings = |items: &[toml::Value]| -> Option<Vec<String>> {
        items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect()
    };
    let (secrets, listed) = match &raw {
        toml::Value::String(secret) => (vec![secret.clone()], false),
        toml::Value::Array(items) => match strings(items) {
            Some(secrets) => (secrets, true),
            None => {
                fail("forward.signing_secret: the list must hold strings only".to_owned());
                return Vec::new();
            }
        },
        other => {
            fail(format!(
                "forward.signing_secret: must be a string (\"whsec_…\") or a list of them, \
                 not {}",
                other.type_str()
            ));
            return Vec::new();
        }
    };
    if secrets.is_empty() {
        fail(
            "forward.signing_secret: the list is empty; give one secret or leave the key out"
                .to_owned(),
        );
    }
    let mut valid = Vec::with_capacity(secrets.len());
    for (n, secret) in secrets.iter().enumerate() {
        let key = if listed {
            format!("forward.signing_secret[{n}]")
        } else {
            "forward.signing_secret".to_owned()
        };
        let secret = match expand(secret, env) {
            Ok(secret) => secret,
            Err(message) => {
                fail(format!("{key}: {message}"));
                continue;
            }
        };
        match SigningKey::parse(&secret) {
            Ok(_) => valid.push(secret),
            // The message never shows the secret.
            Err(reason) => fail(format!("{key}: {reason}")),
        }
    }
    valid
}

#[cfg(feature = "forward")]
fn forward_spec(
    forward: RawForward,
    signing_secrets: Vec<String>,
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
            max_attempts: forward.max_attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
            max_age: duration(
                "forward.max_age",
                forward.max_age.as_deref(),
                DEFAULT_RETRY_MAX_AGE,
                fail,
            ),
            ..RetryPolicy::default()
        },
        signing_secrets,
    };
    if let Err(err) = spec.validate() {
        fail(format!("forward: {err}"));
    }
    if cfg!(not(feature = "tls")) && spec.url.starts_with("https:") {
        fail("forward.url: https needs whereby-trigger built with the `tls` feature".to_owned());
    }
    Some(spec)
}

fn event_types(key: &str, names: &[String], fail: &mut dyn FnMut(String)) -> Vec<AnyEventType> {
    names
        .iter()
        .filter_map(|name| {
            name.parse::<AnyEventType>()
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
