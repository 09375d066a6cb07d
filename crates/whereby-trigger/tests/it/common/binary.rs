//! The real `whereby-trigger` binary, for the end-to-end tests: start `serve`
//! on `127.0.0.1:0` and wait for it to listen, run `send`, signal and stop the
//! server, and read what both printed.
//!
//! Every stream of a child is drained by a thread of its own, so no child ever
//! blocks on a full pipe, and every wait is polled or woken and bounded by
//! [`WAIT`]: a hang fails the test instead of stalling CI.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_whereby-trigger");

/// Upper bound for any single wait; a hang fails the test instead of stalling CI.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it gives a value, for at most [`WAIT`].
pub(crate) fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Shared state a thread fills and a test waits on.

/// Items a producer (a thread) pushes and a test waits on.
pub(crate) struct Shared<T> {
    state: Mutex<SharedState<T>>,
    changed: Condvar,
}

struct SharedState<T> {
    items: Vec<T>,
    /// The producer is done (end of a stream).
    closed: bool,
}

impl<T: Clone> Shared<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(SharedState {
                items: Vec::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SharedState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, item: T) {
        self.lock().items.push(item);
        self.changed.notify_all();
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub(crate) fn snapshot(&self) -> Vec<T> {
        self.lock().items.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Waits (at most [`WAIT`]) until `done` holds for the items; returns them.
    pub(crate) fn wait_until(&self, what: &str, done: impl Fn(&[T]) -> bool) -> Vec<T>
    where
        T: std::fmt::Debug,
    {
        self.wait(what, done, false)
    }

    /// Like [`Shared::wait_until`], but also returns when the producer is done.
    pub(crate) fn wait_until_or_closed(&self, what: &str, done: impl Fn(&[T]) -> bool) -> Vec<T>
    where
        T: std::fmt::Debug,
    {
        self.wait(what, done, true)
    }

    fn wait(&self, what: &str, done: impl Fn(&[T]) -> bool, or_closed: bool) -> Vec<T>
    where
        T: std::fmt::Debug,
    {
        let deadline = Instant::now() + WAIT;
        let mut state = self.lock();
        loop {
            if done(&state.items) || (or_closed && state.closed) {
                return state.items.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; got so far: {:#?}",
                state.items
            );
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits (at most [`WAIT`]) for the producer to finish.
    pub(crate) fn wait_closed(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        let mut state = self.lock();
        while !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for the end of {what}");
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Lines of a child's stream, read by a thread of their own so the child never
/// blocks on a full pipe.
pub(crate) type Lines = Arc<Shared<String>>;

/// Drains `stream` line by line on a thread of its own.
pub(crate) fn capture(stream: impl Read + Send + 'static) -> Lines {
    let lines = Shared::new();
    let filler = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            filler.push(line);
        }
        filler.close();
    });
    lines
}

impl Shared<String> {
    /// Waits for a line at index `from` or later that satisfies `pred`.
    pub(crate) fn wait_line(&self, what: &str, from: usize, pred: impl Fn(&str) -> bool) -> String {
        let lines = self.wait_until(what, |lines| lines.iter().skip(from).any(|line| pred(line)));
        lines
            .into_iter()
            .skip(from)
            .find(|line| pred(line))
            .expect("found above")
    }
}

/// The lines, each ended by a newline, as one text.
fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

// ---------------------------------------------------------------------------
// Processes.

/// The binary with no secret from the test's environment, `info` logs and no
/// stdin.
pub(crate) fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("WHEREBY_WEBHOOK_SECRET")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// [`command`] with no proxy in its environment: `forward` talks to 127.0.0.1.
pub(crate) fn loopback_command() -> Command {
    let mut cmd = command();
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    cmd
}

/// Spawns `cmd` (`what` names it) with both output streams drained by
/// [`capture`].
fn spawn_captured(cmd: &mut Command, what: &str) -> (Child, Lines, Lines) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = capture(child.stdout.take().expect("stdout"));
    let stderr = capture(child.stderr.take().expect("stderr"));
    (child, stdout, stderr)
}

/// Waits (at most [`WAIT`]) for `child` to exit.
pub(crate) fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    poll("a process to exit", || child.try_wait().expect("try_wait"))
}

/// Sends `signal` (`TERM`, `HUP`, `KILL`, …) to `pid` with `kill`.
pub(crate) fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Runs `send` with `args`; see [`send_from`].
pub(crate) fn send(args: &[&str]) -> Output {
    send_from(command(), args)
}

/// Runs `base` (a [`command`], perhaps with more environment) as `send` with
/// `args`, and waits for its exit and the end of both its streams.
pub(crate) fn send_from(mut base: Command, args: &[&str]) -> Output {
    let (mut child, stdout, stderr) = spawn_captured(base.arg("send").args(args), "send");
    let status = wait_with_deadline(&mut child);
    stdout.wait_closed("send's stdout");
    stderr.wait_closed("send's stderr");
    Output {
        status,
        stdout: joined(&stdout.snapshot()).into_bytes(),
        stderr: joined(&stderr.snapshot()).into_bytes(),
    }
}

/// Runs `base` (a [`command`], perhaps with more environment) as
/// `send EVENT_TYPE --to TO --secret SECRET` and then `extra`; see [`send_from`].
pub(crate) fn send_signed(
    base: Command,
    event_type: &str,
    to: &str,
    secret: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![event_type, "--to", to, "--secret", secret];
    args.extend_from_slice(extra);
    send_from(base, &args)
}

/// Bytes a child printed, as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// A running `serve`.

/// A running `serve`, killed if the test ends early.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) stdout: Lines,
    pub(crate) stderr: Lines,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a terminated `serve` left.
pub(crate) struct Stopped {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: Vec<String>,
}

impl Stopped {
    /// Stdout's lines, each a JSON trigger event; fails the test otherwise.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|_| panic!("stdout line is not JSON: {l}"))
            })
            .collect()
    }

    /// Stdout as one text (every line ended by a newline).
    pub(crate) fn stdout_text(&self) -> String {
        joined(&self.stdout)
    }
}

