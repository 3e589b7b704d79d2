//! `oauth_creds.json`, shared with the Qwen Code CLI: the CLI's keys and key orders, `expiry_date` in
//! epoch ms, validation as the CLI does it, atomic 0600 writes in a 0700 directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::debug_log;
use crate::error::{Error, Result};

/// A token counts as valid only while `now < expiry_date - TOKEN_REFRESH_BUFFER_MS` (the CLI's 30 s).
pub const TOKEN_REFRESH_BUFFER_MS: i64 = 30_000;

/// `resource_url || DEFAULT_DASHSCOPE_BASE_URL` in the CLI's `getCurrentEndpoint`.
pub const DEFAULT_API_BASE_URL: &str = "https://dashscope.aliyuncs.com/compatible-mode/v1";

pub const CREDS_FILE_NAME: &str = "oauth_creds.json";

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
        let tokens: [(&str, &str); 3] = match order {
            KeyOrder::DeviceFlow => [
                ("access_token", &self.access_token),
                ("refresh_token", &self.refresh_token),
                ("token_type", &self.token_type),
            ],
            KeyOrder::Refresh => [
                ("access_token", &self.access_token),
                ("token_type", &self.token_type),
                ("refresh_token", &self.refresh_token),
            ],
        };
        let mut out = String::with_capacity(256);
        out.push('{');
        for (key, value) in tokens {
            push_entry(&mut out, key, &json_string(value));
        }
        if let Some(url) = &self.resource_url {
            push_entry(&mut out, "resource_url", &json_string(url));
        }
        // An i64 prints as JS prints an integral number below 2^53, which every real expiry is.
        push_entry(&mut out, "expiry_date", &self.expiry_date.to_string());
        out.truncate(out.len() - 1); // the last entry's comma
        out.push_str("\n}");
        out
    }

    /// Parse and validate as the CLI's `validateCredentials`. `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Credentials> {
        // Reasons name keys and JSON positions only, never values: the file holds secrets.
        let invalid = |reason: String| Error::CredsInvalid { path: path.to_path_buf(), reason };
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(invalid("the file is empty".into()));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| invalid("not a JSON object".into()))?;

        let required = |key: &str| -> Result<String> {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(invalid(format!("\"{key}\" is empty"))),
                Some(_) => Err(invalid(format!("\"{key}\" is not a string"))),
                None => Err(invalid(format!("\"{key}\" is missing"))),
            }
        };
        let access_token = required("access_token")?;
        let refresh_token = required("refresh_token")?;
        let token_type = required("token_type")?;

        // JS: `!expiry_date || typeof expiry_date !== 'number'` fails; JSON has no NaN, so truthy = non-zero.
        let expiry_date = match obj.get("expiry_date") {
            Some(Value::Number(n)) => {
                let ms = n.as_i64().map(|v| v as f64).or_else(|| n.as_f64()).unwrap_or(0.0);
                if ms == 0.0 {
                    return Err(invalid("\"expiry_date\" is 0".into()));
                }
                // Saturating cast; fractional milliseconds are dropped, but a value in (-1, 1) must not
                // become 0: the file we write from it would be one that neither we nor the CLI accept.
                match ms as i64 {
                    0 if ms > 0.0 => 1,
                    0 => -1,
                    v => v,
                }
            }
            Some(_) => return Err(invalid("\"expiry_date\" is not a number".into())),
            None => return Err(invalid("\"expiry_date\" is missing".into())),
        };

        let resource_url = match obj.get("resource_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("\"resource_url\" is not a string".into())),
        };

        Ok(Credentials { access_token, refresh_token, token_type, resource_url, expiry_date })
    }

    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        now_ms < self.expiry_date.saturating_sub(TOKEN_REFRESH_BUFFER_MS)
    }

    pub fn api_base_url(&self) -> String {
        api_base_url(self.resource_url.as_deref())
    }
}

