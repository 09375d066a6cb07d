//! The `run` action with real child processes: what the child gets (argv,
//! environment, stdin), what reaches the log, how it is stopped (timeout, stop
//! event, shutdown, a crashed server), and the `max_running` queue (or, with
//! `when_full = "drop"`, the refusal).
//!
//! The children are `tests/scripts/record.py`, which records how it was started,
//! and `tests/scripts/hold.sh`, which runs until told to go, handling or ignoring
//! SIGTERM. Every wait is bounded by [`TIMEOUT`]; waiting for a child means
//! polling for a file it creates or for the action's counters.
#![cfg(unix)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::fixture::{Script, TempDir, run_spec as spec};
use bytes::Bytes;
use serde_json::{Value, json};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use whereby_trigger::actions::run::{RunAction, RunSpec, StdinMode, WhenFull};
use whereby_trigger::actions::{Action, ActionEvent, ActionKind, DeliveryLedger, DeliveryTicket};
use whereby_trigger::state::claims::{ClaimHandle, ClaimKey, Claims, OncePer};
use whereby_trigger::state::room::RoomKey;

/// Upper bound of every wait: a hang fails the test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How often a bounded wait looks again.
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

/// Everything logged with a `trigger` field by any test of this crate. Tests
/// tell their lines apart by trigger name, which is unique per test.
///
/// The subscriber is the process's global default, because the action logs from
/// the tasks it spawns on the runtime's worker threads, which a subscriber set
/// for the test's own thread would not see. Every test of the crate shares this
/// process, so it records only the events that carry a `trigger` field (the only
/// ones [`logs`] can return): the other tests' logs (the server's requests,
/// connections and store) stay out of the buffer and cost nothing. Those of
/// their events that do carry a `trigger` field (an in-process rule or action on
/// a thread without a subscriber of its own) land here too, which is why the
/// trigger names used here must stay unique across the crate. A test that reads
/// its own log sets a subscriber for its thread, which takes precedence there
/// (as `forward_action` does).
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Capture(logs))
            .finish()
            .with(filter_fn(|metadata| {
                metadata.fields().field("trigger").is_some()
            }));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines tagged with `trigger`.
fn logs(trigger: &str) -> Vec<String> {
    let tag = format!("trigger={trigger} ");
    let logs = captured().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(&tag))
        .map(str::to_owned)
        .collect()
}

/// The log line of `trigger` that contains every one of `needles`, if any.
fn logged(trigger: &str, needles: &[&str]) -> Option<String> {
    logs(trigger)
        .into_iter()
        .find(|line| needles.iter().all(|needle| line.contains(needle)))
}

