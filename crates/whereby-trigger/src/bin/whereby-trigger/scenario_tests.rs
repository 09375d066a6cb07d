//! Tests of `scenario.rs`.

use std::collections::HashSet;

use whereby_trigger::webhook::time::parse_rfc3339_millis;
use whereby_trigger::webhook::{WebhookEvent, parse};

use super::*;

fn settings() -> Settings {
    Settings {
        subdomain: None,
        room_name: None,
        start_millis: 1_793_610_003_120, // 2026-11-02T09:00:03.120Z
        step_millis: 1,
        nonce: 42,
    }
}

fn meeting(settings: &Settings) -> Vec<(Webhook, Value)> {
    build(Scenario::Meeting, settings)
        .unwrap()
        .into_iter()
        .map(|w| {
            let v = serde_json::from_slice(&w.body).unwrap();
            (w, v)
        })
        .collect()
}

#[test]
fn the_meeting_happens_in_order() {
    let types: Vec<_> = meeting(&settings())
        .iter()
        .map(|(w, v)| {
            assert_eq!(v["type"], w.event_type);
            w.event_type
        })
        .collect();
    assert_eq!(
        types,
        [
            "room.client.joined",
            "room.client.knocked",
            "room.client.joined",
            "room.session.started",
            "assistant.requested",
            "room.client.left",
            "room.client.left",
            "room.session.ended",
        ]
    );
}

#[test]
fn every_payload_parses_as_its_type_in_one_room() {
    for (webhook, value) in meeting(&settings()) {
        let event = parse(&webhook.body)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", webhook.event_type));
        assert_eq!(event.type_name(), webhook.event_type);
        assert_eq!(event.id(), webhook.id);
        if webhook.event_type != "room.client.knocked" {
            assert!(
                !matches!(event, WebhookEvent::Other(_)),
                "{} parsed as Other",
                webhook.event_type
            );
            let room = event.in_room().expect("an in-room event");
            assert_eq!(room.subdomain(), "acme");
            assert_eq!(room.room_name(), "/standup-3f9a2c");
        }
        assert_eq!(value["data"]["subdomain"], "acme");
        assert_eq!(value["data"]["roomName"], "/standup-3f9a2c");
        assert_eq!(value["apiVersion"], "1.0");
    }
}

#[test]
fn room_overrides_reach_every_event() {
    let settings = Settings {
        subdomain: Some("globex".into()),
        room_name: Some("/board".into()),
        ..settings()
    };
    for (webhook, value) in meeting(&settings) {
        assert_eq!(
            value["data"]["subdomain"], "globex",
            "{}",
            webhook.event_type
        );
        assert_eq!(
            value["data"]["roomName"], "/board",
            "{}",
            webhook.event_type
        );
    }
}

#[test]
fn ids_are_unique_and_fresh_per_nonce() {
    let first: Vec<String> = meeting(&settings())
        .into_iter()
        .map(|(w, _)| w.id)
        .collect();
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), first.len());
    for id in &first {
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let other = Settings {
        nonce: 43,
        ..settings()
    };
    let second: Vec<String> = meeting(&other).into_iter().map(|(w, _)| w.id).collect();
    assert!(first.iter().all(|id| !second.contains(id)));
    // The same nonce builds the same ids: the build is reproducible.
    let again: Vec<String> = meeting(&settings())
        .into_iter()
        .map(|(w, _)| w.id)
        .collect();
    assert_eq!(first, again);
}

