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

    #[test]
    fn redacts_remembered_secrets_and_bearer_values() {
        remember_secret("tok-abcdef-123456");
        let r = redact("sent tok-abcdef-123456 and Authorization: Bearer zzz9999yyy, done");
        assert!(!r.contains("tok-abcdef-123456"), "{r}");
        assert!(!r.contains("zzz9999yyy"), "{r}");
        assert!(r.contains("Bearer [redacted]"), "{r}");
    }
}
