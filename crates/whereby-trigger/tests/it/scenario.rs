//! End-to-end: `send --scenario meeting` against the real `serve`, over loopback.

use std::collections::{BTreeMap, HashSet};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::binary::{Delivery, Server, command, deliveries, send, text};
use serde_json::Value;

const SECRET: &str = "whsec_test_scenario_51c0d7";

/// The server every test plays the meeting against: it fires on three types.
const SERVE: [&str; 8] = [
    "--secret",
    SECRET,
    "--on",
    "room.session.started",
    "--on",
    "assistant.requested",
    "--on",
    "room.client.joined",
];

/// The meeting in scenario order, with what that server answers to each event.
const MEETING: [(&str, &str); 8] = [
    ("room.client.joined", "triggered"),
    ("room.client.knocked", "ignored"),
    ("room.client.joined", "triggered"),
    ("room.session.started", "triggered"),
    ("assistant.requested", "triggered"),
    ("room.client.left", "not_matched"),
    ("room.client.left", "not_matched"),
    ("room.session.ended", "not_matched"),
];

/// How many of [`MEETING`]'s events fire, i.e. JSON lines on serve's stdout.
const FIRED: usize = 4;

// ---------------------------------------------------------------------------
// Playing the meeting.

fn play(server: &Server, extra: &[&str]) -> (Output, Vec<Delivery>) {
    let to = server.url();
    let mut args = vec!["--scenario", "meeting", "--to", &to, "--secret", SECRET];
    args.extend_from_slice(extra);
    // Unpaced unless a test asks for a pace: the tests need speed, not a
    // meeting's rhythm.
    if !extra.contains(&"--pace") {
        args.extend(["--pace", "0"]);
    }
    let out = send(&args);
    let lines = deliveries(&out);
    (out, lines)
}

/// The webhook's type and full id of a line of serve's stdout.
fn fired(line: &Value) -> (&str, &str) {
    let webhook = &line["triggerWebhook"];
    (
        webhook["type"].as_str().unwrap(),
        webhook["id"].as_str().unwrap(),
    )
}

// ---------------------------------------------------------------------------

