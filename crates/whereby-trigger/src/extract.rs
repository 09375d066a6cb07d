//! Extract: from an HTTP request to a verified, parsed webhook.
//!
//! The steps that need nothing but the request: the Content-Type, the body
//! within its limit (refused before a byte is read when its declared length is
//! over), the `Whereby-Signature` over the raw bytes ([`verify`](crate::verify)),
//! then the webhook and its room URL ([`parse`](crate::parse)). Every verified,
//! parsed webhook is shown to the observers, duplicates included.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use whereby_webhook::{SIGNATURE_HEADER, SignatureError};

use crate::parse::{ParseFailure, ParsedWebhook, Parser};
use crate::verify::Verification;

/// A hook that sees every verified, parsed webhook (duplicates included), e.g.
/// to record them for `replay`.
pub type WebhookObserver = Arc<dyn Fn(&ParsedWebhook) + Send + Sync>;

/// What extracting needs, shared by every request.
pub(crate) struct Extract {
    pub(crate) policy: Verification,
    pub(crate) parser: Parser,
    pub(crate) max_body: usize,
    pub(crate) observers: Vec<WebhookObserver>,
    /// How far ahead of the clock a `createdAt` is believed, when no signature
    /// tolerance is configured (unsigned deliveries): the builder's tolerance.
    pub(crate) tolerance: std::time::Duration,
}

/// Why a request is not a usable webhook.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The Content-Type is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away, or sent a broken stream).
    #[error("the body could not be read: {0}")]
    BodyUnreadable(String),
    /// The body was still arriving when the body read timeout passed.
    #[error("the body was not received within {timeout:?}")]
    BodyTimeout {
        /// The configured body read timeout.
        timeout: Duration,
    },
    /// The signature was missing, malformed, stale or did not match.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is not a usable webhook.
    #[error(transparent)]
    Parse(#[from] ParseFailure),
}

/// Why a request is not a webhook, with its body when it was signed and
/// verified but could not be parsed: Whereby does not retry a 400, so such a
/// body is kept (quarantined) rather than lost.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: ExtractError,
    pub(crate) signed_body: Option<Bytes>,
}

impl<E: Into<ExtractError>> From<E> for Refused {
    fn from(error: E) -> Self {
        Refused {
            error: error.into(),
            signed_body: None,
        }
    }
}

impl Extract {
    /// The webhook of a request, verified and parsed.
    ///
    /// # Errors
    /// An [`ExtractError`] saying which check it failed.
    pub(crate) async fn webhook(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<ParsedWebhook, Refused> {
        if !is_json(headers) {
            return Err(ExtractError::UnsupportedMediaType.into());
        }
        let body = read_body(body, headers, self.max_body).await?;
        let signature = headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes);
        // One reading of the clock, for the signature's age and for ordering.
        let received_ms = crate::util::now_ms();
        let now = u64::try_from(received_ms / 1000).unwrap_or_default();
        let verified = self.policy.verify(signature, body, now)?;
        // Cheap (a reference count): kept for the quarantine, should parsing fail.
        let raw = verified.bytes().clone();
        let mut parsed = self.parser.parse(verified).map_err(|failure| Refused {
            error: failure.into(),
            signed_body: (!self.policy.is_unsigned()).then_some(raw),
        })?;
        let tolerance = self.policy.tolerance().unwrap_or(self.tolerance);
        parsed.order_by_receipt(received_ms, tolerance);
        for observe in &self.observers {
            observe(&parsed);
        }
        Ok(parsed)
    }
}

/// `application/json`, with any parameters (such as a charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ExtractError> {
    // Refuse a declared oversize body before reading a byte of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ExtractError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ExtractError::PayloadTooLarge { limit })
        }
        Err(err) => match timed_out(err.as_ref()) {
            Some(timeout) => Err(ExtractError::BodyTimeout { timeout }),
            None => Err(ExtractError::BodyUnreadable(err.to_string())),
        },
    }
}

/// What a body fails with when it is not complete within the body read timeout
/// (the timer is the router's guard, in [`limits`](crate::limits)). Defined here,
/// where the body is read, so that reading tells a late body from a broken one
/// and the request is refused, and logged, once.
#[derive(Debug, thiserror::Error)]
#[error("the body was not received within {0:?}")]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

/// The body timer's timeout, if `err` or one of its sources is its error (the
/// body types in between wrap it).
fn timed_out(err: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(BodyTimedOut(timeout)) = err.downcast_ref() {
            return Some(*timeout);
        }
        cause = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
