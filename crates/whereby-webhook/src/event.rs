//! Typed webhooks: the five event types a Trigger evaluates, and a catch-all.
//!
//! Why one file: these are the crate's public types, a quarter of the lines
//! their documentation; the five typed webhooks come from one macro, beside
//! the enum over them and its serialisation back to Whereby's JSON, which
//! must agree with them. The tests are the last 55 lines.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::RoleName;
use crate::room_url::{BaseDomain, RoomUrlError, room_url};

/// The event types a Trigger evaluates with a predicate.
///
/// Whereby sends other types to the same endpoint (`room.client.knocked`,
/// `recording.finished`, …); those parse as [`WebhookEvent::Other`] and have no
/// `EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `room.client.joined`: a participant joined the room.
    RoomClientJoined,
    /// `room.client.left`: a participant left the room.
    RoomClientLeft,
    /// `room.session.started`: at least two participants are in the room.
    RoomSessionStarted,
    /// `room.session.ended`: fewer than two participants for some time.
    RoomSessionEnded,
    /// `assistant.requested`: a host invited an assistant from the in-room menu.
    AssistantRequested,
}

impl EventType {
    /// Every evaluated type, in a fixed order (the order of [`EventType::index`]).
    pub const ALL: [EventType; 5] = [
        EventType::RoomClientJoined,
        EventType::RoomClientLeft,
        EventType::RoomSessionStarted,
        EventType::RoomSessionEnded,
        EventType::AssistantRequested,
    ];

    /// The type's name as it appears in a webhook's `type` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::RoomClientJoined => "room.client.joined",
            EventType::RoomClientLeft => "room.client.left",
            EventType::RoomSessionStarted => "room.session.started",
            EventType::RoomSessionEnded => "room.session.ended",
            EventType::AssistantRequested => "assistant.requested",
        }
    }

    /// A dense index in `0..5`, so per-type tables can be plain arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Looks a wire name up; `None` for any type the Trigger does not evaluate.
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`EventType`] from a name it does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an event type the Trigger evaluates (expected one of room.client.joined, \
     room.client.left, room.session.started, room.session.ended, assistant.requested)"
)]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::from_name(s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// The documented webhook types a Trigger does not evaluate with a typed
/// predicate; rules can still name them (see [`AnyEventType`]).
pub const OTHER_TYPES: [&str; 6] = [
    "room.client.knocked",
    "room.client.knockCancelled",
    "transcription.started",
    "transcription.finished",
    "transcription.failed",
    "recording.finished",
];

/// Any webhook type a rule can name: one of the evaluated [`EventType`]s, or
/// any other `word.word` name (those of [`OTHER_TYPES`], or one Whereby adds
/// later).
///
/// ```
/// use whereby_webhook::{AnyEventType, EventType};
///
/// let knocked: AnyEventType = "room.client.knocked".parse()?;
/// assert!(knocked.is_documented());
/// assert_eq!("room.client.joined".parse::<AnyEventType>()?, AnyEventType::from(EventType::RoomClientJoined));
/// assert!(!"meeting.renamed".parse::<AnyEventType>()?.is_documented());
/// assert!("joined".parse::<AnyEventType>().is_err());
/// # Ok::<(), whereby_webhook::InvalidEventType>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnyEventType {
    /// A type with a typed webhook.
    Evaluated(EventType),
    /// Any other type, by name.
    Other(Box<str>),
}

impl AnyEventType {
    /// The type's name as it appears in a webhook's `type` field.
    pub fn as_str(&self) -> &str {
        match self {
            AnyEventType::Evaluated(t) => t.as_str(),
            AnyEventType::Other(name) => name,
        }
    }

    /// Whether Whereby documents the type (an evaluated one, or one of
    /// [`OTHER_TYPES`]).
    pub fn is_documented(&self) -> bool {
        match self {
            AnyEventType::Evaluated(_) => true,
            AnyEventType::Other(name) => OTHER_TYPES.contains(&&**name),
        }
    }

