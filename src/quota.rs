//! Local quota view: how many requests this machine sent this minute and today, and the last 429 with its
//! reason. The counts live in the pacing state file (`pipeline::pacing`), updated under the same OS lock in
//! the same critical section as the pacing slot, so every process of the user counts into one place. With
//! pacing off a request only counts itself in memory (`count_request`): a file write per request (OS lock,
//! read, write; ~300 µs, and concurrent requests queue on the lock) cost more than the request itself. One
//! writer per state file then adds the counted deltas to the file in the background, a whole batch per
//! locked step; `flush()` (also run at process exit) writes what is left. The views of this process add the
//! deltas not yet in the file, so they never lag behind its own requests.
//!
//! - *This minute* is the calendar minute (hh:mm:00 to hh:mm:59), not a rolling window: one counter, no list
//!   of timestamps in the file.
//! - *Today* is the day in Asia/Shanghai (UTC+8 all year, no DST), so it resets at 00:00 Beijing time like
//!   the service's daily quota.
//!
//! Everything that depends on time takes `now_ms` as a parameter; `now_ms()` is the one clock, which tests
//! can start at a chosen instant with `QWEN_OAUTH_FAKE_NOW_MS` (see there).

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::debug_log;
use crate::error::Result;
use crate::pipeline::pacing::{self, Home};

pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 86_400_000;
/// Asia/Shanghai has been UTC+8 without daylight saving since 1991.
pub const BEIJING_OFFSET_MS: u64 = 8 * 3_600_000;
/// Default of `dailyLimit` / `QWEN_DAILY_LIMIT`: the free OAuth tier's 1,000 requests a day.
pub const DEFAULT_DAILY_LIMIT: u64 = 1000;

/// Why the server answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Too many requests for now; retrying later works.
    RateLimit,
    /// The daily quota is used up (`insufficient_quota` and the like).
    Quota,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimit => "rate_limit",
            Reason::Quota => "quota",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Last429 {
    /// Epoch ms (quota clock).
    pub at_ms: u64,
    pub reason: Reason,
    /// What the server asked for (`retry-after-ms` / `retry-after`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The counters as stored in the state file (key `quota`). Each counter belongs to the minute / day that
/// starts at its `*_start_ms`; a counter of another minute or day reads as 0 and restarts when counted into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub minute_start_ms: u64,
    pub minute: u32,
    pub day_start_ms: u64,
    pub today: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_429: Option<Last429>,
}

/// Start of the calendar minute holding `now_ms`.
pub fn minute_start(now_ms: u64) -> u64 {
    now_ms - now_ms % MINUTE_MS
}

/// 00:00 Beijing time (epoch ms) of the Beijing day holding `now_ms`.
pub fn beijing_day_start(now_ms: u64) -> u64 {
    let local = now_ms + BEIJING_OFFSET_MS;
    (local - local % DAY_MS).saturating_sub(BEIJING_OFFSET_MS)
}

/// The next 00:00 Beijing time after `now_ms`: when "today" resets.
pub fn next_day_reset(now_ms: u64) -> u64 {
    let local = now_ms + BEIJING_OFFSET_MS;
    local - local % DAY_MS + DAY_MS - BEIJING_OFFSET_MS
}

impl Counts {
    /// Count one request sent at `now_ms`; returns the counters after it.
    pub fn record_request(&mut self, now_ms: u64) -> Counts {
        let minute = minute_start(now_ms);
        if self.minute_start_ms != minute {
            self.minute_start_ms = minute;
            self.minute = 0;
        }
        let day = beijing_day_start(now_ms);
        if self.day_start_ms != day {
            self.day_start_ms = day;
            self.today = 0;
        }
        self.minute = self.minute.saturating_add(1);
        self.today = self.today.saturating_add(1);
        *self
    }