/// Waits until `condition` holds, failing the test (with `trigger`'s log) after
/// [`TIMEOUT`].
async fn eventually(trigger: &str, what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(TIMEOUT, async {
        while !condition() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {TIMEOUT:?} waiting for {what}; log:\n{}",
        logs(trigger).join("\n")
    );
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// What `hold.sh` leaves in a test's directory.
trait HoldDir {
    /// Lets `hold.sh NAME` finish.
    fn go(&self, name: &str);
    /// The pid `hold.sh NAME` recorded when it started.
    fn pid(&self, name: &str) -> u32;
}

impl HoldDir for TempDir {
    fn go(&self, name: &str) {
        std::fs::write(self.join(&format!("{name}.go")), b"").expect("write the go file");
    }

    fn pid(&self, name: &str) -> u32 {
        self.read(&format!("{name}.started"))
            .trim()
            .parse()
            .expect("a pid")
    }
}

/// Records how it was started (`record.py OUT ARG...`).
const RECORD: Script = Script::new("record.py");

/// Runs until told to go (`hold.sh DIR NAME [term|ignore]`); see [`HoldDir`].
const HOLD: Script = Script::new("hold.sh");

/// `hold.sh DIR {data.displayName} {data.externalId}`: each start names itself
/// by its display name and says how it takes SIGTERM in its external id.
fn hold(dir: &TempDir) -> RunSpec {
    spec(&[
        "sh",
        &HOLD.path(),
        dir.path_str(),
        "{data.displayName}",
        "{data.externalId}",
    ])
}

/// A `RunAction` of `trigger` running [`hold`] in `dir`, its spec changed by
/// `edit`.
fn hold_action(trigger: &str, dir: &TempDir, edit: impl FnOnce(&mut RunSpec)) -> Arc<RunAction> {
    let mut spec = hold(dir);
    edit(&mut spec);
    RunAction::new(trigger.into(), spec)
}

/// The sample `type` webhook, in room `/{name}`, edited by `edit`.
fn webhook(event_type: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let sample = whereby_trigger::webhook::sample::sample(event_type).expect("a sample");
    let mut v: Value = serde_json::from_str(sample).expect("sample JSON");
    v["data"]["roomName"] = json!(format!("/{name}"));
    v["id"] = json!(format!(
        "{name}-{event_type}-{}",
        v["id"].as_str().unwrap_or("")
    ));
    edit(&mut v);
    v
}

fn action_event(
    kind: ActionKind,
    trigger: &str,
    webhook: &Value,
    claim: Option<ClaimHandle>,
) -> Arc<ActionEvent> {
    let raw = Bytes::from(webhook.to_string());
    let parsed = whereby_trigger::webhook::parse(&raw).expect("a valid webhook");
    let mut event = ActionEvent::new(kind, trigger, parsed, raw);
    let room = event.room.as_ref().expect("an in-room event");
    assert_eq!(
        event.room_url,
        Some(format!(
            "https://{}.whereby.com{}",
            room.subdomain, room.room_name
        ))
    );
    event.claim = claim;
    Arc::new(event)
}

/// A start of `trigger` in room `/{name}` by a participant called `name`, with
/// its once-per-room claim.
fn start(
    claims: &Arc<Claims>,
    trigger: &str,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> (Arc<ActionEvent>, ClaimHandle) {
    let webhook = webhook("room.client.joined", name, |v| {
        v["data"]["displayName"] = json!(name);
        v["data"]["externalId"] = json!("term");
        edit(v);
    });
    let room = RoomKey {
        subdomain: "acme".into(),
        room_name: format!("/{name}").into(),
    };
    let key = ClaimKey::new(trigger.into(), OncePer::Room, room, "unused", None);
    let claim = claims
        .try_claim(key, Duration::from_secs(3600), Instant::now())
        .expect("a free claim");
    let event = action_event(ActionKind::Start, trigger, &webhook, Some(claim.clone()));
    (event, claim)
}

/// Makes the [`hold`] child of a [`start`] ignore SIGTERM.
fn ignore_term(v: &mut Value) {
    v["data"]["externalId"] = json!("ignore");
}

/// [`start`]s of `trigger` in the rooms `names`, unedited: every claim is taken
/// first, then the starts are given to `action` in that order. Returns the
/// claims.
fn start_all<const N: usize>(
    action: &RunAction,
    claims: &Arc<Claims>,
    trigger: &str,
    names: [&str; N],
) -> [ClaimHandle; N] {
    let starts = names.map(|name| start(claims, trigger, name, |_| {}));
    starts.map(|(event, claim)| {
        action.start(event);
        claim
    })
}

/// A stop (`room.session.ended`) of `trigger` in room `/{name}`.
fn stop(trigger: &str, name: &str) -> Arc<ActionEvent> {
    let webhook = webhook("room.session.ended", name, |_| {});
    action_event(ActionKind::Stop, trigger, &webhook, None)
}

/// What became of deliveries, in order: `done ID`, `dead ID`, `released ID
/// finished|pending`.
#[derive(Default)]
struct Ledger(Mutex<Vec<String>>);

impl Ledger {
    fn push(&self, entry: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DeliveryLedger for Ledger {
    fn done(&self, id: &str) {
        self.push(format!("done {id}"));
    }
    fn attempted(&self, id: &str, attempts: u32, _: &str, _: Option<i64>) {
        self.push(format!("attempted {id} {attempts}"));
    }
    fn dead(&self, id: &str, _: &str) {
        self.push(format!("dead {id}"));
    }
    fn released(&self, id: &str, finished: bool) {
        let how = if finished { "finished" } else { "pending" };
        self.push(format!("released {id} {how}"));
    }
}

/// `event` carrying delivery `id`, whose fate goes to `ledger`.
fn delivered(event: Arc<ActionEvent>, id: &str, ledger: &Arc<Ledger>) -> Arc<ActionEvent> {
    let mut event = Arc::unwrap_or_clone(event);
    let ledger: Arc<dyn DeliveryLedger> = ledger.clone();
    event.delivery = Some(DeliveryTicket::new(id.to_owned(), 0, 0, ledger));
    Arc::new(event)
}

fn held(claim: &ClaimHandle) -> bool {
    claim.is_held(Instant::now())
}

fn record(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the record")).expect("JSON")
}

// ---------------------------------------------------------------------------
// What the child gets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_its_arguments_environment_and_the_event_on_stdin() {
    const T: &str = "record-args";
    captured();
    let dir = TempDir::new(T);
    let out = dir.join("record.json");
    let tricky = r#"Ada "the countess" O'Lovelace; rm -rf / $(id) *"#;
    let action = RunAction::new(
        T.into(),
        spec(&[
            "python3",
            &RECORD.path(),
            out.to_str().unwrap(),
            "--room={roomUrl}",
            "{id}",
            "{type}",
            "{trigger}",
            "{data.displayName}",
            "name={data.displayName}!",
            "{data.metadata}",
            "{{literal}}",
        ]),
    );
    let claims = Claims::new();
    let (event, claim) = start(&claims, T, "standup", |v| {
        v["data"]["displayName"] = json!(tricky);
    });
    action.start(event.clone());

    eventually(T, "the record", || out.exists()).await;
    eventually(T, "the claim to be released", || !held(&claim)).await;
    eventually(T, "the slot to be freed", || action.running() == 0).await;

    let record = record(&out);
    let id = event.event_id();
    let room_url = "https://acme.whereby.com/standup";
    assert_eq!(
        record["argv"],
        json!([
            format!("--room={room_url}"),
            id,
            "room.client.joined",
            T,
            tricky,
            format!("name={tricky}!"),
            "",
            "{literal}",
        ])
    );

    let env = &record["env"];
    assert_eq!(env["WHEREBY_ROOM_URL"], room_url);
    assert_eq!(env["WHEREBY_EVENT_ID"], id);
    assert_eq!(env["WHEREBY_EVENT_TYPE"], "room.client.joined");
    assert_eq!(env["WHEREBY_TRIGGER"], T);
    assert_eq!(env["WHEREBY_SUBDOMAIN"], "acme");
    assert_eq!(env["WHEREBY_ROOM_NAME"], "/standup");
    assert_eq!(
        env["WHEREBY_ROOM_SESSION_ID"],
        "c1b5e7a0-8d2f-4b6e-9a41-2f7d3e5c9b10"
    );
    // On top of the server's own environment, not instead of it.
    assert_eq!(
        env.get("HOME"),
        std::env::var("HOME").ok().map(Value::from).as_ref()
    );

    assert_eq!(record["stdin_is_devnull"], false);
    let stdin = record["stdin"].as_str().unwrap();
    assert!(
        stdin.ends_with('\n'),
        "one document and a newline: {stdin:?}"
    );
    assert_eq!(stdin.trim_end().lines().count(), 1, "{stdin:?}");
    let sent: Value = serde_json::from_str(stdin).unwrap();
    assert_eq!(sent["action"], "start");
    assert_eq!(sent["trigger"], T);
    assert_eq!(sent["roomUrl"], room_url);
    assert_eq!(sent["triggerWebhook"]["id"], id);
    assert_eq!(sent["triggerWebhook"]["data"]["displayName"], tricky);

    // Output and exit are logged, tagged with trigger, room and pid.
    for (what, needles) in [
        (
            "stdout",
            ["INFO", "record: hello on stdout", "stream=\"stdout\""],
        ),
        (
            "stderr",
            ["WARN", "record: hello on stderr", "stream=\"stderr\""],
        ),
        ("the exit", ["INFO", "exited", "code=0"]),
    ] {
        let needles = [&needles[..], &["room=acme/standup", "pid="]].concat();
        eventually(T, what, || logged(T, &needles).is_some()).await;
    }
}

#[tokio::test]
async fn stdin_none_gives_the_child_dev_null() {
    const T: &str = "record-no-stdin";
    captured();
    let dir = TempDir::new(T);
    let out = dir.join("record.json");
    let mut spec = spec(&["python3", &RECORD.path(), out.to_str().unwrap()]);
    spec.stdin = StdinMode::None;
    let action = RunAction::new(T.into(), spec);
    let claims = Claims::new();
    // A room without a session: the variable is there, empty.
    let (event, claim) = start(&claims, T, "standup", |v| {
        v["data"]["roomSessionId"] = Value::Null;
    });
    action.start(event);

    eventually(T, "the record", || out.exists()).await;
    eventually(T, "the claim to be released", || !held(&claim)).await;
    let record = record(&out);
    assert_eq!(record["stdin_is_devnull"], true);
    assert_eq!(record["stdin"], "");
    assert_eq!(record["env"]["WHEREBY_ROOM_SESSION_ID"], "");
}

#[tokio::test]
async fn a_child_that_never_reads_stdin_is_fine() {
    const T: &str = "unread-stdin";
    captured();
    let action = RunAction::new(T.into(), spec(&["true"]));
    let claims = Claims::new();
    // Bigger than a pipe's buffer, so the write cannot complete before the exit.
    let big = "x".repeat(512 * 1024);
    let (event, claim) = start(&claims, T, "standup", |v| v["data"]["big"] = json!(big));
    action.start(event);

    eventually(T, "the claim to be released", || !held(&claim)).await;
    eventually(T, "the exit in the log", || {
        logged(T, &["exited", "code=0"]).is_some()
    })
    .await;
    assert_eq!(action.running(), 0);
    assert!(logged(T, &["could not write"]).is_none(), "{:?}", logs(T));
}

#[tokio::test]
async fn a_missing_command_is_logged_and_releases_its_claim() {
    const T: &str = "missing-command";
    captured();
    let action = RunAction::new(
        T.into(),
        spec(&["/nonexistent/whereby-trigger-no-such-program", "{roomUrl}"]),
    );
    let claims = Claims::new();
    let [claim] = start_all(&action, &claims, T, ["standup"]);

    eventually(T, "the claim to be released", || !held(&claim)).await;
    eventually(T, "the slot to be freed", || action.running() == 0).await;
    assert!(
        logged(
            T,
            &["ERROR", "could not start the command", "no-such-program"]
        )
        .is_some(),
        "{:?}",
        logs(T)
    );

    // The action still works afterwards.
    action.reconfigure(spec(&["true"]));
    let [claim] = start_all(&action, &claims, T, ["standup"]);
    eventually(T, "the second claim to be released", || !held(&claim)).await;
    eventually(T, "the exit in the log", || {
        logged(T, &["exited", "code=0"]).is_some()
    })
    .await;
}

// ---------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------

#[tokio::test]
async fn past_its_timeout_a_child_gets_sigterm() {
    const T: &str = "timeout-term";
    captured();
    // `sleep` dies of SIGTERM whenever it arrives, so nothing here races.
    let mut spec = spec(&["sleep", "1000"]);
    spec.timeout = Duration::from_millis(200);
    spec.stop_grace = Duration::from_secs(30);
    let action = RunAction::new(T.into(), spec);
    let claims = Claims::new();
    let [claim] = start_all(&action, &claims, T, ["standup"]);

    eventually(T, "the claim to be released", || !held(&claim)).await;
    assert_eq!(action.running(), 0);
    assert!(logged(T, &["stopping (timeout): SIGTERM"]).is_some());
    assert!(logged(T, &["killed by SIGTERM", "signal=15"]).is_some());
    assert!(logged(T, &["SIGKILL"]).is_none(), "{:?}", logs(T));
}

#[tokio::test]
async fn past_its_timeout_a_child_that_ignores_sigterm_gets_sigkill() {
    const T: &str = "timeout-kill";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| {
        spec.timeout = Duration::from_millis(500);
        spec.stop_grace = Duration::from_millis(200);
    });
    let claims = Claims::new();
    let (event, claim) = start(&claims, T, "k", ignore_term);
    action.start(event);

    eventually(T, "the claim to be released", || !held(&claim)).await;
    assert_eq!(action.running(), 0);
    assert!(logged(T, &["stopping (timeout): SIGTERM"]).is_some());
    // The timeout starts with the spawn, so a very slow shell could still get
    // SIGTERM before its `trap`: then it dies of it and never writes `k.started`.
    // Once it wrote the file, SIGTERM is ignored and only SIGKILL ends it.
    if dir.exists("k.started") {
        assert!(logged(T, &["WARN", "still running after stop_grace: SIGKILL"]).is_some());
        assert!(logged(T, &["killed by SIGKILL", "signal=9"]).is_some());
    } else {
        assert!(logged(T, &["killed by SIG"]).is_some(), "{:?}", logs(T));
    }
    assert!(!dir.exists("k.term"));
}

#[tokio::test]
async fn a_stop_ends_the_child_of_its_room_and_no_other() {
    const T: &str = "stop-room";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |_| {});
    let claims = Claims::new();
    let [claim_a, claim_b] = start_all(&action, &claims, T, ["a", "b"]);
    eventually(T, "both to start", || {
        dir.exists("a.started") && dir.exists("b.started")
    })
    .await;

    action.stop(stop(T, "a"));
    eventually(T, "a to handle SIGTERM", || dir.exists("a.term")).await;
    eventually(T, "a's claim to be released", || !held(&claim_a)).await;
    eventually(T, "a's slot to be freed", || action.running() == 1).await;
    assert!(logged(T, &["room=acme/a", "stopping (stop event): SIGTERM"]).is_some());
    assert!(logged(T, &["room=acme/a", "exited", "code=0"]).is_some());
    assert!(held(&claim_b));
    assert!(!dir.exists("b.term"));
    assert!(HOLD.alive(dir.pid("b")));

    // b runs on to its own end.
    dir.go("b");
    eventually(T, "b's claim to be released", || !held(&claim_b)).await;
    eventually(T, "b's last line in the log", || {
        logged(T, &["room=acme/b", "INFO", "b done"]).is_some()
    })
    .await;
    assert!(!dir.exists("b.term"));
    assert_eq!(action.running(), 0);
}

#[tokio::test]
async fn a_stopped_child_that_ignores_sigterm_gets_sigkill_after_stop_grace() {
    const T: &str = "stop-kill";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| spec.stop_grace = Duration::from_millis(200));
    let claims = Claims::new();
    let (event, claim) = start(&claims, T, "k", ignore_term);
    action.start(event);
    eventually(T, "the start", || dir.exists("k.started")).await;
    let pid = dir.pid("k");

    action.stop(stop(T, "k"));
    eventually(T, "the claim to be released", || !held(&claim)).await;
    assert_eq!(action.running(), 0);
    assert!(logged(T, &["stopping (stop event): SIGTERM"]).is_some());
    assert!(logged(T, &["WARN", "still running after stop_grace: SIGKILL"]).is_some());
    assert!(logged(T, &["killed by SIGKILL", "signal=9"]).is_some());
    assert!(!HOLD.alive(pid));
}

// ---------------------------------------------------------------------------
// max_running
// ---------------------------------------------------------------------------

#[tokio::test]
async fn past_max_running_starts_wait_in_order() {
    const T: &str = "fifo";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| spec.max_running = 1);
    let claims = Claims::new();
    let [claim_a, claim_b, claim_c] = start_all(&action, &claims, T, ["a", "b", "c"]);
    assert_eq!((action.running(), action.waiting()), (1, 2));

    eventually(T, "a to start", || dir.exists("a.started")).await;
    assert!(!dir.exists("b.started"));
    assert!(
        held(&claim_b) && held(&claim_c),
        "waiting starts keep their claims"
    );

    dir.go("a");
    eventually(T, "b to start", || dir.exists("b.started")).await;
    assert!(!held(&claim_a));
    assert!(!dir.exists("c.started"));
    assert_eq!((action.running(), action.waiting()), (1, 1));

    dir.go("b");
    eventually(T, "c to start", || dir.exists("c.started")).await;
    dir.go("c");
    eventually(T, "c's claim to be released", || !held(&claim_c)).await;
    eventually(T, "the last slot to be freed", || action.running() == 0).await;
    assert_eq!(dir.read("order"), "a\nb\nc\n");
    assert!(!held(&claim_b));
}

