//! How a refused request is answered: one place turns every failure of the
//! pipeline into a status code and a JSON body that says what was wrong.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use whereby_webhook::SignatureError;

use crate::store::StoreError;

use crate::evaluate::EvaluateError;
use crate::extract::ExtractError;
use crate::parse::ParseFailure;

/// Why a request to the webhook endpoint was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request is not a usable webhook: its Content-Type, its body, its
    /// signature or its payload.
    #[error(transparent)]
    Request(#[from] ExtractError),
    /// The predicate failed, panicked, or did not finish in time.
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    /// The store could not commit what the webhook changed: nothing fired, and
    /// Whereby retries.
    #[error("the webhook could not be recorded; retry later")]
    Store(#[source] StoreError),
    /// The request's `Host` header is missing (HTTP/1.1), repeated or not a
    /// host (RFC 9112 §3.2).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The webhook path was asked with a method other than POST or GET.
    #[error("method not allowed: use POST to deliver a webhook")]
    MethodNotAllowed,
    /// No route matches the path. The answer names the webhook path, since a
    /// sender that got it wrong needs nothing else to fix it.
    #[error("not found: webhooks are delivered to {webhook_path}")]
    NotFound {
        /// The path the server receives webhooks on.
        webhook_path: Arc<str>,
    },
    /// This server is a worker: it carries out actions and receives no
    /// webhooks (503, so that Whereby retries, and a load balancer that sent
    /// it here sends the retry to a receiver).
    #[error(
        "this whereby-trigger is a worker and receives no webhooks: deliver them to a receiver"
    )]
    NotReceiving,
    /// The request was not answered within the request deadline; it was
    /// abandoned, and nothing it did was remembered.
    #[error("the webhook was not answered within {deadline:?}; retry it")]
    Deadline {
        /// The configured request deadline.
        deadline: Duration,
    },
    /// The handler panicked (a bug outside the predicates, which have their own
    /// [`EvaluateError::Panicked`]).
    #[error("the handler panicked: {message}")]
    Panicked {
        /// The panic message, when it was a string.
        message: String,
    },
}

impl Rejection {
    /// The status code this rejection is answered with.
    ///
    /// A timed-out predicate and a missed request deadline are 503s (Whereby
    /// retries them); a predicate that failed or a handler that panicked is a
    /// 500, which Whereby retries as well, and every problem with the request
    /// itself (a body too slow included) is a 4xx that Whereby will not retry.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Request(request) => match request {
                ExtractError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ExtractError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ExtractError::BodyUnreadable(_) | ExtractError::Parse(_) => StatusCode::BAD_REQUEST,
                ExtractError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
                ExtractError::Signature(_) => StatusCode::UNAUTHORIZED,
            },
            Rejection::Evaluate(EvaluateError::TimedOut { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Evaluate(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Host(_) => StatusCode::BAD_REQUEST,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::NotFound { .. } => StatusCode::NOT_FOUND,
            Rejection::NotReceiving => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Deadline { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name for the failure.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Request(request) => match request {
                ExtractError::UnsupportedMediaType => "unsupported_media_type",
                ExtractError::PayloadTooLarge { .. } => "payload_too_large",
                ExtractError::BodyUnreadable(_) => "body_unreadable",
                ExtractError::BodyTimeout { .. } => "body_timeout",
                ExtractError::Signature(SignatureError::Missing) => "signature_missing",
                ExtractError::Signature(SignatureError::Malformed(_)) => "signature_malformed",
                ExtractError::Signature(SignatureError::Stale { .. }) => "signature_stale",
                ExtractError::Signature(SignatureError::NoMatch) => "signature_mismatch",
                // A kind of signature failure added to whereby-webhook later.
                ExtractError::Signature(_) => "signature_invalid",
                ExtractError::Parse(ParseFailure::RoomUrl(_)) => "invalid_room",
                ExtractError::Parse(ParseFailure::Body(_)) => "invalid_webhook",
            },
            Rejection::Evaluate(EvaluateError::TimedOut { .. }) => "predicate_timeout",
            Rejection::Evaluate(_) => "predicate_failed",
            Rejection::Host(HostError::Missing) => "host_missing",
            Rejection::Host(_) => "host_invalid",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::NotFound { .. } => "not_found",
            Rejection::NotReceiving => "not_receiving",
            Rejection::Store(_) => "store_unavailable",
            Rejection::Deadline { .. } => "deadline",
            Rejection::Panicked { .. } => "internal_error",
        }
    }

    /// What the client is told. A predicate's own error stays in the log: it is
    /// the operator's business, not the sender's.
    /// The field the answer names, when a payload's field is at fault.
    pub(crate) fn field(&self) -> Option<&str> {
        match self {
            Rejection::Request(ExtractError::Parse(failure)) => failure.field(),
            _ => None,
        }
    }

    pub(crate) fn client_message(&self) -> String {
        match self {
            Rejection::Evaluate(EvaluateError::Failed { event_type, .. })
            | Rejection::Evaluate(EvaluateError::Panicked { event_type, .. }) => {
                format!("the predicate for {event_type} failed; see the server log")
            }
            Rejection::Panicked { .. } => {
                "the server failed while handling the webhook; see the server log".to_owned()
            }
            // Someone testing by hand sends unsigned requests: say how to sign.
            Rejection::Request(ExtractError::Signature(SignatureError::Missing)) => format!(
                "{self}: this server checks signatures; sign the body with the webhook's \
                 secret (`whereby-trigger send` signs with --secret or WHEREBY_WEBHOOK_SECRET)"
            ),
            // Payloads from before 2025 have no subdomain: say how to give one.
            Rejection::Request(ExtractError::Parse(ParseFailure::Body(
                whereby_webhook::ParseError::NoSubdomain,
            ))) => {
                format!(
                    "{self} (set `[server] subdomain` or `serve --subdomain` for webhooks \
                     that carry none)"
                )
            }
            other => other.to_string(),
        }
    }
}

/// Why a request's `Host` header is refused (RFC 9112 §3.2: a server must
/// answer 400 to such a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// An HTTP/1.1 request without a `Host` header (HTTP/1.0 may go without).
    #[error("an HTTP/1.1 request must have a Host header")]
    Missing,
    /// More than one `Host` header.
    #[error("the request has more than one Host header")]
    Repeated,
    /// A `Host` that is not `host[:port]`.
    #[error("the Host header is not a host and an optional port")]
    Invalid,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.log(None);
        self.respond()
    }
}

impl Rejection {
    /// Logs the refusal: at error when Whereby will retry (a 5xx), else at
    /// warn. `latency_ms` is known to the webhook handler only.
    pub(crate) fn log(&self, latency_ms: Option<f64>) {
        let code = self.code();
        if self.status().is_server_error() {
            tracing::error!(code, latency_ms, error = %self, "webhook not evaluated");
        } else {
            tracing::warn!(code, latency_ms, error = %self, "webhook refused");
        }
    }

    /// The response, without logging it (see [`Rejection::log`]).
    pub(crate) fn respond(self) -> Response {
        let status = self.status();
        let message = self.client_message();
        let field = self.field();
        let body = serde_json::to_vec(&ErrorBody {
            error: &message,
            code: self.code(),
            field,
        })
        .unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec());
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        // Answered before the body was read: the connection cannot carry another
        // request, so say it will close rather than let the client find out.
        if matches!(
            self,
            Rejection::Request(
                ExtractError::UnsupportedMediaType | ExtractError::PayloadTooLarge { .. }
            ) | Rejection::Host(_)
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, Rejection::MethodNotAllowed) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        }
        response
    }
}
