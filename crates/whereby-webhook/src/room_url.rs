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
/// A `room_name` without its leading `/` gets one. The result's host is always
/// `{subdomain}.{base_domain}`; anything that could change that, or add a query or
/// fragment, is refused.
///
/// # Errors
/// [`RoomUrlError::Subdomain`] when `subdomain` is not a DNS label (1–63 letters,
/// digits or hyphens, no hyphen at either end); [`RoomUrlError::RoomName`] when
/// `room_name` is empty, too long, starts with `//`, or holds a character outside
/// RFC 3986's path characters (`?`, `#`, `\`, spaces, controls, non-ASCII, a `%` not
/// followed by two hex digits).
///
/// ```
/// use whereby_webhook::{room_url, BaseDomain};
///
/// let base = BaseDomain::default();
/// assert_eq!(room_url("acme", "/standup", &base)?, "https://acme.whereby.com/standup");
/// assert_eq!(room_url("acme", "standup", &base)?, "https://acme.whereby.com/standup");
/// assert!(room_url("evil.com#", "/x", &base).is_err());
/// assert!(room_url("acme", "/x?next=//evil.com", &base).is_err());
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
    url.push_str(subdomain);
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

fn check_room_name(room_name: &str) -> Result<(), RoomUrlError> {
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
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return fail("contains '%' not followed by two hex digits".to_owned());
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
        i += 1;
    }
    Ok(())
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
        ] {
            let err = url("acme", room).unwrap_err();
            assert_eq!(err.field(), "data.roomName", "{room:?}");
        }
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
    }
}
