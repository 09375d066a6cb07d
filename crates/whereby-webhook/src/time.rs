//! Reading and writing `createdAt`: RFC 3339 / ISO 8601 timestamps as Whereby
//! sends them.

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
/// `2026-11-02T09:00:03.120Z` or `2026-11-02T10:00:03+01:00`; `None` when `text`
/// is not one. Fractions beyond milliseconds are truncated.
///
/// ```
/// use whereby_webhook::time::parse_rfc3339_millis;
/// assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:01.5Z"), Some(1_500));
/// assert_eq!(
///     parse_rfc3339_millis("2026-11-02T10:00:00+01:00"),
///     parse_rfc3339_millis("2026-11-02T09:00:00Z"),
/// );
/// assert_eq!(parse_rfc3339_millis("yesterday"), None);
/// ```
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, c) in tail[..n.min(3)].iter().enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &tail[n..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An instant in milliseconds since the Unix epoch as Whereby writes
/// `createdAt`: `2026-11-02T09:00:03.120Z` (UTC, milliseconds); what
/// [`parse_rfc3339_millis`] reads back.
///
/// ```
/// use whereby_webhook::time::{format_rfc3339_millis, parse_rfc3339_millis};
/// assert_eq!(format_rfc3339_millis(1_793_610_003_120), "2026-11-02T09:00:03.120Z");
/// assert_eq!(parse_rfc3339_millis(&format_rfc3339_millis(42)), Some(42));
/// ```
pub fn format_rfc3339_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian: Howard
/// Hinnant's `civil_from_days`, the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_millis("2021-01-21T16:29:59.681Z"),
            Some(1_611_246_599_681)
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-02T09:00:03.120Z"),
            Some(1_793_610_003_120)
        );
        assert_eq!(
            parse_rfc3339_millis("2024-02-29T00:00:00.123456Z"),
            Some(1_709_164_800_123)
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-02T04:00:03.120-05:00"),
            Some(1_793_610_003_120)
        );
    }

    #[test]
    fn rejects_non_timestamps() {
        for bad in [
            "",
            "2026-11-02",
            "2026-11-02T09:00:03",
            "2026-13-02T09:00:03Z",
            "2026-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T09:00:03.Z",
            "2026-11-02T09:00:03+0100",
            "2026-11-02T09:00:03Zjunk",
            "２０２６-11-02T09:00:03Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_millis(&s);
        }

        #[test]
        fn order_follows_the_clock(a in 0i64..4_000_000_000_000, b in 0i64..4_000_000_000_000) {
            let fmt = format_rfc3339_millis;
            prop_assert_eq!(parse_rfc3339_millis(&fmt(a)), Some(a));
            prop_assert_eq!(parse_rfc3339_millis(&fmt(a)) < parse_rfc3339_millis(&fmt(b)), a < b);
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_611_246_599_681),
            "2021-01-21T16:29:59.681Z"
        );
        assert_eq!(
            format_rfc3339_millis(1_709_164_800_123),
            "2024-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
