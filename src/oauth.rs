//! The OAuth wire protocol against chat.qwen.ai (§1–§5, §7 of the protocol doc): constants, the
//! hand-built `%20` form encoding, and one function per endpoint call. No loops or sleeps here.
//!
//! Each call is split into the HTTP exchange and a pure `classify_*` function that maps
//! (status, body) to an outcome, so the mapping tables are unit-tested without a server.

use rand::RngCore;
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::debug_log;
use crate::error::{Error, Result};
use crate::http;
use crate::log;
use crate::pkce::Pkce;

pub const CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";
pub const SCOPE: &str = "openid profile email model.completion";
pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const DEVICE_CODE_PATH: &str = "/api/v1/oauth2/device/code";
pub const TOKEN_PATH: &str = "/api/v1/oauth2/token";

/// Used when the device-code answer has no usable `expires_in` (the CLI's countdown default).
pub const DEFAULT_EXPIRES_IN: u64 = 300;

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// `encodeURIComponent(k)=encodeURIComponent(v)` joined with `&`, in the given order (spaces → `%20`).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_uri_component(k, &mut out);
        out.push('=');
        encode_uri_component(v, &mut out);
    }
    out
}

/// JS `encodeURIComponent`: keeps `A-Z a-z 0-9 - _ . ! ~ * ' ( )`, percent-encodes every other UTF-8
/// byte with uppercase hex.
fn encode_uri_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        let keep =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')');
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0f) as usize] as char);
        }
    }
}

/// Random UUID v4 (RFC 9562 §5.4) for `x-request-id`, as the CLI's `crypto.randomUUID()`.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10xx
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
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

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[redacted]")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[derive(Clone, Default)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
    pub resource_url: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("resource_url", &self.resource_url)
            .finish()
    }
}

#[derive(Debug)]
pub enum PollOutcome {
    Success(TokenResponse),
    /// 400 authorization_pending (or a 2xx `{"status":"pending"}`).
    Pending,
    /// 429 slow_down.
    SlowDown,
}

#[derive(Debug)]
pub enum RefreshOutcome {
    Refreshed(TokenResponse),
    /// 400 or 401 from the token endpoint: the refresh token is no longer accepted.
    Rejected,
}

/// POST device/code with `client_id, scope, code_challenge, code_challenge_method=S256` and an `x-request-id`.
pub async fn request_device_authorization(settings: &Settings, pkce: &Pkce) -> Result<DeviceAuthorization> {
    let endpoint = format!("{}{}", settings.oauth_base_url, DEVICE_CODE_PATH);
    let body = form_encode(&[
        ("client_id", CLIENT_ID),
        ("scope", SCOPE),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]);
    let request_id = uuid_v4();
    debug_log!("device authorization: POST {endpoint} (x-request-id {request_id})");
    let req = form_post(&endpoint, body).header("x-request-id", request_id);
    let (status, text) = exchange(&endpoint, req).await?;
    debug_log!("device authorization: HTTP {status}");
    let auth = classify_device_authorization(&endpoint, status, &text)?;
    log::remember_secret(&auth.device_code);
    debug_log!(
        "device authorization: user code {}, expires in {} s, verification at {}",
        auth.user_code,
        auth.expires_in,
        auth.verification_uri
    );
    Ok(auth)
}

/// One poll of the token endpoint. Terminal OAuth errors (`expired_token`, `access_denied`, `invalid_grant`,
/// other errors) come back as `Err` with the matching `Error` variant.
pub async fn poll_device_token(settings: &Settings, device_code: &str, verifier: &str) -> Result<PollOutcome> {
    log::remember_secret(device_code);
    log::remember_secret(verifier);
    let endpoint = format!("{}{}", settings.oauth_base_url, TOKEN_PATH);
    let body = form_encode(&[
        ("grant_type", DEVICE_GRANT_TYPE),
        ("client_id", CLIENT_ID),
        ("device_code", device_code),
        ("code_verifier", verifier),
    ]);
    let (status, text) = exchange(&endpoint, form_post(&endpoint, body)).await?;
    let outcome = classify_poll(&endpoint, status, &text);
    match &outcome {
        Ok(PollOutcome::Success(_)) => debug_log!("token poll: HTTP {status}, approved"),
        Ok(PollOutcome::Pending) => debug_log!("token poll: HTTP {status}, pending"),
        Ok(PollOutcome::SlowDown) => debug_log!("token poll: HTTP {status}, slow_down"),
        Err(e) => debug_log!("token poll: HTTP {status}, {}", e.code()),
    }
    outcome
}