#[tokio::test]
async fn past_max_running_when_full_drop_refuses_a_start_at_once() {
    const T: &str = "when-full-drop";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| {
        spec.max_running = 1;
        spec.when_full = WhenFull::Drop;
    });
    let claims = Claims::new();
    let [claim_a] = start_all(&action, &claims, T, ["a"]);
    eventually(T, "a to start", || dir.exists("a.started")).await;

    let ledger = Arc::new(Ledger::default());
    let (b, claim_b) = start(&claims, T, "b", |_| {});
    action.start(delivered(b, "delivery-b", &ledger));
    // Refused before `start` returned: nothing waits, the claim is free for a
    // later event, and the delivery is done (not dead, not left pending).
    assert!(!held(&claim_b));
    assert_eq!(
        (action.running(), action.waiting(), action.dropped()),
        (1, 0, 1)
    );
    assert_eq!(
        ledger.entries(),
        ["done delivery-b", "released delivery-b finished"]
    );
    let line = logged(T, &["start dropped", "room=acme/b"]);
    let line = line.unwrap_or_else(|| panic!("no drop in the log: {:#?}", logs(T)));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("id=\"b-room.client.joined-"), "{line}");
    // a runs on, untouched.
    assert!(held(&claim_a));
    assert!(HOLD.alive(dir.pid("a")));
    assert!(!dir.exists("a.term"));

    // Once a's slot is free, the next start runs.
    dir.go("a");
    eventually(T, "a's claim to be released", || !held(&claim_a)).await;
    eventually(T, "a's slot to be freed", || action.running() == 0).await;
    let [claim_c] = start_all(&action, &claims, T, ["c"]);
    eventually(T, "c to start", || dir.exists("c.started")).await;
    dir.go("c");
    eventually(T, "c's claim to be released", || !held(&claim_c)).await;
    assert_eq!(dir.read("order"), "a\nc\n");
    assert_eq!(action.dropped(), 1);
}

