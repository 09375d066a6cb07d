//! README's "What the server answers", row by row, through `Trigger::router()`
//! and `oneshot`: no socket, no server. The tests that wait on a timer (the
//! predicate timeout, the request deadline, the body timeout) run on tokio's
//! paused clock, so they take no real time; every wait is bounded by
//! `common::within` (whose bound is virtual there too).
//!
//! Rows not here, and why:
//! - "the store could not commit" (503 `store_unavailable`), "after a failed
//!   flush … `/healthz`" and "`/readyz` while the store cannot commit", and the
//!   quarantine of a signed 400: they need a store that fails, and are covered
//!   with real stores in `durable`, `faults` and `shared_store`.
//! - "head over `max_header_bytes`" (431): a per-connection limit of the
//!   server's accept loop, not of the router; `oneshot` has no head to read
//!   (`server_limits` covers it on a socket).
//!
//! `stopped` and `suppressed` need no binary: a config rule built with the
//! library's `Rule` and `Engine` reaches them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Version};
use futures_util::StreamExt;
use reqwest::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use whereby_trigger::rules::engine::{Engine, Rule};
use whereby_trigger::state::claims::OncePer;
use whereby_trigger::webhook::parse::MAX_DEPTH;
use whereby_trigger::webhook::{
    EventType, RoomClientJoined, RoomSessionStarted, SIGNATURE_HEADER, unix_now,
};
use whereby_trigger::{HEALTH_PATH, READY_PATH, Trigger, TriggerBuilder};

use crate::common::{
    JSON, Reply, SECRET, bad_signatures, id_of, oneshot, sample, sample_with, sample_with_id, sign,
    unreadable_webhooks, webhook_request, within,
};

/// The room URL of every sample payload.
const SAMPLE_ROOM_URL: &str = "https://acme.whereby.com/standup-3f9a2c";

/// The router of `builder`, built.
fn router(builder: TriggerBuilder) -> axum::Router {
    builder.build().expect("valid settings").router()
}

/// POSTs `body` (unsigned) to `/` through `router`.
async fn post(router: &axum::Router, body: impl Into<Body>) -> Reply {
    let request = webhook_request("/").body(body.into()).expect("a request");
    oneshot(router, request).await
}

/// POSTs `body` to `/` through `router` with `signature` as `Whereby-Signature`.
async fn post_signed_with(router: &axum::Router, body: &str, signature: &str) -> Reply {
    let request = webhook_request("/")
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from(body.to_owned()))
        .expect("a request");
    oneshot(router, request).await
}

