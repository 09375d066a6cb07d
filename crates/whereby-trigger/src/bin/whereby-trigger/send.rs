//! `whereby-trigger send`: post a realistic webhook, as Whereby would, or a
//! whole scenario of them (`--scenario meeting`).

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use whereby_trigger::units::parse_duration;
use whereby_trigger::webhook::time::format_rfc3339_millis;
use whereby_trigger::webhook::{
    AnyEventType, EventType, OTHER_TYPES, SIGNATURE_HEADER, SigningSecret, sample, unix_now,
};

// Declared here rather than in main.rs, so `send` stays one self-contained
// subcommand; the file sits next to this one.
#[path = "scenario.rs"]
mod scenario;

use scenario::{Scenario, Settings};

/// Longest wait for one answer during a scenario. Whereby itself gives up after
/// 5 s; a little more leaves room for a server being debugged, and the bound
/// keeps a stuck server from hanging the run.
const SCENARIO_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `--pace` of a scenario: a few hundred milliseconds, so that an
/// assistant the session's start launched runs (and prints) before the end
/// of the session stops it, instead of getting SIGTERM milliseconds after it
/// started.
const DEFAULT_PACE: &str = "300ms";

/// The arguments that make `send` post one event, which the scenario-only flags
/// conflict with. Saying so explicitly matters: clap drops a `requires` whose
/// target (here `--scenario`) conflicts with an argument that is present, so
/// `send TYPE --shuffle` would otherwise silently ignore `--shuffle`.
const ONE_EVENT: [&str; 2] = ["event_type", "file"];

/// `send TYPE`, `send --file PATH` or `send --scenario NAME`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Event type to send, e.g. room.client.joined. Every documented type has a
    /// realistic sample; any other type gets a minimal in-room payload. Optional
    /// with --file (the file's type is kept unless this is given); not with
    /// --scenario.
    #[arg(value_name = "TYPE", required_unless_present_any = ["file", "scenario"])]
    event_type: Option<String>,

    /// Send TYPE even when Whereby does not document it (a new type, or one
    /// of your own); without it, an unknown TYPE is refused as a likely typo.
    #[arg(long)]
    type_any: bool,

    /// URL of the server's webhook endpoint.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080/")]
    to: String,

    /// Secret to sign with. Default: the WHEREBY_WEBHOOK_SECRET environment
    /// variable; with neither, the webhook is sent unsigned.
    #[arg(long, env = "WHEREBY_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// Send without a signature even when a secret is set.
    #[arg(long)]
    unsigned: bool,

    /// Signature timestamp in Unix seconds. Default: now.
    #[arg(long, value_name = "SECONDS")]
    timestamp: Option<u64>,

    /// Sets data.subdomain. Default: the sample's (acme).
    #[arg(long)]
    subdomain: Option<String>,

    /// Sets data.roomName. Default: the sample's (/standup-3f9a2c).
    #[arg(long)]
    room_name: Option<String>,

    /// Sets the event id. Default: a fresh random id, so repeated sends are not
    /// duplicates; repeat an id to see duplicate suppression.
    #[arg(long)]
    id: Option<String>,

    /// Sets a data field: FIELD=VALUE, VALUE read as JSON if it parses (1, true,
    /// null, {"host":1}), else as a string. Dots reach nested fields
    /// (numClientsByRoleName.host=2). Repeatable.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,

    /// Removes a data field, to send one of the shapes Whereby's payloads have
    /// had (`--omit subdomain`: before 2025; `--omit participantId`: today's
    /// docs). Dots reach nested fields (numClientsByRoleName.host); applied
    /// after --set. Repeatable.
    #[arg(long = "omit", value_name = "FIELD")]
    omit: Vec<String>,

    /// Send the JSON payload in this file instead of a sample (--id, --set and the
    /// other flags still apply; createdAt and id are kept unless set).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Play a whole scenario as a sequence of signed webhooks instead of one
    /// event; prints one line per delivery (type, short id, HTTP status, answer).
    /// Every event gets a fresh id and a createdAt later than the one before.
    #[arg(
        long,
        value_enum,
        value_name = "NAME",
        conflicts_with_all = ["event_type", "file", "id", "set", "omit"]
    )]
    scenario: Option<Scenario>,

    /// With --scenario: send each event N extra times with the same id, to see
    /// duplicate suppression.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "scenario", conflicts_with_all = ONE_EVENT)]
    duplicate: u32,

    /// With --scenario: send the events in a random order (createdAt still tells
    /// the true order). The seed is printed on stderr, to repeat a run.
    #[arg(long, requires = "scenario", conflicts_with_all = ONE_EVENT)]
    shuffle: bool,

    /// Seed of --shuffle, to repeat an order. Default: from the clock.
    #[arg(long, value_name = "S", requires = "shuffle", conflicts_with_all = ONE_EVENT)]
    seed: Option<u64>,

    /// With --scenario: wait this long between two deliveries, as a real
    /// meeting does (an assistant started by one event has time to show its
    /// output before the next stops it); 0 sends them all at once.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = DEFAULT_PACE,
        value_parser = parse_duration,
        requires = "scenario",
        conflicts_with_all = ONE_EVENT
    )]
    pace: Duration,
}

