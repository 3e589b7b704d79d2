//! Every decision about one request, apart from moving its bytes: which URL, body and headers the next
//! attempt sends (token, CLI headers, pacing), and what a response or a transport failure means (deliver,
//! read the start of the body to classify it, wait and retry, or fail with which error).
//!
//! Two drivers move the bytes: [`super::Pipeline::execute`] with our own HTTP client, and the JS adapter
//! with the runtime's `fetch` (under Bun, whose own client has no thread hops of ours to pay). Both ask
//! the same questions here, so retries, refreshes and errors cannot drift apart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use tokio_util::sync::CancellationToken;

use super::headers::{self, AuthKind};
use super::{pacing, parse_method, retry, strip_query, Auth, Pipeline, Request};
use crate::config::Settings;
use crate::debug_log;
use crate::error::{Error, Result};

/// Every answer with a status below this is delivered as it is, whatever the auth and the attempt: the
/// runtime transport hands those over without asking `judge` (and forgets the exchange later, in a batch).
pub const DELIVERED_BELOW: u16 = 400;

/// Enough of an error body to classify it.
pub const PREFIX_LIMIT: usize = 64 * 1024;

/// What to do with what came back.
#[derive(Debug)]
pub enum Verdict {
    /// Hand the response to the caller as it is (with any prefix already read put back in front).
    Deliver,
    /// Read up to [`PREFIX_LIMIT`] bytes of the body and ask [`Exchange::judge_prefix`].
    ReadPrefix,
    /// Drop this response (closing its connection), wait this long, then prepare the next attempt.
    Retry(Duration),
    /// The request is over with this error.
    Fail(Error),
}

/// One request from the caller's `fetch(url, init)` to its final response.
pub struct Exchange {
    settings: Arc<Settings>,
    auth: Auth,
    /// The URL without query or fragment: what messages and logs name.
    pub endpoint: String,
    pub url: Url,
    pub method: Method,
    incoming: Vec<(String, String)>,
    /// What goes out as the body on every attempt (the CLI-aligned or plan-mapped form of the caller's).
    pub body: Option<Bytes>,
    retries: u32,
    attempt: u32,
    /// The token of the latest attempt: after a 401/403 the next attempt forces one refresh away from it.
    sent_token: Option<String>,
    refused: Option<String>,
    refreshed: bool,
    /// Retry-After of the 429 whose body is being read.
    server_wait: Option<Duration>,
}

impl Exchange {
    /// Checks that need nothing from the network: the host may receive a token, the key fits the endpoint,
    /// the method is one; then the body as it will go out.
    pub fn new(pipeline: &Pipeline, req: Request) -> Result<Exchange> {
        // Before any token is fetched or sent: refuse hosts we would not give it to.
        let url = pipeline.trusted_url(&req.url)?;
        let body = pipeline.key_path_body(&req)?;
        // After the key path's model alias: the CLI's rules depend on the model that goes out.
        let body = super::body::align(body, &req, pipeline.settings(), &pipeline.sessions);
        let method = parse_method(&req.method)?;
        Ok(Exchange {
            settings: pipeline.settings().clone(),
            auth: pipeline.auth().clone(),
            endpoint: strip_query(&req.url),
            url,
            method,
            incoming: req.headers,
            body,
            retries: 0,
            attempt: 0,
            sent_token: None,
            refused: None,
            refreshed: false,
            server_wait: None,
        })
    }

    /// The headers of the next attempt when it can go at once: the token is at hand (no refresh, no file
    /// to re-read) and pacing is off. `None`: call [`Exchange::prepare`], which may wait.
    pub fn ready(&mut self) -> Option<Vec<(String, String)>> {
        let (token, kind) = self.ready_token()?;
        Some(self.outgoing(token, kind, Duration::ZERO))
    }

    /// [`Exchange::ready`], each header handed to `f` instead of collected; false: call `prepare`.
    pub fn ready_each(&mut self, f: impl FnMut(&str, &str)) -> bool {
        let Some((token, kind)) = self.ready_token() else { return false };
        self.next_attempt(Duration::ZERO);
        headers::each(&self.incoming, &token, kind, &self.settings.cli_version, f);
        self.sent_token = Some(token);
        true
    }

