//! The config file's tests: the full example, and each key and refusal of
//! every part (an error names its key and line); long because each case is a
//! TOML text written out.

use super::*;
use whereby_webhook::EventType;

fn env(name: &str) -> Option<String> {
    match name {
        "WHEREBY_WEBHOOK_SECRET" => Some("whsec_from_env".to_owned()),
        "ASSISTANT_API_TOKEN" => Some("tok-123".to_owned()),
        _ => None,
    }
}

/// The issue's example, every key set.
const FULL: &str = r#"
[server]
bind = "0.0.0.0"
port = 8080
path = "/"
max_body = "64KiB"
predicate_timeout = "4s"
header_timeout = "10s"
body_timeout = "3s"
max_header_bytes = "16KiB"
max_connections = 1024
request_deadline = "4500ms"
keep_alive = "6s"

[verify]
secrets = ["${WHEREBY_WEBHOOK_SECRET}"]
tolerance = "5m"
allow_unsigned = false

[store]
dir = "/var/lib/whereby-trigger"

[[trigger]]
name = "note-taker"
on = ["room.session.started", "assistant.requested"]
when = 'data.subdomain == "acme" && room.numClients >= 2'
once_per = "session"
lease = "12h"
stop_on = ["room.session.ended"]
run = { command = ["python3", "assistant.py", "--room", "{roomUrl}"], stdin = "event", timeout = "4h", stop_grace = "10s", max_running = 50, when_full = "drop", restart = "always", max_restarts = 3 }
forward = { url = "http://127.0.0.1:9000/assistants", timeout = "5s", headers = { Authorization = "Bearer ${ASSISTANT_API_TOKEN}" }, max_attempts = 12, max_age = "30m" }
stdout = true

[log]
format = "json"
"#;

#[test]
fn the_full_example_loads() {
    let c = Config::from_toml(FULL, &env).unwrap();
    assert_eq!(c.server.port, Some(8080));
    assert_eq!(c.server.max_body, Some(65_536));
    // The example spells out the defaults.
    assert_eq!(c.server.limits(), Limits::default());
    assert_eq!(c.server.max_connections, Some(1024));
    assert_eq!(c.verify.secrets[0].expose(), "whsec_from_env");
    assert_eq!(c.verify.tolerance, Some(Duration::from_secs(300)));
    let t = &c.triggers[0];
    assert_eq!(t.line, 24);
    assert_eq!(
        t.on,
        [
            EventType::RoomSessionStarted.into(),
            EventType::AssistantRequested.into()
        ]
    );
    assert_eq!(t.once_per, OncePer::Session);
    assert_eq!(t.stop_on, [EventType::RoomSessionEnded.into()]);
    let run = t.run.as_ref().unwrap();
    assert_eq!(run.command.len(), 4);
    assert_eq!(run.max_running, 50);
    assert_eq!(run.when_full, WhenFull::Drop);
    assert_eq!(run.restart, crate::actions::run::RestartPolicy::Always);
    assert_eq!(run.max_restarts, 3);
    assert_eq!(
        c.store.dir.as_deref(),
        Some(std::path::Path::new("/var/lib/whereby-trigger"))
    );
    assert_eq!(c.log.format, Some(LogFormat::Json));
    let forward = t.forward.as_ref().unwrap();
    assert_eq!(
        forward.headers,
        [("Authorization".to_owned(), "Bearer tok-123".to_owned())]
    );
    assert!(t.stdout);
}

#[test]
fn secrets_never_show() {
    let c = Config::from_toml(FULL, &env).unwrap();
    for shown in [format!("{c:?}"), c.summary()] {
        assert!(!shown.contains("whsec_from_env"), "{shown}");
        assert!(!shown.contains("tok-123"), "{shown}");
    }
    assert!(c.summary().contains("note-taker"));
    assert!(c.summary().contains("Authorization"));
}

