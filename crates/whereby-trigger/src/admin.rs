//! The admin listener's routes, for operators: `GET /metrics` (Prometheus
//! text), `GET /status` (a page that refreshes itself) and `GET /status.json`
//! (the same data for scripts).
//!
//! Served on an address of its own ([`TriggerBuilder::admin`](crate::TriggerBuilder::admin)),
//! by default on loopback, so that the public port serves only the webhook
//! path and the probes. Everything here is read when asked: the webhook path
//! pays nothing for it but its counters (see `metrics`).
//!
//! Why one file: the three routes show one `Status`, gathered once by
//! `status`; the page is written by hand (`render`, some 200 lines, no
//! template engine, no script) with `escape` beside every value it writes,
//! and the tests at the end check that escaping.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics::{ActionResult, Assistant, Gauges, RecentWebhook, TriggerResult, metrics};
use crate::receive::App;
use crate::store::DeliveryStatus;

/// Path of the Prometheus metrics on the admin listener.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the status page on the admin listener.
pub const STATUS_PATH: &str = "/status";
/// Path of the status as JSON on the admin listener.
pub const STATUS_JSON_PATH: &str = "/status.json";

/// The admin router over the Trigger's shared state.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics_text))
        .route(STATUS_PATH, get(status_html))
        .route(STATUS_JSON_PATH, get(status_json))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(app)
}

/// A room as the status shows it.
#[derive(Debug, Serialize)]
struct RoomStatus {
    room: String,
    clients: u32,
    clients_by_role: std::collections::BTreeMap<String, u32>,
    session_active: bool,
    last_event_age_seconds: f64,
}

/// A claim held now.
#[derive(Debug, Serialize)]
struct ClaimStatus {
    claim: String,
    room: String,
    trigger: String,
    expires_in_seconds: f64,
}

/// A queued or dead delivery.
#[derive(Debug, Serialize)]
struct DeliveryStatusRow {
    id: String,
    trigger: String,
    action: String,
    status: &'static str,
    attempts: u32,
    age_seconds: f64,
    last_error: Option<String>,
}

/// A quarantined webhook.
#[derive(Debug, Serialize)]
struct QuarantineRow {
    id: String,
    age_seconds: f64,
    code: String,
    error: String,
}

/// A configured trigger, with its counters since the process started.
#[derive(Debug, Serialize)]
struct TriggerRow {
    name: String,
    claim: String,
    actions: Vec<&'static str>,
    /// `triggers_total` by result.
    results: std::collections::BTreeMap<&'static str, u64>,
    /// `actions_total` by action, as ok, retry, dead.
    deliveries: std::collections::BTreeMap<&'static str, [u64; 3]>,
    running: i64,
    restarts: u64,
    /// Starts its `run` refused (`when_full = "drop"`): `starts_dropped_total`.
    starts_dropped: u64,
}

/// Everything `/status` and `/status.json` show.
#[derive(Debug, Serialize)]
struct Status {
    version: &'static str,
    /// This server's name among those sharing a store, if it shares one.
    node: Option<String>,
    gauges: Gauges,
    rooms: Vec<RoomStatus>,
    claims: Vec<ClaimStatus>,
    assistants: Vec<Assistant>,
    /// The last webhooks answered, newest first.
    webhooks: Vec<RecentWebhook>,
    deliveries: Vec<DeliveryStatusRow>,
    quarantined: Vec<QuarantineRow>,
    triggers: Vec<TriggerRow>,
    /// Why the store could not be read, if it could not.
    store_error: Option<String>,
}

