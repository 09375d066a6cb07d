//! Parse: a verified body becomes a webhook, and an evaluated one gets its room URL.
//!
//! Only what the room URL needs is required (`data.roomName`, and
//! `data.subdomain` or the configured default); see
//! [`whereby_webhook::parse_with`] for how every other field is read.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use whereby_webhook::{
    BaseDomain, FieldNote, JsonType, ParseError, ParseOptions, RoomUrlError, WebhookEvent,
};

use crate::verify::VerifiedBody;

/// A verified, parsed delivery.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParsedWebhook {
    /// The typed webhook.
    pub event: WebhookEvent,
    /// The room URL, for the evaluated types.
    pub room_url: Option<String>,
    /// The body exactly as received.
    pub raw: Bytes,
    /// When the webhook happened, for ordering it among its room's events (ms
    /// since the epoch): its `createdAt`, unless that is further ahead of the
    /// receiving clock than the signature tolerance, when it is the time it
    /// was received (see [`ParsedWebhook::order_by_receipt`]). `None` without
    /// a room or a readable `createdAt`.
    pub ordered_at: Option<i64>,
}

impl ParsedWebhook {
    /// Orders the webhook at `received_ms` (when it was received, ms since
    /// the epoch) rather than at its `createdAt` when that is more than
    /// `tolerance` ahead, and logs it: a `createdAt` of year 9999 would
    /// otherwise be newer than every event to come and pin its room's state.
    /// A clock a little behind the sender's is the tolerance's business, as
    /// for signatures.
    pub fn order_by_receipt(&mut self, received_ms: i64, tolerance: std::time::Duration) {
        let Some(at) = self.ordered_at else { return };
        let limit = received_ms.saturating_add(crate::util::millis(tolerance));
        if at > limit {
            tracing::warn!(
                id = self.event.id(),
                created_at = self.event.created_at().unwrap_or_default(),
                tolerance_s = tolerance.as_secs(),
                "createdAt is further ahead of this server's clock than the tolerance; the \
                 webhook is ordered by the time it was received"
            );
            self.ordered_at = Some(received_ms);
        }
    }

    /// The body as received, on one line (line breaks between tokens dropped;
    /// U+2028, U+2029 and U+0085 escaped, which some splitters cut at),
    /// newline included: the `--record` format `replay` reads.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.raw.len() + 1);
        self.write_json_line(&mut line);
        line
    }

    /// [`ParsedWebhook::to_json_line`] appended to `out`, which a caller can
    /// reuse.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        crate::util::push_single_line(out, &self.raw);
        out.push(b'\n');
    }
}

/// Why a verified body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseFailure {
    /// The body is not a readable webhook.
    #[error(transparent)]
    Body(#[from] ParseError),
    /// The room fields would give a URL outside the base domain.
    #[error(transparent)]
    RoomUrl(#[from] RoomUrlError),
}

impl ParseFailure {
    /// The JSON path of the field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseFailure::Body(e) => e.field(),
            ParseFailure::RoomUrl(e) => Some(e.field()),
        }
    }
}

/// Turns verified bodies into webhooks with their room URLs: the base domain
/// and the default subdomain to build them with, and a memory of the
/// overlooked fields already warned about.
#[derive(Debug)]
pub struct Parser {
    base_domain: BaseDomain,
    options: ParseOptions,
    warned: Mutex<HashSet<(String, JsonType)>>,
}

/// How many distinct (field, type) pairs are warned about: payloads choose the
/// field names (`data.numClientsByRoleName.<role>`), so the memory is bounded.
const MAX_WARNED: usize = 256;

