//! The `Whereby-Signature` header: verifying and signing.
//!
//! The header reads `t=<unix seconds>,v1=<hex HMAC-SHA256>`; the HMAC is taken over
//! `"<t>.<raw body>"` with the webhook's signing secret. During a secret rotation a
//! header may carry several `v1=` entries, and a verifier may hold several secrets:
//! any pair that matches is enough.
//!
//! Why one file: verifying and signing share the header's grammar and the
//! HMAC, and are tested against each other; the last 290 lines are those
//! tests: a known vector, tolerance edges, rotation, and property tests that
//! no header makes verification panic.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Name of the header Whereby signs its deliveries with.
pub const SIGNATURE_HEADER: &str = "Whereby-Signature";

/// How far a signature's timestamp may be from now, either way, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was not accepted. Each failure is its own variant so
/// that an operator can tell a misconfigured secret from a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// There is no `Whereby-Signature` header.
    #[error("the Whereby-Signature header is missing")]
    Missing,
    /// The header has no `t=<seconds>`, more than one, or no `v1=<64 hex digits>`.
    #[error("the Whereby-Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is further from now than the tolerance.
    #[error(
        "the Whereby-Signature timestamp {timestamp} is {skew_secs} s from now, more than the \
         tolerance of {tolerance_secs} s"
    )]
    Stale {
        /// The header's `t`.
        timestamp: u64,
        /// Distance from now, in seconds.
        skew_secs: u64,
        /// The verifier's tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// No `v1` entry matches any configured secret.
    #[error("no signature in the Whereby-Signature header matches a configured secret")]
    NoMatch,
}

/// Why a signing secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is empty or only whitespace.
    #[error("the signing secret is empty or only whitespace")]
    Blank,
}

/// A webhook signing secret, ready to sign: the key's HMAC state is computed once so
/// each verification only hashes the payload. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningSecret {
    keyed: HmacSha256,
}

impl SigningSecret {
    /// Uses `secret` as given (Whereby's secrets are opaque strings; every byte counts).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; the fallback keeps
        // the function total without a panic path.
        let keyed = HmacSha256::new_from_slice(secret.as_ref())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        SigningSecret { keyed }
    }

    /// Like [`SigningSecret::new`], but refuses a secret that is empty or only
    /// whitespace. No secret Whereby issues looks like that; such a value is an
    /// unset or badly quoted variable, and anyone could sign with it.
    ///
    /// # Errors
    /// [`SecretError::Blank`].
    pub fn try_new(secret: impl AsRef<[u8]>) -> Result<Self, SecretError> {
        let secret = secret.as_ref();
        let blank = std::str::from_utf8(secret).is_ok_and(|text| text.trim().is_empty());
        if blank {
            return Err(SecretError::Blank);
        }
        Ok(SigningSecret::new(secret))
    }

    /// The raw HMAC-SHA256 of `"<timestamp>.<body>"`.
    pub fn mac(&self, timestamp: u64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        let digits = itoa_u64(timestamp);
        mac.update(digits.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// A complete header value, `t=<timestamp>,v1=<hex>`, for `body`.
    ///
    /// ```
    /// use whereby_webhook::{SigningSecret, Verifier};
    ///
    /// let secret = SigningSecret::new("whsec_test");
    /// let header = secret.sign(1_700_000_000, b"{}");
    /// let verifier = Verifier::new([secret]);
    /// assert!(verifier.verify(Some(header.as_bytes()), b"{}", 1_700_000_010).is_ok());
    /// ```
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let mut header = format!("t={timestamp},v1=");
        push_hex(&mut header, &self.mac(timestamp, body));
        header
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Checks `Whereby-Signature` headers against one or more secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<SigningSecret>,
    tolerance: Duration,
}

/// What a successful verification proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp (`t`).
    pub timestamp: u64,
}

