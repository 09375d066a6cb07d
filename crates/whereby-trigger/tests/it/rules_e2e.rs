//! End-to-end: config-driven rules and actions against the real
//! `whereby-trigger` binary — `check`, `serve --config` with `run`, `forward`
//! and `stdout`, room state in `when`, SIGHUP reload, `serve --record` and
//! `replay`, shutdown with assistants running, and `run.when_full = "drop"`.
//!
//! Everything is on loopback: the server listens on `127.0.0.1:0`, `forward`
//! goes to `common::receiver` on `127.0.0.1:0`, and the `run` action
//! starts `tests/scripts/e2e_assistant.py`, which writes what it got into a
//! temporary directory of the test's own. No test sleeps to synchronise: every
//! wait is for a log line, a file, a request or an exit, polled and bounded by
//! `common::binary::WAIT`.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::binary::{
    Delivery, Server, deliveries, loopback_command, poll, send_from, send_signed, text,
    wait_with_deadline,
};
use crate::common::fixture::{
    E2E_ASSISTANT as ASSISTANT, TempDir, run_table, started_in, term_marker, toml_str as q,
    wait_started,
};
use crate::common::receiver::{Receiver, Request};
use serde_json::Value;

/// The signing secret, given to the config as `${E2E_SECRET}`.
const SECRET: &str = "whsec_e2e_rules_7a41c9d2f0";
/// The `forward` Authorization token, given to the config as `${E2E_TOKEN}`.
const TOKEN: &str = "tok-e2e-rules-5be0d13f99";
/// Room URL of the samples (and of the meeting scenario).
const ROOM_URL: &str = "https://acme.whereby.com/standup-3f9a2c";
/// `roomSessionId` of the samples.
const SESSION: &str = "c1b5e7a0-8d2f-4b6e-9a41-2f7d3e5c9b10";

// ---------------------------------------------------------------------------
// The binary.

/// The binary with the config's variables set, and no proxy for `forward`.
fn command() -> Command {
    let mut cmd = loopback_command();
    cmd.env("E2E_SECRET", SECRET).env("E2E_TOKEN", TOKEN);
    cmd
}

/// `serve --config config` with `extra` flags.
fn serve(config: &Path, extra: &[&str]) -> Server {
    serve_with(config, extra, |_| || ())
}