/// A counter the predicates bump, to prove they were (or were not) consulted.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A `room.client.joined` predicate that is always true and counts its calls.
fn always_joined(calls: &Arc<AtomicUsize>) -> impl Fn(&RoomClientJoined) -> bool + use<> {
    let calls = calls.clone();
    move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// Asserts an error answer's `field`: `Some(name)`, or absent.
#[track_caller]
fn assert_field(reply: &Reply, field: Option<&str>) {
    let json = reply.json();
    assert_eq!(
        json.get("field").and_then(Value::as_str),
        field,
        "answer: {}",
        reply.body
    );
}

// ---------------------------------------------------------------------------
// 200: triggered, stopped, suppressed, not_matched, ignored, duplicate
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_true_predicate_is_triggered_with_one_event() {
    let trigger = Trigger::builder()
        .on(|e: &RoomClientJoined| e.data.num_clients == Some(1))
        .build()
        .expect("valid settings");
    let mut events = trigger.subscribe();
    let router = trigger.router();
    let body = sample("room.client.joined");

    post(&router, body).await.assert_outcome("triggered");

    let event = within("the trigger event", events.recv())
        .await
        .expect("an event");
    assert_eq!(event.room_url, SAMPLE_ROOM_URL);
    assert_eq!(event.trigger_webhook.id(), id_of(body));
    assert_eq!(event.raw_webhook(), body.as_bytes(), "the body as received");
    assert!(events.try_recv().is_none(), "one event");
}

/// A config trigger (`Rule`) on `room.client.joined`, one assistant per room,
/// stopped by `room.client.left`: what `[[trigger]] once_per = "room"` with
/// `stop_on` builds.
fn visits() -> axum::Router {
    let engine = Arc::new(Engine::new(vec![
        Rule::new("visit", [EventType::RoomClientJoined])
            .once_per(OncePer::Room)
            .stop_on([EventType::RoomClientLeft]),
    ]));
    router(Trigger::builder().rules(engine))
}

#[tokio::test]
async fn a_config_trigger_that_fires_is_triggered() {
    let router = visits();
    post(&router, sample("room.client.joined"))
        .await
        .assert_outcome("triggered");
}

#[tokio::test]
async fn a_match_whose_claim_is_held_is_suppressed() {
    let router = visits();
    post(&router, sample_with_id("room.client.joined", "first"))
        .await
        .assert_outcome("triggered");
    // Another join in the same room (another id, so not a duplicate).
    post(&router, sample_with_id("room.client.joined", "second"))
        .await
        .assert_outcome("suppressed");
}

#[tokio::test]
async fn a_stop_on_that_stops_an_assistant_is_stopped() {
    let router = visits();
    post(&router, sample("room.client.joined"))
        .await
        .assert_outcome("triggered");
    post(&router, sample_with_id("room.client.left", "left-1"))
        .await
        .assert_outcome("stopped");
    // The claim is gone: a second leave stops nothing, and says so.
    post(&router, sample_with_id("room.client.left", "left-2"))
        .await
        .assert_outcome("not_matched");
}

#[tokio::test]
async fn a_false_or_absent_predicate_is_not_matched() {
    let trigger = Trigger::builder()
        .on(|e: &RoomClientJoined| e.data.num_clients == Some(1))
        .build()
        .expect("valid settings");
    let mut events = trigger.subscribe();
    let router = trigger.router();

    let second = sample_with("room.client.joined", |v| v["data"]["numClients"] = 2.into());
    post(&router, second).await.assert_outcome("not_matched");
    // An evaluated type without a predicate.
    post(&router, sample("room.session.started"))
        .await
        .assert_outcome("not_matched");
    assert!(events.try_recv().is_none(), "no event");
}

/// "Any other field missing, `null` or of another JSON type": evaluated as if
/// it were not there.
#[tokio::test]
async fn other_fields_missing_null_or_mistyped_are_evaluated_as_usual() {
    let calls = counter();
    let router = router(Trigger::builder().on(always_joined(&calls)));
    let body = sample_with("room.client.joined", |v| {
        v.as_object_mut().unwrap().remove("createdAt");
        v["apiVersion"] = Value::Null;
        v["data"]["displayName"] = 7.into();
        v["data"]["numClients"] = "one".into();
        v["data"].as_object_mut().unwrap().remove("roleName");
    });
    post(&router, body).await.assert_outcome("triggered");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_type_not_evaluated_is_ignored() {
    let calls = counter();
    let router = router(Trigger::builder().on(always_joined(&calls)));
    for event_type in [
        "room.client.knocked",
        "recording.finished",
        "transcription.finished",
    ] {
        post(&router, sample(event_type))
            .await
            .assert_outcome("ignored");
    }
    let future = serde_json::json!({
        "id": "future-1",
        "type": "room.something.new",
        "data": { "whatever": [1, 2, 3] }
    });
    post(&router, future.to_string())
        .await
        .assert_outcome("ignored");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");
}

#[tokio::test]
async fn an_answered_id_is_a_duplicate_without_a_second_event() {
    let calls = counter();
    let trigger = Trigger::builder()
        .on(always_joined(&calls))
        .build()
        .expect("valid settings");
    let mut events = trigger.subscribe();
    let router = trigger.router();
    let body = sample("room.client.joined");

    post(&router, body).await.assert_outcome("triggered");
    post(&router, body).await.assert_outcome("duplicate");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "evaluated once");
    within("the trigger event", events.recv())
        .await
        .expect("an event");
    assert!(events.try_recv().is_none(), "no second event");
    // An ignored id is remembered too.
    let knocked = sample("room.client.knocked");
    post(&router, knocked).await.assert_outcome("ignored");
    post(&router, knocked).await.assert_outcome("duplicate");
}

#[tokio::test]
async fn an_id_being_evaluated_is_a_duplicate() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = router(Trigger::builder().on_async({
        let (started, release) = (started.clone(), release.clone());
        move |_: RoomClientJoined| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                true
            }
        }
    }));
    let body = sample("room.client.joined");

    let first = tokio::spawn({
        let router = router.clone();
        async move { post(&router, body).await }
    });
    within("the predicate to start", started.notified()).await;
    // The first delivery is held in its predicate: the second does not wait.
    post(&router, body).await.assert_outcome("duplicate");
    release.notify_one();
    within("the first delivery", first)
        .await
        .expect("delivery task")
        .assert_outcome("triggered");
}

