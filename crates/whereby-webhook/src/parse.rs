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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::RoleName;
use crate::event::{
    AssistantRequested, ClientData, EventType, OtherWebhook, RoomClientJoined, RoomClientLeft,
    RoomData, RoomSessionEnded, RoomSessionStarted, WebhookEvent,
};
use crate::room_url::{RoomUrlError, check_subdomain};

/// Why a body is not a readable webhook.
///
/// Every variant that concerns one field names it with its JSON path
/// (`id`, `data.roomName`, …), so an answer can tell the sender what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
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
            ParseError::NotJson(_) | ParseError::NotAnObject => None,
        }
    }
}

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
    /// `data.subdomain` always wins.
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
        self.default_subdomain = Some(subdomain.to_owned());
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

/// Reads fields leniently, noting each one that had to be overlooked.
struct Fields {
    notes: Vec<FieldNote>,
}

impl Fields {
    fn note(&mut self, field: impl Into<String>, found: JsonType, treatment: Treatment) {
        self.notes.push(FieldNote {
            field: field.into(),
            found,
            treatment,
        });
    }

    /// Reads `raw` as `T` when it has `expected` JSON type; otherwise notes it
    /// and gives `None`. A `null` or an absent field is `None`, silently.
    fn typed<T: DeserializeOwned>(
        &mut self,
        raw: Option<&RawValue>,
        field: &str,
        expected: JsonType,
    ) -> Option<T> {
        let raw = raw?;
        let found = JsonType::of(raw);
        if found == JsonType::Null {
            return None;
        }
        if found == expected
            && let Ok(value) = serde_json::from_str(raw.get())
        {
            return Some(value);
        }
        self.note(field, found, Treatment::Ignored);
        None
    }

    fn string(&mut self, raw: Option<&RawValue>, field: &str) -> Option<String> {
        self.typed(raw, field, JsonType::String)
    }

    /// An identifier: a string, or an integer read as its decimal text.
    fn id(&mut self, raw: Option<&RawValue>, field: &str) -> Option<String> {
        if let Some(raw) = raw
            && JsonType::of(raw) == JsonType::Number
        {
            let text = raw.get();
            let digits = text.strip_prefix('-').unwrap_or(text);
            // The text as sent, so a large id keeps every digit; a fraction or
            // an exponent is not an id.
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                self.note(field, JsonType::Number, Treatment::AsText);
                return Some(text.to_owned());
            }
        }
        self.string(raw, field)
    }

    /// `roomName` and `subdomain`, which the room URL needs, and the other
    /// fields every in-room event shares.
    fn room_data(
        &mut self,
        raw: &RawData<'_>,
        options: &ParseOptions,
    ) -> Result<RoomData, ParseError> {
        let room_name = raw
            .room_name
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .ok_or_else(|| required_problem(raw.room_name, "data.roomName", "a string"))?;
        let subdomain = match raw.subdomain {
            Some(value) => serde_json::from_str::<String>(value.get())
                .map_err(|_| invalid("data.subdomain", "must be a string"))?,
            None => options
                .default_subdomain
                .clone()
                .ok_or(ParseError::NoSubdomain)?,
        };
        Ok(RoomData {
            meeting_id: self.id(raw.meeting_id, "data.meetingId"),
            room_name,
            room_session_id: self.id(raw.room_session_id, "data.roomSessionId"),
            subdomain,
        })
    }

    fn client_data(
        &mut self,
        raw: &RawData<'_>,
        options: &ParseOptions,
    ) -> Result<ClientData, ParseError> {
        let room = self.room_data(raw, options)?;
        Ok(ClientData {
            meeting_id: room.meeting_id,
            room_name: room.room_name,
            room_session_id: room.room_session_id,
            subdomain: room.subdomain,
            display_name: self.string(raw.display_name, "data.displayName"),
            participant_id: self.id(raw.participant_id, "data.participantId"),
            metadata: self.string(raw.metadata, "data.metadata"),
            external_id: self.id(raw.external_id, "data.externalId"),
            role_name: self
                .string(raw.role_name, "data.roleName")
                .map(|name| RoleName::from(name.as_str())),
            num_clients: self.typed(raw.num_clients, "data.numClients", JsonType::Number),
            num_clients_by_role_name: self.counts(raw.num_clients_by_role_name),
            is_dial_in: self.typed(raw.is_dial_in, "data.isDialIn", JsonType::Bool),
        })
    }

    /// `numClientsByRoleName`: all or nothing, since a map missing a role
    /// would misstate who is in the room.
    fn counts(&mut self, raw: Option<&RawValue>) -> Option<BTreeMap<RoleName, u32>> {
        const FIELD: &str = "data.numClientsByRoleName";
        let raw = raw?;
        let entries = match JsonType::of(raw) {
            JsonType::Null => return None,
            JsonType::Object => {
                serde_json::from_str::<BTreeMap<RoleName, &RawValue>>(raw.get()).ok()
            }
            _ => None,
        };
        let Some(entries) = entries else {
            self.note(FIELD, JsonType::of(raw), Treatment::Ignored);
            return None;
        };
        let mut counts = BTreeMap::new();
        for (role, value) in entries {
            match serde_json::from_str::<u32>(value.get()) {
                Ok(n) => {
                    counts.insert(role, n);
                }
                Err(_) => {
                    self.note(
                        format!("{FIELD}.{}", role.as_str()),
                        JsonType::of(value),
                        Treatment::Ignored,
                    );
                    return None;
                }
            }
        }
        Some(counts)
    }
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

