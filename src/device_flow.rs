//! RFC 8628 device login loop, polled the way the Qwen Code CLI polls it: 2 s, pending resets to 2 s,
//! slow_down ×1.5 up to 10 s, no server `interval`; terminal errors end the flow at once; cancellable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::credentials::{now_ms, CredentialStore, Credentials, KeyOrder};
use crate::debug_log;
use crate::error::{Error, Result};
use crate::log;
use crate::oauth::{self, DeviceAuthorization, PollOutcome, TokenResponse};
use crate::pkce::{self, Pkce};

/// The CLI's polling schedule as a pure state machine (no clock), so it can be tested without sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSchedule {
    interval_ms: u64,
    attempts: u64,
    max_attempts: u64,
}

impl PollSchedule {
    pub const INITIAL_MS: u64 = 2_000;
    pub const MAX_MS: u64 = 10_000;

    /// `ceil(expires_in / 2)` attempts, as the CLI (one poll per 2 s at the fastest).
    pub fn new(expires_in_secs: u64) -> Self {
        PollSchedule { interval_ms: Self::INITIAL_MS, attempts: 0, max_attempts: expires_in_secs.div_ceil(2).max(1) }
    }

    /// Counts one poll; false when the attempt limit is used up.
    pub fn take_attempt(&mut self) -> bool {
        if self.attempts >= self.max_attempts {
            return false;
        }
        self.attempts += 1;
        true
    }

    /// Plain pending: back to the base interval.
    pub fn on_pending(&mut self) {
        self.interval_ms = Self::INITIAL_MS;
    }

    /// `slow_down`: ×1.5, capped at 10 s.
    pub fn on_slow_down(&mut self) {
        self.interval_ms = (self.interval_ms * 3 / 2).min(Self::MAX_MS);
    }

    /// Wait before the next poll.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    pub fn max_attempts(&self) -> u64 {
        self.max_attempts
    }
}

pub struct DeviceLogin {
    pub authorization: DeviceAuthorization,
    pkce: Pkce,
    settings: Arc<Settings>,
    cancel: CancellationToken,
    /// When the device code was issued; the code is dead `expires_in` seconds later.
    issued_at: Instant,
    /// Serialises `wait` and remembers its result: the device code can be redeemed only once, so a
    /// second `wait` must not poll again.
    outcome: Mutex<Option<Result<Credentials>>>,
}

impl DeviceLogin {
    /// Generates PKCE and requests a device code. Nothing is written yet.
    pub async fn start(settings: Arc<Settings>) -> Result<DeviceLogin> {
        // The poll carries the device code and the PKCE verifier, and the answer holds the tokens: only a
        // trusted OAuth host may run the login, as only a trusted one may see a refresh token.
        crate::pipeline::trust::check(&format!("{}{}", settings.oauth_base_url, oauth::TOKEN_PATH), &settings)?;
        let pkce = pkce::generate();
        log::remember_secret(&pkce.verifier);
        debug_log!("device login: starting against {}", settings.oauth_base_url);
        let authorization = oauth::request_device_authorization(&settings, &pkce).await?;
        Ok(DeviceLogin {
            authorization,
            pkce,
            settings,
            cancel: CancellationToken::new(),
            issued_at: Instant::now(),
            outcome: Mutex::new(None),
        })
    }