/// Like [`serve`]; `spawned` gets serve's pid at once and returns what to call
/// the moment serve says it listens (before this returns).
fn serve_with<F: FnOnce()>(
    config: &Path,
    extra: &[&str],
    spawned: impl FnOnce(u32) -> F,
) -> Server {
    let mut args = vec![OsStr::new("--config"), config.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    Server::start_with(command(), args, spawned)
}

fn send(args: &[&str]) -> Output {
    send_from(command(), args)
}

/// What this file does with a running `serve`.
trait Serve {
    /// Sends one signed sample webhook; returns the `outcome` of the answer.
    fn send(&self, event_type: &str, id: &str, extra: &[&str]) -> String;

    /// Plays `send --scenario meeting` (with `extra` flags), signed; every
    /// delivery must be answered 200, with JSON.
    fn play(&self, extra: &[&str]) -> Vec<Delivery>;

    /// Sends SIGHUP and waits for the first stderr line after it that contains
    /// `needle`; returns that line and the index of the first line after the
    /// signal.
    fn reload(&self, needle: &str) -> (String, usize);
}

impl Serve for Server {
    fn send(&self, event_type: &str, id: &str, extra: &[&str]) -> String {
        let out = send_signed(
            command(),
            event_type,
            &self.url(),
            SECRET,
            &[&["--id", id], extra].concat(),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "send {event_type} failed: {stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("HTTP 200"), "{stdout}");
        outcome(&stdout)
    }

    fn play(&self, extra: &[&str]) -> Vec<Delivery> {
        let to = self.url();
        let mut args = vec!["--scenario", "meeting", "--to", &to, "--secret", SECRET];
        args.extend_from_slice(extra);
        // Unpaced unless a test asks for a pace: the tests need speed, not a
        // meeting's rhythm.
        if !extra.contains(&"--pace") {
            args.extend(["--pace", "0"]);
        }
        let out = send(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let lines = deliveries(&out);
        for delivery in &lines {
            assert_eq!(delivery.status, 200, "{delivery:?}");
            // Fails unless the answer is JSON.
            delivery.outcome();
        }
        lines
    }

    fn reload(&self, needle: &str) -> (String, usize) {
        let mark = self.stderr.len();
        self.signal("HUP");
        let line = self
            .stderr
            .wait_line(&format!("{needle:?}"), mark, |l| l.contains(needle));
        (line, mark)
    }
}

fn check(config: &Path) -> Output {
    command()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run check")
}

/// The `outcome` of the JSON answer on a line of `send`'s output.
fn outcome(line: &str) -> String {
    let body = &line[line
        .find('{')
        .unwrap_or_else(|| panic!("no answer in {line}"))..];
    let body: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|_| panic!("the answer is not JSON: {line}"));
    body["outcome"].as_str().unwrap_or_default().to_owned()
}

/// Asserts the type and outcome of every delivery of a played scenario.
#[track_caller]
fn assert_outcomes(lines: &[Delivery], expected: &[(&str, &str)]) {
    let outcomes: Vec<String> = lines.iter().map(Delivery::outcome).collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .zip(&outcomes)
        .map(|(d, outcome)| (d.event_type.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(got, expected);
}

/// The two string fields at the JSON pointers `first` and `second` of each of
/// serve's stdout lines (empty where absent).
fn fields<'a>(events: &'a [Value], first: &str, second: &str) -> Vec<(&'a str, &'a str)> {
    let field = |event: &'a Value, pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    events
        .iter()
        .map(|e| (field(e, first), field(e, second)))
        .collect()
}

/// The meeting scenario's event types, in order.
const MEETING: [&str; 8] = [
    "room.client.joined",
    "room.client.knocked",
    "room.client.joined",
    "room.session.started",
    "assistant.requested",
    "room.client.left",
    "room.client.left",
    "room.session.ended",
];

// ---------------------------------------------------------------------------
// Configs.

/// The [`note_taker`] config in `dir`, forwarding to a fresh receiver, and
/// serve running it; returns the assistants' `procs` directory, the receiver
/// and the server.
fn serve_note_taker(dir: &TempDir) -> (PathBuf, Receiver, Server) {
    let procs = dir.sub("procs");
    let receiver = Receiver::start();
    let config = dir.write(
        "whereby-trigger.toml",
        &format!("{VERIFY}{}", note_taker(&procs, &receiver.url(), "")),
    );
    let server = serve(&config, &[]);
    (procs, receiver, server)
}

/// The issue's note-taker: one assistant per session, stopped when the session
/// ends, started as a process, forwarded to `receiver` and printed.
fn note_taker(procs: &Path, receiver: &str, run_extra: &str) -> String {
    format!(
        r#"
[[trigger]]
name = "note-taker"
on = ["room.session.started", "assistant.requested"]
once_per = "session"
stop_on = ["room.session.ended"]
{run}
forward = {{ url = {url}, timeout = "5s", headers = {{ Authorization = "Bearer ${{E2E_TOKEN}}" }} }}
stdout = true
"#,
        run = run_table(procs, "term", run_extra),
        url = q(receiver),
    )
}

const VERIFY: &str = "[verify]\nsecrets = [\"${E2E_SECRET}\"]\n";

// ===========================================================================
// 1. check

#[test]
fn check_summarises_a_valid_config_without_secrets_or_header_values() {
    let dir = TempDir::new("check-ok");
    let procs = dir.sub("procs");
    let config = format!(
        "{VERIFY}{}\n[[trigger]]\nname = \"greeter\"\non = [\"room.client.joined\"]\nwhen = 'room.numClients >= 2'\nstdout = true\n",
        note_taker(&procs, "http://127.0.0.1:9/assistants", "")
    );
    let path = dir.write("whereby-trigger.toml", &config);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for name in ["note-taker", "greeter"] {
        assert!(stdout.contains(name), "the summary lacks {name}:\n{stdout}");
    }
    assert!(stdout.contains("Authorization"), "{stdout}");
    assert!(stdout.contains("room.numClients >= 2"), "{stdout}");
    for secret in [SECRET, TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "check printed a secret:\n{stdout}{stderr}"
        );
    }
}

/// Each broken config: its file name, text, the lines an error may name (the
/// offending line, or the line of the trigger it is in), the trigger it must
/// name, and a word the message must contain.
struct Broken {
    file: &'static str,
    toml: String,
    lines: Vec<usize>,
    trigger: Option<&'static str>,
    needle: &'static str,
}

fn assert_check_rejects(dir: &TempDir, broken: &Broken) {
    let path = dir.write(broken.file, &broken.toml);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let shown = path.display().to_string();
    let case = broken.file;
    assert_eq!(out.status.code(), Some(1), "{case}: {stdout}{stderr}");
    assert!(!stdout.contains("OK"), "{case}: {stdout}");
    assert!(
        broken
            .lines
            .iter()
            .any(|line| stderr.contains(&format!("{shown}:{line}:"))),
        "{case}: stderr does not name {shown} and one of lines {:?}:\n{stderr}",
        broken.lines
    );
    if let Some(trigger) = broken.trigger {
        assert!(
            stderr.contains(trigger),
            "{case}: stderr does not name the trigger {trigger}:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(broken.needle),
        "{case}: stderr does not mention {}:\n{stderr}",
        broken.needle
    );
    for secret in [SECRET, TOKEN] {
        assert!(
            !stderr.contains(secret),
            "{case}: check printed a secret:\n{stderr}"
        );
    }
}

/// A trigger named `scribe-7` whose keys after `name` are `body`: `[verify]`
/// takes lines 1-2, `[[trigger]]` line 3, `name` line 4, `body` from line 5.
fn one_trigger(body: &str) -> String {
    format!("{VERIFY}[[trigger]]\nname = \"scribe-7\"\n{body}")
}

#[test]
fn check_rejects_broken_configs_naming_file_line_and_trigger() {
    let dir = TempDir::new("check-bad");
    let cases = [
        Broken {
            file: "syntax.toml",
            // Line 6: a key without a value.
            toml: one_trigger("on = [\"room.session.started\"]\nstdout = true\nwhen = \n"),
            lines: vec![7],
            trigger: None,
            needle: "",
        },
        Broken {
            file: "unknown-section.toml",
            toml: format!("{VERIFY}[storage]\ndir = \"/tmp\"\n"),
            lines: vec![3],
            trigger: None,
            needle: "storage",
        },
        Broken {
            file: "cel-syntax.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nwhen = 'data.subdomain == '\nstdout = true\n",
            ),
            lines: vec![6],
            trigger: Some("scribe-7"),
            needle: "when",
        },
        Broken {
            file: "cel-unknown-name.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nstdout = true\nwhen = 'subdomain == \"acme\"'\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "subdomain",
        },
        Broken {
            file: "cel-type-error.toml",
            toml: one_trigger(
                "on = [\"room.client.joined\"]\nstdout = true\nwhen = 'data.roleName > 1'\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "on the room.client.joined sample, `when` fails (found no matching overload",
        },
        Broken {
            file: "cel-missing-field.toml",
            toml: one_trigger(
                "on = [\"room.client.joined\"]\nstdout = true\nwhen = 'data.numGuests - 1 > 0'\n",
            ),
            // Refused at load: no room.client.joined payload has the field.
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "`data.numGuests` is not a field of room.client.joined webhooks",
        },
        Broken {
            file: "cel-field-typo.toml",
            toml: one_trigger(
                "on = [\"room.client.joined\"]\nstdout = true\nwhen = 'data.numClient >= 2'\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "did you mean `data.numClients`?",
        },
        Broken {
            file: "cel-syntax-caret.toml",
            toml: one_trigger(
                "on = [\"room.client.joined\"]\nstdout = true\nwhen = 'data.roleName = \"host\"'\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "(column 15)\n    data.roleName = \"host\"\n                  ^",
        },
        Broken {
            file: "cel-compared-across-types.toml",
            toml: one_trigger(
                "on = [\"room.client.joined\"]\nstdout = true\nwhen = 'data.numClients == \"1\"'\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "`data.numClients` is a number in the sample but is compared with a string",
        },
        Broken {
            file: "placeholder.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nrun = { command = [\"assistant\", \"--room\", \"{roomURL}\"] }\n",
            ),
            lines: vec![4, 6],
            trigger: Some("scribe-7"),
            needle: "{roomURL}",
        },
        Broken {
            file: "unset-header-var.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nforward = { url = \"http://127.0.0.1:9/a\", headers = { Authorization = \"Bearer ${E2E_NOT_SET_ANYWHERE}\" } }\n",
            ),
            lines: vec![4, 6],
            trigger: Some("scribe-7"),
            needle: "E2E_NOT_SET_ANYWHERE",
        },
        Broken {
            file: "unset-command-var.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nrun = { command = [\"${E2E_NOT_SET_EITHER}/assistant\"] }\n",
            ),
            lines: vec![4, 6],
            trigger: Some("scribe-7"),
            needle: "E2E_NOT_SET_EITHER",
        },
        Broken {
            file: "unset-secret-var.toml",
            toml: "[verify]\nsecrets = [\"${E2E_SECRET}\", \"${E2E_NO_SUCH_SECRET}\"]\n".to_owned(),
            lines: vec![2],
            trigger: None,
            needle: "E2E_NO_SUCH_SECRET",
        },
    ];
    for broken in &cases {
        assert_check_rejects(&dir, broken);
    }
}

/// The issue: `check` exits 1 "with errors that name file, line and trigger".
/// An unknown key inside a `[[trigger]]` table is an error of that trigger.
#[test]
fn check_names_the_trigger_of_an_unknown_key() {
    let dir = TempDir::new("check-unknown-key");
    assert_check_rejects(
        &dir,
        &Broken {
            file: "unknown-key.toml",
            toml: one_trigger(
                "on = [\"room.session.started\"]\nstdout = true\ncolour = \"blue\"\n",
            ),
            lines: vec![7],
            trigger: Some("scribe-7"),
            needle: "colour",
        },
    );
}

// ===========================================================================
// 2. serve --config: run, forward, stdout, once_per = "session", stop_on

/// Checks a `forward` request: a POST of `action` for the webhook `id`.
fn assert_forwarded(request: &Request, action: &str, event_type: &str, id: &str) {
    let key = match action {
        "stop" => format!("note-taker:{id}:stop"),
        _ => format!("note-taker:{id}"),
    };
    assert_eq!(request.method, "POST", "{request:#?}");
    assert_eq!(request.path, "/assistants", "{request:#?}");
    assert_eq!(request.header("idempotency-key"), key, "{request:#?}");
    assert_eq!(
        request.header("authorization"),
        format!("Bearer {TOKEN}"),
        "{request:#?}"
    );
    assert!(
        request
            .header("content-type")
            .starts_with("application/json"),
        "{request:#?}"
    );
    let body = &request.json();
    assert_eq!(body["action"], action, "{body}");
    assert_eq!(body["trigger"], "note-taker", "{body}");
    assert_eq!(body["roomUrl"], ROOM_URL, "{body}");
    assert_eq!(body["triggerWebhook"]["id"], id, "{body}");
    assert_eq!(body["triggerWebhook"]["type"], event_type, "{body}");
}

fn assert_stdout_event(line: &Value, action: &str, trigger: &str, event_type: &str) {
    assert_eq!(line["action"], action, "{line}");
    assert_eq!(line["trigger"], trigger, "{line}");
    assert!(line["roomUrl"].is_string(), "{line}");
    assert_eq!(line["triggerWebhook"]["type"], event_type, "{line}");
}

#[test]
fn one_assistant_per_session_started_forwarded_printed_and_stopped() {
    let dir = TempDir::new("session");
    let (procs, receiver, server) = serve_note_taker(&dir);

    // The session starts: one assistant.
    assert_eq!(
        server.send("room.session.started", "e2e-started-1", &[]),
        "triggered"
    );
    let first = wait_started(&procs, 1);
    assert_eq!(first.len(), 1, "{first:#?}");
    let first = first[0].clone();
    assert_eq!(
        first.argv,
        [
            "--room",
            ROOM_URL,
            "--session",
            SESSION,
            "note-taker/room.session.started"
        ]
    );
    let env = |name: &str| first.env.get(name).map_or("", String::as_str);
    assert_eq!(env("WHEREBY_ROOM_URL"), ROOM_URL);
    assert_eq!(env("WHEREBY_EVENT_ID"), "e2e-started-1");
    assert_eq!(env("WHEREBY_EVENT_TYPE"), "room.session.started");
    assert_eq!(env("WHEREBY_TRIGGER"), "note-taker");
    assert_eq!(env("WHEREBY_SUBDOMAIN"), "acme");
    assert_eq!(env("WHEREBY_ROOM_NAME"), "/standup-3f9a2c");
    assert_eq!(env("WHEREBY_ROOM_SESSION_ID"), SESSION);
    let stdin: Value =
        serde_json::from_str(first.stdin.trim()).expect("stdin is one JSON document");
    assert_eq!(stdin["action"], "start");
    assert_eq!(stdin["trigger"], "note-taker");
    assert_eq!(stdin["roomUrl"], ROOM_URL);
    assert_eq!(stdin["triggerWebhook"]["id"], "e2e-started-1");
    assert!(ASSISTANT.alive(first.pid));

    // While it runs the session is claimed: no second assistant.
    assert_eq!(
        server.send("assistant.requested", "e2e-requested-1", &[]),
        "suppressed"
    );
    assert_eq!(
        server.send("room.session.started", "e2e-started-2", &[]),
        "suppressed"
    );
    server
        .stderr
        .wait_line("the suppression in the log", 0, |l| {
            l.contains("note-taker: suppressed") && l.contains("e2e-requested-1")
        });
    let start = receiver.wait_for(1);
    assert_forwarded(&start[0], "start", "room.session.started", "e2e-started-1");
    server
        .stdout
        .wait_until("the start line", |l| !l.is_empty());

    // The session ends: the assistant gets SIGTERM, the receiver a stop.
    server.send("room.session.ended", "e2e-ended-1", &[]);
    ASSISTANT.wait_terminated(&procs, first.pid);
    let requests = receiver.wait_for(2);
    assert_forwarded(&requests[1], "stop", "room.session.ended", "e2e-ended-1");
    let lines = server.stdout.wait_until("the stop line", |l| l.len() >= 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(started_in(&procs).len(), 1, "exactly one assistant ran");

    // The stop released the claim: a new request starts a new assistant.
    assert_eq!(
        server.send("assistant.requested", "e2e-requested-2", &[]),
        "triggered"
    );
    let both = wait_started(&procs, 2);
    let second = both
        .iter()
        .find(|s| s.pid != first.pid)
        .expect("a second assistant")
        .clone();
    assert_eq!(
        second.argv.last().map(String::as_str),
        Some("note-taker/assistant.requested")
    );
    let requests = receiver.wait_for(3);
    assert_forwarded(
        &requests[2],
        "start",
        "assistant.requested",
        "e2e-requested-2",
    );

    let stopped = server.stop();
    // Shutdown stopped the second assistant the same way.
    assert!(term_marker(&procs, second.pid).exists());
    ASSISTANT.wait_gone(second.pid);
    assert_eq!(started_in(&procs).len(), 2);

    let out = stopped.events();
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_stdout_event(&out[0], "start", "note-taker", "room.session.started");
    assert_eq!(out[0]["triggerWebhook"]["id"], "e2e-started-1");
    assert_eq!(out[0]["roomUrl"], ROOM_URL);
    assert_stdout_event(&out[1], "stop", "note-taker", "room.session.ended");
    assert_eq!(out[1]["triggerWebhook"]["id"], "e2e-ended-1");
    assert_stdout_event(&out[2], "start", "note-taker", "assistant.requested");
    for line in &stopped.stderr {
        assert!(
            !line.contains(SECRET) && !line.contains(TOKEN),
            "a secret reached the log: {line}"
        );
    }
}

#[test]
fn the_meeting_scenario_gets_one_assistant_for_its_session() {
    let dir = TempDir::new("meeting");
    let (procs, receiver, server) = serve_note_taker(&dir);
    let lines = server.play(&[]);
    assert_outcomes(
        &lines,
        &[
            ("room.client.joined", "not_matched"),
            ("room.client.knocked", "ignored"),
            ("room.client.joined", "not_matched"),
            ("room.session.started", "triggered"),
            // Same session: suppressed by the claim.
            ("assistant.requested", "suppressed"),
            ("room.client.left", "not_matched"),
            ("room.client.left", "not_matched"),
            // Its `stop_on` stops the assistant.
            ("room.session.ended", "stopped"),
        ],
    );
    receiver.wait_for(2);
    let stopped = server.stop();

    // stdout: the start, then the stop.
    let out = stopped.events();
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_stdout_event(&out[0], "start", "note-taker", "room.session.started");
    assert_stdout_event(&out[1], "stop", "note-taker", "room.session.ended");
    let started_id = out[0]["triggerWebhook"]["id"].as_str().expect("an id");
    let ended_id = out[1]["triggerWebhook"]["id"].as_str().expect("an id");
    assert!(started_id.starts_with(&lines[3].short_id));
    assert!(ended_id.starts_with(&lines[7].short_id));
    let session = &out[0]["triggerWebhook"]["data"]["roomSessionId"];
    assert!(session.is_string());
    assert_eq!(out[1]["triggerWebhook"]["data"]["roomSessionId"], *session);

    // forward: one start and one stop, whatever order the two deliveries
    // (concurrent tasks) arrived in.
    let requests = receiver.received();
    let by_action = |action: &str| {
        let found: Vec<&Request> = requests
            .iter()
            .filter(|r| r.json()["action"] == action)
            .collect();
        assert_eq!(found.len(), 1, "one {action} forwarded: {requests:#?}");
        found[0]
    };
    assert_forwarded(
        by_action("start"),
        "start",
        "room.session.started",
        started_id,
    );
    assert_forwarded(by_action("stop"), "stop", "room.session.ended", ended_id);

    // run: at most one assistant (the stop may even come before it started);
    // one that started got SIGTERM and is gone.
    let started = started_in(&procs);
    assert!(started.len() <= 1, "{started:#?}");
    for assistant in &started {
        assert_eq!(
            assistant.env.get("WHEREBY_EVENT_ID").map(String::as_str),
            Some(started_id)
        );
        assert!(
            term_marker(&procs, assistant.pid).exists(),
            "{assistant:#?}"
        );
        ASSISTANT.wait_gone(assistant.pid);
    }
}

// ===========================================================================
// 3. `when` sees the room's state

#[test]
fn when_sees_the_room_state_of_the_meeting() {
    let dir = TempDir::new("room-state");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"{VERIFY}
[[trigger]]
name = "second-joiner"
on = ["room.client.joined"]
when = 'room.numClients >= 2'
stdout = true

[[trigger]]
name = "visitor-present"
on = ["assistant.requested"]
when = 'room.sessionActive && room.numClientsByRoleName.visitor == 1'
stdout = true

[[trigger]]
name = "last-out"
on = ["room.client.left"]
when = 'room.numClients == 0 && room.sessionActive'
stdout = true

[[trigger]]
name = "broken-at-run-time"
on = ["room.client.joined"]
when = 'data.numClientsByRoleName.noSuchRole == 1'
stdout = true
"#
        ),
    );
    let server = serve(&config, &[]);
    let lines = server.play(&[]);
    assert_outcomes(
        &lines,
        &[
            ("room.client.joined", "not_matched"),
            ("room.client.knocked", "ignored"),
            ("room.client.joined", "triggered"),
            ("room.session.started", "not_matched"),
            ("assistant.requested", "triggered"),
            ("room.client.left", "not_matched"),
            ("room.client.left", "triggered"),
            ("room.session.ended", "not_matched"),
        ],
    );
    let stopped = server.stop();
    let events = stopped.events();
    assert_eq!(
        fields(&events, "/trigger", "/triggerWebhook/type"),
        [
            ("second-joiner", "room.client.joined"),
            ("visitor-present", "assistant.requested"),
            ("last-out", "room.client.left"),
        ]
    );
    // The second joiner is the visitor, the last one out the host.
    assert_eq!(events[0]["triggerWebhook"]["data"]["roleName"], "visitor");
    assert_eq!(events[2]["triggerWebhook"]["data"]["roleName"], "host");
    // A `when` that fails at run time is false and logged, never a crash.
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("broken-at-run-time") && l.contains("failed")),
        "{:#?}",
        stopped.stderr
    );
}

// ===========================================================================
// 4. SIGHUP reload

fn greeter_config(display_name: &str, extra: &str) -> String {
    format!(
        "{VERIFY}\n[[trigger]]\nname = \"greeter\"\non = [\"room.client.joined\"]\nwhen = 'data.displayName == \"{display_name}\"'\nstdout = true\n{extra}"
    )
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let dir = TempDir::new("reload");
    let config = dir.write("whereby-trigger.toml", &greeter_config("Alpha", ""));
    let server = serve(&config, &[]);
    let joined = |id: &str, name: &str| {
        server.send(
            "room.client.joined",
            id,
            &["--set", &format!("displayName={name}")],
        )
    };
    assert_eq!(joined("a1", "Alpha"), "triggered");
    assert_eq!(joined("b1", "Beta"), "not_matched");
    assert_eq!(server.send("room.client.left", "l1", &[]), "not_matched");

    // A valid new config: another name matches, and a new trigger appears.
    let farewell =
        "\n[[trigger]]\nname = \"farewell\"\non = [\"room.client.left\"]\nstdout = true\n";
    dir.write("whereby-trigger.toml", &greeter_config("Beta", farewell));
    let (reloaded, _) = server.reload("config reloaded");
    assert!(reloaded.contains("triggers=2"), "{reloaded}");
    assert_eq!(joined("a2", "Alpha"), "not_matched");
    assert_eq!(joined("b2", "Beta"), "triggered");
    assert_eq!(server.send("room.client.left", "l2", &[]), "triggered");

    // An invalid one (bad CEL on line 15) is refused; the rules stay.
    let broken = "\n[[trigger]]\nname = \"broken\"\non = [\"room.client.left\"]\nwhen = 'data.numClients >'\nstdout = true\n";
    let text = greeter_config("Beta", &format!("{farewell}{broken}"));
    let bad_line = text
        .lines()
        .position(|l| l.starts_with("when = 'data.numClients"))
        .expect("the bad line")
        + 1;
    dir.write("whereby-trigger.toml", &text);
    let (refused, mark) = server.reload("not reloaded");
    assert!(
        refused.contains(&format!("{}:{bad_line}:", config.display())),
        "the error names neither file nor line: {refused}"
    );
    assert!(refused.contains("broken"), "{refused}");
    assert!(
        !server.stderr.snapshot()[mark..]
            .iter()
            .any(|l| l.contains("config reloaded")),
        "{:#?}",
        server.stderr.snapshot()
    );
    assert_eq!(joined("a3", "Alpha"), "not_matched");
    assert_eq!(joined("b3", "Beta"), "triggered");
    assert_eq!(server.send("room.client.left", "l3", &[]), "triggered");

    // A file left without a trigger (emptied, or cut short while written) is
    // refused too: the rules stay.
    for empty in ["", "[verify]\nallow_unsigned = true\n"] {
        dir.write("whereby-trigger.toml", empty);
        let (refused, _) = server.reload("not reloaded");
        assert!(
            refused.contains("no [[trigger]] left, and no --on"),
            "{refused}"
        );
    }
    assert_eq!(joined("b4", "Beta"), "triggered");

    let events = server.stop().events();
    assert_eq!(
        fields(&events, "/trigger", "/triggerWebhook/id"),
        [
            ("greeter", "a1"),
            ("greeter", "b2"),
            ("farewell", "l2"),
            ("greeter", "b3"),
            ("farewell", "l3"),
            ("greeter", "b4"),
        ]
    );
}

#[test]
fn a_reload_keeps_running_assistants_and_their_claims() {
    let dir = TempDir::new("reload-claims");
    let procs = dir.sub("procs");
    let trigger = |extra: &str| {
        format!(
            "{VERIFY}\n[[trigger]]\nname = \"note-taker\"\non = [\"room.session.started\", \"assistant.requested\"]\nonce_per = \"session\"\nstop_on = [\"room.session.ended\"]\n{}\n{extra}",
            run_table(&procs, "term", "")
        )
    };
    let config = dir.write("whereby-trigger.toml", &trigger(""));
    let server = serve(&config, &[]);
    assert_eq!(server.send("room.session.started", "s1", &[]), "triggered");
    let first = wait_started(&procs, 1)[0].clone();

    // The reload adds `stdout`; the session stays claimed, the assistant runs.
    dir.write("whereby-trigger.toml", &trigger("stdout = true\n"));
    server.reload("config reloaded");
    assert_eq!(server.send("assistant.requested", "r1", &[]), "suppressed");
    assert!(ASSISTANT.alive(first.pid));
    assert!(!term_marker(&procs, first.pid).exists());

    // The new config's stop_on still stops the assistant started before it.
    server.send("room.session.ended", "e1", &[]);
    ASSISTANT.wait_terminated(&procs, first.pid);
    assert_eq!(server.send("assistant.requested", "r2", &[]), "triggered");
    let second = wait_started(&procs, 2);
    assert_eq!(second.len(), 2);

    let events = server.stop().events();
    assert_eq!(
        fields(&events, "/action", "/triggerWebhook/id"),
        [("stop", "e1"), ("start", "r2")]
    );
}

/// `send` of a `room.client.joined` for Beta with `secret`; the HTTP status line.
fn send_signed_by(server: &Server, id: &str, secret: &str) -> String {
    let out = send_signed(
        command(),
        "room.client.joined",
        &server.url(),
        secret,
        &["--id", id, "--set", "displayName=Beta"],
    );
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("HTTP "))
        .unwrap_or_else(|| panic!("no status line: {stdout}{}", text(&out.stderr)))
        .to_owned()
}