    /// The token when the next attempt can go at once (counted as a request sent).
    fn ready_token(&mut self) -> Option<(String, AuthKind)> {
        if self.settings.pacing_enabled() || self.refused.is_some() {
            return None;
        }
        let (token, kind) = match &self.auth {
            Auth::ApiKey(key) => (key.clone(), AuthKind::ApiKey),
            Auth::OAuth(tm) => (tm.ready_access_token()?, AuthKind::OAuth),
        };
        crate::quota::count_request(self.settings.pacing_path());
        Some((token, kind))
    }

    /// The headers of the next attempt: the token (one forced refresh after a refusal), then this
    /// process's pacing turn. Ends with `Aborted` as soon as `cancel` fires.
    pub async fn prepare(&mut self, cancel: &CancellationToken) -> Result<Vec<(String, String)>> {
        if cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        let (token, kind) = token(&self.auth, self.refused.take(), cancel).await?;
        let turn = pacing::wait_turn(&self.settings, cancel).await?;
        Ok(self.outgoing(token, kind, turn.waited))
    }

    fn outgoing(&mut self, token: String, kind: AuthKind, waited: Duration) -> Vec<(String, String)> {
        self.next_attempt(waited);
        let headers = headers::build(&self.incoming, &token, kind, &self.settings.cli_version);
        self.sent_token = Some(token);
        headers
    }

    fn next_attempt(&mut self, waited: Duration) {
        self.attempt += 1;
        debug_log!("{} {} attempt {} (paced {} ms)", self.method, self.endpoint, self.attempt, waited.as_millis());
    }

    /// Whether `judge` reads the `Retry-After` headers for this status (429 and 5xx); for any other status
    /// an empty map gives the same verdict, so a caller need not collect them.
    pub fn reads_retry_after(status: u16) -> bool {
        status == 429 || status >= 500
    }

    /// What the status line and headers of an answer mean.
    pub fn judge(&mut self, status: u16, headers: &HeaderMap) -> Verdict {
        debug_log!("{} {} attempt {} -> {status}", self.method, self.endpoint, self.attempt);
        if status < DELIVERED_BELOW {
            return Verdict::Deliver;
        }
        let api_key = matches!(self.auth, Auth::ApiKey(_));
        if matches!(status, 401 | 403) && !api_key {
            if self.refreshed {
                return Verdict::Fail(Error::TokenRefused { endpoint: self.endpoint.clone(), status });
            }
            self.refreshed = true;
            self.refused = self.sent_token.take();
            debug_log!("token refused by the API: forcing one refresh");
            return Verdict::Retry(Duration::ZERO);
        }
        // API keys: a 401 is final (there is nothing to refresh); a 405 from the Coding Plan is its
        // "coding agents only" gate, told apart by its body.
        if api_key && status == 401 {
            return Verdict::Fail(Error::KeyRefused { endpoint: self.endpoint.clone(), status });
        }
        if api_key && status == 405 {
            return Verdict::ReadPrefix;
        }
        if status == 429 {
            self.server_wait = retry::retry_after(headers, SystemTime::now());
            return Verdict::ReadPrefix;
        }
        if status >= 500 && self.retries < self.settings.max_retries {
            let wait = retry::retry_after(headers, SystemTime::now()).unwrap_or_else(|| self.backoff());
            return self.retry(wait, "server error");
        }
        Verdict::Deliver
    }

    /// What a 405 (API key) or 429 means, given the start of its body (empty when it could not be read).
    /// Records a 429 in the machine's quota view.
    pub async fn judge_prefix(&mut self, status: u16, prefix: &[u8]) -> Verdict {
        if status == 405 {
            if crate::api_key::is_coding_agents_only(prefix) {
                return Verdict::Fail(Error::KeyNotAllowed { endpoint: self.endpoint.clone() });
            }
            return Verdict::Deliver;
        }
        if status != 429 {
            return Verdict::Deliver;
        }
        let quota_hit = retry::is_free_quota_exhausted(status, prefix);
        let reason = if quota_hit { crate::quota::Reason::Quota } else { crate::quota::Reason::RateLimit };
        crate::quota::record_429(&self.settings, reason, self.server_wait).await;
        if quota_hit {
            return Verdict::Fail(Error::QuotaExhausted { endpoint: self.endpoint.clone() });
        }
        if self.retries >= self.settings.max_retries {
            return Verdict::Deliver;
        }
        let wait = self.server_wait.take().unwrap_or_else(|| self.backoff());
        self.retry(wait, "429")
    }

