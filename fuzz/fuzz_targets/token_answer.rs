//! Token endpoint answers (device authorization, device poll, refresh): `oauth::classify_*` fed an arbitrary
//! HTTP status and body.
//!
//! Checks: no panic; the status rules hold (400/401 from a refresh is a rejection, any other non-2xx an
//! error); success always carries a non-empty token; every error has a known code, names the endpoint and
//! is a single line (server text cannot inject lines into logs or messages).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opencode_qwen_oauth::error::Error;
use opencode_qwen_oauth::oauth::{self, PollOutcome, RefreshOutcome};

const EP: &str = "https://chat.qwen.ai/api/v1/oauth2/token";

fn check_error(e: &Error) {
    assert!(
        matches!(
            e.code(),
            "E_OAUTH_FAILED" | "E_OAUTH_EXPIRED" | "E_OAUTH_DENIED" | "E_BAD_RESPONSE"
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(!msg.chars().any(|c| c.is_control()), "control character in {msg:?}");
    if matches!(e, Error::OAuthFailed { .. } | Error::BadResponse { .. }) {
        assert!(msg.contains(EP), "{msg}");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let text = String::from_utf8_lossy(&data[2..]);
    let success = (200..300).contains(&status);

    match oauth::classify_refresh(EP, status, &text) {
        Ok(RefreshOutcome::Rejected) => assert!(status == 400 || status == 401),
        Ok(RefreshOutcome::Refreshed(t)) => {
            assert!(success);
            assert!(!t.access_token.is_empty());
            assert!(t.refresh_token.as_deref() != Some(""));
            assert!(t.expires_in.is_none_or(|s| s >= 1));
        }
        Err(e) => {
            assert!(status != 400 && status != 401);
            check_error(&e);
        }
    }

    match oauth::classify_poll(EP, status, &text) {
        Ok(PollOutcome::Success(t)) => {
            assert!(success);
            assert!(!t.access_token.is_empty());
        }
        Ok(PollOutcome::Pending) | Ok(PollOutcome::SlowDown) => {}
        Err(e) => check_error(&e),
    }

    match oauth::classify_device_authorization(EP, status, &text) {
        Ok(a) => {
            assert!(success);
            assert!(!a.device_code.is_empty() && !a.user_code.is_empty());
            assert!(!a.verification_uri.is_empty() && !a.verification_uri_complete.is_empty());
            assert!(a.expires_in >= 1);
            assert!(!format!("{a:?}").contains(&a.device_code) || a.device_code.len() < 12);
        }
        Err(e) => check_error(&e),
    }
});
