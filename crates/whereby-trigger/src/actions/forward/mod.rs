//! `forward`: POST the trigger event to a service, retrying until it answers.
//!
//! Each start or stop becomes one delivery on a task of its own, so the webhook
//! request that fired it is answered at once. A delivery is attempted up to
//! [`RetryPolicy::max_attempts`] times: connection errors, timeouts, 5xx, 408
//! and 429 are retried with exponential backoff and full jitter (or after the
//! receiver's `Retry-After`); any other answer is final. Every request carries
//! `Idempotency-Key: <trigger>:<event id>` (`…:stop` for a stop; bytes other
//! than `[A-Za-z0-9._-]` in either part as `%XX`), so a receiver can drop the
//! duplicates that at-least-once delivery implies.
//!
//! With `signing_secrets`, every request is also signed the Standard Webhooks
//! way ([`SigningKey`]): `webhook-id` is the `Idempotency-Key`, `webhook-timestamp`
//! the time of the attempt, `webhook-signature` one `v1,<base64>` per secret.
//!
//! Header values are often secrets (`Authorization`): they are never logged,
//! never shown in an error, and marked sensitive so that the HTTP stack's own
//! `Debug` output hides them too.

mod sign;
mod spec;

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

use super::delivery::{DeliveryTicket, Fate, event_key};
use super::{Action, ActionEvent, ActionKind};
pub use sign::{SECRET_PREFIX, SigningKey, SigningSecretError, signature_header};
use sign::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
pub use spec::*;

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
    /// Standard Webhooks keys; empty when requests are not signed.
    signing: Vec<SigningKey>,
    retry: RetryPolicy,
    client: reqwest::Client,
    /// Jitter source: a randomly keyed hash of a counter, which is all the
    /// randomness backoff needs.
    random: RandomState,
    draws: AtomicU64,
    /// Cancelled by [`ForwardAction::drain`]: a delivery recorded in the store
    /// stops waiting between attempts, since the next start resumes it.
    draining: Mutex<CancellationToken>,
    /// The trigger's `forward` deliveries' counters (`actions_total`), which
    /// count a call without a delivery ticket (a Trigger without a store).
    deliveries: Arc<crate::metrics::ActionStats>,
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
        let Compiled {
            url,
            headers,
            signing,
        } = spec.compile()?;
        let deliveries = crate::metrics::metrics()
            .trigger(&trigger)
            .action("forward");
        Ok(ForwardAction {
            inner: Arc::new(Inner {
                trigger,
                log_url: redact_url(&url),
                url,
                timeout: spec.timeout,
                headers,
                signing,
                retry: spec.retry,
                client,
                random: RandomState::new(),
                draws: AtomicU64::new(0),
                draining: Mutex::new(CancellationToken::new()),
                deliveries,
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
                room = %event.room_label(),
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
            .field("signed", &!self.inner.signing.is_empty())
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

/// The `Idempotency-Key` of a delivery: unambiguous, and visible ASCII only, so
/// always a valid header value.
fn idempotency_key(trigger: &str, event_id: &str, action: ActionKind) -> HeaderValue {
    let key = event_key(trigger, event_id, action);
    HeaderValue::try_from(key).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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
    /// Adds the Standard Webhooks headers. The timestamp is this attempt's,
    /// not the first one's: receivers refuse a timestamp more than a few
    /// minutes old, and a retry may come later than that.
    fn sign(
        &self,
        request: reqwest::RequestBuilder,
        key: &HeaderValue,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let timestamp = whereby_webhook::unix_now();
        // The key is visible ASCII (see `idempotency_key`), so this is the
        // header's exact text, which is what the receiver signs again.
        let id = key.to_str().unwrap_or("invalid");
        let signature = signature_header(&self.signing, id, timestamp, body);
        // Base64 and spaces: always a valid header value. Sensitive, so that
        // the HTTP stack's `Debug` output does not show it.
        let signature = HeaderValue::try_from(signature).map(|mut value| {
            value.set_sensitive(true);
            value
        });
        let request = request
            .header(WEBHOOK_ID, key.clone())
            .header(WEBHOOK_TIMESTAMP, timestamp);
        match signature {
            Ok(signature) => request.header(WEBHOOK_SIGNATURE, signature),
            // Unreachable; without the header the receiver refuses the
            // request, which is the right outcome for an unsigned one.
            Err(_) => request,
        }
    }

    /// A jitter fraction in `[0, 1)`.
    fn jitter(&self) -> f64 {
        let draw = self
            .random
            .hash_one(self.draws.fetch_add(1, Ordering::Relaxed));
        // The top 53 bits fill an f64 mantissa exactly.
        (draw >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn attempt(&self, body: Bytes, key: HeaderValue) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !self.signing.is_empty() {
            request = self.sign(request, &key, &body);
        }
        let request = request
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
    let key_value = idempotency_key(&inner.trigger, event.event_id(), event.action);
    // Visible ASCII, as the header value is.
    let key = key_value.to_str().unwrap_or("invalid").to_owned();
    let action = event.action.as_str();
    let max_attempts = inner.retry.max_attempts.max(1);
    let ticket = event.delivery.as_ref();
    let fate = Fate::of(&event, &inner.deliveries);
    let draining = inner.draining();
    let queued_ms = ticket.map_or_else(crate::util::now_ms, |t| t.queued_ms());
    let mut attempt = ticket.map_or(0, |t| t.attempts_made()).saturating_add(1);
    if attempt > max_attempts {
        // Only a delivery resumed with a lower max_attempts than it had.
        tracing::error!(
            trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
            room = %event.room_label(), attempts = attempt - 1,
            "forward gave up: max_attempts were made before the restart"
        );
        fate.dead(|| format!("gave up after {} attempts", attempt - 1));
        return;
    }
    // Only the room's label is kept for the lines of every attempt.
    let room = event.room_label();
    // Taken up after a restart (or from another server) while the backoff of
    // its last attempt (a receiver's Retry-After, say) still runs: that wait
    // is kept, not cut short by the restart.
    let due_in = ticket
        .and_then(DeliveryTicket::retry_at_ms)
        .and_then(|at| crate::util::until_ms(at, crate::util::now_ms()));
    if let Some(wait) = due_in {
        tracing::debug!(
            trigger = %inner.trigger, action, idempotency_key = %key, %room,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "forward waiting for the retry time of its last attempt"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = draining.cancelled() => {
                tracing::info!(
                    trigger = %inner.trigger, action, idempotency_key = %key,
                    %room, attempts = attempt - 1,
                    "forward delivery left pending for the next start"
                );
                return;
            }
        }
    }
    tracing::debug!(
        trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
        %room, attempt, max_attempts, "forward delivering"
    );
    loop {
        let age = Duration::from_millis(
            u64::try_from(crate::util::now_ms().saturating_sub(queued_ms)).unwrap_or(0),
        );
        if age > inner.retry.max_age {
            tracing::error!(
                trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                %room, age_s = age.as_secs(), attempts = attempt - 1,
                "forward gave up: the delivery is older than max_age"
            );
            fate.dead(|| format!("older than max_age ({}s)", inner.retry.max_age.as_secs()));
            return;
        }
        match inner.attempt(body.clone(), key_value.clone()).await {
            Attempt::Delivered(status) => {
                tracing::info!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    %room, status = status.as_u16(), attempts = attempt,
                    "forward delivered"
                );
                fate.done();
                return;
            }
            Attempt::Final(reason) => {
                tracing::error!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    %room, error = %reason, attempts = attempt,
                    "forward rejected; not retried"
                );
                // The stored count includes this attempt, so that `outbox
                // list` shows as many attempts as were made; counted `dead`
                // only, as no retry follows.
                fate.dead_after(attempt, &reason, || reason.clone());
                return;
            }
            Attempt::Transient {
                reason,
                retry_after,
            } => {
                if attempt >= max_attempts {
                    tracing::error!(
                        trigger = %inner.trigger, action, idempotency_key = %key,
                        url = %inner.log_url, %room, error = %reason,
                        attempts = attempt, "forward gave up after the last attempt"
                    );
                    // The attempt recorded first, so that the stored count
                    // agrees with "gave up after N attempts"; counted `dead`
                    // only.
                    fate.dead_after(attempt, &reason, || {
                        format!("gave up after {attempt} attempts: {reason}")
                    });
                    return;
                }
                let delay = inner.retry.delay(attempt, retry_after, inner.jitter());
                tracing::warn!(
                    trigger = %inner.trigger, action, idempotency_key = %key, url = %inner.log_url,
                    %room, error = %reason, attempt, max_attempts,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    retry_after = retry_after.is_some(),
                    "forward attempt failed; retrying"
                );
                fate.attempted(attempt, &reason, delay);
                // One recorded in the store stops waiting when draining: the
                // next start resumes it.
                if ticket.is_some() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = draining.cancelled() => {
                            tracing::info!(
                                trigger = %inner.trigger, action, idempotency_key = %key,
                                %room, attempts = attempt,
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
mod tests;
