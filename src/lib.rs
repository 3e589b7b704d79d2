#![deny(clippy::all)]
//! napi bindings only: a thin typed surface over the modules below. No logic lives here.

pub mod api_key;
pub mod bridge;
pub mod config;
pub mod credentials;
pub mod device_flow;
pub mod error;
pub mod http;
pub mod lock;
pub mod log;
pub mod login_methods;
pub mod models;
pub mod oauth;
pub mod pipeline;
pub mod pkce;
pub mod quota;
pub mod token_manager;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use napi::bindgen_prelude::*;
use napi::check_status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue};
use napi_derive::napi;

use crate::config::{RawOptions, Settings};
use crate::credentials::Credentials;
use crate::device_flow::DeviceLogin;
use crate::pipeline::{Auth, Pipeline};
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

/// The cached credentials when they need no refresh, no reload and no pending save; null: ask
/// `getValidCredentials`. Answered on the calling thread: the async call's hop to the runtime and back costs
/// 25–60 µs, ten times the look itself.
#[napi]
pub fn ready_credentials(options: Option<QwenOptions>) -> Result<Option<CredentialsInfo>> {
    let s = settings(options)?;
    Ok(token_manager::for_settings(&s).ready_credentials().map(Into::into))
}

/// Credentials with a valid access token, refreshed (once per machine) when needed.
#[napi]
pub async fn get_valid_credentials(
    options: Option<QwenOptions>,
    force_refresh: Option<bool>,
) -> Result<CredentialsInfo> {
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

/// The provider's login methods as OpenCode lists them, the menu paths to each, and what Qwen did to the OAuth tier.
#[napi(object)]
pub struct LoginMethods {
    pub provider_name: String,
    pub oauth_label: String,
    /// "`opencode auth login` → Qwen Code → Qwen Code (qwen.ai OAuth)"
    pub oauth_login_choice: String,
    pub api_key_label: String,
    /// "`opencode auth login` → Qwen Code → Qwen API key (Coding Plan / DashScope)"
    pub api_key_login_choice: String,
    pub oauth_service_note: String,
}

#[napi]
pub fn login_methods() -> LoginMethods {
    use login_methods as m;
    LoginMethods {
        provider_name: m::PROVIDER_NAME.into(),
        oauth_label: m::OAUTH_LABEL.into(),
        oauth_login_choice: m::OAUTH_LOGIN_CHOICE.into(),
        api_key_label: m::API_KEY_LABEL.into(),
        api_key_login_choice: m::API_KEY_LOGIN_CHOICE.into(),
        oauth_service_note: m::OAUTH_SERVICE_NOTE.into(),
    }
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

/// Write the requests this process counted in memory (pacing off) to the state file now. Also runs at
/// process exit (api.cjs hooks `process` 'exit'; the C runtime's `atexit` too, where the host calls it).
#[napi]
pub fn flush_quota() {
    quota::flush();
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
    let text = |p: &std::path::Path| p.display().to_string();
    Ok(QwenPaths {
        qwen_home: text(s.qwen_home()),
        credentials: text(&s.creds_path()),
        lock: text(&s.lock_path()),
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

/// The one channel that carries every request's events to JS: created once per client, unreferenced
/// (so it never keeps the process alive) except while JS is waiting for an event.
type EventFn = ThreadsafeFunction<Delivery, UnknownReturnValue, Args, Status, false, true, 0>;

/// An event of request `id`, on its way to JS.
pub struct Delivery {
    id: u32,
    event: bridge::Event,
}

/// What the JS callback is called with; `Skip` (no arguments) for an event nobody waits for any more.
pub enum Args {
    Deliver(Delivery),
    Skip,
}

const HEAD: u32 = 0;
const CHUNK: u32 = 1;
const FAILED: u32 = 2;

/// `callback(id, 0, status, statusText, url, headers[k, v, ...], body?, done)`,
/// `callback(id, 1, body?, done)`, `callback(id, 2, "[E_CODE] message")`. Bodies are copied into JS-owned
/// buffers: the engine's GC sees their size (external buffers it does not, and RSS grew by the whole body).
impl JsValuesTupleIntoVec for Args {
    // The signature is napi's trait; `env` is the live env napi hands in on the JS thread.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    fn into_vec(self, env: napi::sys::napi_env) -> Result<Vec<napi::sys::napi_value>> {
        let Args::Deliver(Delivery { id, event }) = self else { return Ok(Vec::new()) };
        // SAFETY: called by the threadsafe function on the JS thread with its live env.
        unsafe {
            let mut out = vec![u32::to_napi_value(env, id)?];
            match event {
                bridge::Event::Head { head, body, done } => {
                    let flat: Vec<String> = head.headers.into_iter().flat_map(|(k, v)| [k, v]).collect();
                    out.push(u32::to_napi_value(env, HEAD)?);
                    out.push(u32::to_napi_value(env, head.status as u32)?);
                    out.push(String::to_napi_value(env, head.status_text)?);
                    out.push(String::to_napi_value(env, head.url)?);
                    out.push(Vec::<String>::to_napi_value(env, flat)?);
                    out.push(js_bytes(env, &body)?);
                    out.push(bool::to_napi_value(env, done)?);
                }
                bridge::Event::Chunk { body, done } => {
                    out.push(u32::to_napi_value(env, CHUNK)?);
                    out.push(js_bytes(env, &body)?);
                    out.push(bool::to_napi_value(env, done)?);
                }
                bridge::Event::Failed(e) => {
                    out.push(u32::to_napi_value(env, FAILED)?);
                    out.push(String::to_napi_value(env, format!("[{}] {}", e.code(), e))?);
                }
            }
            Ok(out)
        }
    }
}

static BODY_NUDGE: bridge::CollectNudge = bridge::CollectNudge::new();

/// The chunks as one JS-owned `Buffer`, or `undefined` when there are none.
unsafe fn js_bytes(env: napi::sys::napi_env, chunks: &[bytes::Bytes]) -> Result<napi::sys::napi_value> {
    let len: usize = chunks.iter().map(|c| c.len()).sum();
    if len == 0 {
        return unsafe { <()>::to_napi_value(env, ()) };
    }
    let mut data = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    check_status!(unsafe { napi::sys::napi_create_buffer(env, len, &mut data, &mut value) }, "create a body buffer")?;
    let mut at = data.cast::<u8>();
    for c in chunks {
        // SAFETY: `data` holds `len` bytes, the sum of the chunk lengths.
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), at, c.len());
            at = at.add(c.len());
        }
    }
    if BODY_NUDGE.delivered(len) {
        let mut total = 0;
        let pulse = bridge::CollectNudge::PULSE;
        // SAFETY: JS thread, live env. A failed nudge only leaves collection to the engine's own pace.
        unsafe {
            napi::sys::napi_adjust_external_memory(env, pulse, &mut total);
            napi::sys::napi_adjust_external_memory(env, -pulse, &mut total);
        }
    }
    Ok(value)
}

/// Requests in flight, as seen from the JS thread (every method here runs on it).
struct Link {
    events: OnceLock<Arc<EventFn>>,
    slots: Mutex<bridge::IdMap<Entry>>,
    /// Requests whose bytes the runtime's `fetch` moves (`exchange()`).
    exchanges: Mutex<bridge::IdMap<Arc<Exchanging>>>,
    next_id: AtomicU32,
    /// Requests JS is waiting on; the channel is referenced exactly while this is above zero.
    waiting: AtomicU32,
}

struct Entry {
    slot: Arc<bridge::Slot>,
    /// JS awaits an event for this request (its start, or a body read).
    waiting: bool,
}

impl Link {
    fn slots(&self) -> std::sync::MutexGuard<'_, bridge::IdMap<Entry>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exchanges(&self) -> std::sync::MutexGuard<'_, bridge::IdMap<Arc<Exchanging>>> {
        self.exchanges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget exchange `id` (`QwenClient.finish`).
    fn finish(&self, id: u32) {
        let Some(x) = self.exchanges().remove(&id) else { return };
        // Only a `prepareHeaders` still running holds the exchange too (it took it from the map, under the
        // same lock): then it has a wait to end. Cancelling nobody's token cost ~0.5 µs per request.
        if Arc::strong_count(&x) > 1 {
            x.cancel.cancel();
        }
    }

    /// One more event awaited: keep the process alive until it comes.
    fn expect(&self, env: napi::sys::napi_env) {
        if self.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Some(f) = self.events.get() {
                // SAFETY: JS thread, live env, live threadsafe function.
                unsafe { napi::sys::napi_ref_threadsafe_function(env, f.raw()) };
            }
        }
    }

    /// An awaited event came (or will not be awaited any more).
    fn settle(&self, env: napi::sys::napi_env) {
        if self.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(f) = self.events.get() {
                // SAFETY: as in `expect`.
                unsafe { napi::sys::napi_unref_threadsafe_function(env, f.raw()) };
            }
        }
    }

    /// On the JS thread, just before the callback runs: bookkeeping for the event of `id`.
    fn arrive(&self, env: napi::sys::napi_env, d: Delivery) -> Args {
        let mut slots = self.slots();
        let Some(entry) = slots.get_mut(&d.id) else { return Args::Skip };
        if entry.waiting {
            entry.waiting = false;
            self.settle(env);
        }
        if d.event.is_final() {
            slots.remove(&d.id);
        }
        Args::Deliver(d)
    }
}

