//! End-to-end: how assistants end and share rooms, against the real
//! `whereby-trigger` binary — `stop_when` with `stop_after` (the stop fires,
//! is cancelled, survives a restart), `stop_on` with `stop_after`, a `claim`
//! shared by two triggers, triggers on any event type (`forward`, `stdout`,
//! `run` without a room), a start delivered after a newer stop event, the
//! room's state in the action event, what `check` says of the new keys, and
//! the README's worked example (one assistant per visit).
//!
//! Everything is on loopback, as in `rules_e2e`: the server listens on
//! `127.0.0.1:0`, `forward` goes to `common::receiver`, and `run` starts
//! `tests/scripts/e2e_assistant.py`, which records its pid, arguments,
//! environment and stdin in a directory of the test's own and writes a marker
//! when it gets SIGTERM. Webhooks are the samples with fields edited, each
//! given its own `createdAt` (later events later), signed and posted by the
//! test itself. No test sleeps to synchronise: every wait is for a log line,
//! a file, a request or an exit, polled and bounded by `common::binary::WAIT`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::{Value, json};

use crate::common::binary::{Server, loopback_command, poll, text};
use crate::common::fixture::{
    E2E_ASSISTANT as ASSISTANT, TempDir, run_table, run_table_with, started_in, term_marker,
    toml_str as q, wait_started,
};
use crate::common::receiver::Receiver;
use crate::common::{Reply, post_signed_blocking, sample_with};

/// The signing secret, given to the config as `${E2E_SECRET}`.
const SECRET: &str = "whsec_e2e_assistants_3c8e51a7d0";

const VERIFY: &str = "[verify]\nsecrets = [\"${E2E_SECRET}\"]\n";

/// The samples' room.
const ROOM: &str = "/standup-3f9a2c";
/// Its URL.
const ROOM_URL: &str = "https://acme.whereby.com/standup-3f9a2c";

// ---------------------------------------------------------------------------
// The binary.

/// The binary with the config's secret set, and no proxy for `forward`.
fn command() -> Command {
    let mut cmd = loopback_command();
    cmd.env("E2E_SECRET", SECRET);
    cmd
}

/// `serve --config config` with `extra` flags (in memory unless `extra` has
/// `--data-dir`).
fn serve(config: &Path, extra: &[&str]) -> Server {
    let mut args = vec![OsStr::new("--config"), config.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    Server::start_from(command(), args)
}

fn check(config: &Path) -> Output {
    command()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run check")
}

// ---------------------------------------------------------------------------
// Webhooks.

/// `createdAt` of an event `second` seconds after 10:00 on the samples' day.
fn at(second: u32) -> String {
    format!(
        "2026-11-02T{:02}:{:02}:{:02}.000Z",
        10 + second / 3600,
        second / 60 % 60,
        second % 60
    )
}

/// The sample of `event_type` with `id`, created at [`at`]`(second)`, and its
/// `data` changed by `data`'s fields (a field set to `null` is removed).
fn webhook(event_type: &str, id: &str, second: u32, data: Value) -> String {
    sample_with(event_type, |v| {
        v["id"] = Value::from(id);
        v["createdAt"] = Value::from(at(second));
        let Value::Object(fields) = data else {
            panic!("data edits are an object: {data}");
        };
        let target = v["data"].as_object_mut().expect("samples have data");
        for (field, value) in fields {
            if value.is_null() {
                target.remove(&field);
            } else {
                target.insert(field, value);
            }
        }
    })
}

/// A `room.client.joined` or `room.client.left` of a client of `role` in
/// `room`, after which the room holds `by_role` (and as many clients in all).
fn client(
    event_type: &str,
    id: &str,
    second: u32,
    room: &str,
    role: &str,
    by_role: Value,
) -> String {
    let clients: u64 = by_role
        .as_object()
        .expect("clients by role are an object")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    webhook(
        event_type,
        id,
        second,
        json!({
            "roomName": room,
            "roleName": role,
            "numClients": clients,
            "numClientsByRoleName": by_role,
        }),
    )
}

/// POSTs `body`, signed, to `server`; the answer must be a 200 with JSON.
fn post(server: &Server, body: &str) -> Reply {
    let reply = post_signed_blocking(server.addr, SECRET, body);
    assert_eq!(reply.status.as_u16(), 200, "answer: {}", reply.body);
    reply
}

/// POSTs `body` and returns the answer's `outcome`.
fn outcome(server: &Server, body: &str) -> String {
    post(server, body).json()["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for a line of serve's log (from index `from`) containing every one
/// of `needles`; returns its index and the line.
fn log_line(server: &Server, from: usize, needles: &[&str]) -> (usize, String) {
    let has = |line: &str| needles.iter().all(|n| line.contains(n));
    let line = server
        .stderr
        .wait_line(&format!("a log line with {needles:?}"), from, has);
    let index = server
        .stderr
        .snapshot()
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| has(l))
        .map(|(i, _)| i)
        .expect("found above");
    (index, line)
}

/// Serve's stdout lines so far, each a JSON action event.
fn stdout_events(server: &Server) -> Vec<Value> {
    server
        .stdout
        .snapshot()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("stdout line is not JSON: {l}")))
        .collect()
}

