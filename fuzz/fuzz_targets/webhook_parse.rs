//! Webhook bodies: `whereby_webhook::parse` and `parse_with`.
//!
//! Properties: parsing never panics; a default subdomain only ever turns a
//! refusal into an acceptance, never the reverse, and changes nothing else but
//! the room of a type not evaluated that names no subdomain (which it
//! completes); an accepted event serialises,
//! and what it serialises to parses back to the same event (with no notes: what
//! the parser overlooked is not written out); an evaluated event's room URL,
//! when it builds, stays on the base domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::{BaseDomain, ParseOptions, Treatment, WebhookEvent, parse, parse_with};

fuzz_target!(|data: &[u8]| {
    let options = ParseOptions::new()
        .with_default_subdomain("fallback")
        .expect("a DNS label");
    let with_default = parse_with(data, &options);
    let Ok(event) = parse(data) else { return };
    let with_default = with_default.expect("a default subdomain refused what parses without");
    if let (WebhookEvent::Other(without), WebhookEvent::Other(with)) = (&event, &with_default.event)
        && without.room.is_none()
        && with
            .room
            .as_ref()
            .is_some_and(|room| room.subdomain == "fallback")
    {
        // A knock or a recording without a subdomain: the default gives it its room.
        let mut completed = without.clone();
        completed.room.clone_from(&with.room);
        assert_eq!(&completed, with, "a default changed more than the room");
    } else {
        assert_eq!(
            with_default.event, event,
            "a default changed a payload that has a subdomain"
        );
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
    // A type not evaluated keeps its `data` as sent, so what was noted of it
    // (a room that makes no URL, an id sent as a number) is noted again.
    let kept_as_sent = event.event_type().is_none();
    let typed_notes: Vec<_> = again
        .notes
        .iter()
        .filter(|n| n.field != "createdAt" && n.treatment != Treatment::NoRoom)
        .filter(|n| !(kept_as_sent && n.field.starts_with("data.")))
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