/// One refresh call: `grant_type=refresh_token, refresh_token, client_id`.
pub async fn refresh(settings: &Settings, refresh_token: &str) -> Result<RefreshOutcome> {
    log::remember_secret(refresh_token);
    let endpoint = format!("{}{}", settings.oauth_base_url, TOKEN_PATH);
    let body =
        form_encode(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", CLIENT_ID)]);
    debug_log!("refresh: POST {endpoint}");
    let (status, text) = exchange(&endpoint, form_post(&endpoint, body)).await?;
    let outcome = classify_refresh(&endpoint, status, &text);
    match &outcome {
        Ok(RefreshOutcome::Refreshed(_)) => debug_log!("refresh: HTTP {status}, new token"),
        Ok(RefreshOutcome::Rejected) => debug_log!("refresh: HTTP {status}, refresh token rejected"),
        Err(e) => debug_log!("refresh: HTTP {status}, {}", e.code()),
    }
    outcome
}

/// The form POST every OAuth call makes (§1): form content type, JSON accepted, 30 s bound.
fn form_post(endpoint: &str, body: String) -> reqwest::RequestBuilder {
    http::client()
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(http::OAUTH_TIMEOUT)
        .body(body)
}

/// Sends and reads the whole answer; transport failures (also mid-body) become `Error::Network`.
async fn exchange(endpoint: &str, req: reqwest::RequestBuilder) -> Result<(u16, String)> {
    let resp = req.send().await.map_err(|e| Error::network(endpoint, &e))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| Error::network(endpoint, &e))?;
    Ok((status, text))
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn parse_object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// Seconds as a JSON number (integer or float) or a numeric string; None when absent, zero or unusable
/// (the CLI treats a falsy `expires_in` as missing).
fn seconds_field(m: &Map<String, Value>, key: &str) -> Option<u64> {
    let v = m.get(key)?;
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (f.is_finite() && f >= 1.0).then(|| f.min(u32::MAX as f64) as u64)
}

/// Server-supplied text made safe for an error message: one line, bounded, remembered secrets masked.
fn sanitize(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    log::redact(one_line.trim())
}

/// `<error> - <error_description>` as the CLI words it, or just the error when there is no description.
fn oauth_error_detail(error: &str, m: &Map<String, Value>) -> String {
    match str_field(m, "error_description").filter(|d| !d.trim().is_empty()) {
        Some(d) => format!("{} - {}", sanitize(error), sanitize(d)),
        None => sanitize(error),
    }
}

fn status_detail(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// Reads a token answer, registering its secrets with the log before anything else can print them.
fn token_response(m: &Map<String, Value>) -> TokenResponse {
    let access_token = str_field(m, "access_token").unwrap_or_default().to_string();
    log::remember_secret(&access_token);
    let refresh_token = str_field(m, "refresh_token").filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(r) = &refresh_token {
        log::remember_secret(r);
    }
    TokenResponse {
        access_token,
        refresh_token,
        token_type: str_field(m, "token_type").filter(|s| !s.is_empty()).map(str::to_string),
        expires_in: seconds_field(m, "expires_in"),
        resource_url: str_field(m, "resource_url").map(str::to_string),
    }
}

/// §3: success is the presence of `device_code`; a 2xx without it is an OAuth error answer.
pub fn classify_device_authorization(endpoint: &str, status: u16, text: &str) -> Result<DeviceAuthorization> {
    let obj = parse_object(text);
    if !is_success(status) {
        return Err(match obj.as_ref().and_then(|m| str_field(m, "error").map(|e| (e, m))) {
            Some((e, m)) => Error::OAuthFailed {
                endpoint: endpoint.to_string(),
                detail: format!("{}: {}", status_detail(status), oauth_error_detail(e, m)),
            },
            None => Error::bad_response(endpoint, status_detail(status)),
        });
    }
    let m = obj.ok_or_else(|| {
        Error::bad_response(endpoint, format!("{} but the body is not a JSON object", status_detail(status)))
    })?;
    let Some(device_code) = str_field(&m, "device_code").filter(|s| !s.is_empty()) else {
        let detail = match str_field(&m, "error") {
            Some(e) => oauth_error_detail(e, &m),
            None => "the answer has no device_code".to_string(),
        };
        return Err(Error::OAuthFailed { endpoint: endpoint.to_string(), detail });
    };
    log::remember_secret(device_code);
    let user_code = str_field(&m, "user_code").filter(|s| !s.is_empty());
    let uri = str_field(&m, "verification_uri").filter(|s| !s.is_empty());
    let uri_complete = str_field(&m, "verification_uri_complete").filter(|s| !s.is_empty());
    // Without a code and a page to enter it on, the user cannot approve anything.
    let (Some(user_code), Some(any_uri)) = (user_code, uri.or(uri_complete)) else {
        return Err(Error::bad_response(endpoint, "the answer has no user_code or verification_uri"));
    };
    Ok(DeviceAuthorization {
        device_code: device_code.to_string(),
        user_code: user_code.to_string(),
        verification_uri: uri.unwrap_or(any_uri).to_string(),
        verification_uri_complete: uri_complete.unwrap_or(any_uri).to_string(),
        expires_in: seconds_field(&m, "expires_in").unwrap_or(DEFAULT_EXPIRES_IN),
    })
}

/// §4 mapping, except that `expired_token`, `access_denied`, `invalid_grant` and other OAuth errors are
/// terminal (the CLI keeps polling on them until its attempt limit).
pub fn classify_poll(endpoint: &str, status: u16, text: &str) -> Result<PollOutcome> {
    let obj = parse_object(text);
    if is_success(status) {
        let m = obj.ok_or_else(|| {
            Error::bad_response(endpoint, format!("{} but the body is not a JSON object", status_detail(status)))
        })?;
        if str_field(&m, "access_token").is_some_and(|t| !t.is_empty()) {
            return Ok(PollOutcome::Success(token_response(&m)));
        }
        if let Some(e) = str_field(&m, "error") {
            return oauth_poll_error(endpoint, status, e, &m);
        }
        // `{"status":"pending"}`, or any other non-answer: the CLI polls on; we wait the interval first.
        return Ok(PollOutcome::Pending);
    }
    let error = obj.as_ref().and_then(|m| str_field(m, "error").map(|e| (e, m)));
    match error {
        Some((e, m)) => oauth_poll_error(endpoint, status, e, m),
        // The CLI ends the flow on any 401: "Device code expired or invalid".
        None if status == 401 => Err(Error::OAuthExpired),
        None => Err(Error::bad_response(endpoint, status_detail(status))),
    }
}

fn oauth_poll_error(endpoint: &str, status: u16, error: &str, m: &Map<String, Value>) -> Result<PollOutcome> {
    match error {
        "authorization_pending" => Ok(PollOutcome::Pending),
        "slow_down" => Ok(PollOutcome::SlowDown),
        "expired_token" => Err(Error::OAuthExpired),
        "access_denied" => Err(Error::OAuthDenied),
        _ if status == 401 => Err(Error::OAuthExpired),
        _ => Err(Error::OAuthFailed {
            endpoint: endpoint.to_string(),
            detail: if is_success(status) {
                oauth_error_detail(error, m)
            } else {
                format!("{}: {}", status_detail(status), oauth_error_detail(error, m))
            },
        }),
    }
}

/// §7 mapping. The caller (token manager) decides what a rejection means for the file.
pub fn classify_refresh(endpoint: &str, status: u16, text: &str) -> Result<RefreshOutcome> {
    if status == 400 || status == 401 {
        return Ok(RefreshOutcome::Rejected);
    }
    if !is_success(status) {
        return Err(Error::bad_response(endpoint, status_detail(status)));
    }
    let m = parse_object(text).ok_or_else(|| {
        Error::bad_response(endpoint, format!("{} but the body is not a JSON object", status_detail(status)))
    })?;
    if let Some(e) = m.get("error").filter(|v| !v.is_null()) {
        let e = e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string());
        return Err(Error::OAuthFailed { endpoint: endpoint.to_string(), detail: oauth_error_detail(&e, &m) });
    }
    let tokens = token_response(&m);
    // A "success" without a token would be saved as a file the CLI rejects; refuse it here instead.
    if tokens.access_token.is_empty() {
        return Err(Error::bad_response(endpoint, "the refresh answer has no access_token"));
    }
    Ok(RefreshOutcome::Refreshed(tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "http://127.0.0.1:9/api/v1/oauth2/token";

    #[test]
    fn scope_is_encoded_with_percent_20() {
        assert_eq!(form_encode(&[("scope", SCOPE)]), "scope=openid%20profile%20email%20model.completion");
    }

    #[test]
    fn form_encode_matches_encode_uri_component_byte_for_byte() {
        // Expected strings computed with node: encodeURIComponent(k) + "=" + encodeURIComponent(v).
        assert_eq!(form_encode(&[("a b", "-_.!~*'()")]), "a%20b=-_.!~*'()");
        assert_eq!(form_encode(&[("k", "a+b/c?d=e&f#g%h")]), "k=a%2Bb%2Fc%3Fd%3De%26f%23g%25h");
        assert_eq!(form_encode(&[("k", ":@$,;[]{}\"<>\\^`|")]), "k=%3A%40%24%2C%3B%5B%5D%7B%7D%22%3C%3E%5C%5E%60%7C");
        assert_eq!(form_encode(&[("k", "é€😀\n\t")]), "k=%C3%A9%E2%82%AC%F0%9F%98%80%0A%09");
        assert_eq!(form_encode(&[("k", "")]), "k=");
        assert_eq!(form_encode(&[]), "");
    }

    #[test]
    fn form_encode_keeps_order_and_joins_with_ampersand() {
        assert_eq!(
            form_encode(&[
                ("grant_type", DEVICE_GRANT_TYPE),
                ("client_id", CLIENT_ID),
                ("device_code", "dc-1"),
                ("code_verifier", "v_-1"),
            ]),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code\
             &client_id=f0304373b74a44d2b584a3fb70ca9e56&device_code=dc-1&code_verifier=v_-1"
        );
        assert_eq!(
            form_encode(&[("grant_type", "refresh_token"), ("refresh_token", "r t"), ("client_id", CLIENT_ID)]),
            "grant_type=refresh_token&refresh_token=r%20t&client_id=f0304373b74a44d2b584a3fb70ca9e56"
        );
    }

    #[test]
    fn uuid_v4_has_version_and_variant_bits() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(a, uuid_v4());
    }

    #[test]
    fn device_authorization_success_and_defaults() {
        let ok = classify_device_authorization(
            EP,
            200,
            r#"{"device_code":"dc-123456","user_code":"ABCD-1234","verification_uri":"https://x/a","verification_uri_complete":"https://x/a?user_code=ABCD-1234","expires_in":600}"#,
        )
        .unwrap();
        assert_eq!((ok.user_code.as_str(), ok.expires_in), ("ABCD-1234", 600));
        assert_eq!(ok.verification_uri_complete, "https://x/a?user_code=ABCD-1234");
        let no_exp = classify_device_authorization(
            EP,
            200,
            r#"{"device_code":"dc-123456","user_code":"U","verification_uri":"https://x/a"}"#,
        )
        .unwrap();
        assert_eq!(no_exp.expires_in, DEFAULT_EXPIRES_IN);
        assert_eq!(no_exp.verification_uri_complete, "https://x/a");
    }

    #[test]
    fn device_authorization_failures() {
        let e = classify_device_authorization(EP, 200, r#"{"error":"invalid_client","error_description":"nope"}"#)
            .unwrap_err();
        assert_eq!(e.code(), "E_OAUTH_FAILED");
        assert!(e.to_string().contains("invalid_client - nope"), "{e}");
        let e = classify_device_authorization(EP, 503, "<html>down</html>").unwrap_err();
        assert_eq!(e.code(), "E_BAD_RESPONSE");
        assert!(e.to_string().contains("503") && e.to_string().contains(EP), "{e}");
        let e = classify_device_authorization(EP, 400, r#"{"error":"invalid_scope"}"#).unwrap_err();
        assert_eq!(e.code(), "E_OAUTH_FAILED");
        assert!(e.to_string().contains("400") && e.to_string().contains("invalid_scope"), "{e}");
        let e = classify_device_authorization(EP, 200, "not json").unwrap_err();
        assert_eq!(e.code(), "E_BAD_RESPONSE");
    }

    fn poll(status: u16, body: &str) -> std::result::Result<&'static str, &'static str> {
        match classify_poll(EP, status, body) {
            Ok(PollOutcome::Success(_)) => Ok("success"),
            Ok(PollOutcome::Pending) => Ok("pending"),
            Ok(PollOutcome::SlowDown) => Ok("slow_down"),
            Err(e) => Err(e.code()),
        }
    }

    #[test]
    fn poll_mapping_table() {
        assert_eq!(poll(200, r#"{"access_token":"at-xyz-123","expires_in":3600}"#), Ok("success"));
        assert_eq!(poll(200, r#"{"access_token":""}"#), Ok("pending"));
        assert_eq!(poll(200, r#"{"status":"pending"}"#), Ok("pending"));
        assert_eq!(poll(400, r#"{"error":"authorization_pending"}"#), Ok("pending"));
        assert_eq!(poll(429, r#"{"error":"slow_down"}"#), Ok("slow_down"));
        assert_eq!(poll(400, r#"{"error":"expired_token"}"#), Err("E_OAUTH_EXPIRED"));
        assert_eq!(poll(400, r#"{"error":"access_denied"}"#), Err("E_OAUTH_DENIED"));
        assert_eq!(poll(400, r#"{"error":"invalid_grant"}"#), Err("E_OAUTH_FAILED"));
        assert_eq!(poll(400, r#"{"error":"server_error","error_description":"x"}"#), Err("E_OAUTH_FAILED"));
        assert_eq!(poll(429, r#"{"error":"rate_limited"}"#), Err("E_OAUTH_FAILED"));
        assert_eq!(poll(200, r#"{"error":"access_denied"}"#), Err("E_OAUTH_DENIED"));
        assert_eq!(poll(401, r#"{"error":"invalid_client"}"#), Err("E_OAUTH_EXPIRED"));
        assert_eq!(poll(401, "Unauthorized"), Err("E_OAUTH_EXPIRED"));
        assert_eq!(poll(502, "<html>bad gateway</html>"), Err("E_BAD_RESPONSE"));
        assert_eq!(poll(500, r#"{"message":"oops"}"#), Err("E_BAD_RESPONSE"));
        assert_eq!(poll(200, "not json"), Err("E_BAD_RESPONSE"));
    }

    #[test]
    fn poll_success_reads_every_field() {
        let Ok(PollOutcome::Success(t)) = classify_poll(
            EP,
            200,
            r#"{"access_token":"at-abcdef","refresh_token":"rt-abcdef","token_type":"Bearer","expires_in":3600,"resource_url":"portal.qwen.ai"}"#,
        ) else {
            panic!("expected success")
        };
        assert_eq!(t.access_token, "at-abcdef");
        assert_eq!(t.refresh_token.as_deref(), Some("rt-abcdef"));
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
        assert_eq!(t.expires_in, Some(3600));
        assert_eq!(t.resource_url.as_deref(), Some("portal.qwen.ai"));
        assert!(!format!("{t:?}").contains("at-abcdef"));
    }

    #[test]
    fn oauth_error_text_is_bounded_and_masks_secrets() {
        log::remember_secret("dc-secret-998877");
        let long = "x".repeat(5000);
        let body = format!(r#"{{"error":"invalid_request","error_description":"bad dc-secret-998877 {long}"}}"#);
        let e = classify_poll(EP, 400, &body).unwrap_err().to_string();
        assert!(!e.contains("dc-secret-998877"));
        assert!(e.len() < 800, "{}", e.len());
    }

    fn refresh_of(status: u16, body: &str) -> std::result::Result<&'static str, &'static str> {
        match classify_refresh(EP, status, body) {
            Ok(RefreshOutcome::Refreshed(_)) => Ok("refreshed"),
            Ok(RefreshOutcome::Rejected) => Ok("rejected"),
            Err(e) => Err(e.code()),
        }
    }

    #[test]
    fn refresh_mapping_table() {
        assert_eq!(refresh_of(200, r#"{"access_token":"at-new-1","expires_in":3600}"#), Ok("refreshed"));
        assert_eq!(refresh_of(200, r#"{"error":"invalid_grant","error_description":"x"}"#), Err("E_OAUTH_FAILED"));
        assert_eq!(refresh_of(200, "<html>"), Err("E_BAD_RESPONSE"));
        assert_eq!(refresh_of(200, r#"{"token_type":"Bearer"}"#), Err("E_BAD_RESPONSE"));
        assert_eq!(refresh_of(400, r#"{"error":"invalid_grant"}"#), Ok("rejected"));
        assert_eq!(refresh_of(401, "nope"), Ok("rejected"));
        assert_eq!(refresh_of(500, r#"{"error":"server_error"}"#), Err("E_BAD_RESPONSE"));
        assert_eq!(refresh_of(429, ""), Err("E_BAD_RESPONSE"));
        let e = classify_refresh(EP, 503, "").unwrap_err().to_string();
        assert!(e.contains("503") && e.contains(EP), "{e}");
    }

    #[test]
    fn expires_in_accepts_numbers_and_numeric_strings() {
        let m = parse_object(r#"{"a":3600,"b":3600.7,"c":"120","d":0,"e":null,"f":-5}"#).unwrap();
        assert_eq!(seconds_field(&m, "a"), Some(3600));
        assert_eq!(seconds_field(&m, "b"), Some(3600));
        assert_eq!(seconds_field(&m, "c"), Some(120));
        assert_eq!(seconds_field(&m, "d"), None);
        assert_eq!(seconds_field(&m, "e"), None);
        assert_eq!(seconds_field(&m, "f"), None);
        assert_eq!(seconds_field(&m, "missing"), None);
    }
}