fn push_entry(out: &mut String, key: &str, json_value: &str) {
    out.push_str("\n  \"");
    out.push_str(key);
    out.push_str("\": ");
    out.push_str(json_value);
    out.push(',');
}

/// serde_json escapes exactly what `JSON.stringify` escapes for well-formed strings: `"`, `\`, the
/// short escapes `\b \f \n \r \t`, other controls as lowercase `\u00xx`; non-ASCII (U+2028 too) stays raw.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// §8: `resource_url || DashScope default`, `https://` prefixed when it has no scheme, `/v1` appended
/// when it does not end with it.
pub fn api_base_url(resource_url: Option<&str>) -> String {
    let base = match resource_url {
        Some(s) if !s.is_empty() => s,
        _ => DEFAULT_API_BASE_URL,
    };
    // `/^https?:\/\//i`
    let lower: String = base.chars().take(8).collect::<String>().to_ascii_lowercase();
    let mut url = if lower.starts_with("http://") || lower.starts_with("https://") {
        base.to_string()
    } else {
        format!("https://{base}")
    };
    // No trailing-slash normalisation: `host/` becomes `https://host//v1`, as in the CLI.
    if !url.ends_with("/v1") {
        url.push_str("/v1");
    }
    url
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Identity of one version of the file. The inode changes with every atomic replace and the length
/// with most edits, so a rewrite inside the file system's mtime granularity is still noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub mtime: SystemTime,
    pub len: u64,
    pub ino: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let ino = 0;
        FileStamp { mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), len: meta.len(), ino }
    }
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
        self.dir.join(CREDS_FILE_NAME)
    }

    /// `Ok(None)` when the file does not exist. Invalid content is an error (the file is never touched).
    pub fn load(&self) -> Result<Option<(Credentials, SystemTime)>> {
        Ok(self.load_stamped()?.map(|(c, s)| (c, s.mtime)))
    }

    /// Like `load`, with the stamp of exactly the version that was read (taken from the open handle).
    pub fn load_stamped(&self) -> Result<Option<(Credentials, FileStamp)>> {
        let path = self.path();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::creds_unreadable(&path, &e)),
        };
        let meta = file.metadata().map_err(|e| Error::creds_unreadable(&path, &e))?;
        if !meta.is_file() {
            // Opening a directory succeeds on Unix; reading it would fail with a less clear EISDIR.
            return Err(Error::CredsUnreadable {
                path,
                detail: "it is a directory or special file, not a regular file".into(),
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).map_err(|e| Error::creds_unreadable(&path, &e))?;
        let creds = Credentials::parse(&bytes, &path)?;
        Ok(Some((creds, FileStamp::of(&meta))))
    }

    /// mtime of the file, `Ok(None)` when it does not exist.
    pub fn mtime(&self) -> Result<Option<SystemTime>> {
        Ok(self.stamp()?.map(|s| s.mtime))
    }

    /// Stamp of the file, `Ok(None)` when it does not exist.
    pub fn stamp(&self) -> Result<Option<FileStamp>> {
        let path = self.path();
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(FileStamp::of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::creds_unreadable(&path, &e)),
        }
    }

    /// Atomic save: dir 0700, temp file 0600, rename; then fsync of the file and the dir in the background.
    /// Returns the new mtime.
    ///
    /// Why the fsync comes after the rename, off the caller's path: it costs ~1 ms on a real disk, more than
    /// the refresh's HTTP call, and it protects only against a power cut in that same millisecond, when the
    /// server has already retired the old refresh token (a login is lost either way). Other processes and a
    /// killed process see the whole new file from the moment of the rename. The CLI does not fsync at all.
    pub fn save(&self, creds: &Credentials, order: KeyOrder) -> Result<SystemTime> {
        Ok(self.save_stamped(creds, order)?.mtime)
    }

    /// `save`, returning the stamp of the file now in place.
    pub fn save_stamped(&self, creds: &Credentials, order: KeyOrder) -> Result<FileStamp> {
        let target = self.path();
        self.ensure_dir().map_err(|e| Error::creds_write(&target, &e))?;
        sweep_leftovers(&self.dir, SystemTime::now());
        let tmp = self.dir.join(format!("{CREDS_FILE_NAME}.{}.tmp", random_hex(6)));
        let mut displaced = None;
        let result = write_temp(&tmp, creds.to_cli_json(order).as_bytes()).and_then(|stamp| {
            displaced = hold_displaced(&target);
            rename_with_retry(&tmp, &target).map(|()| stamp)
        });
        match result {
            Ok((file, stamp)) => {
                make_durable(file, displaced, self.dir.clone());
                debug_log!("saved {} ({order:?} key order)", target.display());
                Ok(stamp)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(Error::creds_write(&target, &e))
            }
        }
    }

    /// Delete the file (logout). Missing is fine.
    pub fn remove(&self) -> Result<()> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::creds_write(&path, &e)),
        }
    }

    /// `mkdir -p` with 0700 for the directories we create; an existing directory keeps its mode.
    fn ensure_dir(&self) -> io::Result<()> {
        match fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(io::Error::other(format!("{} exists and is not a directory", self.dir.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Remember which ancestors are missing so only those get their mode forced.
        let mut created = Vec::new();
        let mut cur = Some(self.dir.as_path());
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || fs::symlink_metadata(p).is_ok() {
                break;
            }
            created.push(p.to_path_buf());
            cur = p.parent();
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir)?;
        #[cfg(unix)]
        for dir in &created {
            // The umask may have taken bits away; the CLI's mode is exactly 0700.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        #[cfg(not(unix))]
        let _ = created;
        Ok(())
    }
}

/// fsync of a file just renamed into place, then of its directory (the rename itself), in the background.
/// Failures are logged: the file is already in place and complete for every reader. The version it replaced
/// (see [`hold_displaced`]) is closed there too, which frees it.
fn make_durable(file: File, displaced: Option<File>, dir: PathBuf) {
    crate::bridge::spawn_blocking_detached("qwen-fsync", move || {
        if let Err(e) = file.sync_all().and_then(|()| File::open(&dir)?.sync_all()) {
            debug_log!("fsync after saving in {} failed: {e}", dir.display());
        }
        drop(displaced);
    });
}

/// The file a rename is about to replace, held open across it. A rename over a file frees the old version's
/// data inside the call unless something still has it open; on ext4 that freeing was ~100 µs of a ~150 µs
/// rename, on the path of every refresh. Held, it is freed when the background task closes it. Unix only:
/// elsewhere an open file may make the replacing rename fail.
#[cfg(unix)]
fn hold_displaced(target: &Path) -> Option<File> {
    File::open(target).ok()
}

#[cfg(not(unix))]
fn hold_displaced(_target: &Path) -> Option<File> {
    None
}

/// Create `tmp` exclusively with mode 0600 and write it; returns the open file and the stamp it keeps after
/// the rename.
fn write_temp(tmp: &Path, bytes: &[u8]) -> io::Result<(File, FileStamp)> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(tmp)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    // rename keeps inode and mtime, so this is the stamp of the file once it is in place.
    let stamp = FileStamp::of(&file.metadata()?);
    Ok((file, stamp))
}

/// The CLI's `renameWithRetry`: 3 attempts, 50 ms apart, for the transient errors Windows gives.
fn rename_with_retry(from: &Path, to: &Path) -> io::Result<()> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < ATTEMPTS
                    && matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ResourceBusy) =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Leftovers older than this belong to a process that died mid-write: no save or lock break takes a minute.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Remove what a process killed at the wrong moment leaves behind (best effort): temp files of a save
