//! Valid tokens on demand: cached credentials, reload when the file's mtime changes (checked at most every
//! 5 s), refresh before expiry, one refresh in flight per process and — through the lock and a re-read —
//! one per machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::credentials::{now_ms, CredentialStore, Credentials, FileStamp, KeyOrder};
use crate::debug_log;
use crate::error::{Error, Result};
use crate::lock;
use crate::log;
use crate::oauth::{self, RefreshOutcome, TokenResponse};

/// The CLI's `CACHE_CHECK_INTERVAL_MS`: stat the file at most this often.
pub const STAT_INTERVAL: Duration = Duration::from_secs(5);
/// A token we refreshed ourselves less than this long ago is not refreshed again (the seed's token cache).
pub const RECENT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when a refresh answer has no `expires_in` (the CLI would write an invalid file).
const DEFAULT_EXPIRES_IN_SECS: i64 = 3600;

pub struct TokenManager {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
}

/// Everything that belongs to one `qwen_home` in this process, whatever the other settings are.
struct Shared {
    store: CredentialStore,
    state: Mutex<State>,
    /// One refresh in flight per process.
    refresh_gate: tokio::sync::Mutex<()>,
    generation: AtomicU32,
    stat_interval: Duration,
}

#[derive(Default)]
struct State {
    creds: Option<Credentials>,
    /// Stamp of the file version `creds` came from (or that we wrote).
    stamp: Option<FileStamp>,
    last_check: Option<Instant>,
    /// Access token obtained by our own refresh, and when.
    last_refresh: Option<(String, Instant)>,
    /// Refresh token the server refused; not sent again until the file holds another one.
    rejected_refresh_token: Option<String>,
    /// `creds` came from our own refresh but could not be saved (disk full, read-only): the file still holds
    /// a refresh token the server may have retired, so saving is retried on later calls until it works or
    /// the file changes under us.
    unsaved: bool,
}

static REGISTRY: Mutex<Option<HashMap<PathBuf, Arc<TokenManager>>>> = Mutex::new(None);

/// The manager for `settings.qwen_home` (one per directory per process).
pub fn for_settings(settings: &Arc<Settings>) -> Arc<TokenManager> {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let map = reg.get_or_insert_with(HashMap::new);
    if let Some(existing) = map.get(settings.qwen_home()) {
        if Arc::ptr_eq(&existing.settings, settings) || *existing.settings == **settings {
            return existing.clone();
        }
        // Same directory, other options (e.g. another OAuth server): share the cache, the refresh gate
        // and the generation, but talk to the server these settings name.
        let tm = Arc::new(TokenManager { settings: settings.clone(), shared: existing.shared.clone() });
        map.insert(settings.qwen_home().to_path_buf(), tm.clone());
        return tm;
    }
    let shared = Arc::new(Shared {
        store: CredentialStore::new(settings.qwen_home().to_path_buf()),
        state: Mutex::new(State::default()),
        refresh_gate: tokio::sync::Mutex::new(()),
        generation: AtomicU32::new(0),
        stat_interval: stat_interval_from_env(),
    });
    let tm = Arc::new(TokenManager { settings: settings.clone(), shared });
    map.insert(settings.qwen_home().to_path_buf(), tm.clone());
    tm
}

/// The token endpoint a refresh token would be sent to, if it is a host we trust with tokens.
fn refresh_endpoint(settings: &Settings) -> Result<String> {
    let endpoint = format!("{}{}", settings.oauth_base_url, oauth::TOKEN_PATH);
    crate::pipeline::trust::check(&endpoint, settings)?;
    Ok(endpoint)
}

