//! End-to-end: the accept-loop limits of the config file's `[server]` table
//! (`max_header_bytes`, `header_timeout`, …) are in force in the real
//! `whereby-trigger serve`, over HTTP on `127.0.0.1:0`, and a refused limit
//! stops `serve` with the file, the line and the key.
//!
//! Each setting is chosen so that the server's defaults would behave
//! differently: a head the default cap accepts is refused, a head the default
//! timers would wait for for seconds is cut off. A timer can fire late but
//! never early, so timing assertions are a lower bound or a generous upper one;
//! every wait is bounded by `common::binary::WAIT`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::binary::{
    Server, WAIT, capture, command, send_signed, text, wait_with_deadline,
};
use crate::common::fixture::TempDir;
use whereby_trigger::limits::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_IDLE, DEFAULT_MAX_HEADER_BYTES,
};

/// The signing secret, in the config's `[verify]`.
const SECRET: &str = "whsec_server_limits_3c9e51a7d2";

/// `max_header_bytes` of the config, well under the default.
const MAX_HEADER_BYTES: usize = 2 * 1024;

/// `header_timeout` of the config, well under the defaults that could also
/// close a connection waiting for its head (the header timer and keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// A timer can fire late but never early; this much slack covers the
/// millisecond rounding of clocks.
const SLACK: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Config files.

/// A config file in a directory of the test's own, removed when dropped.
struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// `[server]` holding `server_keys`, the secret, and one trigger that
    /// prints every `room.client.joined`.
    fn new(tag: &str, server_keys: &str) -> ConfigFile {
        let dir = TempDir::new(tag);
        let text = format!(
            "[server]\n{server_keys}\n\n\
             [verify]\nsecrets = [\"{SECRET}\"]\n\n\
             [[trigger]]\nname = \"joined\"\non = [\"room.client.joined\"]\nstdout = true\n"
        );
        let path = dir.write("whereby-trigger.toml", &text);
        ConfigFile { _dir: dir, path }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP.

/// What the server sent on a connection until it closed it, and when it did,
/// counted from the connection.
struct Closed {
    answer: String,
    after: Duration,
}

/// Connects to `addr`, writes `request`, and reads until the server closes the
/// connection (an end of file, or a reset), within [`WAIT`].
fn until_closed(addr: SocketAddr, request: &[u8]) -> Closed {
    let begin = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    // The server may close before it has read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server did not close the connection within {WAIT:?}")
            }
            Err(_) => break,
        }
    }
    Closed {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        after: begin.elapsed(),
    }
}

/// A complete GET of the health path whose head carries `padding` bytes in one
/// header; the server answers it and closes.
fn padded_head(padding: usize) -> Vec<u8> {
    format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\
         Connection: close\r\n\r\n",
        "a".repeat(padding)
    )
    .into_bytes()
}