// ---------------------------------------------------------------------------
// 400: unreadable webhooks, naming the field; bodies consumers cannot read
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unreadable_webhooks_are_400_with_code_and_field() {
    let calls = counter();
    let router = router(Trigger::builder().on(always_joined(&calls)));
    let without_data = |field: &'static str| {
        sample_with("room.client.joined", |v| {
            v["data"].as_object_mut().unwrap().remove(field);
        })
    };
    for case in unreadable_webhooks() {
        let (what, reply) = (case.what, post(&router, case.body).await);
        reply.assert_error(StatusCode::BAD_REQUEST, case.code);
        assert_field(&reply, case.field);
        if what == "no data.subdomain and no default" {
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(error.contains("subdomain"), "{what}: {error}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");

    // The control: with a default subdomain the same body is a webhook.
    let with_default = router_with_default(&calls);
    post(&with_default, without_data("subdomain"))
        .await
        .assert_outcome("triggered");
}

fn router_with_default(calls: &Arc<AtomicUsize>) -> axum::Router {
    router(
        Trigger::builder()
            .default_subdomain("acme")
            .on(always_joined(calls)),
    )
}

/// `room.client.joined` with an unknown top-level field `"extra"` whose value
/// is the raw JSON `value`: where the parser would skip it.
fn with_extra(value: &[u8]) -> Vec<u8> {
    let joined = sample_with("room.client.joined", |_| {});
    let mut body = b"{\"extra\":".to_vec();
    body.extend_from_slice(value);
    body.push(b',');
    body.extend_from_slice(&joined.as_bytes()[1..]);
    body
}

#[tokio::test]
async fn a_body_not_utf8_or_too_deep_is_400_invalid_webhook() {
    let calls = counter();
    let router = router(Trigger::builder().on(always_joined(&calls)));
    // Nesting: the top-level object is level 1, each array one more.
    let nested = |arrays: usize| format!("{}{}", "[".repeat(arrays), "]".repeat(arrays));
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("a lone byte 0xff", with_extra(b"\"\xff\""), "UTF-8"),
        (
            "a UTF-16 surrogate",
            with_extra(b"\"\xed\xa0\x80\""),
            "UTF-8",
        ),
        (
            "one level too deep",
            with_extra(nested(MAX_DEPTH).as_bytes()),
            "64",
        ),
    ];
    for (what, body, named) in cases {
        let reply = post(&router, body).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_webhook");
        assert_field(&reply, None);
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(named), "{what}: {error}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");

    // The control: exactly as deep as allowed goes through.
    post(&router, with_extra(nested(MAX_DEPTH - 1).as_bytes()))
        .await
        .assert_outcome("triggered");
}

/// RFC 9112 §3.2, through the router's own layer: an HTTP/1.1 request
/// without `Host` is 400 `host_missing`, two are `host_invalid`; HTTP/1.0
/// may go without.
#[tokio::test]
async fn a_request_without_one_valid_host_is_400() {
    let calls = counter();
    let router = router(Trigger::builder().on(always_joined(&calls)));
    let request = |version: Version, hosts: &[&str], id: &str| {
        let mut request = Request::post("/")
            .version(version)
            .header(CONTENT_TYPE, JSON);
        for host in hosts {
            request = request.header(HOST, *host);
        }
        request
            .body(Body::from(sample_with_id("room.client.joined", id)))
            .expect("a request")
    };
    oneshot(&router, request(Version::HTTP_11, &[], "no-host"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "host_missing");
    oneshot(
        &router,
        request(Version::HTTP_11, &["a.example", "b.example"], "two-hosts"),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "host_invalid");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was evaluated");

    oneshot(&router, request(Version::HTTP_10, &[], "http-1.0"))
        .await
        .assert_outcome("triggered");
}

// ---------------------------------------------------------------------------
// 401: signatures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_signature_failure_is_401_with_its_code() {
    let calls = counter();
    let router = router(Trigger::builder().secret(SECRET).on(always_joined(&calls)));
    let body = sample("room.client.joined");
    let now = unix_now();

    post(&router, body)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "signature_missing");
    for (what, signature, code) in bad_signatures(body, now) {
        let reply = post_signed_with(&router, body, &signature).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        reply.assert_error(StatusCode::UNAUTHORIZED, code);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no predicate ran");

    // The control: signed with the secret, now.
    post_signed_with(&router, body, &sign(SECRET, body))
        .await
        .assert_outcome("triggered");
}