/// A trigger `notes` starting an assistant per room when a host joins,
/// stopped (`stop_after` later, if given) once the room has no human left;
/// `extra` adds lines.
fn notes_config(procs: &Path, stop_after: Option<&str>, extra: &str) -> String {
    let stop_after =
        stop_after.map_or_else(String::new, |after| format!("stop_after = {}", q(after)));
    format!(
        r#"{VERIFY}
[[trigger]]
name = "notes"
on = ["room.client.joined"]
when = 'data.roleName == "host"'
once_per = "room"
stop_when = 'room.numHumans == 0'
{stop_after}
{run}
{extra}
"#,
        run = run_table(procs, "term", ""),
    )
}

/// The claim `notes` holds in the samples' room.
const NOTES_CLAIM: &str = "notes:acme/standup-3f9a2c";

// ===========================================================================
// 1. stop_when and stop_after

#[test]
fn stop_when_without_stop_after_stops_the_assistant_at_once() {
    let dir = TempDir::new("stop-when");
    let procs = dir.sub("procs");
    let config = dir.write("whereby-trigger.toml", &notes_config(&procs, None, ""));
    let server = serve(&config, &[]);

    let host = client(
        "room.client.joined",
        "j-host",
        1,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &host), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();

    // A visitor comes and goes: a human is left, nothing stops.
    let visitor = client(
        "room.client.joined",
        "j-visitor",
        2,
        ROOM,
        "visitor",
        json!({"host": 1, "visitor": 1}),
    );
    assert_eq!(outcome(&server, &visitor), "not_matched");
    let gone = client(
        "room.client.left",
        "l-visitor",
        3,
        ROOM,
        "visitor",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &gone), "not_matched");

    // The host leaves, only a recorder stays: stopped with the leave.
    let left = client(
        "room.client.left",
        "l-host",
        4,
        ROOM,
        "host",
        json!({"recorder": 1}),
    );
    assert_eq!(outcome(&server, &left), "stopped");
    let (_, line) = log_line(
        &server,
        0,
        &[&format!("notes: stopped (released {NOTES_CLAIM})")],
    );
    assert!(line.contains("l-host"), "the leave stopped it: {line}");
    assert!(!line.contains("stop_after passed"), "{line}");
    ASSISTANT.wait_terminated(&procs, assistant.pid);
    let stopped = server.stop();
    let stops: Vec<&String> = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("notes: stopped"))
        .collect();
    assert_eq!(stops.len(), 1, "{stops:#?}");
}

#[test]
fn stop_after_stops_the_assistant_once_the_room_has_no_human_left() {
    let dir = TempDir::new("stop-after-fires");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &notes_config(&procs, Some("1s"), "stdout = true"),
    );
    let server = serve(&config, &[]);

    let host = client(
        "room.client.joined",
        "j-host",
        1,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &host), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();
    assert!(ASSISTANT.alive(assistant.pid));

    // The host leaves: nobody is left, the stop waits its second.
    let left = client("room.client.left", "l-host", 2, ROOM, "host", json!({}));
    assert_eq!(outcome(&server, &left), "not_matched");
    let (scheduled, line) = log_line(
        &server,
        0,
        &[&format!(
            "notes: stop in 1s unless cancelled ({NOTES_CLAIM})"
        )],
    );
    assert!(line.contains("l-host"), "{line}");

    // The server's timer fires it: the assistant gets SIGTERM.
    let (fired, line) = log_line(
        &server,
        scheduled,
        &[&format!(
            "notes: stopped (released {NOTES_CLAIM}) (stop_after passed)"
        )],
    );
    assert!(fired > scheduled, "{line}");
    ASSISTANT.wait_terminated(&procs, assistant.pid);

    // The stop event is the leave's, with the room as it was after it.
    let events = server
        .stdout
        .wait_until("the start and the stop on stdout", |l| l.len() >= 2);
    assert_eq!(events.len(), 2, "{events:#?}");
    let stop: Value = serde_json::from_str(&events[1]).expect("JSON");
    assert_eq!(stop["action"], "stop", "{stop}");
    assert_eq!(stop["trigger"], "notes", "{stop}");
    assert_eq!(stop["roomUrl"], ROOM_URL, "{stop}");
    assert_eq!(stop["triggerWebhook"]["id"], "l-host", "{stop}");
    assert_eq!(stop["room"]["numHumans"], 0, "{stop}");
    assert_eq!(stop["room"]["numClients"], 0, "{stop}");

    // The claim was released: the host's return starts a new assistant.
    let back = client(
        "room.client.joined",
        "j-back",
        3,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &back), "triggered");
    let both = wait_started(&procs, 2);
    assert_eq!(both.len(), 2, "{both:#?}");
    let second = both
        .iter()
        .find(|s| s.pid != assistant.pid)
        .expect("a second");
    assert_eq!(
        second.env.get("WHEREBY_EVENT_ID").map(String::as_str),
        Some("j-back")
    );
    let stopped = server.stop();
    assert_eq!(
        stopped
            .stderr
            .iter()
            .filter(|l| l.contains("(stop_after passed)"))
            .count(),
        1,
        "the stop fired once: {:#?}",
        stopped.stderr
    );
}

