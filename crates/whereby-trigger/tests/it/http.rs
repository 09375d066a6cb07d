//! The HTTP contract (issue 2, section 3), against the real server on
//! `127.0.0.1:0`, one row of the table after another.
//!
//! No test sleeps to synchronise: predicates that must be "in flight" wait on a
//! `Notify` and say when they have started, and every wait is bounded by
//! `common::TIMEOUT` so a hang fails instead of hanging.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use crate::common::{
    JSON, Reply, SECRET, Server, bad_signatures, builder, chunked_request, id_of, raw_exchange,
    sample, sample_value, sample_with, sample_with_id, send, sign_at, unreadable_webhooks, within,
};
use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;
use whereby_trigger::actions::stdout::LineSink;
use whereby_trigger::verify::ToleranceError;
use whereby_trigger::webhook::{
    AssistantRequested, EventType, RoomClientJoined, RoomClientLeft, RoomSessionEnded,
    RoomSessionStarted, SecretError, unix_now,
};
use whereby_trigger::{ConfigError, Trigger};

/// The room URL of every sample payload.
const SAMPLE_ROOM_URL: &str = "https://acme.whereby.com/standup-3f9a2c";

/// A counter the predicates bump, to prove they were (or were not) consulted.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// POSTs `body`, asserts it is answered `triggered` and that the next event is
/// its own.
async fn assert_triggers(server: &mut Server, body: &str) {
    server.post(body).await.assert_outcome("triggered");
    assert_eq!(server.next_event().await.trigger_webhook.id(), id_of(body));
}

/// POSTs `body` and asserts the 500 of a predicate that failed.
async fn assert_predicate_failed(server: &Server, body: &str) {
    server
        .post(body)
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "predicate_failed");
}

/// A `room.client.joined` predicate that is always true and counts its calls.
fn always_joined(calls: &Arc<AtomicUsize>) -> impl Fn(&RoomClientJoined) -> bool + use<> {
    let calls = calls.clone();
    move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        true
    }
}

// ---------------------------------------------------------------------------
// 200: triggered, not_matched, ignored, duplicate
// ---------------------------------------------------------------------------

#[tokio::test]
async fn predicate_true_answers_triggered_with_one_event() {
    let mut server =
        Server::start(builder().on(|e: &RoomClientJoined| e.data.num_clients == Some(1))).await;
    // A second subscriber, taken after start: every subscriber gets every event.
    let mut late = server.handle.subscribe();
    let body = sample("room.client.joined");

    server.post(body).await.assert_outcome("triggered");

    let event = server.next_event().await;
    assert_eq!(event.room_url, SAMPLE_ROOM_URL);
    assert_eq!(event.trigger_webhook.id(), id_of(body));
    assert_eq!(event.trigger_webhook.type_name(), "room.client.joined");
    assert_eq!(event.raw_webhook(), body.as_bytes(), "the body as received");
    server.assert_no_event();

    let copy = within("the second subscriber's event", late.recv())
        .await
        .expect("second subscriber got the event");
    assert_eq!(copy.trigger_webhook.id(), id_of(body));
    assert!(late.try_recv().is_none());
    server.shutdown().await;
}

/// A writer into memory that a test can read after the sink is closed.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn json(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn on_every_prints_events_and_records_webhooks_flushed_at_shutdown() {
    let (printed, recorded) = (Lines::default(), Lines::default());
    let server = Server::start(
        builder()
            .on_every(EventType::RoomSessionStarted)
            .print_events(LineSink::new(printed.clone()))
            .record_webhooks(LineSink::new(recorded.clone())),
    )
    .await;
    let started = sample("room.session.started");
    let joined = sample("room.client.joined");

    server.post(started).await.assert_outcome("triggered");
    server.post(started).await.assert_outcome("duplicate");
    server.post(joined).await.assert_outcome("not_matched");
    server.shutdown().await;

    // One event printed, for the type asked for; every verified webhook
    // recorded, the duplicate too.
    let printed = printed.json();
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["roomUrl"], SAMPLE_ROOM_URL);
    assert_eq!(printed[0]["triggerWebhook"]["id"], id_of(started));
    let recorded: Vec<String> = recorded
        .json()
        .iter()
        .map(|line| line["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(recorded, [id_of(started), id_of(started), id_of(joined)]);
}

/// `--print` and `--record` lines stay one line for splitters that cut at
/// U+2028, U+2029 and U+0085 (Python's `str.splitlines`): escaped, and the
/// JSON read back is the webhook as sent.
#[tokio::test]
async fn printed_and_recorded_lines_escape_every_line_separator() {
    let (printed, recorded) = (Lines::default(), Lines::default());
    let server = Server::start(
        builder()
            .on_every(EventType::RoomClientJoined)
            .print_events(LineSink::new(printed.clone()))
            .record_webhooks(LineSink::new(recorded.clone())),
    )
    .await;
    let mut sent = sample_value("room.client.joined");
    sent["data"]["displayName"] = "Ada\u{2028}Lovelace".into();
    sent["note\u{2029}"] = "a\u{85}b".into();
    let body = serde_json::to_string_pretty(&sent).unwrap();
    assert!(body.contains('\u{2028}'), "serde_json writes them raw");
    server.post(body).await.assert_outcome("triggered");
    server.shutdown().await;

    for (what, lines) in [("printed", &printed), ("recorded", &recorded)] {
        let bytes = lines.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains(['\u{2028}', '\u{2029}', '\u{85}', '\r']),
            "{what}: {text}"
        );
        assert_eq!(text.matches('\n').count(), 1, "{what}: one line");
        let line: Value = serde_json::from_str(&text).unwrap();
        let webhook = if what == "printed" {
            &line["triggerWebhook"]
        } else {
            &line
        };
        assert_eq!(webhook, &sent, "{what}");
    }
}

