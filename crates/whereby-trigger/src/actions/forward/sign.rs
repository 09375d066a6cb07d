//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), so that a
//! `forward` receiver can check that a delivery came from this server, with
//! any library that implements the scheme.
//!
//! A signed request carries `webhook-id` (the delivery's `Idempotency-Key`),
//! `webhook-timestamp` (Unix seconds, the time of the attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`,
//! keyed with the bytes a `whsec_<base64>` secret encodes. With several
//! secrets (a rotation) the header holds one `v1,…` per secret, separated by
//! spaces, and a receiver that knows any one of them accepts the request.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `webhook-id`: the delivery's idempotency key.
pub(super) const WEBHOOK_ID: &str = "webhook-id";
/// `webhook-timestamp`: Unix seconds of the attempt.
pub(super) const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature`: `v1,<base64>`, one per secret, separated by spaces.
pub(super) const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// One signing secret, decoded and ready to sign with. Its `Debug` output
/// hides the key.
#[derive(Clone)]
pub struct SigningKey {
    /// Keyed once; each signature clones it (cheaper than keying again).
    keyed: HmacSha256,
}

impl SigningKey {
    /// Reads a `whsec_<base64>` secret. Padding is optional, as in the
    /// reference libraries (which add it before decoding), so a secret that
    /// one of them accepts is accepted here too.
    ///
    /// # Errors
    /// [`SigningSecretError`], which never shows the secret.
    pub fn parse(secret: &str) -> Result<SigningKey, SigningSecretError> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningSecretError::Prefix)?;
        let key = STANDARD_PAD_INDIFFERENT
            .decode(encoded)
            .map_err(|_| SigningSecretError::Base64)?;
        if key.is_empty() {
            return Err(SigningSecretError::Empty);
        }
        // HMAC takes a key of any length, so this cannot fail; mapped rather
        // than unwrapped all the same.
        let keyed = HmacSha256::new_from_slice(&key).map_err(|_| SigningSecretError::Empty)?;
        Ok(SigningKey { keyed })
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::with_capacity(3 + 44);
        self.push_signature(&mut out, id, timestamp, body);
        out
    }

    fn push_signature(&self, out: &mut String, id: &str, timestamp: u64, body: &[u8]) {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), out);
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// The `webhook-signature` value for `keys`: one `v1,…` per key, separated by
/// spaces, in the order configured.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut out = String::with_capacity(keys.len() * 48);
    for (n, key) in keys.iter().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        key.push_signature(&mut out, id, timestamp, body);
    }
    out
}

/// Why a signing secret was refused. The secret itself is never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningSecretError {
    /// The secret does not start with `whsec_`.
    #[error(
        "the secret does not start with `whsec_` (a Standard Webhooks secret is `whsec_` and base64)"
    )]
    Prefix,
    /// What follows `whsec_` is not standard base64.
    #[error(
        "what follows `whsec_` is not valid base64 (the standard alphabet A-Z a-z 0-9 + /, \
         padding optional)"
    )]
    Base64,
    /// The secret decodes to no bytes.
    #[error("the secret is empty after `whsec_`")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference libraries' own vector (standard-webhooks, Python
    /// `tests/test_webhooks.py`, `test_sign_function`; the same in the other
    /// languages' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_reference_vector_signs_as_the_libraries_do() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(key.sign(ID, TIMESTAMP, BODY), EXPECTED);
        assert_eq!(
            signature_header(std::slice::from_ref(&key), ID, TIMESTAMP, BODY),
            EXPECTED
        );
    }

    #[test]
    fn any_part_changed_changes_the_signature() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_ne!(key.sign("msg_other", TIMESTAMP, BODY), EXPECTED);
        assert_ne!(key.sign(ID, TIMESTAMP + 1, BODY), EXPECTED);
        assert_ne!(
            key.sign(ID, TIMESTAMP, br#"{"test": 2432232315}"#),
            EXPECTED
        );
        let other = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx").unwrap();
        assert_ne!(other.sign(ID, TIMESTAMP, BODY), EXPECTED);
    }

    #[test]
    fn a_rotation_signs_with_every_key_in_order() {
        let old = SigningKey::parse(SECRET).unwrap();
        let new = SigningKey::parse("whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=").unwrap();
        let header = signature_header(&[new.clone(), old], ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [new.sign(ID, TIMESTAMP, BODY).as_str(), EXPECTED]);
    }

    #[test]
    fn padding_is_optional_as_in_the_libraries() {
        // "a" is "YQ==" in base64.
        let padded = SigningKey::parse("whsec_YQ==").unwrap();
        let bare = SigningKey::parse("whsec_YQ").unwrap();
        assert_eq!(padded.sign(ID, 1, b"{}"), bare.sign(ID, 1, b"{}"));
    }

    #[test]
    fn bad_secrets_are_refused_without_being_shown() {
        let cases = [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SigningSecretError::Prefix,
            ),
            (
                "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SigningSecretError::Prefix,
            ),
            ("whsec_not base64!", SigningSecretError::Base64),
            ("whsec_abc_def", SigningSecretError::Base64),
            // URL-safe alphabet: not what the scheme uses.
            ("whsec_ab-_", SigningSecretError::Base64),
            // One symbol too many for a whole number of bytes.
            ("whsec_YWJjZ", SigningSecretError::Base64),
            ("whsec_", SigningSecretError::Empty),
        ];
        for (secret, expected) in cases {
            let error = SigningKey::parse(secret).unwrap_err();
            assert_eq!(error, expected, "{secret}");
            let tail = secret.trim_start_matches("whsec_");
            if !tail.is_empty() {
                assert!(!error.to_string().contains(tail), "{error}");
            }
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
    }
}