/// On the request runtime (unit-test and fuzz builds never run the bindings).
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    #[cfg(not(any(test, fuzzing)))]
    bridge::spawn(task);
    #[cfg(any(test, fuzzing))]
    drop(task);
}

fn no_channel() -> Error {
    Error::new(Status::GenericFailure, "QwenClient: call setEventCallback() before start()")
}

/// A configured client: one per plugin instance. JS starts requests with `start()` and gets every
/// outcome through the one callback given to `setEventCallback()`.
#[napi]
pub struct QwenClient {
    pipeline: Arc<Pipeline>,
    tokens: Option<Arc<TokenManager>>,
    link: Arc<Link>,
    /// In this thread's `EXCHANGERS`: what the module's `exchange` function takes.
    handle: u32,
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
        let link = Arc::new(Link {
            events: OnceLock::new(),
            slots: Mutex::new(bridge::IdMap::default()),
            exchanges: Mutex::new(bridge::IdMap::default()),
            next_id: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        });
        let pipeline = Arc::new(Pipeline::new(s, auth));
        let handle = register_exchanger(Exchanger { pipeline: pipeline.clone(), link: link.clone() });
        Ok(QwenClient { pipeline, tokens, link, handle })
    }

    /// The callback for every event of every request of this client; set once. Events:
    /// `(id, 0, status, statusText, url, headers, body, done)` the head (`headers` flat `[k, v, ...]`,
    /// `body` a Buffer of what came with it or undefined, `done` when that was all), `(id, 1, body, done)`
    /// the next body bytes after `pull(id)`, `(id, 2, message)` a failure (message `[E_CODE] ...`).
    #[napi(
        ts_args_type = "callback: (id: number, kind: 0 | 1 | 2, a?: any, b?: any, c?: any, d?: any, e?: any, f?: any) => void"
    )]
    pub fn set_event_callback(&self, callback: Function<'_, (), UnknownReturnValue>) -> Result<()> {
        let link = Arc::downgrade(&self.link);
        let events: EventFn =
            callback.build_threadsafe_function::<Delivery>().callee_handled::<false>().weak::<true>().build_callback(
                move |ctx| {
                    Ok(match link.upgrade() {
                        Some(link) => link.arrive(ctx.env.raw(), ctx.value),
                        None => Args::Skip,
                    })
                },
            )?;
        self.link
            .events
            .set(Arc::new(events))
            .map_err(|_| Error::new(Status::GenericFailure, "QwenClient: the event callback is already set"))
    }

    /// Start one request (token, headers, pacing, retries all happen in Rust); returns its id at once.
    /// Exactly one event answers: the head or a failure. `headers` is flat: `[k, v, k, v, ...]`.
    #[napi]
    pub fn start(
        &self,
        env: Env,
        url: String,
        method: String,
        headers: Vec<String>,
        body: Option<Either<String, &[u8]>>,
    ) -> Result<u32> {
        let events = self.link.events.get().ok_or_else(no_channel)?.clone();
        let req = request(url, method, headers, body.map(body_bytes));
        let id = self.link.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let slot = bridge::Slot::new();
        self.link.slots().insert(id, Entry { slot: slot.clone(), waiting: true });
        self.link.expect(env.raw());
        let pipeline = self.pipeline.clone();
        spawn(async move {
            bridge::run(pipeline, req, slot, |event| {
                events.call(Delivery { id, event }, ThreadsafeFunctionCallMode::NonBlocking);
            })
            .await
        });
        Ok(id)
    }

    /// The next attempt's headers (`joined`) when nothing needs waiting for; null: call `prepareHeaders`.
    #[napi]
    pub fn ready_headers(&self, id: u32) -> Result<Option<String>> {
        let x = self.exchanging(id)?;
        let mut ex = x.lock()?;
        ex.ready().map(joined).transpose()
    }

    /// The next attempt's headers (`joined`), after a token refresh and this process's pacing turn if needed.
    #[napi]
    pub async fn prepare_headers(&self, id: u32) -> Result<String> {
        let x = self.exchanging(id)?;
        let mut ex = x.ex.lock().await;
        joined(ex.prepare(&x.cancel).await?)
    }

    /// What an answer means for exchange `id` from its status alone, or -3 when its `Retry-After` headers
    /// matter too: then ask `judge`. Saves reading headers (and a string each) on every answer that is not
    /// a 429 or 5xx.
    #[napi]
    pub fn judge_status(&self, id: u32, status: u32) -> Result<f64> {
        let status = status.min(999) as u16;
        if pipeline::Exchange::reads_retry_after(status) {
            return Ok(NEED_HEADERS);
        }
        self.judge_with(id, status, &reqwest::header::HeaderMap::new())
    }

    /// What an answer means for exchange `id`, from its status and the only headers that matter to that:
    /// `retry-after-ms` and `retry-after` (null when absent).
    #[napi]
    pub fn judge(
        &self,
        id: u32,
        status: u32,
        retry_after_ms: Option<String>,
        retry_after: Option<String>,
    ) -> Result<f64> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in [("retry-after-ms", retry_after_ms), ("retry-after", retry_after)] {
            if let Some(v) = value.and_then(|v| reqwest::header::HeaderValue::from_str(&v).ok()) {
                map.insert(name, v);
            }
        }
        self.judge_with(id, status.min(999) as u16, &map)
    }

    /// What a 405 or 429 means given the first bytes of its body (empty when it could not be read).
    #[napi]
    pub async fn judge_prefix(&self, id: u32, status: u32, prefix: Buffer) -> Result<f64> {
        let x = self.exchanging(id)?;
        let v = x.ex.lock().await.judge_prefix(status.min(999) as u16, &prefix).await;
        self.settle(id, v)
    }

    /// What a failure before the answer's head means (`detail`: the runtime's words, no URL).
    #[napi]
    pub fn network_error(&self, id: u32, detail: String) -> Result<f64> {
        let x = self.exchanging(id)?;
        let mut ex = x.lock()?;
        let err = error::Error::Network { endpoint: ex.endpoint.clone(), detail };
        verdict(ex.network_error(err))
    }

    /// Forget exchange `id`; a `prepareHeaders` still waiting ends with E_ABORTED (a refresh already under
    /// way still finishes, for whoever else needs it).
    #[napi]
    pub fn finish(&self, id: u32) {
        self.link.finish(id);
    }

    /// Ask for the next body bytes of request `id`: one event answers. False when the request is over.
    #[napi]
    pub fn pull(&self, env: Env, id: u32) -> bool {
        let mut slots = self.link.slots();
        let Some(entry) = slots.get_mut(&id) else { return false };
        if !entry.waiting {
            entry.waiting = true;
            self.link.expect(env.raw());
        }
        entry.slot.want_more();
        true
    }

    /// End request `id` at any stage (waits, send, body) and close its connection; no event follows.
    #[napi]
    pub fn abort(&self, env: Env, id: u32) {
        let entry = self.link.slots().remove(&id);
        if let Some(entry) = entry {
            if entry.waiting {
                self.link.settle(env.raw());
            }
            entry.slot.abort();
        }
    }

    /// This client for the module's `exchange` function.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
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

