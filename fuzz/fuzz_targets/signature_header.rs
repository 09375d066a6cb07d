//! `Whereby-Signature` parsing and verification.
//!
//! Input: the header value, then optionally `\n` and the body it claims to sign.
//! Properties: parsing never panics; a parsed header has a `v1` signature; a header
//! verifies only if one of its signatures is the HMAC of the body at its own
//! timestamp; the header that `sign` makes for the body always parses and verifies,
//! also with entries that carry no signature around it, and stops verifying when
//! one hex digit of it changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whereby_webhook::{SignatureError, SignatureHeader, SigningSecret, Verifier};

const SECRET: &str = "whsec_fuzz";

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let secret = SigningSecret::new(SECRET);
    let verifier = Verifier::new([secret.clone()]);

    match SignatureHeader::parse(header) {
        Ok(parsed) => {
            let signatures: Vec<[u8; 32]> = parsed.signatures().collect();
            assert!(!signatures.is_empty(), "a parsed header has a v1 signature");
            // At its own timestamp the header is never stale, so the answer is the
            // HMAC comparison alone.
            let expected = secret.mac(parsed.timestamp, body);
            let verdict = verifier.verify(Some(header), body, parsed.timestamp);
            if signatures.contains(&expected) {
                assert_eq!(verdict.map(|v| v.timestamp), Ok(parsed.timestamp));
            } else {
                assert_eq!(verdict, Err(SignatureError::NoMatch));
            }
            // Far from its timestamp it is stale, whatever it signs.
            let later = parsed.timestamp.wrapping_add(1_000_000);
            if later > parsed.timestamp {
                assert!(matches!(
                    verifier.verify(Some(header), body, later),
                    Err(SignatureError::Stale { .. })
                ));
            }
        }
        Err(err) => {
            assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");
            assert_eq!(verifier.verify(Some(header), body, 0), Err(err));
        }
    }

    // Round trip: what we sign for this body verifies, and a tampered copy does not.
    let timestamp = u64::from_le_bytes(
        data.iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(8)
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
    );
    let signed = secret.sign(timestamp, body);
    let parsed = SignatureHeader::parse(signed.as_bytes()).expect("a signed header parses");
    assert_eq!(parsed.timestamp, timestamp);
    assert_eq!(
        verifier.verify(Some(signed.as_bytes()), body, timestamp),
        Ok(whereby_webhook::Verified { timestamp })
    );
    // Entries that carry no signature are skipped, wherever they are.
    let padded = format!(",{},v1=,v1=0,x,", signed.replacen(",v1=", ",,v1=", 1));
    assert_eq!(
        verifier.verify(Some(padded.as_bytes()), body, timestamp),
        Ok(whereby_webhook::Verified { timestamp })
    );
    let mut tampered = signed.into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        verifier.verify(Some(&tampered), body, timestamp),
        Err(SignatureError::NoMatch)
    );
});
