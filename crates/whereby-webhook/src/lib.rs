//! Whereby webhooks, typed and verified.
//!
//! This crate is the pure part of whereby-trigger: no async, no I/O, no web
//! framework. Anyone receiving Whereby webhooks can use it to
//!
//! - check the `Whereby-Signature` header over the raw body ([`Verifier`]), with a
//!   replay window and several secrets at once for rotation, and sign bodies for
//!   tests and tools ([`SigningSecret::sign`]);
//! - parse a body into a [`WebhookEvent`]: a typed struct for each of the five types
//!   a Trigger evaluates, or [`WebhookEvent::Other`] for everything else. Only what
//!   the room URL needs is required (`data.roomName`, and `data.subdomain` unless
//!   [`ParseOptions`] give a default); every other field is optional, a field of an
//!   unexpected JSON type never fails the webhook ([`parse_with`] reports it as a
//!   [`FieldNote`]), and errors name the field at fault ([`ParseError`]);
//! - build the room URL an assistant should join ([`room_url()`]) in a way no
//!   payload can point at another host.
//!
//! ```
//! use whereby_webhook::{parse, BaseDomain, InRoom, SigningSecret, Verifier, WebhookEvent};
//!
//! let body = br#"{"id":"e1","apiVersion":"1.0","createdAt":"2026-11-02T09:00:03Z",
//!   "type":"room.client.joined","data":{"roomName":"/standup","roomSessionId":null,
//!   "subdomain":"acme","displayName":"Ada","participantId":"p1","metadata":null,
//!   "externalId":null,"roleName":"host","numClients":1,"numClientsByRoleName":{"host":1}}}"#;
//!
//! // What Whereby would send, and what the receiver checks.
//! let secret = SigningSecret::new("whsec_example");
//! let header = secret.sign(1_700_000_000, body);
//! let verifier = Verifier::new([secret]);
//! verifier.verify(Some(header.as_bytes()), body, 1_700_000_001)?;
//!
//! let WebhookEvent::RoomClientJoined(joined) = parse(body)? else { unreachable!() };
//! assert_eq!(joined.data.num_clients, Some(1));
//! assert_eq!(
//!     joined.data.room_url(&BaseDomain::default())?,
//!     "https://acme.whereby.com/standup"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`event`]: the typed webhooks, [`EventType`] and the [`WebhookEvent`] enum.
//! - [`parse`](mod@parse): body → [`WebhookEvent`], with [`ParseOptions`],
//!   [`FieldNote`] and [`ParseError`].
//! - [`role`]: [`RoleName`], open to roles Whereby adds later.
//! - [`room_url`](mod@room_url): [`room_url()`] and [`BaseDomain`].
//! - [`signature`]: [`Verifier`], [`SigningSecret`], [`SignatureError`], [`SecretError`].
//! - [`sample`]: one realistic payload per event type.
//! - [`time`]: reading `createdAt`.

pub mod event;
pub mod parse;
pub mod role;
pub mod room_url;
pub mod sample;
pub mod signature;
pub mod time;

pub use event::{
    AnyEventType, AssistantRequested, ClientData, EventType, InRoom, InvalidEventType, OTHER_TYPES,
    OtherRoom, OtherWebhook, RoomClientJoined, RoomClientLeft, RoomData, RoomSessionEnded,
    RoomSessionStarted, TypedWebhook, UnknownEventType, WebhookEvent,
};
pub use parse::{
    FieldNote, JsonType, ParseError, ParseOptions, Parsed, Treatment, parse, parse_with,
};
pub use role::RoleName;
pub use room_url::{BaseDomain, DEFAULT_BASE_DOMAIN, InvalidBaseDomain, RoomUrlError, room_url};
pub use signature::{
    DEFAULT_TOLERANCE, SIGNATURE_HEADER, SecretError, SignatureError, SignatureHeader,
    SigningSecret, Verified, Verifier, unix_now,
};
