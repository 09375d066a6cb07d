//! Helpers shared by the integration tests: start a real Trigger on
//! `127.0.0.1:0`, build (signed) deliveries from the sample payloads, and talk
//! HTTP to the server with every wait bounded. [`binary`] runs the real
//! `whereby-trigger` binary instead, for the end-to-end tests; [`fixture`]
//! gives each test a directory of its own, and [`receiver`] is the fake
//! `forward` target.

#[cfg(feature = "cli")]
pub(crate) mod binary;
pub(crate) mod fixture;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "forward")]
pub(crate) mod receiver;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whereby_trigger::webhook::{SIGNATURE_HEADER, SigningSecret, unix_now};
use whereby_trigger::{Trigger, TriggerBuilder, TriggerEvent, TriggerEvents, TriggerHandle};

/// Upper bound of every wait: a hang fails the test instead of hanging it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The secret tests sign with when they configure one.
pub(crate) const SECRET: &str = "whsec_integration_test";

/// The Content-Type Whereby sends.
pub(crate) const JSON: &str = "application/json";

/// Awaits `future`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Returns what `check` gives once it gives something, checking first and then
/// again each time `notify` wakes its waiters. Not bounded itself: bound it
/// with [`within`] or a timeout.
#[cfg(feature = "forward")]
pub(crate) async fn until_notified<T>(
    notify: &tokio::sync::Notify,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    loop {
        let woken = notify.notified();
        tokio::pin!(woken);
        // Registered before checking, so a wake-up in between is not lost.
        woken.as_mut().enable();
        if let Some(value) = check() {
            return value;
        }
        woken.await;
    }
}

/// A builder listening on `127.0.0.1`, on a port the OS picks.
pub(crate) fn builder() -> TriggerBuilder {
    Trigger::builder().port(0).bind(Ipv4Addr::LOCALHOST.into())
}

/// An HTTP client that never goes through a proxy, whatever the environment says.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------
// Payloads and signatures
// ---------------------------------------------------------------------------

/// The sample payload of `event_type`, exactly as shipped (pretty-printed JSON).
pub(crate) fn sample(event_type: &str) -> &'static str {
    whereby_trigger::webhook::sample::sample(event_type)
        .unwrap_or_else(|| panic!("no sample for {event_type}"))
}

/// The sample payload of `event_type` as a JSON value, to edit.
pub(crate) fn sample_value(event_type: &str) -> Value {
    serde_json::from_str(sample(event_type)).expect("samples are JSON")
}

/// The sample of `event_type`, changed by `edit`, as a compact body.
pub(crate) fn sample_with(event_type: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value = sample_value(event_type);
    edit(&mut value);
    serde_json::to_string(&value).expect("serialise")
}

/// The sample of `event_type` with its `id` replaced.
pub(crate) fn sample_with_id(event_type: &str, id: &str) -> String {
    sample_with(event_type, |v| v["id"] = Value::from(id))
}

/// A body that no server should read as a webhook, and what its 400 says.
pub(crate) struct Unreadable {
    /// What is wrong with it, for messages.
    pub(crate) what: &'static str,
    pub(crate) body: String,
    /// The answer's `code`.
    pub(crate) code: &'static str,
    /// The answer's `field`, when it names one.
    pub(crate) field: Option<&'static str>,
}

/// Bodies that are answered 400 by a Trigger with a `room.client.joined`
/// predicate and no default subdomain: not JSON, not an object, a field the
/// room URL needs missing or unusable, a room that leaves its URL.
pub(crate) fn unreadable_webhooks() -> Vec<Unreadable> {
    let joined = |edit: fn(&mut Value)| sample_with("room.client.joined", edit);
    let case = |what, body, code, field| Unreadable {
        what,
        body,
        code,
        field,
    };
    vec![
        case("not JSON", "{not json".into(), "invalid_webhook", None),
        case("plain text", "hello".into(), "invalid_webhook", None),
        case("an array", "[1,2,3]".into(), "invalid_webhook", None),
        case(
            "no id",
            joined(|v| drop(v.as_object_mut().unwrap().remove("id"))),
            "invalid_webhook",
            Some("id"),
        ),
        case(
            "no type",
            joined(|v| drop(v.as_object_mut().unwrap().remove("type"))),
            "invalid_webhook",
            Some("type"),
        ),
        case(
            "no data.roomName",
            joined(|v| drop(v["data"].as_object_mut().unwrap().remove("roomName"))),
            "invalid_webhook",
            Some("data.roomName"),
        ),
        case(
            "no data.subdomain and no default",
            joined(|v| drop(v["data"].as_object_mut().unwrap().remove("subdomain"))),
            "invalid_webhook",
            Some("data.subdomain"),
        ),
        case(
            "a data.subdomain that is not a string",
            joined(|v| v["data"]["subdomain"] = 7.into()),
            "invalid_webhook",
            Some("data.subdomain"),
        ),
        case(
            "a data.subdomain given twice",
            sample("room.client.joined").replace(
                "\"subdomain\": \"acme\"",
                "\"subdomain\": \"acme\", \"subdomain\": \"evil\"",
            ),
            "invalid_webhook",
            Some("data.subdomain"),
        ),
        case(
            "a subdomain that is another host",
            joined(|v| v["data"]["subdomain"] = "evil.com".into()),
            "invalid_room",
            Some("data.subdomain"),
        ),
        case(
            "a roomName with a query",
            joined(|v| v["data"]["roomName"] = "/standup?next=//evil.com".into()),
            "invalid_room",
            Some("data.roomName"),
        ),
        case(
            "a roomName that is not the one spelling of its path",
            joined(|v| v["data"]["roomName"] = "/team%2Fstandup".into()),
            "invalid_room",
            Some("data.roomName"),
        ),
    ]
}