#[tokio::test]
async fn a_reconfigured_when_full_applies_to_later_starts() {
    const T: &str = "when-full-reconfigure";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| spec.max_running = 1);
    let claims = Claims::new();
    let [claim_a, claim_b] = start_all(&action, &claims, T, ["a", "b"]);
    eventually(T, "a to start", || dir.exists("a.started")).await;
    assert_eq!(action.waiting(), 1);

    // To `drop`: b, which already waits, keeps its place; c is refused.
    let mut dropping = hold(&dir);
    dropping.max_running = 1;
    dropping.when_full = WhenFull::Drop;
    action.reconfigure(dropping);
    let [claim_c] = start_all(&action, &claims, T, ["c"]);
    assert!(!held(&claim_c));
    assert!(held(&claim_b));
    assert_eq!((action.waiting(), action.dropped()), (1, 1));

    // Back to `wait`: d waits behind b.
    let mut waiting = hold(&dir);
    waiting.max_running = 1;
    action.reconfigure(waiting);
    let [claim_d] = start_all(&action, &claims, T, ["d"]);
    assert!(held(&claim_d));
    assert_eq!((action.waiting(), action.dropped()), (2, 1));

    dir.go("a");
    eventually(T, "b to start", || dir.exists("b.started")).await;
    dir.go("b");
    eventually(T, "d to start", || dir.exists("d.started")).await;
    dir.go("d");
    eventually(T, "d's claim to be released", || !held(&claim_d)).await;
    eventually(T, "the last slot to be freed", || action.running() == 0).await;
    assert_eq!(dir.read("order"), "a\nb\nd\n");
    assert!(!held(&claim_a) && !held(&claim_b));
}

