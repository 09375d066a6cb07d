//! Fault tests (issue 4, section 4) against the real `whereby-trigger` binary
//! with a durable store: a server killed with SIGKILL after answering, a
//! `forward` target that is down and then failing, a store that cannot be
//! written, assistants that crash, a restart with a claimed room, and the
//! `outbox` command on a running server.
//!
//! Everything is on loopback. Each test has a temporary directory of its own
//! (its data directory, config and assistants' files). No test sleeps to
//! synchronise: every wait is for a log line, a file, a request, a row of the
//! store or an exit, polled or woken, and bounded by `common::binary::WAIT`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use whereby_trigger::webhook::time::format_rfc3339_millis;

use crate::common::binary::{
    Lines, Server, WAIT, capture, loopback_command, poll, text, wait_with_deadline,
};
use crate::common::fixture::{Script, TempDir, term_marker, toml_str as q};
use crate::common::post_signed_blocking;
use crate::common::receiver::Receiver;
use serde_json::Value;

/// The signing secret of every config here.
const SECRET: &str = "whsec_faults_3c8e51a0d7";

/// The database file in a data directory.
const DB_FILE: &str = whereby_trigger::store::DB_FILE;

// ---------------------------------------------------------------------------
// Temporary directories and configs.

/// What the fault tests keep in their directory.
trait FaultDir {
    /// The data directory (created by the server on first start).
    fn data(&self) -> PathBuf;
    /// Writes `config` (after the `[verify]` section) to `whereby-trigger.toml`.
    fn config(&self, config: &str) -> PathBuf;
}

impl FaultDir for TempDir {
    fn data(&self) -> PathBuf {
        self.join("data")
    }