/// killed before its rename, and locks renamed aside by a breaker killed before its unlink. Only names
/// of exactly those shapes (ours and the CLI's), and only when their mtime is more than `LEFTOVER_AGE`
/// away from `now` in either direction (a clock set back must not keep them forever).
pub fn sweep_leftovers(dir: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_leftover_name(name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            continue;
        }
        let Ok(mtime) = meta.modified() else { continue };
        let age = now.duration_since(mtime).unwrap_or_else(|e| e.duration());
        if age > LEFTOVER_AGE && fs::remove_file(entry.path()).is_ok() {
            debug_log!("removed leftover {}", entry.path().display());
        }
    }
}

/// `oauth_creds.json.<12 lowercase hex>.tmp` (our temp files and the CLI's `atomicWriteFile`) or
/// `oauth_creds.lock.stale.<uuid>` (a stale lock renamed aside by us or the CLI).
pub fn is_leftover_name(name: &str) -> bool {
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(mid) =
        name.strip_prefix(CREDS_FILE_NAME).and_then(|r| r.strip_prefix('.')).and_then(|r| r.strip_suffix(".tmp"))
    {
        return mid.len() == 12 && lower_hex(mid);
    }
    if let Some(id) = name.strip_prefix("oauth_creds.lock.stale.") {
        // 8-4-4-4-12 lowercase hex, as `crypto.randomUUID()` and `lock::uuid_v4` write it.
        let groups: Vec<&str> = id.split('-').collect();
        return groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| lower_hex(g));
    }
    false
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(resource_url: Option<&str>) -> Credentials {
        Credentials {
            access_token: "tok-access-1".into(),
            refresh_token: "tok-refresh-1".into(),
            token_type: "Bearer".into(),
            resource_url: resource_url.map(Into::into),
            expiry_date: 1764876220290,
        }
    }

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qwen-creds-test-{name}-{}", random_hex(6)));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    // Expected strings were produced by node: JSON.stringify({...}, null, 2) with the CLI's key orders.
    #[test]
    fn device_flow_order_matches_json_stringify() {
        let expected = "{\n  \"access_token\": \"tok-access-1\",\n  \"refresh_token\": \"tok-refresh-1\",\n  \"token_type\": \"Bearer\",\n  \"resource_url\": \"portal.qwen.ai\",\n  \"expiry_date\": 1764876220290\n}";
        assert_eq!(sample(Some("portal.qwen.ai")).to_cli_json(KeyOrder::DeviceFlow), expected);
    }

    #[test]
    fn refresh_order_without_resource_url_matches_json_stringify() {
        let expected = "{\n  \"access_token\": \"tok-access-1\",\n  \"token_type\": \"Bearer\",\n  \"refresh_token\": \"tok-refresh-1\",\n  \"expiry_date\": 1764876220290\n}";
        assert_eq!(sample(None).to_cli_json(KeyOrder::Refresh), expected);
    }

    #[test]
    fn refresh_order_with_resource_url() {
        let expected = "{\n  \"access_token\": \"tok-access-1\",\n  \"token_type\": \"Bearer\",\n  \"refresh_token\": \"tok-refresh-1\",\n  \"resource_url\": \"portal.qwen.ai\",\n  \"expiry_date\": 1764876220290\n}";
        assert_eq!(sample(Some("portal.qwen.ai")).to_cli_json(KeyOrder::Refresh), expected);
    }

    #[test]
    fn string_escaping_matches_json_stringify() {
        let mut c = sample(Some("https://x.test/"));
        c.access_token = "a\u{1}\u{1f}\"\\/\n\r\t\u{8}\u{c}\u{2028}\u{2029}é😀\u{7f}<>&".into();
        c.refresh_token = "r".into();
        c.expiry_date = 1;
        // node: "a\\u0001\\u001f\\\"\\\\/\\n\\r\\t\\b\\f" then U+2028, U+2029, é, 😀, DEL raw.
        let expected = "{\n  \"access_token\": \"a\\u0001\\u001f\\\"\\\\/\\n\\r\\t\\b\\f\u{2028}\u{2029}é😀\u{7f}<>&\",\n  \"refresh_token\": \"r\",\n  \"token_type\": \"Bearer\",\n  \"resource_url\": \"https://x.test/\",\n  \"expiry_date\": 1\n}";
        assert_eq!(c.to_cli_json(KeyOrder::DeviceFlow), expected);
        // And it reads back to the same value.
        assert_eq!(Credentials::parse(expected.as_bytes(), Path::new("x")).unwrap(), c);
    }

    #[test]
    fn parse_reads_cli_file_and_ignores_extra_keys() {
        let text = r#"{"access_token":"a","token_type":"Bearer","refresh_token":"r","resource_url":"portal.qwen.ai","expiry_date":1764876220290,"scope":"x"}"#;
        let c = Credentials::parse(text.as_bytes(), Path::new("/f")).unwrap();
        assert_eq!(c.access_token, "a");
        assert_eq!(c.refresh_token, "r");
        assert_eq!(c.resource_url.as_deref(), Some("portal.qwen.ai"));
        assert_eq!(c.expiry_date, 1764876220290);
    }

    #[test]
    fn validation_table() {
        let ok = |s: &str| Credentials::parse(s.as_bytes(), Path::new("/q/oauth_creds.json"));
        let base = r#""access_token":"a","refresh_token":"r","token_type":"Bearer""#;
        // (json, accepted, part of the reason)
        let cases: Vec<(String, bool, &str)> = vec![
            (format!("{{{base},\"expiry_date\":5}}"), true, ""),
            (format!("{{{base},\"expiry_date\":1.7e12}}"), true, ""),
            (format!("{{{base},\"expiry_date\":1764876220290.5}}"), true, ""),
            (format!("{{{base},\"expiry_date\":-1}}"), true, ""),
            (format!("{{{base},\"expiry_date\":5,\"resource_url\":null}}"), true, ""),
            (format!("{{{base},\"expiry_date\":0}}"), false, "expiry_date"),
            (format!("{{{base},\"expiry_date\":0.0}}"), false, "expiry_date"),
            (format!("{{{base},\"expiry_date\":\"5\"}}"), false, "expiry_date"),
            (format!("{{{base},\"expiry_date\":null}}"), false, "expiry_date"),
            (format!("{{{base}}}"), false, "expiry_date"),
            (format!("{{{base},\"expiry_date\":5,\"resource_url\":3}}"), false, "resource_url"),
            (r#"{"refresh_token":"r","token_type":"Bearer","expiry_date":5}"#.into(), false, "access_token"),
            (
                r#"{"access_token":"","refresh_token":"r","token_type":"Bearer","expiry_date":5}"#.into(),
                false,
                "access_token",
            ),
            (
                r#"{"access_token":"a","refresh_token":7,"token_type":"Bearer","expiry_date":5}"#.into(),
                false,
                "refresh_token",
            ),
            (
                r#"{"access_token":"a","refresh_token":"r","token_type":null,"expiry_date":5}"#.into(),
                false,
                "token_type",
            ),
            ("[]".into(), false, "object"),
            ("null".into(), false, "object"),
            ("".into(), false, "empty"),
            ("  \n".into(), false, "empty"),
            (r#"{"access_token":"secret-value-xyz","refresh_tok"#.into(), false, "JSON"),
            (format!("{{{base},\"expiry_date\":5}} x"), false, "JSON"),
        ];
        for (json, accepted, reason) in cases {
            match ok(&json) {
                Ok(_) => assert!(accepted, "accepted but should not be: {json}"),
                Err(e) => {
                    assert!(!accepted, "refused but should be accepted: {json}: {e}");
                    assert_eq!(e.code(), "E_CREDS_INVALID");
                    let msg = e.to_string();
                    assert!(msg.contains(reason), "{json}: {msg}");
                    assert!(msg.contains("/q/oauth_creds.json"), "{msg}");
                    assert!(!msg.contains("secret-value-xyz"), "token value leaked: {msg}");
                }
            }
        }
        assert_eq!(ok(&format!("{{{base},\"expiry_date\":1764876220290.9}}")).unwrap().expiry_date, 1764876220290);
        // Found by fuzzing (creds_parse): a truthy fraction must stay truthy, so what we write back parses.
        for (json, ms) in [("0.2", 1), ("-0.5", -1), ("5e-324", 1)] {
            let c = ok(&format!("{{{base},\"expiry_date\":{json}}}")).unwrap();
            assert_eq!(c.expiry_date, ms, "{json}");
            let again = Credentials::parse(c.to_cli_json(KeyOrder::Refresh).as_bytes(), Path::new("x"));
            assert_eq!(again.unwrap(), c);
        }
    }

    #[test]
    fn api_base_url_table() {
        let cases = [
            (None, "https://dashscope.aliyuncs.com/compatible-mode/v1"),
            (Some(""), "https://dashscope.aliyuncs.com/compatible-mode/v1"),
            (Some("portal.qwen.ai"), "https://portal.qwen.ai/v1"),
            (Some("portal.qwen.ai/"), "https://portal.qwen.ai//v1"),
            (Some("portal.qwen.ai/v1"), "https://portal.qwen.ai/v1"),
            (Some("https://portal.qwen.ai"), "https://portal.qwen.ai/v1"),
            (Some("http://127.0.0.1:8080"), "http://127.0.0.1:8080/v1"),
            (Some("HTTPS://Host.Example/v1"), "HTTPS://Host.Example/v1"),
            (Some("HttP://h"), "HttP://h/v1"),
            (Some("httpx.example"), "https://httpx.example/v1"),
            (Some("ftp://h"), "https://ftp://h/v1"),
            (Some("h/V1"), "https://h/V1/v1"),
        ];
        for (input, expected) in cases {
            assert_eq!(api_base_url(input), expected, "{input:?}");
        }
    }

    #[test]
    fn load_missing_is_none_and_mtime_none() {
        let d = tmp_dir("missing");
        let store = CredentialStore::new(d.join("sub"));
        assert!(store.load().unwrap().is_none());
        assert!(store.mtime().unwrap().is_none());
        store.remove().unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn save_creates_dir_0700_file_0600_and_round_trips() {
        let d = tmp_dir("save");
        let home = d.join("a").join("b");
        let store = CredentialStore::new(home.clone());
        let c = sample(Some("portal.qwen.ai"));
        let mtime = store.save(&c, KeyOrder::DeviceFlow).unwrap();
        assert_eq!(fs::read_to_string(store.path()).unwrap(), c.to_cli_json(KeyOrder::DeviceFlow));
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&d.join("a")), 0o700);
        let (loaded, loaded_mtime) = store.load().unwrap().unwrap();
        assert_eq!(loaded, c);
        assert_eq!(loaded_mtime, mtime);
        assert_eq!(store.mtime().unwrap(), Some(mtime));
        // Nothing but the file itself is left behind.
        let names: Vec<_> = fs::read_dir(&home).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CREDS_FILE_NAME)]);
        fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn existing_dir_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp_dir("existing");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        CredentialStore::new(d.clone()).save(&sample(None), KeyOrder::Refresh).unwrap();
        assert_eq!(mode(&d), 0o755);
        fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn save_replaces_existing_file_atomically() {
        let d = tmp_dir("replace");
        let store = CredentialStore::new(d.clone());
        // An existing file with loose permissions, as an editor might leave it.
        fs::write(store.path(), "old").unwrap();
        let ino_before = store.stamp().unwrap().unwrap().ino;
        let c = sample(None);
        let stamp = store.save_stamped(&c, KeyOrder::Refresh).unwrap();
        assert_eq!(fs::read_to_string(store.path()).unwrap(), c.to_cli_json(KeyOrder::Refresh));
        assert_eq!(mode(&store.path()), 0o600);
        assert_ne!(stamp.ino, ino_before, "replaced by rename, not rewritten in place");
        assert_eq!(store.stamp().unwrap(), Some(stamp));
        fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_held_displaced_file_is_the_version_the_rename_replaces() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let d = tmp_dir("displaced");
        let target = d.join(CREDS_FILE_NAME);
        assert!(hold_displaced(&target).is_none(), "nothing to hold before the first save");
        fs::write(&target, "old version").unwrap();
        let mut held = hold_displaced(&target).expect("the current version is held");
        let tmp = d.join("next.tmp");
        fs::write(&tmp, "new version").unwrap();
        rename_with_retry(&tmp, &target).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new version");
        // Still open, unlinked: the old version's data is freed only when this handle closes.
        let meta = held.metadata().unwrap();
        assert_eq!(meta.nlink(), 0);
        assert_ne!(meta.ino(), fs::metadata(&target).unwrap().ino());
        let mut old = String::new();
        held.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old version");
        drop(held);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "only the new version is left in the directory");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn save_fails_cleanly_when_home_is_a_file() {
        let d = tmp_dir("homefile");
        let home = d.join("qwen");
        fs::write(&home, "not a dir").unwrap();
        let store = CredentialStore::new(home.clone());
        let e = store.save(&sample(None), KeyOrder::Refresh).unwrap_err();
        assert_eq!(e.code(), "E_CREDS_WRITE");
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(fs::read_to_string(&home).unwrap(), "not a dir");
        // Reading through a file path is "unreadable", not "missing".
        assert_eq!(store.load().unwrap_err().code(), "E_CREDS_UNREADABLE");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn failed_rename_leaves_target_and_no_temp_file() {
        let d = tmp_dir("renamefail");
        let store = CredentialStore::new(d.clone());
        // A non-empty directory where the file should be: rename fails, nothing else changes.
        fs::create_dir(store.path()).unwrap();
        fs::write(store.path().join("keep"), "x").unwrap();
        let e = store.save(&sample(None), KeyOrder::Refresh).unwrap_err();
        assert_eq!(e.code(), "E_CREDS_WRITE");
        assert_eq!(fs::read_to_string(store.path().join("keep")).unwrap(), "x");
        let leftovers: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // And a directory in place of the file is reported as unreadable, not as missing.
        let e = store.load().unwrap_err();
        assert_eq!(e.code(), "E_CREDS_UNREADABLE");
        assert!(e.to_string().contains(&store.path().display().to_string()));
        fs::remove_dir_all(d).unwrap();
    }

    /// An immutable directory (chattr +i) refuses writes even to root, which ignores mode bits.
    #[cfg(target_os = "linux")]
    #[test]
    fn failed_save_over_existing_file_keeps_old_content() {
        let d = tmp_dir("immutable");
        let store = CredentialStore::new(d.clone());
        let old = sample(Some("portal.qwen.ai"));
        store.save(&old, KeyOrder::DeviceFlow).unwrap();
        let chattr = |flag: &str| {
            std::process::Command::new("chattr").arg(flag).arg(&d).status().map(|s| s.success()).unwrap_or(false)
        };
        if !chattr("+i") {
            eprintln!("chattr +i unavailable here; skipping");
            fs::remove_dir_all(d).unwrap();
            return;
        }
        let mut new = sample(None);
        new.access_token = "tok-access-2".into();
        let result = store.save(&new, KeyOrder::Refresh);
        assert!(chattr("-i"));
        let e = result.unwrap_err();
        assert_eq!(e.code(), "E_CREDS_WRITE");
        assert!(e.to_string().contains("was not changed"), "{e}");
        assert_eq!(fs::read_to_string(store.path()).unwrap(), old.to_cli_json(KeyOrder::DeviceFlow));
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn invalid_file_is_reported_and_left_untouched() {
        let d = tmp_dir("invalid");
        let store = CredentialStore::new(d.clone());
        let truncated = &sample(None).to_cli_json(KeyOrder::Refresh)[..40];
        fs::write(store.path(), truncated).unwrap();
        let before = fs::metadata(store.path()).unwrap().modified().unwrap();
        let e = store.load().unwrap_err();
        assert_eq!(e.code(), "E_CREDS_INVALID");
        assert!(!e.to_string().contains("tok-access-1"));
        assert_eq!(fs::read_to_string(store.path()).unwrap(), truncated);
        assert_eq!(fs::metadata(store.path()).unwrap().modified().unwrap(), before);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn remove_deletes_and_tolerates_missing() {
        let d = tmp_dir("remove");
        let store = CredentialStore::new(d.clone());
        store.save(&sample(None), KeyOrder::Refresh).unwrap();
        store.remove().unwrap();
        assert!(!store.path().exists());
        store.remove().unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn leftover_names_are_exactly_ours_and_the_clis() {
        for yes in ["oauth_creds.json.0123456789ab.tmp", "oauth_creds.lock.stale.0f1e2d3c-4b5a-4697-8877-665544332211"]
        {
            assert!(is_leftover_name(yes), "{yes}");
        }
        for no in [
            "oauth_creds.json",
            "oauth_creds.lock",
            "oauth_creds.json.tmp",
            "oauth_creds.json.0123456789AB.tmp",
            "oauth_creds.json.0123456789a.tmp",
            "oauth_creds.json.0123456789abc.tmp",
            "oauth_creds.json.0123456789ab.tmp.bak",
            "oauth_creds.json.tmp.1234.0f1e2d3c-4b5a-4697-8877-665544332211",
            "xoauth_creds.json.0123456789ab.tmp",
            "oauth_creds.lock.stale.",
            "oauth_creds.lock.stale.0f1e2d3c-4b5a-4697-8877-66554433221",
            "oauth_creds.lock.stale.0f1e2d3c-4b5a-4697-8877-665544332211x",
            "opencode_qwen_pacing.json",
        ] {
            assert!(!is_leftover_name(no), "{no}");
        }
    }

    #[test]
    fn save_sweeps_old_leftovers_only() {
        let d = tmp_dir("sweep");
        let store = CredentialStore::new(d.clone());
        let set_mtime = |name: &str, t: SystemTime| {
            fs::write(d.join(name), "x").unwrap();
            File::options().write(true).open(d.join(name)).unwrap().set_modified(t).unwrap();
        };
        let now = SystemTime::now();
        let old = now - Duration::from_secs(120);
        let future = now + Duration::from_secs(3600);
        set_mtime("oauth_creds.json.aaaaaaaaaaaa.tmp", old);
        set_mtime("oauth_creds.json.bbbbbbbbbbbb.tmp", future);
        set_mtime("oauth_creds.lock.stale.0f1e2d3c-4b5a-4697-8877-665544332211", old);
        // Young: maybe a save in progress in another process.
        set_mtime("oauth_creds.json.cccccccccccc.tmp", now);
        // Old, but not of our shapes.
        set_mtime("oauth_creds.json.mine.tmp", old);
        set_mtime("notes.txt", old);
        store.save(&sample(None), KeyOrder::Refresh).unwrap();
        let mut names: Vec<String> =
            fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            ["notes.txt", "oauth_creds.json", "oauth_creds.json.cccccccccccc.tmp", "oauth_creds.json.mine.tmp"]
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let c = sample(Some("portal.qwen.ai"));
        for text in [format!("{c:?}"), format!("{c:#?}"), format!("{:?}", Some(&c))] {
            assert!(!text.contains("tok-access-1"), "{text}");
            assert!(!text.contains("tok-refresh-1"), "{text}");
            assert!(text.contains("[redacted]") && text.contains("portal.qwen.ai"), "{text}");
        }
    }

    #[test]
    fn validity_uses_30s_buffer() {
        let c = sample(None);
        assert!(c.is_valid_at(c.expiry_date - 30_001));
        assert!(!c.is_valid_at(c.expiry_date - 30_000));
    }
}