    /// Whether Whereby documents every webhook of this type as carrying its
    /// room (`roomName` and `subdomain`): the evaluated types and the knocks.
    /// A recording or a transcription may come without one, and so may a type
    /// Whereby does not document.
    ///
    /// ```
    /// use whereby_webhook::AnyEventType;
    ///
    /// assert!("room.client.knocked".parse::<AnyEventType>()?.carries_room());
    /// assert!(!"recording.finished".parse::<AnyEventType>()?.carries_room());
    /// # Ok::<(), whereby_webhook::InvalidEventType>(())
    /// ```
    pub fn carries_room(&self) -> bool {
        match self {
            AnyEventType::Evaluated(_) => true,
            AnyEventType::Other(name) => {
                matches!(
                    &**name,
                    "room.client.knocked" | "room.client.knockCancelled"
                )
            }
        }
    }

    /// Whether `event` is of this type.
    pub fn matches(&self, event: &WebhookEvent) -> bool {
        match self {
            AnyEventType::Evaluated(t) => event.event_type() == Some(*t),
            AnyEventType::Other(name) => {
                matches!(event, WebhookEvent::Other(w) if *w.event_type == **name)
            }
        }
    }
}

impl From<EventType> for AnyEventType {
    fn from(t: EventType) -> Self {
        AnyEventType::Evaluated(t)
    }
}

impl fmt::Display for AnyEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`AnyEventType`] from a name that is not
/// `word.word` (letters, digits and `_`, two parts or more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an event type: expected a name such as room.client.joined or recording.finished (words of letters, digits and '_' joined by '.')"
)]
pub struct InvalidEventType(pub String);

impl FromStr for AnyEventType {
    type Err = InvalidEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(t) = EventType::from_name(s) {
            return Ok(AnyEventType::Evaluated(t));
        }
        let word =
            |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if s.contains('.') && s.split('.').all(word) {
            Ok(AnyEventType::Other(s.into()))
        } else {
            Err(InvalidEventType(s.to_owned()))
        }
    }
}

/// The fields of every in-room event (`WherebyWebhookInRoom`).
///
/// Only what the room URL needs is required: `roomName`, and `subdomain` unless
/// the parser was given a default ([`ParseOptions::with_default_subdomain`]).
/// Every other field is `None` when the payload has none, or has one of a type
/// this crate does not expect (the raw body still holds it as sent).
///
/// [`ParseOptions::with_default_subdomain`]: crate::ParseOptions::with_default_subdomain
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RoomData {
    /// Meeting identifier, when the room belongs to a meeting (a number in some
    /// payloads: kept as its decimal text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    /// Path of the room, e.g. `/standup-3f9a2c`.
    pub room_name: String,
    /// The room session, `None` outside a session.
    pub room_session_id: Option<String>,
    /// The organisation's subdomain, in lower case: the payload's, or the
    /// parser's default when the payload has none.
    pub subdomain: String,
}

/// The fields of `room.client.joined` and `room.client.left`.
///
/// As in [`RoomData`], only `roomName` and `subdomain` are required; every field
/// about the client is optional, since Whereby's payloads have gone without each
/// of them at some point. Compare with `Some`:
///
/// ```
/// # use whereby_webhook::{parse, WebhookEvent};
/// # let body = whereby_webhook::sample::sample("room.client.joined").unwrap();
/// # let WebhookEvent::RoomClientJoined(joined) = parse(body.as_bytes())? else { unreachable!() };
/// let first = joined.data.num_clients == Some(1);
/// let host = joined.data.role_name.as_ref().is_some_and(|r| r.as_str() == "host");
/// assert!(first && host);
/// # Ok::<(), whereby_webhook::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClientData {
    /// Meeting identifier, when the room belongs to a meeting (a number in some
    /// payloads: kept as its decimal text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    /// Path of the room, e.g. `/standup-3f9a2c`.
    pub room_name: String,
    /// The room session, `None` outside a session.
    pub room_session_id: Option<String>,
    /// The organisation's subdomain, in lower case: the payload's, or the
    /// parser's default when the payload has none.
    pub subdomain: String,
    /// Display name of the participant; `None` in older payloads and for
    /// recorders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Unique identifier of the participant; absent from the current docs' example.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// The room URL's `metadata` parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The room URL's `externalId` parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Role of the participant who joined or left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_name: Option<RoleName>,
    /// Number of clients in the room after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_clients: Option<u32>,
    /// Clients in the room after the event, per role (only roles present appear).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_clients_by_role_name: Option<BTreeMap<RoleName, u32>>,
    /// Whether the participant dialled in by phone; absent in older payloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_dial_in: Option<bool>,
}

