use super::*;
use serde_json::json;
use std::sync::Mutex;
use whereby_webhook::EventType;

/// An action that records what it is asked to do.
#[derive(Default)]
struct Recorder(Mutex<Vec<(ActionKind, String, String)>>);

impl Action for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }
    fn start(&self, event: Arc<ActionEvent>) {
        self.0.lock().unwrap().push((
            ActionKind::Start,
            event.trigger.to_string(),
            event.event_id().to_owned(),
        ));
    }
    fn stop(&self, event: Arc<ActionEvent>) {
        self.0.lock().unwrap().push((
            ActionKind::Stop,
            event.trigger.to_string(),
            event.event_id().to_owned(),
        ));
    }
}

fn webhook(event_type: &str, id: &str, at: &str, data: serde_json::Value) -> (WebhookEvent, Bytes) {
    let mut v: serde_json::Value =
        serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
    v["id"] = json!(id);
    v["createdAt"] = json!(at);
    for (k, val) in data.as_object().unwrap() {
        v["data"][k] = val.clone();
    }
    let raw = Bytes::from(v.to_string());
    (whereby_webhook::parse(&raw).unwrap(), raw)
}

fn decide(engine: &Engine, e: &(WebhookEvent, Bytes)) -> Decision {
    engine.decide(
        &e.0,
        &e.1,
        Some("https://acme.whereby.com/standup-3f9a2c"),
        Instant::now(),
    )
}

fn names(d: &Decision) -> Vec<String> {
    d.verdicts.iter().map(ToString::to_string).collect()
}

#[test]
fn once_per_session_fires_once_and_stop_on_releases() {
    let recorder = Arc::new(Recorder::default());
    let rule = Rule::new(
        "note-taker",
        [EventType::RoomSessionStarted, EventType::AssistantRequested],
    )
    .once_per(OncePer::Session)
    .stop_on([EventType::RoomSessionEnded])
    .action(recorder.clone());
    let engine = Engine::new(vec![rule]);
    let started = webhook(
        "room.session.started",
        "e1",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let requested = webhook(
        "assistant.requested",
        "e2",
        "2026-11-02T09:01:00Z",
        json!({}),
    );
    let ended = webhook(
        "room.session.ended",
        "e3",
        "2026-11-02T10:00:00Z",
        json!({}),
    );

    let d = decide(&engine, &started);
    assert!(d.fired());
    d.dispatch();
    let d = decide(&engine, &requested);
    assert!(!d.fired());
    assert!(names(&d)[0].contains("suppressed"), "{:?}", names(&d));
    d.dispatch();
    let d = decide(&engine, &ended);
    assert!(matches!(&d.verdicts[0], Verdict::Stopped { released, .. } if released.len() == 1));
    d.dispatch();
    // A new session fires again.
    let again = webhook(
        "room.session.started",
        "e4",
        "2026-11-02T11:00:00Z",
        json!({"roomSessionId": "s2"}),
    );
    assert!(decide(&engine, &again).fired());

    let calls = recorder.0.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            (ActionKind::Start, "note-taker".into(), "e1".into()),
            (ActionKind::Stop, "note-taker".into(), "e3".into()),
        ]
    );
}

#[cfg(feature = "cel")]
#[test]
fn when_sees_the_folded_room_and_failures_are_false() {
    let rule = Rule::new("second-joiner", [EventType::RoomClientJoined])
        .when(When::compile("room.numClients >= 2 && data.roleName == 'visitor'").unwrap())
        .action(Arc::new(Recorder::default()));
    let broken = Rule::new("broken", [EventType::RoomClientJoined])
        .when(When::compile("data.nope > 1").unwrap())
        .action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule, broken]);
    let host = webhook(
        "room.client.joined",
        "j1",
        "2026-11-02T09:00:00Z",
        json!({"numClients": 1}),
    );
    let d = decide(&engine, &host);
    assert!(!d.fired());
    assert!(names(&d)[0].contains("`when` is false"));
    assert!(names(&d)[1].contains("`when` failed"));
    let visitor = webhook(
        "room.client.joined",
        "j2",
        "2026-11-02T09:00:05Z",
        json!({"numClients": 2, "roleName": "visitor", "numClientsByRoleName": {"host": 1, "visitor": 1}}),
    );
    let d = decide(&engine, &visitor);
    assert!(d.fired(), "{:?}", names(&d));
    assert_eq!(d.room.as_ref().unwrap().num_clients, 2);
}

#[test]
fn once_per_room_and_event() {
    let per_room = Rule::new("room", [EventType::RoomClientJoined]).once_per(OncePer::Room);
    let per_event = Rule::new("event", [EventType::RoomClientJoined]);
    let engine = Engine::new(vec![per_room, per_event]);
    let a = webhook("room.client.joined", "a", "2026-11-02T09:00:00Z", json!({}));
    let b = webhook("room.client.joined", "b", "2026-11-02T09:00:01Z", json!({}));
    let other_room = webhook(
        "room.client.joined",
        "c",
        "2026-11-02T09:00:01Z",
        json!({"roomName": "/other"}),
    );
    assert_eq!(
        decide(&engine, &a)
            .verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Fired { .. }))
            .count(),
        2
    );
    let d = decide(&engine, &b);
    assert!(matches!(d.verdicts[0], Verdict::Suppressed { .. }));
    assert!(matches!(d.verdicts[1], Verdict::Fired { .. }));
    assert!(matches!(
        decide(&engine, &other_room).verdicts[0],
        Verdict::Fired { .. }
    ));
}

#[test]
fn a_released_claim_lets_the_rule_fire_again() {
    let engine = Engine::new(vec![
        Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
    ]);
    let a = webhook(
        "assistant.requested",
        "a",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let b = webhook(
        "assistant.requested",
        "b",
        "2026-11-02T09:00:01Z",
        json!({}),
    );
    let d = decide(&engine, &a);
    assert!(d.fired());
    // The assistant ended: its action releases the claim.
    let key = match &d.verdicts[0] {
        Verdict::Fired { claim, .. } => claim.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(!decide(&engine, &b).fired());
    let _ = engine.claims().release_room("r", &key.room, Instant::now());
    assert!(decide(&engine, &b).fired());
}

#[test]
fn rust_predicates_gate_rules_and_panics_count_as_false() {
    let engine = Engine::new(vec![
        Rule::new("gated", [EventType::RoomSessionStarted])
            .predicate(|e| e.in_room().is_some_and(|r| r.subdomain() == "globex")),
        Rule::new("panicky", [EventType::RoomSessionStarted]).predicate(|_| panic!("bug")),
    ]);
    let e = webhook(
        "room.session.started",
        "a",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let d = decide(&engine, &e);
    assert!(!d.fired());
    assert!(names(&d)[1].contains("panicked"));
    let g = webhook(
        "room.session.started",
        "b",
        "2026-11-02T09:00:00Z",
        json!({"subdomain": "globex"}),
    );
    assert!(decide(&engine, &g).fired());
}

#[test]
fn replacing_rules_keeps_claims() {
    let engine = Engine::new(vec![
        Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
    ]);
    let a = webhook(
        "assistant.requested",
        "a",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    assert!(decide(&engine, &a).fired());
    engine.replace_rules(vec![
        Rule::new("r", [EventType::AssistantRequested]).once_per(OncePer::Room),
    ]);
    let b = webhook(
        "assistant.requested",
        "b",
        "2026-11-02T09:00:01Z",
        json!({}),
    );
    assert!(
        !decide(&engine, &b).fired(),
        "the claim survived the reload"
    );
}