#[test]
fn the_summary_writes_durations_as_people_do() {
    let summary = Config::from_toml(FULL, &env).unwrap().summary();
    for written in [
        "lease 12h",
        "timeout 4h",
        "head within 10s",
        "body within 3s",
    ] {
        assert!(summary.contains(written), "no {written:?} in {summary}");
    }
    assert!(!summary.contains("43200s"), "{summary}");
}

#[test]
fn blank_secrets_are_refused_naming_their_line() {
    let env = |name: &str| match name {
        "EMPTY" => Some(String::new()),
        "SPACES" => Some("  \t ".to_owned()),
        _ => None,
    };
    let toml = "[verify]\nsecrets = [\n  \"whsec_ok\",\n  \"   \",\n  \"\",\n  \"${SPACES}\",\n  \"${EMPTY}\",\n]\n";
    let e = Config::from_toml(toml, &env).unwrap_err().errors;
    let found: Vec<(Option<usize>, &str)> =
        e.iter().map(|e| (e.line, e.message.as_str())).collect();
    let blank = "verify.secrets: the signing secret is empty or only whitespace";
    let expanded = format!("{blank} once its variables are expanded");
    assert_eq!(
        found,
        [
            (Some(4), blank),
            (Some(5), blank),
            (Some(6), expanded.as_str()),
            (Some(7), expanded.as_str()),
        ]
    );
}

#[test]
fn a_tolerance_under_a_second_is_refused_naming_its_line() {
    for value in ["0s", "0", "0ms", "999ms"] {
        let toml = format!("[verify]\nallow_unsigned = true\ntolerance = \"{value}\"\n");
        let e = errors(&toml);
        assert_eq!(e.len(), 1, "{toml}: {e:?}");
        assert_eq!(e[0].line, Some(3), "{toml}: {e:?}");
        assert!(
            e[0].message
                .starts_with("verify.tolerance: must be at least 1s"),
            "{toml}: {e:?}"
        );
    }
    let c = Config::from_toml("[verify]\ntolerance = \"1s\"\n", &env).unwrap();
    assert_eq!(c.verify.tolerance, Some(Duration::from_secs(1)));
}

#[test]
fn the_summary_shows_the_limits_in_force() {
    let c = Config::from_toml(
        "[server]\nrequest_deadline = \"3s\"\nmax_connections = 7\n",
        &env,
    )
    .unwrap();
    let limits = c
        .summary()
        .lines()
        .find(|l| l.starts_with("limits:"))
        .map(str::to_owned)
        .expect("a limits line");
    assert!(limits.contains("answer within 3s"), "{limits}");
    assert!(limits.contains("7 connection(s)"), "{limits}");
    // Keys left out show their defaults.
    assert!(limits.contains("at most 16384 bytes"), "{limits}");
}

