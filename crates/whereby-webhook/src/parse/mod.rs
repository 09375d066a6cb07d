//! Parsing a webhook body into a [`WebhookEvent`], with errors that name the field.
//!
//! Whereby's payloads have changed shape over the years (no `subdomain` before
//! 2025, no `participantId` in today's documented example, `meetingId` as a
//! number, `displayName` as `null` …), and a 4xx answer loses the event for
//! good. So only what the room URL needs is required: `id`, `type`,
//! `data.roomName`, and `data.subdomain` unless a default is configured. Every
//! other field is read if it has the documented type; an id that comes as a
//! number is read as its decimal text, and anything else unexpected becomes
//! `None`, with a [`FieldNote`] saying what was overlooked.
//!
//! Why one file: [`parse_with`] reads a body in one pass, from the checks that
//! run before serde (UTF-8, depth) to the typed webhook, and the public types
//! it returns (errors, options, notes) are documented beside it, a quarter of
//! the lines; the lenient reader of `data` is already `fields.rs`, the tests
//! `tests.rs`.

mod fields;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::RoleName;
use crate::event::{
    AssistantRequested, ClientData, EventType, OtherRoom, OtherWebhook, RoomClientJoined,
    RoomClientLeft, RoomData, RoomSessionEnded, RoomSessionStarted, WebhookEvent,
};
use crate::room_url::{RoomUrlError, check_room_name, check_subdomain};
use fields::*;

/// Why a body is not a readable webhook.
///
/// Every variant that concerns one field names it with its JSON path
/// (`id`, `data.roomName`, …), so an answer can tell the sender what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not UTF-8, which JSON text must be (RFC 8259 §8.1).
    #[error("body is not valid UTF-8 (from byte {at}); JSON text must be UTF-8")]
    NotUtf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        at: usize,
    },
    /// The body nests arrays and objects deeper than the limit.
    #[error("body nests arrays and objects deeper than {limit} levels")]
    TooDeep {
        /// The deepest nesting accepted ([`MAX_DEPTH`]).
        limit: usize,
    },
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON, but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("`{field}` is missing")]
    Missing {
        /// JSON path of the field, e.g. `data.roomName`.
        field: String,
    },
    /// The payload has no `data.subdomain` and the parser has no default one,
    /// so no room URL can be built.
    #[error(
        "`data.subdomain` is missing and no default subdomain is configured to build the \
         room URL with"
    )]
    NoSubdomain,
    /// A required field is present but unusable (wrong type, empty …).
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ParseError {
    /// The JSON path of the offending field, when one field is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::Missing { field } | ParseError::Invalid { field, .. } => Some(field),
            ParseError::NoSubdomain => Some("data.subdomain"),
            ParseError::NotUtf8 { .. }
            | ParseError::TooDeep { .. }
            | ParseError::NotJson(_)
            | ParseError::NotAnObject => None,
        }
    }
}

/// The deepest nesting of arrays and objects a body may have; the top-level
/// object is level 1. Whereby's payloads reach 3 (`data.numClientsByRoleName`).
///
/// serde_json skips what the parser does not read (an unknown field) without a
/// depth limit, and the body goes on as sent to every consumer (`stdout` lines,
/// `forward` bodies), whose own parsers (Python's `json`, jq) give up on
/// deep nesting; so the whole body is bounded.
pub const MAX_DEPTH: usize = 64;

/// How [`parse_with`] reads a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    default_subdomain: Option<String>,
}

impl ParseOptions {
    /// The defaults: no default subdomain, so a payload must carry one.
    pub fn new() -> Self {
        ParseOptions::default()
    }

    /// The subdomain of payloads that have none (Whereby's before 2025), as the
    /// first Trigger of Whereby's SDK took it as an option. A payload's own
    /// `data.subdomain` always wins. Kept in lower case, as every subdomain.
    ///
    /// # Errors
    /// [`RoomUrlError::Subdomain`] when `subdomain` is not one DNS label.
    ///
    /// ```
    /// use whereby_webhook::{parse_with, ParseOptions, WebhookEvent};
    ///
    /// let options = ParseOptions::new().with_default_subdomain("acme")?;
    /// let body = br#"{"id":"e1","type":"room.session.started","data":{"roomName":"/standup"}}"#;
    /// let WebhookEvent::RoomSessionStarted(started) = parse_with(body, &options)?.event else {
    ///     unreachable!()
    /// };
    /// assert_eq!(started.data.subdomain, "acme");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_default_subdomain(mut self, subdomain: &str) -> Result<Self, RoomUrlError> {
        check_subdomain(subdomain)?;
        self.default_subdomain = Some(subdomain.to_ascii_lowercase());
        Ok(self)
    }

    /// The default subdomain, if one is set.
    pub fn default_subdomain(&self) -> Option<&str> {
        self.default_subdomain.as_deref()
    }
}

