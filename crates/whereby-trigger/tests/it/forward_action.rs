//! The `forward` action against a real receiver on `127.0.0.1`: what arrives,
//! what is retried, what is not, and what shutdown waits for.
//!
//! No test sleeps to synchronise: the receiver and the captured log each wake
//! a `Notify` when something arrives, and every wait is bounded by
//! `common::TIMEOUT`. The tests run on the current-thread runtime, so the log
//! subscriber each installs sees the delivery tasks too.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{TIMEOUT, sample, sample_with_id, until_notified, within};
use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::Notify;
use tracing::subscriber::DefaultGuard;
use whereby_trigger::actions::forward::{ForwardAction, ForwardSpec, RetryPolicy};
use whereby_trigger::actions::{Action, ActionEvent, ActionKind, DeliveryLedger, DeliveryTicket};

/// The configured `Authorization` value: it must reach the receiver and never
/// the log.
const TOKEN: &str = "Bearer s3cr3t-assistant-token";
const TRIGGER: &str = "note-taker";
const ROOM_URL: &str = "https://acme.whereby.com/standup-3f9a2c";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The event, the spec, the action
// ---------------------------------------------------------------------------

fn event(action: ActionKind, event_type: &str) -> Arc<ActionEvent> {
    let raw = sample(event_type);
    let webhook = whereby_trigger::webhook::parse(raw.as_bytes()).expect("sample parses");
    let event = ActionEvent::new(action, TRIGGER, webhook, Bytes::from_static(raw.as_bytes()));
    assert_eq!(event.room_url.as_deref(), Some(ROOM_URL));
    Arc::new(event)
}

fn start_event() -> Arc<ActionEvent> {
    event(ActionKind::Start, "room.client.joined")
}

/// Tiny waits, so that retries cost milliseconds.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_age: Duration::MAX,
    }
}

fn spec(receiver: &Receiver, max_attempts: u32) -> ForwardSpec {
    ForwardSpec {
        url: receiver.url(),
        timeout: Duration::from_secs(5),
        headers: vec![
            ("Authorization".into(), TOKEN.into()),
            ("X-Team".into(), "acme".into()),
        ],
        retry: fast_retry(max_attempts),
        signing_secrets: Vec::new(),
    }
}

fn action(spec: ForwardSpec) -> ForwardAction {
    // Loopback only, whatever proxy the environment names.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    ForwardAction::new(TRIGGER.into(), spec, client).expect("valid spec")
}

/// Waits for every delivery, failing the test if one is still running.
async fn drained(action: &ForwardAction) {
    assert_eq!(action.drain(TIMEOUT).await, 0, "deliveries left in flight");
    assert_eq!(action.in_flight(), 0);
}

// ---------------------------------------------------------------------------
// The captured log
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Logs(Arc<LogsInner>);

#[derive(Default)]
struct LogsInner {
    text: Mutex<Vec<u8>>,
    grew: Notify,
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0.text).extend_from_slice(buf);
        self.0.grew.notify_waiters();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures this thread's log until the guard is dropped.
    fn capture() -> (Logs, DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0.text)).into_owned()
    }

    /// The lines containing every one of `parts`.
    fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .map(str::to_owned)
            .collect()
    }

    async fn wait_for(&self, parts: &[&str], count: usize) {
        let what = format!("{count} log line(s) with {parts:?}");
        within(
            &what,
            until_notified(&self.0.grew, || {
                (self.lines_with(parts).len() >= count).then_some(())
            }),
        )
        .await;
    }

    /// The log never shows the configured secret.
    fn assert_no_secret(&self) {
        let text = self.text();
        assert!(!text.contains("s3cr3t"), "secret in the log:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// What arrives
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_event_arrives_as_json_with_headers_and_idempotency_key() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    let forward = action(spec(&receiver, 3));
    assert_eq!(forward.kind(), "forward");
    let event = start_event();

    forward.start(event.clone());
    drained(&forward).await;

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["action"], "start");
    assert_eq!(body["trigger"], TRIGGER);
    assert_eq!(body["roomUrl"], ROOM_URL);
    let webhook: Value = serde_json::from_str(sample("room.client.joined")).unwrap();
    assert_eq!(body["triggerWebhook"], webhook);
    assert_eq!(
        got[0].body,
        event.to_json(),
        "the body is ActionEvent::to_json"
    );

    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].header("authorization"), TOKEN);
    assert_eq!(got[0].header("x-team"), "acme");
    let key = format!("{TRIGGER}:{}", event.event_id());
    assert_eq!(got[0].header("idempotency-key"), key);

    let delivered = logs.lines_with(&["forward delivered", "attempts=1", "status=200"]);
    assert_eq!(delivered.len(), 1, "{}", logs.text());
    assert!(delivered[0].contains(&key) && delivered[0].contains("INFO"));
    logs.assert_no_secret();
}