#[test]
fn defaults() {
    let c = Config::from_toml(
        "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.server, ServerConfig::default());
    assert!(!c.verify.allow_unsigned);
    let t = &c.triggers[0];
    assert_eq!(t.once_per, OncePer::Event);
    assert_eq!(t.lease, DEFAULT_LEASE);
    assert!(t.when.is_none() && t.run.is_none() && t.forward.is_none());
}

fn errors(toml: &str) -> Vec<ConfigProblem> {
    Config::from_toml(toml, &env).unwrap_err().errors
}

fn server(toml: &str) -> ServerConfig {
    Config::from_toml(toml, &env)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
        .server
}

#[test]
fn server_subdomain_is_one_dns_label() {
    assert_eq!(server("").subdomain, None);
    assert_eq!(
        server("[server]\nsubdomain = \"acme\"\n")
            .subdomain
            .as_deref(),
        Some("acme")
    );
    for bad in ["\"acme.evil.com\"", "\"\"", "\"-a\"", "\"xn--a\""] {
        let e = errors(&format!("[server]\nport = 1\nsubdomain = {bad}\n"));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(e[0].line, Some(3), "{bad}");
        assert!(
            e[0].message.starts_with("server.subdomain: "),
            "{}",
            e[0].message
        );
        assert!(e[0].message.contains("one DNS label"), "{}", e[0].message);
    }
    let e = errors("[server]\nsubdomain = 5\n");
    assert!(e[0].message.starts_with("server.subdomain: "), "{:?}", e[0]);
    let summary = Config::from_toml("[server]\nsubdomain = \"acme\"\n", &env)
        .unwrap()
        .summary();
    assert!(
        summary.contains("webhooks without data.subdomain use acme"),
        "{summary}"
    );
}

#[test]
fn the_summary_shows_the_store_and_the_admin_listener_never_a_password() {
    let summary = |toml: &str| Config::from_toml(toml, &env).unwrap().summary();

    let shared = summary(
        "[store]\nurl = \"postgres://trigger:hunter2@db:5432/trigger\"\nlease = \"1m\"\n\
         [admin]\nbind = \"off\"\n",
    );
    assert!(
        shared
            .contains("store: a shared PostgreSQL database (store.url), deliveries leased for 1m"),
        "{shared}"
    );
    assert!(shared.contains("admin: off"), "{shared}");
    assert!(!shared.contains("hunter2"), "{shared}");

    let default_lease = summary("[store]\nurl = \"postgres://db/trigger\"\n");
    assert!(
        default_lease.contains(&format!(
            "deliveries leased for {}",
            format_duration(DEFAULT_SHARED_LEASE)
        )),
        "{default_lease}"
    );

    let dir = summary("[store]\ndir = \"/var/lib/whereby-trigger\"\n");
    assert!(
        dir.contains("store: data directory /var/lib/whereby-trigger"),
        "{dir}"
    );
    let bare = summary("");
    assert!(bare.contains("store: not set here"), "{bare}");
    assert!(bare.contains("admin: not set here"), "{bare}");
}

#[test]
fn server_limits_parse() {
    let s = server(
        "[server]\n\
         header_timeout = \"2s\"\n\
         body_timeout = \"750ms\"\n\
         max_header_bytes = \"4KiB\"\n\
         max_connections = 64\n\
         request_deadline = \"4999ms\"\n\
         keep_alive = \"1m\"\n",
    );
    assert_eq!(s.header_timeout, Some(Duration::from_secs(2)));
    assert_eq!(s.body_timeout, Some(Duration::from_millis(750)));
    assert_eq!(s.max_header_bytes, Some(4096));
    assert_eq!(s.max_connections, Some(64));
    assert_eq!(s.request_deadline, Some(Duration::from_millis(4999)));
    assert_eq!(s.keep_alive, Some(Duration::from_secs(60)));
    assert_eq!(
        s.limits(),
        Limits {
            header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_millis(750),
            max_header_bytes: 4096,
            max_connections: 64,
            request_deadline: Duration::from_millis(4999),
            keep_alive_idle: Duration::from_secs(60),
        }
    );
}

#[test]
fn max_header_bytes_takes_the_forms_of_max_body_and_integers() {
    for (value, bytes) in [
        ("16384", 16_384),
        ("\"16384\"", 16_384),
        ("\"8KiB\"", 8_192),
        ("\"2kb\"", 2_000),
        ("\"1MiB\"", 1_048_576),
        // The smallest allowed, below hyper's 8 KiB buffer floor: the cap
        // on the head is exact all the same.
        ("1024", 1_024),
        ("\"1KiB\"", 1_024),
    ] {
        let s = server(&format!("[server]\nmax_header_bytes = {value}\n"));
        assert_eq!(s.max_header_bytes, Some(bytes), "{value}");
        assert_eq!(s.limits().max_header_bytes, bytes, "{value}");
    }
}

#[test]
fn server_limits_default_to_those_of_limits() {
    // No [server] table, an empty one, or one with other keys only.
    for toml in [
        "",
        "[server]\n",
        "[server]\nport = 9000\nmax_body = \"1KiB\"\n",
    ] {
        let s = server(toml);
        assert_eq!(
            (
                s.header_timeout,
                s.body_timeout,
                s.max_header_bytes,
                s.max_connections,
                s.request_deadline,
                s.keep_alive
            ),
            (None, None, None, None, None, None),
            "{toml:?}"
        );
        let limits = s.limits();
        assert_eq!(limits, Limits::default(), "{toml:?}");
        assert_eq!(
            limits.header_read_timeout,
            crate::limits::DEFAULT_HEADER_READ_TIMEOUT
        );
        assert_eq!(
            limits.body_read_timeout,
            crate::limits::DEFAULT_BODY_READ_TIMEOUT
        );
        assert_eq!(
            limits.max_header_bytes,
            crate::limits::DEFAULT_MAX_HEADER_BYTES
        );
        assert_eq!(
            limits.max_connections,
            crate::limits::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(
            limits.request_deadline,
            crate::limits::DEFAULT_REQUEST_DEADLINE
        );
        assert_eq!(
            limits.keep_alive_idle,
            crate::limits::DEFAULT_KEEP_ALIVE_IDLE
        );
    }
    // One key set leaves the others at their defaults.
    let s = server("[server]\nmax_connections = 8\n");
    assert_eq!(
        s.limits(),
        Limits {
            max_connections: 8,
            ..Limits::default()
        }
    );
}

#[test]
fn keep_alive_zero_turns_keep_alive_off() {
    let s = server("[server]\nkeep_alive = \"0s\"\n");
    assert_eq!(s.keep_alive, Some(Duration::ZERO));
    assert_eq!(s.limits().keep_alive_idle, Duration::ZERO);
    // A bare number in a string is seconds, as in every duration.
    let s = server("[server]\nkeep_alive = \"6\"\n");
    assert_eq!(s.keep_alive, Some(Duration::from_secs(6)));
}

/// Each refused value, as `(key, value, what the message says)`.
const REFUSED: &[(&str, &str, &str)] = &[
    ("header_timeout", "\"0s\"", "longer than zero"),
    ("header_timeout", "\"0ms\"", "longer than zero"),
    ("header_timeout", "10", "expected a duration string"),
    ("header_timeout", "\"10 sec\"", "not a valid duration"),
    ("body_timeout", "\"0s\"", "longer than zero"),
    ("body_timeout", "\"-1s\"", "not a valid duration"),
    ("body_timeout", "3.5", "expected a duration string"),
    ("max_header_bytes", "0", "at least 1KiB"),
    ("max_header_bytes", "\"0KiB\"", "at least 1KiB"),
    ("max_header_bytes", "1023", "at least 1KiB"),
    ("max_header_bytes", "\"1000B\"", "at least 1KiB"),
    ("max_header_bytes", "-16384", "at least 1KiB"),
    ("max_header_bytes", "\"16 kilobytes\"", "not a valid size"),
    ("max_header_bytes", "true", "expected a size"),
    ("max_connections", "0", "at least 1"),
    ("max_connections", "-1", "at least 1"),
    ("max_connections", "\"1024\"", "expected a whole number"),
    ("request_deadline", "\"0s\"", "longer than zero"),
    ("request_deadline", "\"5s\"", "below 5s"),
    ("request_deadline", "\"5000ms\"", "below 5s"),
    ("request_deadline", "\"1m\"", "Whereby gives up"),
    ("request_deadline", "4", "expected a duration string"),
    ("keep_alive", "6", "expected a duration string"),
    ("keep_alive", "\"6 seconds\"", "not a valid duration"),
];

#[test]
fn refused_server_limits_name_their_key_and_line() {
    for (key, value, says) in REFUSED {
        // On line 4, after other keys, so the line is not a lucky default.
        let toml = format!("[server]\nport = 9000\n\n{key} = {value}\n");
        let e = errors(&toml);
        assert_eq!(e.len(), 1, "{toml}: {e:?}");
        assert_eq!(e[0].line, Some(4), "{toml}: {e:?}");
        assert_eq!(e[0].trigger, None, "{toml}: {e:?}");
        assert!(
            e[0].message.starts_with(&format!("server.{key}: ")),
            "{toml}: {e:?}"
        );
        assert!(e[0].message.contains(says), "{toml}: {e:?}");
        let shown = ConfigErrors {
            file: Some("w.toml".into()),
            errors: e,
        }
        .to_string();
        assert!(
            shown.starts_with(&format!("w.toml:4: server.{key}: ")),
            "{shown}"
        );
    }
}

#[test]
fn a_late_request_deadline_says_why() {
    let e = errors("[server]\nrequest_deadline = \"5s\"\n");
    assert_eq!(e[0].line, Some(2));
    let message = &e[0].message;
    for needed in ["server.request_deadline", "below 5s", "5 s", "useless"] {
        assert!(message.contains(needed), "{message}");
    }
}

#[test]
fn every_refused_limit_is_reported_on_its_own_line() {
    let toml = "[server]\n\
                header_timeout = \"0s\"\n\
                body_timeout = \"0s\"\n\
                max_header_bytes = 512\n\
                max_connections = 0\n\
                request_deadline = \"5s\"\n\
                keep_alive = \"soon\"\n";
    let e = errors(toml);
    let found: Vec<(Option<usize>, &str)> = e
        .iter()
        .map(|e| (e.line, e.message.split(':').next().unwrap_or_default()))
        .collect();
    assert_eq!(
        found,
        [
            (Some(2), "server.header_timeout"),
            (Some(3), "server.body_timeout"),
            (Some(4), "server.max_header_bytes"),
            (Some(5), "server.max_connections"),
            (Some(6), "server.request_deadline"),
            (Some(7), "server.keep_alive"),
        ]
    );
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = errors("[server]\nprot = 80\n");
    assert_eq!(e[0].line, Some(2));
    assert!(e[0].message.contains("prot"), "{:?}", e);
    let e = errors(
        "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nstdout = true\nwhen_ = 'true'\n",
    );
    assert!(e[0].message.contains("when_"), "{:?}", e);
    assert_eq!(e[0].line, Some(5));
    assert_eq!(e[0].trigger.as_deref(), Some("t"));
    let two = "[[trigger]]\nname = \"a\"\non = [\"room.client.joined\"]\nstdout = true\n\n\
               [[trigger]]\nname = \"b\"\non = [\"room.client.joined\"]\ncolour = 1\nstdout = true\n";
    assert_eq!(errors(two)[0].trigger.as_deref(), Some("b"));
    assert_eq!(errors("[server]\nprot = 80\n")[0].trigger, None);
    let e = errors(
        "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nrun = { command = [\"x\"], stdn = \"none\" }\n",
    );
    assert!(e[0].message.contains("stdn"), "{:?}", e);
    assert!(errors("[stor]\ndir = \"x\"\n")[0].message.contains("stor"));
}

#[test]
fn trigger_errors_name_trigger_and_line() {
    let toml = r#"
[[trigger]]
name = "a"
on = ["room.client.joined"]
stdout = true

[[trigger]]
name = "b"
on = ["room knocked"]
when = """
data.subdomain ==
   && true"""
run = { command = ["x", "{rom}"] }

[[trigger]]
name = "a"
on = ["room.client.left"]
when = 'foo > 1'
forward = { url = "ftp://x", headers = { X = "${NOPE}" } }
"#;
    let e = errors(toml);
    let find = |needle: &str| {
        e.iter()
            .find(|e| e.message.contains(needle))
            .unwrap_or_else(|| panic!("no error mentions {needle}: {e:#?}"))
    };
    let knocked = find("`room knocked` is not an event type");
    assert_eq!(
        (knocked.trigger.as_deref(), knocked.line),
        (Some("b"), Some(9))
    );
    let cel = find("when:");
    assert_eq!((cel.trigger.as_deref(), cel.line), (Some("b"), Some(12)));
    assert!(find("{rom}").trigger.as_deref() == Some("b"));
    let dup = find("same name");
    assert_eq!(dup.line, Some(16));
    assert_eq!(find("`foo`").trigger.as_deref(), Some("a"));
    assert!(find("NOPE").message.contains("not set"));
    find("ftp");
}

#[test]
fn a_trigger_needs_an_action_and_events() {
    let e = errors("[[trigger]]\nname = \"t\"\non = []\n");
    assert!(e.iter().any(|e| e.message.contains("no action")));
    assert!(
        e.iter()
            .any(|e| e.message.contains("at least one event type"))
    );
    let e = errors(
        "[[trigger]]\nname = \"t t\"\non = [\"room.client.joined\"]\nstdout = true\nlease = \"0s\"\n",
    );
    assert!(e.iter().any(|e| e.message.contains("name:")));
    assert!(e.iter().any(|e| e.message.contains("lease")));
}

#[test]
fn syntax_errors_have_a_line() {
    let e = errors("[server]\nport = \n");
    assert_eq!(e[0].line, Some(2), "{e:?}");
    let shown = ConfigErrors {
        file: Some("w.toml".into()),
        errors: e,
    }
    .to_string();
    assert!(shown.starts_with("w.toml:2: "), "{shown}");
}

#[test]
fn expansion() {
    assert_eq!(
        expand("a${ASSISTANT_API_TOKEN}b", &env).unwrap(),
        "atok-123b"
    );
    assert_eq!(expand("$HOME $${X} $", &env).unwrap(), "$HOME ${X} $");
    assert!(expand("${UNSET_X}", &env).unwrap_err().contains("UNSET_X"));
    assert!(expand("${A", &env).is_err());
    assert!(expand("${A-B}", &env).is_err());
}

#[test]
fn run_when_full_defaults_to_wait_and_refuses_other_values_naming_the_key() {
    let run = |extra: &str| {
        format!(
            "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\n\
             run = {{ command = [\"x\"]{extra} }}\n"
        )
    };
    let when_full = |toml: &str| {
        let config = Config::from_toml(toml, &env).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        config.triggers[0].run.as_ref().unwrap().when_full
    };
    assert_eq!(when_full(&run("")), WhenFull::Wait);
    assert_eq!(when_full(&run(", when_full = \"wait\"")), WhenFull::Wait);
    assert_eq!(when_full(&run(", when_full = \"drop\"")), WhenFull::Drop);
    for (value, says) in [
        (
            "\"sometimes\"",
            "unknown variant `sometimes`, expected `wait` or `drop`",
        ),
        // As `stdin` and `restart`: lowercase only.
        ("\"Drop\"", "unknown variant `Drop`"),
        ("\"\"", "unknown variant ``"),
        (
            "true",
            "expected \"wait\" or \"drop\", found boolean `true`",
        ),
        ("1", "found integer `1`"),
    ] {
        let toml = run(&format!(", when_full = {value}"));
        let e = errors(&toml);
        assert_eq!(e.len(), 1, "{toml}: {e:?}");
        assert_eq!(e[0].line, Some(4), "{toml}: {e:?}");
        assert_eq!(e[0].trigger.as_deref(), Some("t"), "{toml}: {e:?}");
        assert!(e[0].message.starts_with("run.when_full: "), "{toml}: {e:?}");
        assert!(e[0].message.contains(says), "{toml}: {e:?}");
    }
}

#[test]
fn environment_values_cannot_inject_placeholders() {
    let env = |name: &str| (name == "ARG").then(|| "{roomUrl}".to_owned());
    let toml = "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nrun = { command = [\"echo\", \"${ARG}\", \"{roomUrl}\"] }\n";
    let config = Config::from_toml(toml, &env).unwrap();
    let command = &config.triggers[0].run.as_ref().unwrap().command;
    // The variable's braces stay literal; the file's own placeholder works.
    assert_eq!(command[1].to_string(), "{{roomUrl}}");
    assert_eq!(command[2].to_string(), "{roomUrl}");
}

#[test]
fn claims_stops_and_any_type_are_read_and_checked() {
    let config = Config::from_toml(
        r#"
[[trigger]]
name = "invited"
on = ["assistant.requested"]
once_per = "room"
claim = "visit"
stop_when = 'room.numHumans == 0'
stop_after = "30s"
stdout = true

[[trigger]]
name = "joined"
on = ["room.client.joined", "room.client.knocked", "meeting.renamed"]
once_per = "room"
claim = "visit"
stop_on = ["recording.finished"]
stdout = true
"#,
        &env,
    )
    .unwrap();
    let [invited, joined] = &config.triggers[..] else {
        panic!("two triggers")
    };
    assert_eq!((&*invited.claim, &*joined.claim), ("visit", "visit"));
    assert_eq!(invited.stop_after, Some(Duration::from_secs(30)));
    assert_eq!(
        invited.stop_when.as_ref().map(|w| w.source()),
        Some("room.numHumans == 0")
    );
    assert_eq!(
        joined
            .on
            .iter()
            .map(AnyEventType::as_str)
            .collect::<Vec<_>>(),
        [
            "room.client.joined",
            "room.client.knocked",
            "meeting.renamed"
        ]
    );
    assert_eq!(joined.stop_on[0].as_str(), "recording.finished");
    let summary = config.summary();
    for needle in [
        "claim `visit`",
        "stop when room.numHumans == 0",
        "stop after 30s",
    ] {
        assert!(summary.contains(needle), "{needle}: {summary}");
    }

    let problems = |toml: &str| {
        let errors = Config::from_toml(toml, &env).unwrap_err().errors;
        errors
            .into_iter()
            .map(|e| (e.line, e.trigger.unwrap_or_default(), e.message))
            .collect::<Vec<_>>()
    };
    let shared = problems(
        r#"
[[trigger]]
name = "a"
on = ["assistant.requested"]
once_per = "room"
claim = "x"
stdout = true

[[trigger]]
name = "b"
on = ["room.client.joined"]
once_per = "session"
claim = "x"
stdout = true
"#,
    );
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!((shared[0].0, shared[0].1.as_str()), (Some(13), "b"));
    assert!(
        shared[0]
            .2
            .contains("shared with trigger `a`, whose once_per is room"),
        "{shared:?}"
    );
    let lone = problems(
        r#"
[[trigger]]
name = "a"
on = ["assistant.requested"]
claim = "bad name"
stop_after = "30s"
stop_when = 'room.numHumans <'
stdout = true
"#,
    );
    let messages: Vec<&str> = lone.iter().map(|p| p.2.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.starts_with("claim: use letters")),
        "{lone:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("claim: needs once_per")),
        "{lone:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("stop_when:")),
        "{lone:?}"
    );
    let waiting = problems(
        "[[trigger]]\nname = \"a\"\non = [\"assistant.requested\"]\nstop_after = \"1m\"\nstdout = true\n",
    );
    assert_eq!(
        waiting,
        [(
            Some(4),
            "a".to_owned(),
            "stop_after: there is no stop to wait for: add stop_on or stop_when".to_owned()
        )]
    );
}

/// The Standard Webhooks reference secret (see `actions::forward::sign`).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn forward_trigger(signing_secret: &str) -> String {
    format!(
        "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\n\n[trigger.forward]\nurl = \"http://127.0.0.1:9/a\"\nsigning_secret = {signing_secret}\n"
    )
}

