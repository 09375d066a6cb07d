//! Argument templates: `Template::compile` and `Template::render`.
//!
//! Properties: compiling never panics; a compiled template's `Display` form
//! compiles back to the same template; rendering never panics; any text with its
//! braces doubled compiles and renders back to exactly that text; a substituted
//! value is inserted as it is (a value that looks like a placeholder stays literal).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use whereby_trigger::actions::template::Template;
use whereby_trigger::actions::{ActionEvent, ActionKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (event, webhook_data) = event(text);

    if let Ok(template) = Template::compile(text) {
        let shown = template.to_string();
        assert_eq!(
            Template::compile(&shown).as_ref(),
            Ok(&template),
            "{text:?} shows as {shown:?}"
        );
        let _ = template.render(&event, Some(&webhook_data));
        let _ = template.render(&event, None);
    }

    let escaped = text.replace('{', "{{").replace('}', "}}");
    let literal = Template::compile(&escaped).expect("escaped text compiles");
    assert_eq!(literal.render(&event, Some(&webhook_data)), text);

    // The fuzzed text as a value: it is inserted whole, never re-read as a template.
    let around = Template::compile("<{data.displayName}|{trigger}>").unwrap();
    assert_eq!(
        around.render(&event, Some(&webhook_data)),
        format!("<{text}|{text}>")
    );
});

/// A `room.client.joined` start whose display name and trigger name are `text`.
fn event(text: &str) -> (ActionEvent, serde_json::Value) {
    let mut webhook: serde_json::Value =
        serde_json::from_str(whereby_webhook::sample::sample("room.client.joined").unwrap())
            .unwrap();
    webhook["data"]["displayName"] = serde_json::Value::String(text.to_owned());
    let raw = Bytes::from(webhook.to_string());
    let parsed = whereby_webhook::parse(&raw).expect("the sample parses");
    let event = ActionEvent::new(ActionKind::Start, text, parsed, raw);
    assert_eq!(
        event.room_url.as_deref(),
        Some("https://acme.whereby.com/standup-3f9a2c")
    );
    (event, webhook["data"].clone())
}
