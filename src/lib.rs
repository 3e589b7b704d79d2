#![deny(clippy::all)]
//! napi bindings only: a thin typed surface over the modules below. No logic lives here.

pub mod api_key;
pub mod config;
pub mod credentials;
pub mod device_flow;
pub mod error;
pub mod http;
pub mod lock;
pub mod log;
pub mod models;
pub mod oauth;
pub mod pipeline;
pub mod pkce;
pub mod quota;
pub mod token_manager;

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use crate::config::{RawOptions, Settings};
use crate::credentials::Credentials;
use crate::device_flow::DeviceLogin;
use crate::pipeline::{Auth, BodyStream, Pipeline};
use crate::token_manager::TokenManager;

/// Options shared by every entry point; every field falls back to its env var, then its default.
#[napi(object)]
#[derive(Default, Clone)]
pub struct QwenOptions {
    /// Directory of `oauth_creds.json` (env `QWEN_HOME`, default `~/.qwen`).
    pub qwen_home: Option<String>,
    /// OAuth server (env `QWEN_OAUTH_BASE_URL`, default `https://chat.qwen.ai`).
    pub oauth_base_url: Option<String>,
    /// Version in `QwenCode/<v>` headers (env `QWEN_CLI_VERSION`).
    pub cli_version: Option<String>,
    /// Minimum gap between request starts, ms; 0 with zero jitter disables pacing.
    pub min_interval_ms: Option<f64>,
    pub jitter_min_ms: Option<f64>,
    pub jitter_max_ms: Option<f64>,
    pub max_retries: Option<f64>,
    pub max_wait_ms: Option<f64>,
    /// Debug log to stderr, tokens redacted (env `QWEN_OAUTH_DEBUG=1`).
    pub debug: Option<bool>,
    /// Extra hosts a token may be sent to.
    pub trusted_hosts: Option<Vec<String>>,
    /// Chat-completions bodies as the Qwen Code CLI sends them (default on; env `QWEN_ALIGN_BODY=0` turns it off).
    pub align_request_body: Option<bool>,
    /// Requests a day to warn about at 80 % and 95 % (env `QWEN_DAILY_LIMIT`, default 1000; 0: no warnings).
    pub daily_limit: Option<f64>,
}

fn settings(options: Option<QwenOptions>) -> Result<Arc<Settings>> {
    let o = options.unwrap_or_default();
    let s = Settings::resolve(&RawOptions {
        qwen_home: o.qwen_home,
        oauth_base_url: o.oauth_base_url,
        cli_version: o.cli_version,
        min_interval_ms: o.min_interval_ms,
        jitter_min_ms: o.jitter_min_ms,
        jitter_max_ms: o.jitter_max_ms,
        max_retries: o.max_retries,
        max_wait_ms: o.max_wait_ms,
        debug: o.debug,
        trusted_hosts: o.trusted_hosts,
        align_request_body: o.align_request_body,
        daily_limit: o.daily_limit,
    })?;
    log::set_enabled(s.debug);
    Ok(Arc::new(s))
}

/// Credentials as saved in `oauth_creds.json`, plus the API base derived from `resource_url`.
#[napi(object)]
pub struct CredentialsInfo {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub resource_url: Option<String>,
    /// Epoch milliseconds.
    pub expiry_date: f64,
    pub api_base_url: String,
}

impl From<Credentials> for CredentialsInfo {
    fn from(c: Credentials) -> Self {
        let api_base_url = c.api_base_url();
        CredentialsInfo {
            access_token: c.access_token,
            refresh_token: c.refresh_token,
            token_type: c.token_type,
            resource_url: c.resource_url,
            expiry_date: c.expiry_date as f64,
            api_base_url,
        }
    }
}

/// A device login in progress.
#[napi]
pub struct LoginSession {
    inner: Arc<DeviceLogin>,
}

#[napi]
impl LoginSession {
    #[napi(getter)]
    pub fn user_code(&self) -> String {
        self.inner.authorization.user_code.clone()
    }

