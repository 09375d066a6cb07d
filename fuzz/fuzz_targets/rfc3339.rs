//! `createdAt` timestamps: `whereby_webhook::time::parse_rfc3339_millis`.
//!
//! Properties: never panics (no overflow with debug assertions on); an accepted
//! time, written back in the canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form, reads back
//! as the same instant; a canonical form is unchanged by a zero offset written as
//! `+00:00`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::time::parse_rfc3339_millis;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(millis) = parse_rfc3339_millis(text) else {
        return;
    };
    let Some(canonical) = canonical(millis) else {
        return;
    };
    assert_eq!(
        parse_rfc3339_millis(&canonical),
        Some(millis),
        "{text:?} → {millis} → {canonical:?}"
    );
    let offset = canonical.replace('Z', "+00:00");
    assert_eq!(parse_rfc3339_millis(&offset), Some(millis), "{offset:?}");
});

/// `millis` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, for years 0000 to 9999.
fn canonical(millis: i64) -> Option<String> {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days: the inverse of what the parser uses.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    ))
}
