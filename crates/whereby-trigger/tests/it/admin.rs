//! The admin listener: `/metrics` and `/status.json` there, and not on the
//! public port.

use std::net::{Ipv4Addr, SocketAddr};

use std::sync::Arc;

use whereby_trigger::Trigger;
use whereby_trigger::rules::engine::{Engine, Rule};
use whereby_trigger::webhook::{EventType, RoomClientJoined};

use crate::common::{SECRET, client, post_signed, sample};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("the server answers");
    let status = reply.status().as_u16();
    (status, reply.text().await.unwrap_or_default())
}

/// The value of the sample line that starts with `prefix`, 0 when absent.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_and_status_are_on_the_admin_port_only() {
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let handle = Trigger::builder()
        .bind(Ipv4Addr::LOCALHOST.into())
        .port(0)
        .secret(SECRET)
        .admin(Some(admin))
        .on(|_: &RoomClientJoined| true)
        // A name of its own: the counters are the process's.
        .rules(Arc::new(Engine::new(vec![Rule::new(
            "admin-metrics-rule",
            [EventType::RoomClientJoined],
        )])))
        .build()
        .expect("valid settings")
        .start()
        .await
        .expect("it starts");
    let public = handle.local_addr();
    let admin = handle.admin_addr().expect("an admin address");
    assert_ne!(public, admin);

    for path in ["/metrics", "/status", "/status.json"] {
        assert_eq!(get(public, path).await.0, 404, "{path} on the public port");
    }

    let joined =
        "whereby_trigger_webhooks_total{type=\"room.client.joined\",outcome=\"triggered\"}";
    let (status, before) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "# TYPE whereby_trigger_webhooks_total counter",
        "# TYPE whereby_trigger_signature_failures_total counter",
        "# TYPE whereby_trigger_request_duration_seconds histogram",
        "# TYPE whereby_trigger_triggers_total counter",
        "# TYPE whereby_trigger_actions_total counter",
        "# TYPE whereby_trigger_assistants_running gauge",
        "# TYPE whereby_trigger_assistant_restarts_total counter",
        "whereby_trigger_claims_held ",
        "whereby_trigger_rooms_tracked ",
        "whereby_trigger_outbox_pending ",
        "whereby_trigger_outbox_dead ",
        "whereby_trigger_outbox_oldest_pending_age_seconds ",
        "whereby_trigger_quarantined ",
        "# TYPE whereby_trigger_store_commit_duration_seconds histogram",
        "whereby_trigger_build_info{version=",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }

    let reply = post_signed(public, SECRET, sample("room.client.joined")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = post_signed(public, "a wrong secret", sample("room.client.left")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    let (_, after) = get(admin, "/metrics").await;
    // Other tests in this process count too: the counters only move up.
    assert!(
        value(&after, joined) >= value(&before, joined) + 1.0,
        "{after}"
    );
    let mismatch = "whereby_trigger_signature_failures_total{reason=\"mismatch\"}";
    assert!(
        value(&after, mismatch) >= value(&before, mismatch) + 1.0,
        "{after}"
    );
    let count = "whereby_trigger_request_duration_seconds_count";
    assert!(
        value(&after, count) >= value(&before, count) + 2.0,
        "{after}"
    );

    let fired = "whereby_trigger_triggers_total{trigger=\"admin-metrics-rule\",result=\"fired\"}";
    assert_eq!(value(&after, fired), 1.0, "{after}");
    assert!(after.contains("whereby_trigger_rooms_tracked 1"), "{after}");

    let (status, json) = get(admin, "/status.json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    for key in [
        "rooms",
        "claims",
        "assistants",
        "webhooks",
        "deliveries",
        "quarantined",
        "triggers",
        "gauges",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    let listed = json["webhooks"].as_array().is_some_and(|all| {
        all.iter()
            .any(|w| w["type"] == "room.client.joined" && w["outcome"] == "triggered")
    });
    assert!(listed, "the webhook is not among the last ones: {json}");
    assert_eq!(json["triggers"][0]["name"], "admin-metrics-rule", "{json}");
    assert_eq!(json["rooms"].as_array().map(Vec::len), Some(1), "{json}");
    let (status, html) = get(admin, "/status").await;
    assert_eq!(status, 200);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));

    handle.shutdown().await.expect("it stops");
}