#[test]
fn a_human_rejoining_cancels_the_pending_stop_and_the_assistant_keeps_running() {
    let dir = TempDir::new("stop-after-cancelled");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &notes_config(&procs, Some("30s"), ""),
    );
    let server = serve(&config, &[]);

    let host = client(
        "room.client.joined",
        "j-host",
        1,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &host), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();
    // The assistant itself joins: one human still.
    let own = client(
        "room.client.joined",
        "j-assistant",
        2,
        ROOM,
        "assistant",
        json!({"host": 1, "assistant": 1}),
    );
    assert_eq!(outcome(&server, &own), "not_matched");

    // The host leaves; the assistant is not a human: the stop is scheduled.
    let left = client(
        "room.client.left",
        "l-host",
        3,
        ROOM,
        "host",
        json!({"assistant": 1}),
    );
    assert_eq!(outcome(&server, &left), "not_matched");
    let (scheduled, _) = log_line(
        &server,
        0,
        &[&format!(
            "notes: stop in 30s unless cancelled ({NOTES_CLAIM})"
        )],
    );

    // The host comes back before the 30 s: the stop is cancelled, and the
    // join is suppressed by the claim the running assistant still holds.
    let back = client(
        "room.client.joined",
        "j-back",
        4,
        ROOM,
        "host",
        json!({"host": 1, "assistant": 1}),
    );
    assert_eq!(outcome(&server, &back), "suppressed");
    let (cancelled, line) = log_line(
        &server,
        scheduled,
        &[&format!("notes: pending stop cancelled ({NOTES_CLAIM})")],
    );
    assert!(line.contains("j-back"), "{line}");
    log_line(
        &server,
        cancelled,
        &[&format!(
            "notes: suppressed ({NOTES_CLAIM} is already claimed)"
        )],
    );
    assert!(ASSISTANT.alive(assistant.pid));
    assert!(!term_marker(&procs, assistant.pid).exists());
    assert_eq!(started_in(&procs).len(), 1);

    // Only the shutdown stops it; no timer ever did.
    let stopped = server.stop();
    ASSISTANT.wait_gone(assistant.pid);
    assert!(term_marker(&procs, assistant.pid).exists());
    assert!(
        !stopped
            .stderr
            .iter()
            .any(|l| l.contains("stop_after passed")),
        "{:#?}",
        stopped.stderr
    );
}

#[test]
fn stop_after_on_a_stop_on_event_is_cancelled_by_a_new_start_of_the_trigger() {
    let dir = TempDir::new("stop-on-after");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "scribe"
on = ["room.session.started"]
once_per = "room"
stop_on = ["room.session.ended"]
stop_after = "30s"
{}
"#,
            run_table(&procs, "term", "")
        ),
    );
    let server = serve(&config, &[]);
    let claim = "scribe:acme/standup-3f9a2c";

    let started = webhook("room.session.started", "s-1", 1, json!({}));
    assert_eq!(outcome(&server, &started), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();

    let ended = webhook("room.session.ended", "e-1", 2, json!({}));
    assert_eq!(outcome(&server, &ended), "not_matched");
    let (scheduled, _) = log_line(
        &server,
        0,
        &[&format!("scribe: stop in 30s unless cancelled ({claim})")],
    );

    // The session starts again (newer than the end): the stop is off, and
    // the start is suppressed by the claim of the assistant still running.
    let again = webhook("room.session.started", "s-2", 3, json!({}));
    assert_eq!(outcome(&server, &again), "suppressed");
    let (_, line) = log_line(
        &server,
        scheduled,
        &[&format!("scribe: pending stop cancelled ({claim})")],
    );
    assert!(line.contains("s-2"), "{line}");
    assert!(ASSISTANT.alive(assistant.pid));
    assert!(!term_marker(&procs, assistant.pid).exists());
    assert_eq!(started_in(&procs).len(), 1);
    drop(server.stop());
}

/// `stop_after` is 6 s: a margin of a thousand times the time a stop and a
/// restart take here (about 60 ms), so that the stop is still pending when the
/// second server starts; the asserts below say so if it ever was not.
#[test]
fn a_pending_stop_survives_a_restart_and_stops_the_resumed_assistant() {
    let dir = TempDir::new("stop-after-restart");
    let procs = dir.sub("procs");
    let data = dir.sub("data");
    let data = data.to_str().expect("a UTF-8 path");
    let config = dir.write(
        "whereby-trigger.toml",
        &notes_config(&procs, Some("6s"), ""),
    );

    let first = serve(&config, &["--data-dir", data]);
    let host = client(
        "room.client.joined",
        "j-host",
        1,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&first, &host), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();
    let left = client("room.client.left", "l-host", 2, ROOM, "host", json!({}));
    let left_at = Instant::now();
    assert_eq!(outcome(&first, &left), "not_matched");
    log_line(
        &first,
        0,
        &[&format!(
            "notes: stop in 6s unless cancelled ({NOTES_CLAIM})"
        )],
    );

    // The shutdown stops the assistant; its start stays pending, the claim
    // and its pending stop stay in the store.
    let stopped = first.stop();
    assert!(term_marker(&procs, assistant.pid).exists());
    ASSISTANT.wait_gone(assistant.pid);
    assert!(
        !stopped
            .stderr
            .iter()
            .any(|l| l.contains("stop_after passed")),
        "the stop fired before the restart: {:#?}",
        stopped.stderr
    );

    // At restart the start is resumed while its claim holds, then the stop
    // fires when due and stops the resumed assistant.
    let second = serve(&config, &["--data-dir", data]);
    let fired = format!("notes: stopped (released {NOTES_CLAIM}) (stop_after passed)");
    let resumed = poll("the assistant resumed (or the stop fired first)", || {
        if let Some(resumed) = started_in(&procs)
            .into_iter()
            .find(|s| s.pid != assistant.pid)
        {
            return Some(resumed);
        }
        let log = second.stderr.snapshot();
        assert!(
            !log.iter().any(|l| l.contains(&fired)),
            "the stop fired before the start was resumed: the restart took {:?} of \
             stop_after's 6 s, too long to see the resume:\n{}",
            left_at.elapsed(),
            log.join("\n")
        );
        None
    });
    assert_eq!(
        resumed.env.get("WHEREBY_EVENT_ID").map(String::as_str),
        Some("j-host"),
        "{resumed:#?}"
    );
    // The same event as the first time, the room's state included: it was
    // stored with the queued start.
    assert_eq!(resumed.stdin, assistant.stdin);
    assert!(
        resumed.stdin.contains(
            r#""room":{"numClients":1,"numClientsByRoleName":{"host":1},"numHumans":1,"sessionActive":false}"#
        ),
        "{}",
        resumed.stdin
    );
    let resuming = log_line(&second, 0, &["resuming a pending delivery"]).0;
    log_line(&second, resuming + 1, &[&fired]);
    ASSISTANT.wait_terminated(&procs, resumed.pid);

    // The room is free again.
    let back = client(
        "room.client.joined",
        "j-back",
        3,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&second, &back), "triggered");
    wait_started(&procs, 3);
    drop(second.stop());
}

