//! Machine-wide pacing: the starts of any two requests from any process of this user are at least
//! `min_interval + jitter` apart, first come first served, through a small locked state file beside the
//! credentials.
//!
//! Two short critical sections per request, each under an OS lock on the state file:
//! 1. *reserve*: take the next free slot (`start = max(now, next_start)`) and push `next_start` one gap
//!    further, so waiters queue in arrival order and an idle machine goes at once;
//! 2. *confirm*, after sleeping until the slot: check the previous request's actual start plus its gap and
//!    record ours. Sleeping can overshoot by a few ms; without this step a late wake-up followed by a
//!    punctual one would put two starts closer than the gap.
//!
//! The same file (key `quota`) holds the local quota view's counters (`crate::quota`): a request is
//! counted in the *confirm* step, under the same lock. With pacing off there is no waiting and no file
//! access on the request's path: it counts itself in memory (`quota::count_request`), flushed in batches.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::debug_log;
use crate::error::{Error, Result};
use crate::quota;

/// How many queued gaps ahead of now a stored time may lie before we call it bogus (a clock that jumped
/// back, a hand-edited file) and ignore it instead of stalling every request.
const MAX_QUEUE: u64 = 256;

/// The shared state file's content. Unknown or broken content is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Earliest start the next reservation may get (epoch ms).
    pub next_start_ms: u64,
    /// When the most recent request actually started (epoch ms)...
    pub last_start_ms: u64,
    /// ...and the gap it asked for.
    pub last_gap_ms: u64,
    #[serde(default = "version")]
    pub v: u32,
    /// The quota view's counters; absent in files written before it existed.
    #[serde(default)]
    pub quota: quota::Counts,
}

fn version() -> u32 {
    1
}