#[test]
fn a_reload_rotates_the_secrets_and_says_server_changes_wait_for_a_restart() {
    const NEW_SECRET: &str = "whsec_e2e_rotated_41d7";
    let dir = TempDir::new("reload-settings");
    let config = dir.write("whereby-trigger.toml", &greeter_config("Alpha", ""));
    let server = serve(&config, &[]);

    // A rules-only change: the secrets stay, nothing is said of them.
    dir.write("whereby-trigger.toml", &greeter_config("Beta", ""));
    let (_, mark) = server.reload("config reloaded");
    assert!(mark > 0);

    // A rotation (old and new secret) and a limit change: the secrets apply at
    // once, the limit waits for a restart.
    let rotating = greeter_config("Beta", "").replace(
        "[verify]\nsecrets = [\"${E2E_SECRET}\"]\n",
        &format!(
            "[server]\nmax_connections = 99\n\n[verify]\nsecrets = [\"${{E2E_SECRET}}\", \"{NEW_SECRET}\"]\n"
        ),
    );
    assert_ne!(rotating, greeter_config("Beta", ""));
    dir.write("whereby-trigger.toml", &rotating);
    let (reloaded, _) = server.reload("signature checks reloaded");
    assert!(reloaded.contains("secrets=2"), "{reloaded}");
    assert!(
        !reloaded.contains(NEW_SECRET),
        "a secret was logged: {reloaded}"
    );
    server.stderr.wait_line("the [server] warning", mark, |l| {
        l.contains("[server] settings changed")
    });
    assert!(send_signed_by(&server, "r1", SECRET).contains("200"));
    assert!(send_signed_by(&server, "r2", NEW_SECRET).contains("200"));

    // The rotation ends: the old secret is refused from the next delivery on.
    let rotated = rotating.replace("\"${E2E_SECRET}\", ", "");
    dir.write("whereby-trigger.toml", &rotated);
    server.reload("signature checks reloaded");
    assert!(send_signed_by(&server, "r3", SECRET).contains("401"));
    assert!(send_signed_by(&server, "r4", NEW_SECRET).contains("200"));

    // Each message once: the rules-only reload said nothing of either.
    let log = server.stderr.snapshot();
    let count = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("signature checks reloaded"), 2, "{log:#?}");
    assert_eq!(count("[server] settings changed"), 2, "{log:#?}");
    drop(server.stop());
}

