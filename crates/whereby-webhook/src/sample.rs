//! Realistic sample payloads, one per event type, for tests, tools and examples.
//!
//! They are the files in this crate's `fixtures/` folder, pretty-printed as in
//! documentation; real deliveries are compact JSON. [`SHAPES`] holds the other
//! shapes Whereby's payloads have had over the years.

/// `(type, payload)` for every sample, the five evaluated types first.
pub const SAMPLES: &[(&str, &str)] = &[
    (
        "room.client.joined",
        include_str!("../fixtures/room.client.joined.json"),
    ),
    (
        "room.client.left",
        include_str!("../fixtures/room.client.left.json"),
    ),
    (
        "room.session.started",
        include_str!("../fixtures/room.session.started.json"),
    ),
    (
        "room.session.ended",
        include_str!("../fixtures/room.session.ended.json"),
    ),
    (
        "assistant.requested",
        include_str!("../fixtures/assistant.requested.json"),
    ),
    (
        "room.client.knocked",
        include_str!("../fixtures/room.client.knocked.json"),
    ),
    (
        "transcription.finished",
        include_str!("../fixtures/transcription.finished.json"),
    ),
    (
        "recording.finished",
        include_str!("../fixtures/recording.finished.json"),
    ),
];

/// The sample payload of `event_type`, if there is one.
///
/// ```
/// let body = whereby_webhook::sample::sample("room.session.started").unwrap();
/// assert!(whereby_webhook::parse(body.as_bytes()).is_ok());
/// ```
pub fn sample(event_type: &str) -> Option<&'static str> {
    SAMPLES
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, body)| *body)
}

/// A payload shape Whereby has sent, as its documentation showed it over the
/// years: written by hand from the fields each version had (ids, names and
/// times made up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// A short name, the fixture's file name without `.json`.
    pub name: &'static str,
    /// Its `type`.
    pub event_type: &'static str,
    /// What sets this shape apart.
    pub about: &'static str,
    /// The payload.
    pub body: &'static str,
}

macro_rules! shapes {
    ($(($name:literal, $event_type:literal, $about:literal)),* $(,)?) => {
        /// Every [`Shape`], the evaluated types first.
        ///
        /// ```
        /// use whereby_webhook::{parse_with, ParseOptions};
        ///
        /// // Payloads from before 2025 have no subdomain: give a default.
        /// let options = ParseOptions::new().with_default_subdomain("acme")?;
        /// for shape in whereby_webhook::sample::SHAPES {
        ///     assert!(parse_with(shape.body.as_bytes(), &options).is_ok(), "{}", shape.name);
        /// }
        /// # Ok::<(), whereby_webhook::RoomUrlError>(())
        /// ```
        pub const SHAPES: &[Shape] = &[$(
            Shape {
                name: $name,
                event_type: $event_type,
                about: $about,
                body: include_str!(concat!("../fixtures/shapes/", $name, ".json")),
            },
        )*];
    };
}

shapes![
    (
        "joined-2021-no-subdomain",
        "room.client.joined",
        "room.client.joined as documented before September 2025: no subdomain, role visitor"
    ),
    (
        "joined-early-no-display-name",
        "room.client.joined",
        "room.client.joined as in the early examples: a host, no displayName, no subdomain"
    ),
    (
        "joined-2025-no-participant-id",
        "room.client.joined",
        "room.client.joined as documented today: a subdomain, no participantId"
    ),
    (
        "joined-recorder-no-display-name",
        "room.client.joined",
        "a recorder joining, as captured: no displayName, no subdomain"
    ),
    (
        "joined-no-role-counts",
        "room.client.joined",
        "room.client.joined without numClientsByRoleName, no subdomain"
    ),
    (
        "joined-null-name-numeric-meeting",
        "room.client.joined",
        "room.client.joined with displayName null and meetingId a number"
    ),
    (
        "left-2021-no-subdomain",
        "room.client.left",
        "room.client.left as documented before September 2025: no subdomain"
    ),
    (
        "session-started-2021-no-subdomain",
        "room.session.started",
        "room.session.started as documented before September 2025: no subdomain"
    ),
    (
        "session-ended-with-recording-url",
        "room.session.ended",
        "room.session.ended with sessionId and recordingUrl, meetingId a number"
    ),
    (
        "assistant-requested-no-subdomain",
        "assistant.requested",
        "assistant.requested without a subdomain"
    ),
    (
        "recording-finished-2023",
        "recording.finished",
        "recording.finished as captured in 2023: recordingId, filename, status, no room"
    ),
    (
        "transcription-finished-2024-no-room",
        "transcription.finished",
        "transcription.finished before March 2025: no roomName"
    ),
];

/// Every payload of a type a Trigger evaluates: the five samples, then the
/// [`SHAPES`] of those types.
///
/// ```
/// use whereby_webhook::{parse_with, ParseOptions};
///
/// let options = ParseOptions::new().with_default_subdomain("acme")?;
/// for body in whereby_webhook::sample::evaluated() {
///     let event = parse_with(body.as_bytes(), &options).unwrap().event;
///     assert!(event.event_type().is_some());
/// }
/// # Ok::<(), whereby_webhook::RoomUrlError>(())
/// ```
pub fn evaluated() -> impl Iterator<Item = &'static str> {
    let samples = SAMPLES
        .iter()
        .filter(|(event_type, _)| crate::EventType::from_name(event_type).is_some())
        .map(|(_, body)| *body);
    let shapes = SHAPES
        .iter()
        .filter(|shape| crate::EventType::from_name(shape.event_type).is_some())
        .map(|shape| shape.body);
    samples.chain(shapes)
}
