//! Valid tokens on demand: cached credentials, reload when the file's mtime changes (checked at most every
//! 5 s), refresh before expiry, one refresh in flight per process and — through the lock and a re-read —
//! one per machine.

use std::sync::Arc;

use crate::config::Settings;
use crate::credentials::Credentials;
use crate::error::Result;

pub struct TokenManager {
    settings: Arc<Settings>,
}

/// The manager for `settings.qwen_home` (one per directory per process).
pub fn for_settings(settings: &Arc<Settings>) -> Arc<TokenManager> {
    let _ = settings;
    todo!("token_manager::for_settings")
}

impl TokenManager {
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Credentials whose access token is valid now, refreshing when needed. `force` always refreshes
    /// (under the lock), unless another process already refreshed since `refused_token` was handed out.
    pub async fn valid_credentials(&self, force: bool, refused_token: Option<&str>) -> Result<Credentials> {
        let _ = (force, refused_token);
        todo!("TokenManager::valid_credentials")
    }

    /// Cached or freshly loaded credentials without refreshing (Ok(None) when there is no file).
    pub fn current(&self) -> Result<Option<Credentials>> {
        todo!("TokenManager::current")
    }

    /// After a login: adopt these credentials (already saved by the caller) as the cache.
    pub fn install(&self, creds: Credentials) {
        let _ = creds;
        todo!("TokenManager::install")
    }

    /// Bumped whenever the credentials in use change (refresh, reload, login), so callers can mirror them.
    pub fn generation(&self) -> u32 {
        todo!("TokenManager::generation")
    }
}