#[test]
fn signing_secrets_are_read_one_or_a_list_with_expansion() {
    let env = |name: &str| (name == "SIGNING").then(|| WHSEC.to_owned());
    let one = Config::from_toml(&forward_trigger("\"${SIGNING}\""), &env).unwrap();
    let forward = one.triggers[0].forward.as_ref().unwrap();
    assert_eq!(forward.signing_secrets, [WHSEC]);
    // The summary says the requests are signed, never with what.
    let summary = one.summary();
    assert!(summary.contains("signed (Standard Webhooks)"), "{summary}");
    assert!(!summary.contains("MfKQ9r8") && !format!("{one:?}").contains("MfKQ9r8"));

    let rotation = forward_trigger("[\"whsec_c2Vjb25k\", \"${SIGNING}\"]");
    let two = Config::from_toml(&rotation, &env).unwrap();
    let forward = two.triggers[0].forward.as_ref().unwrap();
    assert_eq!(forward.signing_secrets, ["whsec_c2Vjb25k", WHSEC]);
    assert!(two.summary().contains("2 secrets"), "{}", two.summary());
}

#[test]
fn bad_signing_secrets_are_refused_naming_the_key_and_its_line() {
    let env = |name: &str| (name == "NOT_BASE64").then(|| "whsec_no*base64".to_owned());
    // The secret is on line 7 of each config.
    let cases = [
        (
            "\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "forward.signing_secret: the secret does not start with `whsec_`",
        ),
        (
            "\"whsec_abc_def\"",
            "forward.signing_secret: what follows `whsec_` is not valid base64",
        ),
        (
            "\"whsec_\"",
            "forward.signing_secret: the secret is empty after `whsec_`",
        ),
        (
            "\"${NOT_BASE64}\"",
            "forward.signing_secret: what follows `whsec_` is not valid base64",
        ),
        (
            "\"${UNSET_SECRET}\"",
            "forward.signing_secret: the environment variable UNSET_SECRET is not set",
        ),
        (
            "[\"whsec_c2Vjb25k\", \"whsec_abc_def\"]",
            "forward.signing_secret[1]: what follows",
        ),
        ("[]", "forward.signing_secret: the list is empty"),
        ("42", "forward.signing_secret: must be a string"),
        (
            "[\"whsec_c2Vjb25k\", 42]",
            "forward.signing_secret: the list must hold strings only",
        ),
    ];
    for (value, expected) in cases {
        let toml = forward_trigger(value);
        let e = Config::from_toml(&toml, &env).unwrap_err().errors;
        assert_eq!(e.len(), 1, "{value}: {e:#?}");
        assert_eq!(e[0].line, Some(7), "{value}: {e:#?}");
        assert!(e[0].message.contains(expected), "{value}: {e:#?}");
        assert!(!e[0].message.contains("abc_def") && !e[0].message.contains("no*base64"));
    }
}

