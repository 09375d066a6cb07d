//! `forward`: POST the trigger event to a service, retrying until it answers.
//!
//! Each start or stop becomes one delivery on a task of its own, so the webhook
//! request that fired it is answered at once. A delivery is attempted up to
//! [`RetryPolicy::max_attempts`] times: connection errors, timeouts, 5xx, 408
//! and 429 are retried with exponential backoff and full jitter (or after the
//! receiver's `Retry-After`); any other answer is final. Every request carries
//! `Idempotency-Key: <trigger>:<event id>` (`…:stop` for a stop), so a receiver
//! can drop the duplicates that at-least-once delivery implies.
//!
//! Header values are often secrets (`Authorization`): they are never logged,
//! never shown in an error, and marked sensitive so that the HTTP stack's own
//! `Debug` output hides them too.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Action, ActionEvent, ActionKind};

/// The header that lets a receiver deduplicate deliveries.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Headers whereby-trigger sets itself: configuring them would either break
/// the request (`Content-Length`, `Host`) or the receiver's deduplication.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    IDEMPOTENCY_KEY,
];

/// Where and how to forward a trigger's events: the `forward` table of a trigger.
#[derive(Clone)]
pub struct ForwardSpec {
    /// The receiver's URL; `http` or `https`.
    pub url: String,
    /// The longest one attempt may take, from connecting to the response's
    /// status line.
    pub timeout: Duration,
    /// Extra request headers, e.g. `Authorization`. Values may be secrets.
    pub headers: Vec<(String, String)>,
    /// How often and how patiently to retry.
    pub retry: RetryPolicy,
}

impl ForwardSpec {
    /// A spec for `url` with a 5 s timeout, no extra headers and the default
    /// [`RetryPolicy`].
    pub fn new(url: impl Into<String>) -> Self {
        ForwardSpec {
            url: url.into(),
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// Checks everything a delivery relies on, so that a bad spec is a config
    /// error at start-up rather than a failure at the first event.
    pub fn validate(&self) -> Result<(), ForwardSpecError> {
        self.compile().map(|_| ())
    }

    fn compile(&self) -> Result<(Url, HeaderMap), ForwardSpecError> {
        let url = Url::parse(&self.url).map_err(|e| ForwardSpecError::Url {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ForwardSpecError::Scheme {
                url: redact_url(&url),
                scheme: url.scheme().to_owned(),
            });
        }
        if self.timeout.is_zero() {
            return Err(ForwardSpecError::ZeroTimeout);
        }
        self.retry.validate()?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ForwardSpecError::HeaderName { name: name.clone() })?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(ForwardSpecError::ReservedHeader { name: name.clone() });
            }
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| ForwardSpecError::HeaderValue { name: name.clone() })?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        Ok((url, headers))
    }
}

impl fmt::Debug for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "[redacted]"))
            .collect();
        let url = Url::parse(&self.url).map_or_else(|_| self.url.clone(), |u| redact_url(&u));
        f.debug_struct("ForwardSpec")
            .field("url", &url)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("retry", &self.retry)
            .finish()
    }
}

/// How a delivery is retried after a transient failure.
///
/// The wait before attempt `n + 1` is drawn uniformly from zero to
/// `min(max_backoff, initial_backoff × 2^(n-1))` ("full jitter"), so that
/// many deliveries failing together do not retry in lockstep against a
/// receiver that is just coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// The ceiling of the first wait.
    pub initial_backoff: Duration,
    /// The largest wait, also for a receiver's `Retry-After`.
    pub max_backoff: Duration,
    /// No attempt is made once the delivery was queued longer ago than this
    /// (for a live webhook, about when it was sent): an assistant started an
    /// hour late has missed its meeting. Attempts and age carry on across a
    /// restart; `outbox retry` starts both afresh.
    pub max_age: Duration,
}

/// Default `forward.max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;
/// Default `forward.max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

