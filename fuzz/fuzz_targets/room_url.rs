//! Room URLs: `BaseDomain::new` and `room_url`.
//!
//! Input: `subdomain \n room name [\n base domain]` (no base domain: whereby.com).
//! Properties: an accepted URL is `https://{subdomain}.{base}/…` with the subdomain in
//! lower case, holds no `?`, `#`, `\`, whitespace, control or non-ASCII character, and
//! an independent URL parser (the `url` crate, WHATWG rules) reads it with that exact
//! host and no query, fragment, user or port, and leaves its path as built (one room,
//! one URL: no dot segment for a parser to remove).
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::{BaseDomain, room_url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let subdomain = lines.next().unwrap_or("");
    let room_name = lines.next().unwrap_or("");
    let base = match lines.next() {
        None => BaseDomain::default(),
        Some(domain) => match BaseDomain::new(domain) {
            Ok(base) => {
                assert_eq!(base.as_str(), domain.to_ascii_lowercase());
                assert!(!base.as_str().is_empty());
                assert!(
                    base.as_str().bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'.'),
                    "{base}"
                );
                base
            }
            Err(_) => return,
        },
    };

    let Ok(url) = room_url(subdomain, room_name, &base) else {
        return;
    };

    let prefix = format!("https://{}.{base}/", subdomain.to_ascii_lowercase());
    assert!(
        url.starts_with(&prefix),
        "{url:?} does not start with {prefix:?}"
    );
    assert!(
        url.bytes().all(|b| b.is_ascii_graphic()),
        "{url:?} holds whitespace, a control or non-ASCII"
    );
    assert!(!url.contains(['?', '#', '\\']), "{url:?}");
    assert!(
        !url[prefix.len()..].starts_with('/'),
        "{url:?}: path starts with //"
    );

    let parsed = match url::Url::parse(&url) {
        Ok(parsed) => parsed,
        // Subdomains with `??--` are refused by `room_url`; an operator's base
        // domain may still hold an `xn--` label of invalid punycode, which WHATWG
        // parsers refuse. That is configuration, not payload.
        Err(url::ParseError::IdnaError) if has_a_label(base.as_str()) => {
            return;
        }
        Err(e) => panic!("{url:?} does not parse: {e}"),
    };
    let host = format!("{}.{}", subdomain.to_ascii_lowercase(), base);
    assert_eq!(parsed.scheme(), "https");
    assert_eq!(parsed.host_str(), Some(host.as_str()), "{url:?}");
    assert_eq!(parsed.port(), None, "{url:?}");
    assert!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "{url:?}"
    );
    assert_eq!(parsed.query(), None, "{url:?}");
    assert_eq!(parsed.fragment(), None, "{url:?}");
    assert_eq!(parsed.path(), &url[prefix.len() - 1..], "{url:?}");
});

/// Whether a label of `host` starts with the IDNA ACE prefix `xn--`.
fn has_a_label(host: &str) -> bool {
    host.split('.').any(|label| {
        label
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
    })
}
