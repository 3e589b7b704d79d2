//! PKCE (RFC 7636) S256: 32 random bytes → base64url verifier (43 chars), challenge = base64url(SHA-256(verifier)).

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
    todo!("pkce::generate")
}

/// `base64url_nopad(sha256(verifier))`.
pub fn challenge_for(verifier: &str) -> String {
    let _ = verifier;
    todo!("pkce::challenge_for")
}
