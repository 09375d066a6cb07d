//! Durations and sizes: `parse_duration` and `parse_size`.
//!
//! Properties: never panic (no overflow with debug assertions on); surrounding
//! spaces do not matter; an accepted duration written back in milliseconds, and an
//! accepted size written back in bytes, read back as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_trigger::units::{parse_duration, parse_size};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let padded = format!("  {text} ");

    let duration = parse_duration(text);
    assert_eq!(
        parse_duration(&padded).ok(),
        duration.as_ref().ok().copied(),
        "{text:?}"
    );
    if let Ok(duration) = duration {
        let back = format!("{}ms", duration.as_millis());
        assert_eq!(parse_duration(&back), Ok(duration), "{text:?} → {back:?}");
    }

    let size = parse_size(text);
    assert_eq!(
        parse_size(&padded).ok(),
        size.as_ref().ok().copied(),
        "{text:?}"
    );
    if let Ok(size) = size {
        assert_eq!(parse_size(&size.to_string()), Ok(size), "{text:?}");
    }
});
