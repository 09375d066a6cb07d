//! The engine's tests, one whole scenario per behaviour of `decide_at` and
//! `fire_due` (claims, stops and their grace, late starts, the action event);
//! long because each scenario is spelt out event by event.

use super::*;
use serde_json::json;
use std::sync::Mutex;
use whereby_webhook::{AnyEventType, EventType};

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

/// `ACME` and `acme`, `standup` and `/standup` are one room: one claim. (The
/// spellings of a path that are not one spelling, `/./standup`, never get
/// here: the room URL refuses them.)
#[test]
fn once_per_room_holds_for_every_spelling_of_the_room() {
    let engine = Engine::new(vec![
        Rule::new("room", [EventType::RoomClientJoined]).once_per(OncePer::Room),
    ]);
    let spellings = [
        json!({"subdomain": "acme", "roomName": "/standup"}),
        json!({"subdomain": "ACME", "roomName": "/standup"}),
        json!({"subdomain": "Acme", "roomName": "standup"}),
    ];
    let fired: Vec<bool> = spellings
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let at = format!("2026-11-02T09:00:0{i}Z");
            decide(
                &engine,
                &webhook("room.client.joined", &format!("j{i}"), &at, data),
            )
            .fired()
        })
        .collect();
    assert_eq!(fired, [true, false, false]);
    let held = RoomKey::parse("acme/standup").unwrap();
    assert!(
        engine
            .claims()
            .held_in(&"room".into(), &held, Instant::now())
    );
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

fn decide_at(engine: &Engine, e: &(WebhookEvent, Bytes), now: Instant) -> Decision {
    engine.decide(
        &e.0,
        &e.1,
        Some("https://acme.whereby.com/standup-3f9a2c"),
        now,
    )
}

/// A join or leave that leaves `humans` hosts (and one assistant) in the room.
fn counted(event_type: &str, id: &str, at: &str, humans: u32) -> (WebhookEvent, Bytes) {
    let mut roles = serde_json::Map::new();
    roles.insert("assistant".into(), json!(1));
    if humans > 0 {
        roles.insert("host".into(), json!(humans));
    }
    webhook(
        event_type,
        id,
        at,
        json!({"numClients": humans + 1, "numClientsByRoleName": roles}),
    )
}