#[tokio::test]
async fn a_stop_cancels_the_waiting_starts_of_its_room() {
    const T: &str = "stop-waiting";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| spec.max_running = 1);
    let claims = Claims::new();
    let [claim_x1, claim_y] = start_all(&action, &claims, T, ["x", "y"]);
    eventually(T, "x to start", || dir.exists("x.started")).await;
    // A second start in room x (a new session, say), waiting behind y.
    let webhook = webhook("room.client.joined", "x", |v| {
        v["id"] = json!("x-second");
        v["data"]["displayName"] = json!("x2");
        v["data"]["externalId"] = json!("term");
    });
    let x = RoomKey {
        subdomain: "acme".into(),
        room_name: "/x".into(),
    };
    let key = ClaimKey::new(T.into(), OncePer::Event, x, "x-second", None);
    let claim_x2 = claims
        .try_claim(key, Duration::from_secs(3600), Instant::now())
        .unwrap();
    action.start(action_event(
        ActionKind::Start,
        T,
        &webhook,
        Some(claim_x2.clone()),
    ));
    assert_eq!(action.waiting(), 2);

    action.stop(stop(T, "x"));
    // The waiting start is cancelled at once; the running one is stopped.
    assert!(!held(&claim_x2));
    assert_eq!(action.waiting(), 1);
    eventually(T, "x to handle SIGTERM", || dir.exists("x.term")).await;
    eventually(T, "y to start", || dir.exists("y.started")).await;
    assert!(!held(&claim_x1));
    assert_eq!(action.waiting(), 0);

    dir.go("y");
    eventually(T, "y's claim to be released", || !held(&claim_y)).await;
    eventually(T, "the last slot to be freed", || action.running() == 0).await;
    assert_eq!(dir.read("order"), "x\ny\n");
    assert!(logged(T, &["start cancelled before it ran: stop event"]).is_some());
}