impl Default for RetryPolicy {
    /// 30 attempts, waits doubling from 250 ms up to 30 s (about 12 minutes
    /// of patience at most, enough for a receiver's restart or a deploy), and
    /// nothing older than an hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl RetryPolicy {
    /// Checks that the policy makes at least one attempt and that its waits
    /// grow towards their cap.
    pub fn validate(&self) -> Result<(), ForwardSpecError> {
        if self.max_attempts == 0 {
            return Err(ForwardSpecError::ZeroAttempts);
        }
        if self.initial_backoff > self.max_backoff {
            return Err(ForwardSpecError::Backoff {
                initial: self.initial_backoff,
                max: self.max_backoff,
            });
        }
        Ok(())
    }

    /// The longest wait after failed attempt number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .checked_mul(1u32 << doublings)
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff)
    }

    /// The wait after failed attempt number `attempt`: the receiver's
    /// `retry_after` if it sent one (capped at `max_backoff`), otherwise
    /// `jitter` (in `[0, 1]`) of [`RetryPolicy::ceiling`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.max_backoff),
            None => self.ceiling(attempt).mul_f64(jitter.clamp(0.0, 1.0)),
        }
    }
}

/// Parses a `Retry-After` value in seconds. An HTTP date is not understood
/// and gives `None`, so the usual backoff applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: a parse failure can only be an overflow, which the cap at
    // `max_backoff` turns into the longest wait anyway.
    Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)))
}

/// A `forward` spec that cannot work. Messages name the URL or header at
/// fault but never show a header value, which may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum ForwardSpecError {
    /// The URL does not parse.
    #[error("forward url {url:?} is not a valid URL: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The URL is not `http` or `https`.
    #[error("forward url {url:?} must use http or https, not {scheme:?}")]
    Scheme {
        /// The URL, password and query hidden.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A header name is not a valid HTTP header name.
    #[error("forward header name {name:?} is not a valid HTTP header name")]
    HeaderName {
        /// The name as configured.
        name: String,
    },
    /// A header value has characters HTTP does not allow (only visible ASCII
    /// and spaces are).
    #[error(
        "the value of forward header {name:?} is not a valid HTTP header value \
         (only visible ASCII and spaces are allowed; the value is not shown)"
    )]
    HeaderValue {
        /// The header's name.
        name: String,
    },
    /// A header whereby-trigger sets itself.
    #[error("forward header {name:?} is set by whereby-trigger and cannot be configured")]
    ReservedHeader {
        /// The header's name.
        name: String,
    },
    /// A zero timeout would fail every attempt.
    #[error("forward timeout must be greater than zero")]
    ZeroTimeout,
    /// A policy with no attempt would never deliver.
    #[error("forward retry max_attempts must be at least 1")]
    ZeroAttempts,
    /// The first wait is longer than the longest one.
    #[error("forward retry initial_backoff ({initial:?}) is longer than max_backoff ({max:?})")]
    Backoff {
        /// The configured initial backoff.
        initial: Duration,
        /// The configured maximum backoff.
        max: Duration,
    },
}

/// The `forward` action: POSTs each start and stop event to a service.
pub struct ForwardAction {
    inner: Arc<Inner>,
    /// Every delivery still running, so shutdown can wait for them.
    tracker: TaskTracker,
}

/// What every delivery of one trigger shares.
struct Inner {
    trigger: Arc<str>,
    url: Url,
    /// `url` with password and query hidden: what the log shows.
    log_url: String,
    timeout: Duration,
    headers: HeaderMap,
    retry: RetryPolicy,
    client: reqwest::Client,
    /// Jitter source: a randomly keyed hash of a counter, which is all the
    /// randomness backoff needs.
    random: RandomState,
    draws: AtomicU64,
    /// Cancelled by [`ForwardAction::drain`]: a delivery recorded in the store
    /// stops waiting between attempts, since the next start resumes it.
    draining: Mutex<CancellationToken>,
}

