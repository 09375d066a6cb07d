//! Verify: only a body whose signature checks out becomes a [`VerifiedBody`].
//!
//! The rest of the pipeline takes a `VerifiedBody`, never raw bytes, so an
//! unverified delivery cannot reach the rules by mistake.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use whereby_webhook::{SignatureError, SigningSecret, Verifier};

/// The shortest signature tolerance accepted. Timestamps are whole seconds and
/// clocks are never that close, so a shorter one refuses nearly every delivery
/// (0 does not turn the check off, as it does in Stripe's libraries).
pub const MIN_TOLERANCE: Duration = Duration::from_secs(1);

/// Why a signature tolerance was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToleranceError {
    /// Under [`MIN_TOLERANCE`].
    #[error(
        "must be at least 1s: a shorter tolerance refuses nearly every delivery \
         (0 does not turn the check off)"
    )]
    TooShort(Duration),
}

/// `tolerance`, if it is at least [`MIN_TOLERANCE`].
///
/// # Errors
/// [`ToleranceError::TooShort`].
pub fn check_tolerance(tolerance: Duration) -> Result<Duration, ToleranceError> {
    if tolerance < MIN_TOLERANCE {
        return Err(ToleranceError::TooShort(tolerance));
    }
    Ok(tolerance)
}

/// How deliveries are authenticated.
#[derive(Debug, Clone)]
pub(crate) enum SignaturePolicy {
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
    pub(crate) fn verify(
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

/// The signature policy a running Trigger verifies with, replaceable while it
/// runs: new signing secrets (a rotation) take effect for the next delivery,
/// without a restart. Cheap to clone; every clone is the same policy.
#[derive(Debug, Clone)]
pub struct Verification(Arc<RwLock<SignaturePolicy>>);

/// Why [`Verification::replace_secrets`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// An empty list would turn signature checks off.
    #[error(
        "no signing secret given: the current secrets stay (checks are never turned off while running)"
    )]
    NoSecret,
    /// The tolerance is too short to use.
    #[error("signature tolerance: {0}")]
    Tolerance(#[from] ToleranceError),
}

impl Verification {
    pub(crate) fn new(policy: SignaturePolicy) -> Verification {
        Verification(Arc::new(RwLock::new(policy)))
    }

    /// Checks `body` with the current policy (see [`SignaturePolicy::verify`]).
    ///
    /// # Errors
    /// The [`SignatureError`] of a delivery that must be refused.
    pub(crate) fn verify(
        &self,
        header: Option<&[u8]>,
        body: Bytes,
        now: u64,
    ) -> Result<VerifiedBody, SignatureError> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verify(header, body, now)
    }

    /// The tolerance signatures are checked with; `None` while deliveries are
    /// accepted unsigned.
    pub fn tolerance(&self) -> Option<Duration> {
        match &*self.0.read().unwrap_or_else(|p| p.into_inner()) {
            SignaturePolicy::Required(verifier) => Some(verifier.tolerance()),
            SignaturePolicy::Unsigned => None,
        }
    }

    /// Whether deliveries are accepted unsigned.
    pub fn is_unsigned(&self) -> bool {
        matches!(
            *self.0.read().unwrap_or_else(|p| p.into_inner()),
            SignaturePolicy::Unsigned
        )
    }

    /// From the next delivery on, requires a signature by one of `secrets`
    /// within `tolerance`. List the old and the new secret together while a
    /// rotation is under way.
    ///
    /// # Errors
    /// [`ReplaceError::NoSecret`] for an empty list, [`ReplaceError::Tolerance`]
    /// for a tolerance under [`MIN_TOLERANCE`]; the policy is unchanged.
    pub fn replace_secrets(
        &self,
        secrets: Vec<SigningSecret>,
        tolerance: Duration,
    ) -> Result<(), ReplaceError> {
        if secrets.is_empty() {
            return Err(ReplaceError::NoSecret);
        }
        check_tolerance(tolerance)?;
        let policy = SignaturePolicy::Required(Verifier::new(secrets).with_tolerance(tolerance));
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = policy;
        Ok(())
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

    #[test]
    fn replaced_secrets_apply_to_the_next_delivery() {
        let verification = Verification::new(SignaturePolicy::Required(Verifier::new([
            SigningSecret::new("old"),
        ])));
        let body = Bytes::from_static(b"{}");
        let by = |secret: &str| SigningSecret::new(secret).sign(10, b"{}");
        assert!(
            verification
                .verify(Some(by("old").as_bytes()), body.clone(), 10)
                .is_ok()
        );

        let rotation = vec![SigningSecret::new("old"), SigningSecret::new("new")];
        verification
            .replace_secrets(rotation, Duration::from_secs(300))
            .unwrap();
        for secret in ["old", "new"] {
            assert!(
                verification
                    .verify(Some(by(secret).as_bytes()), body.clone(), 10)
                    .is_ok()
            );
        }
        verification
            .replace_secrets(vec![SigningSecret::new("new")], Duration::from_secs(300))
            .unwrap();
        assert_eq!(
            verification
                .verify(Some(by("old").as_bytes()), body.clone(), 10)
                .unwrap_err(),
            SignatureError::NoMatch
        );
        // Checks are never turned off by a replacement.
        assert_eq!(
            verification.replace_secrets(Vec::new(), Duration::from_secs(300)),
            Err(ReplaceError::NoSecret)
        );
        assert!(verification.verify(None, body.clone(), 10).is_err());
        // Nor made to refuse everything: a tolerance under a second stays out.
        for short in [Duration::ZERO, Duration::from_millis(999)] {
            assert_eq!(
                verification.replace_secrets(vec![SigningSecret::new("old")], short),
                Err(ReplaceError::Tolerance(ToleranceError::TooShort(short)))
            );
        }
        assert!(
            verification
                .verify(Some(by("new").as_bytes()), body, 10)
                .is_ok()
        );
    }

    #[test]
    fn tolerances_start_at_one_second() {
        for short in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(999),
        ] {
            assert_eq!(check_tolerance(short), Err(ToleranceError::TooShort(short)));
        }
        for ok in [MIN_TOLERANCE, Duration::from_millis(1500), Duration::MAX] {
            assert_eq!(check_tolerance(ok), Ok(ok));
        }
    }

    #[test]
    fn an_unsigned_server_can_start_requiring_signatures() {
        let verification = Verification::new(SignaturePolicy::Unsigned);
        assert!(verification.is_unsigned());
        verification
            .replace_secrets(vec![SigningSecret::new("s")], Duration::from_secs(300))
            .unwrap();
        assert!(!verification.is_unsigned());
        assert!(
            verification
                .verify(None, Bytes::from_static(b"{}"), 10)
                .is_err()
        );
    }
}
