//! Debug log (`QWEN_OAUTH_DEBUG=1` or option `debug`), to stderr. Every line passes through `redact`,
//! which masks every secret this process has seen (registered with `remember_secret`) and anything shaped
//! like a bearer token, so a token cannot reach the log even by mistake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn set_enabled(on: bool) {
    if on {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Register a secret (token, refresh token, device code, verifier, API key) so that `redact` masks it.
pub fn remember_secret(s: &str) {
    if s.len() < 6 {
        return;
    }
    let mut v = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !v.iter().any(|x| x == s) {
        if v.len() >= 64 {
            v.remove(0);
        }
        v.push(s.to_string());
    }
}

pub fn redact(line: &str) -> String {
    let mut out = line.to_string();
    for s in SECRETS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    // Anything after "Bearer " is a credential whatever it is.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("bearer ") {
        result.push_str(&rest[..i + 7]);
        rest = &rest[i + 7..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == ',').unwrap_or(rest.len());
        if end > 0 {
            result.push_str("[redacted]");
        }
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

pub fn debug(msg: std::fmt::Arguments<'_>) {
    if enabled() {
        eprintln!("[opencode-qwen-oauth] {}", redact(&msg.to_string()));
    }
}

#[macro_export]
macro_rules! debug_log {
    ($($arg:tt)*) => { $crate::log::debug(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{:?}` and `{:#?}` of every type that holds a token, a refresh token, a device code or a verifier.
    #[test]
    fn debug_formatting_of_secret_holding_types_redacts() {
        use crate::credentials::Credentials;
        use crate::oauth::{DeviceAuthorization, PollOutcome, RefreshOutcome, TokenResponse};
        const SECRETS: [&str; 5] = [
            "secret-access-AAAA",
            "secret-refresh-BBBB",
            "secret-device-CCCC",
            "secret-verifier-DDDD",
            "secret-new-refresh-EEEE",
        ];
        let creds = Credentials {
            access_token: SECRETS[0].into(),
            refresh_token: SECRETS[1].into(),
            token_type: "Bearer".into(),
            resource_url: Some("portal.qwen.ai".into()),
            expiry_date: 1,
        };
        let tokens = TokenResponse {
            access_token: SECRETS[0].into(),
            refresh_token: Some(SECRETS[4].into()),
            token_type: Some("Bearer".into()),
            expires_in: Some(3600),
            resource_url: Some("portal.qwen.ai".into()),
        };
        let device = DeviceAuthorization {
            device_code: SECRETS[2].into(),
            user_code: "ABCD-EFGH".into(),
            verification_uri: "https://chat.qwen.ai/authorize".into(),
            verification_uri_complete: "https://chat.qwen.ai/authorize?user_code=ABCD-EFGH".into(),
            expires_in: 600,
        };
        let pkce = crate::pkce::Pkce { verifier: SECRETS[3].into(), challenge: "challenge-is-public".into() };
        let texts = [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{:?}", Some(vec![creds.clone()])),
            format!("{tokens:?}"),
            format!("{tokens:#?}"),
            format!("{:?}", PollOutcome::Success(tokens.clone())),
            format!("{:?}", RefreshOutcome::Refreshed(tokens.clone())),
            format!("{:?}", Ok::<_, crate::error::Error>(RefreshOutcome::Refreshed(tokens))),
            format!("{device:?}"),
            format!("{device:#?}"),
            format!("{pkce:?}"),
        ];
        for text in &texts {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("[redacted]"), "{text}");
        }
        // What is not secret stays readable.
        assert!(texts[0].contains("portal.qwen.ai") && texts[8].contains("ABCD-EFGH"));
        assert!(texts[10].contains("challenge-is-public"));
    }

    #[test]
    fn redaction_masks_every_occurrence_and_bearer_in_any_case() {
        remember_secret("tok-repeat-987654");
        let r = redact("a tok-repeat-987654 b tok-repeat-987654 AUTHORIZATION: bearer xyz123abc\nnext");
        assert!(!r.contains("tok-repeat-987654") && !r.contains("xyz123abc"), "{r}");
        assert_eq!(r.matches("[redacted]").count(), 3, "{r}");
    }

    #[test]
    fn redacts_remembered_secrets_and_bearer_values() {
        remember_secret("tok-abcdef-123456");
        let r = redact("sent tok-abcdef-123456 and Authorization: Bearer zzz9999yyy, done");
        assert!(!r.contains("tok-abcdef-123456"), "{r}");
        assert!(!r.contains("zzz9999yyy"), "{r}");
        assert!(r.contains("Bearer [redacted]"), "{r}");
    }
}