// ===========================================================================
// 2. A claim shared by two triggers

/// `on-invite` (an assistant when one is requested) and `on-visit` (an
/// assistant when someone joins a `/visit-` room, stopped when the session
/// ends) share the claim `assistant`, once per room.
/// `visit_extra` adds keys to on-visit.
fn shared_claim_config(procs: &Path, visit_once_per: &str, visit_extra: &str) -> String {
    format!(
        r#"{VERIFY}
[[trigger]]
name = "on-invite"
on = ["assistant.requested"]
once_per = "room"
claim = "assistant"
{run}

[[trigger]]
name = "on-visit"
on = ["room.client.joined"]
when = 'data.roomName.startsWith("/visit-")'
once_per = {visit_once_per}
claim = "assistant"
stop_on = ["room.session.ended"]
{visit_extra}
{run}
"#,
        run = run_table(procs, "term", ""),
        visit_once_per = q(visit_once_per),
    )
}

#[test]
fn two_triggers_sharing_a_claim_start_one_assistant_per_room() {
    let dir = TempDir::new("shared-claim");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &shared_claim_config(&procs, "room", ""),
    );
    let server = serve(&config, &[]);

    // Invited into /visit-7: one assistant, of on-invite.
    let invite = webhook(
        "assistant.requested",
        "r-7",
        1,
        json!({"roomName": "/visit-7"}),
    );
    assert_eq!(outcome(&server, &invite), "triggered");
    let invited = wait_started(&procs, 1)[0].clone();
    assert_eq!(
        invited.env.get("WHEREBY_TRIGGER").map(String::as_str),
        Some("on-invite")
    );

    // Someone joins /visit-7: on-visit matches, but the room is claimed.
    let join = client(
        "room.client.joined",
        "j-7",
        2,
        "/visit-7",
        "visitor",
        json!({"visitor": 1}),
    );
    assert_eq!(outcome(&server, &join), "suppressed");
    let (_, line) = log_line(
        &server,
        0,
        &["on-visit: suppressed (assistant:acme/visit-7 is already claimed)"],
    );
    assert!(line.contains("j-7"), "{line}");

    // A join in another visit room is on-visit's own: a second assistant.
    let other = client(
        "room.client.joined",
        "j-8",
        3,
        "/visit-8",
        "visitor",
        json!({"visitor": 1}),
    );
    assert_eq!(outcome(&server, &other), "triggered");
    let both = wait_started(&procs, 2);
    assert_eq!(both.len(), 2, "{both:#?}");
    let visiting = both
        .iter()
        .find(|s| s.pid != invited.pid)
        .expect("on-visit's assistant")
        .clone();
    assert_eq!(
        visiting.env.get("WHEREBY_ROOM_NAME").map(String::as_str),
        Some("/visit-8")
    );
    let in_room = |room: &str| {
        started_in(&procs)
            .iter()
            .filter(|s| s.env.get("WHEREBY_ROOM_NAME").map(String::as_str) == Some(room))
            .count()
    };
    assert_eq!(in_room("/visit-7"), 1, "exactly one assistant in /visit-7");

    // on-visit's stop_on ends /visit-7's session: the shared claim is
    // released and the stop goes to on-invite, which holds it.
    let ended = webhook(
        "room.session.ended",
        "e-7",
        4,
        json!({"roomName": "/visit-7"}),
    );
    post(&server, &ended);
    log_line(
        &server,
        0,
        &["on-visit: stopped (released assistant:acme/visit-7)"],
    );
    ASSISTANT.wait_terminated(&procs, invited.pid);
    assert!(ASSISTANT.alive(visiting.pid), "/visit-8 is not stopped");

    // /visit-7 is free: a later join starts on-visit's assistant there.
    let rejoin = client(
        "room.client.joined",
        "j-7b",
        5,
        "/visit-7",
        "visitor",
        json!({"visitor": 1}),
    );
    assert_eq!(outcome(&server, &rejoin), "triggered");
    let all = wait_started(&procs, 3);
    let third = all
        .iter()
        .find(|s| s.pid != invited.pid && s.pid != visiting.pid)
        .expect("a third assistant");
    assert_eq!(
        third.env.get("WHEREBY_TRIGGER").map(String::as_str),
        Some("on-visit")
    );
    assert_eq!(
        third.env.get("WHEREBY_ROOM_NAME").map(String::as_str),
        Some("/visit-7")
    );
    drop(server.stop());
}