#[test]
fn timestamps_strictly_increase_in_scenario_order() {
    for step_millis in [0, 1, 500, 60_000] {
        let settings = Settings {
            step_millis,
            ..settings()
        };
        let times: Vec<i64> = meeting(&settings)
            .iter()
            .map(|(_, v)| parse_rfc3339_millis(v["createdAt"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(times[0], 1_793_610_003_120);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        // And the parsed webhooks agree, which is what the server orders by.
        for (w, _) in meeting(&settings) {
            assert!(parse(&w.body).unwrap().created_at_millis().is_some());
        }
    }
}

#[test]
fn one_fresh_session_id_is_shared_by_the_session() {
    let events = meeting(&settings());
    let session_ids: Vec<&Value> = events
        .iter()
        .map(|(_, v)| &v["data"]["roomSessionId"])
        .collect();
    // Before the session starts there is none.
    assert!(
        session_ids[..3].iter().all(|id| id.is_null()),
        "{session_ids:?}"
    );
    let session = session_ids[3].as_str().expect("session.started has an id");
    assert_eq!(session.len(), 36);
    assert!(session_ids[3..].iter().all(|id| *id == session));
    // Not the sample's: each run is a new session.
    let sample: Value = sample_json("room.session.started").unwrap();
    assert_ne!(sample["data"]["roomSessionId"], session);
    let other = meeting(&Settings {
        nonce: 7,
        ..settings()
    });
    assert_ne!(other[3].1["data"]["roomSessionId"], session);
}

#[test]
fn counts_follow_joins_and_leaves() {
    let mut present: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen_counts = Vec::new();
    for (webhook, value) in meeting(&settings()) {
        let data = &value["data"];
        let delta = match webhook.event_type {
            "room.client.joined" => 1,
            "room.client.left" => -1,
            _ => {
                assert!(data.get("numClients").is_none());
                continue;
            }
        };
        let role = data["roleName"].as_str().unwrap().to_owned();
        *present.entry(role).or_default() += delta;
        present.retain(|_, n| *n != 0);
        let total: i64 = present.values().sum();
        assert_eq!(data["numClients"], total);
        assert_eq!(data["numClientsByRoleName"], json!(present));
        seen_counts.push((total, data["numClientsByRoleName"].clone()));
    }
    assert_eq!(
        seen_counts,
        [
            (1, json!({"host": 1})),
            (2, json!({"host": 1, "visitor": 1})),
            (1, json!({"host": 1})),
            (0, json!({})),
        ]
    );
}

#[test]
fn each_person_keeps_one_name_and_participant_id() {
    let mut by_participant: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (webhook, value) in meeting(&settings()) {
        let data = &value["data"];
        let Some(participant) = data.get("participantId") else {
            continue;
        };
        let entry = (
            data["displayName"].as_str().unwrap().to_owned(),
            data["roleName"].as_str().map(str::to_owned),
        );
        let known = by_participant
            .entry(participant.as_str().unwrap().to_owned())
            .or_insert_with(|| entry.clone());
        assert_eq!(known.0, entry.0, "{}", webhook.event_type);
        if let (Some(a), Some(b)) = (&known.1, &entry.1) {
            assert_eq!(a, b, "{}", webhook.event_type);
        }
    }
    let names: HashSet<&str> = by_participant.values().map(|(n, _)| n.as_str()).collect();
    assert_eq!(by_participant.len(), 2);
    assert_eq!(names, HashSet::from(["Ada Lovelace", "Grace Hopper"]));
}

#[test]
fn uuids_look_like_version_4() {
    let mut rng = SplitMix64::new(1);
    for _ in 0..100 {
        let id = uuid(&mut rng);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
    }
}

#[test]
fn splitmix64_matches_the_reference() {
    // First outputs of the reference C implementation seeded with 0.
    let mut rng = SplitMix64::new(0);
    assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let shuffled = |seed| {
        let mut items: Vec<u32> = (0..50).collect();
        SplitMix64::new(seed).shuffle(&mut items);
        items
    };
    let a = shuffled(7);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_eq!(a, shuffled(7));
    assert_ne!(a, shuffled(8));
    assert_ne!(a, sorted);
    // Nothing to do for tiny inputs, and no panic.
    let mut one = [1];
    SplitMix64::new(0).shuffle(&mut one);
    SplitMix64::new(0).shuffle::<u8>(&mut []);
}

#[test]
fn below_is_in_range_and_reaches_every_value() {
    let mut rng = SplitMix64::new(3);
    let mut seen = [false; 6];
    for _ in 0..1000 {
        let x = rng.below(6);
        seen[usize::try_from(x).unwrap()] = true;
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(rng.below(1), 0);
}

#[test]
fn delivery_order_duplicates_then_shuffles() {
    assert_eq!(delivery_order(3, 0, None), [0, 1, 2]);
    assert_eq!(delivery_order(3, 2, None), [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let shuffled = delivery_order(8, 1, Some(7));
    assert_eq!(shuffled, delivery_order(8, 1, Some(7)));
    let mut sorted = shuffled.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, delivery_order(8, 1, None));
    assert_ne!(shuffled, sorted);
}