/// Where an in-room event happened: the fields every evaluated type shares.
pub trait InRoom {
    /// The organisation's subdomain.
    fn subdomain(&self) -> &str;
    /// Path of the room.
    fn room_name(&self) -> &str;
    /// The room session, if any.
    fn room_session_id(&self) -> Option<&str>;
    /// Meeting identifier, if any.
    fn meeting_id(&self) -> Option<&str>;

    /// The room's URL, `https://{subdomain}.{base_domain}{roomName}`.
    ///
    /// # Errors
    /// When the subdomain or room name could make the URL point elsewhere; see
    /// [`room_url`](crate::room_url()).
    fn room_url(&self, base_domain: &BaseDomain) -> Result<String, RoomUrlError> {
        room_url(self.subdomain(), self.room_name(), base_domain)
    }
}

macro_rules! impl_in_room {
    ($($data:ty),*) => {$(
        impl InRoom for $data {
            fn subdomain(&self) -> &str {
                &self.subdomain
            }
            fn room_name(&self) -> &str {
                &self.room_name
            }
            fn room_session_id(&self) -> Option<&str> {
                self.room_session_id.as_deref()
            }
            fn meeting_id(&self) -> Option<&str> {
                self.meeting_id.as_deref()
            }
        }
    )*};
}
impl_in_room!(RoomData, ClientData, OtherRoom);

mod sealed {
    pub trait Sealed {}
}

/// One of the five typed webhooks; lets generic code (such as a predicate registry)
/// name "the `room.client.joined` webhook" by its Rust type.
///
/// Sealed: the set of evaluated types is Whereby's, not the caller's.
pub trait TypedWebhook: sealed::Sealed + Clone + Send + Sync + 'static {
    /// The event type this struct represents.
    const EVENT_TYPE: EventType;
    /// The type of its `data`.
    type Data: InRoom;

    /// Borrows this type out of a parsed event, if the event is of this type.
    fn from_event(event: &WebhookEvent) -> Option<&Self>;
    /// Wraps this webhook in the enum over all types.
    fn into_event(self) -> WebhookEvent;
    /// The event's `data`.
    fn data(&self) -> &Self::Data;
    /// The event's `id`.
    fn id(&self) -> &str;
    /// The event's `apiVersion`, when it has one.
    fn api_version(&self) -> Option<&str>;
    /// The event's `createdAt` as sent, when it has one.
    fn created_at(&self) -> Option<&str>;
}

macro_rules! typed_webhook {
    ($(#[$doc:meta])* $name:ident, $data:ty, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            /// Unique id of the event; retries of one event carry the same id (a
            /// number is kept as its decimal text).
            pub id: String,
            /// API version, `"1.0"` today; `None` when absent or not a string.
            pub api_version: Option<String>,
            /// ISO 8601 creation time, as sent; `None` when absent or not a
            /// string ([`WebhookEvent::created_at_millis`] reads it).
            pub created_at: Option<String>,
            /// The event's payload.
            pub data: $data,
        }

        impl sealed::Sealed for $name {}

        impl TypedWebhook for $name {
            const EVENT_TYPE: EventType = EventType::$variant;
            type Data = $data;

            fn from_event(event: &WebhookEvent) -> Option<&Self> {
                match event {
                    WebhookEvent::$variant(webhook) => Some(webhook),
                    _ => None,
                }
            }

            fn into_event(self) -> WebhookEvent {
                WebhookEvent::$variant(self)
            }

            fn data(&self) -> &$data {
                &self.data
            }

            fn id(&self) -> &str {
                &self.id
            }

            fn api_version(&self) -> Option<&str> {
                self.api_version.as_deref()
            }

            fn created_at(&self) -> Option<&str> {
                self.created_at.as_deref()
            }
        }
    };
}