impl Verifier {
    /// A verifier accepting a signature made with any of `secrets`, with the default
    /// tolerance of five minutes. With no secrets, nothing verifies.
    pub fn new(secrets: impl IntoIterator<Item = SigningSecret>) -> Self {
        Verifier {
            secrets: secrets.into_iter().collect(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Sets how far the signed timestamp may be from now, in either direction.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The configured tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// How many secrets this verifier holds.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Verifies `header` (the raw header value, `None` when absent) over the raw
    /// `body`, with `now` in Unix seconds.
    ///
    /// The checks run in order: presence, syntax, timestamp, then the HMAC, so a
    /// replayed delivery costs no hashing.
    ///
    /// # Errors
    /// The first check that fails, as a [`SignatureError`].
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let parsed = SignatureHeader::parse(header)?;
        let skew = now.abs_diff(parsed.timestamp);
        if skew > self.tolerance.as_secs() {
            return Err(SignatureError::Stale {
                timestamp: parsed.timestamp,
                skew_secs: skew,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let expected = secret.mac(parsed.timestamp, body);
            for candidate in parsed.signatures() {
                matched |= expected.ct_eq(&candidate);
            }
        }
        if bool::from(matched) {
            Ok(Verified {
                timestamp: parsed.timestamp,
            })
        } else {
            Err(SignatureError::NoMatch)
        }
    }

    /// [`Verifier::verify`] against the system clock.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_now(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Verified, SignatureError> {
        self.verify(header, body, unix_now())
    }
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A syntactically valid header, borrowed; the `v1` entries are decoded lazily so
/// verification allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct SignatureHeader<'a> {
    /// The `t` value.
    pub timestamp: u64,
    raw: &'a str,
}

impl<'a> SignatureHeader<'a> {
    /// Parses a header value. Entries are comma-separated `key=value` pairs with
    /// optional spaces; exactly one `t`, and at least one usable `v1` (64 hex
    /// digits). Everything else is skipped: other keys (a future `v2`), `v1`
    /// entries that are not 64 hex digits, empty entries (a trailing comma) and
    /// entries without `=`, as Stripe's libraries (whose scheme this is) skip them.
    /// A header is refused only for what it lacks, never for what it adds,
    /// because a refusal is final for Whereby: the event would be lost although
    /// one of its signatures matches.
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] saying what is wrong.
    pub fn parse(header: &'a [u8]) -> Result<Self, SignatureError> {
        let raw = std::str::from_utf8(header)
            .map_err(|_| SignatureError::Malformed("it is not ASCII text"))?;
        let mut timestamp = None;
        let mut usable_v1 = false;
        for entry in raw.split(',') {
            let Some((key, value)) = entry.trim().split_once('=') else {
                continue;
            };
            match key.trim() {
                "t" => {
                    // Two timestamps would leave open which one was signed.
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed("`t` appears more than once"));
                    }
                    let value = value.trim();
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(SignatureError::Malformed("`t` is not a number of seconds"));
                    }
                    timestamp = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| SignatureError::Malformed("`t` is out of range"))?,
                    );
                }
                "v1" => usable_v1 |= decode_hex32(value.trim()).is_some(),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("`t` is missing"))?;
        if !usable_v1 {
            return Err(SignatureError::Malformed(
                "no `v1` signature of 64 hex digits",
            ));
        }
        Ok(SignatureHeader { timestamp, raw })
    }

    /// The decoded `v1` signatures; entries that are not 64 hex digits are
    /// skipped.
    pub fn signatures(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.raw.split(',').filter_map(|entry| {
            let (key, value) = entry.trim().split_once('=')?;
            if key.trim() == "v1" {
                decode_hex32(value.trim())
            } else {
                None
            }
        })
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// Decimal digits of `n` without going through `fmt` on the hot path.
fn itoa_u64(mut n: u64) -> DecimalBuf {
    let mut buf = DecimalBuf {
        digits: [0; 20],
        start: 20,
    };
    loop {
        buf.start -= 1;
        buf.digits[buf.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf
}

struct DecimalBuf {
    digits: [u8; 20],
    start: usize,
}

impl DecimalBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_test_4f7c1e9a2b6d8035";
    const T: u64 = 1_606_227_791;
    const BODY: &[u8] = br#"{"id":"x"}"#;
    /// Computed independently with Python's `hmac` module:
    /// `hmac.new(SECRET, b"1606227791." + BODY, sha256).hexdigest()`.
    const KNOWN_V1: &str = "556b63270c8987cf95fc51a4c74a7ae6935201d22d9e9158b437c331979030a8";

    fn verifier() -> Verifier {
        Verifier::new([SigningSecret::new(SECRET)])
    }

    fn header(v1: &str) -> String {
        format!("t={T},v1={v1}")
    }

    #[test]
    fn known_vector() {
        assert_eq!(SigningSecret::new(SECRET).sign(T, BODY), header(KNOWN_V1));
        let h = header(KNOWN_V1);
        assert_eq!(
            verifier().verify(Some(h.as_bytes()), BODY, T),
            Ok(Verified { timestamp: T })
        );
    }

    #[test]
    fn upper_case_hex_and_spaces_are_accepted() {
        let h = format!("t={T}, v1={}", KNOWN_V1.to_uppercase());
        assert!(verifier().verify(Some(h.as_bytes()), BODY, T).is_ok());
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let h = header(KNOWN_V1);
        assert_eq!(
            verifier().verify(Some(h.as_bytes()), br#"{"id":"y"}"#, T),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn tolerance_edges_in_both_directions() {
        let v = verifier().with_tolerance(Duration::from_secs(60));
        let h = header(KNOWN_V1);
        for now in [T - 60, T, T + 60] {
            assert!(v.verify(Some(h.as_bytes()), BODY, now).is_ok(), "now={now}");
        }
        for now in [T - 61, T + 61, 0, u64::MAX] {
            assert!(
                matches!(
                    v.verify(Some(h.as_bytes()), BODY, now),
                    Err(SignatureError::Stale { .. })
                ),
                "now={now}"
            );
        }
        assert_eq!(
            v.verify(Some(h.as_bytes()), BODY, T + 61),
            Err(SignatureError::Stale {
                timestamp: T,
                skew_secs: 61,
                tolerance_secs: 60
            })
        );
    }

    #[test]
    fn default_tolerance_is_five_minutes() {
        let h = header(KNOWN_V1);
        assert!(verifier().verify(Some(h.as_bytes()), BODY, T + 300).is_ok());
        assert!(
            verifier()
                .verify(Some(h.as_bytes()), BODY, T + 301)
                .is_err()
        );
    }

    #[test]
    fn rotation_any_secret_any_entry() {
        let old = SigningSecret::new("old-secret");
        let new = SigningSecret::new(SECRET);
        let both = Verifier::new([old.clone(), new.clone()]);
        // Signed with either secret alone.
        for s in [&old, &new] {
            let h = s.sign(T, BODY);
            assert!(both.verify(Some(h.as_bytes()), BODY, T).is_ok());
        }
        // A header with two entries, only the second of which matches.
        let other = SigningSecret::new("unrelated").sign(T, BODY);
        let other_v1 = other.split("v1=").nth(1).unwrap();
        let h = format!("t={T},v1={other_v1},v1={KNOWN_V1}");
        assert!(verifier().verify(Some(h.as_bytes()), BODY, T).is_ok());
        // Neither matches.
        let h = format!("t={T},v1={other_v1}");
        assert_eq!(
            verifier().verify(Some(h.as_bytes()), BODY, T),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn no_secrets_verifies_nothing() {
        let h = header(KNOWN_V1);
        assert_eq!(
            Verifier::new([]).verify(Some(h.as_bytes()), BODY, T),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn each_failure_is_distinct() {
        let v = verifier();
        assert_eq!(v.verify(None, BODY, T), Err(SignatureError::Missing));
        let malformed = [
            "".to_owned(),
            "garbage".to_owned(),
            format!("v1={KNOWN_V1}"),
            format!("t={T}"),
            format!("t=abc,v1={KNOWN_V1}"),
            format!("t=-5,v1={KNOWN_V1}"),
            format!("t={T},t={T},v1={KNOWN_V1}"),
            format!("t={T},v1=abc"),
            format!("t={T},v1={}", &KNOWN_V1[..63]),
            format!("t={T},v1={}zz", &KNOWN_V1[..62]),
            format!("t=99999999999999999999999,v1={KNOWN_V1}"),
        ];
        for h in malformed {
            assert!(
                matches!(
                    v.verify(Some(h.as_bytes()), BODY, T),
                    Err(SignatureError::Malformed(_))
                ),
                "{h:?}"
            );
        }
        assert!(matches!(
            v.verify(Some(&[0xff, 0xfe]), BODY, T),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn entries_that_carry_no_signature_are_skipped() {
        let v = verifier();
        let other = SigningSecret::new("unrelated").sign(T, BODY);
        let other_v1 = other.split("v1=").nth(1).unwrap();
        for h in [
            format!("t={T},v1=,v1={KNOWN_V1}"),
            format!("t={T},v1={KNOWN_V1},v1=abc"),
            format!("t={T},v1={}zz,v1={KNOWN_V1}", &KNOWN_V1[..62]),
            format!("t={T},v1={KNOWN_V1}{KNOWN_V1},v1={KNOWN_V1}"),
            format!("t={T},v1={KNOWN_V1},"),
            format!("t={T},,v1={KNOWN_V1}, ,"),
            format!(",t={T},garbage,v1={KNOWN_V1}"),
        ] {
            assert_eq!(
                v.verify(Some(h.as_bytes()), BODY, T),
                Ok(Verified { timestamp: T }),
                "{h:?}"
            );
        }
        // Skipping never turns a mismatch into a match.
        let h = format!("t={T},v1=,v1={other_v1},");
        assert_eq!(
            v.verify(Some(h.as_bytes()), BODY, T),
            Err(SignatureError::NoMatch)
        );
        // With nothing usable left, the header is still malformed.
        for h in [
            format!("t={T},v1="),
            format!("t={T},v1=,"),
            format!("t={T},v1=abc,v1={}", &KNOWN_V1[..63]),
            format!("t={T},,"),
        ] {
            assert_eq!(
                v.verify(Some(h.as_bytes()), BODY, T),
                Err(SignatureError::Malformed(
                    "no `v1` signature of 64 hex digits"
                )),
                "{h:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let h = format!("t={T},v0=whatever,v1={KNOWN_V1}");
        assert!(verifier().verify(Some(h.as_bytes()), BODY, T).is_ok());
    }

    #[test]
    fn blank_secrets_are_refused() {
        for blank in ["", " ", "   ", "\t\r\n", "\u{a0}\u{2003}"] {
            assert_eq!(
                SigningSecret::try_new(blank).map(|_| ()),
                Err(SecretError::Blank),
                "{blank:?}"
            );
        }
        // Only a blank secret: spaces around a real one are part of it.
        for secret in [SECRET, " x ", "\0", "\u{a0}x"] {
            assert!(SigningSecret::try_new(secret).is_ok(), "{secret:?}");
        }
        assert!(SigningSecret::try_new([0xff_u8, b' ']).is_ok());
        let h = SigningSecret::try_new(SECRET).unwrap().sign(T, BODY);
        assert_eq!(h, header(KNOWN_V1));
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", verifier());
        assert!(!shown.contains("whsec"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    /// An entry that holds no usable signature and no timestamp: empty, blank,
    /// a `v1` that is not 64 hex digits, another key, or no `=` at all.
    fn junk_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(" ".to_owned()),
            Just("v1=".to_owned()),
            "v1=[0-9a-fA-F]{0,63}",
            "v1=[0-9a-f]{65,80}",
            "v1=[0-9a-f]{10}[g-zG-Z !]{1,4}[0-9a-f]{50}",
            "x[a-z0-9]{0,4}=[a-z0-9 ]{0,12}",
            "v0=[0-9a-f]{64}",
            "[a-z ]{1,8}",
        ]
    }

    proptest! {
        #[test]
        fn verify_never_panics(header in proptest::collection::vec(any::<u8>(), 0..200), body in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
            let _ = verifier().verify(Some(&header), &body, now);
        }

        #[test]
        fn verify_never_panics_on_header_like_text(header in "(t=[0-9]{0,22}|v1=[0-9a-fA-F]{0,66}|[a-z0-9 =]{0,8})(,(t=[0-9]{0,12}|v1=[0-9a-f]{64}|v1=.{0,4}| )){0,4}", now in any::<u64>()) {
            let _ = verifier().verify(Some(header.as_bytes()), BODY, now);
        }

        #[test]
        fn entries_without_a_signature_change_nothing(
            junk in proptest::collection::vec(junk_entry(), 0..6),
            matching in any::<bool>(),
            trailing_comma in any::<bool>(),
            order in any::<proptest::sample::Index>(),
        ) {
            let other = SigningSecret::new("unrelated").sign(T, BODY);
            let v1 = if matching { KNOWN_V1 } else { other.split("v1=").nth(1).unwrap() };
            let mut entries = junk;
            entries.insert(order.index(entries.len() + 1), format!("v1={v1}"));
            entries.insert(0, format!("t={T}"));
            let mut h = entries.join(",");
            if trailing_comma {
                h.push(',');
            }
            let expected = if matching {
                Ok(Verified { timestamp: T })
            } else {
                Err(SignatureError::NoMatch)
            };
            prop_assert_eq!(verifier().verify(Some(h.as_bytes()), BODY, T), expected, "{:?}", h);
        }

        #[test]
        fn without_a_usable_v1_the_header_is_malformed(
            junk in proptest::collection::vec(junk_entry(), 0..6),
        ) {
            let mut entries = junk;
            entries.push(format!("t={T}"));
            let h = entries.join(",");
            prop_assert_eq!(
                verifier().verify(Some(h.as_bytes()), BODY, T),
                Err(SignatureError::Malformed("no `v1` signature of 64 hex digits"))
            );
        }

        #[test]
        fn sign_then_verify_round_trips(secret in proptest::collection::vec(any::<u8>(), 0..80), body in proptest::collection::vec(any::<u8>(), 0..256), t in 0u64..4_000_000_000) {
            let s = SigningSecret::new(&secret);
            let h = s.sign(t, &body);
            prop_assert_eq!(Verifier::new([s]).verify(Some(h.as_bytes()), &body, t), Ok(Verified { timestamp: t }));
        }
    }
}
