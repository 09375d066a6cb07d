//! Verify: only a body whose signature checks out becomes a [`VerifiedBody`].
//!
//! The rest of the pipeline takes a `VerifiedBody`, never raw bytes, so an
//! unverified delivery cannot reach the rules by mistake.

use bytes::Bytes;
use whereby_webhook::{SignatureError, Verifier};

/// How deliveries are authenticated.
#[derive(Debug, Clone)]
pub enum SignaturePolicy {
    /// Every delivery must carry a valid `Whereby-Signature`.
    Required(Verifier),
    /// No secret is configured: deliveries are accepted unsigned.
    Unsigned,
}

/// A request body that passed the signature policy.
#[derive(Debug, Clone)]
pub struct VerifiedBody(Bytes);

impl VerifiedBody {
    /// The body bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl SignaturePolicy {
    /// Checks `body` against the `Whereby-Signature` header value, at `now` (Unix
    /// seconds).
    ///
    /// # Errors
    /// The [`SignatureError`] of a delivery that must be refused.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: Bytes,
        now: u64,
    ) -> Result<VerifiedBody, SignatureError> {
        match self {
            SignaturePolicy::Required(verifier) => {
                verifier.verify(header, &body, now)?;
                Ok(VerifiedBody(body))
            }
            SignaturePolicy::Unsigned => Ok(VerifiedBody(body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whereby_webhook::SigningSecret;

    #[test]
    fn required_policy_refuses_unsigned_bodies() {
        let policy = SignaturePolicy::Required(Verifier::new([SigningSecret::new("s")]));
        assert_eq!(
            policy
                .verify(None, Bytes::from_static(b"{}"), 0)
                .unwrap_err(),
            SignatureError::Missing
        );
        let header = SigningSecret::new("s").sign(10, b"{}");
        let ok = policy.verify(Some(header.as_bytes()), Bytes::from_static(b"{}"), 10);
        assert_eq!(ok.unwrap().bytes().as_ref(), b"{}");
    }

    #[test]
    fn unsigned_policy_accepts_anything() {
        let policy = SignaturePolicy::Unsigned;
        assert!(policy.verify(None, Bytes::from_static(b"x"), 0).is_ok());
    }
}