typed_webhook!(
    /// `room.client.joined`: a participant joined the room.
    RoomClientJoined,
    ClientData,
    RoomClientJoined
);
typed_webhook!(
    /// `room.client.left`: a participant left the room (leave button or closed tab).
    RoomClientLeft,
    ClientData,
    RoomClientLeft
);
typed_webhook!(
    /// `room.session.started`: a session started (at least two participants).
    RoomSessionStarted,
    RoomData,
    RoomSessionStarted
);
typed_webhook!(
    /// `room.session.ended`: a session ended.
    RoomSessionEnded,
    RoomData,
    RoomSessionEnded
);
typed_webhook!(
    /// `assistant.requested`: a host invited an assistant into the room.
    AssistantRequested,
    RoomData,
    AssistantRequested
);

/// A webhook of a type the Trigger does not evaluate (knocked, transcription,
/// recording, or a type Whereby adds later), kept as sent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OtherWebhook {
    /// Unique id of the event.
    pub id: String,
    /// The `type` field, as sent.
    pub event_type: String,
    /// `apiVersion`, when present and a string.
    pub api_version: Option<String>,
    /// `createdAt`, when present and a string.
    pub created_at: Option<String>,
    /// The room, when `data` names one (`roomName`, and `subdomain` or the
    /// parser's default) that makes a room URL: knocks do, a recording may not.
    pub room: Option<OtherRoom>,
    /// `data`, as raw JSON, when present.
    pub data: Option<Box<RawValue>>,
}

/// The room of a webhook of another type, read leniently from its `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtherRoom {
    /// `data.subdomain`, or the parser's default, in lower case.
    pub subdomain: String,
    /// `data.roomName`.
    pub room_name: String,
    /// `data.roomSessionId`, when a string (or an integer, as its decimal
    /// text).
    pub room_session_id: Option<String>,
    /// `data.meetingId`, when a string (or an integer, as its decimal text).
    pub meeting_id: Option<String>,
}

impl PartialEq for OtherWebhook {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.api_version == other.api_version
            && self.created_at == other.created_at
            && self.room == other.room
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

/// Any webhook Whereby sends: one of the evaluated types, or [`WebhookEvent::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// `room.client.joined`
    RoomClientJoined(RoomClientJoined),
    /// `room.client.left`
    RoomClientLeft(RoomClientLeft),
    /// `room.session.started`
    RoomSessionStarted(RoomSessionStarted),
    /// `room.session.ended`
    RoomSessionEnded(RoomSessionEnded),
    /// `assistant.requested`
    AssistantRequested(AssistantRequested),
    /// Any other type, kept as raw JSON.
    Other(OtherWebhook),
}

impl WebhookEvent {
    /// The event's `id`.
    pub fn id(&self) -> &str {
        match self {
            WebhookEvent::RoomClientJoined(w) => &w.id,
            WebhookEvent::RoomClientLeft(w) => &w.id,
            WebhookEvent::RoomSessionStarted(w) => &w.id,
            WebhookEvent::RoomSessionEnded(w) => &w.id,
            WebhookEvent::AssistantRequested(w) => &w.id,
            WebhookEvent::Other(w) => &w.id,
        }
    }

    /// The evaluated type, or `None` for [`WebhookEvent::Other`].
    pub fn event_type(&self) -> Option<EventType> {
        Some(match self {
            WebhookEvent::RoomClientJoined(_) => EventType::RoomClientJoined,
            WebhookEvent::RoomClientLeft(_) => EventType::RoomClientLeft,
            WebhookEvent::RoomSessionStarted(_) => EventType::RoomSessionStarted,
            WebhookEvent::RoomSessionEnded(_) => EventType::RoomSessionEnded,
            WebhookEvent::AssistantRequested(_) => EventType::AssistantRequested,
            WebhookEvent::Other(_) => return None,
        })
    }

    /// The `type` field as sent.
    pub fn type_name(&self) -> &str {
        match self {
            WebhookEvent::Other(w) => &w.event_type,
            evaluated => evaluated.event_type().map(EventType::as_str).unwrap_or(""),
        }
    }

    /// `createdAt`, when the event has one.
    pub fn created_at(&self) -> Option<&str> {
        match self {
            WebhookEvent::RoomClientJoined(w) => w.created_at(),
            WebhookEvent::RoomClientLeft(w) => w.created_at(),
            WebhookEvent::RoomSessionStarted(w) => w.created_at(),
            WebhookEvent::RoomSessionEnded(w) => w.created_at(),
            WebhookEvent::AssistantRequested(w) => w.created_at(),
            WebhookEvent::Other(w) => w.created_at.as_deref(),
        }
    }