/// Runs `send`; the exit code is 0 when every answer was 2xx, else 1.
pub(crate) async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    if let Some(event_type) = &args.event_type {
        check_type(event_type, args.type_any)?;
    }
    match args.scenario {
        Some(scenario) => run_scenario(&args, scenario).await,
        None => run_one(&args).await,
    }
}

/// `send TYPE` / `send --file`: one delivery, the answer printed as is.
async fn run_one(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let body = build_payload(args)?;
    let mut request = reqwest::Client::new()
        .post(&args.to)
        .header("content-type", "application/json");
    note_if_unsigned(args);
    if let Some(header) = signature(args, &body) {
        request = request.header(SIGNATURE_HEADER, header);
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.to))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!("HTTP {status}");
    println!("{answer}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `send --scenario`: every webhook of the scenario, in order or shuffled, each
/// delivery on its own line: `TYPE SHORT-ID HTTP STATUS BODY`.
async fn run_scenario(args: &SendArgs, scenario: Scenario) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_millis = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    let pace_millis = u64::try_from(args.pace.as_millis()).unwrap_or(u64::MAX);
    // The timeline ends about now: a second run started right after this one
    // must not carry older timestamps than this one's last event, or a server
    // folding room state by createdAt would ignore it.
    let span = scenario.event_count().saturating_sub(1) as u64;
    let settings = Settings {
        subdomain: args.subdomain.clone(),
        room_name: args.room_name.clone(),
        start_millis: now_millis.saturating_sub(span),
        // With a pace, createdAt follows the clock of an in-order run; without
        // one the events are 1 ms apart, so their order is still unambiguous.
        step_millis: pace_millis.max(1),
        nonce: RandomState::new().hash_one((now.as_nanos(), std::process::id())),
    };
    let webhooks = scenario::build(scenario, &settings)?;
    let seed = args.shuffle.then(|| {
        let seed = args.seed.unwrap_or(now.as_nanos() as u64);
        eprintln!("note: shuffled with seed {seed} (repeat this order with --seed {seed})");
        seed
    });
    let order = scenario::delivery_order(webhooks.len(), args.duplicate, seed);
    note_if_unsigned(args);

    let client = reqwest::Client::builder()
        .timeout(SCENARIO_ANSWER_TIMEOUT)
        .build()
        .context("cannot create the HTTP client")?;
    let mut all_ok = true;
    for (n, &index) in order.iter().enumerate() {
        if n > 0 && !args.pace.is_zero() {
            tokio::time::sleep(args.pace).await;
        }
        let webhook = &webhooks[index];
        let mut request = client
            .post(&args.to)
            .header("content-type", "application/json");
        // Signed per delivery: with a pace, a long run would otherwise drift out
        // of the server's replay window.
        if let Some(header) = signature(args, &webhook.body) {
            request = request.header(SIGNATURE_HEADER, header);
        }
        let response = request
            .body(webhook.body.clone())
            .send()
            .await
            .with_context(|| format!("cannot deliver {} to {}", webhook.event_type, args.to))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        all_ok &= status.is_success();
        // One line per delivery, whatever the server answered.
        let answer = answer.split_whitespace().collect::<Vec<_>>().join(" ");
        let short_id: String = webhook.id.chars().take(8).collect();
        println!(
            "{:<22} {short_id}  HTTP {status}  {}",
            webhook.event_type,
            if answer.is_empty() { "-" } else { &answer }
        );
    }
    let failed = !all_ok;
    eprintln!(
        "note: {} deliveries of {} events{}",
        order.len(),
        webhooks.len(),
        if failed {
            ", some not answered 2xx"
        } else {
            ", all answered 2xx"
        }
    );
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The signing secret to use, unless signing is off.
fn active_secret(args: &SendArgs) -> Option<&str> {
    args.secret
        .as_deref()
        .filter(|s| !s.is_empty() && !args.unsigned)
}

/// The `Whereby-Signature` header for `body`, or `None` when sending unsigned.
fn signature(args: &SendArgs, body: &[u8]) -> Option<String> {
    let secret = active_secret(args)?;
    let t = args.timestamp.unwrap_or_else(unix_now);
    Some(SigningSecret::new(secret).sign(t, body))
}

/// Says on stderr why nothing is signed, once per run.
fn note_if_unsigned(args: &SendArgs) {
    if active_secret(args).is_none() {
        if args.unsigned {
            eprintln!("note: sending unsigned (--unsigned)");
        } else {
            eprintln!("note: sending unsigned (no --secret or WHEREBY_WEBHOOK_SECRET)");
        }
    }
}

/// Refuses a type Whereby does not document unless `type_any`: a typo such
/// as `room.client.joind` would otherwise be posted, answered 200 `ignored`,
/// and exit 0, which looks like success.
fn check_type(event_type: &str, type_any: bool) -> anyhow::Result<()> {
    let documented = event_type
        .parse::<AnyEventType>()
        .is_ok_and(|t| t.is_documented());
    if type_any || documented {
        return Ok(());
    }
    let known: Vec<&str> = EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .chain(OTHER_TYPES)
        .collect();
    let hint = match whereby_trigger::config::closest(event_type, known.iter().copied()) {
        Some(near) => format!("did you mean `{near}`? "),
        None => String::new(),
    };
    bail!(
        "`{event_type}` is not a type Whereby documents; {hint}(known: {}; --type-any sends it anyway)",
        known.join(", ")
    )
}

fn build_payload(args: &SendArgs) -> anyhow::Result<Vec<u8>> {
    let mut webhook: Value = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => {
            let event_type = args.event_type.as_deref().unwrap_or_default();
            let mut v = match sample::sample(event_type) {
                Some(text) => serde_json::from_str(text)?,
                None => json!({
                    "apiVersion": "1.0",
                    "type": event_type,
                    "data": {"roomName": "/standup-3f9a2c", "roomSessionId": null, "subdomain": "acme"},
                }),
            };
            v["id"] = Value::String(fresh_id());
            v["createdAt"] = Value::String(iso8601_now());
            v
        }
    };
    let Some(root) = webhook.as_object_mut() else {
        bail!("the payload must be a JSON object");
    };
    if let (Some(event_type), true) = (&args.event_type, args.file.is_some()) {
        root.insert("type".into(), Value::String(event_type.clone()));
    }
    if let Some(id) = &args.id {
        root.insert("id".into(), Value::String(id.clone()));
    }
    let data = root
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(subdomain) = &args.subdomain {
        set_path(data, "subdomain", Value::String(subdomain.clone()))?;
    }
    if let Some(room_name) = &args.room_name {
        set_path(data, "roomName", Value::String(room_name.clone()))?;
    }
    for assignment in &args.set {
        let (field, value) = assignment
            .split_once('=')
            .with_context(|| format!("--set {assignment}: expected FIELD=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        set_path(data, field, value).with_context(|| format!("--set {assignment}"))?;
    }
    for field in &args.omit {
        remove_path(data, field).with_context(|| format!("--omit {field}"))?;
    }
    Ok(serde_json::to_vec(&webhook)?)
}

/// Removes `data.<a.b.c>`; a field that is not there is an error, so that a
/// typo does not send the payload unchanged.
fn remove_path(data: &mut Value, path: &str) -> anyhow::Result<()> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, path),
    };
    let mut at = data;
    for key in parents.into_iter().flat_map(|p| p.split('.')) {
        at = at
            .get_mut(key)
            .with_context(|| format!("`{path}`: data has no field `{key}` on the way"))?;
    }
    let object = at
        .as_object_mut()
        .with_context(|| format!("`{path}` goes through a field that is not an object"))?;
    if object.remove(last).is_none() {
        bail!("the payload has no data.{path} to remove");
    }
    Ok(())
}