    #[napi(getter)]
    pub fn verification_uri(&self) -> String {
        self.inner.authorization.verification_uri.clone()
    }

    #[napi(getter)]
    pub fn verification_uri_complete(&self) -> String {
        self.inner.authorization.verification_uri_complete.clone()
    }

    /// Seconds the code stays valid.
    #[napi(getter)]
    pub fn expires_in(&self) -> u32 {
        self.inner.authorization.expires_in.min(u32::MAX as u64) as u32
    }

    /// Resolves with the saved credentials once the user approved.
    #[napi]
    pub async fn wait(&self) -> Result<CredentialsInfo> {
        Ok(self.inner.wait().await?.into())
    }

    #[napi]
    pub fn cancel(&self) {
        self.inner.cancel_token().cancel();
    }
}

/// Start a device login: asks chat.qwen.ai for a code; nothing is written until `wait()` succeeds.
#[napi]
pub async fn start_login(options: Option<QwenOptions>) -> Result<LoginSession> {
    let s = settings(options)?;
    Ok(LoginSession { inner: Arc::new(DeviceLogin::start(s).await?) })
}

/// The credentials in the file, validated; null when there is no file.
#[napi]
pub fn load_credentials(options: Option<QwenOptions>) -> Result<Option<CredentialsInfo>> {
    let s = settings(options)?;
    Ok(token_manager::for_settings(&s).current()?.map(Into::into))
}

/// Credentials with a valid access token, refreshed (once per machine) when needed.
#[napi]
pub async fn get_valid_credentials(options: Option<QwenOptions>, force_refresh: Option<bool>) -> Result<CredentialsInfo> {
    let s = settings(options)?;
    let tm = token_manager::for_settings(&s);
    Ok(tm.valid_credentials(force_refresh.unwrap_or(false), None).await?.into())
}

/// `https://<resource_url>/v1` as the CLI derives it.
#[napi]
pub fn api_base_url(resource_url: Option<String>) -> String {
    credentials::api_base_url(resource_url.as_deref())
}

/// `QwenCode/<version> (<platform>; <arch>)`.
#[napi]
pub fn user_agent(cli_version: Option<String>) -> String {
    pipeline::headers::user_agent(cli_version.as_deref().unwrap_or(config::DEFAULT_CLI_VERSION))
}

/// The `qwen-code` provider block (models and limits) for OpenCode's config, with the user's own block
/// (if any) merged over it key by key.
#[napi]
pub fn provider_config(user_block: Option<serde_json::Value>) -> serde_json::Value {
    models::provider_config(user_block.as_ref())
}

/// One choice of the API-key login's endpoint prompt.
#[napi(object)]
pub struct ApiKeyEndpoint {
    pub label: String,
    /// The endpoint's base URL (what is stored in the login's metadata).
    pub value: String,
    pub hint: String,
}

/// The endpoints an API key can be used with (Coding Plan China / international, DashScope Beijing / Singapore).
#[napi]
pub fn api_key_endpoints() -> Vec<ApiKeyEndpoint> {
    api_key::ENDPOINTS
        .iter()
        .map(|e| ApiKeyEndpoint { label: e.label.into(), value: e.url.into(), hint: e.hint.into() })
        .collect()
}

/// null when the key's shape fits the endpoint, else a message saying what is wrong (never the key).
#[napi]
pub fn check_api_key(key: String, endpoint: String) -> Option<String> {
    api_key::check_key(&key, &endpoint)
}

/// The endpoint for a stored key whose login names none: the China endpoint of the key's plan.
#[napi]
pub fn default_api_key_endpoint(key: String) -> String {
    api_key::default_endpoint(&key).to_string()
}

/// The last 429 the machine got.
#[napi(object)]
pub struct Last429Info {
    /// Epoch milliseconds.
    pub at: f64,
    /// `rate_limit` or `quota` (daily quota used up).
    pub reason: String,
    /// The wait the server asked for, if it named one.
    pub retry_after_ms: Option<f64>,
}