#[test]
fn a_reload_that_removes_a_run_trigger_stops_its_assistants_and_frees_their_rooms() {
    let dir = TempDir::new("reload-removed");
    let procs = dir.sub("procs");
    let with_run = format!(
        "{VERIFY}\n[[trigger]]\nname = \"note-taker\"\non = [\"room.session.started\", \"assistant.requested\"]\nonce_per = \"room\"\n{}\n",
        run_table(&procs, "term", "")
    );
    let config = dir.write("whereby-trigger.toml", &with_run);
    let server = serve(&config, &[]);
    assert_eq!(server.send("room.session.started", "s1", &[]), "triggered");
    let first = wait_started(&procs, 1)[0].clone();

    // The trigger is gone from the file: its assistant is told to stop.
    let without = format!(
        "{VERIFY}\n[[trigger]]\nname = \"greeter\"\non = [\"room.client.joined\"]\nstdout = true\n"
    );
    dir.write("whereby-trigger.toml", &without);
    let (reloaded, _) = server.reload("config reloaded");
    assert!(reloaded.contains("triggers=1"), "{reloaded}");
    ASSISTANT.wait_terminated(&procs, first.pid);
    let log = server.stderr.snapshot().join("\n");
    assert!(
        log.contains("trigger removed from the config") && log.contains("stopped=1"),
        "{log}"
    );

    // Put back, the trigger starts afresh: its room's claim was released.
    dir.write("whereby-trigger.toml", &with_run);
    server.reload("config reloaded");
    assert_eq!(server.send("assistant.requested", "r1", &[]), "triggered");
    let both = wait_started(&procs, 2);
    assert_eq!(both.len(), 2);
    drop(server.stop());
}