#[tokio::test]
async fn reconfigure_applies_to_new_starts_and_leaves_running_ones_alone() {
    const T: &str = "reconfigure";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| spec.max_running = 1);
    let claims = Claims::new();
    let [claim_a, _, claim_c] = start_all(&action, &claims, T, ["a", "b", "c"]);
    eventually(T, "a to start", || dir.exists("a.started")).await;
    assert_eq!(action.waiting(), 2);

    // More room: b starts at once.
    let mut two = hold(&dir);
    two.max_running = 2;
    action.reconfigure(two);
    assert_eq!((action.running(), action.waiting()), (2, 1));
    eventually(T, "b to start", || dir.exists("b.started")).await;

    // Less room, and another command: it applies as children end, and to c,
    // which has not started yet.
    let mut renamed = spec(&["sh", &HOLD.path(), dir.path_str(), "new-{data.displayName}"]);
    renamed.max_running = 1;
    action.reconfigure(renamed);
    assert_eq!((action.running(), action.waiting()), (2, 1));
    dir.go("a");
    eventually(T, "a's claim to be released", || !held(&claim_a)).await;
    eventually(T, "a's slot to be freed", || action.running() == 1).await;
    assert_eq!(action.waiting(), 1, "b still fills the only slot");

    dir.go("b");
    eventually(T, "c to start, renamed", || dir.exists("new-c.started")).await;
    dir.go("new-c");
    eventually(T, "c's claim to be released", || !held(&claim_c)).await;
    assert_eq!(dir.read("order"), "a\nb\nnew-c\n");
    assert!(!dir.exists("c.started"));
}