#[test]
fn triggers_sharing_a_claim_hold_the_room_once_and_any_stop_reaches_the_holder() {
    let invited = Arc::new(Recorder::default());
    let joined = Arc::new(Recorder::default());
    let on_invite = Rule::new("on-invite", [EventType::AssistantRequested])
        .once_per(OncePer::Room)
        .claim("assistant")
        .action(invited.clone());
    let on_join = Rule::new("on-join", [EventType::RoomClientJoined])
        .once_per(OncePer::Room)
        .claim("assistant")
        .stop_on([EventType::RoomSessionEnded])
        .action(joined.clone());
    let engine = Engine::new(vec![on_invite, on_join]);
    let request = webhook(
        "assistant.requested",
        "r1",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let join = webhook(
        "room.client.joined",
        "j1",
        "2026-11-02T09:00:05Z",
        json!({}),
    );
    let end = webhook(
        "room.session.ended",
        "x1",
        "2026-11-02T10:00:00Z",
        json!({}),
    );

    let d = decide(&engine, &request);
    assert!(d.fired(), "{:?}", names(&d));
    d.dispatch();
    let d = decide(&engine, &join);
    assert_eq!(
        names(&d),
        ["on-join: suppressed (assistant:acme/standup-3f9a2c is already claimed)"]
    );
    // on-join's stop releases the shared claim, and the stop goes to the
    // actions of on-invite, which holds it.
    let d = decide(&engine, &end);
    assert_eq!(
        names(&d),
        ["on-join: stopped (released assistant:acme/standup-3f9a2c)"]
    );
    d.dispatch();
    assert_eq!(
        invited.0.lock().unwrap().as_slice(),
        [
            (ActionKind::Start, "on-invite".into(), "r1".into()),
            (ActionKind::Stop, "on-invite".into(), "x1".into())
        ]
    );
    assert!(joined.0.lock().unwrap().is_empty());
}

#[cfg(feature = "cel")]
#[test]
fn stop_when_stops_at_once_without_stop_after() {
    let recorder = Arc::new(Recorder::default());
    let rule = Rule::new("r", [EventType::RoomClientJoined])
        .once_per(OncePer::Room)
        .stop_when(Arc::new(When::compile("room.numHumans == 0").unwrap()))
        .action(recorder.clone());
    let engine = Engine::new(vec![rule]);
    let now = Instant::now();
    assert!(
        decide_at(
            &engine,
            &counted("room.client.joined", "j1", "2026-11-02T09:00:00Z", 1),
            now
        )
        .fired()
    );
    // Still a human: nothing stops.
    let d = decide_at(
        &engine,
        &counted("room.client.joined", "j2", "2026-11-02T09:00:01Z", 2),
        now,
    );
    assert!(d.released.is_empty(), "{:?}", names(&d));
    let d = decide_at(
        &engine,
        &counted("room.client.left", "l1", "2026-11-02T09:00:02Z", 1),
        now,
    );
    assert!(d.released.is_empty(), "{:?}", names(&d));
    let d = decide_at(
        &engine,
        &counted("room.client.left", "l2", "2026-11-02T09:00:03Z", 0),
        now,
    );
    assert_eq!(names(&d), ["r: stopped (released r:acme/standup-3f9a2c)"]);
    assert_eq!(d.calls.len(), 1);
}

#[cfg(feature = "cel")]
#[test]
fn stop_after_waits_is_cancelled_by_a_rejoin_and_fires_once_when_due() {
    let recorder = Arc::new(Recorder::default());
    let rule = Rule::new("r", [EventType::RoomClientJoined])
        .once_per(OncePer::Room)
        .stop_when(Arc::new(When::compile("room.numHumans == 0").unwrap()))
        .stop_after(Duration::from_secs(30))
        .action(recorder.clone());
    let engine = Engine::new(vec![rule]);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    decide_at(
        &engine,
        &counted("room.client.joined", "j1", "2026-11-02T09:00:00Z", 1),
        at(0),
    )
    .dispatch();

    let d = decide_at(
        &engine,
        &counted("room.client.left", "l1", "2026-11-02T09:00:10Z", 0),
        at(10),
    );
    assert_eq!(
        names(&d),
        ["r: stop in 30s unless cancelled (r:acme/standup-3f9a2c)"]
    );
    assert_eq!(engine.next_due(), Some(at(40)));
    // Someone is back within the grace period: the stop is cancelled, and the
    // running assistant is not started twice.
    let d = decide_at(
        &engine,
        &counted("room.client.joined", "j2", "2026-11-02T09:00:20Z", 1),
        at(20),
    );
    assert_eq!(
        names(&d),
        [
            "r: pending stop cancelled (r:acme/standup-3f9a2c)",
            "r: suppressed (r:acme/standup-3f9a2c is already claimed)"
        ]
    );
    assert_eq!(engine.next_due(), None);
    assert!(engine.fire_due(at(40)).verdicts.is_empty());

    // They leave again; a further event that keeps the condition true does not
    // push the stop back.
    decide_at(
        &engine,
        &counted("room.client.left", "l2", "2026-11-02T09:01:00Z", 0),
        at(60),
    )
    .dispatch();
    let d = decide_at(
        &engine,
        &webhook(
            "room.session.ended",
            "x1",
            "2026-11-02T09:01:20Z",
            json!({}),
        ),
        at(80),
    );
    assert!(d.scheduled.is_empty(), "{:?}", names(&d));
    assert!(engine.fire_due(at(89)).verdicts.is_empty());
    let d = engine.fire_due(at(90));
    assert_eq!(names(&d), ["r: stopped (released r:acme/standup-3f9a2c)"]);
    assert_eq!(d.calls.len(), 1);
    assert_eq!(d.calls[0].delivery_id, "r:l2:stop:recorder");
    d.dispatch();
    assert!(engine.fire_due(at(200)).verdicts.is_empty());
    assert_eq!(engine.claims().live(at(90)), 0);
    assert_eq!(
        recorder.0.lock().unwrap().last(),
        Some(&(ActionKind::Stop, "r".into(), "l2".into()))
    );
}

#[test]
fn a_stop_on_grace_is_cancelled_when_the_rule_matches_again_and_abandon_undoes_it() {
    let rule = Rule::new("r", [EventType::RoomSessionStarted])
        .once_per(OncePer::Room)
        .stop_on([EventType::RoomSessionEnded])
        .stop_after(Duration::from_secs(300))
        .action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    let t0 = Instant::now();
    let start = webhook(
        "room.session.started",
        "s1",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let end = webhook(
        "room.session.ended",
        "x1",
        "2026-11-02T10:00:00Z",
        json!({}),
    );
    let again = webhook(
        "room.session.started",
        "s2",
        "2026-11-02T10:01:00Z",
        json!({}),
    );
    decide_at(&engine, &start, t0).dispatch();
    let d = decide_at(&engine, &end, t0);
    assert_eq!(d.scheduled.len(), 1, "{:?}", names(&d));
    // A commit that failed: the stop was never scheduled.
    d.abandon(engine.claims());
    assert_eq!(engine.next_due(), None);
    decide_at(&engine, &end, t0).dispatch();
    assert_eq!(engine.next_due(), Some(t0 + Duration::from_secs(300)));
    let d = decide_at(&engine, &again, t0 + Duration::from_secs(60));
    assert_eq!(d.cancelled.len(), 1, "{:?}", names(&d));
    d.abandon(engine.claims());
    assert_eq!(engine.next_due(), Some(t0 + Duration::from_secs(300)));
    decide_at(&engine, &again, t0 + Duration::from_secs(60)).dispatch();
    assert_eq!(engine.next_due(), None);
    assert!(
        engine
            .fire_due(t0 + Duration::from_secs(301))
            .verdicts
            .is_empty()
    );
}

#[test]
fn a_start_delivered_after_a_newer_stop_event_does_not_fire() {
    let rule = Rule::new("r", [EventType::RoomSessionStarted])
        .once_per(OncePer::Session)
        .stop_on([EventType::RoomSessionEnded])
        .action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    let end = webhook(
        "room.session.ended",
        "x1",
        "2026-11-02T10:00:00Z",
        json!({"roomSessionId": "s1"}),
    );
    let late = webhook(
        "room.session.started",
        "s1",
        "2026-11-02T09:00:00Z",
        json!({"roomSessionId": "s1"}),
    );
    let next = webhook(
        "room.session.started",
        "s2",
        "2026-11-02T11:00:00Z",
        json!({"roomSessionId": "s2"}),
    );
    assert!(decide(&engine, &end).verdicts.is_empty());
    let d = decide(&engine, &late);
    assert!(!d.fired());
    assert!(
        names(&d)[0].contains("delivered after a newer `room.session.ended`"),
        "{:?}",
        names(&d)
    );
    assert!(decide(&engine, &next).fired());
}

#[test]
fn any_type_can_fire_with_its_room_or_without_one() {
    let recorder = Arc::new(Recorder::default());
    let knocked = Rule::new(
        "doorbell",
        [AnyEventType::Other("room.client.knocked".into())],
    )
    .once_per(OncePer::Room)
    .action(recorder.clone());
    let recorded = Rule::new(
        "archive",
        [AnyEventType::Other("recording.finished".into())],
    )
    .once_per(OncePer::Room)
    .action(recorder.clone());
    let engine = Engine::new(vec![knocked, recorded]);
    let knock = webhook(
        "room.client.knocked",
        "k1",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let d = decide(&engine, &knock);
    assert_eq!(
        names(&d),
        ["doorbell: fired (claimed doorbell:acme/standup-3f9a2c)"]
    );
    assert_eq!(
        d.calls[0]
            .event
            .room
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("acme/standup-3f9a2c")
    );
    let d = decide(&engine, &knock_again(&knock));
    assert!(!d.fired(), "one per room: {:?}", names(&d));

    let raw = Bytes::from_static(
        br#"{"id":"f1","type":"recording.finished","createdAt":"2026-11-02T10:00:00Z","data":{"recordingId":"x"}}"#,
    );
    let event = whereby_webhook::parse(&raw).unwrap();
    let d = engine.decide(&event, &raw, None, Instant::now());
    assert_eq!(names(&d), ["archive: fired (no room, nothing claimed)"]);
    let call = &d.calls[0].event;
    assert_eq!(
        (
            call.room_url.as_deref(),
            call.room.as_ref(),
            call.claim.is_none()
        ),
        (None, None, true)
    );
    assert!(
        String::from_utf8(call.to_json())
            .unwrap()
            .contains(r#""roomUrl":null,"triggerWebhook""#)
    );
}

fn knock_again(knock: &(WebhookEvent, Bytes)) -> (WebhookEvent, Bytes) {
    let mut v: serde_json::Value = serde_json::from_slice(&knock.1).unwrap();
    v["id"] = json!("k2");
    let raw = Bytes::from(v.to_string());
    (whereby_webhook::parse(&raw).unwrap(), raw)
}

#[test]
fn the_action_event_carries_the_room_as_folded() {
    let rule = Rule::new("r", [EventType::RoomClientJoined]).action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    let d = decide(
        &engine,
        &counted("room.client.joined", "j1", "2026-11-02T09:00:00Z", 2),
    );
    let json: serde_json::Value = serde_json::from_slice(&d.calls[0].event.to_json()).unwrap();
    assert_eq!(
        json["room"],
        json!({"numClients": 3, "numClientsByRoleName": {"assistant": 1, "host": 2}, "numHumans": 2, "sessionActive": false})
    );
    assert_eq!(json["roomUrl"], "https://acme.whereby.com/standup-3f9a2c");
}

/// What `stdout`, `forward` and `run` get is one line to every line
/// splitter: U+2028, U+2029 and U+0085 from the payload (in the raw webhook
/// and in a role name of the folded room) are escaped, the JSON unchanged.
#[test]
fn the_action_event_is_one_line_whatever_the_payload_holds() {
    let rule =
        Rule::new("r\u{2029}", [EventType::RoomClientJoined]).action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    let joined = webhook(
        "room.client.joined",
        "j1",
        "2026-11-02T09:00:00Z",
        json!({
            "displayName": "Ada\u{2028}Lovelace\u{85}",
            "numClients": 2,
            "numClientsByRoleName": {"host": 1, "guest\u{2028}": 1},
        }),
    );
    let d = decide(&engine, &joined);
    let line = d.calls[0].event.to_json();
    let text = std::str::from_utf8(&line).unwrap();
    assert!(
        !text.contains(['\u{2028}', '\u{2029}', '\u{85}', '\n', '\r']),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(json["trigger"], "r\u{2029}");
    assert_eq!(
        json["triggerWebhook"]["data"]["displayName"],
        "Ada\u{2028}Lovelace\u{85}"
    );
    assert_eq!(json["room"]["numClientsByRoleName"]["guest\u{2028}"], 1);
}

#[cfg(feature = "cel")]
#[test]
fn a_start_whose_stop_when_already_holds_does_not_fire() {
    let rule = Rule::new("r", [EventType::RoomClientJoined])
        .once_per(OncePer::Room)
        .stop_when(Arc::new(When::compile("room.numHumans == 0").unwrap()))
        .action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    // The leave that emptied the room came first; the join it followed is late.
    let left = counted("room.client.left", "l1", "2026-11-02T09:00:10Z", 0);
    let late_join = counted("room.client.joined", "j1", "2026-11-02T09:00:00Z", 1);
    assert!(decide(&engine, &left).verdicts.is_empty());
    let d = decide(&engine, &late_join);
    assert_eq!(
        names(&d),
        ["r: not matched (delivered after newer room state, on which `stop_when` holds)"]
    );
    let d = decide(
        &engine,
        &counted("room.client.joined", "j2", "2026-11-02T09:00:20Z", 1),
    );
    assert!(d.fired(), "{:?}", names(&d));
}

#[cfg(feature = "cel")]
#[test]
fn an_invitation_in_a_room_not_seen_yet_fires_although_it_counts_no_one() {
    let rule = Rule::new("invited", [EventType::AssistantRequested])
        .once_per(OncePer::Room)
        .stop_when(Arc::new(When::compile("room.numHumans == 0").unwrap()))
        .action(Arc::new(Recorder::default()));
    let engine = Engine::new(vec![rule]);
    let invite = webhook(
        "assistant.requested",
        "r1",
        "2026-11-02T09:00:00Z",
        json!({}),
    );
    let d = decide(&engine, &invite);
    assert!(d.fired(), "{:?}", names(&d));
}
