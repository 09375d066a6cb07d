//! Webhook bodies: `whereby_webhook::parse` and `parse_with`.
//!
//! Properties: parsing never panics; a default subdomain only ever turns a
//! refusal into an acceptance, never the reverse (and gives another type a
//! room only when it has none of its own); an accepted event serialises,
//! and what it serialises to parses back to the same event (with no notes: what
//! the parser overlooked is not written out); an evaluated event's room URL,
//! when it builds, stays on the base domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::{BaseDomain, ParseOptions, WebhookEvent, parse, parse_with};

fuzz_target!(|data: &[u8]| {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .expect("a DNS label");
    let with_default = parse_with(data, &options);
    let Ok(event) = parse(data) else { return };
    let with_default = with_default.expect("a default subdomain refused what parses without");
    match (&with_default.event, &event) {
        // Another type's room may come from the default alone; a room of its
        // own is kept as it is.
        (WebhookEvent::Other(defaulted), WebhookEvent::Other(plain)) => {
            if plain.room.is_some() {
                assert_eq!(defaulted.room, plain.room, "a default changed a room");
            }
            let mut defaulted = defaulted.clone();
            defaulted.room = plain.room.clone();
            assert_eq!(&defaulted, plain, "a default changed more than a room");
        }
        (defaulted, plain) => assert_eq!(
            defaulted, plain,
            "a default changed a payload that has a subdomain"
        ),
    }

    assert!(!event.id().is_empty());
    let _ = event.type_name();

    let json = serde_json::to_vec(&event).expect("an accepted event serialises");
    let again = parse_with(&json, &ParseOptions::new()).unwrap_or_else(|e| {
        panic!(
            "the serialised event does not parse: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    let typed_notes: Vec<_> = again
        .notes
        .iter()
        .filter(|n| n.field != "createdAt")
        .collect();
    assert!(typed_notes.is_empty(), "{typed_notes:?}");
    let again: WebhookEvent = again.event;
    assert_eq!(again, event, "serialise → parse is not the identity");

    if let Some(room) = event.in_room() {
        let base = BaseDomain::default();
        if let Ok(url) = room.room_url(&base) {
            let prefix = format!("https://{}.whereby.com/", room.subdomain());
            assert!(url.starts_with(&prefix), "{url}");
            assert!(!url.contains(['?', '#', '\\']), "{url}");
        }
    }
});
