//! End-to-end: what `serve` writes to stderr, in both formats. JSON lines
//! parse and carry the `webhook` span; the pretty format has no escape codes
//! off a terminal; no secret, signature or `Authorization` value is ever logged.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use whereby_trigger::webhook::SIGNATURE_HEADER;

use crate::common::binary::{Server, Stopped, loopback_command};
use crate::common::fixture::{TempDir, toml_str};
use crate::common::receiver::Receiver;
use crate::common::{Reply, client, delivery_to, sample_with_id, send, sign};

/// The signing secret, given to the config as `${LOGS_SECRET}`.
const SECRET: &str = "whsec_logs_e2e_9d41b7c2aa58f3e6";

/// The value of the `Authorization` header `forward` sends.
const AUTHORIZATION: &str = "Bearer logs-e2e-token-51c8f0d2e7";

/// The Standard Webhooks secret `forward` signs its requests with, given to
/// the config as `${LOGS_SIGNING}`.
const SIGNING: &str = "whsec_bG9ncy1lMmUgZm9yd2FyZCBzaWduaW5nIGtleSA3ZjNh";

/// The samples' room, as log lines name it.
const ROOM: &str = "acme/standup-3f9a2c";

/// The binary with the config's secret in its environment, no proxy, and
/// `rust_log` as `RUST_LOG`.
fn command(rust_log: &str) -> Command {
    let mut cmd = loopback_command();
    cmd.env("LOGS_SECRET", SECRET)
        .env("LOGS_SIGNING", SIGNING)
        .env("RUST_LOG", rust_log);
    cmd
}

/// `serve --config config` with `extra` flags.
fn serve(rust_log: &str, config: &Path, extra: &[&str]) -> Server {
    let mut args = vec![OsStr::new("--config"), config.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    Server::start_from(command(rust_log), args)
}

/// A config with the secret, and a `forward` trigger on joins to `url` with
/// an `Authorization` header, signed with [`SIGNING`]; `head` comes first (a
/// `[log]` table, say).
fn config(dir: &TempDir, head: &str, url: &str) -> std::path::PathBuf {
    dir.write(
        "whereby-trigger.toml",
        &format!(
            "{head}\n[verify]\nsecrets = [\"${{LOGS_SECRET}}\"]\n\n[[trigger]]\nname = \"relay\"\n\
             on = [\"room.client.joined\"]\n\n[trigger.forward]\nurl = {}\ntimeout = \"5s\"\n\
             headers = {{ Authorization = {} }}\nsigning_secret = \"${{LOGS_SIGNING}}\"\n",
            toml_str(url),
            toml_str(AUTHORIZATION)
        ),
    )
}

/// POSTs `body` to `server` with `signature` as `Whereby-Signature`, from a
/// plain test thread.
fn post(server: &Server, body: &str, signature: &str) -> Reply {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to post on")
        .block_on(send(
            delivery_to(&client(), &server.url(), body).header(SIGNATURE_HEADER, signature),
        ))
}

/// Every stderr line as JSON; fails the test on one that is not.
fn json_lines(stopped: &Stopped) -> Vec<Value> {
    stopped
        .stderr
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// The line whose `message` is `message` and whose span's `id` is `id`.
fn line_of<'a>(lines: &'a [Value], message: &str, id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message && l["span"]["id"] == id)
        .unwrap_or_else(|| panic!("no `{message}` line for {id}: {lines:#?}"))
}

#[test]
fn json_lines_parse_and_carry_the_webhook_span() {
    let dir = TempDir::new("logs-json");
    let receiver = Receiver::start();
    let config = config(&dir, "", &receiver.url());
    // With the store, so that the lines logged once the commit is known are
    // checked to be in the span too.
    let data = dir.sub("data");
    let data = data.to_str().expect("a UTF-8 path");
    let server = serve(
        "info",
        &config,
        &["--log-format", "json", "--data-dir", data],
    );

    let body = sample_with_id("room.client.joined", "logs-json-1");
    post(&server, &body, &sign(SECRET, &body)).assert_outcome("triggered");
    let again = post(&server, &body, &sign(SECRET, &body));
    again.assert_outcome("duplicate");
    let forged = sample_with_id("room.client.joined", "logs-json-2");
    post(&server, &forged, &sign("whsec_not_the_secret", &forged))
        .assert_error(StatusCode::UNAUTHORIZED, "signature_mismatch");
    receiver.wait_for(1);
    server.stderr.wait_line("the delivery's line", 0, |l| {
        l.contains("forward delivered")
    });
    let stopped = server.stop();
    let lines = json_lines(&stopped);

    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
    }
    // One line ends each webhook, with its outcome and latency, inside the
    // span that names it.
    let answered: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "webhook answered")
        .collect();
    assert_eq!(answered.len(), 2, "{lines:#?}");
    for (line, outcome) in answered.iter().zip(["triggered", "duplicate"]) {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["outcome"], outcome, "{line}");
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
        let span = &line["span"];
        assert_eq!(span["name"], "webhook", "{line}");
        assert_eq!(span["id"], "logs-json-1", "{line}");
        assert_eq!(span["type"], "room.client.joined", "{line}");
        assert_eq!(span["room"], ROOM, "{line}");
    }
    // The rules' lines are inside the span too.
    let fired = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("relay: fired"))
        })
        .unwrap_or_else(|| panic!("no verdict: {lines:#?}"));
    assert_eq!(fired["span"]["id"], "logs-json-1", "{fired}");
    assert_eq!(fired["span"]["room"], ROOM, "{fired}");
    // A refusal ends its webhook at warn, with its code; its span is recorded
    // with the outcome (the body was never trusted, so it has no id).
    let refused = lines
        .iter()
        .find(|l| l["message"] == "webhook refused")
        .unwrap_or_else(|| panic!("no refusal: {lines:#?}"));
    assert_eq!(refused["level"], "WARN", "{refused}");
    assert_eq!(refused["code"], "signature_mismatch", "{refused}");
    assert!(refused["latency_ms"].as_f64().is_some(), "{refused}");
    assert_eq!(refused["span"]["name"], "webhook", "{refused}");
    // The action's lines name the trigger and the room.
    let delivered = lines
        .iter()
        .find(|l| l["message"] == "forward delivered")
        .unwrap_or_else(|| panic!("no delivery: {lines:#?}"));
    assert_eq!(delivered["trigger"], "relay", "{delivered}");
    assert_eq!(delivered["room"], ROOM, "{delivered}");
}

