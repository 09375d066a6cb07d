//! The README's example configs must stay loadable: each ```toml block is parsed
//! and validated as `check` would.

use whereby_trigger::config::Config;
use whereby_trigger::rules::cel::lint_samples;

#[test]
fn every_toml_block_in_the_readme_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        blocks.len() >= 3,
        "expected an example per action, found {}",
        blocks.len()
    );
    // Every variable the examples use has a value, as in the quick start; a
    // signing secret must be one (`whsec_` and base64) to load.
    let env = |name: &str| {
        Some(if name.contains("SIGNING") {
            "whsec_ZXhhbXBsZS12YWx1ZQ==".to_owned()
        } else {
            "example-value".to_owned()
        })
    };
    for block in &blocks {
        let config = Config::from_toml(block, &env).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(!config.triggers.is_empty(), "{block}");
        // And `check` sees nothing wrong with their conditions.
        for trigger in &config.triggers {
            if let Some(when) = &trigger.when {
                let problems = lint_samples(when, "when", &trigger.on);
                assert!(problems.is_empty(), "{problems:?}\n{block}");
            }
            if let Some(stop_when) = &trigger.stop_when {
                let evaluated: Vec<_> = whereby_trigger::webhook::EventType::ALL
                    .into_iter()
                    .map(Into::into)
                    .collect();
                let problems = lint_samples(stop_when, "stop_when", &evaluated);
                assert!(problems.is_empty(), "{problems:?}\n{block}");
            }
        }
    }
}