// ---------------------------------------------------------------------------
// Shutdown and crashes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_child_and_drops_waiting_starts() {
    const T: &str = "shutdown";
    captured();
    let dir = TempDir::new(T);
    let action = hold_action(T, &dir, |spec| {
        spec.max_running = 2;
        spec.stop_grace = Duration::from_millis(300);
    });
    let claims = Claims::new();
    let (polite, claim_polite) = start(&claims, T, "polite", |_| {});
    let (stubborn, claim_stubborn) = start(&claims, T, "stubborn", ignore_term);
    let (waiting, claim_waiting) = start(&claims, T, "waiting", |_| {});
    action.start(polite);
    action.start(stubborn);
    action.start(waiting);
    eventually(T, "both to start", || {
        dir.exists("polite.started") && dir.exists("stubborn.started")
    })
    .await;
    let pids = [dir.pid("polite"), dir.pid("stubborn")];

    let stopped = tokio::time::timeout(TIMEOUT, action.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown hung; log:\n{}",
        logs(T).join("\n")
    );
    assert_eq!((action.running(), action.waiting()), (0, 0));
    assert!(dir.exists("polite.term"));
    assert!(!dir.exists("waiting.started"));
    // The running assistants' claims are kept: the server is going away, not
    // the meeting, so the next start of the server runs them again. A start that
    // never ran gives its claim up.
    for claim in [&claim_polite, &claim_stubborn] {
        assert!(held(claim), "{}", claim.key());
    }
    assert!(!held(&claim_waiting), "{}", claim_waiting.key());
    for pid in pids {
        assert!(!HOLD.alive(pid), "{pid} survived shutdown");
    }
    assert!(logged(T, &["room=acme/stubborn", "killed by SIGKILL"]).is_some());

    // After shutdown nothing starts; the claim is not kept.
    let (late, claim_late) = start(&claims, T, "late", |_| {});
    action.start(late);
    assert!(!held(&claim_late));
    assert_eq!((action.running(), action.waiting()), (0, 0));
}