/// SIGHUP's default action ends a process. Once `serve` says it listens, a
/// SIGHUP must reload the config, not kill the server: the handler has to be
/// in place before readiness is announced. Tried on 50 fresh servers,
/// since a missing handler is only caught when the signal wins the race.
#[test]
fn a_sighup_right_after_readiness_reloads_instead_of_killing() {
    let dir = TempDir::new("early-hup");
    let config = dir.write("whereby-trigger.toml", &greeter_config("Alpha", ""));
    for attempt in 0..50 {
        // A shell already running and waiting sends the signal: no fork
        // between the listening line and the SIGHUP.
        let mut server = serve_with(&config, &[], |pid| {
            let mut sh = Command::new("sh")
                .args(["-c", "read go && kill -HUP \"$1\"", "sh", &pid.to_string()])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            move || {
                let mut go = sh.stdin.take().expect("sh's stdin");
                go.write_all(b"go\n").expect("tell sh to signal");
                drop(go);
                assert!(wait_with_deadline(&mut sh).success(), "kill -HUP failed");
            }
        });
        let reloaded = poll("a reload or an exit", || {
            if server
                .stderr
                .snapshot()
                .iter()
                .any(|l| l.contains("config reloaded"))
            {
                return Some(Ok(()));
            }
            server.child.try_wait().expect("try_wait").map(Err)
        });
        if let Err(status) = reloaded {
            panic!(
                "attempt {attempt}: a SIGHUP right after the listening line ended serve ({status}):\n{}",
                server.stderr.snapshot().join("\n")
            );
        }
        server.stop();
    }
}

