//! The one error type of the crate. Every variant has a stable code (what JS sees as `err.code`) and a
//! message that names the file or endpoint involved and says what to do next. No variant ever carries a
//! token, a refresh token, a device code or a PKCE verifier.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::login_methods::{API_KEY_LOGIN_CHOICE, OAUTH_LOGIN_CHOICE};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No credentials file, or a file the CLI would treat as "no credentials".
    CredsMissing { path: PathBuf },
    /// The file exists but is not valid credentials (bad JSON, missing or wrong-typed keys).
    CredsInvalid { path: PathBuf, reason: String },
    /// The file or its directory cannot be read (permissions, not a directory, I/O error).
    CredsUnreadable { path: PathBuf, detail: String },
    /// Saving the file failed (read-only or full disk, permissions); the old file is untouched.
    CredsWrite { path: PathBuf, detail: String },
    /// Another process held `oauth_creds.lock` for the whole wait.
    LockTimeout { path: PathBuf },
    /// The user (or the server) refused the device authorization.
    OAuthDenied,
    /// The device code expired before the user approved it.
    OAuthExpired,
    /// The login was cancelled by the caller.
    OAuthCancelled,
    /// The authorization server answered with an OAuth error we cannot continue from.
    OAuthFailed { endpoint: String, detail: String },
    /// The refresh token was refused (400/401 from the token endpoint) even after re-reading the file.
    RefreshRejected { path: PathBuf },
    /// The access token was refused by the API right after a fresh refresh.
    TokenRefused { endpoint: String, status: u16 },
    /// The daily free quota is used up (429 insufficient_quota / "Free allocated quota exceeded").
    QuotaExhausted { endpoint: String },
    /// Connection-level failure: DNS, refused, reset, TLS, timeout.
    Network { endpoint: String, detail: String },
    /// A server answer we cannot use (non-JSON, missing fields, unexpected status).
    BadResponse { endpoint: String, detail: String },
    /// A token would be sent to a host we do not trust.
    UntrustedHost { url: String },
    /// The caller aborted the request (AbortSignal).
    Aborted,
    /// A bad argument or option value from the caller.
    InvalidArg { what: String, detail: String },
    /// Other file-system failures (pacing state file and the like).
    Io { path: PathBuf, detail: String },
    /// API-key path: the endpoint answered 401 to the key (wrong plan or region, revoked key).
    KeyRefused { endpoint: String, status: u16 },
    /// API-key path: the Coding Plan answered 405 "only available for Coding Agents".
    KeyNotAllowed { endpoint: String },
    /// API-key path: the key's shape does not fit the endpoint (checked before anything is sent).
    KeyInvalid { reason: String },
}