#[test]
fn check_refuses_a_shared_claim_with_another_once_per_and_a_claim_per_event() {
    let dir = TempDir::new("check-claims");
    let procs = dir.sub("procs");

    // on-visit claims per session what on-invite claims per room.
    let config = shared_claim_config(&procs, "session", "");
    let claim_line = config
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("claim = "))
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("on-visit's claim line");
    let path = dir.write("mixed.toml", &config);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for needle in [
        format!("{}:{claim_line}:", path.display()),
        "on-visit".to_owned(),
        "claim".to_owned(),
        "`on-invite`".to_owned(),
        "once_per".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }

    // A claim once per event would share nothing.
    let per_event = dir.write(
        "per-event.toml",
        &format!(
            "{VERIFY}[[trigger]]\nname = \"lonely\"\non = [\"assistant.requested\"]\nclaim = \"assistant\"\nstdout = true\n"
        ),
    );
    let out = check(&per_event);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for needle in [
        format!("{}:6:", per_event.display()),
        "lonely".to_owned(),
        "claim".to_owned(),
        "once_per".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }
}

// ===========================================================================
// 3. Any event type in `on`

#[test]
fn a_knock_is_forwarded_with_its_room() {
    let dir = TempDir::new("knocked");
    let receiver = Receiver::start();
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            "{VERIFY}\n[[trigger]]\nname = \"doorbell\"\non = [\"room.client.knocked\"]\nforward = {{ url = {}, timeout = \"5s\" }}\n",
            q(receiver.url())
        ),
    );
    let server = serve(&config, &[]);
    let knock = webhook(
        "room.client.knocked",
        "k-1",
        1,
        json!({"roomName": "/lobby-2"}),
    );
    post(&server, &knock).assert_outcome("triggered");

    let request = receiver.wait_for(1)[0].clone();
    assert_eq!(request.method, "POST");
    let body = request.json();
    assert_eq!(body["action"], "start", "{body}");
    assert_eq!(body["trigger"], "doorbell", "{body}");
    assert_eq!(
        body["roomUrl"], "https://acme.whereby.com/lobby-2",
        "{body}"
    );
    assert_eq!(body["triggerWebhook"]["id"], "k-1", "{body}");
    assert_eq!(
        body["triggerWebhook"]["type"], "room.client.knocked",
        "{body}"
    );
    assert_eq!(
        body["triggerWebhook"]["data"]["displayName"], "Visitor at the door",
        "{body}"
    );
    assert_eq!(
        body["room"]["numHumans"], 0,
        "no one has joined yet: {body}"
    );
    log_line(&server, 0, &["doorbell: fired", "k-1"]);
    drop(server.stop());
}

#[test]
fn a_recording_without_a_room_fires_with_a_null_room_url_and_no_room_placeholder() {
    let dir = TempDir::new("recording");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "archivist"
on = ["recording.finished"]
stdout = true

[[trigger]]
name = "transcriber"
on = ["recording.finished"]
{with_room}

[[trigger]]
name = "indexer"
on = ["recording.finished"]
{without_room}
"#,
            with_room = run_table(&procs, "term", ""),
            without_room = run_table_with(
                &procs,
                "term",
                &[
                    "{trigger}/{type}",
                    "{data.recordingId}",
                    "status={data.status}",
                    "absent=[{data.nothere}]",
                ],
                ""
            ),
        ),
    );
    let server = serve(&config, &[]);
    // `status` as a number, not the documented string: placeholders render
    // a field as sent, and one that is absent as nothing.
    let recording = webhook(
        "recording.finished",
        "rec-1",
        1,
        json!({"roomName": null, "status": 2}),
    );
    assert!(!recording.contains("roomName"), "{recording}");
    post(&server, &recording).assert_outcome("triggered");

    // stdout: the start, with no room.
    let lines = server
        .stdout
        .wait_until("archivist's line", |l| !l.is_empty());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(r#""roomUrl":null"#), "{}", lines[0]);
    let line: Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(line["action"], "start", "{line}");
    assert_eq!(line["trigger"], "archivist", "{line}");
    assert_eq!(line["triggerWebhook"]["id"], "rec-1", "{line}");
    assert!(line.get("room").is_none(), "no room, no room state: {line}");

    // run: a command that needs {roomUrl} refuses, one that does not starts.
    log_line(
        &server,
        0,
        &[
            "transcriber",
            "the command uses {roomUrl}, and this `recording.finished` webhook has no room",
        ],
    );
    let started = wait_started(&procs, 1);
    assert_eq!(started.len(), 1, "{started:#?}");
    let indexer = &started[0];
    assert_eq!(
        indexer.argv,
        [
            "indexer/recording.finished",
            "rec_81c2",
            "status=2",
            "absent=[]"
        ]
    );
    let stdin: Value = serde_json::from_str(indexer.stdin.trim()).expect("stdin is JSON");
    assert_eq!(stdin["roomUrl"], Value::Null, "{stdin}");
    assert_eq!(stdin["trigger"], "indexer", "{stdin}");

    let stopped = server.stop();
    assert_eq!(
        started_in(&procs).len(),
        1,
        "transcriber never started: {:#?}",
        stopped.stderr
    );
}