// ===========================================================================
// 5. serve --record, then replay

fn replay_config(procs: &Path, receiver: &str) -> String {
    format!(
        "{VERIFY}{}\n[[trigger]]\nname = \"greeter\"\non = [\"room.client.joined\"]\nwhen = 'room.numClients >= 2'\nstdout = true\n",
        note_taker(procs, receiver, "")
    )
}

#[test]
fn a_recorded_meeting_replays_through_the_rules_without_running_actions() {
    let dir = TempDir::new("replay");
    let live_procs = dir.sub("live-procs");
    let live_receiver = Receiver::start();
    let live = dir.write(
        "live.toml",
        &replay_config(&live_procs, &live_receiver.url()),
    );
    let recording = dir.path().join("webhooks.jsonl");
    let server = serve(
        &live,
        &["--record", recording.to_str().expect("a UTF-8 path")],
    );
    let deliveries = server.play(&["--duplicate", "1"]);
    assert_eq!(deliveries.len(), 2 * MEETING.len());
    server.stop();

    // Every verified webhook, duplicates included, in delivery order.
    let recorded: Vec<Value> = std::fs::read_to_string(&recording)
        .expect("the recording")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a recorded line is JSON"))
        .collect();
    assert_eq!(recorded.len(), deliveries.len(), "{recorded:#?}");
    for (webhook, delivery) in recorded.iter().zip(&deliveries) {
        assert_eq!(webhook["type"], delivery.event_type.as_str());
        assert!(
            webhook["id"]
                .as_str()
                .expect("an id")
                .starts_with(&delivery.short_id)
        );
    }

    // Replay with the same rules, but actions that would leave traces
    // somewhere fresh: none may run.
    let procs = dir.sub("replay-procs");
    let receiver = Receiver::start();
    let config = dir.write("replay.toml", &replay_config(&procs, &receiver.url()));
    let out = command()
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg(&recording)
        .output()
        .expect("run replay");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), recorded.len() + 1, "{stdout}");

    // What each original (first copy) must say; every second copy is a duplicate.
    let originals = [
        "greeter: not matched",
        "ignored",
        "greeter: fired",
        "note-taker: fired",
        "note-taker: suppressed",
        "no trigger listens",
        "no trigger listens",
        "note-taker: stopped",
    ];
    let mut duplicates = 0;
    for (index, (line, webhook)) in lines.iter().zip(&recorded).enumerate() {
        let event_type = webhook["type"].as_str().expect("a type");
        let id = webhook["id"].as_str().expect("an id");
        assert!(
            line.starts_with(&format!("line {}: {event_type} {}", index + 1, &id[..12])),
            "{line}\n{stdout}"
        );
        if index % 2 == 0 {
            let expected = originals[index / 2];
            assert!(line.contains(expected), "{line} lacks {expected}\n{stdout}");
        } else if line.contains("duplicate") {
            duplicates += 1;
        } else {
            // A type no trigger evaluates is ignored before duplicates are looked at.
            assert_eq!(event_type, "room.client.knocked", "{line}\n{stdout}");
            assert!(line.contains("ignored"), "{line}\n{stdout}");
        }
    }
    assert!(duplicates >= 7, "{stdout}");
    let summary = lines.last().expect("a summary");
    assert_eq!(
        *summary,
        format!(
            "16 event(s): 2 fired, 1 suppressed by a claim, {duplicates} duplicate(s), 0 invalid"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("\"action\""),
        "replay printed a trigger event"
    );

    // No action ran: no process, no request. (A spawned assistant writes its
    // file at once; it would have had the whole replay to do so.)
    assert!(started_in(&procs).is_empty());
    assert_eq!(
        std::fs::read_dir(&procs).expect("read the dir").count(),
        0,
        "replay started something"
    );
    assert_eq!(receiver.received().len(), 0, "{:#?}", receiver.received());
}