#[tokio::test]
async fn every_evaluated_type_can_trigger() {
    let mut server = Server::start(
        builder()
            .on(|_: &RoomClientJoined| true)
            .on(|_: &RoomClientLeft| true)
            .on(|_: &RoomSessionStarted| true)
            .on(|_: &RoomSessionEnded| true)
            .on(|_: &AssistantRequested| true),
    )
    .await;
    for event_type in [
        "room.client.joined",
        "room.client.left",
        "room.session.started",
        "room.session.ended",
        "assistant.requested",
    ] {
        let body = sample(event_type);
        server.post(body).await.assert_outcome("triggered");
        let event = server.next_event().await;
        assert_eq!(event.trigger_webhook.type_name(), event_type);
        assert_eq!(event.trigger_webhook.id(), id_of(body));
        assert_eq!(event.room_url, SAMPLE_ROOM_URL);
    }
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn predicate_false_or_absent_answers_not_matched() {
    let mut server =
        Server::start(builder().on(|e: &RoomClientJoined| e.data.num_clients == Some(1))).await;

    // The predicate says no: the sample with a second client.
    let second = sample_with("room.client.joined", |v| v["data"]["numClients"] = 2.into());
    server.post(second).await.assert_outcome("not_matched");
    // No predicate for this type at all.
    server
        .post(sample("room.session.started"))
        .await
        .assert_outcome("not_matched");

    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn types_not_evaluated_are_ignored() {
    let calls = counter();
    let mut server = Server::start(builder().on(always_joined(&calls))).await;

    for event_type in [
        "room.client.knocked",
        "recording.finished",
        "transcription.finished",
    ] {
        server
            .post(sample(event_type))
            .await
            .assert_outcome("ignored");
    }
    // A type Whereby may add tomorrow, with a shape of its own.
    let future = serde_json::json!({
        "id": "future-1",
        "apiVersion": "2.0",
        "createdAt": "2027-01-01T00:00:00Z",
        "type": "room.something.new",
        "data": { "whatever": [1, 2, 3] }
    });
    server
        .post(future.to_string())
        .await
        .assert_outcome("ignored");

    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn an_answered_id_is_a_duplicate() {
    let calls = counter();
    let mut server = Server::start(builder().on({
        let calls = calls.clone();
        move |e: &RoomClientJoined| {
            calls.fetch_add(1, Ordering::SeqCst);
            e.data.num_clients == Some(1)
        }
    }))
    .await;

    // Triggered once, then the same id again: no second evaluation, no second event.
    let body = sample("room.client.joined");
    assert_triggers(&mut server, body).await;
    server.post(body).await.assert_outcome("duplicate");
    server.post(body).await.assert_outcome("duplicate");
    server.assert_no_event();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // An id answered not_matched is remembered as well, even if the retry would match.
    let no = sample_with("room.client.joined", |v| {
        v["id"] = "answered-no".into();
        v["data"]["numClients"] = 3.into();
    });
    server.post(no).await.assert_outcome("not_matched");
    let yes = sample_with_id("room.client.joined", "answered-no");
    server.post(yes).await.assert_outcome("duplicate");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // And so is an ignored one.
    let knocked = sample("room.client.knocked");
    server.post(knocked).await.assert_outcome("ignored");
    server.post(knocked).await.assert_outcome("duplicate");

    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_duplicates_trigger_exactly_once() {
    const DELIVERIES: usize = 20;
    let calls = counter();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let mut server = Server::start(builder().on_async({
        let (calls, started, release) = (calls.clone(), started.clone(), release.clone());
        move |_: RoomClientJoined| {
            let (calls, started, release) = (calls.clone(), started.clone(), release.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                started.notify_one();
                release.notified().await;
                true
            }
        }
    }))
    .await;

    let body = sample("room.client.joined");
    let mut deliveries = JoinSet::new();
    for _ in 0..DELIVERIES {
        deliveries.spawn(send(server.delivery("/", body)));
    }

    // One delivery is now held inside the predicate. Every other one must be
    // answered `duplicate` while it is held (they must not wait for it).
    within("the predicate to start", started.notified()).await;
    for _ in 1..DELIVERIES {
        let reply = within("a racing delivery", deliveries.join_next())
            .await
            .expect("a delivery is left")
            .expect("delivery task");
        reply.assert_outcome("duplicate");
    }
    server.assert_no_event();

    release.notify_one();
    let reply = within("the evaluated delivery", deliveries.join_next())
        .await
        .expect("the evaluated delivery is left")
        .expect("delivery task");
    reply.assert_outcome("triggered");
    assert!(deliveries.is_empty());

    assert_eq!(calls.load(Ordering::SeqCst), 1, "the predicate ran once");
    assert_eq!(server.next_event().await.trigger_webhook.id(), id_of(body));
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_evaluation_is_not_remembered() {
    let calls = counter();
    let mut server = Server::start(builder().try_on({
        let calls = calls.clone();
        // Fails the first time (say, its database is down), then says yes.
        move |_: &RoomClientJoined| match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Err("database unavailable"),
            _ => Ok(true),
        }
    }))
    .await;
    let body = sample("room.client.joined");

    assert_predicate_failed(&server, body).await;
    server.assert_no_event();

    // Whereby's retry carries the same id and is evaluated afresh.
    server.post(body).await.assert_outcome("triggered");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.next_event().await.trigger_webhook.id(), id_of(body));
    server.post(body).await.assert_outcome("duplicate");
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn callbacks_run_once_per_trigger_event() {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let server = Server::start(
        builder()
            .on(|e: &RoomClientJoined| e.data.num_clients == Some(1))
            .on_trigger({
                let seen = seen.clone();
                move |event| {
                    seen.lock().unwrap().push((
                        event.room_url.clone(),
                        event.trigger_webhook.id().to_owned(),
                    ));
                }
            }),
    )
    .await;

    let first = sample_with_id("room.client.joined", "cb-1");
    server.post(first.clone()).await.assert_outcome("triggered");
    server.post(first).await.assert_outcome("duplicate");
    let no = sample_with("room.client.joined", |v| {
        v["id"] = "cb-no".into();
        v["data"]["numClients"] = 2.into();
    });
    server.post(no).await.assert_outcome("not_matched");
    let second = sample_with("room.client.joined", |v| {
        v["id"] = "cb-2".into();
        v["data"]["roomName"] = "/retro".into();
    });
    server.post(second).await.assert_outcome("triggered");

    // Callbacks run before the answer, so both are in by now.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (SAMPLE_ROOM_URL.to_owned(), "cb-1".to_owned()),
            (
                "https://acme.whereby.com/retro".to_owned(),
                "cb-2".to_owned()
            ),
        ]
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 400: unreadable webhooks, naming the field
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unreadable_webhooks_are_400_naming_the_field() {
    let calls = counter();
    let mut server = Server::start(builder().on(always_joined(&calls))).await;

    for case in unreadable_webhooks() {
        let reply = server.post(case.body).await;
        let json = reply.assert_error(StatusCode::BAD_REQUEST, case.code);
        assert_eq!(
            json.get("field").and_then(Value::as_str),
            case.field,
            "{}: {}",
            case.what,
            reply.body
        );
    }

    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");
    server.assert_no_event();
    server.shutdown().await;
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or with two, or with
/// one that is not a host, is 400, before anything is evaluated; HTTP/1.0 may
/// go without. The real server, then the router alone.
#[tokio::test]
async fn a_request_without_one_valid_host_is_400() {
    let calls = counter();
    let mut server = Server::start(builder().on(always_joined(&calls))).await;
    let body = sample("room.client.joined");
    let request = |version: &str, hosts: &str| {
        format!(
            "POST / {version}\r\n{hosts}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for (hosts, code) in [
        ("", "host_missing"),
        ("Host: a.example\r\nHost: b.example\r\n", "host_invalid"),
        ("Host: user@evil.example\r\n", "host_invalid"),
    ] {
        let (status, answer) =
            raw_exchange(server.addr(), request("HTTP/1.1", hosts).as_bytes()).await;
        assert_eq!(status, 400, "{hosts:?}: {answer}");
        assert!(answer.contains(&format!("\"code\":\"{code}\"")), "{answer}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was evaluated");
    let (status, answer) = raw_exchange(server.addr(), request("HTTP/1.0", "").as_bytes()).await;
    assert_eq!(status, 200, "HTTP/1.0 needs no Host: {answer}");
    assert_eq!(server.next_event().await.trigger_webhook.id(), id_of(body));

    let router = fires_on_everything(false).router();
    let request = axum::http::Request::post("/")
        .header(CONTENT_TYPE, JSON)
        .body(axum::body::Body::from(body))
        .expect("a request");
    let response = within("the answer", router.oneshot(request))
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 400);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 401: signatures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_signatures_are_401_each_with_its_code() {
    let calls = counter();
    let mut server = Server::start(builder().secret(SECRET).on(always_joined(&calls))).await;
    let body = sample("room.client.joined");
    let now = unix_now();

    let missing = server.post(body).await;
    missing.assert_error(StatusCode::UNAUTHORIZED, "signature_missing");

    for (what, signature, code) in bad_signatures(body, now) {
        let reply = server.post_with_signature(body, &signature).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        reply.assert_error(StatusCode::UNAUTHORIZED, code);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");
    server.assert_no_event();

    // The control: the same body, properly signed, goes through.
    server
        .post_signed(SECRET, body)
        .await
        .assert_outcome("triggered");
    assert_eq!(server.next_event().await.trigger_webhook.id(), id_of(body));
    server.shutdown().await;
}

#[tokio::test]
async fn during_a_rotation_either_secret_passes() {
    let mut server = Server::start(
        builder()
            .secret("whsec_old")
            .secret("whsec_new")
            .on(|_: &RoomClientJoined| true),
    )
    .await;

    let old = sample_with_id("room.client.joined", "rot-old");
    server
        .post_signed("whsec_old", &old)
        .await
        .assert_outcome("triggered");
    let new = sample_with_id("room.client.joined", "rot-new");
    server
        .post_signed("whsec_new", &new)
        .await
        .assert_outcome("triggered");
    let stranger = sample_with_id("room.client.joined", "rot-stranger");
    server
        .post_signed("whsec_stranger", &stranger)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "signature_mismatch");

    // One header with two `v1=` entries, only the second of which matches.
    let both = sample_with_id("room.client.joined", "rot-both");
    let now = unix_now();
    let wrong = sign_at("whsec_stranger", now, &both);
    let right = sign_at("whsec_new", now, &both);
    let (_, right_mac) = right.split_once(",v1=").expect("t=..,v1=..");
    let header = format!("{wrong},v1={right_mac}");
    server
        .post_with_signature(&both, &header)
        .await
        .assert_outcome("triggered");

    for id in ["rot-old", "rot-new", "rot-both"] {
        assert_eq!(server.next_event().await.trigger_webhook.id(), id);
    }
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn a_matching_v1_passes_whatever_unusable_entries_surround_it() {
    let mut server = Server::start(builder().secret(SECRET).on(|_: &RoomClientJoined| true)).await;
    let now = unix_now();
    let mut ids = Vec::new();
    // Each header is refused by none of Stripe's libraries: a 401 here would be
    // final for Whereby.
    let crafted = |what: &str, signed: &str| match what {
        "trailing comma" => format!("{signed},"),
        "empty v1 first" => signed.replacen(",v1=", ",v1=,v1=", 1),
        "short v1 after" => format!("{signed},v1=abc"),
        "not hex" => format!("{signed},v1={}", "z".repeat(64)),
        "empty entries" => format!(",{},, ", signed.replace(',', ",,")),
        _ => unreachable!("{what}"),
    };
    let cases = [
        "trailing comma",
        "empty v1 first",
        "short v1 after",
        "not hex",
        "empty entries",
    ];
    for (n, what) in cases.into_iter().enumerate() {
        let id = format!("sig-lenient-{n}");
        let body = sample_with_id("room.client.joined", &id);
        let header = crafted(what, &sign_at(SECRET, now, &body));
        let reply = server.post_with_signature(&body, &header).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {header}");
        reply.assert_outcome("triggered");
        ids.push(id);
    }
    for id in ids {
        assert_eq!(server.next_event().await.trigger_webhook.id(), id);
    }

    // Skipped entries never count as signatures: with no usable `v1` left the
    // header is malformed, and with only a wrong one it is a mismatch.
    let body = sample_with_id("room.client.joined", "sig-lenient-refused");
    for (header, code) in [
        (format!("t={now},v1=,"), "signature_malformed"),
        (format!("t={now},v1=abc,v1="), "signature_malformed"),
        (
            format!("{},v1=,", sign_at("whsec_other", now, &body)),
            "signature_mismatch",
        ),
    ] {
        server
            .post_with_signature(&body, &header)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, code);
    }
    server.assert_no_event();
    server.shutdown().await;
}

/// Anyone could sign with a blank key: a Rust program whose variable is unset
/// or empty must not start with one.
#[test]
fn a_blank_secret_fails_build() {
    for blank in ["", "   ", "\n"] {
        let built = builder().secret(SECRET).secret(blank).build();
        assert_eq!(
            built.err(),
            Some(ConfigError::Secret(SecretError::Blank)),
            "{blank:?}"
        );
    }
    assert!(builder().secret(" whsec_with_spaces ").build().is_ok());
}

/// 0 does not turn the check off (as it does in Stripe's libraries): it would
/// refuse nearly every delivery, so it is refused at start instead.
#[test]
fn a_tolerance_under_a_second_fails_build() {
    for short in [Duration::ZERO, Duration::from_millis(999)] {
        let built = builder().secret(SECRET).tolerance(short).build();
        assert_eq!(
            built.err(),
            Some(ConfigError::Tolerance(ToleranceError::TooShort(short)))
        );
    }
    assert!(
        builder()
            .secret(SECRET)
            .tolerance(Duration::from_secs(1))
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn without_a_secret_unsigned_webhooks_are_accepted() {
    let mut server = Server::start(builder().on(|_: &RoomClientJoined| true)).await;
    let body = sample("room.client.joined");
    server.post(body).await.assert_outcome("triggered");
    assert_eq!(server.next_event().await.room_url, SAMPLE_ROOM_URL);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 413, 415, 405, 404: the request itself
// ---------------------------------------------------------------------------

/// A valid `room.client.joined` body of more than `size` bytes (padded with an
/// unknown field, which the parser tolerates).
fn padded_body(size: usize) -> String {
    sample_with("room.client.joined", |v| {
        v["padding"] = "x".repeat(size).into();
    })
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut server = Server::start(builder().max_body(1024).on(|_: &RoomClientJoined| true)).await;

    // reqwest declares the length: refused before the body is read.
    server
        .post(padded_body(2000))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    server.assert_no_event();

    // The control: the same payload under the limit is accepted.
    let small = serde_json::to_string(&sample_value("room.client.joined")).unwrap();
    assert!(small.len() < 1024);
    server.post(small).await.assert_outcome("triggered");
    server.next_event().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    // reqwest has no streaming bodies here (no `stream` feature), so these go
    // over a raw TCP connection with `Transfer-Encoding: chunked`: the server
    // cannot refuse them by Content-Length and must count while reading.
    let mut server = Server::start(builder().max_body(1024).on(|_: &RoomClientJoined| true)).await;

    // The control: a chunked body under the limit is read and triggers.
    let small = serde_json::to_string(&sample_value("room.client.joined")).unwrap();
    let (status, answer) = raw_exchange(
        server.addr(),
        &chunked_request("/", JSON, small.as_bytes(), 100),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with(r#"{"outcome":"triggered"}"#), "{answer}");
    server.next_event().await;

    let big = padded_body(2000);
    let (status, answer) = raw_exchange(
        server.addr(),
        &chunked_request("/", JSON, big.as_bytes(), 256),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn content_type_must_be_json() {
    let mut server = Server::start(builder().on(|_: &RoomClientJoined| true)).await;
    let body = sample("room.client.joined");

    let text = server
        .request(Method::POST, "/")
        .header(CONTENT_TYPE, "text/plain")
        .body(body);
    let refused = send(text).await;
    refused.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // The body was not read, so the connection is not reused: the client is told.
    assert_eq!(
        refused.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let none = server.request(Method::POST, "/").body(body);
    send(none)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    server.assert_no_event();

    // A charset parameter is fine. (The id was not remembered by the 415s.)
    let charset = server
        .request(Method::POST, "/")
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body);
    send(charset).await.assert_outcome("triggered");
    server.next_event().await;
    server.shutdown().await;
}

#[tokio::test]
async fn other_methods_are_405_and_other_paths_404() {
    let mut server = Server::start(builder().on(|_: &RoomClientJoined| true)).await;
    let body = sample("room.client.joined");

    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let request = server
            .request(method.clone(), "/")
            .header(CONTENT_TYPE, JSON)
            .body(body);
        let reply = send(request).await;
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let allow = reply.headers.get(ALLOW).and_then(|v| v.to_str().ok());
        assert!(
            allow.is_some_and(|a| a.contains("POST")),
            "{method}: {allow:?}"
        );
    }
    for path in ["/webhook", "/other/path"] {
        send(server.delivery(path, body))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        send(server.request(Method::GET, path))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn get_path_is_200_empty_and_healthz_and_readyz_are_200() {
    let server = Server::start(builder()).await;
    let root = send(server.request(Method::GET, "/")).await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.body, "");
    let health = send(server.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = send(server.request(Method::GET, "/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn a_custom_path_replaces_the_root() {
    let mut server = Server::start(
        builder()
            .path("/hooks/whereby")
            .on(|_: &RoomClientJoined| true),
    )
    .await;
    let body = sample("room.client.joined");

    let wrong = send(server.delivery("/", body))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // The answer tells a sender with the wrong path which one to use.
    let message = wrong["error"].as_str().unwrap_or_default();
    assert!(message.contains("/hooks/whereby"), "{message}");
    send(server.request(Method::GET, "/"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    server.assert_no_event();

    send(server.delivery("/hooks/whereby", body))
        .await
        .assert_outcome("triggered");
    assert_eq!(server.next_event().await.room_url, SAMPLE_ROOM_URL);
    let get = send(server.request(Method::GET, "/hooks/whereby")).await;
    assert_eq!((get.status, get.body.as_str()), (StatusCode::OK, ""));
    let health = send(server.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 500, 503: predicates that give no answer
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_predicate_error_is_500_and_stays_in_the_log() {
    let mut server = Server::start(
        builder().try_on(|_: &RoomClientJoined| Err::<bool, _>("secret-db-password rejected")),
    )
    .await;
    let reply = server.post(sample("room.client.joined")).await;
    reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "predicate_failed");
    // The predicate's own error is the operator's business, not the sender's.
    assert!(!reply.body.contains("secret-db-password"), "{}", reply.body);
    server.assert_no_event();
    server.shutdown().await;
}

#[tokio::test]
async fn a_sync_predicate_panic_is_500_and_the_server_keeps_serving() {
    let mut server = Server::start(
        builder()
            .on(|_: &RoomClientJoined| panic!("predicate bug"))
            .on(|_: &RoomSessionStarted| true),
    )
    .await;
    let joined = sample("room.client.joined");

    assert_predicate_failed(&server, joined).await;
    // Not remembered: the retry is evaluated (and panics) again.
    assert_predicate_failed(&server, joined).await;
    server.assert_no_event();

    // The server is alive and serves the next delivery.
    assert_triggers(&mut server, sample("room.session.started")).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_async_predicate_panic_is_500() {
    let mut server = Server::start(
        builder()
            .on_async(|_: RoomClientJoined| async { panic!("async predicate bug") })
            .on(|_: &RoomSessionStarted| true),
    )
    .await;
    assert_predicate_failed(&server, sample("room.client.joined")).await;
    server.assert_no_event();

    assert_triggers(&mut server, sample("room.session.started")).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_predicate_slower_than_the_timeout_is_503() {
    let calls = counter();
    let mut server = Server::start(
        builder()
            .predicate_timeout(Duration::from_millis(200))
            .on_async({
                let calls = calls.clone();
                move |_: RoomClientJoined| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<bool>()
                }
            }),
    )
    .await;
    let body = sample("room.client.joined");

    let reply = server.post(body).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "predicate_timeout");
    // Whereby retries a 503, and the retry is evaluated afresh (not a duplicate).
    let reply = server.post(body).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "predicate_timeout");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.assert_no_event();
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_request_in_flight() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let Server {
        handle,
        mut events,
        client,
    } = Server::start(builder().on_async({
        let (started, release) = (started.clone(), release.clone());
        move |_: RoomClientJoined| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                true
            }
        }
    }))
    .await;
    let addr = handle.local_addr();
    let body = sample("room.client.joined");

    let request = client
        .post(format!("http://{addr}/"))
        .header(CONTENT_TYPE, JSON)
        .body(body);
    let in_flight = tokio::spawn(send(request));
    within("the predicate to start", started.notified()).await;

    // Poll the shutdown once, so the stop signal is given while the request is
    // held in its predicate; it cannot complete with that request unanswered.
    let mut shutdown = Box::pin(handle.shutdown());
    let first = std::future::poll_fn(|cx| Poll::Ready(shutdown.as_mut().poll(cx))).await;
    assert!(
        first.is_pending(),
        "shutdown finished with a request in flight"
    );
    let shutdown = tokio::spawn(shutdown);

    release.notify_one();
    let reply: Reply = within("the request in flight", in_flight)
        .await
        .expect("request task");
    reply.assert_outcome("triggered");
    within("the shutdown", shutdown)
        .await
        .expect("shutdown task")
        .expect("clean shutdown");

    // The event answered 200 is delivered, then the stream ends.
    let event = within("the event", events.recv())
        .await
        .expect("the event was not lost");
    assert_eq!(event.trigger_webhook.id(), id_of(body));
    assert!(
        within("the end of the stream", events.recv())
            .await
            .is_none(),
        "the stream ends after shutdown"
    );

    // Nothing listens any more.
    let connect = within("a connection attempt", tokio::net::TcpStream::connect(addr)).await;
    assert!(
        connect.is_err(),
        "a new connection was accepted after shutdown"
    );
}

// ---------------------------------------------------------------------------
// Every payload shape Whereby has sent: `router()` + `oneshot`
// ---------------------------------------------------------------------------

/// A Trigger that fires on every evaluated type, with `fallback` as its
/// default subdomain when `default` is set.
fn fires_on_everything(default: bool) -> Trigger {
    let mut builder = builder()
        .on(|_: &RoomClientJoined| true)
        .on(|_: &RoomClientLeft| true)
        .on(|_: &RoomSessionStarted| true)
        .on(|_: &RoomSessionEnded| true)
        .on(|_: &AssistantRequested| true);
    if default {
        builder = builder.default_subdomain("fallback");
    }
    builder.build().expect("valid settings")
}

/// POSTs `body` (unsigned) through `router`: the status and the JSON answer.
async fn oneshot(router: &axum::Router, body: impl Into<axum::body::Body>) -> (StatusCode, Value) {
    let request = crate::common::webhook_request("/")
        .body(body.into())
        .expect("a request");
    let reply = crate::common::oneshot(router, request).await;
    let json =
        serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("not JSON: {}", reply.body));
    (reply.status, json)
}

/// The room URL `body` should fire with: its own subdomain, else `default`.
fn expected_room_url(body: &Value, default: &str) -> String {
    let data = &body["data"];
    format!(
        "https://{}.whereby.com{}",
        data["subdomain"].as_str().unwrap_or(default),
        data["roomName"].as_str().expect("a roomName")
    )
}

#[tokio::test]
async fn every_documented_shape_is_answered_2xx_and_fires_in_its_room() {
    let trigger = fires_on_everything(true);
    let mut events = trigger.subscribe();
    let router = trigger.router();
    for shape in whereby_trigger::webhook::sample::SHAPES {
        let payload: Value = serde_json::from_str(shape.body).unwrap();
        let (status, answer) = oneshot(&router, payload.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{}: {answer}", shape.name);
        let evaluated = EventType::from_name(shape.event_type).is_some();
        if !evaluated {
            assert_eq!(answer["outcome"], "ignored", "{}", shape.name);
            continue;
        }
        assert_eq!(answer["outcome"], "triggered", "{}", shape.name);
        let event = within("the trigger event", events.recv())
            .await
            .expect("an event");
        assert_eq!(
            event.room_url,
            expected_room_url(&payload, "fallback"),
            "{}",
            shape.name
        );
        assert_eq!(event.trigger_webhook.id(), payload["id"].as_str().unwrap());
        // The event carries the webhook as sent: no subdomain added to it.
        let line: Value = serde_json::from_slice(&event.to_json_line()).unwrap();
        assert_eq!(line["triggerWebhook"], payload, "{}", shape.name);
    }
}

#[tokio::test]
async fn without_a_default_only_payloads_without_subdomain_are_refused() {
    let router = fires_on_everything(false).router();
    for shape in whereby_trigger::webhook::sample::SHAPES {
        let payload: Value = serde_json::from_str(shape.body).unwrap();
        let evaluated = EventType::from_name(shape.event_type).is_some();
        let (status, answer) = oneshot(&router, payload.to_string()).await;
        if evaluated && payload["data"].get("subdomain").is_none() {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {answer}", shape.name);
            assert_eq!(answer["field"], "data.subdomain", "{}", shape.name);
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains("no default subdomain"), "{error}");
            assert!(error.contains("--subdomain"), "{error}");
        } else {
            assert_eq!(status, StatusCode::OK, "{}: {answer}", shape.name);
        }
    }
}

/// One room has one spelling: the subdomain in lower case; a roomName that
/// another spelling of its path could stand for is refused for an evaluated
/// type (naming `data.roomName`), and is no room for another type, never a 4xx.
#[tokio::test]
async fn a_room_has_one_spelling() {
    let trigger = fires_on_everything(false);
    let mut events = trigger.subscribe();
    let router = trigger.router();
    let spellings = [
        "/./standup-3f9a2c",
        "/x/../standup-3f9a2c",
        "/standup-3f9a2c/",
        "/team//standup",
        "/team%2Fstandup",
        "/%73tandup-3f9a2c",
        "/team%3astandup",
    ];
    for room in spellings {
        let body = sample_with("room.client.joined", |v| {
            v["data"]["roomName"] = room.into()
        });
        let (status, answer) = oneshot(&router, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{room}: {answer}");
        assert_eq!(answer["code"], "invalid_room", "{room}");
        assert_eq!(answer["field"], "data.roomName", "{room}");
        let knock = sample_with("room.client.knocked", |v| {
            v["data"]["roomName"] = room.into()
        });
        let (status, answer) = oneshot(&router, knock).await;
        assert_eq!(status, StatusCode::OK, "{room}: {answer}");
    }
    let upper = sample_with("room.client.joined", |v| {
        v["data"]["subdomain"] = "ACME".into()
    });
    let (status, answer) = oneshot(&router, upper).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (StatusCode::OK, &Value::from("triggered"))
    );
    let event = within("the trigger event", events.recv())
        .await
        .expect("an event");
    assert_eq!(event.room_url, SAMPLE_ROOM_URL);
}

/// A `createdAt` far in the future does not pin its room: it is ordered at
/// the time it was received, so a real event after it is newer (here, a join
/// after a `9999` leave is not taken for one delivered late). Within the
/// tolerance, `createdAt` orders as sent.
#[tokio::test]
async fn a_created_at_far_ahead_is_ordered_at_its_receipt() {
    use whereby_trigger::rules::engine::{Engine, Rule};
    use whereby_trigger::state::claims::OncePer;
    use whereby_trigger::webhook::time::format_rfc3339_millis;

    let engine = Arc::new(Engine::new(vec![
        Rule::new("visit", [EventType::RoomClientJoined])
            .once_per(OncePer::Room)
            .stop_on([EventType::RoomClientLeft]),
    ]));
    let router = builder().rules(engine).build().expect("valid").router();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let event = |event_type: &str, id: &str, created_at: String| {
        sample_with(event_type, |v| {
            v["id"] = id.into();
            v["createdAt"] = created_at.into();
        })
    };
    let outcome = |answer: Value| answer["outcome"].as_str().unwrap_or_default().to_owned();

    let far = event(
        "room.client.left",
        "far-left",
        "9999-12-31T23:59:59.999Z".into(),
    );
    let (status, answer) = oneshot(&router, far).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let join = event(
        "room.client.joined",
        "join",
        format_rfc3339_millis(now_ms + 1_000),
    );
    let (_, answer) = oneshot(&router, join).await;
    assert_eq!(
        outcome(answer),
        "triggered",
        "the far-future leave is not newer"
    );

    // 60 s ahead is within the 300 s tolerance: it orders as sent, and a join
    // created before it is a late one, which must not start.
    let ahead = event(
        "room.client.left",
        "ahead-left",
        format_rfc3339_millis(now_ms + 60_000),
    );
    let (status, answer) = oneshot(&router, ahead).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the leave stops the visit: {answer}"
    );
    let late = event(
        "room.client.joined",
        "late-join",
        format_rfc3339_millis(now_ms + 30_000),
    );
    let (_, answer) = oneshot(&router, late).await;
    assert_eq!(outcome(answer), "not_matched");
}

/// What a consumer would choke on is refused, wherever in the body it hides
/// (here in an unknown field the parser skips): bytes that are not UTF-8, and
/// nesting deeper than the limit. Nothing reaches `--record` or a trigger.
#[tokio::test]
async fn bodies_consumers_cannot_read_are_400_wherever_the_bytes_are() {
    let recorded = Lines::default();
    let sink = LineSink::new(recorded.clone());
    let trigger = builder()
        .on(|_: &RoomClientJoined| true)
        .record_webhooks(sink.clone())
        .build()
        .expect("valid settings");
    let mut events = trigger.subscribe();
    let router = trigger.router();
    let joined = sample("room.client.joined");
    let at = joined.find("\"data\"").expect("a data field");
    let with_extra = |value: &[u8]| {
        let mut body = joined.as_bytes()[..at].to_vec();
        body.extend_from_slice(b"\"extra\":");
        body.extend_from_slice(value);
        body.push(b',');
        body.extend_from_slice(&joined.as_bytes()[at..]);
        body
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("a lone byte 0xff", with_extra(b"\"\xff\""), "UTF-8"),
        (
            "a UTF-16 surrogate",
            with_extra(b"\"\xed\xa0\x80\""),
            "UTF-8",
        ),
        ("10,000 nested arrays", with_extra(deep.as_bytes()), "64"),
    ];
    for (what, body, named) in cases {
        let (status, answer) = oneshot(&router, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["code"], "invalid_webhook", "{what}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(named), "{what}: {error}");
    }
    // The same body, readable, goes through.
    let (status, answer) = oneshot(&router, with_extra(b"[[\"\\u00ff\"]]")).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (StatusCode::OK, &Value::from("triggered"))
    );
    let event = within("the trigger event", events.recv())
        .await
        .expect("an event");
    assert!(
        events.try_recv().is_none(),
        "one event, for the readable body"
    );
    drop(event);
    within("the recording", sink.flush_and_close().wait_async()).await;
    assert_eq!(
        recorded.json().len(),
        1,
        "only the readable body is recorded"
    );
}

/// Removing any optional field of any documented payload, or replacing its
/// value with `null` or a value of another JSON type, never turns the 2xx
/// into a 4xx. (Optional: all but `id`, `type`, `data` and `data.roomName`;
/// `data.subdomain` may go, the default filling in, but not change type.)
#[test]
fn no_optional_field_turns_a_2xx_into_a_4xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = runtime.block_on(async { fires_on_everything(true).router() });
    let payloads: Vec<Value> = whereby_trigger::webhook::sample::evaluated()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect();
    let cases = AtomicUsize::new(0);
    let value = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(Value::from(b))),
        any::<i64>().prop_map(|n| Some(Value::from(n))),
        any::<f64>().prop_map(|n| Some(Value::from(n))),
        "\\PC{0,8}".prop_map(|s| Some(Value::from(s))),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(|v| Some(Value::from(v))),
        Just(Some(serde_json::json!({"nested": [1, {"a": null}]}))),
    ];
    let strategy = (
        0..payloads.len(),
        prop::collection::vec((any::<prop::sample::Index>(), value), 1..5),
    );
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(index, changes)| {
        let mut payload = payloads[index].clone();
        let mut fields: Vec<(bool, String)> = payload["data"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "roomName")
            .map(|k| (true, k.clone()))
            .collect();
        fields.extend(
            ["apiVersion", "createdAt"]
                .into_iter()
                .map(|k| (false, k.to_owned())),
        );
        for (pick, value) in changes {
            let (in_data, field) = pick.get(&fields).clone();
            if field == "subdomain" && value.as_ref().is_some_and(|v| !v.is_null()) {
                continue;
            }
            let object = if in_data {
                payload["data"].as_object_mut().unwrap()
            } else {
                payload.as_object_mut().unwrap()
            };
            match value {
                Some(value) => object.insert(field, value),
                None => object.remove(&field),
            };
        }
        // A fresh id each case: a duplicate is 2xx too, but proves less.
        payload["id"] = Value::from(format!("prop-{}", cases.fetch_add(1, Ordering::SeqCst)));
        let (status, answer) = runtime.block_on(oneshot(&router, payload.to_string()));
        prop_assert!(status.is_success(), "{status} {answer}\n{payload}");
        prop_assert_eq!(&answer["outcome"], "triggered");
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}