    fn config(&self, config: &str) -> PathBuf {
        self.write(
            "whereby-trigger.toml",
            &format!("[verify]\nsecrets = [{}]\n{config}", q(SECRET)),
        )
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

// ---------------------------------------------------------------------------
// The binary.

/// `serve --config config --data-dir data`, waiting until it listens.
fn serve(config: &Path, data: &Path) -> Server {
    Server::start_from(
        loopback_command(),
        [
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
    )
}

/// SIGKILLs `server` and waits for it to be gone.
fn kill9(mut server: Server) {
    server.signal("KILL");
    let status = wait_with_deadline(&mut server.child);
    assert!(!status.success(), "a SIGKILLed server exited with {status}");
}

/// `whereby-trigger outbox ARGS --data-dir data`, waited for (bounded).
fn outbox(data: &Path, args: &[&str]) -> Output {
    store_command("outbox", data, args)
}

/// `whereby-trigger COMMAND ARGS --data-dir data`, one of the operator's
/// commands on a data directory (with the config's secret in the environment,
/// for `quarantine replay`), waited for (bounded).
fn store_command(command: &str, data: &Path, args: &[&str]) -> Output {
    let mut child = loopback_command()
        .arg(command)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("WHEREBY_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command}: {e}"));
    let stdout = capture(child.stdout.take().expect("stdout"));
    let stderr = capture(child.stderr.take().expect("stderr"));
    let status = wait_with_deadline(&mut child);
    stdout.wait_closed("the command's stdout");
    stderr.wait_closed("the command's stderr");
    let joined = |lines: Vec<String>| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    Output {
        status,
        stdout: joined(stdout.snapshot()).into_bytes(),
        stderr: joined(stderr.snapshot()).into_bytes(),
    }
}

/// `outbox ARGS`, which must succeed; returns its stdout.
#[track_caller]
fn outbox_ok(data: &Path, args: &[&str]) -> String {
    let out = outbox(data, args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "outbox {args:?} failed: {stdout}{}",
        text(&out.stderr)
    );
    stdout
}

/// `outbox list`'s lines (exit 0 asserted).
fn outbox_list(data: &Path) -> Vec<String> {
    outbox_ok(data, &["list"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `outbox list` line of the delivery whose id starts with `prefix`.
fn outbox_line(lines: &[String], prefix: &str) -> Option<String> {
    lines.iter().find(|l| l.starts_with(prefix)).cloned()
}

/// Stderr lines that contain every one of `needles`.
fn log_lines(lines: &Lines, needles: &[&str]) -> Vec<String> {
    lines
        .snapshot()
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// The value of field `name` (`name=value`, up to the next space) in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"'))
}

// ---------------------------------------------------------------------------
// Webhooks, posted by the test itself (so that a retry can follow an answer at
// once), signed as Whereby does.

/// An answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    took: Duration,
}

impl Answer {
    fn outcome(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["outcome"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[track_caller]
    fn assert_outcome(&self, outcome: &str) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.outcome(), outcome, "{self:?}");
    }
}

/// The sample of `event_type` with `id`, created now (as Whereby would send
/// it: `forward` gives up on events older than its `max_age`).
fn webhook(event_type: &str, id: &str) -> String {
    crate::common::sample_with(event_type, |v| {
        v["id"] = Value::from(id);
        v["createdAt"] = Value::from(iso8601_now());
    })
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso8601_now() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    format_rfc3339_millis(i64::try_from(millis).expect("a sane clock"))
}

/// POSTs `body` to the server at `addr`, signed with `secret`, over a fresh
/// connection; the wait is bounded.
fn post_signed_with(addr: SocketAddr, body: &str, secret: &str) -> Answer {
    let started = Instant::now();
    let reply = post_signed_blocking(addr, secret, body);
    Answer {
        status: reply.status.as_u16(),
        body: reply.body,
        took: started.elapsed(),
    }
}

/// POSTs the sample of `event_type` with `id`, signed with the config's secret.
fn post(server: &Server, event_type: &str, id: &str) -> Answer {
    post_signed_with(server.addr, &webhook(event_type, id), SECRET)
}

// ---------------------------------------------------------------------------
// Assistants: tests/scripts/fault_assistant.sh records into a directory.

/// The assistant script of these tests.
const ASSISTANT: Script = Script::new("fault_assistant.sh");

/// A `run = { ... }` table starting the script in `mode`; `extra` adds keys.
fn run_table(procs: &Path, mode: &str, extra: &str) -> String {
    format!(
        "run = {{ command = [\"sh\", {}, {}, {}], stdin = \"none\"{extra} }}",
        q(ASSISTANT.path()),
        q(path_str(procs)),
        q(mode)
    )
}

/// The `(pid, event id)` of every `<prefix>-PID` file in `procs`, by pid.
fn records(procs: &Path, prefix: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir(procs)
        .expect("read the procs dir")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()?;
            let event = std::fs::read_to_string(entry.path()).ok()?;
            Some((pid, event.trim().to_owned()))
        })
        .collect();
    found.sort();
    found
}

/// Every assistant that started (crashing or not).
fn starts(procs: &Path) -> Vec<(u32, String)> {
    records(procs, "start")
}

/// Every assistant that got past its start and holds.
fn holders(procs: &Path) -> Vec<(u32, String)> {
    records(procs, "running")
}

/// Polls until at least `n` assistants hold; returns them all.
fn wait_holders(procs: &Path, n: usize) -> Vec<(u32, String)> {
    poll(
        &format!("{n} holding assistant(s) in {}", procs.display()),
        || {
            let found = holders(procs);
            (found.len() >= n).then_some(found)
        },
    )
}

/// Polls until at least `n` assistants started; returns them all.
fn wait_starts(procs: &Path, n: usize) -> Vec<(u32, String)> {
    poll(
        &format!("{n} assistant start(s) in {}", procs.display()),
        || {
            let found = starts(procs);
            (found.len() >= n).then_some(found)
        },
    )
}

/// The live holding assistants.
fn alive_holders(procs: &Path) -> Vec<(u32, String)> {
    holders(procs)
        .into_iter()
        .filter(|(pid, _)| ASSISTANT.alive(*pid))
        .collect()
}

/// How many claims the store holds, read as another process would.
fn stored_claims(data: &Path) -> i64 {
    let conn = rusqlite::Connection::open(data.join(DB_FILE)).expect("open the store");
    conn.busy_timeout(WAIT).expect("busy timeout");
    conn.query_row("SELECT count(*) FROM claims", [], |row| row.get(0))
        .expect("count the claims")
}

fn wait_no_stored_claims(data: &Path) {
    poll("the store to hold no claim", || {
        (stored_claims(data) == 0).then_some(())
    });
}

// ===========================================================================
// 1. kill -9 after answering, before the forward target is reachable

#[test]
fn events_answered_before_a_kill_9_are_forwarded_after_the_restart() {
    let dir = TempDir::new("kill9");
    let data = dir.data();
    let target = Receiver::closed();
    let config = dir.config(&format!(
        "\n[[trigger]]\nname = \"relay\"\non = [\"room.client.joined\"]\nforward = {{ url = {}, timeout = \"2s\" }}\n",
        q(target.url())
    ));

    let server = serve(&config, &data);
    let ids: Vec<String> = (1..=5).map(|n| format!("k9-joined-{n}")).collect();
    for id in &ids {
        post(&server, "room.client.joined", id).assert_outcome("triggered");
    }
    // Rejected: a wrong signature. Not matched: a type no trigger listens to.
    // A duplicate of an answered id. None of these may be delivered.
    let forged = post_signed_with(
        server.addr,
        &webhook("room.client.joined", "k9-forged"),
        "whsec_not_the_secret",
    );
    assert_eq!(forged.status, 401, "{forged:?}");
    let left = post(&server, "room.client.left", "k9-left");
    assert_eq!(left.status, 200, "{left:?}");
    assert_ne!(left.outcome(), "triggered", "{left:?}");
    post(&server, "room.client.joined", &ids[0]).assert_outcome("duplicate");
    // Answered 2xx, the target unreachable: SIGKILL, no chance to clean up.
    kill9(server);

    // The store kept every answered delivery, and only those.
    let lines = outbox_list(&data);
    let pending: Vec<&String> = lines.iter().filter(|l| l.contains("\tpending\t")).collect();
    assert_eq!(pending.len(), ids.len(), "{lines:#?}");
    for id in &ids {
        assert!(
            outbox_line(&lines, &format!("relay:{id}:")).is_some(),
            "{id} is not queued: {lines:#?}"
        );
    }

    // The target comes up, then the server on the same data directory.
    target.listen();
    let server = serve(&config, &data);
    let keys: Vec<String> = ids.iter().map(|id| format!("relay:{id}")).collect();
    let hits = target.wait_delivered(&keys);
    server.stderr.wait_line("the resume in the log", 0, |l| {
        l.contains("resuming a pending delivery")
    });
    let restored = server
        .stderr
        .wait_line("the restore line", 0, |l| l.contains("state restored"));
    assert_eq!(field(&restored, "pending"), Some("5"), "{restored}");
    assert_eq!(field(&restored, "ids"), Some("6"), "{restored}");

    // A graceful stop: the done deliveries leave the store for good.
    let stopped = server.stop();
    let delivered = target.delivered();
    let expected: Vec<&String> = keys.iter().collect();
    assert_eq!(
        delivered.keys().collect::<Vec<_>>(),
        expected,
        "only the answered triggering events are delivered: {hits:#?}"
    );
    for hit in &target.received() {
        let id = hit.key().strip_prefix("relay:").expect("the trigger's key");
        let body = hit.json();
        assert_eq!(body["action"], "start", "{hit:?}");
        assert_eq!(body["trigger"], "relay", "{hit:?}");
        assert_eq!(body["triggerWebhook"]["id"], id, "{hit:?}");
    }
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!("kill -9: deliveries per Idempotency-Key {delivered:?} ({duplicates} duplicate(s))");
    assert!(
        delivered.values().all(|n| *n >= 1),
        "{delivered:?}\n{:#?}",
        stopped.stderr
    );
    assert_eq!(
        outbox_list(&data),
        ["the outbox is empty"],
        "{:#?}",
        stopped.stderr
    );
}

// ===========================================================================
// 2. a forward target that is down, then answers 500, then recovers

/// The longest wait the default retry policy may draw after failed attempt
/// `attempt`: 250 ms doubling, up to 30 s.
fn ceiling_ms(attempt: u64) -> u64 {
    (250u64 << (attempt - 1).min(16)).min(30_000)
}

#[test]
fn a_target_down_then_failing_then_back_gets_everything_with_backoff() {
    let dir = TempDir::new("flaky-target");
    let data = dir.data();
    // Two 500s for every key once it listens; then 200.
    let target = Receiver::closed();
    target.answer_with(|_, before| if before < 2 { (500, None) } else { (200, None) });
    let config = dir.config(&format!(
        "\n[[trigger]]\nname = \"relay\"\non = [\"room.client.joined\"]\nforward = {{ url = {}, timeout = \"2s\" }}\n",
        q(target.url())
    ));
    let server = serve(&config, &data);
    let started = Instant::now();
    let ids: Vec<String> = (1..=3).map(|n| format!("flaky-{n}")).collect();
    let keys: Vec<String> = ids.iter().map(|id| format!("relay:{id}")).collect();
    for id in &ids {
        post(&server, "room.client.joined", id).assert_outcome("triggered");
    }

    // Down: every delivery fails twice to connect, and backs off.
    // (The check reads the lines it is given: the stream is locked meanwhile.)
    server
        .stderr
        .wait_until("two failed attempts of every delivery", |lines| {
            keys.iter().all(|key| {
                let needle = format!("idempotency_key={key} ");
                lines.iter().any(|l| {
                    l.contains("forward attempt failed; retrying")
                        && l.contains(&needle)
                        && field(l, "attempt") == Some("2")
                })
            })
        });
    // While it is down, `outbox list` shows them pending with their last error.
    let lines = poll("the failed attempts in the outbox", || {
        let lines = outbox_list(&data);
        ids.iter()
            .all(|id| {
                outbox_line(&lines, &format!("relay:{id}:")).is_some_and(|l| {
                    l.contains("\tpending\t")
                        && !l.contains("attempts=0")
                        && l.contains("last_error=")
                })
            })
            .then_some(lines)
    });
    assert!(lines.iter().all(|l| !l.contains("\tdead\t")), "{lines:#?}");

    // Up, but failing with 500s for a while; then recovered.
    target.listen();
    let hits = target.wait_delivered(&keys);
    let elapsed = started.elapsed();
    assert!(elapsed < WAIT, "took {elapsed:?}");

    for key in &keys {
        let statuses: Vec<u16> = hits
            .iter()
            .filter(|h| h.key() == key)
            .map(|h| h.status)
            .collect();
        assert_eq!(&statuses[..3], [500, 500, 200], "{key}: {statuses:?}");
        // The backoff, in the log: one line per failed attempt, attempts
        // counting up, each wait within the policy's ceiling.
        let retries = log_lines(
            &server.stderr,
            &[
                "forward attempt failed; retrying",
                &format!("idempotency_key={key} "),
            ],
        );
        let mut attempts = Vec::new();
        for line in &retries {
            let attempt: u64 = field(line, "attempt")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no attempt in {line}"));
            let delay: u64 = field(line, "delay_ms")
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("no delay_ms in {line}"));
            assert!(
                delay <= ceiling_ms(attempt),
                "attempt {attempt} waited {delay} ms: {line}"
            );
            attempts.push(attempt);
        }
        let expected: Vec<u64> = (1..=attempts.len() as u64).collect();
        assert_eq!(attempts, expected, "{retries:#?}");
        // At least two refused connections and the two 500s.
        assert!(retries.len() >= 4, "{retries:#?}");
        assert_eq!(
            retries.iter().filter(|l| l.contains("HTTP 500")).count(),
            2,
            "{retries:#?}"
        );
        let delivered = server.stderr.wait_line("the delivery line", 0, |l| {
            l.contains("forward delivered") && l.contains(&format!("idempotency_key={key} "))
        });
        assert_eq!(
            field(&delivered, "attempts"),
            Some(retries.len() + 1).map(|n| n.to_string()).as_deref(),
            "{delivered}"
        );
    }
    let waited: u64 = log_lines(&server.stderr, &["forward attempt failed; retrying"])
        .iter()
        .filter_map(|l| field(l, "delay_ms")?.parse::<u64>().ok())
        .sum();
    assert!(waited > 0, "no backoff at all");

    // Delivered means done: the outbox empties.
    poll("the outbox to empty", || {
        (outbox_list(&data) == ["the outbox is empty"]).then_some(())
    });
    let stopped = server.stop();
    let delivered = target.delivered();
    eprintln!(
        "flaky target: all delivered after {elapsed:?}; 2xx per key {delivered:?}; {waited} ms of backoff in all"
    );
    assert_eq!(delivered.len(), keys.len(), "{:#?}", stopped.stderr);
}

// ===========================================================================
// 3. a store that cannot be written: 503, nothing fires; the retry fires once

/// Holds the store's write lock, as another writer would, until dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(data: &Path) -> WriteLock {
        let conn = rusqlite::Connection::open(data.join(DB_FILE)).expect("open the store");
        conn.busy_timeout(WAIT).expect("busy timeout");
        conn.execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the lock");
    }
}

