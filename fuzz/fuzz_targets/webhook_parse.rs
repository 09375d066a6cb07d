//! Webhook bodies: `whereby_webhook::parse`.
//!
//! Properties: parsing never panics; an accepted event serialises, and what it
//! serialises to parses back to the same event; an evaluated event has an
//! orderable `createdAt` and its room URL, when it builds, stays on the base domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::{BaseDomain, WebhookEvent, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = parse(data) else { return };

    assert!(!event.id().is_empty());
    let _ = event.type_name();
    if event.event_type().is_some() {
        assert!(
            event.created_at_millis().is_some(),
            "an evaluated event has a readable createdAt: {:?}",
            event.created_at()
        );
    }

    let json = serde_json::to_vec(&event).expect("an accepted event serialises");
    let again: WebhookEvent = parse(&json).unwrap_or_else(|e| {
        panic!(
            "the serialised event does not parse: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
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
