//! `oauth_creds.lock`, the Qwen Code CLI's cross-process lock: created with O_EXCL, random UUID content,
//! stale after 35 s (renamed aside, unlinked, retried at once), 20 attempts backing off 100 ms ×1.5 up to
//! 2 s. Unlike the CLI we release only a lock whose content is still ours.

use std::path::{Path, PathBuf};

use crate::error::Result;

pub const STALE_AFTER_MS: u64 = 35_000;

pub struct LockGuard {
    path: PathBuf,
    token: String,
}

/// Take the lock at `path`, waiting as the CLI does.
pub async fn acquire(path: &Path) -> Result<LockGuard> {
    let _ = path;
    todo!("lock::acquire")
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = &self.token;
        // released in the implementation: unlink only if the file still holds `token`
    }
}