#[tokio::test]
async fn a_stop_sends_action_stop_with_the_stop_key() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    let forward = action(spec(&receiver, 3));
    let stop = event(ActionKind::Stop, "room.session.ended");

    forward.stop(stop.clone());
    drained(&forward).await;

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["action"], "stop");
    assert_eq!(body["trigger"], TRIGGER);
    assert_eq!(body["triggerWebhook"]["type"], "room.session.ended");
    assert_eq!(
        got[0].header("idempotency-key"),
        format!("{TRIGGER}:{}:stop", stop.event_id())
    );
    logs.assert_no_secret();
}

/// A start for an event whose id is `Z:stop` and the stop caused by event `Z`
/// are two actions: a receiver that drops duplicates by key must see two keys.
#[tokio::test]
async fn events_whose_ids_look_alike_keep_distinct_keys() {
    let receiver = Receiver::start();
    let forward = action(spec(&receiver, 3));
    let with_id = |action, event_type: &str, id: &str| {
        let mut event = (*event(action, event_type)).clone();
        let raw = sample_with_id(event_type, id);
        event.webhook = whereby_trigger::webhook::parse(raw.as_bytes()).expect("parses");
        event.raw = Bytes::from(raw);
        Arc::new(event)
    };

    forward.start(with_id(ActionKind::Start, "room.client.joined", "Z:stop"));
    forward.stop(with_id(ActionKind::Stop, "room.session.ended", "Z"));
    forward.start(with_id(ActionKind::Start, "room.client.joined", "k1\r"));
    forward.start(with_id(ActionKind::Start, "room.client.joined", "k1%0D"));
    drained(&forward).await;

    let mut keys: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").to_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{TRIGGER}:Z%3Astop"),
            format!("{TRIGGER}:Z:stop"),
            format!("{TRIGGER}:k1%0D"),
            format!("{TRIGGER}:k1%250D"),
        ]
    );
}

// ---------------------------------------------------------------------------
// What is retried
// ---------------------------------------------------------------------------

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().replies(&[(500, None), (503, Some("0"))]);
    let forward = action(spec(&receiver, 5));
    let event = start_event();

    forward.start(event.clone());
    drained(&forward).await;

    let got = receiver.received();
    assert_eq!(got.len(), 3, "500, 503, then 200");
    let key = format!("{TRIGGER}:{}", event.event_id());
    for request in &got {
        // Every attempt is the same delivery: same key, same body.
        assert_eq!(request.header("idempotency-key"), key);
        assert_eq!(request.body, got[0].body);
    }
    // The backoff is visible in the log, attempt by attempt.
    let first = logs.lines_with(&["retrying", "attempt=1", "delay_ms=", "500"]);
    assert_eq!(first.len(), 1, "{}", logs.text());
    assert!(first[0].contains("WARN"));
    let second = logs.lines_with(&["retrying", "attempt=2", "delay_ms=0", "retry_after=true"]);
    assert_eq!(
        second.len(),
        1,
        "Retry-After: 0 is honoured\n{}",
        logs.text()
    );
    assert_eq!(
        logs.lines_with(&["forward delivered", "attempts=3"]).len(),
        1
    );
    logs.assert_no_secret();
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().replies(&[(429, Some("0")), (408, None)]);
    let forward = action(spec(&receiver, 5));

    forward.start(start_event());
    drained(&forward).await;

    assert_eq!(receiver.received().len(), 3);
    assert_eq!(
        logs.lines_with(&["forward delivered", "attempts=3"]).len(),
        1
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_at_first_gets_the_event_when_it_is_up() {
    let (logs, _guard) = Logs::capture();
    // A port nobody listens on, for now.
    let receiver = Receiver::closed();
    // Patient enough to outlast any scheduling delay.
    let forward = action(spec(&receiver, 10_000));

    forward.start(start_event());
    logs.wait_for(&["retrying", "attempt=2"], 1).await;
    assert_eq!(forward.in_flight(), 1);
    receiver.listen();
    drained(&forward).await;

    assert_eq!(receiver.received().len(), 1);
    assert!(!logs.lines_with(&["retrying", "attempt=1"]).is_empty());
    assert_eq!(logs.lines_with(&["forward delivered"]).len(), 1);
    logs.assert_no_secret();
}

#[tokio::test]
async fn connections_closed_unanswered_are_retried() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    receiver.drop_connections(2);
    let forward = action(spec(&receiver, 10));

    forward.start(start_event());
    drained(&forward).await;

    assert_eq!(receiver.dropped(), 2);
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(logs.lines_with(&["forward delivered"]).len(), 1);
    assert!(logs.lines_with(&["retrying"]).len() >= 2, "{}", logs.text());
}

