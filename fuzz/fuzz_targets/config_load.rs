//! The config loader: `Config::from_toml`, which also compiles every `when` (CEL)
//! and `{placeholder}` template, reads durations and sizes and checks URLs.
//!
//! Properties: loading never panics; every error renders and its line is within
//! the file; an accepted config summarises and formats, its trigger names are
//! unique and its `when` expressions evaluate (to anything) against every sample
//! webhook without panicking.
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use whereby_trigger::config::Config;
use whereby_trigger::rules::cel::WhenInput;
use whereby_trigger::state::room::RoomView;

/// Every variable is set (to a value with braces and dollars, which must stay
/// literal) except those whose name starts with `Z`.
fn env(name: &str) -> Option<String> {
    (!name.starts_with('Z')).then(|| format!("v{{id}}$${{{name}}}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    match Config::from_toml(text, &env) {
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            let _ = errors.to_string();
            for error in &errors.errors {
                if let Some(line) = error.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "line {line} of {lines}: {error:?}"
                    );
                }
            }
        }
        Ok(config) => {
            let _ = config.summary();
            let _ = format!("{config:?}");
            let mut names = HashSet::new();
            for trigger in &config.triggers {
                assert!(names.insert(trigger.name.clone()), "{} twice", trigger.name);
                assert!((1..=lines).contains(&trigger.line));
                if let Some(when) = &trigger.when {
                    for input in inputs() {
                        let _ = when.eval(input);
                    }
                }
            }
        }
    }
});

/// What a `when` sees for each sample webhook, built once.
fn inputs() -> &'static [WhenInput] {
    static INPUTS: OnceLock<Vec<WhenInput>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let room = RoomView {
            num_clients: 2,
            num_clients_by_role_name: BTreeMap::from([
                ("host".to_owned(), 1),
                ("visitor".to_owned(), 1),
            ]),
            session_active: true,
        };
        whereby_webhook::sample::SAMPLES
            .iter()
            .map(|(_, body)| {
                let webhook: serde_json::Value = serde_json::from_str(body).unwrap();
                WhenInput::new(&webhook, Some(&room))
            })
            .collect()
    })
}