// ===========================================================================
// 6. Shutdown with assistants running

#[test]
fn sigterm_stops_every_assistant_and_exits_0() {
    let dir = TempDir::new("shutdown");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            "{VERIFY}\n[[trigger]]\nname = \"joiner\"\non = [\"room.client.joined\"]\nonce_per = \"room\"\n{}\n\n[[trigger]]\nname = \"stubborn\"\non = [\"assistant.requested\"]\n{}\n",
            run_table(&procs, "term", ", stop_grace = \"10s\""),
            run_table(&procs, "ignore", ", stop_grace = \"300ms\""),
        ),
    );
    let server = serve(&config, &[]);
    assert_eq!(
        server.send("room.client.joined", "j-a", &["--room-name", "/room-a"]),
        "triggered"
    );
    assert_eq!(
        server.send("room.client.joined", "j-b", &["--room-name", "/room-b"]),
        "triggered"
    );
    assert_eq!(
        server.send("room.client.joined", "j-a2", &["--room-name", "/room-a"]),
        "suppressed",
        "room-a is claimed while its assistant runs"
    );
    assert_eq!(server.send("assistant.requested", "r-1", &[]), "triggered");
    let started = wait_started(&procs, 3);
    assert_eq!(started.len(), 3, "{started:#?}");
    for assistant in &started {
        assert!(ASSISTANT.alive(assistant.pid), "{assistant:#?}");
    }

    let stopped = server.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{:#?}", stopped.stderr);
    for assistant in &started {
        let trigger = assistant.env.get("WHEREBY_TRIGGER").map(String::as_str);
        // Gone, not orphaned: serve reaped its children before exiting.
        assert!(
            !ASSISTANT.alive(assistant.pid),
            "{trigger:?} assistant {} outlived serve",
            assistant.pid
        );
        let marker = term_marker(&procs, assistant.pid).exists();
        match trigger {
            // SIGTERM and an orderly exit.
            Some("joiner") => assert!(marker, "{assistant:#?}"),
            // SIGTERM ignored: SIGKILL after stop_grace.
            Some("stubborn") => assert!(!marker, "{assistant:#?}"),
            other => panic!("unexpected trigger {other:?}"),
        }
    }
    assert!(
        stopped.stderr.iter().any(|l| l.contains("SIGKILL")),
        "{:#?}",
        stopped.stderr
    );
}