/// The local quota view: requests this machine sent, all processes together.
#[napi(object)]
pub struct QuotaStatus {
    /// Requests in the current calendar minute.
    pub minute: u32,
    /// Requests since 00:00 Beijing time (UTC+8).
    pub today: u32,
    pub daily_limit: f64,
    /// Next 00:00 Beijing time, epoch milliseconds.
    pub day_resets_at: f64,
    #[napi(js_name = "last429")]
    pub last_429: Option<Last429Info>,
}

impl From<quota::Status> for QuotaStatus {
    fn from(s: quota::Status) -> Self {
        QuotaStatus {
            minute: s.minute,
            today: s.today,
            daily_limit: s.daily_limit as f64,
            day_resets_at: s.day_resets_at_ms as f64,
            last_429: s.last_429.map(|l| Last429Info {
                at: l.at_ms as f64,
                reason: l.reason.as_str().to_string(),
                retry_after_ms: l.retry_after_ms.map(|ms| ms as f64),
            }),
        }
    }
}

/// The quota view from the machine-wide state file (nothing is created when there is none).
#[napi]
pub fn quota_status(options: Option<QwenOptions>) -> Result<QuotaStatus> {
    let s = settings(options)?;
    Ok(quota::status(&s)?.into())
}

/// Where this configuration keeps its files.
#[napi(object)]
pub struct QwenPaths {
    pub qwen_home: String,
    /// `oauth_creds.json`, shared with the Qwen Code CLI.
    pub credentials: String,
    pub lock: String,
    /// Pacing and quota state.
    pub state: String,
}

#[napi]
pub fn qwen_paths(options: Option<QwenOptions>) -> Result<QwenPaths> {
    let s = settings(options)?;
    let text = |p: std::path::PathBuf| p.display().to_string();
    Ok(QwenPaths {
        qwen_home: text(s.qwen_home.clone()),
        credentials: text(s.creds_path()),
        lock: text(s.lock_path()),
        state: text(s.pacing_path()),
    })
}

/// Delete `oauth_creds.json` under the credentials lock (logs the Qwen Code CLI out too). Resolves true when
/// there was a file.
#[napi]
pub async fn remove_credentials(options: Option<QwenOptions>) -> Result<bool> {
    let s = settings(options)?;
    Ok(token_manager::for_settings(&s).remove_credentials().await?)
}

/// A configured client: one per plugin instance; `request()` per fetch.
#[napi]
pub struct QwenClient {
    pipeline: Arc<Pipeline>,
    tokens: Option<Arc<TokenManager>>,
}

#[napi]
impl QwenClient {
    /// OAuth client by default; with `apiKey`, requests carry that key instead.
    #[napi(constructor)]
    pub fn new(options: Option<QwenOptions>, api_key: Option<String>) -> Result<Self> {
        let s = settings(options)?;
        let (auth, tokens) = match api_key {
            Some(k) => {
                log::remember_secret(&k);
                (Auth::ApiKey(k), None)
            }
            None => {
                let tm = token_manager::for_settings(&s);
                (Auth::OAuth(tm.clone()), Some(tm))
            }
        };
        Ok(QwenClient { pipeline: Arc::new(Pipeline::new(s, auth)), tokens })
    }

    /// Prepare one request; `send()` runs it, `abort()` cancels it at any stage.
    #[napi]
    pub fn request(
        &self,
        url: String,
        method: String,
        headers: Vec<Vec<String>>,
        body: Option<Buffer>,
    ) -> PendingRequest {
        let headers = headers
            .into_iter()
            .filter_map(|mut kv| if kv.len() == 2 { let v = kv.pop()?; Some((kv.pop()?, v)) } else { None })
            .collect();
        let req = pipeline::Request {
            url,
            method,
            headers,
            body: body.map(|b| bytes::Bytes::copy_from_slice(&b)),
        };
        PendingRequest { pipeline: self.pipeline.clone(), req: Mutex::new(Some(req)), cancel: CancellationToken::new() }
    }