/// What `exchange` needs of a client, registered per JS thread under `QwenClient.handle`.
struct Exchanger {
    pipeline: Arc<Pipeline>,
    link: Arc<Link>,
}

thread_local! {
    /// This JS thread's clients by handle (the slot's index); a finalized client's slot is free again.
    static EXCHANGERS: std::cell::RefCell<Vec<Option<Exchanger>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn register_exchanger(e: Exchanger) -> u32 {
    EXCHANGERS.with_borrow_mut(|all| match all.iter().position(Option::is_none) {
        Some(free) => {
            all[free] = Some(e);
            free as u32
        }
        None => {
            all.push(Some(e));
            (all.len() - 1) as u32
        }
    })
}

impl Drop for QwenClient {
    fn drop(&mut self) {
        // Finalizers run on the client's JS thread; at thread exit the registry may be gone already.
        let _ = EXCHANGERS.try_with(|all| {
            if let Some(slot) = all.try_borrow_mut().ok().as_deref_mut().and_then(|a| a.get_mut(self.handle as usize)) {
                *slot = None;
            }
        });
    }
}

impl Exchanger {
    /// Begin a request whose bytes the caller moves with the runtime's own `fetch`. Throws at once what needs
    /// no network (untrusted host, a key that cannot fit, a bad method). Answers one string,
    /// `id NUL headers NUL body`: the exchange's id; the first attempt's headers (`joined`) when nothing needs
    /// waiting for, else empty (then `readyHeaders` / `prepareHeaders`); the body every attempt sends when it
    /// is not the caller's (aligned with the CLI, or a model id mapped for the key's plan), else empty. Then,
    /// per attempt, `judgeStatus` / `judge` (`judgePrefix` for 405/429) or `networkError` for what came back:
    /// -1 deliver (the exchange is then over), -2 read the body's first 64 KiB and ask `judgePrefix`,
    /// n >= 0 drop it and retry after n ms; a failure throws (`[E_CODE] message`). An answer with a status
    /// below `DELIVERED_BELOW` needs no question: its exchange is then handed back in `delivered` of a later
    /// call (or to `finish`) to be forgotten. `finish` forgets one early (abort, a throw in between).
    /// Plain ids and strings, and no crossing per answer: under Bun a native object with a finalizer per
    /// request cost ~40 µs, more than the whole decision; a plain object answer ~3 µs more than one string,
    /// and each crossing ~3 µs.
    fn exchange(
        &self,
        url: String,
        method: String,
        headers: Vec<String>,
        body: Option<bytes::Bytes>,
        delivered: Option<Vec<u32>>,
    ) -> Result<String> {
        for id in delivered.unwrap_or_default() {
            self.link.finish(id);
        }
        // The headers come back joined by line breaks: a name or value holding one (fetch refuses those too)
        // would split wrongly.
        if let Some(bad) = headers.iter().position(|h| pipeline::headers::breaks_line(h)) {
            let what = if bad % 2 == 0 { "header name" } else { "header value" };
            return Err(error::Error::invalid_arg(what, "it contains a line break or NUL; remove it").into());
        }
        let req = request(url, method, headers, body);
        let original = req.body.clone();
        let mut ex = pipeline::Exchange::new(&self.pipeline, req)?;
        let id = self.link.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut out = String::with_capacity(512 + ex.body.as_ref().map_or(0, |b| b.len()));
        pipeline::push_decimal(&mut out, u64::from(id));
        out.push('\0');
        let mut refused = None;
        ex.ready_each(|k, v| push_header(&mut out, k, v, &mut refused));
        if let Some(err) = refused {
            return Err(err);
        }
        out.push('\0');
        // The same buffer when nothing was changed: compared by address, not by content (a 100 KB body
        // nobody rewrote would be compared byte by byte with itself).
        let same = |b: &bytes::Bytes| original.as_ref().is_some_and(|o| o.as_ptr() == b.as_ptr() && o.len() == b.len());
        let rewritten = ex.body.as_ref().filter(|b| !same(b));
        // The rewrite only writes JSON text over valid UTF-8 input, so the check passes; lossy is a fallback.
        if let Some(b) = rewritten {
            match std::str::from_utf8(b) {
                Ok(text) => out.push_str(text),
                Err(_) => out.push_str(&String::from_utf8_lossy(b)),
            }
        }
        let x = Arc::new(Exchanging { ex: tokio::sync::Mutex::new(ex), cancel: Default::default() });
        self.link.exchanges().insert(id, x);
        Ok(out)
    }
}

/// The module's `exchange(handle, url, method, headers, body?, delivered?)`: [`Exchanger::exchange`] (its doc
/// says what goes in and comes out) for the client whose `QwenClient.handle` is given. Bound by hand, once per
/// request under Bun: the glue napi-rs generates for a method (receiver unwrap and type-tag check, borrow
/// bookkeeping under a process-wide lock, an error built and dropped to read an `Either`) was ~30% of this
/// call's native time.
unsafe extern "C" fn exchange_binding(
    env: napi::sys::napi_env,
    info: napi::sys::napi_callback_info,
) -> napi::sys::napi_value {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<String> {
        let mut argv = [std::ptr::null_mut(); 6];
        let mut argc = argv.len();
        // SAFETY: on the JS thread with a live env during this call; napi fills missing arguments with undefined.
        unsafe {
            check_status!(napi::sys::napi_get_cb_info(
                env,
                info,
                &mut argc,
                argv.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ))?;
            let handle = u32::from_napi_value(env, argv[0])?;
            let url = read_string(env, argv[1], "url", 256)?;
            let method = read_string(env, argv[2], "method", 16)?;
            let headers = read_strings(env, argv[3])?;
            let body = read_body(env, argv[4])?;
            let delivered = Option::<Vec<u32>>::from_napi_value(env, argv[5])?;
            EXCHANGERS.with_borrow(|all| match all.get(handle as usize) {
                Some(Some(e)) => e.exchange(url, method, headers, body, delivered),
                _ => Err(Error::new(Status::InvalidArg, format!("exchange: no client {handle} on this thread"))),
            })
        }
    }));
    let failure = match outcome {
        // SAFETY: as above.
        Ok(Ok(answer)) => match unsafe { String::to_napi_value(env, answer) } {
            Ok(value) => return value,
            Err(e) => e,
        },
        Ok(Err(e)) => e,
        Err(_) => Error::new(Status::GenericFailure, "exchange: internal error (a panic); please report it"),
    };
    // SAFETY: as above.
    unsafe { JsError::from(failure).throw_into(env) };
    std::ptr::null_mut()
}