impl State {
    fn parse(text: &str) -> State {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// Forget stored times implausibly far ahead of `now` (see `MAX_QUEUE`).
    pub fn sanitize(&mut self, now_ms: u64, max_gap_ms: u64) {
        let limit = now_ms.saturating_add(max_gap_ms.max(1).saturating_mul(MAX_QUEUE));
        if self.next_start_ms > limit {
            self.next_start_ms = now_ms;
        }
        if self.last_start_ms > limit || self.last_start_ms.saturating_add(self.last_gap_ms) > limit {
            self.last_start_ms = 0;
            self.last_gap_ms = 0;
        }
    }

    /// Take the next slot: returns its start. FCFS because every reservation moves `next_start` on.
    pub fn reserve(&mut self, now_ms: u64, gap_ms: u64) -> u64 {
        let start = now_ms.max(self.next_start_ms);
        self.next_start_ms = start.saturating_add(gap_ms);
        start
    }

    /// At the slot's time: Ok when the previous start plus its gap has passed (and records ours),
    /// else the milliseconds still to wait.
    pub fn confirm(&mut self, now_ms: u64, gap_ms: u64) -> std::result::Result<(), u64> {
        let earliest = self.last_start_ms.saturating_add(self.last_gap_ms);
        if now_ms < earliest {
            return Err(earliest - now_ms);
        }
        self.last_start_ms = now_ms;
        self.last_gap_ms = gap_ms;
        // New reservations must not be handed a slot inside our gap.
        self.next_start_ms = self.next_start_ms.max(now_ms.saturating_add(gap_ms));
        Ok(())
    }

    /// Give a reserved slot back after an abort, when no one has reserved behind it.
    pub fn release(&mut self, reserved: &Reservation) {
        if self.next_start_ms == reserved.start_ms.saturating_add(reserved.gap_ms) {
            self.next_start_ms = reserved.previous_next_start_ms;
        }
    }
}

/// One reserved slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub start_ms: u64,
    pub gap_ms: u64,
    previous_next_start_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A request's turn.
pub struct Turn {
    /// How long it waited for its slot.
    pub waited: Duration,
}

/// Wait for this process's turn. Returns how long it waited. No waiting when pacing is disabled; the
/// request is counted either way (pacing off: in memory, written to the file in the background).
pub async fn wait_turn(settings: &Settings, cancel: &CancellationToken) -> Result<Turn> {
    if !settings.pacing_enabled() {
        quota::count_request(settings.pacing_path());
        return Ok(Turn { waited: Duration::ZERO });
    }
    if cancel.is_cancelled() {
        return Err(Error::Aborted);
    }
    let path = settings.pacing_path().to_path_buf();
    let jitter = if settings.jitter_max_ms > settings.jitter_min_ms {
        rand::rng().random_range(settings.jitter_min_ms..=settings.jitter_max_ms)
    } else {
        settings.jitter_min_ms
    };
    let gap = settings.min_interval_ms.saturating_add(jitter);
    let max_gap = settings.min_interval_ms.saturating_add(settings.jitter_max_ms);
    let began = std::time::Instant::now();

    let p = path.clone();
    let undo_path = path.clone();
    let reservation = blocking(
        cancel,
        move || with_state(&p, |state| Ok(reserve_in(state, now_ms(), gap, max_gap))),
        // Aborted while the slot was being written: give it back once it is, or the next request waits for it.
        move |reservation| give_back(undo_path, reservation),
    )
    .await?;

    loop {
        let wait = match reservation.start_ms.checked_sub(now_ms()) {
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                let p = path.clone();
                let outcome = blocking(
                    cancel,
                    move || {
                        with_state(&p, |state| {
                            let now = now_ms();
                            state.sanitize(now, max_gap);
                            Ok(state.confirm(now, gap).map(|()| (now, state.quota.record_request(quota::now_ms()))))
                        })
                    },
                    // The abort gives the reservation back below. A confirm that still lands after it counts
                    // as a start that never went: the next request waits out its gap, which errs on the safe side.
                    |_| {},
                )
                .await;
                match outcome {
                    Ok(Ok((started, counts))) => {
                        let waited = began.elapsed();
                        quota::observe(&path, counts);
                        // __test__/pacing.test.mjs reads this line to check gaps across processes.
                        debug_log!("pacing: start at {started} ms, waited {} ms, gap {gap} ms", waited.as_millis());
                        return Ok(Turn { waited });
                    }
                    Ok(Err(ms)) => Duration::from_millis(ms),
                    Err(e) => {
                        give_back(path, reservation);
                        return Err(e);
                    }
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                give_back(path, reservation);
                return Err(Error::Aborted);
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn reserve_in(state: &mut State, now: u64, gap: u64, max_gap: u64) -> Reservation {
    state.sanitize(now, max_gap);
    let previous_next_start_ms = state.next_start_ms;
    let start_ms = state.reserve(now, gap);
    Reservation { start_ms, gap_ms: gap, previous_next_start_ms }
}

/// Return an unused slot in the background; the caller is already on its way out.
fn give_back(path: PathBuf, reservation: Reservation) {
    tokio::task::spawn_blocking(move || {
        let _ = with_state(&path, |state| {
            state.release(&reservation);
            Ok(())
        });
    });
}

/// Run blocking file work off the async threads; an abort stops waiting for it at once. The work itself cannot
/// be stopped: what it still completes after the abort goes to `undo`, in the background.
async fn blocking<T: Send + 'static>(
    cancel: &CancellationToken,
    f: impl FnOnce() -> Result<T> + Send + 'static,
    undo: impl FnOnce(T) + Send + 'static,
) -> Result<T> {
    let mut task = tokio::task::spawn_blocking(f);
    tokio::select! {
        // Finished work wins over an abort that came with it: the caller then handles both.
        biased;
        joined = &mut task => joined.map_err(|e| Error::Io { path: PathBuf::from("pacing"), detail: e.to_string() })?,
        _ = cancel.cancelled() => {
            tokio::spawn(async move {
                if let Ok(Ok(done)) = task.await {
                    undo(done);
                }
            });
            Err(Error::Aborted)
        }
    }
}

/// The state file's content under a shared OS lock, without creating anything; None when there is no file.
pub fn read_state(path: &Path) -> Result<Option<State>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, &e)),
    };
    file.lock_shared().map_err(|e| Error::io(path, &e))?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| Error::io(path, &e))?;
    Ok(Some(State::parse(&text)))
}