    /// Changes whenever the OAuth credentials in use change (refresh, reload, login); 0 for API keys.
    #[napi]
    pub fn credentials_generation(&self) -> u32 {
        self.tokens.as_ref().map(|t| t.generation()).unwrap_or(0)
    }

    /// The quota view as of this process's latest request (no file access); null before the first one.
    #[napi]
    pub fn quota(&self) -> Option<QuotaStatus> {
        quota::latest(self.pipeline.settings()).map(Into::into)
    }

    /// The OAuth credentials currently in use (null for API keys or when logged out).
    #[napi]
    pub fn current_credentials(&self) -> Result<Option<CredentialsInfo>> {
        match &self.tokens {
            Some(t) => Ok(t.current()?.map(Into::into)),
            None => Ok(None),
        }
    }
}

#[napi]
pub struct PendingRequest {
    pipeline: Arc<Pipeline>,
    req: Mutex<Option<pipeline::Request>>,
    cancel: CancellationToken,
}

#[napi]
impl PendingRequest {
    /// Resolves at the response headers; rejects with `[E_ABORTED]` once aborted.
    #[napi]
    pub async fn send(&self) -> Result<NativeResponse> {
        let req = self
            .req
            .lock()
            .map_err(|_| Error::new(Status::GenericFailure, "request state poisoned"))?
            .take()
            .ok_or_else(|| Error::new(Status::GenericFailure, "request already sent"))?;
        let r = self.pipeline.execute(req, self.cancel.clone()).await?;
        Ok(NativeResponse {
            status: r.status,
            status_text: r.status_text,
            headers: r.headers.into_iter().map(|(k, v)| vec![k, v]).collect(),
            url: r.url,
            body: Mutex::new(Some(r.body)),
            complete_body: Mutex::new(r.complete_body),
        })
    }

    /// Ends any wait, the request and the upstream connection (also mid-body).
    #[napi]
    pub fn abort(&self) {
        self.cancel.cancel();
    }
}

#[napi]
pub struct NativeResponse {
    status: u16,
    status_text: String,
    headers: Vec<Vec<String>>,
    url: String,
    body: Mutex<Option<BodyStream>>,
    complete_body: Mutex<Option<bytes::Bytes>>,
}

#[napi]
impl NativeResponse {
    /// The whole body when it arrived together with the headers (`body()` is then empty), else null; once.
    /// Copied into a JS-owned buffer: small, and the engine's GC sees its size.
    #[napi(ts_return_type = "Uint8Array | null")]
    pub fn take_complete_body<'env>(&self, env: &'env Env) -> Result<Option<BufferSlice<'env>>> {
        let body = self
            .complete_body
            .lock()
            .map_err(|_| Error::new(Status::GenericFailure, "body state poisoned"))?
            .take();
        body.map(|b| BufferSlice::copy_from(env, &b)).transpose()
    }

    #[napi(getter)]
    pub fn status(&self) -> u16 {
        self.status
    }

    #[napi(getter)]
    pub fn status_text(&self) -> String {
        self.status_text.clone()
    }

    #[napi(getter)]
    pub fn headers(&self) -> Vec<Vec<String>> {
        self.headers.clone()
    }

    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The body as a web `ReadableStream`, chunk by chunk; the stream owns the connection, so
    /// cancelling it closes the upstream socket.
    #[napi(ts_return_type = "ReadableStream<Uint8Array>")]
    pub fn body<'env>(&self, env: &'env Env) -> Result<ReadableStream<'env, BufferSlice<'env>>> {
        let stream = self
            .body
            .lock()
            .map_err(|_| Error::new(Status::GenericFailure, "body state poisoned"))?
            .take()
            .ok_or_else(|| Error::new(Status::GenericFailure, "body already used"))?;
        use futures_util::StreamExt;
        ReadableStream::create_with_stream_bytes(env, stream.map(|r| r.map_err(napi::Error::from)))
    }
}
