//! End-to-end: `forward.signing_secret` checked by an implementation nobody
//! here wrote. The real binary forwards to `tests/scripts/standard_webhooks_receiver.py`,
//! which verifies each request with the `standardwebhooks` package from PyPI
//! (installed under the target directory when it is missing) and checks that
//! the same request with its body changed is rejected.
//!
//! Skipped, saying so, only when Python has no pip to install the package
//! with; a failed install fails the test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::common::binary::{Lines, Server, capture, loopback_command, poll, send_signed, text};
use crate::common::fixture::{Script, TempDir, toml_str as q};
use serde_json::Value;

/// The secret whereby-trigger's own webhooks are signed with.
const WHEREBY_SECRET: &str = "whsec_e2e_signed_forward_41c9";
/// The secret being retired: whereby-trigger still signs with it, the
/// receiver no longer knows it.
const OLD_SIGNING: &str = "whsec_b2xkIHNpZ25pbmcgc2VjcmV0IGJlaW5nIHJldGlyZWQ=";
/// The secret the receiver verifies with (the Standard Webhooks libraries'
/// test secret).
const NEW_SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const RECEIVER: Script = Script::new("standard_webhooks_receiver.py");

/// What `PYTHONPATH` must hold for `import standardwebhooks` to work (`None`
/// inside: nothing to add), installing the package under the target
/// directory if needed; `None` when there is no pip to install it with.
fn standardwebhooks() -> Option<Option<PathBuf>> {
    static FOUND: OnceLock<Option<Option<PathBuf>>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let imports = |path: Option<&PathBuf>| {
                let mut cmd = Command::new("python3");
                cmd.args(["-c", "import standardwebhooks.webhooks"]);
                if let Some(path) = path {
                    cmd.env("PYTHONPATH", path);
                }
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if imports(None) {
                return Some(None);
            }
            // Beside the build, not in the user's site-packages: `--target`
            // writes nowhere else (and is allowed where the system Python is
            // marked externally managed).
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-standardwebhooks");
            if imports(Some(&dir)) {
                return Some(Some(dir));
            }
            let pip = Command::new("python3")
                .args(["-m", "pip", "--version"])
                .output();
            if !pip.is_ok_and(|out| out.status.success()) {
                return None;
            }
            let out = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&dir)
                .arg("standardwebhooks")
                .output()
                .expect("run pip");
            assert!(
                out.status.success(),
                "pip could not install standardwebhooks into {}:\n{}{}",
                dir.display(),
                text(&out.stdout),
                text(&out.stderr)
            );
            assert!(
                imports(Some(&dir)),
                "standardwebhooks was installed into {} but does not import",
                dir.display()
            );
            Some(Some(dir))
        })
        .clone()
}

/// A Python receiver, killed when dropped.
struct PyReceiver {
    child: Child,
    port: u16,
    stdout: Lines,
}