/// The `id` of a body.
pub(crate) fn id_of(body: &str) -> String {
    let value: Value = serde_json::from_str(body).expect("body is JSON");
    value["id"]
        .as_str()
        .expect("body has a string id")
        .to_owned()
}

/// `Whereby-Signature` values that must not pass for `body` signed with
/// [`SECRET`] at `now`, each with what is wrong and the 401's `code`.
pub(crate) fn bad_signatures(body: &str, now: u64) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "garbage",
            "not a signature".to_owned(),
            "signature_malformed",
        ),
        ("no v1", format!("t={now}"), "signature_malformed"),
        // 1000 s old, with the default tolerance of 300 s; and as far ahead.
        ("old", sign_at(SECRET, now - 1000, body), "signature_stale"),
        (
            "future",
            sign_at(SECRET, now + 1000, body),
            "signature_stale",
        ),
        (
            "other secret",
            sign("whsec_other", body),
            "signature_mismatch",
        ),
        // Signed over other bytes: the server must verify the raw body as sent.
        (
            "other body",
            sign(SECRET, &body.replace("Ada", "Eve")),
            "signature_mismatch",
        ),
    ]
}

/// A `Whereby-Signature` value for `body`, signed now with `secret`.
pub(crate) fn sign(secret: &str, body: &str) -> String {
    sign_at(secret, unix_now(), body)
}

/// A `Whereby-Signature` value for `body`, signed with `secret` at `timestamp`.
pub(crate) fn sign_at(secret: &str, timestamp: u64, body: &str) -> String {
    SigningSecret::new(secret).sign(timestamp, body.as_bytes())
}

// ---------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------

/// An answer, read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// The body as JSON; fails the test when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    /// The Content-Type of the answer, if any.
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 200 with the JSON `{"outcome": <outcome>}`.
    #[track_caller]
    pub(crate) fn assert_outcome(&self, outcome: &str) {
        assert_eq!(self.status, StatusCode::OK, "answer: {}", self.body);
        assert_eq!(self.content_type(), Some(JSON), "answer: {}", self.body);
        assert_eq!(
            self.json(),
            serde_json::json!({ "outcome": outcome }),
            "answer: {}",
            self.body
        );
    }

    /// Asserts an error answer with `status` and `code`, a JSON body with a
    /// non-empty `error` message; returns the body for further checks.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "answer: {}", self.body);
        assert_eq!(self.content_type(), Some(JSON), "answer: {}", self.body);
        let json = self.json();
        assert_eq!(json["code"], code, "answer: {}", self.body);
        let message = json["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "no error message: {}", self.body);
        json
    }
}

/// Sends `request` and reads the whole answer, within [`TIMEOUT`].
pub(crate) async fn send(request: RequestBuilder) -> Reply {
    within("an answer", async {
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("reading the answer failed");
        Reply {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("answer is UTF-8"),
        }
    })
    .await
}

/// A JSON POST to `path` for [`oneshot`] (no socket), body to come: with `Host`
/// (HTTP/1.1 needs one) and the Content-Type Whereby sends, unsigned; add
/// headers to it before building.
pub(crate) fn webhook_request(path: &str) -> axum::http::request::Builder {
    axum::http::Request::post(path)
        .header(reqwest::header::HOST, "localhost")
        .header(CONTENT_TYPE, JSON)
}

