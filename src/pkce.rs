//! PKCE (RFC 7636) S256: 32 random bytes → base64url verifier (43 chars), challenge = base64url(SHA-256(verifier)).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce").field("verifier", &"[redacted]").field("challenge", &self.challenge).finish()
    }
}

/// A fresh verifier/challenge pair (one per device flow).
pub fn generate() -> Pkce {
    let mut bytes = [0u8; 32];
    // rand's thread RNG is a CSPRNG seeded from the OS, as the CLI's crypto.randomBytes.
    rand::rng().fill_bytes(&mut bytes);
    from_bytes(&bytes)
}

/// The pair for given verifier octets (RFC 7636 §4.1: base64url of the octets, no padding).
fn from_bytes(bytes: &[u8]) -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = challenge_for(&verifier);
    Pkce { verifier, challenge }
}

/// `base64url_nopad(sha256(verifier))`.
pub fn challenge_for(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B: these 32 octets give this verifier, which hashes to this challenge.
    const RFC_OCTETS: [u8; 32] = [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191,
        240, 91, 88, 5, 88, 83, 132, 141, 121,
    ];
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(challenge_for(RFC_VERIFIER), RFC_CHALLENGE);
        let p = from_bytes(&RFC_OCTETS);
        assert_eq!(p.verifier, RFC_VERIFIER);
        assert_eq!(p.challenge, RFC_CHALLENGE);
    }

    #[test]
    fn generated_pairs_are_well_formed_and_fresh() {
        let a = generate();
        let b = generate();
        for p in [&a, &b] {
            assert_eq!(p.verifier.len(), 43);
            assert_eq!(p.challenge.len(), 43);
            assert!(p.verifier.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(p.challenge, challenge_for(&p.verifier));
        }
        assert_ne!(a.verifier, b.verifier);
    }

    #[test]
    fn debug_hides_the_verifier() {
        let p = from_bytes(&RFC_OCTETS);
        assert!(!format!("{p:?}").contains(RFC_VERIFIER));
    }
}