/// A parsed webhook, and the fields the parser had to overlook to read it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Parsed {
    /// The webhook.
    pub event: WebhookEvent,
    /// Fields of an unexpected JSON type, in the order they were read; empty for
    /// a payload of the documented shape.
    pub notes: Vec<FieldNote>,
}

/// A field that came with a JSON type other than the documented one, and what
/// the parser made of it. The raw body keeps the value as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FieldNote {
    /// JSON path of the field, e.g. `data.meetingId`.
    pub field: String,
    /// The JSON type it came as.
    pub found: JsonType,
    /// What the parser did with it.
    pub treatment: Treatment,
}

impl fmt::Display for FieldNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, found) = (&self.field, self.found);
        match self.treatment {
            Treatment::AsText => write!(f, "`{field}` came as a {found}; read as its decimal text"),
            Treatment::Ignored => write!(
                f,
                "`{field}` came as a {found}, not the documented type; left out of the typed \
                 webhook (rules and actions still see it as sent)"
            ),
            Treatment::Unreadable => write!(
                f,
                "`{field}` is not an RFC 3339 time; kept as sent, but it cannot order events"
            ),
            Treatment::NoRoom => write!(
                f,
                "`{field}` makes no room URL; the webhook is read as having no room"
            ),
        }
    }
}

/// What the parser made of a field of an unexpected type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Treatment {
    /// An id that came as a number, read as its decimal text.
    AsText,
    /// Left out: the typed field is `None`.
    Ignored,
    /// Kept as sent, but its content could not be read (a `createdAt` that is
    /// not an RFC 3339 time).
    Unreadable,
    /// The room of a type that is not evaluated, which makes no room URL (see
    /// [`room_url`](crate::room_url())): the webhook is read as having no room
    /// rather than refused.
    NoRoom,
}

/// The type of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JsonType {
    /// `null`
    Null,
    /// `true` or `false`
    Bool,
    /// a number
    Number,
    /// a string
    String,
    /// an array
    Array,
    /// an object
    Object,
}

