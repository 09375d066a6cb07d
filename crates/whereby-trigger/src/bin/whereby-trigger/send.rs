//! `whereby-trigger send`: post a realistic webhook, as Whereby would.

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use whereby_trigger::webhook::{SIGNATURE_HEADER, SigningSecret, sample, unix_now};

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Event type to send, e.g. room.client.joined. Every documented type has a
    /// realistic sample; any other type gets a minimal in-room payload. Optional
    /// with --file (the file's type is kept unless this is given).
    #[arg(value_name = "TYPE", required_unless_present = "file")]
    event_type: Option<String>,

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

    /// Send the JSON payload in this file instead of a sample (--id, --set and the
    /// other flags still apply; createdAt and id are kept unless set).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

pub(crate) async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let body = build_payload(&args)?;
    let mut request = reqwest::Client::new()
        .post(&args.to)
        .header("content-type", "application/json");
    match args
        .secret
        .as_deref()
        .filter(|s| !s.is_empty() && !args.unsigned)
    {
        Some(secret) => {
            let t = args.timestamp.unwrap_or_else(unix_now);
            request = request.header(SIGNATURE_HEADER, SigningSecret::new(secret).sign(t, &body));
        }
        None if args.unsigned => eprintln!("note: sending unsigned (--unsigned)"),
        None => eprintln!("note: sending unsigned (no --secret or WHEREBY_WEBHOOK_SECRET)"),
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
    Ok(serde_json::to_vec(&webhook)?)
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
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_758), (2026, 11, 1));
    }

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
    fn ids_are_fresh() {
        let a = fresh_id();
        assert_eq!(a.len(), 64);
        assert_ne!(a, fresh_id());
    }
}