/// Tests may shorten the 5 s throttle with `QWEN_OAUTH_STAT_INTERVAL_MS`; it is not a user option.
fn stat_interval_from_env() -> Duration {
    std::env::var("QWEN_OAUTH_STAT_INTERVAL_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(STAT_INTERVAL)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The CLI's `checkAndReloadIfNeeded`: stat (throttled unless `force`), reload when the file changed,
    /// forget the credentials when it is gone. Read errors are returned every time until fixed.
    fn check_file(&self, force: bool) -> Result<Option<Credentials>> {
        let mut st = self.state();
        if !force && self.throttled(&st) {
            return Ok(st.creds.clone());
        }
        let stamp = self.store.stamp()?;
        if stamp.is_some() && stamp == st.stamp && st.creds.is_some() {
            st.last_check = Some(Instant::now());
            return Ok(st.creds.clone());
        }
        let loaded = match stamp {
            None => None,
            Some(_) => self.store.load_stamped()?,
        };
        st.last_check = Some(Instant::now());
        match loaded {
            None => {
                st.stamp = None;
                st.unsaved = false;
                if st.creds.take().is_some() {
                    debug_log!("{} is gone; credentials forgotten", self.store.path().display());
                    self.bump();
                }
                Ok(None)
            }
            Some((creds, stamp)) => {
                log::remember_secret(&creds.access_token);
                log::remember_secret(&creds.refresh_token);
                st.stamp = Some(stamp);
                // Someone wrote the file after our failed save: theirs is newer than what we hold.
                st.unsaved = false;
                if st.creds.as_ref() != Some(&creds) {
                    debug_log!("reloaded {} (expires at {})", self.store.path().display(), creds.expiry_date);
                    st.creds = Some(creds.clone());
                    self.bump();
                }
                Ok(Some(creds))
            }
        }
    }

    /// The file was looked at less than `stat_interval` ago: what is cached stands without a stat.
    fn throttled(&self, st: &State) -> bool {
        st.last_check.is_some_and(|t| t.elapsed() < self.stat_interval)
    }

    /// Usable without a refresh: valid with the 30 s buffer, or refreshed by us within 5 minutes and
    /// not yet past its expiry (so a server handing out very short lifetimes is not asked every time).
    fn usable(&self, c: &Credentials, now: i64) -> bool {
        if c.is_valid_at(now) {
            return true;
        }
        let st = self.state();
        matches!(&st.last_refresh, Some((tok, at)) if *tok == c.access_token && at.elapsed() < RECENT_REFRESH)
            && now < c.expiry_date
    }

    fn cached(&self) -> Option<Credentials> {
        self.state().creds.clone()
    }
}

impl TokenManager {
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Credentials whose access token is valid now, refreshing when needed. `force` always refreshes
    /// (under the lock), unless another process already refreshed since `refused_token` was handed out.
    /// The cached credentials when they can be used as they are (no refresh, no pending save, no file to
    /// re-read): what almost every request takes, without a task of its own. `None`: ask `valid_credentials`.
    pub fn ready_credentials(&self) -> Option<Credentials> {
        let sh = &self.shared;
        if sh.state().unsaved {
            return None;
        }
        let cached = sh.check_file(false).ok()??;
        sh.usable(&cached, now_ms()).then_some(cached)
    }

    /// `ready_credentials`' access token alone: on the request path a clone of the whole credentials (five
    /// strings) cost more than the look itself.
    pub fn ready_access_token(&self) -> Option<String> {
        let sh = &self.shared;
        {
            let st = sh.state();
            if st.unsaved {
                return None;
            }
            // As `check_file` while its throttle stands: the cached credentials, without a clone of them all.
            if sh.throttled(&st) {
                let c = st.creds.as_ref()?;
                if c.is_valid_at(now_ms()) {
                    return Some(c.access_token.clone());
                }
            }
        }
        self.ready_credentials().map(|c| c.access_token)
    }

    pub async fn valid_credentials(&self, force: bool, refused_token: Option<&str>) -> Result<Credentials> {
        let sh = &self.shared;
        if sh.state().unsaved {
            self.retry_save().await;
        }
        let mut cached = sh.check_file(false)?;
        if cached.is_none() {
            // Maybe a login landed since the last (throttled) look.
            cached = sh.check_file(true)?;
        }
        let Some(cached) = cached else {
            return Err(Error::CredsMissing { path: sh.store.path() });
        };
        if !force && sh.usable(&cached, now_ms()) {
            return Ok(cached);
        }
        // A forced refresh is satisfied by any valid token other than the refused (or cached) one.
        let stale = refused_token.unwrap_or(&cached.access_token).to_string();
        let good_enough = |c: &Credentials| -> bool {
            if force {
                c.is_valid_at(now_ms()) && c.access_token != stale
            } else {
                sh.usable(c, now_ms())
            }
        };

        let _gate = sh.refresh_gate.lock().await;
        // Another task of this process may have refreshed while we waited for the gate.
        if let Some(c) = sh.cached() {
            if good_enough(&c) {
                return Ok(c);
            }
        }

        // The refresh token goes only where an access token may go: a mistyped or planted
        // QWEN_OAUTH_BASE_URL must not receive it.
        refresh_endpoint(&self.settings)?;
        let lock_path = self.settings.lock_path();
        let _lock = lock::acquire(&lock_path).await?;
        // Another process may have refreshed (or logged in) while we waited: re-read without throttle.
        let Some(current) = sh.check_file(true)? else {
            return Err(Error::CredsMissing { path: sh.store.path() });
        };
        if good_enough(&current) {
            debug_log!("token manager: adopting credentials refreshed by another process");
            return Ok(current);
        }
        if sh.state().rejected_refresh_token.as_deref() == Some(current.refresh_token.as_str()) {
            debug_log!("token manager: refresh token already refused; not retrying");
            return Err(Error::RefreshRejected { path: sh.store.path() });
        }

        debug_log!("token manager: refreshing (forced: {force})");
        match oauth::refresh(&self.settings, &current.refresh_token).await? {
            RefreshOutcome::Refreshed(tokens) => self.adopt_refresh(&current, &tokens).await,
            RefreshOutcome::Rejected => {
                // The CLI deletes the file here. We keep it, but first look whether another process
                // rotated the token in the meantime (a login, or a CLI refresh that ignored our lock).
                if let Some(c) = sh.check_file(true)? {
                    if c.refresh_token != current.refresh_token && c.is_valid_at(now_ms()) {
                        debug_log!("token manager: refresh refused, but the file holds newer credentials");
                        return Ok(c);
                    }
                }
                sh.state().rejected_refresh_token = Some(current.refresh_token.clone());
                Err(Error::RefreshRejected { path: sh.store.path() })
            }
        }
    }

    /// §7 with our two fixes: the old refresh token and the old `resource_url` are kept when the answer
    /// omits them. Saved in the CLI's refresh key order while we still hold the lock.
    async fn adopt_refresh(&self, old: &Credentials, t: &TokenResponse) -> Result<Credentials> {
        let sh = &self.shared;
        let expires_in = t.expires_in.map(|s| s as i64).unwrap_or_else(|| {
            debug_log!("token manager: refresh answer without expires_in; assuming {DEFAULT_EXPIRES_IN_SECS} s");
            DEFAULT_EXPIRES_IN_SECS
        });
        let creds = Credentials {
            access_token: t.access_token.clone(),
            token_type: t.token_type.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "Bearer".into()),
            refresh_token: t
                .refresh_token
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| old.refresh_token.clone()),
            resource_url: t.resource_url.clone().filter(|s| !s.is_empty()).or_else(|| old.resource_url.clone()),
            expiry_date: now_ms().saturating_add(expires_in.saturating_mul(1000)),
        };
        log::remember_secret(&creds.access_token);
        log::remember_secret(&creds.refresh_token);

        // Here, not on the blocking pool: the fsync already runs in the background, and what is left (a temp
        // file written and renamed) is a few system calls like taking the lock file above. The hop to a pool
        // thread and back cost more than the save itself (~70 µs of ~700 per refresh under Bun). A slow disk
        // holds this worker that long, once per refresh, as creating the lock file already does.
        let saved = sh.store.save_stamped(&creds, KeyOrder::Refresh);

        let mut st = sh.state();
        // Even when the save failed, the server may already have retired the old refresh token: keep the
        // new pair in memory so this process goes on working, and report the failure once.
        st.creds = Some(creds.clone());
        st.last_refresh = Some((creds.access_token.clone(), Instant::now()));
        st.rejected_refresh_token = None;
        st.last_check = Some(Instant::now());
        st.unsaved = saved.is_err();
        if let Ok(stamp) = &saved {
            st.stamp = Some(*stamp);
        }
        drop(st);
        sh.bump();
        match saved {
            Ok(_) => {
                debug_log!("token manager: refreshed and saved (expires at {})", creds.expiry_date);
                Ok(creds)
            }
            Err(e) => {
                debug_log!("token manager: refreshed but not saved: {}", e.code());
                Err(e)
            }
        }
    }

    /// Save credentials whose save failed after our refresh, under the lock and only over the very file
    /// version they replace. Best effort: failures are logged and retried on the next call.
    async fn retry_save(&self) {
        let sh = &self.shared;
        let _gate = sh.refresh_gate.lock().await;
        let (creds, stamp) = {
            let st = sh.state();
            match (&st.creds, st.unsaved) {
                (Some(c), true) => (c.clone(), st.stamp),
                _ => return,
            }
        };
        // One quick try (a stale lock is still broken): a lock held by a live process must not stall the
        // request this runs before; the next call tries again.
        let quick = lock::LockTiming {
            attempts: 2,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..lock::LockTiming::CLI
        };
        let _lock = match lock::acquire_with(&self.settings.lock_path(), quick).await {
            Ok(l) => l,
            Err(e) => {
                debug_log!("token manager: unsaved credentials, lock unavailable ({})", e.code());
                return;
            }
        };
        if sh.store.stamp().ok() != Some(stamp) {
            // The file changed since (a login, another process): the next check adopts it.
            return;
        }
        // Inline, as in `adopt_refresh`.
        let saved = sh.store.save_stamped(&creds, KeyOrder::Refresh);
        let mut st = sh.state();
        match saved {
            // Only if nothing replaced our credentials in memory meanwhile.
            Ok(new_stamp) if st.creds.as_ref() == Some(&creds) => {
                st.stamp = Some(new_stamp);
                st.unsaved = false;
                debug_log!("token manager: saved the credentials of the earlier refresh");
            }
            Ok(_) => {}
            Err(e) => debug_log!("token manager: still cannot save: {}", e.code()),
        }
    }

    /// Cached or freshly loaded credentials without refreshing (Ok(None) when there is no file).
    pub fn current(&self) -> Result<Option<Credentials>> {
        self.shared.check_file(false)
    }

    /// After a login: adopt these credentials (already saved by the caller) as the cache.
    pub fn install(&self, creds: Credentials) {
        log::remember_secret(&creds.access_token);
        log::remember_secret(&creds.refresh_token);
        let stamp = self.shared.store.stamp().ok().flatten();
        let mut st = self.shared.state();
        st.creds = Some(creds);
        st.stamp = stamp;
        st.last_check = Some(Instant::now());
        st.rejected_refresh_token = None;
        st.unsaved = false;
        drop(st);
        self.shared.bump();
    }

    /// Logout: delete `oauth_creds.json` under `oauth_creds.lock` (so a refresh running elsewhere cannot
    /// save over the logout) and forget the cache. Ok(true) when there was a file.
    pub async fn remove_credentials(&self) -> Result<bool> {
        let path = self.shared.store.path();
        if !self.shared.store.dir().is_dir() {
            return Ok(false);
        }
        let _guard = lock::acquire(&self.settings.lock_path()).await?;
        let existed = self.shared.store.stamp()?.is_some();
        self.shared.store.remove()?;
        let mut st = self.shared.state();
        let had = st.creds.take().is_some();
        st.stamp = None;
        st.unsaved = false;
        st.last_check = Some(Instant::now());
        drop(st);
        if had {
            self.shared.bump();
        }
        debug_log!("logout: {} {}", path.display(), if existed { "removed" } else { "was not there" });
        Ok(existed)
    }

    /// Bumped whenever the credentials in use change (refresh, reload, login), so callers can mirror them.
    pub fn generation(&self) -> u32 {
        self.shared.generation.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawOptions;
    use std::fs;

    fn settings(home: &std::path::Path) -> Arc<Settings> {
        // Port 9 (discard) on loopback: any refresh attempt fails with E_NETWORK, so a test that
        // succeeds proves no HTTP was needed.
        Arc::new(
            Settings::resolve(&RawOptions {
                qwen_home: Some(home.display().to_string()),
                oauth_base_url: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            })
            .unwrap(),
        )
    }

    fn home(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qwen-tm-test-{name}-{}", lock::uuid_v4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn creds(tag: &str, expiry_date: i64) -> Credentials {
        Credentials {
            access_token: format!("at-{tag}-0123456789"),
            refresh_token: format!("rt-{tag}-0123456789"),
            token_type: "Bearer".into(),
            resource_url: Some("portal.qwen.ai".into()),
            expiry_date,
        }
    }

    #[tokio::test]
    async fn no_file_is_creds_missing() {
        let h = home("missing");
        let tm = for_settings(&settings(&h));
        assert!(tm.current().unwrap().is_none());
        let e = tm.valid_credentials(false, None).await.unwrap_err();
        assert_eq!(e.code(), "E_CREDS_MISSING");
        assert!(!h.join("oauth_creds.lock").exists());
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn valid_file_is_returned_without_refresh() {
        let h = home("valid");
        let c = creds("a", now_ms() + 3_600_000);
        CredentialStore::new(h.clone()).save(&c, KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), c);
        assert!(tm.generation() >= 1);
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn expired_cache_adopts_token_another_process_wrote() {
        let h = home("adopt");
        let store = CredentialStore::new(h.clone());
        store.save(&creds("old", now_ms() - 1000), KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        assert!(!tm.current().unwrap().unwrap().is_valid_at(now_ms()));
        // "Another process" refreshes; our throttle has not expired, but the refresh path re-reads under
        // the lock and finds it, so no HTTP happens (port 9 would fail).
        let fresh = creds("new", now_ms() + 3_600_000);
        store.save(&fresh, KeyOrder::Refresh).unwrap();
        let gen = tm.generation();
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), fresh);
        assert!(tm.generation() > gen);
        assert!(!h.join("oauth_creds.lock").exists(), "lock released");
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn forced_refresh_adopts_a_token_other_than_the_refused_one() {
        let h = home("force");
        let store = CredentialStore::new(h.clone());
        let first = creds("first", now_ms() + 3_600_000);
        store.save(&first, KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), first);
        let second = creds("second", now_ms() + 3_600_000);
        store.save(&second, KeyOrder::Refresh).unwrap();
        let got = tm.valid_credentials(true, Some(&first.access_token)).await.unwrap();
        assert_eq!(got, second);
        // Forcing against the token now in the file must really refresh: port 9 → network error.
        let e = tm.valid_credentials(true, Some(&second.access_token)).await.unwrap_err();
        assert_eq!(e.code(), "E_NETWORK");
        // The file is untouched by the failed attempt.
        assert_eq!(store.load().unwrap().unwrap().0, second);
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn invalid_file_is_an_error_each_time_and_untouched() {
        let h = home("invalid");
        fs::write(h.join("oauth_creds.json"), "{\"access_token\": \"x").unwrap();
        let tm = for_settings(&settings(&h));
        for _ in 0..2 {
            assert_eq!(tm.current().unwrap_err().code(), "E_CREDS_INVALID");
            assert_eq!(tm.valid_credentials(false, None).await.unwrap_err().code(), "E_CREDS_INVALID");
        }
        assert_eq!(fs::read_to_string(h.join("oauth_creds.json")).unwrap(), "{\"access_token\": \"x");
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn install_sets_cache_and_bumps_generation() {
        let h = home("install");
        let c = creds("login", now_ms() + 3_600_000);
        CredentialStore::new(h.clone()).save(&c, KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        let g = tm.generation();
        tm.install(c.clone());
        assert_eq!(tm.generation(), g + 1);
        assert_eq!(tm.current().unwrap(), Some(c));
        fs::remove_dir_all(h).unwrap();
    }

    /// State as `adopt_refresh` leaves it when the save failed: new credentials in memory only.
    fn fake_unsaved_refresh(tm: &TokenManager, creds: &Credentials) {
        let stamp = tm.shared.store.stamp().unwrap();
        let mut st = tm.shared.state();
        st.creds = Some(creds.clone());
        st.stamp = stamp;
        st.last_check = Some(Instant::now());
        st.last_refresh = Some((creds.access_token.clone(), Instant::now()));
        st.unsaved = true;
    }

    #[tokio::test]
    async fn credentials_whose_save_failed_are_saved_on_the_next_call() {
        let h = home("unsaved");
        let store = CredentialStore::new(h.clone());
        store.save(&creds("old", now_ms() - 1000), KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        tm.current().unwrap();
        let fresh = creds("fresh", now_ms() + 3_600_000);
        fake_unsaved_refresh(&tm, &fresh);
        // No HTTP (port 9 would fail): the in-memory credentials are served and now saved.
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), fresh);
        assert_eq!(store.load().unwrap().unwrap().0, fresh);
        assert!(!tm.shared.state().unsaved);
        assert!(!h.join("oauth_creds.lock").exists());
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn retrying_a_save_does_not_wait_for_a_live_lock() {
        let h = home("unsaved-locked");
        let store = CredentialStore::new(h.clone());
        let old = creds("old", now_ms() - 1000);
        store.save(&old, KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        tm.current().unwrap();
        let fresh = creds("fresh", now_ms() + 3_600_000);
        fake_unsaved_refresh(&tm, &fresh);
        fs::write(h.join("oauth_creds.lock"), "held-by-a-live-process").unwrap();
        // Served from memory without waiting out the lock (waiting would take the CLI's ~29 s and end in
        // a lock timeout inside the retry); saved once the lock is free.
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), fresh);
        assert_eq!(store.load().unwrap().unwrap().0, old);
        assert!(tm.shared.state().unsaved);
        fs::remove_file(h.join("oauth_creds.lock")).unwrap();
        assert_eq!(tm.valid_credentials(false, None).await.unwrap(), fresh);
        assert_eq!(store.load().unwrap().unwrap().0, fresh);
        fs::remove_dir_all(h).unwrap();
    }

    #[tokio::test]
    async fn unsaved_credentials_never_overwrite_a_file_changed_meanwhile() {
        let h = home("unsaved-changed");
        let store = CredentialStore::new(h.clone());
        store.save(&creds("old", now_ms() - 1000), KeyOrder::DeviceFlow).unwrap();
        let tm = for_settings(&settings(&h));
        tm.current().unwrap();
        fake_unsaved_refresh(&tm, &creds("mine", now_ms() + 3_600_000));
        // A login elsewhere wrote newer credentials: they win, in the file and in memory.
        let login = creds("login", now_ms() + 3_600_000);
        store.save(&login, KeyOrder::DeviceFlow).unwrap();
        assert_eq!(tm.valid_credentials(true, Some("at-mine-0123456789")).await.unwrap(), login);
        assert_eq!(store.load().unwrap().unwrap().0, login);
        assert!(!tm.shared.state().unsaved);
        fs::remove_dir_all(h).unwrap();
    }

    #[test]
    fn refresh_tokens_go_only_to_trusted_oauth_hosts() {
        let with_base = |base: &str| {
            let mut s = (*settings(std::path::Path::new("/nonexistent"))).clone();
            s.oauth_base_url = base.into();
            s
        };
        assert_eq!(
            refresh_endpoint(&with_base("https://chat.qwen.ai")).unwrap(),
            "https://chat.qwen.ai/api/v1/oauth2/token"
        );
        assert!(refresh_endpoint(&with_base("http://127.0.0.1:9")).is_ok());
        for bad in [
            "https://evil.example.com",
            "http://chat.qwen.ai",
            "http://10.0.0.1",
            "https://chat.qwen.ai.evil.example.com",
            "https://chat.qwen.ai@evil.example.com",
        ] {
            let e = refresh_endpoint(&with_base(bad)).unwrap_err();
            assert_eq!(e.code(), "E_UNTRUSTED_HOST", "{bad}");
        }
        let mut listed = with_base("https://sso.example.com");
        listed.trusted_hosts = vec!["sso.example.com".into()];
        assert!(refresh_endpoint(&listed).is_ok());
    }

    #[tokio::test]
    async fn same_home_shares_state_across_settings() {
        let h = home("share");
        let a = for_settings(&settings(&h));
        let b = for_settings(&settings(&h));
        assert!(Arc::ptr_eq(&a.shared, &b.shared));
        let mut other = (*settings(&h)).clone();
        other.oauth_base_url = "http://127.0.0.1:10".into();
        let c = for_settings(&Arc::new(other));
        assert!(Arc::ptr_eq(&a.shared, &c.shared));
        assert_eq!(c.settings().oauth_base_url, "http://127.0.0.1:10");
        fs::remove_dir_all(h).unwrap();
    }
}
