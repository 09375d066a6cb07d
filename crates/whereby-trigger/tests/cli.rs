//! End-to-end: the real `whereby-trigger` binary, `serve` and `send`, over loopback.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_whereby-trigger");
const SECRET: &str = "whsec_test_4f7c1e9a2b6d8035";
/// Upper bound for any single wait; a hang fails the test instead of stalling CI.
const WAIT: Duration = Duration::from_secs(20);

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("WHEREBY_WEBHOOK_SECRET")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// A running `serve`, killed if the test ends early.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Keeps the thread that drains stderr connected, so the server never blocks
    /// on a full pipe.
    _stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = command()
            .envs(env.iter().copied())
            .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The server logs its bound address once it listens: that is readiness.
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("serve logged no listening address in time");
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.parse().expect("address in log");
            }
        };
        Server {
            child,
            addr,
            _stderr: rx,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Sends SIGTERM and waits for the exit; returns the status and stdout.
    fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = wait_with_deadline(&mut self.child);
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (status, stdout)
    }
}

fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(args: &[&str]) -> Output {
    let mut child = command()
        .arg("send")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send");
    let status = wait_with_deadline(&mut child);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_and_send_end_to_end() {
    let server = Server::start(&["--secret", SECRET, "--on", "room.client.joined"]);
    let to = server.url();

    let first = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        SECRET,
        "--id",
        "e2e-1",
    ]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("HTTP 200"), "{out}");
    assert!(out.contains(r#"{"outcome":"triggered"}"#), "{out}");

    let again = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        SECRET,
        "--id",
        "e2e-1",
    ]);
    assert!(text(&again.stdout).contains(r#""duplicate""#));

    let left = send(&["room.client.left", "--to", &to, "--secret", SECRET]);
    assert!(text(&left.stdout).contains(r#""not_matched""#));

    let knocked = send(&["room.client.knocked", "--to", &to, "--secret", SECRET]);
    assert!(text(&knocked.stdout).contains(r#""ignored""#));

    let wrong = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        "not-the-secret",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong.stdout).contains("HTTP 401"));
    assert!(text(&wrong.stdout).contains("signature_mismatch"));

    let stale = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        SECRET,
        "--timestamp",
        "1000",
    ]);
    assert!(text(&stale.stdout).contains("signature_stale"));

    // --set and --room-name reach the payload: this one fires in another room.
    let custom = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        SECRET,
        "--id",
        "e2e-2",
        "--subdomain",
        "globex",
        "--room-name",
        "board",
        "--set",
        "numClients=3",
        "--set",
        "displayName=Grace \"G\" Hopper",
    ]);
    assert!(
        text(&custom.stdout).contains("triggered"),
        "{}",
        text(&custom.stdout)
    );

    let bad_room = send(&[
        "room.client.joined",
        "--to",
        &to,
        "--secret",
        SECRET,
        "--subdomain",
        "evil.com",
    ]);
    assert!(text(&bad_room.stdout).contains("data.subdomain"));

    let (status, stdout) = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0]["roomUrl"],
        "https://acme.whereby.com/standup-3f9a2c"
    );
    assert_eq!(lines[0]["triggerWebhook"]["id"], "e2e-1");
    assert_eq!(lines[0]["triggerWebhook"]["type"], "room.client.joined");
    assert_eq!(lines[1]["roomUrl"], "https://globex.whereby.com/board");
    assert_eq!(lines[1]["triggerWebhook"]["data"]["numClients"], 3);
    assert_eq!(
        lines[1]["triggerWebhook"]["data"]["displayName"],
        "Grace \"G\" Hopper"
    );
}

#[test]
fn send_a_payload_from_a_file_unsigned() {
    let server = Server::start(&["--allow-unsigned", "--on", "assistant.requested"]);
    let dir = std::env::temp_dir().join(format!("whereby-trigger-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requested.json");
    std::fs::write(
        &file,
        whereby_trigger::webhook::sample::sample("assistant.requested").unwrap(),
    )
    .unwrap();
    let out = send(&["--file", file.to_str().unwrap(), "--to", &server.url()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("triggered"));
    let (status, stdout) = server.terminate();
    assert!(status.success());
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The file's own id is kept, and the pretty-printed file arrives as one line.
    assert_eq!(
        line["triggerWebhook"]["id"],
        "4d0e6f2a5b1c7d9e8f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_secret_can_come_from_the_environment() {
    let env = [("WHEREBY_WEBHOOK_SECRET", SECRET)];
    let server = Server::start_with_env(&["--on", "room.session.started"], &env);
    let signed = command()
        .envs(env)
        .args(["send", "room.session.started", "--to", &server.url()])
        .output()
        .unwrap();
    assert!(
        text(&signed.stdout).contains("triggered"),
        "{}",
        text(&signed.stdout)
    );
    // And the server really requires it.
    let unsigned = send(&["room.session.started", "--to", &server.url()]);
    assert!(text(&unsigned.stdout).contains("signature_missing"));
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let out = command()
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--allow-unsigned"), "{err}");
    assert!(err.contains("WHEREBY_WEBHOOK_SECRET"), "{err}");
}

#[test]
fn serve_rejects_an_unknown_event_type() {
    let out = command()
        .args(["serve", "--allow-unsigned", "--on", "room.client.knocked"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("room.client.knocked"));
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let serve = text(&command().args(["serve", "--help"]).output().unwrap().stdout);
    for expected in [
        "--port",
        "[default: 8080]",
        "--bind",
        "[default: 0.0.0.0]",
        "--path",
        "[default: /]",
        "--secret",
        "WHEREBY_WEBHOOK_SECRET",
        "--allow-unsigned",
        "--tolerance",
        "[default: 300s]",
        "--base-domain",
        "[default: whereby.com]",
        "--on",
        "--max-body",
        "[default: 64KiB]",
        "--predicate-timeout",
        "[default: 4s]",
    ] {
        assert!(
            serve.contains(expected),
            "serve --help lacks {expected}:\n{serve}"
        );
    }
    let send = text(&command().args(["send", "--help"]).output().unwrap().stdout);
    for expected in [
        "--to",
        "[default: http://127.0.0.1:8080/]",
        "--secret",
        "--unsigned",
        "--subdomain",
        "--room-name",
        "--id",
        "--set",
        "--file",
        "--timestamp",
    ] {
        assert!(
            send.contains(expected),
            "send --help lacks {expected}:\n{send}"
        );
    }
}

#[test]
fn serve_keeps_logs_off_stdout() {
    let server = Server::start(&["--allow-unsigned"]);
    let out = send(&["room.client.joined", "--to", &server.url()]);
    assert!(text(&out.stdout).contains("not_matched"));
    let (status, stdout) = server.terminate();
    assert!(status.success());
    assert_eq!(stdout, "", "stdout is for trigger events only");
}