#[tokio::test]
async fn an_attempt_past_the_timeout_is_retried() {
    let (logs, _guard) = Logs::capture();
    // Never answers until the gate opens, which it does not.
    let receiver = Receiver::start().holding();
    let mut spec = spec(&receiver, 2);
    spec.timeout = Duration::from_millis(100);
    let forward = action(spec);

    forward.start(start_event());
    drained(&forward).await;

    assert_eq!(receiver.received().len(), 2);
    assert_eq!(logs.lines_with(&["retrying", "timed out"]).len(), 1);
    assert_eq!(
        logs.lines_with(&["gave up", "attempts=2", "timed out"])
            .len(),
        1,
        "{}",
        logs.text()
    );
}

// ---------------------------------------------------------------------------
// What is not
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_client_error_is_final() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().replies(&[(400, None)]);
    let forward = action(spec(&receiver, 5));

    forward.start(start_event());
    drained(&forward).await;

    assert_eq!(receiver.received().len(), 1, "a 400 is not retried");
    let rejected = logs.lines_with(&["rejected", "400"]);
    assert_eq!(rejected.len(), 1, "{}", logs.text());
    assert!(rejected[0].contains("ERROR"));
    assert!(logs.lines_with(&["retrying"]).is_empty());
    logs.assert_no_secret();
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    receiver.always((503, None));
    let forward = action(spec(&receiver, 4));

    forward.start(start_event());
    drained(&forward).await;

    assert_eq!(receiver.received().len(), 4, "exactly max_attempts");
    assert_eq!(logs.lines_with(&["retrying"]).len(), 3);
    let gave_up = logs.lines_with(&["gave up", "attempts=4", "503"]);
    assert_eq!(gave_up.len(), 1, "{}", logs.text());
    assert!(gave_up[0].contains("ERROR"));
    logs.assert_no_secret();
}

/// A ledger that keeps nothing: the tests read the receiver, not the queue.
struct NoLedger;

impl DeliveryLedger for NoLedger {
    fn done(&self, _: &str) {}
    fn attempted(&self, _: &str, _: u32, _: &str, _: Option<i64>) {}
    fn dead(&self, _: &str, _: &str) {}
    fn released(&self, _: &str, _: bool) {}
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// `event` as a delivery taken up from the store: queued `age` ago, with
/// `attempts` already made.
fn resumed(event: Arc<ActionEvent>, age: Duration, attempts: u32) -> Arc<ActionEvent> {
    resumed_due(event, age, attempts, None)
}

/// [`resumed`], its next attempt due at `retry_at_ms`.
fn resumed_due(
    event: Arc<ActionEvent>,
    age: Duration,
    attempts: u32,
    retry_at_ms: Option<i64>,
) -> Arc<ActionEvent> {
    let queued_ms = now_ms() - i64::try_from(age.as_millis()).unwrap();
    let mut event = Arc::unwrap_or_clone(event);
    event.delivery = Some(
        DeliveryTicket::new("d1".to_owned(), attempts, queued_ms, Arc::new(NoLedger))
            .due_at(retry_at_ms),
    );
    Arc::new(event)
}

#[tokio::test]
async fn a_resumed_delivery_waits_for_the_retry_time_its_last_attempt_set() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().replies(&[(200, None)]);
    let forward = action(spec(&receiver, 5));