impl Inner {
    fn draining(&self) -> CancellationToken {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ForwardAction {
    /// The action for `trigger`, validating `spec` first.
    ///
    /// `client` should not follow redirects (see [`ForwardAction::client`]): a
    /// followed 301–303 turns the POST into a GET without the event.
    pub fn new(
        trigger: Arc<str>,
        spec: ForwardSpec,
        client: reqwest::Client,
    ) -> Result<Self, ForwardSpecError> {
        let (url, headers) = spec.compile()?;
        Ok(ForwardAction {
            inner: Arc::new(Inner {
                trigger,
                log_url: redact_url(&url),
                url,
                timeout: spec.timeout,
                headers,
                retry: spec.retry,
                client,
                random: RandomState::new(),
                draws: AtomicU64::new(0),
                draining: Mutex::new(CancellationToken::new()),
            }),
            tracker: TaskTracker::new(),
        })
    }

    /// A client suited to forwarding, to share between all `forward` actions
    /// (it pools connections): it does not follow redirects, which would lose
    /// the body, so a 3xx is reported as a final failure instead.
    pub fn client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("whereby-trigger/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Deliveries started and not yet finished (delivered, rejected or given up).
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every delivery in flight has finished, or `deadline` has
    /// passed, and returns how many are still in flight. Deliveries started
    /// meanwhile are waited for too; those left over keep running until the
    /// runtime stops.
    ///
    /// A delivery that is recorded in the store (it has a ticket) and is only
    /// waiting for its next attempt stops at once and stays pending for the
    /// next start: shutting down need not wait out a backoff. An attempt under
    /// way is awaited, and so is a delivery kept in memory only, which has no
    /// other chance.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.tracker.close();
        let draining = std::mem::take(
            &mut *self
                .inner
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        draining.cancel();
        let finished = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        // Draining is not closing: a later event is still delivered.
        self.tracker.reopen();
        let left = self.tracker.len();
        if !finished {
            tracing::warn!(
                trigger = %self.inner.trigger,
                url = %self.inner.log_url,
                in_flight = left,
                ?deadline,
                "forward deliveries still in flight after the drain deadline"
            );
        }
        left
    }

    fn spawn(&self, event: Arc<ActionEvent>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                trigger = %self.inner.trigger,
                event_id = %event.event_id(),
                "forward called outside a Tokio runtime; event not delivered"
            );
            return;
        };
        self.tracker
            .spawn_on(deliver(self.inner.clone(), event), &runtime);
    }
}

impl fmt::Debug for ForwardAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<_> = self.inner.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("ForwardAction")
            .field("trigger", &self.inner.trigger)
            .field("url", &self.inner.log_url)
            .field("timeout", &self.inner.timeout)
            .field("header_names", &header_names)
            .field("retry", &self.inner.retry)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Action for ForwardAction {
    fn kind(&self) -> &'static str {
        "forward"
    }

    fn start(&self, event: Arc<ActionEvent>) {
        self.spawn(event);
    }

    fn stop(&self, event: Arc<ActionEvent>) {
        self.spawn(event);
    }

    fn tracks_delivery(&self) -> bool {
        true
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// A 2xx.
    Delivered(StatusCode),
    /// An answer or error that retrying cannot change.
    Final(String),
    /// Worth another attempt, after `retry_after` if the receiver asked.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// What a status means for the delivery.
#[derive(Debug, PartialEq, Eq)]
enum StatusClass {
    Delivered,
    Retry,
    Final,
}

fn classify_status(status: StatusCode) -> StatusClass {
    if status.is_success() {
        StatusClass::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        StatusClass::Retry
    } else {
        // 4xx, and 1xx/3xx a POST should never end with.
        StatusClass::Final
    }
}

/// `<trigger>:<event id>`, plus `:stop` for a stop.
fn idempotency_key(trigger: &str, event_id: &str, action: ActionKind) -> String {
    let mut key = format!("{trigger}:{event_id}");
    if action == ActionKind::Stop {
        key.push_str(":stop");
    }
    key
}

/// The key as a header value. Control characters (which no real id has, but
/// which would make the header invalid) are percent-escaped, so every event
/// still gets a stable key.
fn key_header(key: &str) -> HeaderValue {
    let mut escaped = Vec::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b < 0x20 || b == 0x7f {
            escaped.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            escaped.push(b);
        }
    }
    HeaderValue::from_bytes(&escaped).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `url` without what may be a secret: a password, or a query that may carry
/// a token.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("redacted"));
    }
    if shown.query().is_some() {
        shown.set_query(Some("redacted"));
    }
    shown.to_string()
}

