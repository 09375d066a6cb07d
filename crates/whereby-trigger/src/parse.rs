//! Parse: a verified body becomes a webhook, and an evaluated one gets its room URL.

use bytes::Bytes;
use whereby_webhook::{BaseDomain, ParseError, RoomUrlError, WebhookEvent};

use crate::verify::VerifiedBody;

/// A verified, parsed delivery.
#[derive(Debug, Clone)]
pub struct ParsedWebhook {
    /// The typed webhook.
    pub event: WebhookEvent,
    /// The room URL, for the evaluated types.
    pub room_url: Option<String>,
    /// The body exactly as received.
    pub raw: Bytes,
}

impl ParsedWebhook {
    /// The body as received, on one line (line breaks between tokens dropped),
    /// newline included: the `--record` format `replay` reads.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.raw.len() + 1);
        crate::dispatch::push_single_line(&mut line, &self.raw);
        line.push(b'\n');
        line
    }
}

/// Why a verified body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

/// Parses a verified body. The room URL is built here, before any rule runs, so a
/// payload that could send an assistant elsewhere is refused with a 400.
///
/// # Errors
/// A [`ParseFailure`] naming the field at fault.
pub fn parse(body: VerifiedBody, base_domain: &BaseDomain) -> Result<ParsedWebhook, ParseFailure> {
    let raw = body.bytes().clone();
    let event = whereby_webhook::parse(&raw)?;
    let room_url = match event.in_room() {
        Some(room) => Some(room.room_url(base_domain)?),
        None => None,
    };
    Ok(ParsedWebhook {
        event,
        room_url,
        raw,
    })
}
