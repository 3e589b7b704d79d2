//! The OAuth wire protocol against chat.qwen.ai (§1–§5, §7 of the protocol doc): constants, the
//! hand-built `%20` form encoding, and one function per endpoint call. No loops or sleeps here.

use crate::config::Settings;
use crate::error::Result;
use crate::pkce::Pkce;

pub const CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";
pub const SCOPE: &str = "openid profile email model.completion";
pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const DEVICE_CODE_PATH: &str = "/api/v1/oauth2/device/code";
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";

/// `encodeURIComponent(k)=encodeURIComponent(v)` joined with `&`, in the given order (spaces → `%20`).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let _ = pairs;
    todo!("oauth::form_encode")
}

#[derive(Clone)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    /// Seconds; 300 when the server leaves it out.
    pub expires_in: u64,
}

#[derive(Clone, Default)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
    pub resource_url: Option<String>,
}

pub enum PollOutcome {
    Success(TokenResponse),
    /// 400 authorization_pending (or a 2xx `{"status":"pending"}`).
    Pending,
    /// 429 slow_down.
    SlowDown,
}

pub enum RefreshOutcome {
    Refreshed(TokenResponse),
    /// 400 or 401 from the token endpoint: the refresh token is no longer accepted.
    Rejected,
}

/// POST device/code with `client_id, scope, code_challenge, code_challenge_method=S256` and an `x-request-id`.
pub async fn request_device_authorization(settings: &Settings, pkce: &Pkce) -> Result<DeviceAuthorization> {
    let _ = (settings, pkce);
    todo!("oauth::request_device_authorization")
}

/// One poll of the token endpoint. Terminal OAuth errors (`expired_token`, `access_denied`, `invalid_grant`,
/// other errors) come back as `Err` with the matching `Error` variant.
pub async fn poll_device_token(settings: &Settings, device_code: &str, verifier: &str) -> Result<PollOutcome> {
    let _ = (settings, device_code, verifier);
    todo!("oauth::poll_device_token")
}

/// One refresh call: `grant_type=refresh_token, refresh_token, client_id`.
pub async fn refresh(settings: &Settings, refresh_token: &str) -> Result<RefreshOutcome> {
    let _ = (settings, refresh_token);
    todo!("oauth::refresh")
}