/// A JS string as UTF-8. With `guess` > 0, one napi call when it fits that many bytes: napi-rs's conversion
/// always asks for the length first and then copies, two calls into the runtime per string (seven strings
/// per request). napi writes whole characters only, so a result 4 bytes short of the buffer was not cut.
///
/// # Safety
/// On the JS thread with a live `env`, during the call that received `value`.
unsafe fn read_string(
    env: napi::sys::napi_env,
    value: napi::sys::napi_value,
    what: &str,
    guess: usize,
) -> Result<String> {
    let not_a_string = |status| Error::new(Status::from(status), format!("exchange: {what} must be a string"));
    let mut buf: Vec<u8> = Vec::with_capacity(guess);
    let mut len = 0usize;
    if guess > 0 {
        // SAFETY: the buffer has `guess` bytes of capacity; napi writes at most that many (with a NUL).
        let status = unsafe {
            napi::sys::napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), buf.capacity(), &mut len)
        };
        if status != napi::sys::Status::napi_ok {
            return Err(not_a_string(status));
        }
        if len + 4 < buf.capacity() {
            // SAFETY: napi wrote `len` bytes of valid UTF-8.
            unsafe { buf.set_len(len) };
            return Ok(unsafe { String::from_utf8_unchecked(buf) });
        }
    }
    // SAFETY: a null buffer asks for the length only.
    let status = unsafe { napi::sys::napi_get_value_string_utf8(env, value, std::ptr::null_mut(), 0, &mut len) };
    if status != napi::sys::Status::napi_ok {
        return Err(not_a_string(status));
    }
    // SAFETY: as this function's.
    unsafe { read_string_of_len(env, value, len, buf) }
}