    // Its last attempt, before a restart, asked for the next in a second.
    let due = now_ms() + 1_000;
    forward.start(resumed_due(start_event(), Duration::ZERO, 1, Some(due)));
    receiver.wait_for_requests(1).await;
    let arrived = now_ms();
    assert!(arrived >= due, "attempted {} ms early", due - arrived);
    drained(&forward).await;
    assert_eq!(
        logs.lines_with(&["forward delivered", "attempts=2"]).len(),
        1
    );

    // A time already past is no wait; a drain during the wait leaves the
    // delivery pending without an attempt.
    forward.start(resumed_due(start_event(), Duration::ZERO, 1, Some(due)));
    receiver.wait_for_requests(2).await;
    drained(&forward).await;
    let far = now_ms() + 3_600_000;
    forward.start(resumed_due(start_event(), Duration::ZERO, 1, Some(far)));
    // The first delivery waited too: this is the second such line.
    logs.wait_for(&["waiting for the retry time"], 2).await;
    let left = within("the drain", forward.drain(Duration::from_secs(30))).await;
    assert_eq!(left, 0, "{}", logs.text());
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(
        logs.lines_with(&["left pending for the next start"]).len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_delivery_queued_longer_ago_than_max_age_is_not_forwarded() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().replies(&[(200, None)]);
    let mut spec = spec(&receiver, 5);
    spec.retry.max_age = Duration::from_secs(3600);
    let forward = action(spec);

    forward.start(resumed(start_event(), Duration::from_secs(7200), 0));
    drained(&forward).await;

    assert!(
        receiver.received().is_empty(),
        "nothing is sent for a stale delivery"
    );
    let gave_up = logs.lines_with(&["gave up", "older than max_age"]);
    assert_eq!(gave_up.len(), 1, "{}", logs.text());

    // The same webhook queued just now is young: max_age is the delivery's,
    // not the webhook's (the sample's createdAt is long past).
    forward.start(resumed(start_event(), Duration::ZERO, 0));
    drained(&forward).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_resumed_delivery_continues_its_attempt_count() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    receiver.always((503, None));
    let forward = action(spec(&receiver, 4));

    // Two attempts were made before a restart: two are left of max_attempts 4.
    forward.start(resumed(start_event(), Duration::ZERO, 2));
    drained(&forward).await;
    assert_eq!(receiver.received().len(), 2, "{}", logs.text());
    let gave_up = logs.lines_with(&["gave up", "attempts=4"]);
    assert_eq!(gave_up.len(), 1, "{}", logs.text());

    // One resumed after all its attempts (max_attempts was lowered) is not sent.
    forward.start(resumed(start_event(), Duration::ZERO, 4));
    drained(&forward).await;
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(
        logs.lines_with(&["gave up", "before the restart"]).len(),
        1,
        "{}",
        logs.text()
    );
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn drain_waits_for_deliveries_in_flight() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start().holding();
    let forward = action(spec(&receiver, 3));

    forward.start(start_event());
    forward.start(event(ActionKind::Start, "room.session.started"));
    receiver.wait_for_requests(2).await;
    assert_eq!(forward.in_flight(), 2);

    let drain = forward.drain(TIMEOUT);
    tokio::pin!(drain);
    // Both requests are held by the receiver: the drain cannot be done yet.
    tokio::select! {
        biased;
        _ = &mut drain => panic!("drain returned with deliveries in flight"),
        () = tokio::task::yield_now() => {}
    }
    receiver.release(2);
    assert_eq!(within("the drain", drain).await, 0);
    assert_eq!(forward.in_flight(), 0);
    assert_eq!(logs.lines_with(&["forward delivered"]).len(), 2);
}

#[tokio::test]
async fn drain_gives_up_at_its_deadline() {
    let receiver = Receiver::start().holding();
    let forward = action(spec(&receiver, 3));

    forward.start(start_event());
    receiver.wait_for_requests(1).await;
    let left = within("a short drain", forward.drain(Duration::from_millis(20))).await;
    assert_eq!(left, 1, "the held delivery is still in flight");

    // Draining did not close the action: a later drain still waits, and a later
    // event is still delivered.
    receiver.release(2);
    forward.start(start_event());
    drained(&forward).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn drain_leaves_a_stored_delivery_waiting_for_its_retry_pending() {
    let (logs, _guard) = Logs::capture();
    let receiver = Receiver::start();
    // An hour until the next attempt: only a drain that stops the wait returns.
    receiver.always((503, Some("3600")));
    let mut patient = spec(&receiver, 5);
    patient.retry.max_backoff = Duration::from_secs(3600);
    let forward = action(patient);

    forward.start(resumed(start_event(), Duration::ZERO, 0));
    receiver.wait_for_requests(1).await;
    logs.wait_for(&["retrying"], 1).await;
    let left = within("the drain", forward.drain(Duration::from_secs(30))).await;
    assert_eq!(left, 0, "{}", logs.text());
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(
        logs.lines_with(&["left pending for the next start", "attempts=1"])
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert!(logs.lines_with(&["gave up"]).is_empty(), "{}", logs.text());

    // A delivery kept only in memory has no next start: the drain waits out
    // its backoff (a second here) and the retry is made.
    let receiver = Receiver::start().replies(&[(503, Some("1"))]);
    let mut in_memory = spec(&receiver, 5);
    in_memory.retry.max_backoff = Duration::from_secs(10);
    let forward = action(in_memory);
    forward.start(start_event());
    receiver.wait_for_requests(1).await;
    logs.wait_for(&["retrying"], 2).await;
    let left = within("the drain", forward.drain(Duration::from_secs(30))).await;
    assert_eq!(left, 0);
    assert_eq!(receiver.received().len(), 2, "retried, then delivered");
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unsigned_requests_carry_no_standard_webhooks_headers() {
    let receiver = Receiver::start();
    let forward = action(spec(&receiver, 1));
    forward.start(start_event());
    drained(&forward).await;
    let got = receiver.received();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(got[0].header(name), "", "{name}: {got:#?}");
    }
}

#[tokio::test]
async fn every_attempt_is_signed_with_every_secret_at_its_own_time() {
    use whereby_trigger::actions::forward::SigningKey;
    use whereby_trigger::webhook::unix_now;

    let (logs, _guard) = Logs::capture();
    let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let old = "whsec_b2xkIHNpZ25pbmcgc2VjcmV0IGJlaW5nIHJldGlyZWQ=";
    // A 503 first: the retry is signed again, for its own timestamp.
    let receiver = Receiver::start().replies(&[(503, None)]);
    let mut signed = spec(&receiver, 3);
    signed.signing_secrets = vec![new.to_owned(), old.to_owned()];
    let forward = action(signed);
    let before = unix_now();
    forward.stop(event(ActionKind::Stop, "room.session.ended"));
    drained(&forward).await;
    let after = unix_now();

    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    let keys = [
        SigningKey::parse(new).unwrap(),
        SigningKey::parse(old).unwrap(),
    ];
    for request in &got {
        // The idempotency key, kept as it was, is the webhook id.
        let id = request.header("webhook-id");
        assert!(id.ends_with(":stop") && id == request.key(), "{request:#?}");
        let timestamp: u64 = request.header("webhook-timestamp").parse().unwrap();
        assert!((before..=after).contains(&timestamp), "{request:#?}");
        let expected: Vec<String> = keys
            .iter()
            .map(|key| key.sign(id, timestamp, &request.body))
            .collect();
        assert_eq!(request.header("webhook-signature"), expected.join(" "));
    }
    // Neither the secrets nor the signatures reach the log.
    let text = logs.text();
    assert!(
        !text.contains("MfKQ9r8") && !text.contains("b2xkIHNp"),
        "{text}"
    );
    assert!(!text.contains(got[0].header("webhook-signature")), "{text}");
}