    /// `createdAt` in milliseconds since the Unix epoch, when present and a
    /// readable RFC 3339 time.
    pub fn created_at_millis(&self) -> Option<i64> {
        self.created_at()
            .and_then(crate::time::parse_rfc3339_millis)
    }

    /// The event's room: always for an evaluated type; for
    /// [`WebhookEvent::Other`], when its `data` names one.
    pub fn in_room(&self) -> Option<&dyn InRoom> {
        match self {
            WebhookEvent::RoomClientJoined(w) => Some(&w.data),
            WebhookEvent::RoomClientLeft(w) => Some(&w.data),
            WebhookEvent::RoomSessionStarted(w) => Some(&w.data),
            WebhookEvent::RoomSessionEnded(w) => Some(&w.data),
            WebhookEvent::AssistantRequested(w) => Some(&w.data),
            WebhookEvent::Other(w) => w.room.as_ref().map(|room| room as &dyn InRoom),
        }
    }
}

/// The wire form of an envelope, borrowed from the webhook being serialised.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeOut<'a, D: Serialize + ?Sized> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<&'a str>,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

impl Serialize for WebhookEvent {
    /// Serialises in Whereby's shape, `type` included. Fields this crate does not
    /// model are not reproduced: keep the raw body when the exact bytes matter.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn typed<W: TypedWebhook>(w: &W) -> EnvelopeOut<'_, W::Data>
        where
            W::Data: Serialize,
        {
            EnvelopeOut {
                id: w.id(),
                api_version: w.api_version(),
                created_at: w.created_at(),
                event_type: W::EVENT_TYPE.as_str(),
                data: Some(w.data()),
            }
        }
        match self {
            WebhookEvent::RoomClientJoined(w) => typed(w).serialize(serializer),
            WebhookEvent::RoomClientLeft(w) => typed(w).serialize(serializer),
            WebhookEvent::RoomSessionStarted(w) => typed(w).serialize(serializer),
            WebhookEvent::RoomSessionEnded(w) => typed(w).serialize(serializer),
            WebhookEvent::AssistantRequested(w) => typed(w).serialize(serializer),
            WebhookEvent::Other(w) => EnvelopeOut {
                id: &w.id,
                api_version: w.api_version.as_deref(),
                created_at: w.created_at.as_deref(),
                event_type: &w.event_type,
                data: w.data.as_deref(),
            }
            .serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_and_evaluated_types_parse_as_themselves() {
        for t in EventType::ALL {
            assert_eq!(
                t.as_str().parse::<AnyEventType>(),
                Ok(AnyEventType::Evaluated(t))
            );
        }
        for name in OTHER_TYPES {
            let parsed: AnyEventType = name.parse().unwrap();
            assert!(parsed.is_documented() && parsed.as_str() == name, "{name}");
        }
        for bad in [
            "",
            ".",
            "room.",
            ".joined",
            "room..joined",
            "room joined",
            "room.jöined",
            "room",
        ] {
            assert!(bad.parse::<AnyEventType>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any text either parses to a type that writes back as it was read
        /// and matches a webhook of that type, or is refused naming it; never a
        /// panic.
        #[test]
        fn any_name_round_trips_or_is_refused(name in "\\PC{0,40}") {
            match name.parse::<AnyEventType>() {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.as_str(), name.as_str());
                    let body = serde_json::json!({"id": "e", "type": name, "data": {}}).to_string();
                    if let Ok(event) = crate::parse(body.as_bytes()) {
                        prop_assert!(parsed.matches(&event));
                    }
                }
                Err(InvalidEventType(text)) => prop_assert_eq!(text, name),
            }
        }

        #[test]
        fn dotted_words_are_types(words in proptest::collection::vec("[A-Za-z0-9_]{1,8}", 2..5)) {
            let name = words.join(".");
            prop_assert_eq!(name.parse::<AnyEventType>().map(|t| t.as_str().to_owned()), Ok(name));
        }
    }
}