// ---------------------------------------------------------------------------
// 413, 415, 405, 404: the request itself
// ---------------------------------------------------------------------------

/// A valid `room.client.joined` body of exactly `size` bytes (padded with an
/// unknown field).
fn body_of_size(size: usize, id: &str) -> String {
    let pad = |n: usize| {
        sample_with("room.client.joined", |v| {
            v["id"] = id.into();
            v["padding"] = "x".repeat(n).into();
        })
    };
    let body = pad(size - pad(0).len());
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    const LIMIT: usize = 1024;
    let router = router(
        Trigger::builder()
            .max_body(LIMIT)
            .on(|_: &RoomClientJoined| true),
    );

    // Declared too long: refused before it is read.
    let big = body_of_size(LIMIT + 1, "big");
    let declared = webhook_request("/")
        .header(CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("a request");
    oneshot(&router, declared)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // No length declared (as a chunked body): counted while read.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(256)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let streamed = webhook_request("/")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a request");
    oneshot(&router, streamed)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // The control: exactly the limit is read.
    post(&router, body_of_size(LIMIT, "at-the-limit"))
        .await
        .assert_outcome("triggered");
}

#[tokio::test]
async fn a_content_type_not_json_is_415() {
    let router = router(Trigger::builder().on(|_: &RoomClientJoined| true));
    let body = sample("room.client.joined");
    let with_type = |content_type: Option<&str>| {
        let mut request = Request::post("/").header(HOST, "localhost");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).expect("a request")
    };
    for content_type in [Some("text/plain"), Some("application/jsonx"), None] {
        let reply = oneshot(&router, with_type(content_type)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // The control: a charset parameter is JSON still.
    oneshot(&router, with_type(Some("application/json; charset=utf-8")))
        .await
        .assert_outcome("triggered");
}

#[tokio::test]
async fn other_methods_are_405_and_other_paths_404_naming_the_path() {
    const PATH: &str = "/hooks/whereby";
    let router = router(
        Trigger::builder()
            .path(PATH)
            .on(|_: &RoomClientJoined| true),
    );
    let body = sample("room.client.joined");

    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let request = webhook_request(PATH)
            .method(method.clone())
            .body(Body::from(body))
            .expect("a request");
        let reply = oneshot(&router, request).await;
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let allow = reply.headers.get(ALLOW).and_then(|v| v.to_str().ok());
        assert!(
            allow.is_some_and(|a| a.contains("POST")),
            "{method}: {allow:?}"
        );
    }
    for (method, path) in [
        (Method::POST, "/"),
        (Method::POST, "/hooks"),
        (Method::GET, "/other/path"),
    ] {
        let request = webhook_request(path)
            .method(method.clone())
            .body(Body::from(body))
            .expect("a request");
        let reply = oneshot(&router, request).await;
        let json = reply.assert_error(StatusCode::NOT_FOUND, "not_found");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(PATH), "{method} {path}: {error}");
    }

    // The control: the path itself.
    let request = webhook_request(PATH)
        .body(Body::from(body))
        .expect("a request");
    oneshot(&router, request).await.assert_outcome("triggered");
}