#[test]
fn check_warns_of_an_undocumented_type_and_refuses_a_name_that_is_not_a_type() {
    let dir = TempDir::new("check-types");
    let one = |on: &str| {
        format!(
            "{VERIFY}[[trigger]]\nname = \"watcher\"\non = [{}]\nstdout = true\n",
            q(on)
        )
    };

    let path = dir.write("renamed.toml", &one("meeting.renamed"));
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("`meeting.renamed`"))
        .unwrap_or_else(|| panic!("no warning names meeting.renamed:\n{stderr}"));
    for needle in ["warning", "watcher", &format!("{}:", path.display())] {
        assert!(warning.contains(needle), "no {needle:?} in {warning}");
    }
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("on meeting.renamed"), "{stdout}");

    // A documented type that is not evaluated draws no warning.
    let path = dir.write("knocked.toml", &one("room.client.knocked"));
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    let path = dir.write("nonsense.toml", &one("nonsense"));
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for needle in [
        format!("{}:5:", path.display()),
        "watcher".to_owned(),
        "`nonsense`".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }
}

#[test]
fn check_warns_when_a_run_command_needs_a_room_a_type_may_not_carry() {
    let dir = TempDir::new("check-room-url");
    let with = |command: &str| {
        format!(
            "{VERIFY}[[trigger]]\nname = \"notes\"\non = [\"room.client.joined\", \"recording.finished\"]\nrun = {{ command = {command} }}\n"
        )
    };

    let path = dir.write("room-url.toml", &with(r#"["notes", "{roomUrl}"]"#));
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    for needle in ["`notes`", "`recording.finished`", "{roomUrl}"] {
        assert!(
            warnings[0].contains(needle),
            "no {needle:?} in {}",
            warnings[0]
        );
    }

    // A knock always carries its room.
    let knock =
        with(r#"["notes", "{roomUrl}"]"#).replace("recording.finished", "room.client.knocked");
    let path = dir.write("knock.toml", &knock);
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // A command that does without the room URL starts for every type.
    let path = dir.write(
        "no-room-url.toml",
        &with(r#"["notes", "{data.recordingId}"]"#),
    );
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

// ===========================================================================
// 4. A start delivered after a newer stop event

#[test]
fn a_start_older_than_the_rooms_stop_event_does_not_fire() {
    let dir = TempDir::new("late-start");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "note-taker"
on = ["room.session.started"]
once_per = "session"
stop_on = ["room.session.ended"]
{}
stdout = true
"#,
            run_table(&procs, "term", "")
        ),
    );
    let server = serve(&config, &[]);

    // The end (at T1) arrives before the start (at T0 < T1) of its session.
    let ended = webhook("room.session.ended", "e-1", 100, json!({}));
    post(&server, &ended);
    let late = webhook("room.session.started", "s-late", 50, json!({}));
    assert_eq!(outcome(&server, &late), "not_matched");
    let (_, line) = log_line(&server, 0, &["note-taker: not matched", "s-late"]);
    assert!(
        line.contains("delivered after a newer `room.session.ended`"),
        "{line}"
    );

    // A start after the end fires (the late one claimed nothing: the same
    // session is free).
    let fresh = webhook("room.session.started", "s-new", 150, json!({}));
    assert_eq!(outcome(&server, &fresh), "triggered");
    let started = wait_started(&procs, 1);
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(
        started[0].env.get("WHEREBY_EVENT_ID").map(String::as_str),
        Some("s-new")
    );
    let stopped = server.stop();
    let events = stopped.events();
    let ids: Vec<&Value> = events.iter().map(|e| &e["triggerWebhook"]["id"]).collect();
    assert_eq!(ids, ["s-new"], "{:#?}", stopped.stdout);
    assert_eq!(started_in(&procs).len(), 1);
}

#[test]
fn a_join_delivered_after_the_leave_that_emptied_the_room_does_not_fire() {
    let dir = TempDir::new("late-join");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &notes_config(&procs, Some("30s"), ""),
    );
    let server = serve(&config, &[]);

    // The host joined at T0 and left at T1; the leave is delivered first.
    let left = client("room.client.left", "l-host", 100, ROOM, "host", json!({}));
    assert_eq!(outcome(&server, &left), "not_matched");
    let late = client(
        "room.client.joined",
        "j-late",
        50,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &late), "not_matched");
    let (_, line) = log_line(&server, 0, &["notes: not matched", "j-late"]);
    assert!(line.contains("on which `stop_when` holds"), "{line}");

    // The host's next join, after the leave, fires.
    let again = client(
        "room.client.joined",
        "j-again",
        150,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &again), "triggered");
    let started = wait_started(&procs, 1);
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(
        started[0].env.get("WHEREBY_EVENT_ID").map(String::as_str),
        Some("j-again")
    );
    drop(server.stop());
    assert_eq!(started_in(&procs).len(), 1);
}

