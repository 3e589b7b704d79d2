//! `oauth_creds.json`, shared with the Qwen Code CLI: the CLI's keys and key orders, `expiry_date` in
//! epoch ms, validation as the CLI does it, atomic 0600 writes in a 0700 directory.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Result;

/// A token counts as valid only while `now < expiry_date - TOKEN_REFRESH_BUFFER_MS` (the CLI's 30 s).
pub const TOKEN_REFRESH_BUFFER_MS: i64 = 30_000;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    /// Bare host as the server gives it (e.g. `portal.qwen.ai`), or None.
    pub resource_url: Option<String>,
    /// Epoch milliseconds.
    pub expiry_date: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("resource_url", &self.resource_url)
            .field("expiry_date", &self.expiry_date)
            .finish()
    }
}

/// The CLI writes two key orders: after the device flow and after a refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// `access_token, refresh_token, token_type, resource_url, expiry_date`
    DeviceFlow,
    /// `access_token, token_type, refresh_token, resource_url, expiry_date`
    Refresh,
}

impl Credentials {
    /// Exactly `JSON.stringify(creds, null, 2)`: 2-space indent, no trailing newline, absent keys omitted.
    pub fn to_cli_json(&self, order: KeyOrder) -> String {
        let _ = order;
        todo!("Credentials::to_cli_json")
    }

    /// Parse and validate as the CLI's `validateCredentials`. `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Credentials> {
        let _ = (bytes, path);
        todo!("Credentials::parse")
    }

    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        now_ms < self.expiry_date - TOKEN_REFRESH_BUFFER_MS
    }

    pub fn api_base_url(&self) -> String {
        api_base_url(self.resource_url.as_deref())
    }
}

/// §8: `resource_url || DashScope default`, `https://` prefixed when it has no scheme, `/v1` appended
/// when it does not end with it.
pub fn api_base_url(resource_url: Option<&str>) -> String {
    let _ = resource_url;
    todo!("api_base_url")
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    pub fn new(dir: PathBuf) -> Self {
        CredentialStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("oauth_creds.json")
    }

    /// `Ok(None)` when the file does not exist. Invalid content is an error (the file is never touched).
    pub fn load(&self) -> Result<Option<(Credentials, SystemTime)>> {
        todo!("CredentialStore::load")
    }

    /// mtime of the file, `Ok(None)` when it does not exist.
    pub fn mtime(&self) -> Result<Option<SystemTime>> {
        todo!("CredentialStore::mtime")
    }

    /// Atomic save: dir 0700, temp file 0600 + fsync + rename (+ dir fsync). Returns the new mtime.
    pub fn save(&self, creds: &Credentials, order: KeyOrder) -> Result<SystemTime> {
        let _ = (creds, order);
        todo!("CredentialStore::save")
    }

    /// Delete the file (logout). Missing is fine.
    pub fn remove(&self) -> Result<()> {
        todo!("CredentialStore::remove")
    }
}
