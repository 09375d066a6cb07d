//! End-to-end: the real `whereby-trigger` binary, `serve` and `send`, over loopback.

use std::process::Output;

use crate::common::binary::{self, Server, command, send, text};
use crate::common::fixture::TempDir;

const SECRET: &str = "whsec_test_4f7c1e9a2b6d8035";

/// `send EVENT_TYPE --to TO --secret SECRET`, then `extra`.
fn send_signed(event_type: &str, to: &str, extra: &[&str]) -> Output {
    binary::send_signed(command(), event_type, to, SECRET, extra)
}

#[test]
fn serve_and_send_end_to_end() {
    let server = Server::start(&["--secret", SECRET, "--on", "room.client.joined"]);
    let to = server.url();

    let first = send_signed("room.client.joined", &to, &["--id", "e2e-1"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("HTTP 200"), "{out}");
    assert!(out.contains(r#"{"outcome":"triggered"}"#), "{out}");

    let again = send_signed("room.client.joined", &to, &["--id", "e2e-1"]);
    assert!(text(&again.stdout).contains(r#""duplicate""#));

    let left = send_signed("room.client.left", &to, &[]);
    assert!(text(&left.stdout).contains(r#""not_matched""#));

    let knocked = send_signed("room.client.knocked", &to, &[]);
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

    let stale = send_signed("room.client.joined", &to, &["--timestamp", "1000"]);
    assert!(text(&stale.stdout).contains("signature_stale"));

    // --set and --room-name reach the payload: this one fires in another room.
    let custom = send_signed(
        "room.client.joined",
        &to,
        &[
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
        ],
    );
    assert!(
        text(&custom.stdout).contains("triggered"),
        "{}",
        text(&custom.stdout)
    );

    let bad_room = send_signed("room.client.joined", &to, &["--subdomain", "evil.com"]);
    assert!(text(&bad_room.stdout).contains("data.subdomain"));

    let stopped = server.stop();
    let lines = stopped.events();
    assert_eq!(lines.len(), 2, "{}", stopped.stdout_text());
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
    let dir = TempDir::new("cli-file");
    let file = dir.write(
        "requested.json",
        whereby_trigger::webhook::sample::sample("assistant.requested").unwrap(),
    );
    let out = send(&["--file", file.to_str().unwrap(), "--to", &server.url()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("triggered"));
    let stdout = server.stop().stdout_text();
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The file's own id is kept, and the pretty-printed file arrives as one line.
    assert_eq!(
        line["triggerWebhook"]["id"],
        "4d0e6f2a5b1c7d9e8f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
    );
}

#[test]
fn the_secret_can_come_from_the_environment() {
    let env = [("WHEREBY_WEBHOOK_SECRET", SECRET)];
    let mut base = command();
    base.envs(env);
    let server = Server::start_from(base, ["--on", "room.session.started"]);
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
fn serve_says_where_its_secrets_came_from_and_a_401_how_to_sign() {
    // The quick start's secret still exported, and a file that allows unsigned
    // webhooks: the secret wins, and the log says so in one line.
    let dir = TempDir::new("cli-secret-source");
    let config = dir.write(
        "stdout.toml",
        "[verify]\nallow_unsigned = true\n\n[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n",
    );
    let mut base = command();
    base.env("WHEREBY_WEBHOOK_SECRET", SECRET);
    let server = Server::start_from(base, ["--config", config.to_str().unwrap()]);
    let line = server.stderr.wait_line("the signature line", 0, |l| {
        l.contains("signatures checked")
    });
    assert!(line.contains("from WHEREBY_WEBHOOK_SECRET"), "{line}");
    assert!(line.contains("allow_unsigned has no effect"), "{line}");
    assert!(!line.contains(SECRET), "{line}");
    let unsigned = send(&["room.client.joined", "--unsigned", "--to", &server.url()]);
    let out = text(&unsigned.stdout);
    assert!(out.contains("signature_missing"), "{out}");
    assert!(out.contains("--secret or WHEREBY_WEBHOOK_SECRET"), "{out}");
    drop(server);

    // Secrets from the file are named by the file; none at all is a warning.
    let signed = dir.write(
        "signed.toml",
        &format!("[verify]\nsecrets = [\"{SECRET}\"]\n\n[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n"),
    );
    let server = Server::start(&["--config", signed.to_str().unwrap()]);
    let line = server.stderr.wait_line("the signature line", 0, |l| {
        l.contains("signatures checked")
    });
    assert!(
        line.contains("1 secret(s) from [verify] secrets in"),
        "{line}"
    );
    assert!(line.contains("signed.toml"), "{line}");
    drop(server);
    let server = Server::start(&["--allow-unsigned"]);
    server.stderr.wait_line("the unsigned warning", 0, |l| {
        l.contains("signatures NOT checked")
    });
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let out = command()
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--allow-unsigned"), "{err}");
    assert!(err.contains("WHEREBY_WEBHOOK_SECRET"), "{err}");
}

/// Runs `serve` on a free port with `args` from `base`, expecting it to refuse
/// to start: its exit code and stderr. Bounded, and killed if it does start.
fn refused_serve(mut base: std::process::Command, args: &[&str]) -> (Option<i32>, String) {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        base.args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin-bind",
            "127.0.0.1:0",
            "--ephemeral",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let stderr = binary::capture(child.0.stderr.take().expect("stderr"));
    let status = binary::wait_with_deadline(&mut child.0);
    stderr.wait_closed("serve's stderr");
    let err = stderr.snapshot().join("\n");
    assert!(!err.contains("addr="), "it must not listen:\n{err}");
    (status.code(), err)
}

#[test]
fn serve_refuses_a_blank_secret_naming_where_it_came_from() {
    const BLANK: &str = "the signing secret is empty or only whitespace";
    for secret in ["   ", "", "\t"] {
        // Beside a real secret too: a blank one is a mistake wherever it is.
        for args in [
            vec!["--secret", secret],
            vec!["--secret", SECRET, "--secret", secret, "--allow-unsigned"],
        ] {
            let (code, err) = refused_serve(command(), &args);
            assert_eq!(code, Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!("--secret: {BLANK}")),
                "{args:?}: {err}"
            );
        }
    }

    for secret in ["  ", ""] {
        let mut from_env = command();
        from_env.env("WHEREBY_WEBHOOK_SECRET", secret);
        let (code, err) = refused_serve(from_env, &[]);
        assert_eq!(code, Some(2), "{secret:?}: {err}");
        assert!(
            err.contains(&format!("WHEREBY_WEBHOOK_SECRET: {BLANK}")),
            "{secret:?}: {err}"
        );
    }

    let dir = TempDir::new("cli-blank-secret");
    let file = dir.write("blank.toml", "[verify]\nsecrets = [\" \"]\n");
    let file = file.to_str().unwrap();
    let (code, err) = refused_serve(command(), &["--config", file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{file}:2: verify.secrets: {BLANK}")),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_tolerance_under_a_second() {
    for tolerance in ["0", "0s", "500ms"] {
        let (code, err) = refused_serve(command(), &["--secret", SECRET, "--tolerance", tolerance]);
        assert_eq!(code, Some(2), "{tolerance}: {err}");
        assert!(err.contains("--tolerance"), "{tolerance}: {err}");
        assert!(err.contains("must be at least 1s"), "{tolerance}: {err}");
    }
    let dir = TempDir::new("cli-tolerance");
    let file = dir.write(
        "zero.toml",
        &format!("[verify]\nsecrets = [\"{SECRET}\"]\ntolerance = \"0s\"\n"),
    );
    let file = file.to_str().unwrap();
    let (code, err) = refused_serve(command(), &["--config", file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{file}:3: verify.tolerance: must be at least 1s")),
        "{err}"
    );
}

#[test]
fn serve_on_refuses_a_type_without_a_room_and_points_to_a_config() {
    let out = command()
        .args(["serve", "--allow-unsigned", "--on", "room.client.knocked"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"[[trigger]] on = ["room.client.knocked"]"#),
        "{err}"
    );

    // Not a type at all, or a misspelt one: no pointer that would carry the
    // mistake into a config.
    for wrong in ["knocked", "room.client.joind"] {
        let out = command()
            .args(["serve", "--allow-unsigned", "--on", wrong])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("`{wrong}` is not an event type")),
            "{err}"
        );
        assert!(!err.contains("[[trigger]]"), "{err}");
    }
}

#[test]
fn a_worker_refuses_the_flags_of_receiving_rather_than_ignoring_them() {
    let dir = TempDir::new("cli-worker-flags");
    let config = dir.write(
        "worker.toml",
        "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n",
    );
    // The store's URL is never reached: the flags are refused first.
    let worker = |extra: &[&str]| {
        let mut cmd = command();
        cmd.env_remove("WHEREBY_WEBHOOK_SECRET").args([
            "worker",
            "--config",
            config.to_str().unwrap(),
            "--store-url",
            "postgres://127.0.0.1:1/unreached",
        ]);
        cmd.args(extra);
        cmd
    };

    let out = worker(&["--secret", SECRET, "--tolerance", "10s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--secret, --tolerance are for `serve`: a worker receives no webhooks"),
        "{err}"
    );

    // A secret exported for the receivers beside it is no mistake.
    let out = worker(&["--no-actions"])
        .env("WHEREBY_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--no-actions is for `serve`"), "{err}");
    assert!(!err.contains("--secret"), "{err}");
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
        "at least 1s",
        "[default: 300s]",
        "--base-domain",
        "[default: whereby.com]",
        "--on",
        "--max-body",
        "[default: 64KiB]",
        "--predicate-timeout",
        "[default: 4s]",
        "--subdomain",
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
        "--omit",
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
    let stdout = server.stop().stdout_text();
    assert_eq!(stdout, "", "stdout is for trigger events only");
}

#[test]
fn payloads_without_a_subdomain_take_the_default_subdomain() {
    // Without a default, a payload with no subdomain cannot name its room.
    let plain = Server::start(&["--secret", SECRET, "--on", "room.client.joined"]);
    let refused = send_signed("room.client.joined", &plain.url(), &["--omit", "subdomain"]);
    assert_eq!(refused.status.code(), Some(1));
    let out = text(&refused.stdout);
    assert!(out.contains("HTTP 400"), "{out}");
    assert!(out.contains(r#""field":"data.subdomain""#), "{out}");
    drop(plain);

    let server = Server::start(&[
        "--secret",
        SECRET,
        "--subdomain",
        "globex",
        "--on",
        "room.client.joined",
    ]);
    let to = server.url();
    // Before 2025: no subdomain; today's docs: no participantId; and a
    // meetingId that is a number, twice.
    let old_shape = [
        "--omit",
        "subdomain",
        "--omit",
        "participantId",
        "--set",
        "meetingId=134",
    ];
    for _ in 0..2 {
        let out = send_signed("room.client.joined", &to, &old_shape);
        assert!(out.status.success(), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("triggered"));
    }
    // A payload's own subdomain wins over the default.
    let own = send_signed("room.client.joined", &to, &[]);
    assert!(text(&own.stdout).contains("triggered"));

    let stopped = server.stop();
    let events = stopped.events();
    let urls: Vec<&str> = events
        .iter()
        .map(|e| e["roomUrl"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://globex.whereby.com/standup-3f9a2c",
            "https://globex.whereby.com/standup-3f9a2c",
            "https://acme.whereby.com/standup-3f9a2c",
        ]
    );
    // The webhook is handed on as sent: no subdomain, the number kept.
    let data = &events[0]["triggerWebhook"]["data"];
    assert!(data.get("subdomain").is_none(), "{data}");
    assert!(data.get("participantId").is_none(), "{data}");
    assert_eq!(data["meetingId"], 134);
    // One warning for the number, however many webhooks carry it.
    let warnings: Vec<&String> = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("data.meetingId"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stopped.stderr.join("\n"));
    assert!(warnings[0].contains("decimal text"), "{}", warnings[0]);
}

#[test]
fn a_default_subdomain_that_is_not_a_dns_label_is_refused_at_start() {
    let out = command()
        .args([
            "serve",
            "--allow-unsigned",
            "--ephemeral",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--subdomain",
            "acme.evil.com",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("acme.evil.com"), "{err}");
}

#[test]
fn init_writes_a_starter_config_that_check_accepts_and_never_overwrites() {
    let dir = TempDir::new("cli-init");
    let path = dir.path().join("whereby-trigger.toml");
    let init = || {
        command()
            .args(["init", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let first = init();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with('#'), "a commented file: {written}");

    let check = command()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    assert!(
        text(&check.stdout).contains("OK"),
        "{}",
        text(&check.stdout)
    );

    // A second init leaves the (perhaps edited) file alone.
    std::fs::write(&path, "# mine\n").unwrap();
    let again = init();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
}

#[test]
fn send_refuses_an_unknown_type_unless_type_any_and_a_wrong_path_is_named() {
    let server = Server::start(&["--allow-unsigned", "--on", "room.client.joined"]);
    let typo = send(&["room.client.joind", "--to", &server.url()]);
    assert_eq!(typo.status.code(), Some(2), "{}", text(&typo.stdout));
    let err = text(&typo.stderr);
    assert!(err.contains("did you mean `room.client.joined`"), "{err}");
    assert!(err.contains("--type-any"), "{err}");
    assert!(!text(&typo.stdout).contains("HTTP"), "nothing was posted");

    let any = send(&["meeting.renamed", "--type-any", "--to", &server.url()]);
    assert!(any.status.success(), "{}", text(&any.stderr));
    assert!(
        text(&any.stdout).contains("ignored"),
        "{}",
        text(&any.stdout)
    );

    // A wrong path: the 404 says where webhooks go.
    let wrong = send(&[
        "room.client.joined",
        "--to",
        &format!("{}webhook", server.url()),
    ]);
    let out = text(&wrong.stdout);
    assert!(out.contains("HTTP 404"), "{out}");
    assert!(out.contains("webhooks are delivered to /"), "{out}");

    // The log is written without colour codes when stderr is not a terminal.
    let stopped = server.stop();
    let log = stopped.stderr.join("\n");
    assert!(!log.contains('\u{1b}'), "{log}");
}

#[test]
fn outbox_says_no_store_only_when_there_is_none() {
    let dir = TempDir::new("cli-outbox");
    let list = |data: &std::path::Path| {
        command()
            .args(["outbox", "list", "--data-dir"])
            .arg(data)
            .output()
            .unwrap()
    };
    let none = list(&dir.path().join("nothing-here"));
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("no store"),
        "{}",
        text(&none.stderr)
    );

    // A file where the data directory should be: the store cannot be read,
    // which is not the same as there being none.
    let file = dir.write("not-a-dir", "");
    let unreadable = list(&file);
    assert!(!unreadable.status.success());
    let err = text(&unreadable.stderr);
    assert!(!err.contains("no store"), "{err}");
    assert!(err.contains("cannot read the store"), "{err}");
}

/// A payload's line separators (U+2028, U+2029, U+0085) never reach the log
/// raw, in either format: a splitter that honours them would cut the line.
#[test]
fn log_lines_escape_the_line_separators_a_payload_carries() {
    for format in ["json", "pretty"] {
        let server = Server::start(&[
            "--secret",
            SECRET,
            "--on",
            "room.client.joined",
            "--log-format",
            format,
        ]);
        let id = "sep\u{2028}a\u{2029}b\u{85}c";
        let sent = send_signed("room.client.joined", &server.url(), &["--id", id]);
        assert!(text(&sent.stdout).contains("triggered"), "{format}");
        let stopped = server.stop();
        let answered: Vec<&String> = stopped
            .stderr
            .iter()
            .filter(|l| l.contains("webhook answered"))
            .collect();
        assert_eq!(answered.len(), 1, "{format}: {:#?}", stopped.stderr);
        let line = answered[0];
        // JSON escapes them as JSON does; the pretty format shows the id as
        // Rust's Debug does, which escapes them too.
        let escaped = match format {
            "json" => r"sep\u2028a\u2029b\u0085c",
            _ => r"sep\u{2028}a\u{2029}b\u{85}c",
        };
        assert!(line.contains(escaped), "{format}: {line}");
        for line in &stopped.stderr {
            assert!(
                !line.contains(['\u{2028}', '\u{2029}', '\u{85}']),
                "{format}: {line}"
            );
        }
        if format == "json" {
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(value["span"]["id"], id, "{line}");
        }
    }
}