// ===========================================================================
// 5. The room's state in the action event

#[test]
fn every_action_gets_the_room_as_folded_after_the_event() {
    let dir = TempDir::new("room-in-event");
    let procs = dir.sub("procs");
    let receiver = Receiver::start();
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "greeter"
on = ["room.client.joined"]
when = 'data.roleName == "host"'
{run}
forward = {{ url = {url}, timeout = "5s" }}
stdout = true
"#,
            run = run_table(&procs, "term", ""),
            url = q(receiver.url()),
        ),
    );
    let server = serve(&config, &[]);

    let started = webhook("room.session.started", "s-1", 1, json!({}));
    assert_eq!(outcome(&server, &started), "not_matched");
    let own = client(
        "room.client.joined",
        "j-assistant",
        2,
        ROOM,
        "assistant",
        json!({"assistant": 1}),
    );
    assert_eq!(outcome(&server, &own), "not_matched");
    let host = client(
        "room.client.joined",
        "j-host",
        3,
        ROOM,
        "host",
        json!({"assistant": 1, "host": 1}),
    );
    assert_eq!(outcome(&server, &host), "triggered");

    let room = r#""room":{"numClients":2,"numClientsByRoleName":{"assistant":1,"host":1},"numHumans":1,"sessionActive":true}"#;
    let expected = json!({
        "numClients": 2,
        "numClientsByRoleName": {"assistant": 1, "host": 1},
        "numHumans": 1,
        "sessionActive": true,
    });

    let assistant = wait_started(&procs, 1)[0].clone();
    assert!(
        assistant.stdin.contains(room),
        "run's stdin: {}",
        assistant.stdin
    );
    let stdin: Value = serde_json::from_str(assistant.stdin.trim()).expect("JSON");
    assert_eq!(stdin["room"], expected, "{stdin}");
    assert_eq!(stdin["triggerWebhook"]["id"], "j-host", "{stdin}");

    let request = receiver.wait_for(1)[0].clone();
    let body = String::from_utf8_lossy(&request.body).into_owned();
    assert!(body.contains(room), "forward's body: {body}");
    assert_eq!(request.json()["room"], expected, "{body}");

    let line = server
        .stdout
        .wait_until("the stdout line", |l| !l.is_empty())[0]
        .clone();
    assert!(line.contains(room), "stdout: {line}");
    assert_eq!(stdout_events(&server)[0]["room"], expected, "{line}");
    drop(server.stop());
}

/// Counts are signed integers in CEL, from the room and from the payload
/// alike: `room.numClients - 1` passes `check` and is evaluated as written
/// (an unsigned count made it a run-time error, counted as false).
#[test]
fn counts_take_arithmetic_with_signed_integers() {
    let dir = TempDir::new("signed-counts");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "company"
on = ["room.client.joined"]
when = 'room.numClients - 1 >= 1 && data.numClients - 1 == room.numHumans - 1 && room.numHumans - 3 < 0'
stdout = true
"#
        ),
    );
    let checked = check(&config);
    assert!(
        checked.status.success(),
        "check accepts the arithmetic: {}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );

    let server = serve(&config, &[]);
    let alone = client(
        "room.client.joined",
        "j-1",
        1,
        ROOM,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &alone), "not_matched");
    let second = client(
        "room.client.joined",
        "j-2",
        2,
        ROOM,
        "visitor",
        json!({"host": 1, "visitor": 1}),
    );
    assert_eq!(outcome(&server, &second), "triggered");
    let third = client(
        "room.client.joined",
        "j-3",
        3,
        ROOM,
        "visitor",
        json!({"host": 1, "visitor": 2}),
    );
    assert_eq!(
        outcome(&server, &third),
        "not_matched",
        "3 - 3 < 0 is false"
    );
    let stopped = server.stop();
    assert!(
        !stopped.stderr.iter().any(|l| l.contains("Unsupported")),
        "no evaluation failed: {:#?}",
        stopped.stderr
    );
}

// ===========================================================================
// 6. check shows the new keys

