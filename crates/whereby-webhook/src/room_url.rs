//! Building a room URL that cannot leave the base domain.
//!
//! The room URL is handed to an assistant that will join the room, so a payload
//! must never be able to point it at another host: the subdomain has to be one DNS
//! label, and the room name may only hold characters that stay inside a URL path.

use std::fmt;
use std::str::FromStr;

/// Whereby's own domain, the default base of every room URL.
pub const DEFAULT_BASE_DOMAIN: &str = "whereby.com";

/// Longest room name accepted; Whereby's are far shorter, and a bound keeps a
/// hostile payload from producing an unbounded URL.
pub const MAX_ROOM_NAME_LEN: usize = 1024;

/// A validated base domain such as `whereby.com`: one or more DNS labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseDomain(String);

impl BaseDomain {
    /// Validates a base domain.
    ///
    /// # Errors
    /// When `domain` is empty, longer than 253 bytes, one of its dot-separated
    /// labels is not a DNS label, or the last label starts with a digit (URL parsers
    /// would read the host as an IPv4 address).
    ///
    /// ```
    /// use whereby_webhook::BaseDomain;
    /// assert!(BaseDomain::new("whereby.example").is_ok());
    /// assert!(BaseDomain::new("evil.com/x").is_err());
    /// ```
    pub fn new(domain: &str) -> Result<Self, InvalidBaseDomain> {
        if domain.is_empty() || domain.len() > 253 {
            return Err(InvalidBaseDomain(domain.to_owned()));
        }
        // A last label that starts with a digit (`00`, `0x1f`) makes WHATWG URL
        // parsers read the host as an IPv4 address and refuse it; no TLD does.
        if domain
            .split('.')
            .all(|label| label_problem(label).is_none())
            && !domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_digit()))
        {
            Ok(BaseDomain(domain.to_ascii_lowercase()))
        } else {
            Err(InvalidBaseDomain(domain.to_owned()))
        }
    }

    /// The domain, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BaseDomain {
    fn default() -> Self {
        BaseDomain(DEFAULT_BASE_DOMAIN.to_owned())
    }
}

impl FromStr for BaseDomain {
    type Err = InvalidBaseDomain;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaseDomain::new(s)
    }
}

impl fmt::Display for BaseDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A base domain that is not a sequence of DNS labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid base domain (expected DNS labels separated by dots, e.g. whereby.com)"
)]
pub struct InvalidBaseDomain(pub String);

/// Why a payload cannot give a room URL. Each variant names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomUrlError {
    /// `data.subdomain` is not a single DNS label.
    #[error("`data.subdomain` is invalid: {0}")]
    Subdomain(String),
    /// `data.roomName` could leave the URL's path.
    #[error("`data.roomName` is invalid: {0}")]
    RoomName(String),
}

impl RoomUrlError {
    /// The JSON path of the field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RoomUrlError::Subdomain(_) => "data.subdomain",
            RoomUrlError::RoomName(_) => "data.roomName",
        }
    }
}

/// Builds `https://{subdomain}.{base_domain}{room_name}`.
///
/// A `room_name` without its leading `/` gets one, and the subdomain is written in
/// lower case (DNS names are case-insensitive). The result's host is always
/// `{subdomain}.{base_domain}`; anything that could change that, or add a query or
/// fragment, is refused.
///
/// One room has one URL: a room name that another spelling of the same path could
/// stand for (dot segments, empty segments, escapes that are not needed or not in
/// upper case, an escaped slash) is refused rather than rewritten, so two accepted
/// room names that differ are two rooms (see [`check_room_name`]).
///
/// # Errors
/// [`RoomUrlError::Subdomain`] when `subdomain` is not a DNS label (1–63 letters,
/// digits or hyphens, no hyphen at either end); [`RoomUrlError::RoomName`] when
/// `room_name` is refused by [`check_room_name`].
///
/// ```
/// use whereby_webhook::{room_url, BaseDomain};
///
/// let base = BaseDomain::default();
/// assert_eq!(room_url("acme", "/standup", &base)?, "https://acme.whereby.com/standup");
/// assert_eq!(room_url("ACME", "standup", &base)?, "https://acme.whereby.com/standup");
/// assert!(room_url("evil.com#", "/x", &base).is_err());
/// assert!(room_url("acme", "/x?next=//evil.com", &base).is_err());
/// assert!(room_url("acme", "/x/../standup", &base).is_err());
/// # Ok::<(), whereby_webhook::RoomUrlError>(())
/// ```
pub fn room_url(
    subdomain: &str,
    room_name: &str,
    base_domain: &BaseDomain,
) -> Result<String, RoomUrlError> {
    check_subdomain(subdomain)?;
    check_room_name(room_name)?;
    let slash = if room_name.starts_with('/') { "" } else { "/" };
    let mut url = String::with_capacity(
        8 + subdomain.len() + 1 + base_domain.0.len() + slash.len() + room_name.len(),
    );
    url.push_str("https://");
    let host = url.len();
    url.push_str(subdomain);
    url[host..].make_ascii_lowercase();
    url.push('.');
    url.push_str(&base_domain.0);
    url.push_str(slash);
    url.push_str(room_name);
    Ok(url)
}