impl PyReceiver {
    /// Runs `script` with `args` and `env`; it prints `listening PORT` first.
    fn start(
        pythonpath: Option<&PathBuf>,
        script: &Path,
        args: &[&OsStr],
        env: &[(&str, &str)],
    ) -> PyReceiver {
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = pythonpath {
            cmd.env("PYTHONPATH", path);
        }
        let mut child = cmd.spawn().expect("start the Python receiver");
        let stdout = capture(child.stdout.take().expect("its stdout"));
        // Kept for the message of a failure (the README's receiver logs each
        // request there too).
        let stderr = capture(child.stderr.take().expect("its stderr"));
        let lines = stdout.wait_until_or_closed("the receiver's port", |lines| {
            lines.iter().any(|l| l.starts_with("listening "))
        });
        let port = lines
            .iter()
            .find_map(|l| l.strip_prefix("listening ")?.trim().parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!(
                "the Python receiver did not start: {lines:?}\n{}",
                stderr.snapshot().join("\n")
            );
        };
        PyReceiver {
            child,
            port,
            stdout,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, with the config's variables set and no proxy for `forward`.
fn command() -> Command {
    let mut cmd = loopback_command();
    cmd.env("E2E_SECRET", WHEREBY_SECRET)
        .env("E2E_SIGNING", NEW_SIGNING);
    cmd
}

/// Sends one signed sample webhook, which must be answered 200.
fn send(server: &Server, event_type: &str, id: &str) {
    let sent = send_signed(
        command(),
        event_type,
        &server.url(),
        WHEREBY_SECRET,
        &["--id", id],
    );
    assert!(
        text(&sent.stdout).contains("HTTP 200"),
        "{}{}",
        text(&sent.stdout),
        text(&sent.stderr)
    );
}

#[test]
fn the_standardwebhooks_library_verifies_what_forward_sends_and_rejects_a_tampered_body() {
    let Some(pythonpath) = standardwebhooks() else {
        eprintln!(
            "SKIPPED: python3 has no pip to install the `standardwebhooks` package with; \
             install pip (Debian: apt-get install python3-pip) to run this test"
        );
        return;
    };
    let dir = TempDir::new("signed-forward");
    let out = dir.join("verified.jsonl");
    let receiver = PyReceiver::start(
        pythonpath.as_ref(),
        Path::new(&RECEIVER.path()),
        &[OsStr::new(NEW_SIGNING), out.as_os_str()],
        &[],
    );

    // A rotation: both secrets sign, the receiver knows only the new one; the
    // new one comes from the environment, as a deployment would give it.
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"[verify]
secrets = ["${{E2E_SECRET}}"]

[[trigger]]
name = "signed"
on = ["room.session.started"]
stop_on = ["room.session.ended"]

[trigger.forward]
url = {url}
signing_secret = [{old}, "${{E2E_SIGNING}}"]
"#,
            url = q(receiver.url()),
            old = q(OLD_SIGNING),
        ),
    );
    let server = Server::start_from(command(), ["--config", config.to_str().unwrap()]);
    send(&server, "room.session.started", "sw-started-1");
    send(&server, "room.session.ended", "sw-ended-1");

    let records: Vec<Value> = poll("two verified deliveries", || {
        let lines: Vec<Value> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines.len() >= 2).then_some(lines)
    });
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap_or(""))
        .collect();
    ids.sort_unstable();
    // `webhook-id` is the Idempotency-Key.
    assert_eq!(
        ids,
        ["signed:sw-ended-1:stop", "signed:sw-started-1"],
        "{records:#?}"
    );
    for record in &records {
        assert_eq!(record["ok"], true, "the library refused: {record:#}");
        assert_eq!(
            record["tampered_rejected"], true,
            "a changed body verified: {record:#}"
        );
    }
    let body: Value = serde_json::from_str(records[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["trigger"], "signed", "{body}");

    // Each verified request was answered 204, so forward counted it delivered.
    server
        .stderr
        .wait_until("both deliveries in the log", |lines| {
            lines
                .iter()
                .filter(|l| l.contains("forward delivered") && l.contains("status=204"))
                .count()
                >= 2
        });
    let stopped = server.stop();
    let log = stopped.stderr.join("\n");
    for secret in [OLD_SIGNING, NEW_SIGNING, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!log.contains(secret), "a signing secret in the log:\n{log}");
    }
}

/// The README's receiver, as printed there but on a port the OS picks.
fn readme_receiver() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let section = readme
        .split_once("**Signed deliveries.**")
        .expect("the README's signed deliveries")
        .1;
    let script = section
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a python block in the signed deliveries")
        .0;
    let fixed = r#"HTTPServer(("127.0.0.1", 9000), Receiver).serve_forever()"#;
    assert!(
        script.contains(fixed),
        "the README's receiver changed:\n{script}"
    );
    script.replace(
        fixed,
        "server = HTTPServer((\"127.0.0.1\", 0), Receiver)\n\
         print(\"listening\", server.server_address[1], flush=True)\n\
         server.serve_forever()",
    )
}

#[test]
fn the_readme_receiver_verifies_what_forward_sends() {
    let Some(pythonpath) = standardwebhooks() else {
        eprintln!("SKIPPED: python3 has no pip to install the `standardwebhooks` package with");
        return;
    };
    let dir = TempDir::new("readme-receiver");
    let script = dir.write("receiver.py", &readme_receiver());
    // Unbuffered, so that its `print` reaches the test at once.
    let receiver = PyReceiver::start(
        pythonpath.as_ref(),
        &script,
        &[],
        &[
            ("FORWARD_SIGNING_SECRET", NEW_SIGNING),
            ("PYTHONUNBUFFERED", "1"),
        ],
    );
    let config = dir.write(
        "whereby-trigger.toml",
        &format!(
            r#"[verify]
secrets = ["${{E2E_SECRET}}"]

[[trigger]]
name = "bot-service"
on = ["assistant.requested"]

[trigger.forward]
url = {url}
signing_secret = "${{E2E_SIGNING}}"
"#,
            url = q(receiver.url()),
        ),
    );
    let server = Server::start_from(command(), ["--config", config.to_str().unwrap()]);
    send(&server, "assistant.requested", "readme-1");
    // It prints what it verified, and answered 204.
    receiver.stdout.wait_until("the receiver's line", |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("bot-service:readme-1 start https://"))
    });
    server
        .stderr
        .wait_until("the delivery in the log", |lines| {
            lines
                .iter()
                .any(|l| l.contains("forward delivered") && l.contains("status=204"))
        });
    server.stop();
}