    /// Add `n` requests sent in the minute starting at `minute_ms`, counted earlier and written now. Counters
    /// of a later minute / day than that stay as they are (those requests are not this minute's or today's);
    /// so batches from several processes can arrive in any order.
    pub fn add(&mut self, minute_ms: u64, n: u32) {
        use std::cmp::Ordering::*;
        match minute_ms.cmp(&self.minute_start_ms) {
            Greater => (self.minute_start_ms, self.minute) = (minute_ms, n),
            Equal => self.minute = self.minute.saturating_add(n),
            Less => {}
        }
        let day = beijing_day_start(minute_ms);
        match day.cmp(&self.day_start_ms) {
            Greater => (self.day_start_ms, self.today) = (day, n),
            Equal => self.today = self.today.saturating_add(n),
            Less => {}
        }
    }

    pub fn record_429(&mut self, now_ms: u64, reason: Reason, retry_after_ms: Option<u64>) -> Counts {
        self.last_429 = Some(Last429 { at_ms: now_ms, reason, retry_after_ms });
        *self
    }

    /// The counters as they stand at `now_ms`.
    pub fn view(&self, now_ms: u64, daily_limit: u64) -> Status {
        Status {
            minute: if self.minute_start_ms == minute_start(now_ms) { self.minute } else { 0 },
            today: if self.day_start_ms == beijing_day_start(now_ms) { self.today } else { 0 },
            daily_limit,
            day_resets_at_ms: next_day_reset(now_ms),
            last_429: self.last_429,
        }
    }

    /// Whether `self` is at least as recent as `other` (for merging snapshots that arrive out of order).
    fn newer_or_equal(&self, other: &Counts) -> bool {
        (self.day_start_ms, self.today, self.minute_start_ms, self.minute)
            >= (other.day_start_ms, other.today, other.minute_start_ms, other.minute)
    }
}

/// What the quota view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub minute: u32,
    pub today: u32,
    pub daily_limit: u64,
    /// Next 00:00 Beijing time, epoch ms.
    pub day_resets_at_ms: u64,
    pub last_429: Option<Last429>,
}

/// The quota clock. Tests set `QWEN_OAUTH_FAKE_NOW_MS` (epoch ms) when spawning a process: the clock then
/// starts at that instant on its first use and runs at real speed, for the quota view only (tokens, pacing
/// and retries keep the real clock). Read once per process: Bun does not pass later `process.env` changes
/// to native code anyway. Not a user option.
pub fn now_ms() -> u64 {
    static FAKE: OnceLock<Option<(u64, Instant)>> = OnceLock::new();
    let fake = FAKE.get_or_init(|| {
        let start = std::env::var("QWEN_OAUTH_FAKE_NOW_MS").ok()?.trim().parse::<u64>().ok()?;
        Some((start, Instant::now()))
    });
    match fake {
        Some((start, since)) => start + since.elapsed().as_millis() as u64,
        None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    }
}