impl Server {
    /// `serve --port 0 --bind 127.0.0.1` with `args`.
    pub(crate) fn start(args: &[&str]) -> Server {
        Server::start_from(command(), args)
    }

    /// Like [`Server::start`], from `base` (a [`command`], perhaps with more
    /// environment).
    pub(crate) fn start_from<S: AsRef<OsStr>>(
        base: Command,
        args: impl IntoIterator<Item = S>,
    ) -> Server {
        Server::start_with(base, args, |_| || ())
    }

    /// Starts `base` as serve with `args`; `spawned` gets its pid at once and
    /// returns what to call the moment serve says it listens (before this
    /// returns).
    pub(crate) fn start_with<S: AsRef<OsStr>, F: FnOnce()>(
        base: Command,
        args: impl IntoIterator<Item = S>,
        spawned: impl FnOnce(u32) -> F,
    ) -> Server {
        Server::start_as(base, "serve", args, spawned)
    }

    /// Like [`Server::start_with`], for `command` (`serve` or `worker`).
    pub(crate) fn start_as<S: AsRef<OsStr>, F: FnOnce()>(
        mut base: Command,
        command: &str,
        args: impl IntoIterator<Item = S>,
        spawned: impl FnOnce(u32) -> F,
    ) -> Server {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        base.args([
            command,
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1:0",
        ]);
        // Tests share a working directory: each one that does not test the
        // durable store itself keeps its state in memory, so none sees another's.
        if !args.iter().any(|a| a == "--data-dir" || a == "--store-url") {
            base.arg("--ephemeral");
        }
        base.args(args);
        let (mut child, stdout, stderr) = spawn_captured(&mut base, "serve");
        let ready = spawned(child.id());
        // The server logs its bound address once it listens: that is readiness.
        // Woken by the line itself (or by the end of stderr, if serve exits).
        // `addr=…` in the pretty format, `"addr":"…"` in json.
        let listening = |line: &String| -> Option<SocketAddr> {
            if let Some(rest) = line.split(r#""addr":""#).nth(1) {
                return rest.split('"').next()?.parse().ok();
            }
            let rest = line.split("addr=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        let lines = stderr.wait_until_or_closed("the listening address", |lines| {
            lines.iter().any(|l| listening(l).is_some())
        });
        let Some(addr) = lines.iter().find_map(listening) else {
            let status = wait_with_deadline(&mut child);
            panic!(
                "serve exited with {status} before listening:\n{}",
                lines.join("\n")
            );
        };
        ready();
        Server {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// `http://127.0.0.1:<port>/`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Sends `signal` (`TERM`, `HUP`, `KILL`, …) to serve.
    pub(crate) fn signal(&self, signal: &str) {
        kill(signal, self.child.id());
    }

    /// Sends SIGTERM and waits for the exit and for both streams to end. Every
    /// answered event is on stdout by then: serve flushes before it exits.
    pub(crate) fn terminate(mut self) -> Stopped {
        self.signal("TERM");
        let status = wait_with_deadline(&mut self.child);
        self.stdout.wait_closed("serve's stdout");
        self.stderr.wait_closed("serve's stderr");
        Stopped {
            status,
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
        }
    }

    /// [`Server::terminate`], asserting that serve exited successfully.
    #[track_caller]
    pub(crate) fn stop(self) -> Stopped {
        let stopped = self.terminate();
        assert!(
            stopped.status.success(),
            "serve exited with {}",
            stopped.status
        );
        stopped
    }
}

// ---------------------------------------------------------------------------
// `send --scenario`'s output.

/// One line of `send --scenario`: `TYPE SHORT-ID HTTP STATUS BODY`.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) event_type: String,
    pub(crate) short_id: String,
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Delivery {
    /// The `outcome` of the answer's body; fails the test if it is not JSON.
    pub(crate) fn outcome(&self) -> String {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("answer is not JSON: {self:?}"));
        body["outcome"].as_str().unwrap_or_default().to_owned()
    }
}

/// The deliveries `send --scenario` reported on stdout.
pub(crate) fn deliveries(out: &Output) -> Vec<Delivery> {
    text(&out.stdout)
        .lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let event_type = words.next().expect("a type").to_owned();
            let short_id = words.next().expect("an id").to_owned();
            assert_eq!(words.next(), Some("HTTP"), "{line}");
            let status = words.next().expect("a status").parse().expect("a number");
            let body = line[line.find('{').unwrap_or(line.len())..].to_owned();
            Delivery {
                event_type,
                short_id,
                status,
                body,
            }
        })
        .collect()
}

/// `GET path` at `addr` over a fresh connection, from a plain thread: the
/// status and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