/// A trigger that forwards to `target` and prints every event.
fn locked_config(dir: &TempDir, target: &Receiver) -> PathBuf {
    dir.config(&format!(
        "\n[[trigger]]\nname = \"locked\"\non = [\"room.client.joined\"]\nforward = {{ url = {}, timeout = \"2s\" }}\nstdout = true\n",
        q(target.url())
    ))
}

/// Starts the server, fires one event through it and waits until that
/// delivery has left the store, so that nothing is waiting to be written.
fn serve_settled(config: &Path, data: &Path, target: &Receiver, id: &str) -> Server {
    let server = serve(config, data);
    post(&server, "room.client.joined", id).assert_outcome("triggered");
    target.wait_delivered(&[format!("locked:{id}")]);
    poll("the outbox to empty", || {
        (outbox_list(data) == ["the outbox is empty"]).then_some(())
    });
    server
}

#[test]
fn a_store_that_cannot_be_written_answers_503_and_fires_nothing() {
    let dir = TempDir::new("locked-store");
    let data = dir.data();
    let target = Receiver::start();
    let config = locked_config(&dir, &target);
    let server = serve_settled(&config, &data, &target, "lock-0");

    let lock = WriteLock::take(&data);
    let mark = server.stderr.len();
    let answer = post(&server, "room.client.joined", "lock-1");
    eprintln!(
        "locked store: answered {} {:?} after {:?}",
        answer.status, answer.body, answer.took
    );
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        ["store_unavailable", "deadline"].contains(&answer.code().as_str()),
        "{answer:?}"
    );
    assert!(
        answer.took < Duration::from_secs(5),
        "answered after Whereby gave up (5 s): {answer:?}"
    );
    // The commit is given up (busy timeout), and then nothing fired.
    server.stderr.wait_line("the failed commit", mark, |l| {
        l.contains("store commit failed")
    });
    assert_eq!(
        target.received().len(),
        1,
        "an action ran for a 503: {:#?}",
        target.received()
    );
    assert_eq!(server.stdout.len(), 1, "{:#?}", server.stdout.snapshot());

    // The store is writable again: Whereby's retry (same id) fires, once.
    lock.release();
    post(&server, "room.client.joined", "lock-1").assert_outcome("triggered");
    target.wait_delivered(&["locked:lock-1".to_owned()]);
    post(&server, "room.client.joined", "lock-1").assert_outcome("duplicate");
    poll("the outbox to empty", || {
        (outbox_list(&data) == ["the outbox is empty"]).then_some(())
    });
    let stopped = server.stop();
    let events = stopped.events();
    let fired: Vec<&str> = events
        .iter()
        .filter_map(|e| e["triggerWebhook"]["id"].as_str())
        .collect();
    assert_eq!(fired, ["lock-0", "lock-1"]);
    assert_eq!(
        target.delivered(),
        BTreeMap::from([
            ("locked:lock-0".to_owned(), 1),
            ("locked:lock-1".to_owned(), 1)
        ])
    );
}