/// The quota view from the state file (read under a shared lock; a missing file is all zeros and is not
/// created), plus what this process counted that is not in the file yet.
pub fn status(settings: &Settings) -> Result<Status> {
    let path = settings.pacing_path();
    // Read with no batch of ours on its way into the file (and none can start while we hold the map), so
    // the file holds each delta of this process either fully or not at all; `current` adds the rest.
    let mut map = local();
    let deadline = Instant::now() + Duration::from_secs(2);
    while map.get(path).is_some_and(|l| !l.writing.is_empty()) {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            break;
        };
        map = WRITTEN.wait_timeout(map, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    let in_file = pacing::read_state(path)?;
    let l = map.entry(path);
    // Only a file that is there counts as seen: `Local::home` tells a QWEN_HOME still to be made from a removed one.
    if let Some(state) = in_file {
        l.observe(state.quota);
    }
    Ok(l.current().unwrap_or_default().view(now_ms(), settings.daily_limit))
}

/// The newest counts this process has seen for the state file of `settings`, with its own not yet written,
/// without touching the file (the plugin checks them after every request); None before the first request.
pub fn latest(settings: &Settings) -> Option<Status> {
    let map = local();
    let counts = map.get(settings.pacing_path())?.current()?;
    Some(counts.view(now_ms(), settings.daily_limit))
}

/// Requests counted in memory, not yet in the file: `(minute start, n)`, oldest first (usually one entry).
type Deltas = Vec<(u64, u32)>;

/// What this process knows about one state file.
#[derive(Default)]
struct Local {
    /// The newest counts read from or written to the file.
    seen: Option<Counts>,
    /// Counted, waiting for the writer.
    pending: Deltas,
    /// Taken by a writer, being added to the file now.
    writing: Deltas,
    /// A writer task runs for this file (one at most).
    writer: bool,
    /// Writers started for this file so far (what the tests check the writer's lifetime by).
    #[cfg(test)]
    writers_started: u32,
}

impl Local {
    /// Remember counts just read or written. Concurrent requests may report out of order: keep the newer.
    fn observe(&mut self, counts: Counts) {
        match &mut self.seen {
            Some(seen) => {
                let last_429 = match (seen.last_429, counts.last_429) {
                    (Some(a), Some(b)) => Some(if b.at_ms >= a.at_ms { b } else { a }),
                    (a, b) => b.or(a),
                };
                if counts.newer_or_equal(seen) {
                    *seen = counts;
                }
                seen.last_429 = last_429;
            }
            None => self.seen = Some(counts),
        }
    }

    /// Whether a deferred write may create QWEN_HOME: only before this process has seen the file. After that a
    /// missing directory was removed on purpose (a logout that deleted `~/.qwen`, a test's temp home), and
    /// counts written at exit must not bring it back; they are dropped (logged) instead.
    fn home(&self) -> Home {
        if self.seen.is_some() {
            Home::MustExist
        } else {
            Home::Create
        }
    }

    /// The file's counts as far as seen plus the deltas not in it yet; None when there is nothing at all.
    fn current(&self) -> Option<Counts> {
        if self.seen.is_none() && self.pending.is_empty() && self.writing.is_empty() {
            return None;
        }
        let mut c = self.seen.unwrap_or_default();
        for &(minute, n) in self.writing.iter().chain(&self.pending) {
            c.add(minute, n);
        }
        Some(c)
    }
}

/// The state files this process counts for, each found by comparing its path as bytes: a process has one
/// or two, and a `HashMap` lookup on every request hashed the path component by component (~1 µs cold under
/// Bun, with the join that made the path).
struct Files(Vec<(PathBuf, Local)>);

impl Files {
    fn position(&self, path: &Path) -> Option<usize> {
        self.0.iter().position(|(p, _)| p.as_os_str() == path.as_os_str())
    }

    fn get(&self, path: &Path) -> Option<&Local> {
        self.position(path).map(|at| &self.0[at].1)
    }

    fn get_mut(&mut self, path: &Path) -> Option<&mut Local> {
        let at = self.position(path)?;
        Some(&mut self.0[at].1)
    }

    fn entry(&mut self, path: &Path) -> &mut Local {
        let at = self.position(path).unwrap_or_else(|| {
            self.0.push((path.to_path_buf(), Local::default()));
            self.0.len() - 1
        });
        &mut self.0[at].1
    }
}

static LOCAL: Mutex<Files> = Mutex::new(Files(Vec::new()));
/// Signalled whenever a batch has been written (`flush` waits for the writers on it).
static WRITTEN: Condvar = Condvar::new();

/// A panic elsewhere never stops the counting: the data stays usable.
fn local() -> MutexGuard<'static, Files> {
    LOCAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remember counts just read or written for the state file at `path`.
pub fn observe(path: &Path, counts: Counts) {
    local().entry(path).observe(counts);
}

/// Count one request sent now (pacing off), in memory: no file access on the request's path. Starts the
/// file's writer when none runs; a running one picks the delta up with its next batch.
pub fn count_request(path: &Path) {
    let minute = minute_start(now_ms());
    let mut map = local();
    let l = map.entry(path);
    match l.pending.last_mut() {
        Some((m, n)) if *m == minute => *n = n.saturating_add(1),
        _ => l.pending.push((minute, 1)),
    }
    if !l.writer {
        l.writer = true;
        #[cfg(test)]
        {
            l.writers_started += 1;
        }
        drop(map);
        spawn_writer(path.to_path_buf());
    }
}

/// How long the writer gathers counts before each write while requests come; other processes see them this
/// much later. (Tried at 250 ms: a tight request loop under Bun spent ~3 µs less CPU per request on this
/// thread, but a process's view of the others' counts lagged by as much.)
const LINGER: Duration = Duration::from_millis(20);
/// After `QUIET_BATCHES` empty rounds the writer looks only this often: counts then reach the file up to a
/// second late (this process's own view never lags: it adds what is pending).
const IDLE_POLL: Duration = Duration::from_secs(1);
const QUIET_BATCHES: u32 = 10;
/// A writer with nothing to write for this long ends; the next request starts another.
const IDLE_EXIT: Duration = Duration::from_secs(300);

fn spawn_writer(path: PathBuf) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with the C runtime; it catches every panic itself.
        unsafe { atexit(flush_at_exit) };
    });
    // A thread of its own, not the runtime's blocking pool: it lives as long as requests keep coming.
    let file = path.clone();
    if let Err(e) = std::thread::Builder::new().name("qwen-quota".into()).spawn(move || write_pending(&file)) {
        crate::debug_log!("quota writer not started: {e}");
        // Counting goes on in memory; the next request tries again, `flush` writes what is pending.
        if let Some(l) = local().get_mut(&path) {
            l.writer = false;
        }
    }
}