/// serde_json appends " at line L column C"; positions inside `data` would be
/// misleading to a sender who sees the whole body, so they are dropped.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use serde_json::{Value, json};

    #[test]
    fn every_fixture_parses_to_its_type() {
        for (type_name, body) in sample::SAMPLES {
            let parsed = parse_with(body.as_bytes(), &ParseOptions::new())
                .unwrap_or_else(|e| panic!("{type_name}: {e}"));
            assert_eq!(parsed.event.type_name(), *type_name);
            assert_eq!(
                parsed.event.event_type().is_some(),
                EventType::from_name(type_name).is_some()
            );
            assert_eq!(parsed.notes, [], "{type_name}");
        }
    }

    #[test]
    fn joined_fixture_has_every_field() {
        let WebhookEvent::RoomClientJoined(joined) =
            parse(sample::sample("room.client.joined").unwrap().as_bytes()).unwrap()
        else {
            panic!("wrong variant");
        };
        let d = &joined.data;
        assert_eq!(joined.api_version.as_deref(), Some("1.0"));
        assert_eq!(
            joined.created_at.as_deref(),
            Some("2026-11-02T09:00:03.120Z")
        );
        assert_eq!(d.subdomain, "acme");
        assert_eq!(d.room_name, "/standup-3f9a2c");
        assert_eq!(d.meeting_id.as_deref(), Some("98213"));
        assert_eq!(d.role_name, Some(RoleName::Host));
        assert_eq!(d.display_name.as_deref(), Some("Ada Lovelace"));
        assert!(d.participant_id.is_some());
        assert_eq!(d.num_clients, Some(1));
        assert_eq!(
            d.num_clients_by_role_name,
            Some([(RoleName::Host, 1)].into())
        );
        assert_eq!(d.external_id.as_deref(), Some("user-42"));
        assert_eq!(d.metadata, None);
        assert_eq!(d.is_dial_in, Some(false));
    }

    #[test]
    fn other_types_keep_raw_data() {
        let WebhookEvent::Other(other) =
            parse(sample::sample("recording.finished").unwrap().as_bytes()).unwrap()
        else {
            panic!("wrong variant");
        };
        let data: Value = serde_json::from_str(other.data.as_ref().unwrap().get()).unwrap();
        assert_eq!(data["recordingId"], "rec_81c2");
    }

    #[test]
    fn unknown_type_and_fields_are_tolerated() {
        let event =
            parse(br#"{"id":"x","type":"room.future","data":[1,2],"apiVersion":2}"#).unwrap();
        assert_eq!(event.type_name(), "room.future");
        assert_eq!(event.created_at(), None);
        let event = parse(
            br#"{"id":"x","apiVersion":"1.0","createdAt":"2026-11-02T09:00:00Z","type":"room.session.ended",
            "extra":{"a":1},"data":{"roomName":"/r","roomSessionId":null,"subdomain":"a","new":true}}"#,
        )
        .unwrap();
        assert_eq!(event.in_room().unwrap().room_session_id(), None);
    }

    #[test]
    fn unknown_role_name_is_readable() {
        let body = sample::sample("room.client.joined")
            .unwrap()
            .replace("\"roleName\": \"host\"", "\"roleName\": \"moderator\"");
        let WebhookEvent::RoomClientJoined(joined) = parse(body.as_bytes()).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(
            joined.data.role_name,
            Some(RoleName::Other("moderator".into()))
        );
    }

    /// The documented shapes, each with what the typed webhook must say.
    #[test]
    fn every_documented_shape_parses() {
        let options = ParseOptions::new()
            .with_default_subdomain("fallback")
            .unwrap();
        for shape in sample::SHAPES {
            let parsed = parse_with(shape.body.as_bytes(), &options)
                .unwrap_or_else(|e| panic!("{}: {e}", shape.name));
            let raw: Value = serde_json::from_str(shape.body).unwrap();
            assert_eq!(parsed.event.id(), raw["id"].as_str().unwrap());
            assert_eq!(parsed.event.type_name(), shape.event_type, "{}", shape.name);
            if let Some(room) = parsed.event.in_room() {
                let expected = raw["data"]["subdomain"].as_str().unwrap_or("fallback");
                assert_eq!(room.subdomain(), expected, "{}", shape.name);
                assert_eq!(
                    Some(room.room_name()),
                    raw["data"]["roomName"].as_str(),
                    "{}",
                    shape.name
                );
            }
        }
        let by_name = |name: &str| {
            let shape = sample::SHAPES.iter().find(|s| s.name == name).unwrap();
            parse_with(shape.body.as_bytes(), &options).unwrap()
        };
        let parsed = by_name("joined-null-name-numeric-meeting");
        let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
            panic!("wrong variant")
        };
        assert_eq!(joined.data.display_name, None);
        assert_eq!(joined.data.meeting_id.as_deref(), Some("55104"));
        assert_eq!(
            parsed.notes,
            [FieldNote {
                field: "data.meetingId".into(),
                found: JsonType::Number,
                treatment: Treatment::AsText
            }]
        );
        let parsed = by_name("joined-2025-no-participant-id");
        let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
            panic!("wrong variant")
        };
        assert_eq!(joined.data.participant_id, None);
        assert_eq!(parsed.notes, []);
        let parsed = by_name("joined-no-role-counts");
        let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
            panic!("wrong variant")
        };
        assert_eq!(joined.data.num_clients_by_role_name, None);
        assert_eq!(joined.data.num_clients, Some(1));
        let parsed = by_name("joined-2021-no-subdomain");
        let WebhookEvent::RoomClientJoined(joined) = &parsed.event else {
            panic!("wrong variant")
        };
        assert_eq!(joined.data.role_name, Some(RoleName::Visitor));
    }

    #[test]
    fn a_payload_subdomain_wins_over_the_default() {
        let options = ParseOptions::new()
            .with_default_subdomain("fallback")
            .unwrap();
        let body = sample::sample("room.session.started").unwrap();
        let event = parse_with(body.as_bytes(), &options).unwrap().event;
        assert_eq!(event.in_room().unwrap().subdomain(), "acme");
        // `null` is no subdomain.
        let mut v: Value = serde_json::from_str(body).unwrap();
        v["data"]["subdomain"] = Value::Null;
        let event = parse_with(v.to_string().as_bytes(), &options)
            .unwrap()
            .event;
        assert_eq!(event.in_room().unwrap().subdomain(), "fallback");
        assert_eq!(
            parse(v.to_string().as_bytes()).unwrap_err(),
            ParseError::NoSubdomain
        );
    }

    #[test]
    fn a_default_subdomain_must_be_a_dns_label() {
        for bad in ["", "a.b", "evil.com/x", "-a", "xn--a", "a b"] {
            assert!(
                ParseOptions::new().with_default_subdomain(bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            ParseOptions::new()
                .with_default_subdomain("acme-2")
                .unwrap()
                .default_subdomain(),
            Some("acme-2")
        );
    }

    /// What a lenient read gives for one field of the joined sample set to
    /// `value`: the typed data, and the notes.
    fn joined_with(field: &str, value: Value) -> (ClientData, Vec<FieldNote>) {
        let mut v: Value =
            serde_json::from_str(sample::sample("room.client.joined").unwrap()).unwrap();
        v["data"][field] = value;
        let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new())
            .unwrap_or_else(|e| panic!("{field}: {e}"));
        let WebhookEvent::RoomClientJoined(joined) = parsed.event else {
            panic!("wrong variant");
        };
        (joined.data, parsed.notes)
    }

    #[test]
    fn ids_that_are_numbers_are_read_as_their_text() {
        let (d, notes) = joined_with("meetingId", json!(134));
        assert_eq!(d.meeting_id.as_deref(), Some("134"));
        assert_eq!(notes[0].treatment, Treatment::AsText);
        // Every digit as sent, beyond what a u64 holds.
        let body = sample::sample("room.client.joined").unwrap().replace(
            "\"meetingId\": \"98213\"",
            "\"meetingId\": 123456789012345678901234567890",
        );
        let event = parse(body.as_bytes()).unwrap();
        assert_eq!(
            event.in_room().unwrap().meeting_id(),
            Some("123456789012345678901234567890")
        );
        let (d, _) = joined_with("roomSessionId", json!(-7));
        assert_eq!(d.room_session_id.as_deref(), Some("-7"));
        let (d, notes) = joined_with("externalId", json!(1.5));
        assert_eq!(d.external_id, None);
        assert_eq!(notes[0].treatment, Treatment::Ignored);
        // The event id too.
        let body =
            br#"{"id":42,"type":"room.session.started","data":{"roomName":"/r","subdomain":"a"}}"#;
        assert_eq!(parse(body).unwrap().id(), "42");
    }

    #[test]
    fn fields_of_another_type_are_none_and_noted() {
        let cases = [
            ("displayName", json!(7), JsonType::Number),
            ("roleName", json!(5), JsonType::Number),
            ("numClients", json!("3"), JsonType::String),
            ("numClients", json!(-1), JsonType::Number),
            ("numClients", json!(2.5), JsonType::Number),
            ("numClientsByRoleName", json!([1]), JsonType::Array),
            ("isDialIn", json!("no"), JsonType::String),
            ("metadata", json!({"a": 1}), JsonType::Object),
            ("meetingId", json!(true), JsonType::Bool),
        ];
        for (field, value, found) in cases {
            let (d, notes) = joined_with(field, value.clone());
            let typed = serde_json::to_value(&d).unwrap();
            assert_eq!(typed.get(field), None, "{field} = {value}");
            assert_eq!(
                notes,
                [FieldNote {
                    field: format!("data.{field}"),
                    found,
                    treatment: Treatment::Ignored
                }],
                "{field} = {value}"
            );
        }
        // One count that is not a count leaves the whole map out.
        let (d, notes) = joined_with("numClientsByRoleName", json!({"host": 1, "member": "x"}));
        assert_eq!(d.num_clients_by_role_name, None);
        assert_eq!(notes[0].field, "data.numClientsByRoleName.member");
        // `null` is absent, without a note.
        let (d, notes) = joined_with("displayName", Value::Null);
        assert_eq!((d.display_name, notes), (None, vec![]));
    }

    #[test]
    fn envelope_fields_but_id_and_type_are_optional() {
        let mut v: Value =
            serde_json::from_str(sample::sample("assistant.requested").unwrap()).unwrap();
        let object = v.as_object_mut().unwrap();
        object.remove("apiVersion");
        object.insert("createdAt".into(), json!("last tuesday"));
        let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new()).unwrap();
        assert_eq!(parsed.event.created_at(), Some("last tuesday"));
        assert_eq!(parsed.event.created_at_millis(), None);
        assert_eq!(parsed.notes[0].treatment, Treatment::Unreadable);
        v["createdAt"] = json!(17);
        let parsed = parse_with(v.to_string().as_bytes(), &ParseOptions::new()).unwrap();
        assert_eq!(parsed.event.created_at(), None);
    }

    fn field_of(body: &str) -> Option<String> {
        parse(body.as_bytes())
            .unwrap_err()
            .field()
            .map(str::to_owned)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            parse(b"nope").unwrap_err(),
            ParseError::NotJson("expected ident".into())
        );
        assert_eq!(parse(b"[1]").unwrap_err(), ParseError::NotAnObject);
        assert_eq!(parse(b" \"s\" ").unwrap_err(), ParseError::NotAnObject);
        assert!(matches!(
            parse(b"{\"id\":").unwrap_err(),
            ParseError::NotJson(_)
        ));
        assert_eq!(field_of(r#"{"type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":true,"type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":1.5,"type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":"","type":"x"}"#).as_deref(), Some("id"));
        assert_eq!(field_of(r#"{"id":"a"}"#).as_deref(), Some("type"));
        assert_eq!(
            field_of(r#"{"id":"a","type":null}"#).as_deref(),
            Some("type")
        );
        assert_eq!(
            field_of(r#"{"id":"a","id":"b","type":"x"}"#).as_deref(),
            Some("id")
        );

        let ok = sample::sample("room.client.joined").unwrap();
        let v: Value = serde_json::from_str(ok).unwrap();
        let with = |path: &[&str], value: Option<Value>| {
            let mut v = v.clone();
            let mut at = &mut v;
            for key in &path[..path.len() - 1] {
                at = &mut at[*key];
            }
            let obj = at.as_object_mut().unwrap();
            match value {
                Some(value) => obj.insert(path[path.len() - 1].into(), value),
                None => obj.remove(path[path.len() - 1]),
            };
            v.to_string()
        };
        let cases = [
            (with(&["data", "roomName"], None), "data.roomName"),
            (with(&["data", "roomName"], Some(json!(5))), "data.roomName"),
            (with(&["data", "subdomain"], None), "data.subdomain"),
            (
                with(&["data", "subdomain"], Some(json!(5))),
                "data.subdomain",
            ),
            (with(&["data"], None), "data"),
            (with(&["data"], Some(Value::Null)), "data"),
            (with(&["data"], Some(json!("s"))), "data"),
            (with(&["data"], Some(json!([1]))), "data"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
        }
        let repeated = ok.replace(
            "\"roomName\": \"/standup-3f9a2c\",",
            "\"roomName\": \"/a\", \"roomName\": \"/b\",",
        );
        assert_eq!(field_of(&repeated).as_deref(), Some("data.roomName"));
        assert_eq!(
            parse(with(&["data", "subdomain"], None).as_bytes()).unwrap_err(),
            ParseError::NoSubdomain
        );
    }

    /// Every sample and documented shape of an evaluated type, as JSON.
    fn evaluated_payloads() -> Vec<Value> {
        sample::evaluated()
            .map(|body| serde_json::from_str(body).unwrap())
            .collect()
    }

    /// The fields a payload may go without (with a default subdomain, that one
    /// too): `data`'s all but `roomName`, and the envelope's but `id`, `type`
    /// and `data`.
    fn optional_fields(payload: &Value) -> Vec<(bool, String)> {
        let mut fields: Vec<(bool, String)> = payload["data"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "roomName")
            .map(|k| (true, k.clone()))
            .collect();
        fields.extend(
            payload
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !["id", "type", "data"].contains(&k.as_str()))
                .map(|k| (false, k.clone())),
        );
        fields
    }

    /// Removes `field` from `payload` (`None`) or sets it to `value`.
    fn changed(payload: &Value, in_data: bool, field: &str, value: Option<Value>) -> Value {
        let mut v = payload.clone();
        let object = if in_data {
            v["data"].as_object_mut().unwrap()
        } else {
            v.as_object_mut().unwrap()
        };
        match value {
            Some(value) => object.insert(field.to_owned(), value),
            None => object.remove(field),
        };
        v
    }

    /// Removing any optional field of any documented payload, or setting it to
    /// `null` or to a value of each other JSON type, never makes it unreadable.
    #[test]
    fn no_optional_field_can_fail_a_payload() {
        let options = ParseOptions::new()
            .with_default_subdomain("fallback")
            .unwrap();
        let values = [
            None,
            Some(Value::Null),
            Some(json!(true)),
            Some(json!(12)),
            Some(json!(-3.5)),
            Some(json!("text")),
            Some(json!([1, "a"])),
            Some(json!({"k": [null]})),
        ];
        for payload in evaluated_payloads() {
            for (in_data, field) in optional_fields(&payload) {
                for value in &values {
                    // The subdomain may be absent (the default fills in), not
                    // of another type: that would send the assistant elsewhere.
                    let other_type = value.as_ref().is_some_and(|v| !v.is_null());
                    if field == "subdomain" && other_type {
                        continue;
                    }
                    let body = changed(&payload, in_data, &field, value.clone()).to_string();
                    let result = parse_with(body.as_bytes(), &options);
                    assert!(
                        result.is_ok(),
                        "{field} = {value:?}: {:?}\n{body}",
                        result.err()
                    );
                }
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON values of any shape, to feed the parser structures it does not expect.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,12}".prop_map(Value::from),
                prop::sample::select(vec![
                    "room.client.joined",
                    "assistant.requested",
                    "host",
                    "/r"
                ])
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "id",
                            "type",
                            "data",
                            "apiVersion",
                            "createdAt",
                            "roomName",
                            "subdomain",
                            "roleName",
                            "numClients",
                            "numClientsByRoleName",
                            "x",
                        ])
                        .prop_map(str::to_owned),
                        inner,
                        0..6,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse(&body);
            }

            #[test]
            fn never_panics_on_json(value in json()) {
                let _ = parse(value.to_string().as_bytes());
            }

            /// Any documented payload, with any number of its optional fields
            /// removed or replaced by any JSON value, still parses; the typed
            /// webhook keeps its id and room.
            #[test]
            fn optional_fields_never_fail(
                index in 0usize..16,
                changes in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(json())), 1..6),
            ) {
                let payloads = evaluated_payloads();
                let payload = &payloads[index % payloads.len()];
                let fields = optional_fields(payload);
                let mut v = payload.clone();
                for (pick, value) in changes {
                    let (in_data, field) = pick.get(&fields);
                    let value = match value {
                        Some(value) if field == "subdomain" && !value.is_null() => continue,
                        other => other,
                    };
                    v = changed(&v, *in_data, field, value);
                }
                let options = ParseOptions::new().with_default_subdomain("fallback").unwrap();
                let parsed = parse_with(v.to_string().as_bytes(), &options);
                prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), v);
                let event = parsed.unwrap().event;
                prop_assert_eq!(event.id(), payload["id"].as_str().unwrap());
                let room = event.in_room().unwrap();
                prop_assert_eq!(Some(room.room_name()), payload["data"]["roomName"].as_str());
            }

            /// Any field under `data` replaced by anything: parses, or fails
            /// with an error that names a required field under `data`.
            #[test]
            fn a_broken_data_field_is_named(index in 0usize..5, key in "[a-zA-Z]{1,16}", value in json()) {
                let (_, body) = sample::SAMPLES[index];
                let mut v: Value = serde_json::from_str(body).unwrap();
                v["data"][key.as_str()] = value;
                if let Err(err) = parse(v.to_string().as_bytes()) {
                    let field = err.field().unwrap_or_default().to_owned();
                    prop_assert!(
                        field == "data.roomName" || field == "data.subdomain",
                        "{err}"
                    );
                }
            }
        }
    }
}