/// The body argument: a string (read without asking its type first, one call into the runtime fewer on every
/// request), bytes, or none.
///
/// # Safety
/// As [`read_string`].
unsafe fn read_body(env: napi::sys::napi_env, value: napi::sys::napi_value) -> Result<Option<bytes::Bytes>> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length only; anything but a string answers `napi_string_expected`.
    let status = unsafe { napi::sys::napi_get_value_string_utf8(env, value, std::ptr::null_mut(), 0, &mut len) };
    if status == napi::sys::Status::napi_ok {
        // SAFETY: as this function's.
        return Ok(Some(bytes::Bytes::from(unsafe { read_string_of_len(env, value, len, Vec::new()) }?)));
    }
    Ok(match napi::type_of!(env, value)? {
        ValueType::Undefined | ValueType::Null => None,
        // SAFETY: as this function's.
        _ => Some(bytes::Bytes::copy_from_slice(unsafe { &Uint8Array::from_napi_value(env, value)? })),
    })
}

/// A string whose UTF-8 length is known, read into `buf`.
///
/// # Safety
/// As [`read_string`]; `len` is what napi answered for `value`.
unsafe fn read_string_of_len(
    env: napi::sys::napi_env,
    value: napi::sys::napi_value,
    mut len: usize,
    mut buf: Vec<u8>,
) -> Result<String> {
    buf.clear();
    buf.reserve_exact(len + 1);
    // SAFETY: room for `len` bytes and the NUL; napi wrote `len` bytes of valid UTF-8.
    unsafe {
        check_status!(napi::sys::napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), len + 1, &mut len))?;
        buf.set_len(len);
        Ok(String::from_utf8_unchecked(buf))
    }
}