/// Reads everything: memory at once, the store on a blocking thread (SQLite).
async fn status(app: &Arc<App>) -> Status {
    let now = Instant::now();
    let now_ms = crate::util::now_ms();
    let mut status = Status {
        version: env!("CARGO_PKG_VERSION"),
        node: None,
        gauges: Gauges::default(),
        rooms: Vec::new(),
        claims: Vec::new(),
        assistants: metrics().assistants(),
        webhooks: metrics().recent.list(),
        deliveries: Vec::new(),
        quarantined: Vec::new(),
        triggers: Vec::new(),
        store_error: None,
    };
    if let Some(engine) = &app.engine {
        let mut rooms = engine.rooms().list(now);
        rooms.sort_by_key(|room| room.2);
        status.rooms = rooms
            .into_iter()
            .map(|(key, view, age)| RoomStatus {
                room: key.to_string(),
                clients: view.num_clients,
                clients_by_role: view.num_clients_by_role_name,
                session_active: view.session_active,
                last_event_age_seconds: age.as_secs_f64(),
            })
            .collect();
        status.claims = engine
            .claims()
            .list(now)
            .into_iter()
            .map(|(claim, room, trigger, left)| ClaimStatus {
                claim: claim.to_string(),
                room: room.to_string(),
                trigger: trigger.to_string(),
                expires_in_seconds: left.as_secs_f64(),
            })
            .collect();
        status.triggers = engine
            .rules()
            .iter()
            .map(|rule| {
                let stats = metrics().trigger(rule.name());
                TriggerRow {
                    name: rule.name().to_string(),
                    claim: rule.claim_name().to_string(),
                    actions: rule.actions().iter().map(|a| a.kind()).collect(),
                    results: TriggerResult::ALL
                        .iter()
                        .map(|r| (r.label(), stats.get(*r)))
                        .collect(),
                    deliveries: stats
                        .actions()
                        .into_iter()
                        .map(|(kind, a)| {
                            let counts =
                                [ActionResult::Ok, ActionResult::Retry, ActionResult::Dead]
                                    .map(|r| a.get(r));
                            (kind, counts)
                        })
                        .collect(),
                    running: stats.running_now(),
                    restarts: stats.restarts(),
                    starts_dropped: stats.starts_dropped(),
                }
            })
            .collect();
        status.gauges.claims_held = status.claims.len() as u64;
        status.gauges.rooms_tracked = status.rooms.len() as u64;
    }
    if let Some(durable) = &app.durable {
        status.node = durable.store().node();
        status.gauges.node.clone_from(&status.node);
        let store = durable.store().clone();
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((store.deliveries()?, store.quarantined()?))
        })
        .await;
        match read {
            Ok(Ok((deliveries, quarantined))) => {
                let age = |ms: i64| (now_ms - ms).max(0) as f64 / 1000.0;
                for d in &deliveries {
                    match d.status {
                        DeliveryStatus::Pending => {
                            status.gauges.outbox_pending += 1;
                            let a = age(d.created_ms);
                            if a > status.gauges.outbox_oldest_pending_age_seconds {
                                status.gauges.outbox_oldest_pending_age_seconds = a;
                            }
                        }
                        DeliveryStatus::Dead => status.gauges.outbox_dead += 1,
                    }
                }
                status.gauges.quarantined = quarantined.len() as u64;
                status.deliveries = deliveries
                    .into_iter()
                    .map(|d| DeliveryStatusRow {
                        age_seconds: age(d.created_ms),
                        status: match d.status {
                            DeliveryStatus::Pending => "pending",
                            DeliveryStatus::Dead => "dead",
                        },
                        id: d.id,
                        trigger: d.trigger,
                        action: d.kind,
                        attempts: d.attempts,
                        last_error: d.last_error,
                    })
                    .collect();
                status.quarantined = quarantined
                    .into_iter()
                    .map(|q| QuarantineRow {
                        age_seconds: age(q.at_ms),
                        id: q.id,
                        code: q.code,
                        error: q.error,
                    })
                    .collect();
            }
            Ok(Err(err)) => status.store_error = Some(err.to_string()),
            Err(err) => status.store_error = Some(err.to_string()),
        }
    }
    status
}

#[cfg(feature = "metrics")]
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let status = status(&app).await;
    match crate::metrics::encode(&status.gauges) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Without the `metrics` feature there is no exposition to serve.
#[cfg(not(feature = "metrics"))]
async fn metrics_text(State(_): State<Arc<App>>) -> Response {
    (
        StatusCode::NOT_FOUND,
        "built without the `metrics` feature\n",
    )
        .into_response()
}

async fn status_json(State(app): State<Arc<App>>) -> Response {
    let status = status(&app).await;
    match serde_json::to_vec(&status) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn status_html(State(app): State<Arc<App>>) -> Response {
    let status = status(&app).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        render(&status),
    )
        .into_response()
}

