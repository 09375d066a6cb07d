//! `when` expressions: `When::compile` (CEL parsing and the check of free names)
//! and `When::eval`.
//!
//! Properties: compiling never panics; a compiled expression keeps its source and
//! evaluates against every sample webhook, with and without room state, to a
//! boolean or an error, never a panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whereby_trigger::rules::cel::{When, WhenInput};
use whereby_trigger::state::room::RoomView;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(when) = When::compile(source) else {
        return;
    };
    assert_eq!(when.source(), source);
    for input in inputs() {
        let _ = when.eval(input);
    }
});

/// Every sample webhook, with a busy room and with no room state.
fn inputs() -> &'static [WhenInput] {
    static INPUTS: OnceLock<Vec<WhenInput>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let room = RoomView {
            num_clients: 3,
            num_clients_by_role_name: BTreeMap::from([
                ("host".to_owned(), 1),
                ("visitor".to_owned(), 2),
            ]),
            session_active: true,
        };
        let mut inputs = Vec::new();
        for (_, body) in whereby_webhook::sample::SAMPLES {
            let webhook: serde_json::Value = serde_json::from_str(body).unwrap();
            inputs.push(WhenInput::new(&webhook, Some(&room)));
            inputs.push(WhenInput::new(&webhook, None));
        }
        inputs
    })
}
