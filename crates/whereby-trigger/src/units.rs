//! Durations and sizes as people write them: `300s`, `5m`, `12h`, `64KiB`.

use std::time::Duration;

/// A duration or size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {what}: {reason}")]
pub struct UnitError {
    input: String,
    what: &'static str,
    reason: &'static str,
}

/// Reads a duration: a whole number with a unit `ms`, `s`, `m`, `h` or `d`
/// (`250ms`, `300s`, `5m`, `12h`); a bare number is seconds.
///
/// # Errors
/// When the number or unit is missing or unknown, or the value overflows.
///
/// ```
/// use std::time::Duration;
/// use whereby_trigger::units::parse_duration;
/// assert_eq!(parse_duration("5m")?, Duration::from_secs(300));
/// assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
/// assert_eq!(parse_duration("30")?, Duration::from_secs(30));
/// # Ok::<(), whereby_trigger::units::UnitError>(())
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let err = |reason| UnitError {
        input: input.to_owned(),
        what: "duration (e.g. 300s, 5m, 12h)",
        reason,
    };
    let (number, unit) =
        split_number(input.trim()).ok_or_else(|| err("it does not start with a number"))?;
    let millis_per: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err("the unit must be ms, s, m, h or d")),
    };
    number
        .checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(|| err("it is too large"))
}

/// Writes a duration as [`parse_duration`] reads it, in the largest unit that
/// divides it (`30s`, `5m`, `1500ms`).
///
/// ```
/// use std::time::Duration;
/// use whereby_trigger::units::format_duration;
/// assert_eq!(format_duration(Duration::from_secs(300)), "5m");
/// assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// Reads a size in bytes: a whole number with an optional unit `B`, `KB`, `KiB`,
/// `MB`, `MiB` (`64KiB`, `1MB`, `65536`). Units are case-insensitive.
///
/// # Errors
/// When the number or unit is missing or unknown, or the value overflows.
///
/// ```
/// use whereby_trigger::units::parse_size;
/// assert_eq!(parse_size("64KiB")?, 65_536);
/// assert_eq!(parse_size("1MB")?, 1_000_000);
/// # Ok::<(), whereby_trigger::units::UnitError>(())
/// ```
pub fn parse_size(input: &str) -> Result<usize, UnitError> {
    let err = |reason| UnitError {
        input: input.to_owned(),
        what: "size (e.g. 64KiB, 1MB, 65536)",
        reason,
    };
    let (number, unit) =
        split_number(input.trim()).ok_or_else(|| err("it does not start with a number"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1_024,
        "mb" => 1_000_000,
        "mib" => 1_048_576,
        _ => return Err(err("the unit must be B, KB, KiB, MB or MiB")),
    };
    number
        .checked_mul(factor)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| err("it is too large"))
}

/// Splits `"12h"` into `(12, "h")`, allowing spaces between number and unit.
fn split_number(input: &str) -> Option<(u64, &str)> {
    let digits = input.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = input[..digits].parse().ok()?;
    Some((number, input[digits..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4s").unwrap(), Duration::from_secs(4));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration(" 10 s ").unwrap(), Duration::from_secs(10));
        for bad in [
            "",
            "s",
            "5 minutes",
            "-1s",
            "1.5s",
            "5x",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("64kib").unwrap(), 65_536);
        assert_eq!(parse_size("2MiB").unwrap(), 2_097_152);
        assert_eq!(parse_size("100").unwrap(), 100);
        for bad in ["", "KiB", "1GiB", "1.5KB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panic(s in "\\PC{0,16}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        }

        #[test]
        fn seconds_round_trip(n in 0u64..1_000_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}s")).unwrap(), Duration::from_secs(n));
        }
    }
}