/// Sends `request` through `router` with `oneshot`, no socket, and reads the
/// whole answer, within [`TIMEOUT`] (of tokio's clock: paused, it is virtual).
pub(crate) async fn oneshot(
    router: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> Reply {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    within("an answer from the router", async {
        let response = router
            .clone()
            .oneshot(request)
            .await
            .expect("routers are infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("reading the answer failed")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("answer is UTF-8"),
        }
    })
    .await
}

/// A JSON POST of `body` to `url` with `client`, unsigned, not yet sent.
pub(crate) fn delivery_to(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<String>,
) -> RequestBuilder {
    client
        .request(Method::POST, url)
        .header(CONTENT_TYPE, JSON)
        .body(body.into())
}

/// POSTs `body` to `http://<addr>/` as JSON, signed now with `secret`, with a
/// client (and so a connection) of its own; the answer is read in full.
pub(crate) async fn post_signed(addr: SocketAddr, secret: &str, body: &str) -> Reply {
    let url = format!("http://{addr}/");
    send(delivery_to(&client(), &url, body).header(SIGNATURE_HEADER, sign(secret, body))).await
}

/// [`post_signed`] from a test without a runtime (the end-to-end tests run the
/// binary from plain threads): on a runtime of its own.
#[cfg(feature = "cli")]
pub(crate) fn post_signed_blocking(addr: SocketAddr, secret: &str, body: &str) -> Reply {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to post on")
        .block_on(post_signed(addr, secret, body))
}

/// Sends raw bytes over a fresh TCP connection and reads until the server
/// closes it; for requests reqwest cannot make (e.g. a chunked body). Send
/// `Connection: close` so the server ends the exchange. Returns the status code
/// and the whole answer text.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    within("a raw HTTP exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read answer");
        let answer = String::from_utf8(answer).expect("answer is UTF-8");
        let status = answer
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| answer.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1 answer: {answer:?}"));
        (status, answer)
    })
    .await
}

/// A request in chunked transfer encoding (no Content-Length), the body split in
/// chunks of at most `chunk` bytes.
pub(crate) fn chunked_request(
    path: &str,
    content_type: &str,
    body: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in body.chunks(chunk) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

// ---------------------------------------------------------------------------
// A running server
// ---------------------------------------------------------------------------

/// A Trigger serving on `127.0.0.1:<free port>`, with an event stream subscribed
/// before it started (so no event can be missed) and a client to talk to it.
pub(crate) struct Server {
    pub(crate) handle: TriggerHandle,
    pub(crate) events: TriggerEvents,
    pub(crate) client: reqwest::Client,
}

impl Server {
    /// Builds `builder` and starts it.
    pub(crate) async fn start(builder: TriggerBuilder) -> Server {
        let trigger = builder.build().expect("valid configuration");
        let events = trigger.subscribe();
        let handle = within("the server to start", trigger.start())
            .await
            .expect("the server starts");
        Server {
            handle,
            events,
            client: client(),
        }
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// A request of `method` to `path`, not yet sent.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A JSON POST of `body` to `path`, unsigned, not yet sent.
    pub(crate) fn delivery(&self, path: &str, body: impl Into<String>) -> RequestBuilder {
        delivery_to(&self.client, &self.url(path), body)
    }

    /// POSTs `body` to `/` as JSON, unsigned.
    pub(crate) async fn post(&self, body: impl Into<String>) -> Reply {
        send(self.delivery("/", body)).await
    }

    /// POSTs `body` to `/` as JSON with `signature` as `Whereby-Signature`.
    pub(crate) async fn post_with_signature(&self, body: &str, signature: &str) -> Reply {
        send(
            self.delivery("/", body.to_owned())
                .header(SIGNATURE_HEADER, signature),
        )
        .await
    }

    /// POSTs `body` to `/` as JSON, signed now with `secret` ([`post_signed`]).
    pub(crate) async fn post_signed(&self, secret: &str, body: &str) -> Reply {
        post_signed(self.addr(), secret, body).await
    }

    /// The next trigger event, within [`TIMEOUT`]; fails if the stream ended.
    pub(crate) async fn next_event(&mut self) -> TriggerEvent {
        within("a trigger event", self.events.recv())
            .await
            .expect("the event stream ended")
    }

    /// Asserts no trigger event is waiting. Events are dispatched before the
    /// delivery is answered, so once an answer is in, its event (if any) is too.
    #[track_caller]
    pub(crate) fn assert_no_event(&mut self) {
        if let Some(event) = self.events.try_recv() {
            panic!(
                "unexpected trigger event for {} ({})",
                event.room_url,
                event.trigger_webhook.id()
            );
        }
    }

    /// Shuts the server down, within [`TIMEOUT`].
    pub(crate) async fn shutdown(self) {
        within("the server to shut down", self.handle.shutdown())
            .await
            .expect("clean shutdown");
    }
}