/// Open the state file, hold an exclusive OS lock on it, let `f` update the state, write it back.
/// A missing, empty or corrupt file counts as a fresh state and is overwritten. Creates QWEN_HOME if needed.
pub fn with_state<T>(path: &Path, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    with_state_in(path, Home::Create, f)
}

/// Whether a write may create the state file's directory (QWEN_HOME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    Create,
    /// Write only into a directory that is there: a deferred write must not bring back a QWEN_HOME the user
    /// removed (a logout that deleted `~/.qwen`) after this process had used it.
    MustExist,
}

/// `with_state`, with the choice of creating QWEN_HOME; with `Home::MustExist` a missing one is an I/O error.
pub fn with_state_in<T>(path: &Path, home: Home, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    if let (Home::Create, Some(dir)) = (home, path.parent()) {
        create_private_dir(dir)?;
    }
    let mut file = open_private(path).map_err(|e| Error::io(path, &e))?;
    file.lock().map_err(|e| Error::io(path, &e))?;
    // The lock is released when `file` is dropped, also on every early return below.
    let mut text = String::new();
    let mut state = match file.read_to_string(&mut text) {
        Ok(_) => State::parse(&text),
        Err(_) => State::default(),
    };
    let out = f(&mut state)?;
    state.v = version();
    let json = serde_json::to_string(&state).expect("pacing state serialises");
    // Over the old text, then cut to length: the state is about the same size each time, and emptying the
    // file first made the filesystem free and allocate its block on every write (readers lock too).
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(json.as_bytes()))
        .and_then(|_| file.set_len(json.len() as u64))
        .map_err(|e| Error::io(path, &e))?;
    Ok(out)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| Error::io(dir, &e))
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_machine_goes_at_once() {
        let mut s = State::default();
        assert_eq!(s.reserve(10_000, 300), 10_000);
        assert_eq!(s.next_start_ms, 10_300);
        // After an idle gap the next one goes at once too.
        assert_eq!(s.reserve(20_000, 300), 20_000);
    }

    #[test]
    fn busy_machine_queues_in_arrival_order() {
        let mut s = State::default();
        let a = s.reserve(1_000, 300);
        let b = s.reserve(1_010, 250);
        let c = s.reserve(1_020, 400);
        assert_eq!((a, b, c), (1_000, 1_300, 1_550));
        assert_eq!(s.next_start_ms, 1_950);
    }

    #[test]
    fn confirm_enforces_the_gap_after_a_late_start() {
        let mut s = State::default();
        let a = s.reserve(1_000, 200);
        let b = s.reserve(1_000, 200);
        // A wakes 7 ms late, B punctually: B must wait the 7 ms.
        assert_eq!(s.confirm(a + 7, 200), Ok(()));
        assert_eq!(s.confirm(b, 200), Err(7));
        assert_eq!(s.confirm(b + 7, 200), Ok(()));
        assert_eq!(s.last_start_ms, 1_207);
        // New reservations land after the actual start plus its gap.
        assert_eq!(s.reserve(1_210, 200), 1_407);
    }

    /// A reservation still being written when the request is aborted must not be left in the file (the next
    /// request would wait for a slot nobody uses): what the work completes after the abort goes to `undo`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_completes_after_an_abort_goes_to_undo() {
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let (undone, seen) = tokio::sync::oneshot::channel();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let out = blocking(
            &cancel,
            move || {
                // Still running when the abort is noticed: it waits for the test's go.
                gate.recv().ok();
                Ok(7)
            },
            move |done| {
                undone.send(done).ok();
            },
        )
        .await;
        assert!(matches!(out, Err(Error::Aborted)), "the abort is answered at once");
        go.send(()).unwrap();
        let undone = tokio::time::timeout(Duration::from_secs(10), seen).await.expect("undo runs").unwrap();
        assert_eq!(undone, 7);

        // Work that completes before anyone aborts is the caller's, and nothing is undone.
        let (undone, seen) = tokio::sync::oneshot::channel::<u32>();
        let out = blocking(
            &CancellationToken::new(),
            || Ok(8),
            move |done| {
                undone.send(done).ok();
            },
        )
        .await;
        assert_eq!(out.unwrap(), 8);
        assert!(seen.await.is_err(), "undo is dropped unused");
    }

    #[test]
    fn release_returns_only_the_tail_slot() {
        let mut s = State::default();
        let r1 = reserve_in(&mut s, 1_000, 100, 100);
        let r2 = reserve_in(&mut s, 1_000, 100, 100);
        s.release(&r1); // someone queued behind r1: keep it
        assert_eq!(s.next_start_ms, 1_200);
        s.release(&r2);
        assert_eq!(s.next_start_ms, 1_100);
    }

    #[test]
    fn far_future_times_are_ignored() {
        let mut s =
            State { next_start_ms: u64::MAX - 5, last_start_ms: 9_000_000, last_gap_ms: 10, ..State::default() };
        s.sanitize(1_000, 100);
        assert_eq!(s.reserve(1_000, 100), 1_000);
        assert_eq!(s.confirm(1_000, 100), Ok(()));
        // A legitimately long queue is kept.
        let mut q = State { next_start_ms: 1_000 + 100 * 50, ..State::default() };
        q.sanitize(1_000, 100);
        assert_eq!(q.next_start_ms, 6_000);
    }

    #[test]
    fn state_file_is_private_and_corruption_is_overwritten() {
        let dir = std::env::temp_dir().join(format!("qwen-pacing-{}-{}", std::process::id(), now_ms()));
        let path = dir.join("sub").join("pacing.json");
        let start = with_state(&path, |s| Ok(s.reserve(5_000, 100))).unwrap();
        assert_eq!(start, 5_000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"next_start_ms\":5100"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(with_state(&path, |s| Ok(s.reserve(7_000, 100))).unwrap(), 7_000);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with('{'));
        // A longer old content is fully replaced, not left as a tail.
        std::fs::write(&path, " ".repeat(500)).unwrap();
        with_state(&path, |s| Ok(s.reserve(8_000, 100))).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(serde_json::from_str::<State>(&text).is_ok(), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quota_counts_share_the_file_and_old_files_without_them_still_parse() {
        let dir = std::env::temp_dir().join(format!("qwen-pacing-quota-{}-{}", std::process::id(), now_ms()));
        let path = dir.join("pacing.json");
        assert_eq!(read_state(&path).unwrap(), None, "reading creates nothing");
        assert!(!dir.exists());
        std::fs::create_dir_all(&dir).unwrap();
        // A file from before the quota view: pacing fields kept, counters start at zero.
        std::fs::write(&path, r#"{"next_start_ms":5100,"last_start_ms":5000,"last_gap_ms":100,"v":1}"#).unwrap();
        let t = 1_777_564_800_000; // 2026-05-01 00:00 Beijing time
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let p = path.clone();
                std::thread::spawn(move || with_state(&p, |s| Ok(s.quota.record_request(t + i))).unwrap())
            })
            .collect();
        let mut todays: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap().today).collect();
        todays.sort();
        assert_eq!(todays, (1..=8).collect::<Vec<_>>(), "every count under the lock, none lost");
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!((state.next_start_ms, state.last_start_ms), (5100, 5000));
        assert_eq!(state.quota.view(t + 10, 1000).today, 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn threads_contending_for_the_file_get_distinct_spaced_slots() {
        let dir = std::env::temp_dir().join(format!("qwen-pacing-mt-{}-{}", std::process::id(), now_ms()));
        let path = dir.join("pacing.json");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || with_state(&p, |s| Ok(s.reserve(1_000, 50))).unwrap())
            })
            .collect();
        let mut starts: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        starts.sort();
        assert_eq!(starts, (0..8).map(|i| 1_000 + 50 * i).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