// ---------------------------------------------------------------------------
// 500: a predicate that errs or panics, a handler that panics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_predicate_that_errs_or_panics_is_500() {
    let routers = [
        (
            "an error",
            router(
                Trigger::builder()
                    .try_on(|_: &RoomClientJoined| Err::<bool, _>("secret-db-password rejected")),
            ),
        ),
        (
            "a panic",
            router(Trigger::builder().on(|_: &RoomClientJoined| -> bool { panic!("bug") })),
        ),
        (
            "an async panic",
            router(
                Trigger::builder().on_async(|_: RoomClientJoined| async { panic!("async bug") }),
            ),
        ),
    ];
    let body = sample("room.client.joined");
    for (what, router) in routers {
        let reply = post(&router, body).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "predicate_failed");
        assert!(!reply.body.contains("secret-db-password"), "{}", reply.body);
        // Not remembered: Whereby's retry is evaluated (and fails) again.
        post(&router, body)
            .await
            .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "predicate_failed");
    }
}

#[tokio::test]
async fn a_handler_that_panics_is_500() {
    let router = router(
        Trigger::builder()
            .observe(|_| panic!("an observer that fails"))
            .on(|_: &RoomClientJoined| true),
    );
    post(&router, sample("room.client.joined"))
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
}

// ---------------------------------------------------------------------------
// 503 and 408: timers, on tokio's paused clock
// ---------------------------------------------------------------------------

/// Asserts that `elapsed` (of the paused clock) is `expected`, to the
/// millisecond the timer wheel rounds to.
#[track_caller]
fn assert_took(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_millis(50),
        "took {elapsed:?}, not {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_predicate_past_its_timeout_is_503() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let calls = counter();
    let router = router(Trigger::builder().predicate_timeout(TIMEOUT).on_async({
        let calls = calls.clone();
        move |_: RoomClientJoined| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<bool>()
        }
    }));
    let body = sample("room.client.joined");

    let start = Instant::now();
    post(&router, body)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "predicate_timeout");
    assert_took(start.elapsed(), TIMEOUT);
    // Not remembered: Whereby's retry is evaluated afresh.
    post(&router, body)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "predicate_timeout");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_is_503() {
    // The default deadline, 4.5 s; the predicate's timeout is longer.
    const DEADLINE: Duration = Duration::from_millis(4500);
    let router = router(
        Trigger::builder()
            .predicate_timeout(Duration::from_secs(8))
            .on_async(|_: RoomSessionStarted| std::future::pending::<bool>()),
    );
    let start = Instant::now();
    post(&router, sample("room.session.started"))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "deadline");
    assert_took(start.elapsed(), DEADLINE);
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_body_timeout_is_408() {
    // The default body timeout, 3 s.
    const BODY_TIMEOUT: Duration = Duration::from_secs(3);
    let router = router(Trigger::builder().on(|_: &RoomClientJoined| true));
    let body = sample_with("room.client.joined", |_| {});
    let (head, tail) = body.split_at(body.len() / 2);
    // The first half at once, the second after `wait`, or never.
    let in_two = |wait: Option<Duration>| {
        let head = bytes::Bytes::copy_from_slice(head.as_bytes());
        let tail = bytes::Bytes::copy_from_slice(tail.as_bytes());
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(head)]);
        let second = futures_util::stream::once(async move {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
            Ok(tail)
        });
        webhook_request("/")
            .body(Body::from_stream(first.chain(second)))
            .expect("a request")
    };

    let start = Instant::now();
    oneshot(&router, in_two(None))
        .await
        .assert_error(StatusCode::REQUEST_TIMEOUT, "body_timeout");
    assert_took(start.elapsed(), BODY_TIMEOUT);

    // The control: slow, but complete within the timeout.
    oneshot(&router, in_two(Some(Duration::from_secs(2))))
        .await
        .assert_outcome("triggered");
}

// ---------------------------------------------------------------------------
// GET on the path, /healthz, /readyz
// ---------------------------------------------------------------------------

#[tokio::test]
async fn get_on_the_path_healthz_and_readyz_are_200() {
    const PATH: &str = "/hooks/whereby";
    let router = router(Trigger::builder().path(PATH));
    for path in [PATH, HEALTH_PATH, READY_PATH] {
        let request = Request::get(path)
            .header(HOST, "localhost")
            .body(Body::empty())
            .expect("a request");
        let reply = oneshot(&router, request).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, ""),
            "GET {path}"
        );
    }
}