#[test]
fn the_files_log_format_applies_and_the_flag_wins() {
    let dir = TempDir::new("logs-file");
    let receiver = Receiver::start();
    let config = config(&dir, "[log]\nformat = \"json\"\n", &receiver.url());

    let server = serve("info", &config, &[]);
    let body = sample_with_id("room.client.left", "logs-file-1");
    post(&server, &body, &sign(SECRET, &body)).assert_outcome("not_matched");
    let lines = json_lines(&server.stop());
    line_of(&lines, "webhook answered", "logs-file-1");

    let server = serve("info", &config, &["--log-format", "pretty"]);
    post(&server, &body, &sign(SECRET, &body)).assert_outcome("not_matched");
    let stopped = server.stop();
    assert!(
        stopped.stderr.iter().all(|l| !l.starts_with('{')),
        "{:#?}",
        stopped.stderr
    );
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("webhook{id=\"logs-file-1\"")
                && l.contains("webhook answered")
                && l.contains("outcome=\"not_matched\"")
                && l.contains("latency_ms=")),
        "{:#?}",
        stopped.stderr
    );
}

#[test]
fn pretty_has_no_escape_codes_off_a_terminal() {
    let dir = TempDir::new("logs-pretty");
    let receiver = Receiver::start();
    let config = config(&dir, "", &receiver.url());
    // Debug, so that every level's colour would show.
    let server = serve("debug", &config, &[]);
    let body = sample_with_id("room.client.joined", "logs-pretty-1");
    post(&server, &body, &sign(SECRET, &body)).assert_outcome("triggered");
    post(&server, &body, "t=1,v1=00").assert_error(StatusCode::UNAUTHORIZED, "signature_malformed");
    receiver.wait_for(1);
    let stopped = server.stop();
    let text = stopped.stderr.join("\n");
    assert!(text.contains(" INFO "), "{text}");
    assert!(text.contains(" WARN "), "{text}");
    assert!(text.contains("DEBUG "), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a pipe:\n{text:?}"
    );
}

#[test]
fn no_secret_signature_or_authorization_is_ever_logged() {
    for format in ["pretty", "json"] {
        let dir = TempDir::new("logs-secrets");
        let receiver = Receiver::start();
        let config = config(&dir, "", &receiver.url());
        let server = serve("debug", &config, &["--log-format", format]);

        let body = sample_with_id("room.client.joined", "logs-secret-1");
        let signature = sign(SECRET, &body);
        post(&server, &body, &signature).assert_outcome("triggered");
        // A signature that does not match is refused without being shown.
        let forged_body = sample_with_id("room.client.joined", "logs-secret-2");
        let forged = sign("whsec_logs_forged_0b5e7a9c13", &forged_body);
        post(&server, &forged_body, &forged)
            .assert_error(StatusCode::UNAUTHORIZED, "signature_mismatch");

        // The forward went out with its headers: the values were in the process.
        let request = receiver.wait_for(1)[0].clone();
        assert_eq!(request.header("authorization"), AUTHORIZATION);
        // Standard Webhooks: `v1,<base64 HMAC>`, one per secret.
        let forward_signature = request.header("webhook-signature").to_owned();
        let forward_mac = forward_signature
            .strip_prefix("v1,")
            .unwrap_or_else(|| panic!("{format}: not a v1 signature: {forward_signature:?}"))
            .to_owned();
        server.stderr.wait_line("the delivery's line", 0, |l| {
            l.contains("forward delivered")
        });
        let stopped = server.stop();
        let text = stopped.stderr.join("\n");
        assert!(text.contains("logs-secret-1"), "{format}: {text}");
        assert!(text.contains("DEBUG"), "{format}: {text}");

        let token = AUTHORIZATION.trim_start_matches("Bearer ");
        let v1 = |sig: &str| sig.split("v1=").nth(1).expect("a v1 entry").to_owned();
        for (what, value) in [
            ("the secret", SECRET.to_owned()),
            (
                "the secret without its prefix",
                SECRET["whsec_".len()..].to_owned(),
            ),
            ("the signature header", signature.clone()),
            ("the signature", v1(&signature)),
            ("the forged signature", v1(&forged)),
            ("the Authorization value", AUTHORIZATION.to_owned()),
            ("the Authorization token", token.to_owned()),
            ("the forward signing secret", SIGNING.to_owned()),
            (
                "the forward signing secret without its prefix",
                SIGNING["whsec_".len()..].to_owned(),
            ),
            ("the forward's webhook-signature", forward_signature.clone()),
            ("the forward's signature", forward_mac.clone()),
        ] {
            assert!(
                !text.contains(&value),
                "{format}: {what} is in the log:\n{text}"
            );
        }
    }
}