impl JsonType {
    /// The type's name, as in "came as a number".
    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Bool => "boolean",
            JsonType::Number => "number",
            JsonType::String => "string",
            JsonType::Array => "array",
            JsonType::Object => "object",
        }
    }

    /// The type of a well-formed JSON value, read off its first byte.
    fn of(raw: &RawValue) -> JsonType {
        match raw.get().as_bytes().first() {
            Some(b'n') => JsonType::Null,
            Some(b't' | b'f') => JsonType::Bool,
            Some(b'"') => JsonType::String,
            Some(b'[') => JsonType::Array,
            Some(b'{') => JsonType::Object,
            _ => JsonType::Number,
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope with every field left raw, so one pass finds the fields and the
/// typed pass touches only `data`.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "createdAt")]
    created_at: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// `data` with every documented field left raw (a `null` reads as absent), so
/// each can be read on its own terms.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawData<'a> {
    #[serde(borrow, default)]
    meeting_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room_session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subdomain: Option<&'a RawValue>,
    #[serde(borrow, default)]
    display_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    participant_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    external_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    role_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    num_clients: Option<&'a RawValue>,
    #[serde(borrow, default)]
    num_clients_by_role_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    is_dial_in: Option<&'a RawValue>,
}

/// Parses a webhook body as Whereby sends it, with the default
/// [`ParseOptions`] (a payload must carry its `data.subdomain`) and without
/// the notes; see [`parse_with`].
///
/// ```
/// use whereby_webhook::{parse, WebhookEvent};
///
/// let body = br#"{"id":"e1","apiVersion":"1.0","createdAt":"2026-11-02T09:00:41Z",
///   "type":"room.session.started",
///   "data":{"roomName":"/standup","roomSessionId":null,"subdomain":"acme"}}"#;
/// let WebhookEvent::RoomSessionStarted(started) = parse(body)? else { unreachable!() };
/// assert_eq!(started.data.subdomain, "acme");
///
/// let err = parse(br#"{"id":"e2","type":"room.session.started","apiVersion":"1.0",
///   "createdAt":"2026-11-02T09:00:41Z","data":{"subdomain":"acme"}}"#).unwrap_err();
/// assert_eq!(err.field(), Some("data.roomName"));
/// # Ok::<(), whereby_webhook::ParseError>(())
/// ```
///
/// # Errors
/// A [`ParseError`] naming the field at fault.
pub fn parse(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    parse_with(body, &ParseOptions::default()).map(|parsed| parsed.event)
}

/// Parses a webhook body as Whereby sends it.
///
/// Unknown fields are tolerated everywhere; an unknown `type` becomes
/// [`WebhookEvent::Other`] with its `data` kept raw. An evaluated type needs an
/// `id` (a string, or a number read as its decimal text), `data.roomName` (a
/// string) and `data.subdomain` (a string), or a default subdomain in
/// `options` when the payload has none. Everything else is optional: a field
/// of another JSON type than documented is left out of the typed webhook (an
/// id that is a number is read as its decimal text) and reported in
/// [`Parsed::notes`].
///
/// ```
/// use whereby_webhook::{parse_with, ParseOptions, Treatment, WebhookEvent};
///
/// let body = br#"{"id":"e1","type":"room.client.joined","createdAt":"2021-01-21T16:29:59Z",
///   "data":{"roomName":"/standup","subdomain":"acme","meetingId":134,"displayName":null,
///           "numClients":"two"}}"#;
/// let parsed = parse_with(body, &ParseOptions::new())?;
/// let WebhookEvent::RoomClientJoined(joined) = &parsed.event else { unreachable!() };
/// assert_eq!(joined.data.meeting_id.as_deref(), Some("134"));
/// assert_eq!(joined.data.display_name, None);
/// assert_eq!(joined.data.num_clients, None);
/// let notes: Vec<_> = parsed.notes.iter().map(|n| (n.field.as_str(), n.treatment)).collect();
/// assert_eq!(notes, [("data.meetingId", Treatment::AsText), ("data.numClients", Treatment::Ignored)]);
/// # Ok::<(), whereby_webhook::ParseError>(())
/// ```
///
/// # Errors
/// A [`ParseError`] naming the field at fault: the body is not a JSON object,
/// or `id`, `type`, `data.roomName` or `data.subdomain` is missing or not
/// usable.
pub fn parse_with(body: &[u8], options: &ParseOptions) -> Result<Parsed, ParseError> {
    check_text(body)?;
    // serde would read a JSON array positionally into the envelope; only an object
    // is a webhook.
    let starts_as_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_as_object {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ParseError::NotAnObject,
                Err(e) => ParseError::NotJson(strip_position(&e.to_string())),
            },
        );
    }
    let envelope: RawEnvelope<'_> = serde_json::from_slice(body).map_err(|e| top_level(body, e))?;
    let mut fields = Fields { notes: Vec::new() };

    let id = fields
        .id(envelope.id, "id")
        .ok_or_else(|| required_problem(envelope.id, "id", "a string or a whole number"))?;
    if id.is_empty() {
        return Err(invalid("id", "must not be empty"));
    }
    let type_raw = envelope.event_type.ok_or_else(|| missing("type"))?;
    // Borrow the type name when it has no escapes (always, in practice).
    let type_name: Cow<'_, str> = match serde_json::from_str::<&str>(type_raw.get()) {
        Ok(name) => Cow::Borrowed(name),
        Err(_) => Cow::Owned(
            serde_json::from_str(type_raw.get())
                .map_err(|_| invalid("type", "must be a string"))?,
        ),
    };

    let Some(event_type) = EventType::from_name(&type_name) else {
        return Ok(Parsed {
            event: WebhookEvent::Other(OtherWebhook {
                id,
                event_type: type_name.into_owned(),
                api_version: lenient_string(envelope.api_version),
                created_at: lenient_string(envelope.created_at),
                room: envelope
                    .data
                    .and_then(|data| other_room(data, options, &mut fields)),
                data: envelope.data.map(RawValue::to_owned),
            }),
            notes: fields.notes,
        });
    };

    let api_version = fields.string(envelope.api_version, "apiVersion");
    let created_at = fields.string(envelope.created_at, "createdAt");
    if let Some(text) = &created_at
        && crate::time::parse_rfc3339_millis(text).is_none()
    {
        fields.note("createdAt", JsonType::String, Treatment::Unreadable);
    }
    let data = match envelope.data.map(|data| (data, JsonType::of(data))) {
        None | Some((_, JsonType::Null)) => return Err(missing("data")),
        Some((data, JsonType::Object)) => data,
        // serde would read an array positionally into `RawData`.
        Some(_) => return Err(invalid("data", "must be an object")),
    };
    let raw: RawData<'_> = serde_json::from_str(data.get()).map_err(data_problem)?;

    macro_rules! typed {
        ($variant:ident, $read:ident) => {
            WebhookEvent::$variant($variant {
                id,
                api_version,
                created_at,
                data: fields.$read(&raw, options)?,
            })
        };
    }
    let event = match event_type {
        EventType::RoomClientJoined => typed!(RoomClientJoined, client_data),
        EventType::RoomClientLeft => typed!(RoomClientLeft, client_data),
        EventType::RoomSessionStarted => typed!(RoomSessionStarted, room_data),
        EventType::RoomSessionEnded => typed!(RoomSessionEnded, room_data),
        EventType::AssistantRequested => typed!(AssistantRequested, room_data),
    };
    Ok(Parsed {
        event,
        notes: fields.notes,
    })
}