#[test]
fn check_summarises_claim_stop_when_and_stop_after() {
    let dir = TempDir::new("check-new-keys");
    let procs = dir.sub("procs");
    let config = shared_claim_config(
        &procs,
        "room",
        "stop_when = 'room.numHumans == 0'\nstop_after = \"30s\"",
    );
    let path = dir.write("whereby-trigger.toml", &config);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for needle in [
        "claim `assistant`",
        "stop when room.numHumans == 0",
        "stop after 30s",
        "stop on room.session.ended",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    // Both triggers show the claim they share.
    assert_eq!(stdout.matches("claim `assistant`").count(), 2, "{stdout}");
}

// ===========================================================================
// 7. The README's worked example: one assistant per visit

/// The README's `visit.toml`, with the e2e assistant as the program and
/// `stop_after` as given.
fn visit_config(procs: &Path, stop_after: &str) -> String {
    format!(
        r#"{VERIFY}
[[trigger]]
name = "invited"
on = ["assistant.requested"]
once_per = "room"
claim = "visit-assistant"
stop_when = 'room.numHumans == 0'
stop_after = {stop_after}
{run}

[[trigger]]
name = "visit-room"
on = ["room.client.joined"]
when = 'data.roomName.startsWith("/visit-")'
once_per = "room"
claim = "visit-assistant"
stop_when = 'room.numHumans == 0'
stop_after = {stop_after}
{run}
"#,
        stop_after = q(stop_after),
        run = run_table(procs, "term", ", max_running = 4, when_full = \"drop\""),
    )
}

/// The README: "An invitation in `/visit-7` starts the assistant; the joins
/// that follow (the assistant's own included) are suppressed". The
/// invitation is the first webhook of the room the server sees (the host's
/// join may be delivered after it, or not subscribed to at all).
#[test]
fn the_readme_visit_example_starts_on_an_invitation_in_a_room_not_yet_seen() {
    let dir = TempDir::new("readme-visit");
    let procs = dir.sub("procs");
    let config = dir.write("visit.toml", &visit_config(&procs, "30s"));
    let server = serve(&config, &[]);

    let invite = webhook(
        "assistant.requested",
        "r-7",
        1,
        json!({"roomName": "/visit-7"}),
    );
    let answer = outcome(&server, &invite);
    assert_eq!(
        answer,
        "triggered",
        "{}",
        server.stderr.snapshot().join("\n")
    );
    let invited = wait_started(&procs, 1)[0].clone();
    assert_eq!(
        invited.env.get("WHEREBY_TRIGGER").map(String::as_str),
        Some("invited")
    );

    // The joins that follow, the assistant's own included, are suppressed.
    let host = client(
        "room.client.joined",
        "j-host",
        2,
        "/visit-7",
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &host), "suppressed");
    let own = client(
        "room.client.joined",
        "j-assistant",
        3,
        "/visit-7",
        "assistant",
        json!({"host": 1, "assistant": 1}),
    );
    assert_eq!(outcome(&server, &own), "suppressed");
    log_line(
        &server,
        0,
        &["visit-room: suppressed (visit-assistant:acme/visit-7 is already claimed)"],
    );

    // The last person leaves: the stop waits its 30 s.
    let left = client(
        "room.client.left",
        "l-host",
        4,
        "/visit-7",
        "host",
        json!({"assistant": 1}),
    );
    assert_eq!(outcome(&server, &left), "not_matched");
    log_line(
        &server,
        0,
        &["invited: stop in 30s unless cancelled (visit-assistant:acme/visit-7)"],
    );
    assert!(ASSISTANT.alive(invited.pid));
    assert_eq!(started_in(&procs).len(), 1);
    drop(server.stop());
}

/// The README's example when the host's join comes first: `visit-room`
/// starts the assistant, the invitation and the assistant's own join are
/// suppressed by the shared claim, and once the last human has left the
/// stop (here after 1 s) stops the assistant and frees the room.
#[test]
fn the_readme_visit_example_with_the_host_first_stops_after_the_last_human() {
    let dir = TempDir::new("readme-visit-host");
    let procs = dir.sub("procs");
    let config = dir.write("visit.toml", &visit_config(&procs, "1s"));
    let server = serve(&config, &[]);
    let claim = "visit-assistant:acme/visit-7";
    let in_visit = |event_type: &str, id: &str, second: u32, role: &str, by_role: Value| {
        client(event_type, id, second, "/visit-7", role, by_role)
    };

    let host = in_visit(
        "room.client.joined",
        "j-host",
        1,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &host), "triggered");
    let first = wait_started(&procs, 1)[0].clone();
    assert_eq!(
        first.env.get("WHEREBY_TRIGGER").map(String::as_str),
        Some("visit-room")
    );

    let invite = webhook(
        "assistant.requested",
        "r-7",
        2,
        json!({"roomName": "/visit-7"}),
    );
    assert_eq!(outcome(&server, &invite), "suppressed");
    log_line(
        &server,
        0,
        &[&format!("invited: suppressed ({claim} is already claimed)")],
    );
    let own = in_visit(
        "room.client.joined",
        "j-assistant",
        3,
        "assistant",
        json!({"host": 1, "assistant": 1}),
    );
    assert_eq!(outcome(&server, &own), "suppressed");
    log_line(
        &server,
        0,
        &[&format!(
            "visit-room: suppressed ({claim} is already claimed)"
        )],
    );

    // Only the assistant is left: the stop waits, then fires, and goes to
    // the assistant of visit-room, which holds the claim.
    let left = in_visit(
        "room.client.left",
        "l-host",
        4,
        "host",
        json!({"assistant": 1}),
    );
    assert_eq!(outcome(&server, &left), "not_matched");
    let (scheduled, _) = log_line(
        &server,
        0,
        &[&format!("invited: stop in 1s unless cancelled ({claim})")],
    );
    log_line(
        &server,
        scheduled,
        &[&format!(
            "invited: stopped (released {claim}) (stop_after passed)"
        )],
    );
    ASSISTANT.wait_terminated(&procs, first.pid);

    // The next visit gets an assistant of its own.
    let gone = in_visit("room.client.left", "l-assistant", 5, "assistant", json!({}));
    assert_eq!(outcome(&server, &gone), "not_matched");
    let next = in_visit(
        "room.client.joined",
        "j-next",
        6,
        "host",
        json!({"host": 1}),
    );
    assert_eq!(outcome(&server, &next), "triggered");
    let both = wait_started(&procs, 2);
    assert_eq!(both.len(), 2, "{both:#?}");
    drop(server.stop());
}