/// `text` with the five characters that HTML gives a meaning escaped, so that
/// a value from a payload (a room name, a display name) is shown as text.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table: its caption, headings and rows of cells (already escaped).
fn table(html: &mut String, caption: &str, heads: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(html, "<h2>{} <small>({})</small></h2>", caption, rows.len());
    if rows.is_empty() {
        html.push_str("<p class=\"none\">none</p>");
        return;
    }
    html.push_str("<table><thead><tr>");
    for head in heads {
        let _ = write!(html, "<th>{head}</th>");
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
}

fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}small{color:#777;font-weight:normal}\
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}\
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #eee;vertical-align:top}\
th{background:#f0f0f0;font-weight:600}td{font-family:ui-monospace,monospace;font-size:13px}\
.none{color:#888;font-style:italic}.cards{display:flex;flex-wrap:wrap;gap:.6em}\
.card{background:#fff;padding:.5em .9em;box-shadow:0 1px 2px #0001}.card b{display:block;font-size:1.3em}\
.err{color:#a00}";

/// The status page: server-rendered, no script, refreshed every 5 s.
fn render(status: &Status) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>whereby-trigger status</title>\
         <style>{STYLE}</style></head><body><h1>whereby-trigger <small>{}{}</small></h1>",
        escape(status.version),
        status
            .node
            .as_deref()
            .map(|node| format!(" · node {}", escape(node)))
            .unwrap_or_default()
    );
    let g = &status.gauges;
    html.push_str("<div class=\"cards\">");
    for (label, value) in [
        ("rooms", g.rooms_tracked.to_string()),
        ("claims", g.claims_held.to_string()),
        ("assistants", status.assistants.len().to_string()),
        ("pending deliveries", g.outbox_pending.to_string()),
        ("dead deliveries", g.outbox_dead.to_string()),
        ("quarantined", g.quarantined.to_string()),
    ] {
        let _ = write!(html, "<div class=\"card\"><b>{value}</b>{label}</div>");
    }
    html.push_str("</div>");
    if let Some(err) = &status.store_error {
        let _ = write!(
            html,
            "<p class=\"err\">the store cannot be read: {}</p>",
            escape(err)
        );
    }
    let now_ms = crate::util::now_ms();
    table(
        &mut html,
        "Rooms",
        &["room", "clients", "by role", "session", "last event"],
        status
            .rooms
            .iter()
            .map(|r| {
                let roles = r
                    .clients_by_role
                    .iter()
                    .map(|(role, n)| format!("{}: {n}", escape(role)))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    escape(&r.room),
                    r.clients.to_string(),
                    roles,
                    if r.session_active { "active" } else { "—" }.to_owned(),
                    format!("{} ago", secs(r.last_event_age_seconds)),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Claims",
        &["claim", "room", "trigger", "lease left"],
        status
            .claims
            .iter()
            .map(|c| {
                vec![
                    escape(&c.claim),
                    escape(&c.room),
                    escape(&c.trigger),
                    secs(c.expires_in_seconds),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Running assistants",
        &["trigger", "room", "pid", "uptime", "restarts"],
        status
            .assistants
            .iter()
            .map(|a| {
                vec![
                    escape(&a.trigger),
                    escape(&a.room),
                    a.pid.to_string(),
                    secs((now_ms - a.started_ms).max(0) as f64 / 1000.0),
                    a.restarts.to_string(),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Last webhooks",
        &["age", "type", "room", "participant", "outcome", "latency"],
        status
            .webhooks
            .iter()
            .map(|w| {
                vec![
                    format!("{} ago", secs((now_ms - w.at_ms).max(0) as f64 / 1000.0)),
                    escape(&w.r#type),
                    escape(&w.room),
                    escape(&w.who),
                    escape(w.outcome),
                    format!("{:.2} ms", w.latency_ms),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Deliveries (pending and dead)",
        &[
            "id",
            "trigger",
            "action",
            "status",
            "attempts",
            "age",
            "last error",
        ],
        status
            .deliveries
            .iter()
            .map(|d| {
                vec![
                    escape(&d.id),
                    escape(&d.trigger),
                    escape(&d.action),
                    d.status.to_owned(),
                    d.attempts.to_string(),
                    secs(d.age_seconds),
                    escape(d.last_error.as_deref().unwrap_or("")),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Quarantined webhooks",
        &["id", "age", "code", "error"],
        status
            .quarantined
            .iter()
            .map(|q| {
                vec![
                    escape(&q.id),
                    secs(q.age_seconds),
                    escape(&q.code),
                    escape(&q.error),
                ]
            })
            .collect(),
    );
    table(
        &mut html,
        "Triggers",
        &[
            "trigger",
            "claim",
            "actions",
            "verdicts",
            "deliveries ok/retry/dead",
            "starts dropped",
        ],
        status
            .triggers
            .iter()
            .map(|t| {
                let verdicts = t
                    .results
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let deliveries = t
                    .deliveries
                    .iter()
                    .map(|(kind, [ok, retry, dead])| format!("{kind} {ok}/{retry}/{dead}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                // Only a `run` drops starts (`when_full = "drop"`).
                let dropped = if t.actions.contains(&"run") {
                    t.starts_dropped.to_string()
                } else {
                    "—".to_owned()
                };
                vec![
                    escape(&t.name),
                    escape(&t.claim),
                    escape(&t.actions.join(", ")),
                    escape(&verdicts),
                    escape(&deliveries),
                    dropped,
                ]
            })
            .collect(),
    );
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(escape("plain room-1 é"), "plain room-1 é");
    }

    #[test]
    fn the_page_escapes_a_room_from_a_payload() {
        let status = Status {
            version: "0",
            node: Some("<node>".to_owned()),
            gauges: Gauges::default(),
            rooms: vec![RoomStatus {
                room: "acme/<b>x</b>".to_owned(),
                clients: 1,
                clients_by_role: [("<i>guest</i>".to_owned(), 1)].into_iter().collect(),
                session_active: true,
                last_event_age_seconds: 1.0,
            }],
            claims: Vec::new(),
            assistants: Vec::new(),
            webhooks: Vec::new(),
            deliveries: Vec::new(),
            quarantined: Vec::new(),
            triggers: Vec::new(),
            store_error: None,
        };
        let html = render(&status);
        assert!(html.contains("acme/&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(html.contains("&lt;i&gt;guest&lt;/i&gt;: 1"), "{html}");
        assert!(!html.contains("<b>x</b>") && !html.contains("<script"));
        assert!(html.contains("node &lt;node&gt;"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    }
}