/// The writer of one state file: hands the pending deltas over and adds them to the file in one locked
/// step. Requests counted meanwhile make up the next batch. It outlives a pause: OpenCode's requests come
/// seconds apart, and a writer that ended after each one made the next request start a thread on the JS
/// thread (~20 µs there after an idle gap, measured with `bench/cold-exchange.mjs` at `IDLE=20`).
fn write_pending(path: &Path) {
    let mut quiet = 0u32;
    let mut quiet_since = Instant::now();
    loop {
        // Let a burst of requests gather into one batch: each write costs a few hundred µs of CPU that the
        // requests themselves would otherwise compete for. `flush` does not wait for this.
        std::thread::sleep(if quiet < QUIET_BATCHES { LINGER } else { IDLE_POLL });
        let (batch, home) = {
            let mut map = local();
            let Some(l) = map.get_mut(path) else { return };
            if l.pending.is_empty() {
                if quiet == 0 {
                    quiet_since = Instant::now();
                }
                quiet = quiet.saturating_add(1);
                if quiet_since.elapsed() >= IDLE_EXIT {
                    l.writer = false;
                    return;
                }
                continue;
            }
            quiet = 0;
            l.writing = std::mem::take(&mut l.pending);
            (l.writing.clone(), l.home())
        };
        write_batch(path, &batch, home);
    }
}

/// Add `batch` (already moved to `writing`) to the file, then settle it. Best effort: a state file that
/// cannot be written drops the batch (logged), as a failed per-request write did before.
fn write_batch(path: &Path, batch: &Deltas, home: Home) {
    let result = pacing::with_state_in(path, home, |s| {
        for &(minute, n) in batch {
            s.quota.add(minute, n);
        }
        Ok(s.quota)
    });
    let mut map = local();
    if let Some(l) = map.get_mut(path) {
        l.writing.clear();
        match result {
            Ok(counts) => l.observe(counts),
            Err(e) => debug_log!(
                "quota: {} request(s) not counted in the state file: {e}",
                batch.iter().map(|b| b.1).sum::<u32>()
            ),
        }
    }
    drop(map);
    WRITTEN.notify_all();
}