impl Error {
    /// Stable code, part of the public API: never rename one.
    pub fn code(&self) -> &'static str {
        match self {
            Error::CredsMissing { .. } => "E_CREDS_MISSING",
            Error::CredsInvalid { .. } => "E_CREDS_INVALID",
            Error::CredsUnreadable { .. } => "E_CREDS_UNREADABLE",
            Error::CredsWrite { .. } => "E_CREDS_WRITE",
            Error::LockTimeout { .. } => "E_LOCK_TIMEOUT",
            Error::OAuthDenied => "E_OAUTH_DENIED",
            Error::OAuthExpired => "E_OAUTH_EXPIRED",
            Error::OAuthCancelled => "E_OAUTH_CANCELLED",
            Error::OAuthFailed { .. } => "E_OAUTH_FAILED",
            Error::RefreshRejected { .. } => "E_REFRESH_REJECTED",
            Error::TokenRefused { .. } => "E_TOKEN_REFUSED",
            Error::QuotaExhausted { .. } => "E_QUOTA_EXHAUSTED",
            Error::Network { .. } => "E_NETWORK",
            Error::BadResponse { .. } => "E_BAD_RESPONSE",
            Error::UntrustedHost { .. } => "E_UNTRUSTED_HOST",
            Error::Aborted => "E_ABORTED",
            Error::InvalidArg { .. } => "E_INVALID_ARG",
            Error::Io { .. } => "E_IO",
            Error::KeyRefused { .. } => "E_KEY_REFUSED",
            Error::KeyNotAllowed { .. } => "E_KEY_NOT_ALLOWED",
            Error::KeyInvalid { .. } => "E_KEY_INVALID",
        }
    }

    pub fn creds_unreadable(path: &Path, err: &std::io::Error) -> Self {
        Error::CredsUnreadable { path: path.to_path_buf(), detail: err.to_string() }
    }

    pub fn creds_write(path: &Path, err: &std::io::Error) -> Self {
        Error::CredsWrite { path: path.to_path_buf(), detail: err.to_string() }
    }

    pub fn io(path: &Path, err: &std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), detail: err.to_string() }
    }

    /// Map a reqwest failure without leaking the URL's query or any header (reqwest's Display of
    /// a request error includes the URL, which never holds secrets here, but we name the endpoint ourselves).
    pub fn network(endpoint: &str, err: &reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_body() || err.is_decode() {
            "connection broke while reading the answer"
        } else {
            "request failed"
        };
        let mut detail = kind.to_string();
        // The innermost source names the OS-level cause (refused, reset, DNS) and holds no secrets.
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
        let mut last = None;
        while let Some(s) = source {
            last = Some(s.to_string());
            source = s.source();
        }
        if let Some(cause) = last {
            detail.push_str(": ");
            detail.push_str(&cause);
        }
        Error::Network { endpoint: strip_query(endpoint), detail }
    }

    pub fn bad_response(endpoint: &str, detail: impl Into<String>) -> Self {
        Error::BadResponse { endpoint: strip_query(endpoint), detail: detail.into() }
    }

    pub fn invalid_arg(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::InvalidArg { what: what.into(), detail: detail.into() }
    }
}

fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CredsMissing { path } => write!(
                f,
                "No Qwen credentials at {}. Log in with `opencode auth login` (choose \"Qwen Code\") or `npx opencode-qwen-oauth login`.",
                path.display()
            ),
            Error::CredsInvalid { path, reason } => write!(
                f,
                "The Qwen credentials file {} is not valid ({reason}). It was left as it is; log in again to replace it, or fix the file.",
                path.display()
            ),
            Error::CredsUnreadable { path, detail } => write!(
                f,
                "Cannot read the Qwen credentials at {} ({detail}). Check that the path is a readable directory/file you own, or set QWEN_HOME to another directory.",
                path.display()
            ),
            Error::CredsWrite { path, detail } => write!(
                f,
                "Cannot save the Qwen credentials to {} ({detail}). The previous file was not changed; free disk space or fix the directory's permissions, then try again.",
                path.display()
            ),
            Error::LockTimeout { path } => write!(
                f,
                "Timed out waiting for the credentials lock {} held by another Qwen Code or OpenCode process. If no such process is running, delete the lock file and try again.",
                path.display()
            ),
            Error::OAuthDenied => write!(
                f,
                "The Qwen login was denied in the browser. Start the login again and approve it."
            ),
            Error::OAuthExpired => write!(
                f,
                "The Qwen login code expired before it was approved. Start the login again and approve it within the time shown."
            ),
            Error::OAuthCancelled => write!(f, "The Qwen login was cancelled."),
            Error::OAuthFailed { endpoint, detail } => write!(
                f,
                "The Qwen authorization server at {endpoint} refused the login: {detail}. Try again later; if it keeps failing, use a Qwen API key instead."
            ),
            Error::RefreshRejected { path } => write!(
                f,
                "Qwen refused to refresh the login (the refresh token is expired or revoked); {} was kept. Log in again with {OAUTH_LOGIN_CHOICE}, or, as Qwen discontinued the free OAuth tier on 2026-04-15, switch to an API key: {API_KEY_LOGIN_CHOICE}.",
                path.display()
            ),
            Error::TokenRefused { endpoint, status } => write!(
                f,
                "Qwen refused the OAuth token ({status}) at {endpoint} even right after a fresh refresh. Qwen discontinued the free OAuth tier on 2026-04-15, so this login no longer works: switch to an Alibaba Cloud Coding Plan or DashScope API key with {API_KEY_LOGIN_CHOICE}."
            ),
            Error::QuotaExhausted { endpoint } => write!(
                f,
                // No "429" in the text: OpenCode retries any error whose message contains 429/500/rate limit/….
                "Your daily free Qwen quota is used up ({endpoint} answered \"Free allocated quota exceeded\"). It resets at 00:00 Beijing time (UTC+8); until then use a Qwen API key ({API_KEY_LOGIN_CHOICE}) or another provider."
            ),
            Error::Network { endpoint, detail } => write!(
                f,
                "Network error talking to {endpoint}: {detail}. Check your connection, VPN or proxy settings (HTTPS_PROXY), then send the message again."
            ),
            Error::BadResponse { endpoint, detail } => write!(
                f,
                "Unexpected answer from {endpoint}: {detail}. Try again later; if it persists, report it with QWEN_OAUTH_DEBUG=1 output."
            ),
            Error::UntrustedHost { url } => write!(
                f,
                "Refusing to send the Qwen token to {url}: it is not a trusted Qwen host (https under qwen.ai or aliyuncs.com). If you really use this endpoint, add its host to the plugin option `trustedHosts`."
            ),
            Error::Aborted => write!(f, "The request was aborted."),
            Error::InvalidArg { what, detail } => write!(f, "Invalid {what}: {detail}."),
            Error::Io { path, detail } => write!(
                f,
                "File error at {} ({detail}). Check the directory's permissions and free space.",
                path.display()
            ),
            Error::KeyRefused { endpoint, status } => write!(
                f,
                "Qwen API key refused ({status}): key refused for this endpoint, {}. A key works only with the plan and region it was made for: Coding Plan keys (sk-sp-…) with Coding Plan China or international, DashScope keys (sk-…) with DashScope Beijing or Singapore, and a China key is refused by an international endpoint (and the other way round). Run {API_KEY_LOGIN_CHOICE} and pick the endpoint your key belongs to, or create a key for this endpoint in the Model Studio console.",
                crate::api_key::endpoint_name(endpoint)
            ),
            Error::KeyNotAllowed { endpoint } => write!(
                f,
                "{} answered 405 \"Coding Plan is currently only available for Coding Agents\": the Coding Plan serves only the coding tools Alibaba recognises, by their User-Agent. This plugin identifies as the Qwen Code CLI (QwenCode/<version>); if you set the `cliVersion` option or QWEN_CLI_VERSION, remove it so the current version is sent. If it persists, use a DashScope pay-as-you-go key instead: {API_KEY_LOGIN_CHOICE} → DashScope Beijing or Singapore.",
                crate::api_key::endpoint_name(endpoint)
            ),
            Error::KeyInvalid { reason } => write!(
                f,
                "{reason} Run {API_KEY_LOGIN_CHOICE} to save a key and an endpoint that match."
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Async napi functions can only return `napi::Error<Status>`, so the code travels as a `[E_CODE]` prefix
/// that the JS wrapper lifts to `err.code`.
impl From<Error> for napi::Error {
    fn from(e: Error) -> Self {
        napi::Error::new(napi::Status::GenericFailure, format!("[{}] {}", e.code(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn napi_error_carries_code_prefix() {
        let e: napi::Error = Error::OAuthDenied.into();
        assert!(e.reason.starts_with("[E_OAUTH_DENIED] "), "{}", e.reason);
    }

    #[test]
    fn service_errors_name_the_api_key_login_choice() {
        let choice = "`opencode auth login` → Qwen Code → Qwen API key (Coding Plan / DashScope)";
        let errors = [
            Error::TokenRefused { endpoint: "https://portal.qwen.ai/v1/chat/completions".into(), status: 401 },
            Error::QuotaExhausted { endpoint: "https://portal.qwen.ai/v1/chat/completions".into() },
            Error::RefreshRejected { path: PathBuf::from("/home/u/.qwen/oauth_creds.json") },
            Error::KeyRefused {
                endpoint: "https://coding.dashscope.aliyuncs.com/v1/chat/completions".into(),
                status: 401,
            },
            Error::KeyNotAllowed { endpoint: "https://coding.dashscope.aliyuncs.com/v1/chat/completions".into() },
            Error::KeyInvalid { reason: "Invalid API key.".into() },
        ];
        for e in errors {
            assert!(e.to_string().contains(choice), "{}: {e}", e.code());
        }
        let refresh = Error::RefreshRejected { path: PathBuf::from("/x/oauth_creds.json") }.to_string();
        assert!(refresh.contains("Log in again") && refresh.contains("Qwen Code (qwen.ai OAuth)"), "{refresh}");
        assert!(Error::TokenRefused { endpoint: "e".into(), status: 401 }.to_string().contains("2026-04-15"));
        let quota = Error::QuotaExhausted { endpoint: "e".into() }.to_string();
        assert!(quota.contains("00:00 Beijing time"), "{quota}");
        let net = Error::Network { endpoint: "https://x/v1".into(), detail: "could not connect".into() }.to_string();
        assert!(net.contains("send the message again"), "{net}");
    }

    #[test]
    fn key_errors_explain_the_mismatch_and_name_the_endpoint() {
        let e = Error::KeyRefused {
            endpoint: "https://coding-intl.dashscope.aliyuncs.com/v1/chat/completions".into(),
            status: 401,
        };
        assert_eq!(e.code(), "E_KEY_REFUSED");
        let m = e.to_string();
        assert!(m.contains("key refused for this endpoint"), "{m}");
        assert!(m.contains("Coding Plan international (https://coding-intl.dashscope.aliyuncs.com/v1)"), "{m}");
        assert!(m.contains("region"), "{m}");
        let e = Error::KeyNotAllowed { endpoint: "https://coding.dashscope.aliyuncs.com/v1/chat/completions".into() };
        assert_eq!(e.code(), "E_KEY_NOT_ALLOWED");
        let m = e.to_string();
        assert!(m.contains("405") && m.contains("only available for Coding Agents") && m.contains("DashScope"), "{m}");
        assert_eq!(Error::KeyInvalid { reason: "r.".into() }.code(), "E_KEY_INVALID");
    }

    /// OpenCode retries any error whose message contains one of these (read from its 1.18.33 binary); the
    /// errors that mean "stop asking" must not, or OpenCode hammers the service again.
    #[test]
    fn fail_fast_messages_do_not_trigger_opencode_retries() {
        const RETRY_TRIGGERS: [&str; 10] =
            ["429", "500", "502", "503", "504", "524", "rate limit", "try again later", "unavailable", "exhausted"];
        let endpoint = "https://portal.qwen.ai/v1/chat/completions".to_string();
        let errors = [
            Error::TokenRefused { endpoint: endpoint.clone(), status: 401 },
            Error::QuotaExhausted { endpoint: endpoint.clone() },
            Error::RefreshRejected { path: PathBuf::from("/home/u/.qwen/oauth_creds.json") },
            Error::KeyRefused { endpoint: endpoint.clone(), status: 401 },
            Error::KeyNotAllowed { endpoint: endpoint.clone() },
            Error::KeyInvalid { reason: "Invalid API key.".into() },
            Error::UntrustedHost { url: "https://evil.example/v1".into() },
            Error::CredsMissing { path: PathBuf::from("/home/u/.qwen/oauth_creds.json") },
            Error::CredsInvalid { path: PathBuf::from("/home/u/.qwen/oauth_creds.json"), reason: "bad JSON".into() },
        ];
        for e in errors {
            let m = e.to_string().to_lowercase();
            for t in RETRY_TRIGGERS {
                assert!(!m.contains(t), "{} contains {t:?}: {m}", e.code());
            }
        }
    }

    #[test]
    fn endpoint_query_is_dropped() {
        let e = Error::bad_response("https://x.test/a?b=c", "oops");
        assert!(!e.to_string().contains("b=c"));
    }
}