/// Whereby may retry right after a 503. While a failed webhook's commit is
/// still waiting for the store, its id must not be answered 2xx unless the
/// event will fire: a 2xx ends Whereby's retries, so an answer `duplicate` for
/// an event that is then never committed loses it.
///
/// Built so: X's commit waits for the locked store until the busy timeout and
/// fails; Y, received meanwhile, waits behind it in the next batch, longer
/// than its request deadline, so Y is answered 503 `deadline` while its commit
/// still waits; Y is retried at once.
#[test]
fn a_retry_while_the_failed_commit_still_waits_is_not_answered_2xx_for_nothing() {
    let dir = TempDir::new("locked-retry");
    let data = dir.data();
    let target = Receiver::start();
    let config = locked_config(&dir, &target);
    let server = serve_settled(&config, &data, &target, "race-0");

    let lock = WriteLock::take(&data);
    let mark = server.stderr.len();
    let addr = server.addr;
    let x = std::thread::spawn(move || {
        post_signed_with(addr, &webhook("room.client.joined", "race-x"), SECRET)
    });
    // A pause to build the fault (X's commit first, Y's behind it), not to
    // wait for a result: Y's answer below says whether the fault was built.
    std::thread::sleep(Duration::from_millis(500));
    let y = post(&server, "room.client.joined", "race-y");
    // At once, as a quick retry would.
    let retry = post(&server, "room.client.joined", "race-y");
    let x = x.join().expect("the thread posting X");
    eprintln!("locked store: X {x:?}; Y {y:?}; Y's immediate retry {retry:?}");
    assert_eq!(x.status, 503, "{x:?}");
    assert_eq!(y.status, 503, "{y:?}");
    // Both batches fail; then the store is writable again.
    server.stderr.wait_until("two failed commits", |lines| {
        lines[mark..]
            .iter()
            .filter(|l| l.contains("store commit failed"))
            .count()
            >= 2
    });
    lock.release();

    let mut wrong = Vec::new();
    if y.took >= Duration::from_secs(5) {
        wrong.push(format!(
            "Y was answered after {:?}, later than Whereby waits (5 s), though the request \
             deadline is 4.5 s",
            y.took
        ));
    }
    if (200..300).contains(&retry.status) {
        // The retry said the event is taken care of: it must be delivered.
        let delivered = poll(
            "race-y to be delivered, or its commit to be given up",
            || {
                if target.delivered().contains_key("locked:race-y") {
                    return Some(true);
                }
                // A webhook whose commit failed left nothing behind to deliver.
                let queued = outbox_list(&data)
                    .iter()
                    .any(|l| l.starts_with("locked:race-y:"));
                (!queued).then_some(false)
            },
        );
        if !delivered {
            wrong.push(format!(
                "the retry of race-y was answered {} {} while its first commit was still \
                 waiting, and that commit then failed: the event was neither committed nor \
                 fired, and Whereby, having got a 2xx, does not retry again",
                retry.status, retry.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        y.code(),
        "deadline",
        "the fault was not built (Y's commit did not outlast its deadline): {y:?}"
    );
    server.stop();
}

// ===========================================================================
// 4. assistants that crash

/// A note-taker per session whose assistant runs in `mode`.
fn crashing_config(dir: &TempDir, procs: &Path, mode: &str, run_extra: &str) -> PathBuf {
    dir.config(&format!(
        "\n[[trigger]]\nname = \"scribe\"\non = [\"room.session.started\", \"assistant.requested\"]\nonce_per = \"session\"\nstop_on = [\"room.session.ended\"]\n{}\n",
        run_table(procs, mode, run_extra)
    ))
}

#[test]
fn a_crashed_assistant_is_restarted_on_failure() {
    let dir = TempDir::new("crash-once");
    let procs = dir.sub("procs");
    let data = dir.data();
    let config = crashing_config(
        &dir,
        &procs,
        "crash-once",
        ", restart = \"on-failure\", max_restarts = 3",
    );
    let server = serve(&config, &data);
    post(&server, "room.session.started", "crash-s1").assert_outcome("triggered");

    // It crashes (exit 3) and is started again, for the same event.
    let held = wait_holders(&procs, 1);
    let started = starts(&procs);
    assert_eq!(started.len(), 2, "{started:#?}");
    assert!(
        started.iter().all(|(_, event)| event == "crash-s1"),
        "{started:#?}"
    );
    let (pid, _) = held[0];
    assert!(ASSISTANT.alive(pid));
    let restarting = log_lines(&server.stderr, &["the assistant ended; restarting it"]);
    assert_eq!(restarting.len(), 1, "{restarting:#?}");
    assert_eq!(
        field(&restarting[0], "restart"),
        Some("1"),
        "{restarting:#?}"
    );
    assert_eq!(
        field(&restarting[0], "backoff_ms"),
        Some("1000"),
        "{restarting:#?}"
    );

    // The session stays claimed by the restarted assistant.
    post(&server, "assistant.requested", "crash-r1").assert_outcome("suppressed");
    assert_eq!(stored_claims(&data), 1);

    // Its stop event ends it for good, and frees the session.
    assert_eq!(post(&server, "room.session.ended", "crash-e1").status, 200);
    ASSISTANT.wait_terminated(&procs, pid);
    wait_no_stored_claims(&data);
    post(&server, "assistant.requested", "crash-r2").assert_outcome("triggered");
    let held = wait_holders(&procs, 2);
    assert_eq!(held[1].1, "crash-r2", "{held:#?}");
    let stopped = server.stop();
    assert_eq!(
        stopped
            .stderr
            .iter()
            .filter(|l| l.contains("the assistant ended; restarting it"))
            .count(),
        1,
        "{:#?}",
        stopped.stderr
    );
}

#[test]
fn an_assistant_that_keeps_crashing_is_given_up_and_its_claim_released() {
    let dir = TempDir::new("crash-always");
    let procs = dir.sub("procs");
    let data = dir.data();
    let config = crashing_config(
        &dir,
        &procs,
        "crash",
        ", restart = \"on-failure\", max_restarts = 2",
    );
    let server = serve(&config, &data);
    post(&server, "room.session.started", "doomed-s1").assert_outcome("triggered");

    // One start and two restarts, 1 s then 2 s apart; then it gives up.
    let gave_up = server.stderr.wait_line("the give-up", 0, |l| {
        l.contains("gave up restarting") && l.contains("doomed-s1")
    });
    assert_eq!(field(&gave_up, "restarts"), Some("2"), "{gave_up}");
    let restarting = log_lines(&server.stderr, &["the assistant ended; restarting it"]);
    let backoffs: Vec<(&str, &str)> = restarting
        .iter()
        .map(|l| {
            (
                field(l, "restart").unwrap_or_default(),
                field(l, "backoff_ms").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(backoffs, [("1", "1000"), ("2", "2000")], "{restarting:#?}");
    let started = starts(&procs);
    assert_eq!(started.len(), 3, "{started:#?}");

    // Its claim is released, in memory and in the store; the run delivery is
    // a dead letter.
    wait_no_stored_claims(&data);
    let dead = poll("the dead run delivery", || {
        outbox_line(&outbox_list(&data), "scribe:doomed-s1:").filter(|l| l.contains("\tdead\t"))
    });
    assert!(dead.contains("kind=run"), "{dead}");
    assert!(dead.contains("last_error="), "{dead}");

    // So a new request for the same session fires again.
    post(&server, "assistant.requested", "doomed-r1").assert_outcome("triggered");
    let started = wait_starts(&procs, 4);
    assert_eq!(
        started.iter().filter(|(_, e)| e == "doomed-r1").count(),
        1,
        "{started:#?}"
    );
    server.stop();
}

#[test]
fn with_restart_no_a_crashed_assistant_is_not_restarted_and_frees_its_claim() {
    let dir = TempDir::new("crash-no");
    let procs = dir.sub("procs");
    let data = dir.data();
    let config = crashing_config(&dir, &procs, "crash", ", restart = \"no\"");
    let server = serve(&config, &data);
    post(&server, "room.session.started", "norestart-s1").assert_outcome("triggered");
    wait_starts(&procs, 1);
    wait_no_stored_claims(&data);
    post(&server, "assistant.requested", "norestart-r1").assert_outcome("triggered");
    let started = wait_starts(&procs, 2);
    let events: Vec<&str> = started.iter().map(|(_, e)| e.as_str()).collect();
    assert!(
        events.contains(&"norestart-s1") && events.contains(&"norestart-r1"),
        "{started:#?}"
    );
    let stopped = server.stop();
    assert!(
        !stopped
            .stderr
            .iter()
            .any(|l| l.contains("restarting it") || l.contains("gave up restarting")),
        "{:#?}",
        stopped.stderr
    );
    assert_eq!(starts(&procs).len(), 2);
}

// ===========================================================================
// 5. a restart with a claimed room

#[test]
fn a_restart_keeps_the_claim_and_runs_its_assistant_again() {
    let dir = TempDir::new("claimed-restart");
    let procs = dir.sub("procs");
    let data = dir.data();
    let config = dir.config(&format!(
        "\n[[trigger]]\nname = \"scribe\"\non = [\"room.session.started\", \"assistant.requested\"]\nonce_per = \"session\"\nstop_on = [\"room.session.ended\"]\n{}\n",
        run_table(&procs, "hold", ", stop_grace = \"5s\"")
    ));

    // The session is claimed; its assistant runs.
    let server = serve(&config, &data);
    post(&server, "room.session.started", "claim-s1").assert_outcome("triggered");
    let first = wait_holders(&procs, 1)[0].0;

    // kill -9: the kernel takes the assistant along (PDEATHSIG).
    kill9(server);
    ASSISTANT.wait_gone(first);
    assert!(!term_marker(&procs, first).exists());

    // The next start runs the assistant again, for the same event: its claim
    // is held.
    let server = serve(&config, &data);
    let restored = server
        .stderr
        .wait_line("the restore line", 0, |l| l.contains("state restored"));
    assert_eq!(field(&restored, "claims"), Some("1"), "{restored}");
    let held = wait_holders(&procs, 2);
    let (second, event) = held
        .iter()
        .find(|(pid, _)| *pid != first)
        .expect("a second assistant")
        .clone();
    assert_eq!(event, "claim-s1");
    // No second assistant for the claimed session.
    post(&server, "assistant.requested", "claim-r1").assert_outcome("suppressed");
    post(&server, "room.session.started", "claim-s2").assert_outcome("suppressed");
    post(&server, "room.session.started", "claim-s1").assert_outcome("duplicate");
    server.stderr.wait_line("the suppression", 0, |l| {
        l.contains("scribe: suppressed") && l.contains("claim-r1")
    });
    assert_eq!(alive_holders(&procs), [(second, "claim-s1".to_owned())]);
    assert_eq!(starts(&procs).len(), 2);

    // A graceful stop: the assistant is stopped (SIGTERM), claim and delivery
    // kept…
    let stopped = server.stop();
    assert!(
        term_marker(&procs, second).exists(),
        "{:#?}",
        stopped.stderr
    );
    ASSISTANT.wait_gone(second);
    assert_eq!(stored_claims(&data), 1);
    let lines = outbox_list(&data);
    assert!(
        outbox_line(&lines, "scribe:claim-s1:").is_some_and(|l| l.contains("\tpending\t")),
        "{lines:#?}"
    );

    // …so the next start runs it again, still alone.
    let server = serve(&config, &data);
    let held = wait_holders(&procs, 3);
    let (third, event) = held
        .iter()
        .find(|(pid, _)| *pid != first && *pid != second)
        .expect("a third assistant")
        .clone();
    assert_eq!(event, "claim-s1");
    post(&server, "assistant.requested", "claim-r2").assert_outcome("suppressed");
    assert_eq!(alive_holders(&procs), [(third, "claim-s1".to_owned())]);

    // The session ends: the assistant is stopped and the claim released.
    assert_eq!(post(&server, "room.session.ended", "claim-e1").status, 200);
    ASSISTANT.wait_terminated(&procs, third);
    wait_no_stored_claims(&data);
    post(&server, "assistant.requested", "claim-r3").assert_outcome("triggered");
    let held = wait_holders(&procs, 4);
    assert_eq!(
        held.iter().filter(|(_, e)| e == "claim-r3").count(),
        1,
        "{held:#?}"
    );
    server.stop();
    assert_eq!(starts(&procs).len(), 4);
}

// ===========================================================================
// 6. outbox list / retry / drop on a running server

#[test]
fn outbox_lists_retries_and_drops_dead_deliveries_of_a_running_server() {
    let dir = TempDir::new("outbox");
    let data = dir.data();
    let target = Receiver::start();
    target.always((400, None));
    let config = dir.config(&format!(
        "\n[[trigger]]\nname = \"notify\"\non = [\"room.client.joined\"]\nforward = {{ url = {}, timeout = \"2s\" }}\n",
        q(target.url())
    ));
    let server = serve(&config, &data);
    let dead_line = |id: &str| {
        poll(&format!("{id} to be a dead letter"), || {
            outbox_line(&outbox_list(&data), &format!("notify:{id}:"))
                .filter(|l| l.contains("\tdead\t"))
        })
    };
    let delivery_id = |line: &str| line.split('\t').next().expect("an id").to_owned();

    // A 400 is final: a dead letter, with its error.
    post(&server, "room.client.joined", "ob-1").assert_outcome("triggered");
    let line = dead_line("ob-1");
    assert!(line.contains("last_error="), "{line}");
    assert!(line.contains("400"), "{line}");
    assert!(line.contains("trigger=notify"), "{line}");
    assert!(line.contains("kind=forward"), "{line}");
    // The one attempt made is counted, as the error says.
    assert!(line.contains("attempts=1 "), "{line}");
    let id = delivery_id(&line);
    assert_eq!(target.received().len(), 1);
    let json: serde_json::Value =
        serde_json::from_str(&outbox_ok(&data, &["list", "--json"])).expect("--json is JSON");
    let listed = &json.as_array().expect("an array")[0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["status"], "dead");
    assert_eq!(listed["attempts"], 1);
    assert!(
        listed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("400")
    );

    // The target is fixed; `outbox retry ID` while the server runs.
    target.always((200, None));
    let retried = Instant::now();
    let said = outbox_ok(&data, &["retry", &id]);
    assert!(said.contains("pending again"), "{said}");
    target.wait_delivered(&["notify:ob-1".to_owned()]);
    let picked_up = retried.elapsed();
    poll("the outbox to empty", || {
        (outbox_list(&data) == ["the outbox is empty"]).then_some(())
    });

    // Another dead letter, dropped: gone for good.
    target.always((400, None));
    post(&server, "room.client.joined", "ob-2").assert_outcome("triggered");
    let id2 = delivery_id(&dead_line("ob-2"));
    let said = outbox_ok(&data, &["drop", &id2]);
    assert!(said.contains("dropped"), "{said}");
    assert_eq!(outbox_list(&data), ["the outbox is empty"]);
    let out = outbox(&data, &["retry", &id2]);
    assert!(
        !out.status.success(),
        "retry of a dropped delivery succeeded"
    );
    assert!(
        text(&out.stderr).contains("no delivery"),
        "{}",
        text(&out.stderr)
    );

    // `retry --all` brings every dead letter back.
    post(&server, "room.client.joined", "ob-3").assert_outcome("triggered");
    dead_line("ob-3");
    target.always((200, None));
    let retried = Instant::now();
    let said = outbox_ok(&data, &["retry", "--all"]);
    assert!(said.starts_with("1 "), "{said}");
    target.wait_delivered(&["notify:ob-3".to_owned()]);
    let picked_up_all = retried.elapsed();
    eprintln!(
        "outbox: `retry ID` delivered after {picked_up:?}, `retry --all` after {picked_up_all:?}"
    );
    poll("the outbox to empty", || {
        (outbox_list(&data) == ["the outbox is empty"]).then_some(())
    });

    let stopped = server.stop();
    let statuses = |key: &str| -> Vec<u16> {
        target
            .received()
            .iter()
            .filter(|h| h.key() == key)
            .map(|h| h.status)
            .collect()
    };
    assert_eq!(statuses("notify:ob-1"), [400, 200], "{:#?}", stopped.stderr);
    assert_eq!(statuses("notify:ob-2"), [400], "{:#?}", stopped.stderr);
    assert_eq!(statuses("notify:ob-3"), [400, 200], "{:#?}", stopped.stderr);
}

#[test]
fn a_second_server_on_a_data_directory_exits_2_and_the_first_fires_alone() {
    let dir = TempDir::new("faults-two-servers");
    let target = Receiver::start();
    let config = locked_config(&dir, &target);
    let data = dir.data();
    let first = serve_settled(&config, &data, &target, "e1");

    // A rolling update on one volume: the second server must not run.
    let mut second = loopback_command()
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a second serve");
    let stderr = capture(second.stderr.take().expect("stderr"));
    let status = wait_with_deadline(&mut second);
    stderr.wait_closed("the second server's stderr");
    let said = stderr.snapshot().join("\n");
    assert_eq!(status.code(), Some(2), "{said}");
    let pid = first.child.id();
    assert!(
        said.contains(&format!("is in use by another whereby-trigger (pid {pid})")),
        "{said}"
    );

    // The operator's commands still work beside the running server, and the
    // first server is unharmed.
    assert_eq!(outbox_list(&data), ["the outbox is empty"]);
    post(&first, "room.client.joined", "e2").assert_outcome("triggered");
    target.wait_delivered(&["locked:e2".to_owned()]);
    drop(first.stop());

    // Once it has stopped, the directory is free.
    let again = serve(&config, &data);
    post(&again, "room.client.joined", "e1").assert_outcome("duplicate");
    drop(again.stop());
}

/// `GET path` on `server` over a fresh connection: status and body.
fn get(server: &Server, path: &str) -> (u16, String) {
    crate::common::binary::http_get(server.addr, path)
}

#[test]
fn a_database_deleted_under_the_server_fails_it_as_a_failed_flush_does() {
    let dir = TempDir::new("faults-deleted-db");
    let target = Receiver::start();
    let config = locked_config(&dir, &target);
    let data = dir.data();
    let server = serve_settled(&config, &data, &target, "d0");
    assert_eq!(get(&server, "/healthz").0, 200);
    assert_eq!(get(&server, "/readyz").0, 200);

    // Removed by a careless clean-up: what is written now is in an unlinked
    // file, and a restart would fire every earlier event again.
    std::fs::remove_file(data.join(DB_FILE)).expect("delete the database");
    let mark = server.stderr.len();
    let answer = post(&server, "room.client.joined", "d1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.code(), "store_unavailable", "{answer:?}");
    server.stderr.wait_line("why the store failed", mark, |l| {
        l.contains("store sync failed") && l.contains("was deleted while the server used it")
    });
    let (health, body) = get(&server, "/healthz");
    assert_eq!(health, 503, "{body}");
    assert_eq!(get(&server, "/readyz").0, 503);
    assert_eq!(
        post(&server, "room.client.joined", "d2").status,
        503,
        "a later webhook"
    );
    assert_eq!(target.received().len(), 1, "{:#?}", target.received());
    drop(server.stop());
}

/// `whereby-trigger quarantine ARGS --data-dir data`, waited for (bounded).
fn quarantine(data: &Path, args: &[&str]) -> Output {
    store_command("quarantine", data, args)
}

#[test]
fn a_signed_webhook_refused_400_is_quarantined_and_replayed_after_a_config_change() {
    let dir = TempDir::new("faults-quarantine");
    let target = Receiver::start();
    let config = locked_config(&dir, &target);
    let data = dir.data();
    let server = serve_settled(&config, &data, &target, "q0");

    // Whereby's payloads of before 2025 have no subdomain; this server has no
    // default: 400, final for Whereby.
    let old_shape = crate::common::sample_with("room.client.joined", |v| {
        v["id"] = Value::from("q1");
        v["createdAt"] = Value::from(iso8601_now());
        v["data"].as_object_mut().expect("data").remove("subdomain");
    });
    let mark = server.stderr.len();
    let answer = post_signed_with(server.addr, &old_shape, SECRET);
    assert_eq!(answer.status, 400, "{answer:?}");
    server.stderr.wait_line("the quarantine", mark, |l| {
        l.contains("a signed webhook was refused and quarantined")
    });
    // Not signed by us: refused 401, and not kept.
    let forged = post_signed_with(server.addr, &old_shape.replace("q1", "q2"), "whsec_other");
    assert_eq!(forged.status, 401, "{forged:?}");

    let listed = quarantine(&data, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<String> = text(&listed.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("field=data.subdomain"), "{lines:?}");
    let id = lines[0].split('\t').next().expect("an id").to_owned();
    let shown = quarantine(&data, &["show", &id]);
    assert_eq!(text(&shown.stdout).trim(), old_shape);
    drop(server.stop());

    // The operator gives the server a default subdomain and replays it: it
    // fires, once, and leaves the quarantine.
    let with_default = dir.write(
        "whereby-trigger.toml",
        &format!(
            "[server]\nsubdomain = \"acme\"\n{}",
            std::fs::read_to_string(&config).expect("the config")
        ),
    );
    let server = serve(&with_default, &data);
    let replayed = quarantine(&data, &["replay", &id, "--to", &server.url()]);
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(
        text(&replayed.stdout).contains(r#"{"outcome":"triggered"}"#),
        "{replayed:?}"
    );
    target.wait_delivered(&["locked:q1".to_owned()]);
    assert_eq!(
        text(&quarantine(&data, &["list"]).stdout).trim(),
        "the quarantine is empty"
    );
    let again = quarantine(&data, &["replay", &id, "--to", &server.url()]);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    drop(server.stop());
}