/// Sets `data.<a.b.c>`, creating objects on the way.
fn set_path(data: &mut Value, path: &str, value: Value) -> anyhow::Result<()> {
    let mut at = data;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if key.is_empty() {
            bail!("empty field name in `{path}`");
        }
        let Some(object) = at.as_object_mut() else {
            bail!("`{path}` goes through a field that is not an object");
        };
        if keys.peek().is_none() {
            object.insert(key.to_owned(), value);
            return Ok(());
        }
        at = object
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// 64 hex digits, like Whereby's ids, from the process's random hash keys.
fn fresh_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (0..4)
        .map(|i| {
            format!(
                "{:016x}",
                RandomState::new().hash_one((nanos, i, std::process::id()))
            )
        })
        .collect()
}

/// Now as `2026-11-02T09:00:03.120Z`.
fn iso8601_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_and_overwrites() {
        let mut data = json!({"numClients": 1});
        set_path(&mut data, "numClients", json!(3)).unwrap();
        set_path(&mut data, "numClientsByRoleName.host", json!(2)).unwrap();
        assert_eq!(
            data,
            json!({"numClients": 3, "numClientsByRoleName": {"host": 2}})
        );
        assert!(set_path(&mut data, "numClients.x", json!(1)).is_err());
        assert!(set_path(&mut data, "a..b", json!(1)).is_err());
    }

    #[test]
    fn remove_path_removes_only_what_is_there() {
        let mut data =
            json!({"subdomain": "acme", "numClientsByRoleName": {"host": 1, "visitor": 2}});
        remove_path(&mut data, "subdomain").unwrap();
        remove_path(&mut data, "numClientsByRoleName.host").unwrap();
        assert_eq!(data, json!({"numClientsByRoleName": {"visitor": 2}}));
        assert!(remove_path(&mut data, "subdomain").is_err());
        assert!(remove_path(&mut data, "nope.x").is_err());
        assert!(remove_path(&mut data, "numClientsByRoleName.visitor.x").is_err());
    }

    #[test]
    fn ids_are_fresh() {
        let a = fresh_id();
        assert_eq!(a.len(), 64);
        assert_ne!(a, fresh_id());
    }
}