    /// What a failure before the answer's head means: retried with back-off while retries last.
    pub fn network_error(&mut self, err: Error) -> Verdict {
        debug_log!("{} {} attempt {}: {err}", self.method, self.endpoint, self.attempt);
        if self.retries >= self.settings.max_retries {
            return Verdict::Fail(err);
        }
        let wait = self.backoff();
        self.retry(wait, "network error")
    }

    fn retry(&mut self, wait: Duration, why: &str) -> Verdict {
        let wait = wait.min(Duration::from_millis(self.settings.max_wait_ms));
        debug_log!("waiting {} ms before retrying ({why})", wait.as_millis());
        self.retries += 1;
        Verdict::Retry(wait)
    }

    fn backoff(&self) -> Duration {
        retry::backoff(self.retries, rand::rng().random::<f64>())
    }
}

/// The token for the next attempt. With `refused`, one forced refresh (unless another process has
/// refreshed since). A refresh runs in its own task so that an abort does not cut it off mid-way (the
/// manager may hold the credentials lock); the caller just stops waiting.
async fn token(auth: &Auth, refused: Option<String>, cancel: &CancellationToken) -> Result<(String, AuthKind)> {
    match auth {
        Auth::ApiKey(key) => Ok((key.clone(), AuthKind::ApiKey)),
        Auth::OAuth(tm) => {
            if refused.is_none() {
                if let Some(creds) = tm.ready_credentials() {
                    return Ok((creds.access_token, AuthKind::OAuth));
                }
            }
            let tm = tm.clone();
            let force = refused.is_some();
            let task = tokio::spawn(async move { tm.valid_credentials(force, refused.as_deref()).await });
            let creds = tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Aborted),
                joined = task => joined.map_err(|e| Error::bad_response("token manager", e.to_string()))??,
            };
            crate::log::remember_secret(&creds.access_token);
            Ok((creds.access_token, AuthKind::OAuth))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawOptions;

    const KEY: &str = "sk-sp-exchange-test-0123456789";

    /// An API-key pipeline (no token manager) whose files live in a fresh temp dir.
    fn pipeline(max_retries: u32, max_wait_ms: u64) -> (Pipeline, std::path::PathBuf) {
        let home =
            std::env::temp_dir().join(format!("qwen-exchange-{}-{}", std::process::id(), rand::rng().random::<u64>()));
        std::fs::create_dir_all(&home).unwrap();
        let raw = RawOptions {
            qwen_home: Some(home.to_string_lossy().into_owned()),
            min_interval_ms: Some(0.0),
            jitter_min_ms: Some(0.0),
            jitter_max_ms: Some(0.0),
            max_retries: Some(max_retries as f64),
            max_wait_ms: Some(max_wait_ms as f64),
            ..Default::default()
        };
        let settings = Arc::new(Settings::resolve(&raw).unwrap());
        (Pipeline::new(settings, Auth::ApiKey(KEY.into())), home)
    }

    fn chat(url: &str) -> Request {
        Request {
            url: url.into(),
            method: "post".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(Bytes::from_static(br#"{"model":"coder-model","messages":[{"role":"user","content":"hi"}]}"#)),
        }
    }

    const CODING: &str = "https://coding.dashscope.aliyuncs.com/v1/chat/completions";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn refuses_before_anything_is_sent() {
        let (p, _home) = pipeline(2, 1000);
        let untrusted = Exchange::new(&p, chat("https://evil.example.com/v1/chat/completions")).err().unwrap();
        assert_eq!(untrusted.code(), "E_UNTRUSTED_HOST");
        // A DashScope-only key shape on the Coding Plan endpoint: refused without a request.
        let (p2, _h2) = pipeline(2, 1000);
        let p2 = Pipeline::new(p2.settings().clone(), Auth::ApiKey("sk-dashscope-only".into()));
        assert_eq!(Exchange::new(&p2, chat(CODING)).err().unwrap().code(), "E_KEY_INVALID");
        let mut bad = chat(CODING);
        bad.method = "bad method".into();
        assert_eq!(Exchange::new(&p, bad).err().unwrap().code(), "E_INVALID_ARG");
    }

    #[test]
    fn ready_gives_the_key_and_cli_headers_and_a_2xx_is_delivered() {
        let (p, _home) = pipeline(2, 1000);
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert_eq!(ex.method, Method::POST);
        let h = ex.ready().expect("an API key with pacing off needs no wait");
        let get = |name: &str| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        assert_eq!(get("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(get("x-dashscope-authtype"), Some("openai"));
        assert!(matches!(ex.judge(200, &HeaderMap::new()), Verdict::Deliver));
    }

    #[test]
    fn every_status_below_delivered_below_is_delivered_whatever_came_before() {
        // The runtime transport hands these over without asking `judge`: that must never lose a decision.
        let (p, _home) = pipeline(2, 1000);
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert!(matches!(ex.judge(503, &HeaderMap::new()), Verdict::Retry(_)));
        for status in [100, 101, 200, 204, 206, 301, 302, 304, 399] {
            assert!(status < DELIVERED_BELOW);
            assert!(matches!(ex.judge(status, &HeaderMap::new()), Verdict::Deliver), "{status}");
        }
        assert!(!matches!(ex.judge(401, &HeaderMap::new()), Verdict::Deliver), "a key refused is not delivered");
    }

    #[test]
    fn server_errors_retry_with_retry_after_capped_then_the_answer_goes_through() {
        let (p, _home) = pipeline(2, 1500);
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        match ex.judge(503, &headers(&[("retry-after", "1")])) {
            Verdict::Retry(w) => assert_eq!(w, Duration::from_secs(1)),
            v => panic!("{v:?}"),
        }
        match ex.judge(500, &headers(&[("retry-after", "60")])) {
            Verdict::Retry(w) => assert_eq!(w, Duration::from_millis(1500), "capped at max_wait_ms"),
            v => panic!("{v:?}"),
        }
        // Retries used up: the caller gets the 500 itself.
        assert!(matches!(ex.judge(500, &HeaderMap::new()), Verdict::Deliver));
    }

    #[test]
    fn key_answers_401_and_405_become_errors_that_say_what_to_do() {
        let (p, _home) = pipeline(2, 1000);
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        match ex.judge(401, &HeaderMap::new()) {
            Verdict::Fail(e) => assert_eq!(e.code(), "E_KEY_REFUSED"),
            v => panic!("{v:?}"),
        }
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert!(matches!(ex.judge(405, &HeaderMap::new()), Verdict::ReadPrefix));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let gate = br#"{"error":{"message":"Coding Plan is currently only available for Coding Agents"}}"#;
        match rt.block_on(ex.judge_prefix(405, gate)) {
            Verdict::Fail(e) => assert_eq!(e.code(), "E_KEY_NOT_ALLOWED"),
            v => panic!("{v:?}"),
        }
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert!(matches!(ex.judge(405, &HeaderMap::new()), Verdict::ReadPrefix));
        assert!(matches!(rt.block_on(ex.judge_prefix(405, b"method not allowed")), Verdict::Deliver));
    }

    #[test]
    fn a_429_waits_as_told_and_the_daily_quota_fails_fast() {
        let (p, _home) = pipeline(1, 5000);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert!(matches!(ex.judge(429, &headers(&[("retry-after-ms", "250")])), Verdict::ReadPrefix));
        match rt.block_on(ex.judge_prefix(429, br#"{"error":{"message":"slow down"}}"#)) {
            Verdict::Retry(w) => assert_eq!(w, Duration::from_millis(250)),
            v => panic!("{v:?}"),
        }
        // The one retry is used: the next 429 goes to the caller.
        assert!(matches!(ex.judge(429, &HeaderMap::new()), Verdict::ReadPrefix));
        assert!(matches!(rt.block_on(ex.judge_prefix(429, b"{}")), Verdict::Deliver));

        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        assert!(matches!(ex.judge(429, &HeaderMap::new()), Verdict::ReadPrefix));
        let quota = br#"{"error":{"code":"insufficient_quota","message":"Free allocated quota exceeded."}}"#;
        match rt.block_on(ex.judge_prefix(429, quota)) {
            Verdict::Fail(e) => assert_eq!(e.code(), "E_QUOTA_EXHAUSTED"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn network_errors_back_off_then_fail_with_the_error() {
        let (p, _home) = pipeline(1, 60_000);
        let mut ex = Exchange::new(&p, chat(CODING)).unwrap();
        let err = || Error::Network { endpoint: CODING.into(), detail: "could not connect".into() };
        match ex.network_error(err()) {
            // First back-off step: 1 s scaled by 0.75..1.
            Verdict::Retry(w) => assert!(w >= Duration::from_millis(750) && w <= Duration::from_secs(1), "{w:?}"),
            v => panic!("{v:?}"),
        }
        match ex.network_error(err()) {
            Verdict::Fail(e) => assert_eq!(e.code(), "E_NETWORK"),
            v => panic!("{v:?}"),
        }
    }
}