/// Set, to a directory, in the environment of the `crash_helper` process that
/// `children_die_when_the_server_is_killed` starts and kills.
#[cfg(target_os = "linux")]
const CRASH_DIR: &str = "WHEREBY_RUN_ACTION_CRASH_DIR";

/// The "server" of `children_die_when_the_server_is_killed`: starts a child and
/// waits to be killed. Does nothing unless started by that test.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by children_die_when_the_server_is_killed"]
async fn crash_helper() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let dir = dir.to_str().unwrap().to_owned();
    let action = RunAction::new("crash".into(), spec(&["sh", &HOLD.path(), &dir, "orphan"]));
    let claims = Claims::new();
    let (event, _claim) = start(&claims, "crash", "orphan", |_| {});
    action.start(event);
    // Killed long before this, unless the test that started it went away.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn children_die_when_the_server_is_killed() {
    const T: &str = "crash";
    // Should the test fail, removing the directory ends a surviving child.
    let dir = TempDir::new(T);

    // The helper is a test of this crate, named by its module path without the
    // crate's name (`run_action::crash_helper`): `--exact` needs the full name.
    let (_crate, module) = module_path!()
        .split_once("::")
        .expect("a module of the crate");
    let helper = format!("{module}::crash_helper");
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .args([helper.as_str(), "--exact", "--ignored", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the helper server");
    let started = tokio::time::timeout(TIMEOUT, async {
        while !dir.exists("orphan.started") {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    if started.is_err() {
        let _ = server.kill();
        let _ = server.wait();
        panic!("the helper's child did not start within {TIMEOUT:?}");
    }
    let pid = dir.pid("orphan");
    assert!(HOLD.alive(pid));

    // SIGKILL: no destructor, no kill_on_drop, only the kernel's death signal.
    server.kill().expect("kill the helper");
    server.wait().expect("reap the helper");
    let died = tokio::time::timeout(TIMEOUT, async {
        while HOLD.alive(pid) {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert!(died.is_ok(), "child {pid} outlived its server");
    assert!(!dir.exists("orphan.term"), "killed, not asked to stop");
}