/// A JS array of strings (the flat header list), each read as [`read_string`] does.
///
/// # Safety
/// As [`read_string`].
unsafe fn read_strings(env: napi::sys::napi_env, value: napi::sys::napi_value) -> Result<Vec<String>> {
    let mut n = 0u32;
    // SAFETY: as the function's contract says.
    let status = unsafe { napi::sys::napi_get_array_length(env, value, &mut n) };
    if status != napi::sys::Status::napi_ok {
        return Err(Error::new(Status::from(status), "exchange: headers must be an array of strings"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut item = std::ptr::null_mut();
        // SAFETY: as above; `i` is below the array's length.
        unsafe {
            check_status!(napi::sys::napi_get_element(env, value, i, &mut item))?;
            out.push(read_string(env, item, "every header name and value", 128)?);
        }
    }
    Ok(out)
}

/// Adds `exchange` (see [`exchange_binding`]) to the module's exports.
#[napi(module_exports)]
pub fn export_exchange(exports: Object<'_>, env: Env) -> Result<()> {
    let mut f = std::ptr::null_mut();
    // SAFETY: module initialisation on the JS thread; the name is a static C string.
    unsafe {
        check_status!(napi::sys::napi_create_function(
            env.raw(),
            c"exchange".as_ptr(),
            "exchange".len() as isize,
            Some(exchange_binding),
            std::ptr::null_mut(),
            &mut f,
        ))?;
        check_status!(napi::sys::napi_set_named_property(env.raw(), exports.raw(), c"exchange".as_ptr(), f))
    }
}

/// `fetch(url, init)` as the binding receives it: headers flat (`[k, v, k, v, ...]`).
fn request(url: String, method: String, headers: Vec<String>, body: Option<bytes::Bytes>) -> pipeline::Request {
    let mut it = headers.into_iter();
    let mut pairs = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    pipeline::Request { url, method, headers: pairs, body }
}

fn body_bytes(body: Either<String, &[u8]>) -> bytes::Bytes {
    match body {
        Either::A(s) => bytes::Bytes::from(s),
        Either::B(b) => bytes::Bytes::copy_from_slice(b),
    }
}

/// Statuses below this are delivered without asking `judgeStatus` (see `exchange`).
#[napi]
pub const DELIVERED_BELOW: u32 = pipeline::DELIVERED_BELOW as u32;

/// Verdicts as numbers: `DELIVER`, `READ_PREFIX`, or a retry after that many ms (>= 0). A failure throws.
const DELIVER: f64 = -1.0;
const READ_PREFIX: f64 = -2.0;
/// `judgeStatus` only: call `judge` with the answer's `Retry-After` headers.
const NEED_HEADERS: f64 = -3.0;

fn verdict(v: pipeline::Verdict) -> Result<f64> {
    match v {
        pipeline::Verdict::Deliver => Ok(DELIVER),
        pipeline::Verdict::ReadPrefix => Ok(READ_PREFIX),
        pipeline::Verdict::Retry(wait) => Ok(wait.as_millis() as f64),
        pipeline::Verdict::Fail(e) => Err(e.into()),
    }
}

/// One request begun with `exchange()`.
struct Exchanging {
    ex: tokio::sync::Mutex<pipeline::Exchange>,
    cancel: tokio_util::sync::CancellationToken,
}

impl Exchanging {
    fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, pipeline::Exchange>> {
        self.ex
            .try_lock()
            .map_err(|_| Error::new(Status::GenericFailure, "QwenClient: this exchange is still preparing"))
    }
}

impl QwenClient {
    fn judge_with(&self, id: u32, status: u16, headers: &reqwest::header::HeaderMap) -> Result<f64> {
        let x = self.exchanging(id)?;
        let v = x.lock()?.judge(status, headers);
        self.settle(id, v)
    }

    /// A verdict as JS takes it; a delivered exchange is forgotten here, so JS need not call `finish`.
    fn settle(&self, id: u32, v: pipeline::Verdict) -> Result<f64> {
        if matches!(v, pipeline::Verdict::Deliver) {
            self.finish(id);
        }
        verdict(v)
    }

    fn exchanging(&self, id: u32) -> Result<Arc<Exchanging>> {
        self.link
            .exchanges()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::new(Status::GenericFailure, format!("QwenClient: no exchange {id} (finished?)")))
    }
}

/// Header pairs as one string, `name\nvalue\nname\nvalue`: one JS string per request instead of one per name
/// and value (each costs a crossing under Bun). `exchange` refuses line breaks in what it is given.
fn joined(pairs: Vec<(String, String)>) -> Result<String> {
    let mut out = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    let mut refused = None;
    for (k, v) in &pairs {
        push_header(&mut out, k, v, &mut refused);
    }
    refused.map_or(Ok(out), Err)
}

/// One header onto a `joined` string that ends with its last header or with a NUL (nothing after it yet).
fn push_header(out: &mut String, k: &str, v: &str, refused: &mut Option<Error>) {
    // Only a token read from the credentials file could still hold one here.
    if pipeline::headers::breaks_line(v) {
        let detail = format!("the value of {k} holds a line break or NUL; log in again if it is the token");
        refused.get_or_insert_with(|| error::Error::invalid_arg("outgoing header", detail).into());
        return;
    }
    if !(out.is_empty() || out.ends_with('\0')) {
        out.push('\n');
    }
    out.push_str(k);
    out.push('\n');
    out.push_str(v);
}