/// Checks that `subdomain` can stand before the base domain in a room URL:
/// one DNS label of plain ASCII.
///
/// # Errors
/// [`RoomUrlError::Subdomain`] saying what is wrong.
///
/// ```
/// use whereby_webhook::room_url::check_subdomain;
/// assert!(check_subdomain("acme").is_ok());
/// assert!(check_subdomain("acme.evil.com").is_err());
/// ```
pub fn check_subdomain(subdomain: &str) -> Result<(), RoomUrlError> {
    if let Some(problem) = label_problem(subdomain) {
        return Err(RoomUrlError::Subdomain(problem));
    }
    // Hyphens in the 3rd and 4th places are reserved for IDNA (`xn--…`); a
    // payload's invalid punycode would give a URL that browsers refuse, and an
    // organisation's subdomain is plain ASCII.
    if subdomain.get(2..4) == Some("--") {
        return Err(RoomUrlError::Subdomain(
            "must not have '--' in its 3rd and 4th places (reserved for IDNA)".to_owned(),
        ));
    }
    Ok(())
}

/// What is wrong with a DNS label, if anything.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if label.len() > 63 {
        return Some(format!(
            "is {} bytes long; a DNS label has at most 63",
            label.len()
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(format!(
            "contains {bad:?}; only letters, digits and '-' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("must not start or end with '-'".to_owned());
    }
    None
}

/// Checks that `room_name` can be the path of a room URL, and is the only
/// spelling of its path that can.
///
/// It must stay inside the path: RFC 3986 path characters only (no `?`, `#`, `\`,
/// space, control or non-ASCII character, no `%` without two hex digits), at most
/// [`MAX_ROOM_NAME_LEN`] bytes, not starting with `//`.
///
/// And it must be in normal form, because rooms are told apart (claims, room
/// state) by their names: URL parsers and servers read `/./a`, `/x/../a`, `/a/`,
/// `//a`, `/%61` and `/%3a` as `/a` or `/%3A`, and some read `%2F` as a `/`. So
/// no `.` or `..` segment, no empty segment, and a `%` escape only for a
/// character that cannot stand as itself (not a letter, digit, `-._~`), in upper
/// case, and never of `/` or `\`. Upper and lower case letters stay apart.
///
/// # Errors
/// [`RoomUrlError::RoomName`] saying what is wrong.
///
/// ```
/// use whereby_webhook::room_url::check_room_name;
/// assert!(check_room_name("/standup-3f9a2c").is_ok());
/// assert!(check_room_name("/team%20a").is_ok());
/// for refused in ["/./standup", "/x/../standup", "/standup/", "/a//b", "/%73tandup", "/a%2Fb", "/a%3ab"] {
///     assert!(check_room_name(refused).is_err(), "{refused}");
/// }
/// ```
pub fn check_room_name(room_name: &str) -> Result<(), RoomUrlError> {
    let fail = |why: String| Err(RoomUrlError::RoomName(why));
    let path = room_name.strip_prefix('/').unwrap_or(room_name);
    if path.is_empty() {
        return fail("names no room".to_owned());
    }
    if room_name.len() > MAX_ROOM_NAME_LEN {
        return fail(format!("is longer than {MAX_ROOM_NAME_LEN} bytes"));
    }
    if path.starts_with('/') {
        return fail("must not start with '//'".to_owned());
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    let mut segment = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let Some(escaped) = escaped_byte(bytes.get(i + 1..i + 3)) else {
                return fail("contains '%' not followed by two hex digits".to_owned());
            };
            let text = &path[i..i + 3];
            if matches!(escaped, b'/' | b'\\') {
                return fail(format!("contains {text}, an escaped slash"));
            }
            if is_unreserved(escaped) {
                return fail(format!(
                    "contains {text}, which must be written as {:?}",
                    char::from(escaped)
                ));
            }
            if text.bytes().any(|h| h.is_ascii_lowercase()) {
                return fail(format!(
                    "contains {text}; escapes are written in upper case ({})",
                    text.to_ascii_uppercase()
                ));
            }
            i += 3;
            continue;
        }
        if !is_path_byte(b) {
            let shown = path[i..].chars().next().unwrap_or('?');
            return fail(format!(
                "contains {shown:?}, which cannot stand in a URL path"
            ));
        }
        if b == b'/' {
            check_segment(&path[segment..i])?;
            segment = i + 1;
        }
        i += 1;
    }
    check_segment(&path[segment..])
}

/// A segment of a room name's path: neither empty nor a dot segment.
fn check_segment(segment: &str) -> Result<(), RoomUrlError> {
    match segment {
        "" => Err(RoomUrlError::RoomName(
            "has an empty segment ('//' or a '/' at the end)".to_owned(),
        )),
        "." | ".." => Err(RoomUrlError::RoomName(format!(
            "has a {segment:?} segment, which URL parsers remove"
        ))),
        _ => Ok(()),
    }
}

/// The byte two hex digits stand for, if they are two hex digits.
fn escaped_byte(hex: Option<&[u8]>) -> Option<u8> {
    let digit = |h: u8| char::from(h).to_digit(16);
    match hex? {
        [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
        _ => None,
    }
}

/// RFC 3986 `unreserved`: never escaped in a normalised URL (§6.2.2.2).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` (less `%`, handled by the caller) plus `/`.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(sub: &str, room: &str) -> Result<String, RoomUrlError> {
        room_url(sub, room, &BaseDomain::default())
    }

    #[test]
    fn builds_the_reference_url() {
        assert_eq!(
            url("joebloggsinc", "/af0b7b66-c738-4981-887a-ad416754f32d").unwrap(),
            "https://joebloggsinc.whereby.com/af0b7b66-c738-4981-887a-ad416754f32d"
        );
        let base = BaseDomain::new("Rooms.Example.org").unwrap();
        assert_eq!(
            room_url("acme", "r", &base).unwrap(),
            "https://acme.rooms.example.org/r"
        );
        assert_eq!(
            url("a-1", "/r%20oom:x@y").unwrap(),
            "https://a-1.whereby.com/r%20oom:x@y"
        );
    }

    #[test]
    fn rejects_subdomains_that_are_not_one_label() {
        for sub in [
            "",
            "evil.com",
            "a/b",
            "a@b",
            "a:80",
            "-a",
            "a-",
            "a b",
            "ä",
            "a#",
            "a?",
            &"x".repeat(64),
        ] {
            let err = url(sub, "/room").unwrap_err();
            assert_eq!(err.field(), "data.subdomain", "{sub:?}");
        }
    }

    #[test]
    fn rejects_room_names_that_leave_the_path() {
        for room in [
            "",
            "/",
            "//evil.com",
            "/a?b",
            "/a#b",
            "/a\\b",
            "/a b",
            "/a\nb",
            "/ä",
            "/%zz",
            "/%4",
            "\\evil",
            &format!("/{}", "r".repeat(MAX_ROOM_NAME_LEN)),
            // Another spelling of a path: URL parsers and servers read these as
            // `/room`, `/alias1`, `/a/b` …
            "/./alias1",
            "/x/../room",
            "/x/..",
            "/.",
            "..",
            "/room/",
            "/a//b",
            "room/",
            "/%2e%2e/room",
            "/%2E/room",
            "/%72oom",
            "/r%6Fom",
            "/a%7Eb",
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a%3ab",
            "/a%c3%a9",
        ] {
            let err = url("acme", room).unwrap_err();
            assert_eq!(err.field(), "data.roomName", "{room:?}");
        }
    }

    #[test]
    fn one_room_has_one_url() {
        // The subdomain in lower case, the room name as it is.
        assert_eq!(
            url("ACME", "/Standup").unwrap(),
            url("acme", "Standup").unwrap()
        );
        assert_ne!(
            url("acme", "/Standup").unwrap(),
            url("acme", "/standup").unwrap()
        );
        // Dots within a segment, and escapes that are needed, in upper case.
        for kept in ["/a.b", "/..a", "/a./b", "/a%3A%C3%A9", "/x/y", "/%25"] {
            assert_eq!(
                url("acme", kept).unwrap(),
                format!("https://acme.whereby.com{kept}")
            );
        }
    }

    /// An independent reading of RFC 3986's normal form of a path (§6.2.2:
    /// unreserved characters unescaped, escapes in upper case; §5.2.4: no dot
    /// segments), with empty segments dropped as many servers do.
    fn normal_form(path: &str) -> String {
        let bytes = path.as_bytes();
        let mut decoded = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(hex) = path.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    decoded.push(char::from(b));
                } else {
                    decoded.push('%');
                    decoded.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
            decoded.push(char::from(bytes[i]));
            i += 1;
        }
        let mut segments: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        segments.join("/")
    }

    #[test]
    fn rejects_bad_base_domains() {
        for d in ["", ".", "a..b", "evil.com/", "a b", "x.-y", "a:1"] {
            assert!(BaseDomain::new(d).is_err(), "{d:?}");
        }
    }

    /// Found by `fuzz/room_url` (input `b"oam\n0oam\n00"`): a base domain whose last
    /// label is a number gave `https://oam.00/0oam`, which WHATWG URL parsers (browsers,
    /// the `url` crate) refuse as an invalid IPv4 address; so does a hex `0x…` label.
    #[test]
    fn fuzz_regression_numeric_last_label_is_not_a_base_domain() {
        for d in ["00", "example.123", "rooms.0x1f", "a.0x", "1.2.3.4"] {
            assert!(BaseDomain::new(d).is_err(), "{d:?}");
        }
        for d in ["whereby.com", "x1.example", "1password.com", "0x.example"] {
            assert!(BaseDomain::new(d).is_ok(), "{d:?}");
        }
        let input: &[u8] = b"oam\n0oam\n00";
        let text = std::str::from_utf8(input).unwrap();
        let base = text.rsplit('\n').next().unwrap();
        assert!(BaseDomain::new(base).is_err());
    }

    /// Found by `fuzz/room_url` (input `b"XN--Na-NNQQQQQQQQQQQQ\np"`): a subdomain with
    /// the IDNA prefix `xn--` that is not valid punycode is a DNS label, so `room_url`
    /// accepts it, but WHATWG URL parsers refuse the host
    /// (`https://XN--Na-NNQQQQQQQQQQQQ.whereby.com/p`). The URL cannot point at another
    /// host; it just does not open. Reserved (`??--`) subdomains are now refused.
    #[test]
    fn fuzz_regression_invalid_a_label_subdomain_is_refused() {
        let input: &[u8] = b"XN--Na-NNQQQQQQQQQQQQ\np";
        let text = std::str::from_utf8(input).unwrap();
        let (sub, room) = text.split_once('\n').unwrap();
        assert_eq!(url(sub, room).unwrap_err().field(), "data.subdomain");
        assert_eq!(
            url("xn--bcher-kva", "/r").unwrap_err().field(),
            "data.subdomain"
        );
        assert!(url("a-b--c", "/r").is_ok());
    }

    proptest! {
        /// Whatever the payload holds, an accepted URL's host is the subdomain under
        /// the base domain, and it has neither query nor fragment. Checked with an
        /// independent URL parser.
        #[test]
        fn accepted_urls_stay_on_the_base_domain(sub in "\\PC{0,12}|[a-z0-9-]{1,10}", room in "\\PC{0,24}|/[a-z0-9%/?#@:.\\\\-]{0,16}") {
            if let Ok(built) = url(&sub, &room) {
                let parsed = url::Url::parse(&built).expect("built URL parses");
                let host = parsed.host_str().unwrap();
                prop_assert_eq!(host, format!("{}.whereby.com", sub.to_ascii_lowercase()));
                prop_assert!(parsed.query().is_none());
                prop_assert!(parsed.fragment().is_none());
                prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                prop_assert_eq!(parsed.port(), None);
            }
        }

        /// One room, one URL: an accepted room name is already in normal
        /// form, so no other accepted spelling stands for the same path; and
        /// a WHATWG parser (what browsers and assistants use) leaves the path
        /// exactly as built.
        #[test]
        fn accepted_room_names_are_in_normal_form(room in "/?([a-zA-Z.~%2-]|%[0-9a-fA-F]{2}|/){0,16}") {
            if let Ok(built) = url("acme", &room) {
                let path = room.strip_prefix('/').unwrap_or(&room);
                prop_assert_eq!(normal_form(path), path);
                let parsed = url::Url::parse(&built).expect("built URL parses");
                prop_assert_eq!(parsed.path(), format!("/{path}"));
            }
        }
    }
}