/// `send room.client.joined` to `server`, signed; asserts it triggered.
#[track_caller]
fn assert_signed_webhook_triggers(server: &Server, id: &str) {
    let out = send_signed(
        command(),
        "room.client.joined",
        &server.url(),
        SECRET,
        &["--id", id],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("HTTP 200"), "{stdout}");
    assert!(stdout.contains(r#"{"outcome":"triggered"}"#), "{stdout}");
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn a_head_over_the_configured_max_header_bytes_is_431_and_webhooks_still_200() {
    // 4 KiB of padding: over the configured cap, well under the default one,
    // and under hyper's 8 KiB read buffer, so the whole head is read before
    // the answer and the 431 is never lost to a reset.
    let over = 4 * 1024;
    const { assert!(MAX_HEADER_BYTES < DEFAULT_MAX_HEADER_BYTES) };
    assert!(MAX_HEADER_BYTES < over && over + 256 < DEFAULT_MAX_HEADER_BYTES);
    let config = ConfigFile::new(
        "max-header-bytes",
        &format!("max_header_bytes = \"{}KiB\"", MAX_HEADER_BYTES / 1024),
    );
    let server = Server::start(&["--config", config.arg()]);

    // Under the cap, a padded head is served.
    let under = until_closed(server.addr, &padded_head(1024));
    assert!(under.answer.starts_with("HTTP/1.1 200"), "{}", under.answer);

    // Over it, 431, though the default cap would have let it in.
    let refused = until_closed(server.addr, &padded_head(over));
    assert!(
        refused.answer.starts_with("HTTP/1.1 431"),
        "{}",
        refused.answer
    );

    // A real, signed webhook is answered as ever, before and after.
    assert_signed_webhook_triggers(&server, "limits-head-1");
    let again = until_closed(server.addr, &padded_head(over));
    assert!(again.answer.starts_with("HTTP/1.1 431"), "{}", again.answer);
    assert_signed_webhook_triggers(&server, "limits-head-2");

    let stopped = server.stop();
    let ids: Vec<String> = stopped
        .events()
        .iter()
        .map(|e| {
            e["triggerWebhook"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["limits-head-1", "limits-head-2"]);
}

#[test]
fn a_head_slower_than_the_configured_header_timeout_is_cut_off() {
    // With the defaults, a connection waiting for the rest of its head is
    // closed at the earliest by keep-alive (6 s) or the header timer (10 s).
    let default_cut = DEFAULT_KEEP_ALIVE_IDLE.min(DEFAULT_HEADER_READ_TIMEOUT);
    let generous = default_cut - Duration::from_secs(1);
    assert!(HEADER_TIMEOUT < generous);
    let config = ConfigFile::new(
        "header-timeout",
        &format!("header_timeout = \"{}ms\"", HEADER_TIMEOUT.as_millis()),
    );
    let server = Server::start(&["--config", config.arg()]);

    // A head that never ends.
    let cut = until_closed(server.addr, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    // hyper closes without an answer: there is no request to answer.
    assert!(cut.answer.is_empty(), "{}", cut.answer);
    assert!(
        cut.after + SLACK >= HEADER_TIMEOUT,
        "cut off too early: {:?}",
        cut.after
    );
    assert!(
        cut.after < generous,
        "cut off after {:?}: the configured {HEADER_TIMEOUT:?} is not in force",
        cut.after
    );

    // A webhook whose head comes at once is served.
    assert_signed_webhook_triggers(&server, "limits-timeout-1");
    assert_eq!(server.stop().events().len(), 1);
}

#[test]
fn a_body_that_stalls_is_408_and_logged_once() {
    let body_timeout = Duration::from_secs(1);
    let config = ConfigFile::new(
        "body-timeout",
        &format!("body_timeout = \"{}ms\"", body_timeout.as_millis()),
    );
    let server = Server::start(&["--config", config.arg()]);

    // Half a body that never ends: the body timer, not the client, ends it.
    let cut = until_closed(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"id\":",
    );
    assert!(cut.answer.starts_with("HTTP/1.1 408"), "{}", cut.answer);
    assert!(
        cut.answer.contains(r#""code":"body_timeout""#),
        "{}",
        cut.answer
    );
    assert!(
        cut.after + SLACK >= body_timeout,
        "408 after {:?}",
        cut.after
    );

    let stopped = server.stop();
    let refusals: Vec<&String> = stopped
        .stderr
        .iter()
        .filter(|line| line.contains("webhook refused") || line.contains("body_"))
        .collect();
    assert_eq!(refusals.len(), 1, "one request, one line: {refusals:#?}");
    assert!(
        refusals[0].contains(r#"code="body_timeout""#),
        "{}",
        refusals[0]
    );
}

#[test]
fn a_refused_limit_stops_serve_naming_file_line_and_key() {
    // Line 2 and line 3 of the file.
    let config = ConfigFile::new(
        "refused",
        "request_deadline = \"5s\"\nmax_header_bytes = 512",
    );
    let mut child = command()
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1:0",
            "--ephemeral",
        ])
        .args(["--config", config.arg()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = capture(child.stderr.take().expect("stderr"));
    let status = wait_with_deadline(&mut child);
    stderr.wait_closed("serve's stderr");
    let stderr = stderr.snapshot().join("\n");
    assert_eq!(status.code(), Some(2), "{stderr}");
    let file = config.path().display();
    for expected in [
        format!("{file}:2: server.request_deadline: must be below 5s"),
        "Whereby gives up on a delivery after 5 s".to_owned(),
        format!("{file}:3: server.max_header_bytes: 512 bytes is too small"),
    ] {
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("addr="), "it must not listen:\n{stderr}");
}