/// Write every count of this process to its state file now: waits (at most `FLUSH_WAIT`) for batches being
/// written, then writes what is pending itself. Run at process exit; `flushQuota()` for tools that want
/// the file current at a chosen moment.
pub fn flush() {
    const FLUSH_WAIT: Duration = Duration::from_secs(2);
    let deadline = Instant::now() + FLUSH_WAIT;
    let mut map = local();
    while map.0.iter().any(|(_, l)| !l.writing.is_empty()) {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            break;
        };
        map = WRITTEN.wait_timeout(map, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    let batches: Vec<(PathBuf, Deltas, Home)> = map
        .0
        .iter_mut()
        .filter(|(_, l)| !l.pending.is_empty() && l.writing.is_empty())
        .map(|(p, l)| {
            l.writing = std::mem::take(&mut l.pending);
            (p.clone(), l.writing.clone(), l.home())
        })
        .collect();
    drop(map);
    for (path, batch, home) in batches {
        write_batch(&path, &batch, home);
    }
}

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Normal process exit (Node and Bun end through the C runtime's `exit`): counts still in memory go to the file.
extern "C" fn flush_at_exit() {
    let _ = std::panic::catch_unwind(flush);
}
/// Record a 429 in the state file. Best effort: the request's outcome never depends on it.
pub async fn record_429(settings: &Settings, reason: Reason, retry_after: Option<Duration>) {
    let path = settings.pacing_path();
    let at = now_ms();
    let retry_after_ms = retry_after.map(|d| d.as_millis() as u64);
    let p = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        pacing::with_state(&p, |s| Ok(s.quota.record_429(at, reason, retry_after_ms)))
    });
    match task.await {
        Ok(Ok(counts)) => observe(path, counts),
        Ok(Err(e)) => debug_log!("quota: could not record the 429: {e}"),
        Err(e) => debug_log!("quota: could not record the 429: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawOptions;

    /// Epoch ms of a Beijing wall-clock time (UTC+8).
    fn beijing(y: i32, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
        // Days from civil (Howard Hinnant's algorithm), to keep the test free of a date crate.
        let (y, mo) = if mo <= 2 { (y - 1, mo + 12) } else { (y, mo) };
        let era = y.div_euclid(400);
        let yoe = (y - era * 400) as u64;
        let doy = (153 * (mo as u64 - 3) + 2) / 5 + d as u64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = (era as i64 * 146_097 + doe as i64 - 719_468) as u64;
        days * DAY_MS + ((h * 60 + mi) * 60 + s) * 1000 - BEIJING_OFFSET_MS
    }

    #[test]
    fn the_civil_helper_is_right() {
        // 2026-05-01 00:00 +08 = 2026-04-30T16:00:00Z = 1777564800000.
        assert_eq!(beijing(2026, 5, 1, 0, 0, 0), 1_777_564_800_000);
    }

    #[test]
    fn the_day_starts_at_beijing_midnight_which_is_16_utc() {
        let before = beijing(2026, 5, 1, 23, 59, 30);
        let after = beijing(2026, 5, 2, 0, 0, 30);
        assert_eq!(beijing_day_start(before), beijing(2026, 5, 1, 0, 0, 0));
        assert_eq!(beijing_day_start(after), beijing(2026, 5, 2, 0, 0, 0));
        assert_eq!(next_day_reset(before), beijing(2026, 5, 2, 0, 0, 0));
        assert_eq!(next_day_reset(after), beijing(2026, 5, 3, 0, 0, 0));
        // Midnight itself belongs to the new day; the last millisecond before it to the old one.
        let midnight = beijing(2026, 5, 2, 0, 0, 0);
        assert_eq!(beijing_day_start(midnight), midnight);
        assert_eq!(beijing_day_start(midnight - 1), midnight - DAY_MS);
        assert_eq!(next_day_reset(midnight - 1), midnight);
        assert_eq!(next_day_reset(midnight), midnight + DAY_MS);
        // 15:59:59Z is still the Beijing day that began the previous 16:00Z.
        assert_eq!((midnight - 1) % DAY_MS, 16 * 3_600_000 - 1);
        // Times before the first Beijing midnight of the epoch do not underflow.
        assert_eq!(beijing_day_start(0), 0);
        assert_eq!(next_day_reset(0), 16 * 3_600_000);
    }

    #[test]
    fn counts_reset_across_beijing_midnight_and_the_minute_is_the_calendar_minute() {
        let mut c = Counts::default();
        let t0 = beijing(2026, 5, 1, 23, 59, 30);
        for i in 0..3 {
            c.record_request(t0 + i * 100);
        }
        let v = c.view(t0 + 1_000, 1000);
        assert_eq!((v.minute, v.today), (3, 3));
        assert_eq!(v.day_resets_at_ms, beijing(2026, 5, 2, 0, 0, 0));

        // 00:00:30: a new day and a new minute, though less than 60 s passed since the last request.
        let t1 = beijing(2026, 5, 2, 0, 0, 30);
        let v = c.view(t1, 1000);
        assert_eq!((v.minute, v.today), (0, 0), "yesterday's requests are not shown as today's");
        c.record_request(t1);
        let after = c.record_request(t1 + 50);
        assert_eq!((after.minute, after.today), (2, 2));
        assert_eq!(after.day_start_ms, beijing(2026, 5, 2, 0, 0, 0));
        assert_eq!(c.view(t1 + 100, 1000).day_resets_at_ms, beijing(2026, 5, 3, 0, 0, 0));
    }

    #[test]
    fn a_new_minute_of_the_same_day_keeps_today() {
        let mut c = Counts::default();
        let t = beijing(2026, 5, 1, 12, 0, 59);
        c.record_request(t);
        c.record_request(t + 1_000); // 12:01:00
        let v = c.view(t + 1_001, 10);
        assert_eq!((v.minute, v.today, v.daily_limit), (1, 2, 10));
        // An hour later: nothing this minute, the day's count stays.
        let v = c.view(t + 3_600_000, 10);
        assert_eq!((v.minute, v.today), (0, 2));
    }

    #[test]
    fn the_last_429_is_kept_across_days_and_serialises_with_its_reason() {
        let mut c = Counts::default();
        let t = beijing(2026, 5, 1, 10, 0, 0);
        c.record_request(t);
        c.record_429(t + 5, Reason::RateLimit, Some(30_000));
        c.record_429(t + 9, Reason::Quota, None);
        let v = c.view(t + DAY_MS, 1000);
        assert_eq!(v.today, 0);
        assert_eq!(v.last_429, Some(Last429 { at_ms: t + 9, reason: Reason::Quota, retry_after_ms: None }));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""reason":"quota""#), "{json}");
        assert_eq!(serde_json::from_str::<Counts>(&json).unwrap(), c);
        // Missing or partial content reads as zeros.
        assert_eq!(serde_json::from_str::<Counts>("{}").unwrap(), Counts::default());
    }

    #[test]
    fn observe_keeps_the_newer_snapshot_when_reports_cross() {
        let path = std::env::temp_dir().join(format!("quota-observe-{}-{}.json", std::process::id(), now_ms()));
        let settings =
            Settings::resolve(&RawOptions { qwen_home: Some(path.display().to_string()), ..Default::default() })
                .unwrap();
        let t = now_ms();
        let mut c = Counts::default();
        let first = c.record_request(t);
        let second = c.record_request(t);
        let with_429 =
            Counts { last_429: Some(Last429 { at_ms: t, reason: Reason::RateLimit, retry_after_ms: None }), ..first };
        observe(settings.pacing_path(), second);
        observe(settings.pacing_path(), with_429);
        let seen = latest(&settings).unwrap();
        assert_eq!(seen.today, 2, "the older count does not win");
        assert_eq!(seen.last_429.map(|l| l.reason), Some(Reason::RateLimit), "but its 429 is kept");
    }

    #[test]
    fn add_counts_deltas_into_their_own_minute_and_day_whatever_order_batches_arrive_in() {
        let t = beijing(2026, 5, 1, 23, 59, 10);
        let (m1, m2) = (minute_start(t), minute_start(t) + MINUTE_MS); // 23:59 and 00:00 of the next day
        let mut c = Counts::default();
        c.add(m2, 2);
        c.add(m1, 5); // an older batch from another process: yesterday's, not this minute's
        assert_eq!(c.view(m2 + 1, 1000).minute, 2);
        assert_eq!(c.view(m2 + 1, 1000).today, 2);
        let mut d = Counts::default();
        d.add(m1, 5);
        d.add(m2, 2);
        assert_eq!(c, d, "same result in either order");
        d.add(m2, 1);
        assert_eq!((d.minute, d.today), (3, 3));
    }

    /// A QWEN_HOME of its own under the temp dir (not created yet): its path, settings and state file.
    fn temp_home(name: &str) -> (PathBuf, Settings, PathBuf) {
        let home = std::env::temp_dir().join(format!("quota-{name}-{}-{}", std::process::id(), now_ms()));
        let settings =
            Settings::resolve(&RawOptions { qwen_home: Some(home.display().to_string()), ..Default::default() })
                .unwrap();
        let path = settings.pacing_path().to_path_buf();
        (home, settings, path)
    }

    #[test]
    fn counts_in_memory_are_seen_at_once_and_flushed_to_the_file_exactly() {
        let (home, settings, path) = temp_home("flush");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || (0..25).for_each(|_| count_request(&p)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(latest(&settings).unwrap().today, 100, "this process sees its own requests before any write");
        assert_eq!(status(&settings).unwrap().today, 100, "the status adds what is not in the file yet");
        flush();
        let file = pacing::read_state(&path).unwrap().unwrap().quota;
        assert_eq!(file.view(now_ms(), 1000).today, 100, "every count reached the file, none twice");
        assert_eq!(status(&settings).unwrap().today, 100);
        // The writer stays for the next count (its thread is not started again per request).
        count_request(&path);
        flush();
        assert_eq!(pacing::read_state(&path).unwrap().unwrap().quota.view(now_ms(), 1000).today, 101);
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn counts_left_after_qwen_home_was_removed_do_not_bring_it_back() {
        let (home, settings, path) = temp_home("removed");
        count_request(&path);
        flush();
        assert!(path.is_file(), "the first write creates QWEN_HOME and the state file");
        std::fs::remove_dir_all(&home).unwrap();
        count_request(&path);
        flush();
        assert!(!home.exists(), "a flush after the removal did not create QWEN_HOME again");
        assert_eq!(latest(&settings).unwrap().today, 1, "the dropped count is not kept as pending either");
    }

    #[test]
    fn one_writer_serves_requests_with_pauses_between_them() {
        let (home, _, path) = temp_home("pause");
        let in_file = || pacing::read_state(&path).ok().flatten().map_or(0, |s| s.quota.view(now_ms(), 1000).today);
        let written = |n: u32| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while in_file() < n {
                assert!(Instant::now() < deadline, "the writer wrote {} of {n} counts", in_file());
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        count_request(&path);
        written(1);
        // A pause longer than a batch and its quiet rounds: the writer used to end here, and the next request
        // started a thread on the JS thread.
        std::thread::sleep(LINGER * (QUIET_BATCHES + 2));
        count_request(&path);
        written(2);
        assert_eq!(local().get(&path).unwrap().writers_started, 1, "the same writer wrote both");
        assert_eq!(in_file(), 2);
        std::fs::remove_dir_all(&home).unwrap();
    }
}