fn missing(field: &str) -> ParseError {
    ParseError::Missing {
        field: field.to_owned(),
    }
}

fn invalid(field: &str, reason: &str) -> ParseError {
    ParseError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Why a required field could not be read: absent (or `null`), or not `what`.
fn required_problem(raw: Option<&RawValue>, field: &str, what: &str) -> ParseError {
    match raw {
        None => missing(field),
        Some(_) => invalid(field, &format!("must be {what}")),
    }
}

/// Refuses what serde_json would let through unseen in the fields it skips
/// (an unknown field, `data` of another type): bytes that are not UTF-8 and
/// nesting deeper than [`MAX_DEPTH`]. The body reaches consumers as sent, so
/// all of it must be JSON they can read, not just the fields read here.
///
/// On the hot path: single passes over the bytes, none allocating (the standard
/// library's UTF-8 check, a count of opening brackets, and only when there are
/// more than [`MAX_DEPTH`] of them a scan that skips string content), cheap
/// next to serde's pass over the same bytes.
fn check_text(body: &[u8]) -> Result<(), ParseError> {
    if let Err(err) = std::str::from_utf8(body) {
        return Err(ParseError::NotUtf8 {
            at: err.valid_up_to(),
        });
    }
    if deeper_than(body, MAX_DEPTH) {
        return Err(ParseError::TooDeep { limit: MAX_DEPTH });
    }
    Ok(())
}

/// Whether `json` opens more than `limit` arrays or objects at once. Brackets
/// inside strings do not count; the text need not be valid JSON (serde tells
/// what else is wrong), so a stray closing bracket just counts down to zero.
///
/// A body that opens no more than `limit` brackets in all cannot be deeper,
/// and a webhook opens a handful: counting them (`memchr`, vectorised) is a
/// tenth of the exact scan, which only a body with more brackets pays. That
/// scan skips string content with `memchr` to the next quote or backslash.
fn deeper_than(json: &[u8], limit: usize) -> bool {
    if memchr::memchr2_iter(b'[', b'{', json).count() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => {
                i += 1;
                // To the closing quote, over escaped characters.
                loop {
                    let rest = json.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if rest[at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at + 1;
                            break;
                        }
                        // An unterminated string: serde says so.
                        None => return false,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Explains why an object was refused; only runs on the error path.
fn top_level(body: &[u8], err: serde_json::Error) -> ParseError {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        // A well-formed object that the envelope still refused: a repeated key.
        ParseError::Invalid {
            field: duplicated_field(&err).unwrap_or_else(|| "body".to_owned()),
            reason: strip_position(&err.to_string()),
        }
    } else {
        ParseError::NotJson(strip_position(&err.to_string()))
    }
}

/// Why `data` (well-formed JSON: the envelope read it) was refused: it is not
/// an object, or it repeats a documented field.
fn data_problem(err: serde_json::Error) -> ParseError {
    match duplicated_field(&err) {
        Some(name) => ParseError::Invalid {
            field: format!("data.{name}"),
            reason: strip_position(&err.to_string()),
        },
        None => invalid("data", "must be an object"),
    }
}

fn duplicated_field(err: &serde_json::Error) -> Option<String> {
    let msg = err.to_string();
    let rest = msg.strip_prefix("duplicate field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// An optional string of an ignored type: anything but a string counts as absent,
/// because a type we do not evaluate must never be refused for its shape.
fn lenient_string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// The room of a type the Trigger does not evaluate, when its `data` names
/// one (`roomName`, and `subdomain` or the default); `None`, never an error,
/// otherwise: such a type must never be refused for its shape. A room that
/// makes no room URL is no room (noted), so that every room an event is in has
/// exactly one key and one URL.
fn other_room(data: &RawValue, options: &ParseOptions, fields: &mut Fields) -> Option<OtherRoom> {
    let raw: RawData<'_> = serde_json::from_str(data.get()).ok()?;
    let room_name = lenient_string(raw.room_name).filter(|name| !name.is_empty())?;
    let mut subdomain = lenient_string(raw.subdomain)
        .filter(|s| !s.is_empty())
        .or_else(|| options.default_subdomain().map(str::to_owned))?;
    subdomain.make_ascii_lowercase();
    if let Err(err) = check_subdomain(&subdomain).and_then(|()| check_room_name(&room_name)) {
        fields.note(err.field(), JsonType::String, Treatment::NoRoom);
        return None;
    }
    Some(OtherRoom {
        subdomain,
        room_name,
        room_session_id: fields.id(raw.room_session_id, "data.roomSessionId"),
        meeting_id: fields.id(raw.meeting_id, "data.meetingId"),
    })
}

/// serde_json appends " at line L column C"; positions inside `data` would be
/// misleading to a sender who sees the whole body, so they are dropped.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