    /// Cancelling this token makes `wait` return `Error::OAuthCancelled` promptly.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Polls until approved, then saves the credentials (device-flow key order) and hands them to the
    /// token manager of this `qwen_home`, and returns them.
    pub async fn wait(&self) -> Result<Credentials> {
        let mut outcome = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(Error::OAuthCancelled),
            guard = self.outcome.lock() => guard,
        };
        if let Some(done) = outcome.as_ref() {
            return done.clone();
        }
        let result = self.run().await;
        match &result {
            Ok(_) => debug_log!("device login: approved and saved"),
            Err(e) => debug_log!("device login: ended with {}", e.code()),
        }
        *outcome = Some(result.clone());
        result
    }

    async fn run(&self) -> Result<Credentials> {
        let tokens = self.poll_until_approved().await?;
        let creds = credentials_from(&tokens, now_ms(), &self.token_endpoint())?;
        let store = CredentialStore::new(self.settings.qwen_home().to_path_buf());
        // Unlike the CLI, save under the lock so a refresh of the previous login in another process cannot
        // overwrite this one. The approved tokens must not be lost, so without the lock (missing directory,
        // lock held far too long) we still save.
        let _guard = match crate::lock::acquire(&self.settings.lock_path()).await {
            Ok(g) => Some(g),
            Err(e) => {
                debug_log!("device login: saving without the credentials lock ({})", e.code());
                None
            }
        };
        let to_save = creds.clone();
        // fsync and rename block; keep them off the async workers.
        tokio::task::spawn_blocking(move || store.save(&to_save, KeyOrder::DeviceFlow)).await.map_err(|e| {
            Error::CredsWrite { path: self.settings.creds_path(), detail: format!("save task failed: {e}") }
        })??;
        crate::token_manager::for_settings(&self.settings).install(creds.clone());
        Ok(creds)
    }

    fn token_endpoint(&self) -> String {
        format!("{}{}", self.settings.oauth_base_url, oauth::TOKEN_PATH)
    }

    async fn poll_until_approved(&self) -> Result<TokenResponse> {
        let expires_in = self.authorization.expires_in;
        let deadline = self.issued_at + Duration::from_secs(expires_in);
        let mut schedule = PollSchedule::new(expires_in);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::OAuthCancelled);
            }
            if Instant::now() >= deadline || !schedule.take_attempt() {
                debug_log!("device login: code expired after {} polls", schedule.attempts());
                return Err(Error::OAuthExpired);
            }
            let polled = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Error::OAuthCancelled),
                r = oauth::poll_device_token(&self.settings, &self.authorization.device_code, &self.pkce.verifier) => r,
            };
            match polled {
                Ok(PollOutcome::Success(tokens)) => return Ok(tokens),
                Ok(PollOutcome::Pending) => schedule.on_pending(),
                Ok(PollOutcome::SlowDown) => schedule.on_slow_down(),
                // A dropped connection while the user is still in the browser should not lose the login;
                // keep the current interval and try again (bounded by the deadline).
                Err(e @ Error::Network { .. }) => debug_log!("device login: {e}; polling on"),
                Err(e) => return Err(e),
            }
            let wait = schedule.interval().min(deadline.saturating_duration_since(Instant::now()));
            debug_log!("device login: next poll in {} ms", wait.as_millis());
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Error::OAuthCancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// §5: the file the CLI would write after a device login. Answers that would give a file the CLI
/// rejects on load (no refresh token, no expiry) are refused instead of saved.
fn credentials_from(t: &TokenResponse, now_ms: i64, endpoint: &str) -> Result<Credentials> {
    let refresh_token = t
        .refresh_token
        .clone()
        .ok_or_else(|| Error::bad_response(endpoint, "the token answer has no refresh_token"))?;
    let expires_in = t.expires_in.ok_or_else(|| Error::bad_response(endpoint, "the token answer has no expires_in"))?;
    log::remember_secret(&t.access_token);
    log::remember_secret(&refresh_token);
    Ok(Credentials {
        access_token: t.access_token.clone(),
        refresh_token,
        token_type: t.token_type.clone().unwrap_or_else(|| "Bearer".to_string()),
        resource_url: t.resource_url.clone(),
        expiry_date: now_ms + (expires_in as i64) * 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn login_refuses_an_untrusted_oauth_host_before_sending_anything() {
        let raw = crate::config::RawOptions {
            oauth_base_url: Some("https://auth.evil.example".into()),
            qwen_home: Some(std::env::temp_dir().join("qwen-untrusted-login").display().to_string()),
            ..Default::default()
        };
        let settings = Arc::new(Settings::resolve(&raw).unwrap());
        let err = DeviceLogin::start(settings).await.err().expect("refused");
        assert_eq!(err.code(), "E_UNTRUSTED_HOST");
    }

    #[test]
    fn schedule_starts_at_2s_and_slows_down_to_10s() {
        let mut s = PollSchedule::new(300);
        assert_eq!(s.interval(), Duration::from_millis(2000));
        let mut seen = vec![];
        for _ in 0..6 {
            s.on_slow_down();
            seen.push(s.interval().as_millis());
        }
        assert_eq!(seen, [3000, 4500, 6750, 10000, 10000, 10000]);
    }

    #[test]
    fn schedule_pending_resets_to_2s() {
        let mut s = PollSchedule::new(300);
        s.on_slow_down();
        s.on_slow_down();
        assert_eq!(s.interval(), Duration::from_millis(4500));
        s.on_pending();
        assert_eq!(s.interval(), Duration::from_millis(2000));
        s.on_slow_down();
        assert_eq!(s.interval(), Duration::from_millis(3000));
    }

    #[test]
    fn schedule_attempt_limit_is_ceil_half_expires_in() {
        assert_eq!(PollSchedule::new(300).max_attempts(), 150);
        assert_eq!(PollSchedule::new(5).max_attempts(), 3);
        assert_eq!(PollSchedule::new(0).max_attempts(), 1);
        let mut s = PollSchedule::new(5);
        assert!(s.take_attempt() && s.take_attempt() && s.take_attempt());
        assert!(!s.take_attempt());
        assert_eq!(s.attempts(), 3);
    }

    fn tokens() -> TokenResponse {
        TokenResponse {
            access_token: "at-unit-123456".into(),
            refresh_token: Some("rt-unit-123456".into()),
            token_type: None,
            expires_in: Some(3600),
            resource_url: Some("portal.qwen.ai".into()),
        }
    }

    #[test]
    fn credentials_from_token_answer() {
        let c = credentials_from(&tokens(), 1_000_000, "ep").unwrap();
        assert_eq!(c.expiry_date, 1_000_000 + 3_600_000);
        assert_eq!(c.token_type, "Bearer");
        assert_eq!(c.resource_url.as_deref(), Some("portal.qwen.ai"));
        assert_eq!(c.refresh_token, "rt-unit-123456");
        let typed = TokenResponse { token_type: Some("bearer".into()), resource_url: None, ..tokens() };
        let c = credentials_from(&typed, 0, "ep").unwrap();
        assert_eq!((c.token_type.as_str(), c.resource_url), ("bearer", None));
    }

    #[test]
    fn answers_that_would_make_an_invalid_file_are_refused() {
        let e = credentials_from(&TokenResponse { expires_in: None, ..tokens() }, 0, "ep").unwrap_err();
        assert_eq!(e.code(), "E_BAD_RESPONSE");
        assert!(e.to_string().contains("expires_in"));
        let e = credentials_from(&TokenResponse { refresh_token: None, ..tokens() }, 0, "ep").unwrap_err();
        assert_eq!(e.code(), "E_BAD_RESPONSE");
        assert!(!e.to_string().contains("at-unit-123456"));
    }
}