impl Parser {
    /// A parser that builds room URLs on `base_domain`, reading payloads with
    /// `options` (the default subdomain).
    pub fn new(base_domain: BaseDomain, options: ParseOptions) -> Self {
        Parser {
            base_domain,
            options,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The options payloads are read with.
    pub fn options(&self) -> &ParseOptions {
        &self.options
    }

    /// The domain room URLs are built on.
    pub fn base_domain(&self) -> &BaseDomain {
        &self.base_domain
    }

    /// Parses a verified body. The room URL is built here, before any rule runs,
    /// so a payload that could send an assistant elsewhere is refused with a 400.
    /// A field of an unexpected JSON type never fails the body: it is logged as
    /// a warning, once per field and type.
    ///
    /// # Errors
    /// A [`ParseFailure`] naming the field at fault.
    pub fn parse(&self, body: VerifiedBody) -> Result<ParsedWebhook, ParseFailure> {
        let raw = body.bytes().clone();
        let parsed = whereby_webhook::parse_with(&raw, &self.options)?;
        if !parsed.notes.is_empty() {
            self.warn(&parsed.notes, parsed.event.id());
        }
        let event = parsed.event;
        let room_url = match event.in_room() {
            Some(room) if event.event_type().is_some() => Some(room.room_url(&self.base_domain)?),
            // Another type is never refused for its shape: a room it names
            // that makes no safe URL is no room.
            Some(room) => room
                .room_url(&self.base_domain)
                .inspect_err(|err| {
                    tracing::warn!(id = event.id(), r#type = event.type_name(), %err, "the webhook's room makes no URL; it is treated as having none");
                })
                .ok(),
            None => None,
        };
        // Only a room orders its events.
        let ordered_at = event.in_room().and_then(|_| event.created_at_millis());
        Ok(ParsedWebhook {
            event,
            room_url,
            raw,
            ordered_at,
        })
    }

    fn warn(&self, notes: &[FieldNote], id: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for note in notes {
            let key = (note.field.clone(), note.found);
            if warned.contains(&key) {
                continue;
            }
            if warned.len() < MAX_WARNED {
                warned.insert(key);
                tracing::warn!(id, field = %note.field, found = %note.found, "{note}");
            } else {
                tracing::debug!(id, field = %note.field, found = %note.found, "{note}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use whereby_webhook::time::parse_rfc3339_millis;

    fn parsed(event_type: &str, created_at: &str) -> ParsedWebhook {
        let mut v: serde_json::Value =
            serde_json::from_str(whereby_webhook::sample::sample(event_type).unwrap()).unwrap();
        v["createdAt"] = created_at.into();
        let verified = crate::verify::SignaturePolicy::Unsigned
            .verify(None, Bytes::from(v.to_string()), 0)
            .unwrap();
        Parser::new(BaseDomain::default(), ParseOptions::new())
            .parse(verified)
            .unwrap()
    }

    /// Beyond the tolerance ahead of the receiving clock, `createdAt` is not
    /// believed for ordering; within it, and in the past, it is.
    #[test]
    fn created_at_orders_unless_too_far_ahead() {
        let received = parse_rfc3339_millis("2026-12-06T12:00:00Z").unwrap();
        let tolerance = Duration::from_secs(300);
        let ordered = |created_at: &str| {
            let mut webhook = parsed("room.client.joined", created_at);
            webhook.order_by_receipt(received, tolerance);
            webhook.ordered_at
        };
        for kept in [
            "2026-11-02T09:00:00Z",
            "2026-12-06T12:00:00Z",
            "2026-12-06T12:05:00Z",
        ] {
            assert_eq!(ordered(kept), parse_rfc3339_millis(kept), "{kept}");
        }
        for ahead in ["2026-12-06T12:05:00.001Z", "9999-12-31T23:59:59.999Z"] {
            assert_eq!(ordered(ahead), Some(received), "{ahead}");
        }
        assert_eq!(ordered("last tuesday"), None);
        // Without a room there is nothing to order.
        let mut recording = parsed("recording.finished", "9999-12-31T23:59:59.999Z");
        recording.order_by_receipt(received, tolerance);
        assert_eq!(recording.ordered_at, None);
    }
}
