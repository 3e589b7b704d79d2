//! `oauth_creds.lock`, the Qwen Code CLI's cross-process lock: created with O_EXCL, random UUID content,
//! stale after 35 s (renamed aside, unlinked, retried at once), 20 attempts backing off 100 ms ×1.5 up to
//! 2 s. Unlike the CLI we release only a lock whose content is still ours.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::debug_log;
use crate::error::{Error, Result};

pub const STALE_AFTER_MS: u64 = 35_000;

/// The CLI's lock timing (`SharedTokenManager`, 0.24.4). Only tests use other values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LockTiming {
    pub stale_after: Duration,
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl LockTiming {
    pub const CLI: LockTiming = LockTiming {
        stale_after: Duration::from_millis(STALE_AFTER_MS),
        attempts: 20,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(2000),
    };
}

pub struct LockGuard {
    path: PathBuf,
    token: String,
}

/// Take the lock at `path`, waiting as the CLI does.
pub async fn acquire(path: &Path) -> Result<LockGuard> {
    acquire_with(path, LockTiming::CLI).await
}

pub(crate) async fn acquire_with(path: &Path, timing: LockTiming) -> Result<LockGuard> {
    let token = uuid_v4();
    let mut delay = timing.initial_delay;
    let mut announced = false;
    for attempt in 1..=timing.attempts {
        match try_create(path, &token) {
            Ok(()) => {
                if attempt > 1 {
                    debug_log!("took {} after {attempt} attempts", path.display());
                }
                return Ok(LockGuard { path: path.to_path_buf(), token });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, &e)),
        }
        match fs::metadata(path).and_then(|m| m.modified()) {
            Ok(mtime) if is_stale(mtime, timing.stale_after) => {
                // Rename first so that of several processes breaking the same stale lock only one
                // succeeds, and none deletes a lock that was just created anew.
                let aside = path.with_file_name(format!(
                    "{}.stale.{}",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("oauth_creds.lock"),
                    uuid_v4()
                ));
                if fs::rename(path, &aside).is_ok() {
                    let _ = fs::remove_file(&aside);
                    debug_log!("broke stale lock {}", path.display());
                }
                continue; // at once, as the CLI does
            }
            // Released between our create and stat: try again at once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        if attempt < timing.attempts {
            if !announced {
                announced = true;
                debug_log!("{} is held by another process; waiting", path.display());
            }
            tokio::time::sleep(delay).await;
            delay = delay.mul_f64(1.5).min(timing.max_delay);
        }
    }
    debug_log!("timed out waiting for {}", path.display());
    Err(Error::LockTimeout { path: path.to_path_buf() })
}

/// mtime more than `stale_after` away from now. The CLI only looks at the past; a lock dated more than
/// that into the future was left while the clock was wrong (or the clock was set back since), and would
/// otherwise block every refresh, ours and the CLI's, until the wall clock caught up with it.
fn is_stale(mtime: SystemTime, stale_after: Duration) -> bool {
    let age = SystemTime::now().duration_since(mtime).unwrap_or_else(|e| e.duration());
    age > stale_after
}

/// `writeFile(path, token, { flag: 'wx' })` with mode 0600.
fn try_create(path: &Path, token: &str) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path)?;
    if let Err(e) = file.write_all(token.as_bytes()) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the lock file still holds our token (false once another process broke it as stale).
    pub fn still_owned(&self) -> bool {
        fs::read(&self.path).map(|c| c == self.token.as_bytes()).unwrap_or(false)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // The CLI unlinks unconditionally; after a stale break the file may be another process's lock.
        if self.still_owned() {
            let _ = fs::remove_file(&self.path);
        } else {
            debug_log!("lock {} is no longer ours; left in place", self.path.display());
        }
    }
}

/// Random (version 4) UUID in the usual 8-4-4-4-12 form, like `crypto.randomUUID()`.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qwen-lock-test-{name}-{}", uuid_v4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn fast() -> LockTiming {
        LockTiming {
            stale_after: Duration::from_millis(STALE_AFTER_MS),
            attempts: 4,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        }
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid_v4());
    }

    #[tokio::test]
    async fn acquire_writes_uuid_0600_and_release_unlinks() {
        let d = tmp_dir("basic");
        let p = d.join("oauth_creds.lock");
        let g = acquire(&p).await.unwrap();
        let content = fs::read_to_string(&p).unwrap();
        assert_eq!(content.len(), 36);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(g);
        assert!(!p.exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn fresh_foreign_lock_times_out_and_is_kept() {
        let d = tmp_dir("busy");
        let p = d.join("oauth_creds.lock");
        fs::write(&p, "someone-else").unwrap();
        let t0 = Instant::now();
        let e = acquire_with(&p, fast()).await.err().unwrap();
        assert_eq!(e.code(), "E_LOCK_TIMEOUT");
        // 10 + 15 + 20 ms of back-off between the 4 attempts.
        assert!(t0.elapsed() >= Duration::from_millis(45));
        assert_eq!(fs::read_to_string(&p).unwrap(), "someone-else");
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn stale_lock_is_broken_at_once() {
        let d = tmp_dir("stale");
        let p = d.join("oauth_creds.lock");
        fs::write(&p, "dead-process").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        let g = acquire_with(&p, LockTiming { attempts: 2, ..fast() }).await.unwrap();
        assert!(g.still_owned());
        // The renamed-aside copy is gone too.
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        drop(g);
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn staleness_counts_in_both_directions() {
        // Clock skew: a lock from an hour in the future is as dead as one from an hour ago.
        assert!(is_stale(SystemTime::now() + Duration::from_secs(3600), Duration::from_secs(35)));
        assert!(!is_stale(SystemTime::now() + Duration::from_secs(20), Duration::from_secs(35)));
        assert!(is_stale(SystemTime::now() - Duration::from_secs(36), Duration::from_secs(35)));
        assert!(!is_stale(SystemTime::now() - Duration::from_secs(30), Duration::from_secs(35)));
    }

    #[tokio::test]
    async fn lock_dated_far_in_the_future_is_broken() {
        let d = tmp_dir("future");
        let p = d.join("oauth_creds.lock");
        fs::write(&p, "written-while-the-clock-was-wrong").unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(3600))
            .unwrap();
        let g = acquire_with(&p, LockTiming { attempts: 2, ..fast() }).await.unwrap();
        assert!(g.still_owned());
        drop(g);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn drop_leaves_a_lock_that_is_no_longer_ours() {
        let d = tmp_dir("foreign");
        let p = d.join("oauth_creds.lock");
        let g = acquire(&p).await.unwrap();
        // Another process broke our lock as stale and took it.
        fs::remove_file(&p).unwrap();
        fs::write(&p, "other-owner").unwrap();
        drop(g);
        assert_eq!(fs::read_to_string(&p).unwrap(), "other-owner");
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn waits_for_release_by_another_holder() {
        let d = tmp_dir("wait");
        let p = d.join("oauth_creds.lock");
        let first = acquire(&p).await.unwrap();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { acquire(&p2).await.map(|g| g.token.clone()) });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "must wait while the lock is held");
        let first_token = first.token.clone();
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        assert_ne!(second, first_token);
        fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn missing_directory_is_an_io_error() {
        let d = tmp_dir("nodir");
        let e = acquire(&d.join("nope").join("oauth_creds.lock")).await.err().unwrap();
        assert_eq!(e.code(), "E_IO");
        fs::remove_dir_all(d).unwrap();
    }
}