/// A reqwest error as one line, without its URL (which may hold a password).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Inner {
    /// A jitter fraction in `[0, 1)`.
    fn jitter(&self) -> f64 {
        let draw = self
            .random
            .hash_one(self.draws.fetch_add(1, Ordering::Relaxed));
        // The top 53 bits fill an f64 mantissa exactly.
        (draw >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn attempt(&self, body: Bytes, key: HeaderValue) -> Attempt {
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(IDEMPOTENCY_KEY, key)
            .timeout(self.timeout)
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            // A request that cannot even be built (e.g. https without TLS
            // support) or a redirect loop fails the same way every time.
            Err(e) if e.is_builder() || e.is_redirect() => return Attempt::Final(describe(e)),
            Err(e) => {
                return Attempt::Transient {
                    reason: describe(e),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        // The response body is not read: it is not needed, and it could echo
        // the request's headers into the log.
        match classify_status(status) {
            StatusClass::Delivered => Attempt::Delivered(status),
            StatusClass::Final => Attempt::Final(format!("HTTP {status}")),
            StatusClass::Retry => Attempt::Transient {
                reason: format!("HTTP {status}"),
                retry_after: response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            },
        }
    }
}

/// Attempts one event until it is delivered, rejected, or out of attempts.
/// A delivery taken up again after a restart continues its count and its age.
async fn deliver(inner: Arc<Inner>, event: Arc<ActionEvent>) {
    let body = Bytes::from(event.to_json());
    let key = idempotency_key(&inner.trigger, event.event_id(), event.action);
    let key_value = key_header(&key);
    let action = event.action.as_str();
    let max_attempts = inner.retry.max_attempts.max(1);
    let ticket = event.delivery.as_ref();
    let draining = inner.draining();
    let queued_ms = ticket.map_or_else(crate::util::now_ms, |t| t.queued_ms());
    let mut attempt = ticket.map_or(0, |t| t.attempts_made()).saturating_add(1);
    if attempt > max_attempts {
        // Only a delivery resumed with a lower max_attempts than it had.
        tracing::error!(
            trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
            room = %event.room, attempts = attempt - 1,
            "forward gave up: max_attempts were made before the restart"
        );
        if let Some(ticket) = ticket {
            ticket.dead(&format!("gave up after {} attempts", attempt - 1));
        }
        return;
    }
    loop {
        let age = Duration::from_millis(
            u64::try_from(crate::util::now_ms().saturating_sub(queued_ms)).unwrap_or(0),
        );
        if age > inner.retry.max_age {
            tracing::error!(
                trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                room = %event.room, age_s = age.as_secs(), attempts = attempt - 1,
                "forward gave up: the delivery is older than max_age"
            );
            if let Some(ticket) = ticket {
                ticket.dead(&format!(
                    "older than max_age ({}s)",
                    inner.retry.max_age.as_secs()
                ));
            }
            return;
        }
        match inner.attempt(body.clone(), key_value.clone()).await {
            Attempt::Delivered(status) => {
                tracing::info!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    room = %event.room, status = status.as_u16(), attempts = attempt,
                    "forward delivered"
                );
                if let Some(ticket) = &event.delivery {
                    ticket.done();
                }
                return;
            }
            Attempt::Final(reason) => {
                tracing::error!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    room = %event.room, error = %reason, attempts = attempt,
                    "forward rejected; not retried"
                );
                if let Some(ticket) = &event.delivery {
                    ticket.dead(&reason);
                }
                return;
            }
            Attempt::Transient {
                reason,
                retry_after,
            } => {
                if attempt >= max_attempts {
                    tracing::error!(
                        trigger = %inner.trigger, action, idempotency_key = %key,
                        url = %inner.log_url, room = %event.room, error = %reason,
                        attempts = attempt, "forward gave up after the last attempt"
                    );
                    if let Some(ticket) = &event.delivery {
                        ticket.dead(&format!("gave up after {attempt} attempts: {reason}"));
                    }
                    return;
                }
                let delay = inner.retry.delay(attempt, retry_after, inner.jitter());
                tracing::warn!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    room = %event.room, error = %reason, attempt, max_attempts,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    retry_after = retry_after.is_some(),
                    "forward attempt failed; retrying"
                );
                if let Some(ticket) = &event.delivery {
                    ticket.attempted(attempt, &reason);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = draining.cancelled() => {
                            tracing::info!(
                                trigger = %inner.trigger, action, idempotency_key = %key,
                                attempts = attempt,
                                "forward delivery left pending for the next start"
                            );
                            return;
                        }
                    }
                } else {
                    tokio::time::sleep(delay).await;
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Bearer hunter2-very-secret";

    fn spec(url: &str) -> ForwardSpec {
        ForwardSpec {
            headers: vec![("Authorization".into(), SECRET.into())],
            ..ForwardSpec::new(url)
        }
    }

    fn error_of(spec: &ForwardSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn valid_specs_pass() {
        spec("http://127.0.0.1:9000/assistants").validate().unwrap();
        spec("https://assistants.example.com/start?x=1")
            .validate()
            .unwrap();
    }

    #[test]
    fn bad_urls_are_named() {
        let e = error_of(&spec("not a url"));
        assert!(e.contains("\"not a url\""), "{e}");
        let e = error_of(&spec("ftp://files.example.com/in"));
        assert!(e.contains("ftp") && e.contains("files.example.com"), "{e}");
        // The password of a URL with the wrong scheme is not echoed.
        let e = error_of(&spec("ws://user:pa55@example.com/"));
        assert!(!e.contains("pa55"), "{e}");
    }

    #[test]
    fn bad_headers_are_named_without_their_value() {
        let mut s = spec("http://127.0.0.1/");
        s.headers = vec![("Bad Name".into(), SECRET.into())];
        let e = error_of(&s);
        assert!(e.contains("\"Bad Name\"") && !e.contains("hunter2"), "{e}");

        s.headers = vec![(
            "Authorization".into(),
            "Bearer hunter2\nX-Injected: 1".into(),
        )];
        let e = error_of(&s);
        assert!(
            e.contains("\"Authorization\"") && !e.contains("hunter2"),
            "{e}"
        );

        s.headers = vec![("Idempotency-Key".into(), "mine".into())];
        let e = error_of(&s);
        assert!(
            e.contains("\"Idempotency-Key\"") && !e.contains("mine"),
            "{e}"
        );
        s.headers = vec![("content-type".into(), "text/plain".into())];
        assert!(matches!(
            s.validate(),
            Err(ForwardSpecError::ReservedHeader { .. })
        ));
    }

    #[test]
    fn timeouts_and_retry_policy_are_checked() {
        let mut s = spec("http://127.0.0.1/");
        s.timeout = Duration::ZERO;
        assert!(matches!(s.validate(), Err(ForwardSpecError::ZeroTimeout)));
        let mut s = spec("http://127.0.0.1/");
        s.retry.max_attempts = 0;
        assert!(matches!(s.validate(), Err(ForwardSpecError::ZeroAttempts)));
        let mut s = spec("http://127.0.0.1/");
        s.retry.initial_backoff = Duration::from_secs(60);
        assert!(matches!(
            s.validate(),
            Err(ForwardSpecError::Backoff { .. })
        ));
    }

    #[test]
    fn debug_hides_header_values_and_url_secrets() {
        let s = spec("http://user:pa55@127.0.0.1/in?token=t0k3n");
        let shown = format!("{s:?}");
        assert!(shown.contains("Authorization"), "{shown}");
        for secret in ["hunter2", "pa55", "t0k3n"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let action = ForwardAction::new("t".into(), s, reqwest::Client::new()).unwrap();
        let shown = format!("{action:?}");
        assert!(shown.contains("authorization"), "{shown}");
        for secret in ["hunter2", "pa55", "t0k3n"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_age: DEFAULT_MAX_AGE,
        }
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(250));
        assert_eq!(p.ceiling(2), Duration::from_millis(500));
        assert_eq!(p.ceiling(3), Duration::from_secs(1));
        assert_eq!(p.ceiling(8), Duration::from_secs(30));
        // No overflow, however many attempts.
        assert_eq!(p.ceiling(40), Duration::from_secs(30));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30));
        let huge = RetryPolicy {
            initial_backoff: Duration::MAX / 2,
            max_backoff: Duration::MAX,
            ..p
        };
        assert_eq!(huge.ceiling(5), Duration::MAX);
        for n in 1..40 {
            assert!(p.ceiling(n) <= p.ceiling(n + 1));
        }
    }

    #[test]
    fn delay_is_jitter_times_ceiling_or_retry_after() {
        let p = policy();
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(500));
        // Out-of-range jitter is clamped rather than trusted.
        assert_eq!(p.delay(3, None, 7.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, None, -1.0), Duration::ZERO);
        // Retry-After wins over backoff, but never beyond the cap.
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2)), 0.1),
            Duration::from_secs(2)
        );
        assert_eq!(p.delay(1, Some(Duration::ZERO), 0.9), Duration::ZERO);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.1),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jitter_draws_cover_the_range_and_differ() {
        let action = ForwardAction::new(
            "t".into(),
            spec("http://127.0.0.1/"),
            reqwest::Client::new(),
        )
        .unwrap();
        let draws: Vec<f64> = (0..1000).map(|_| action.inner.jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.iter().any(|j| *j < 0.25) && draws.iter().any(|j| *j > 0.75));
        let p = policy();
        for (n, j) in draws.iter().enumerate() {
            let attempt = (n % 12) as u32 + 1;
            let delay = p.delay(attempt, None, *j);
            assert!(delay <= p.ceiling(attempt) && delay <= p.max_backoff);
        }
    }

    #[test]
    fn retry_after_is_seconds_only() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        for s in [200, 201, 202, 204] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap()),
                StatusClass::Delivered
            );
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap()),
                StatusClass::Retry
            );
        }
        for s in [301, 302, 400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(
                classify_status(StatusCode::from_u16(s).unwrap()),
                StatusClass::Final
            );
        }
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(
            idempotency_key("note-taker", "evt_1", ActionKind::Start),
            "note-taker:evt_1"
        );
        assert_eq!(
            idempotency_key("note-taker", "evt_1", ActionKind::Stop),
            "note-taker:evt_1:stop"
        );
        assert_eq!(key_header("t:a\nb").to_str().unwrap(), "t:a%0Ab");
        assert_eq!(key_header("t:é").as_bytes(), "t:é".as_bytes());
    }

    #[test]
    fn redacted_urls_hide_passwords_and_queries() {
        let url = Url::parse("https://me:pa55@example.com:8443/in?token=t0k3n").unwrap();
        assert_eq!(
            redact_url(&url),
            "https://me:redacted@example.com:8443/in?redacted"
        );
        let plain = Url::parse("http://127.0.0.1:9000/assistants").unwrap();
        assert_eq!(redact_url(&plain), "http://127.0.0.1:9000/assistants");
    }
}
