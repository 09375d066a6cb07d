//! The admin listener: `/metrics` and `/status.json` there, and not on the
//! public port; what they count of the actions, with a store and without.

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
    // A type the Trigger does not evaluate: listed by its own type.
    let reply = post_signed(public, SECRET, sample("room.client.knocked")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

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
    let types: Vec<&str> = json["webhooks"]
        .as_array()
        .map(|all| all.iter().filter_map(|w| w["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(types.contains(&"room.client.knocked"), "{types:?}");
    assert!(!types.contains(&"other"), "{types:?}");
    assert_eq!(json["triggers"][0]["name"], "admin-metrics-rule", "{json}");
    assert_eq!(json["rooms"].as_array().map(Vec::len), Some(1), "{json}");
    let (status, html) = get(admin, "/status").await;
    assert_eq!(status, 200);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("<td>room.client.knocked</td>"), "{html}");

    handle.shutdown().await.expect("it stops");
}

/// `actions_total` of `trigger`'s `action` with `result` in `text`.
#[cfg(feature = "forward")]
fn actions(text: &str, trigger: &str, action: &str, result: &str) -> f64 {
    value(
        text,
        &format!(
            "whereby_trigger_actions_total{{trigger=\"{trigger}\",action=\"{action}\",result=\"{result}\"}}"
        ),
    )
}

/// `/metrics` once `done` holds for it, polled; fails after `TIMEOUT`.
#[cfg(feature = "forward")]
async fn metrics_once(admin: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + crate::common::TIMEOUT;
    loop {
        let (_, text) = get(admin, "/metrics").await;
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}, in time:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Counts nothing itself: the delivery is done when `start` returns, as for
/// `stdout`.
#[cfg(feature = "forward")]
struct Note;

#[cfg(feature = "forward")]
impl whereby_trigger::actions::Action for Note {
    fn kind(&self) -> &'static str {
        "note"
    }
    fn start(&self, _: Arc<whereby_trigger::actions::ActionEvent>) {}
    fn stop(&self, _: Arc<whereby_trigger::actions::ActionEvent>) {}
}

/// Every kind of delivery is counted in `actions_total`, on a Trigger with a
/// store and on one without (`serve --ephemeral`); a failed attempt that is
/// retried counts `retry`, the last one and a 4xx only `dead`.
#[cfg(feature = "forward")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_counted_with_a_store_and_without() {
    use std::time::Duration;
    use whereby_trigger::actions::Action;
    use whereby_trigger::actions::forward::{ForwardAction, ForwardSpec, RetryPolicy};
    use whereby_trigger::actions::run::{RunAction, StdinMode};
    use whereby_trigger::store::{MemoryStore, Retention};

    use crate::common::receiver::Receiver;

    let forward = |trigger: &str, to: &Receiver, max_attempts: u32| -> Arc<dyn Action> {
        let spec = ForwardSpec {
            retry: RetryPolicy {
                max_attempts,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                max_age: Duration::MAX,
            },
            ..ForwardSpec::new(to.url())
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        Arc::new(ForwardAction::new(trigger.into(), spec, client).expect("a valid spec"))
    };
    let run = |trigger: &str| -> Arc<dyn Action> {
        let mut spec = crate::common::fixture::run_spec(&["true"]);
        spec.stdin = StdinMode::None;
        RunAction::new(trigger.into(), spec)
    };

    for stored in [false, true] {
        let mode = if stored { "store" } else { "ephemeral" };
        let (down, refusing, up) = (Receiver::start(), Receiver::start(), Receiver::start());
        down.always((503, None));
        refusing.always((400, None));
        let [failing, refused, delivered] =
            ["down", "refused", "up"].map(|what| format!("admin-actions-{mode}-{what}"));
        let joined = [EventType::RoomClientJoined];
        let engine = Engine::new(vec![
            Rule::new(failing.as_str(), joined).action(forward(&failing, &down, 2)),
            Rule::new(refused.as_str(), joined).action(forward(&refused, &refusing, 3)),
            Rule::new(delivered.as_str(), joined)
                .action(forward(&delivered, &up, 2))
                .action(run(&delivered))
                .action(Arc::new(Note)),
        ]);
        let mut builder = Trigger::builder()
            .bind(Ipv4Addr::LOCALHOST.into())
            .port(0)
            .secret(SECRET)
            .admin(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
            .rules(Arc::new(engine));
        if stored {
            let retention = Retention {
                id_max_age_ms: 3_600_000,
                room_idle_ms: 3_600_000,
            };
            builder = builder.store(Arc::new(MemoryStore), retention);
        }
        let handle = builder
            .build()
            .expect("valid settings")
            .start()
            .await
            .expect("it starts");
        let admin = handle.admin_addr().expect("an admin address");

        let reply = post_signed(handle.local_addr(), SECRET, sample("room.client.joined")).await;
        assert_eq!(reply.status, 200, "{mode}: {}", reply.body);
        let text = metrics_once(admin, &format!("{mode}: every delivery settled"), |text| {
            actions(text, &failing, "forward", "dead") >= 1.0
                && actions(text, &refused, "forward", "dead") >= 1.0
                && ["forward", "run", "note"]
                    .iter()
                    .all(|kind| actions(text, &delivered, kind, "ok") >= 1.0)
        })
        .await;
        // [ok, retry, dead] of each.
        let counts = |trigger: &str, kind: &str| {
            ["ok", "retry", "dead"].map(|result| actions(&text, trigger, kind, result))
        };
        // Two attempts: the first is retried, the second is the last.
        assert_eq!(
            counts(&failing, "forward"),
            [0.0, 1.0, 1.0],
            "{mode}:\n{text}"
        );
        assert_eq!(down.received().len(), 2, "{mode}");
        // A 400 is final: no retry.
        assert_eq!(
            counts(&refused, "forward"),
            [0.0, 0.0, 1.0],
            "{mode}:\n{text}"
        );
        assert_eq!(refusing.received().len(), 1, "{mode}");
        for kind in ["forward", "run", "note"] {
            assert_eq!(
                counts(&delivered, kind),
                [1.0, 0.0, 0.0],
                "{mode} {kind}:\n{text}"
            );
        }

        // The status page counts the same.
        let (_, json) = get(admin, "/status.json").await;
        let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let row = |name: &str| {
            json["triggers"]
                .as_array()
                .and_then(|all| all.iter().find(|t| t["name"] == name).cloned())
                .unwrap_or_else(|| panic!("{mode}: no trigger {name}: {json}"))
        };
        assert_eq!(
            row(&failing)["deliveries"]["forward"],
            serde_json::json!([0, 1, 1])
        );
        assert_eq!(
            row(&delivered)["deliveries"]["run"],
            serde_json::json!([1, 0, 0])
        );
        let (_, html) = get(admin, "/status").await;
        assert!(html.contains("forward 0/1/1"), "{mode}: {html}");

        handle.shutdown().await.expect("it stops");
    }
}