#[test]
fn a_signed_forward_reserves_the_standard_webhooks_headers() {
    let signed = format!(
        "{}headers = {{ webhook-signature = \"v1,forged\" }}\n",
        forward_trigger(&format!("\"{WHSEC}\""))
    );
    let e = errors(&signed);
    assert!(
        e.iter().any(|e| e.message.contains("webhook-signature")
            && e.message.contains("set by whereby-trigger")),
        "{e:#?}"
    );
    // Unsigned, the names are free, as they were before signing existed.
    let unsigned = "[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nforward = { url = \"http://127.0.0.1:9/a\", headers = { webhook-id = \"x\" } }\n";
    Config::from_toml(unsigned, &env).unwrap();
}

#[cfg(feature = "cel")]
#[test]
fn a_when_naming_a_field_its_types_lack_is_refused_at_load_with_a_suggestion() {
    let toml = "[verify]\nallow_unsigned = true\n\n[[trigger]]\nname = \"t\"\non = [\"room.client.joined\"]\nwhen = 'data.numClient >= 2'\nstdout = true\n";
    let e = Config::from_toml(toml, &env).unwrap_err().errors;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, Some(7), "{e:?}");
    assert!(
        e[0].message
            .contains("when: `data.numClient` is not a field"),
        "{e:?}"
    );
    assert!(
        e[0].message.contains("did you mean `data.numClients`?"),
        "{e:?}"
    );
    // The right spelling loads.
    let fixed = toml.replace("numClient ", "numClients ");
    assert!(Config::from_toml(&fixed, &env).is_ok());
}
