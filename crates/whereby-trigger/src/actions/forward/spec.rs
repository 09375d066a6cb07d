//! What a `forward` action is configured with: the URL, headers, time-out and
//! retry policy, checked before the first delivery.

use super::*;

/// The header that lets a receiver deduplicate deliveries.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Headers whereby-trigger sets itself: configuring them would either break
/// the request (`Content-Length`, `Host`) or the receiver's deduplication.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    IDEMPOTENCY_KEY,
];

/// Headers whereby-trigger sets itself when it signs (`signing_secrets` is not
/// empty): a configured one would contradict the signature.
pub(super) const SIGNING_HEADERS: &[&str] = &[WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE];

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
    /// Standard Webhooks secrets (`whsec_<base64>`) to sign every request
    /// with; empty for none. Several during a rotation: the request carries
    /// one signature per secret. See [`SigningKey`].
    pub signing_secrets: Vec<String>,
}

impl ForwardSpec {
    /// A spec for `url` with a 5 s timeout, no extra headers, the default
    /// [`RetryPolicy`] and no signature.
    pub fn new(url: impl Into<String>) -> Self {
        ForwardSpec {
            url: url.into(),
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
            retry: RetryPolicy::default(),
            signing_secrets: Vec::new(),
        }
    }

    /// Checks everything a delivery relies on, so that a bad spec is a config
    /// error at start-up rather than a failure at the first event.
    pub fn validate(&self) -> Result<(), ForwardSpecError> {
        self.compile().map(|_| ())
    }

    pub(super) fn compile(&self) -> Result<Compiled, ForwardSpecError> {
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
        let signing = self
            .signing_secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                SigningKey::parse(secret)
                    .map_err(|reason| ForwardSpecError::SigningSecret { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ForwardSpecError::HeaderName { name: name.clone() })?;
            if RESERVED_HEADERS.contains(&header.as_str())
                || (!signing.is_empty() && SIGNING_HEADERS.contains(&header.as_str()))
            {
                return Err(ForwardSpecError::ReservedHeader { name: name.clone() });
            }
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| ForwardSpecError::HeaderValue { name: name.clone() })?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        Ok(Compiled {
            url,
            headers,
            signing,
        })
    }
}

/// A checked spec, as a delivery uses it.
pub(super) struct Compiled {
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    pub(super) signing: Vec<SigningKey>,
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
            .field("signing_secrets", &self.signing_secrets.len())
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
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 30;
/// Default `forward.max_age`.
pub const DEFAULT_RETRY_MAX_AGE: Duration = Duration::from_secs(3600);

impl Default for RetryPolicy {
    /// 30 attempts, waits doubling from 250 ms up to 30 s (about 12 minutes
    /// of patience at most, enough for a receiver's restart or a deploy), and
    /// nothing older than an hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_RETRY_ATTEMPTS,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_age: DEFAULT_RETRY_MAX_AGE,
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
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
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
#[non_exhaustive]
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
    /// A signing secret is not `whsec_` and base64.
    #[error("forward signing secret number {}: {reason} (the value is not shown)", index + 1)]
    SigningSecret {
        /// Its position among the configured secrets, from 0.
        index: usize,
        /// What is wrong with it.
        reason: SigningSecretError,
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
