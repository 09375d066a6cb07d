//! Realistic sample payloads, one per event type, for tests, tools and examples.
//!
//! They are the files in this crate's `fixtures/` folder, pretty-printed as in
//! documentation; real deliveries are compact JSON.

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