#[test]
fn assistants_die_with_a_killed_server() {
    let dir = TempDir::new("crash");
    let procs = dir.sub("procs");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            "{VERIFY}\n[[trigger]]\nname = \"joiner\"\non = [\"room.client.joined\"]\n{}\n",
            run_table(&procs, "term", "")
        ),
    );
    let mut server = serve(&config, &[]);
    assert_eq!(server.send("room.client.joined", "j-1", &[]), "triggered");
    let assistant = wait_started(&procs, 1)[0].clone();
    assert!(ASSISTANT.alive(assistant.pid));

    server.signal("KILL");
    let status = wait_with_deadline(&mut server.child);
    assert!(!status.success());
    // No chance to clean up: the kernel must take the child along.
    ASSISTANT.wait_gone(assistant.pid);
    assert!(!term_marker(&procs, assistant.pid).exists());
}

// ===========================================================================
// 7. max_running with when_full = "drop"

/// Whether a log line has the field `name` with the string `value`.
fn has_field(line: &str, name: &str, value: &str) -> bool {
    let field = format!("{name}={value:?}");
    line.split_whitespace().any(|word| word == field)
}

/// The address of serve's admin listener, from its log line.
fn admin_addr(server: &Server) -> std::net::SocketAddr {
    let line = server
        .stderr
        .wait_line("the admin listener", 0, |l| l.contains("admin listener"));
    line.split("admin=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}

/// `GET path` on the admin listener at `addr`: the body of a 200.
fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    let (status, body) = crate::common::binary::http_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `outbox list --data-dir data`'s lines (exit 0 asserted).
fn outbox_list(data: &Path) -> Vec<String> {
    let out = command()
        .args(["outbox", "list", "--data-dir"])
        .arg(data)
        .output()
        .expect("run outbox list");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    stdout.lines().map(str::to_owned).collect()
}

#[test]
fn past_max_running_when_full_drop_refuses_a_start_and_frees_its_room() {
    let dir = TempDir::new("when-full-drop");
    let procs = dir.sub("procs");
    let data = dir.sub("data");
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            "{VERIFY}\n[[trigger]]\nname = \"solo\"\non = [\"room.client.joined\"]\nonce_per = \"room\"\nstop_on = [\"room.session.ended\"]\n{}\n",
            run_table(&procs, "term", ", max_running = 1, when_full = \"drop\"")
        ),
    );
    let server = serve(
        &config,
        &["--data-dir", data.to_str().expect("a UTF-8 path")],
    );
    let join = |id: &str, room: &str| server.send("room.client.joined", id, &["--room-name", room]);
    // The drop is logged before the webhook is answered, and nothing of a
    // dropped start runs later: its log line is the sign that it is over.
    let dropped = |id: &str| {
        server
            .stderr
            .wait_line(&format!("the drop of {id}"), 0, |l| {
                l.contains("start dropped") && has_field(l, "id", id)
            })
    };

    // Room A takes the only slot.
    assert_eq!(join("j-a", "/room-a"), "triggered");
    let a = wait_started(&procs, 1)[0].clone();

    // Room B fires (its claim was free) but its start is dropped.
    assert_eq!(join("j-b1", "/room-b"), "triggered");
    let line = dropped("j-b1");
    for needle in ["WARN", "trigger=solo", "room=acme/room-b"] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
    assert_eq!(started_in(&procs).len(), 1, "no assistant for room B");
    assert!(ASSISTANT.alive(a.pid));
    assert!(!term_marker(&procs, a.pid).exists());

    // Its claim was released: another join in B fires again (and is dropped
    // again), where a held claim would have suppressed it. A stays claimed.
    assert_eq!(join("j-b2", "/room-b"), "triggered");
    dropped("j-b2");
    assert_eq!(join("j-a2", "/room-a"), "suppressed");

    // The operator sees both drops (counted before they are logged).
    let admin = admin_addr(&server);
    let metrics = admin_get(admin, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "whereby_trigger_starts_dropped_total{trigger=\"solo\"} 2"),
        "{metrics}"
    );
    let status: Value =
        serde_json::from_str(&admin_get(admin, "/status.json")).expect("status JSON");
    assert_eq!(status["triggers"][0]["name"], "solo", "{status}");
    assert_eq!(status["triggers"][0]["starts_dropped"], 2, "{status}");
    let page = admin_get(admin, "/status");
    assert!(page.contains("<th>starts dropped</th>"), "{page}");
    // The trigger's row (the last table's only one) ends with its drops.
    assert!(
        page.contains("<td>2</td></tr></tbody></table></body>"),
        "{page}"
    );

    // The dropped deliveries are done: they leave the outbox, neither dead nor
    // pending, while A's (running) stays pending.
    let list = poll("the dropped deliveries to leave the outbox", || {
        let list = outbox_list(&data);
        (!list.iter().any(|l| l.starts_with("solo:j-b"))).then_some(list)
    });
    assert!(
        list.iter()
            .any(|l| l.starts_with("solo:j-a:") && l.contains("\tpending\t")),
        "{list:#?}"
    );
    assert_eq!(started_in(&procs).len(), 1);

    // A's session ends. Its slot frees just after its process is reaped, so a
    // join in between is still dropped: join B again until one is admitted.
    server.send("room.session.ended", "e-a", &["--room-name", "/room-a"]);
    ASSISTANT.wait_terminated(&procs, a.pid);
    let mut attempt = 0;
    let admitted = poll("a join in room B to start an assistant", || {
        attempt += 1;
        let id = format!("j-b-again-{attempt}");
        assert_eq!(join(&id, "/room-b"), "triggered");
        let line = server
            .stderr
            .wait_line(&format!("the fate of {id}"), 0, |l| {
                has_field(l, "id", &id) && (l.contains("start dropped") || l.contains(" started "))
            });
        (!line.contains("start dropped")).then_some(id)
    });
    let both = wait_started(&procs, 2);
    let b = both
        .iter()
        .find(|s| s.pid != a.pid)
        .expect("an assistant for room B");
    assert_eq!(
        b.env.get("WHEREBY_EVENT_ID").map(String::as_str),
        Some(admitted.as_str())
    );
    assert_eq!(
        b.env.get("WHEREBY_ROOM_NAME").map(String::as_str),
        Some("/room-b")
    );
    drop(server.stop());
}