#[test]
fn the_meeting_plays_in_order_and_fires_what_the_server_asks_for() {
    let server = Server::start(&SERVE);
    let (out, lines) = play(&server, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let got: Vec<(&str, String)> = lines
        .iter()
        .map(|d| {
            assert_eq!(d.status, 200, "{d:?}");
            (d.event_type.as_str(), d.outcome())
        })
        .collect();
    let want: Vec<(&str, String)> = MEETING.iter().map(|(t, o)| (*t, o.to_string())).collect();
    assert_eq!(got, want);
    let ids: HashSet<&str> = lines.iter().map(|d| d.short_id.as_str()).collect();
    assert_eq!(ids.len(), MEETING.len(), "every event has its own id");

    let events = server.stop().events();
    let types: Vec<&str> = events.iter().map(|e| fired(e).0).collect();
    assert_eq!(
        types,
        [
            "room.client.joined",
            "room.client.joined",
            "room.session.started",
            "assistant.requested",
        ]
    );
    // The fired events are the ones `send` reported triggered, in that order.
    let triggered: Vec<&Delivery> = lines
        .iter()
        .filter(|d| d.outcome() == "triggered")
        .collect();
    for (event, delivery) in events.iter().zip(&triggered) {
        assert!(fired(event).1.starts_with(&delivery.short_id));
        assert_eq!(event["roomUrl"], "https://acme.whereby.com/standup-3f9a2c");
    }
    // One room, the counts of a host and then a visitor joining, one session.
    let data: Vec<&Value> = events
        .iter()
        .map(|e| &e["triggerWebhook"]["data"])
        .collect();
    assert_eq!(data[0]["numClients"], 1);
    assert_eq!(data[0]["roleName"], "host");
    assert_eq!(data[1]["numClients"], 2);
    assert_eq!(data[1]["numClientsByRoleName"]["visitor"], 1);
    assert_ne!(data[0]["participantId"], data[1]["participantId"]);
    assert!(data[2]["roomSessionId"].is_string());
    assert_eq!(data[2]["roomSessionId"], data[3]["roomSessionId"]);
    let created: Vec<&str> = events
        .iter()
        .map(|e| e["triggerWebhook"]["createdAt"].as_str().unwrap())
        .collect();
    // Same format and width throughout, so string order is time order.
    assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");
}

#[test]
fn duplicates_are_answered_duplicate_and_fire_nothing_more() {
    let server = Server::start(&SERVE);
    let (out, lines) = play(&server, &["--duplicate", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lines.len(), 2 * MEETING.len(), "{}", text(&out.stdout));
    for (pair, (event_type, outcome)) in lines.chunks(2).zip(MEETING) {
        let [first, copy] = pair else { unreachable!() };
        assert_eq!(first.event_type, event_type);
        assert_eq!(copy.event_type, event_type);
        assert_eq!(first.short_id, copy.short_id, "a copy keeps the id");
        assert_eq!(first.outcome(), outcome);
        assert_eq!(copy.outcome(), "duplicate");
    }
    assert_eq!(server.stop().events().len(), FIRED);
}

#[test]
fn a_seeded_shuffle_delivers_every_event_once_and_repeats_its_order() {
    let server = Server::start(&SERVE);
    let (out, first) = play(&server, &["--shuffle", "--seed", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("seed 7"),
        "{}",
        text(&out.stderr)
    );

    let count = |lines: &[Delivery]| {
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        for d in lines {
            *types.entry(d.event_type.clone()).or_default() += 1;
        }
        types
    };
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (event_type, _) in MEETING {
        *expected.entry(event_type.to_owned()).or_default() += 1;
    }
    assert_eq!(count(&first), expected);
    let ids: HashSet<&str> = first.iter().map(|d| d.short_id.as_str()).collect();
    assert_eq!(ids.len(), MEETING.len(), "each event exactly once");
    assert!(first.iter().all(|d| d.outcome() != "duplicate"));
    let order: Vec<&str> = first.iter().map(|d| d.event_type.as_str()).collect();
    let scenario_order: Vec<&str> = MEETING.iter().map(|(t, _)| *t).collect();
    assert_ne!(order, scenario_order, "seed 7 changes the order");

    // The same seed gives the same order; the ids are fresh, so nothing is a
    // duplicate of the first run.
    let (out, again) = play(&server, &["--shuffle", "--seed", "7"]);
    assert_eq!(out.status.code(), Some(0));
    let again_order: Vec<&str> = again.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(again_order, order);
    assert!(again.iter().all(|d| !ids.contains(d.short_id.as_str())));

    // Which events fire does not depend on the order they arrive in.
    assert_eq!(server.stop().events().len(), 2 * FIRED);
}

#[test]
fn a_shuffle_without_a_seed_prints_the_one_it_used() {
    let server = Server::start(&SERVE);
    let (out, lines) = play(&server, &["--shuffle"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lines.len(), MEETING.len());
    let stderr = text(&out.stderr);
    let seed = stderr
        .split("--seed ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no seed on stderr: {stderr}"));
    // Replaying with it gives the same order.
    let (_, replay) = play(&server, &["--shuffle", "--seed", seed]);
    let types = |lines: &[Delivery]| {
        lines
            .iter()
            .map(|d| d.event_type.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&replay), types(&lines));
}

#[test]
fn the_scenario_is_paced_like_a_meeting_by_default() {
    let server = Server::start(&SERVE);
    let to = server.url();
    let started = Instant::now();
    let out = send(&["--scenario", "meeting", "--to", &to, "--secret", SECRET]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(deliveries(&out).len(), MEETING.len());
    // Seven waits of 300 ms between eight sends: a lower bound only.
    assert!(started.elapsed() >= Duration::from_millis(7 * 300));
}

#[test]
fn pace_and_room_overrides_apply_to_every_delivery() {
    let server = Server::start(&SERVE);
    let started = Instant::now();
    let (out, lines) = play(
        &server,
        &[
            "--pace",
            "30ms",
            "--subdomain",
            "globex",
            "--room-name",
            "/board",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(lines.len(), MEETING.len());
    // Seven waits between eight sends: a lower bound, so no flakiness.
    assert!(started.elapsed() >= Duration::from_millis(7 * 30));
    let events = server.stop().events();
    assert_eq!(events.len(), FIRED);
    assert!(
        events
            .iter()
            .all(|e| e["roomUrl"] == "https://globex.whereby.com/board")
    );
}

#[test]
fn any_answer_that_is_not_2xx_makes_the_exit_code_1() {
    let server = Server::start(&SERVE);
    let to = server.url();
    let wrong = send(&[
        "--scenario",
        "meeting",
        "--to",
        &to,
        "--secret",
        "not-the-secret",
        "--pace",
        "0",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    let lines = deliveries(&wrong);
    assert_eq!(lines.len(), MEETING.len(), "every delivery is still tried");
    assert!(lines.iter().all(|d| d.status == 401));
    assert!(lines.iter().all(|d| d.body.contains("signature_mismatch")));

    // --timestamp signs every delivery with it: all stale.
    let (stale, lines) = play(&server, &["--timestamp", "1000"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(lines.iter().all(|d| d.body.contains("signature_stale")));

    // --unsigned wins over the secret, for every delivery.
    let (unsigned, lines) = play(&server, &["--unsigned"]);
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(lines.iter().all(|d| d.body.contains("signature_missing")));

    assert_eq!(
        server.stop().events().len(),
        0,
        "nothing verified, nothing fired"
    );
}

#[test]
fn the_scenario_also_plays_unsigned_to_a_server_that_allows_it() {
    let server = Server::start(&["--allow-unsigned", "--on", "assistant.requested"]);
    let out = send(&[
        "--scenario",
        "meeting",
        "--to",
        &server.url(),
        "--pace",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unsigned"));
    let events = server.stop().events();
    assert_eq!(events.len(), 1);
    assert_eq!(fired(&events[0]).0, "assistant.requested");
}

#[test]
fn scenario_flags_are_checked_by_clap() {
    let run = |args: &[&str]| command().arg("send").args(args).output().unwrap();
    for args in [
        &["room.client.joined", "--scenario", "meeting"][..],
        &["--file", "x.json", "--scenario", "meeting"],
        &["--scenario", "meeting", "--id", "e1"],
        &["--scenario", "meeting", "--set", "numClients=3"],
        &["room.client.joined", "--duplicate", "1"],
        &["room.client.joined", "--shuffle"],
        &["room.client.joined", "--pace", "1s"],
        &["--scenario", "meeting", "--seed", "7"],
        &["--scenario", "meeting", "--pace", "soon"],
        &["--scenario", "standup"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        assert!(text(&out.stdout).is_empty(), "{args:?} sent something");
        // clap's own usage error, not a failed delivery to the default --to.
        assert!(
            text(&out.stderr).contains("try '--help'"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let help = text(&run(&["--help"]).stdout);
    for expected in [
        "--scenario",
        "meeting",
        "--duplicate",
        "--shuffle",
        "--seed",
        "--pace",
        "[default: 300ms]",
    ] {
        assert!(
            help.contains(expected),
            "send --help lacks {expected}:\n{help}"
        );
    }
}
