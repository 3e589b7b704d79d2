//! Settings: plugin options (from OpenCode's `["opencode-qwen-oauth", {...}]` or the JS API) over
//! environment variables over defaults. Resolved once per client; everything else takes a `&Settings`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Default OAuth server, as the Qwen Code CLI uses it.
pub const DEFAULT_OAUTH_BASE_URL: &str = "https://chat.qwen.ai";
/// Version of the official CLI whose headers we send (`QwenCode/<ver> (...)`).
pub const DEFAULT_CLI_VERSION: &str = "0.24.4";

/// Raw options as they come from JS; every field optional. Field names are the JS camelCase ones.
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    pub qwen_home: Option<String>,
    pub oauth_base_url: Option<String>,
    pub cli_version: Option<String>,
    pub min_interval_ms: Option<f64>,
    pub jitter_min_ms: Option<f64>,
    pub jitter_max_ms: Option<f64>,
    pub max_retries: Option<f64>,
    pub max_wait_ms: Option<f64>,
    pub debug: Option<bool>,
    pub trusted_hosts: Option<Vec<String>>,
    pub align_request_body: Option<bool>,
    pub daily_limit: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Directory of `oauth_creds.json`, `oauth_creds.lock` and our pacing state. Private, with the pacing file
    /// joined from it once, so the two can never point into different homes.
    qwen_home: PathBuf,
    /// OAuth server base, no trailing slash.
    pub oauth_base_url: String,
    pub cli_version: String,
    /// Minimum gap between the starts of two requests, machine-wide. 0 disables pacing.
    pub min_interval_ms: u64,
    /// Extra uniform random gap added to each interval: [jitter_min_ms, jitter_max_ms].
    pub jitter_min_ms: u64,
    pub jitter_max_ms: u64,
    /// Retries after a 429 / 5xx / transport error before the first byte.
    pub max_retries: u32,
    /// Cap on any single wait before a retry.
    pub max_wait_ms: u64,
    pub debug: bool,
    /// Extra hosts (exact or `.suffix`) a token may be sent to, beyond qwen.ai / aliyuncs.com / loopback.
    pub trusted_hosts: Vec<String>,
    /// Rewrite chat-completions bodies the way the Qwen Code CLI sends them (`pipeline::body`).
    pub align_request_body: bool,
    /// Requests a day the quota view warns against (at 80 % and 95 %); 0 turns the warnings off.
    pub daily_limit: u64,
    /// `qwen_home/opencode_qwen_pacing.json`, joined once: every request counts itself against it.
    pacing_file: PathBuf,
}

/// Environment lookup, injectable so tests need not mutate the process environment.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

pub struct ProcessEnv;
impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Settings {
    pub fn resolve(raw: &RawOptions) -> Result<Settings> {
        Self::resolve_with(raw, &ProcessEnv)
    }

    pub fn resolve_with(raw: &RawOptions, env: &dyn Env) -> Result<Settings> {
        let qwen_home = match raw.qwen_home.clone().or_else(|| env.var("QWEN_HOME")) {
            Some(p) => expand_home(&p, env),
            None => default_qwen_home(),
        };
        let oauth_base_url = raw
            .oauth_base_url
            .clone()
            .or_else(|| env.var("QWEN_OAUTH_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_OAUTH_BASE_URL.to_string());
        let oauth_base_url = oauth_base_url.trim_end_matches('/').to_string();
        if !(oauth_base_url.starts_with("https://") || oauth_base_url.starts_with("http://")) {
            return Err(Error::invalid_arg(
                "oauthBaseUrl / QWEN_OAUTH_BASE_URL",
                format!("{oauth_base_url:?} must start with https:// (or http:// for a local test server)"),
            ));
        }
        let cli_version = raw
            .cli_version
            .clone()
            .or_else(|| env.var("QWEN_CLI_VERSION"))
            .unwrap_or_else(|| DEFAULT_CLI_VERSION.to_string());
        if cli_version.is_empty() || cli_version.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::invalid_arg("cliVersion / QWEN_CLI_VERSION", "must be a plain version like 0.24.4"));
        }

        let num = |opt: Option<f64>, key: &str, name: &str, default: u64| -> Result<u64> {
            let v = match opt {
                Some(v) => Some(v),
                None => match env.var(key) {
                    Some(s) => Some(s.trim().parse::<f64>().map_err(|_| {
                        Error::invalid_arg(format!("{name} / {key}"), format!("{s:?} is not a number"))
                    })?),
                    None => None,
                },
            };
            match v {
                None => Ok(default),
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v as u64),
                Some(v) => Err(Error::invalid_arg(format!("{name} / {key}"), format!("{v} must be a number ≥ 0"))),
            }
        };
        let min_interval_ms = num(raw.min_interval_ms, "QWEN_PACING_INTERVAL_MS", "minIntervalMs", 1000)?;
        let jitter_min_ms = num(raw.jitter_min_ms, "QWEN_PACING_JITTER_MIN_MS", "jitterMinMs", 500)?;
        let jitter_max_ms = num(raw.jitter_max_ms, "QWEN_PACING_JITTER_MAX_MS", "jitterMaxMs", 1500)?;
        if jitter_max_ms < jitter_min_ms {
            return Err(Error::invalid_arg(
                "jitterMaxMs",
                format!("{jitter_max_ms} is below jitterMinMs {jitter_min_ms}"),
            ));
        }
        let max_retries = num(raw.max_retries, "QWEN_MAX_RETRIES", "maxRetries", 3)?.min(20) as u32;
        let max_wait_ms = num(raw.max_wait_ms, "QWEN_MAX_WAIT_MS", "maxWaitMs", 60_000)?;
        let daily_limit = num(raw.daily_limit, "QWEN_DAILY_LIMIT", "dailyLimit", crate::quota::DEFAULT_DAILY_LIMIT)?;
        let debug =
            raw.debug.unwrap_or_else(|| env.var("QWEN_OAUTH_DEBUG").map(|v| v != "0" && v != "false").unwrap_or(false));
        let align_request_body = raw
            .align_request_body
            .unwrap_or_else(|| env.var("QWEN_ALIGN_BODY").map(|v| v != "0" && v != "false").unwrap_or(true));
        let mut trusted_hosts = raw.trusted_hosts.clone().unwrap_or_default();
        if let Some(extra) = env.var("QWEN_TRUSTED_HOSTS") {
            trusted_hosts.extend(extra.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        }
        Ok(Settings {
            pacing_file: qwen_home.join("opencode_qwen_pacing.json"),
            qwen_home,
            oauth_base_url,
            cli_version,
            min_interval_ms,
            jitter_min_ms,
            jitter_max_ms,
            max_retries,
            max_wait_ms,
            debug,
            trusted_hosts,
            align_request_body,
            daily_limit,
        })
    }

    pub fn qwen_home(&self) -> &Path {
        &self.qwen_home
    }

    pub fn creds_path(&self) -> PathBuf {
        self.qwen_home.join("oauth_creds.json")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.qwen_home.join("oauth_creds.lock")
    }

    pub fn pacing_path(&self) -> &Path {
        &self.pacing_file
    }

    pub fn pacing_enabled(&self) -> bool {
        self.min_interval_ms > 0 || self.jitter_max_ms > 0
    }
}

/// `~/.qwen`, or `<tmp>/.qwen` when there is no home directory (as the CLI does).
pub fn default_qwen_home() -> PathBuf {
    dirs::home_dir().unwrap_or_else(std::env::temp_dir).join(".qwen")
}

fn expand_home(p: &str, env: &dyn Env) -> PathBuf {
    let home = || env.var("HOME").map(PathBuf::from).or_else(dirs::home_dir).unwrap_or_else(std::env::temp_dir);
    let path = if p == "~" {
        home()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(p)
    };
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir().map(|d| d.join(&path)).unwrap_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
    }

    #[test]
    fn defaults_match_the_seed() {
        let s = Settings::resolve_with(&RawOptions::default(), &MapEnv(HashMap::new())).unwrap();
        assert_eq!((s.min_interval_ms, s.jitter_min_ms, s.jitter_max_ms), (1000, 500, 1500));
        assert_eq!((s.max_retries, s.max_wait_ms), (3, 60_000));
        assert_eq!(s.daily_limit, 1000);
        assert_eq!(s.oauth_base_url, "https://chat.qwen.ai");
        assert!(s.qwen_home().ends_with(".qwen"));
    }

    #[test]
    fn options_beat_env_and_tilde_expands() {
        let env = MapEnv(HashMap::from([
            ("QWEN_HOME", "~/q"),
            ("HOME", "/h"),
            ("QWEN_PACING_INTERVAL_MS", "5"),
            ("QWEN_DAILY_LIMIT", "2000"),
        ]));
        let s = Settings::resolve_with(&RawOptions { min_interval_ms: Some(7.0), ..Default::default() }, &env).unwrap();
        assert_eq!(s.qwen_home(), Path::new("/h/q"));
        assert_eq!(s.min_interval_ms, 7);
        assert_eq!(s.daily_limit, 2000);
        let s = Settings::resolve_with(&RawOptions { daily_limit: Some(10.0), ..Default::default() }, &env).unwrap();
        assert_eq!(s.daily_limit, 10);
    }

    #[test]
    fn bad_values_are_refused() {
        let env = MapEnv(HashMap::from([("QWEN_MAX_RETRIES", "lots")]));
        let e = Settings::resolve_with(&RawOptions::default(), &env).unwrap_err();
        assert_eq!(e.code(), "E_INVALID_ARG");
        let e = Settings::resolve_with(
            &RawOptions { jitter_min_ms: Some(10.0), jitter_max_ms: Some(5.0), ..Default::default() },
            &MapEnv(HashMap::new()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("jitterMaxMs"));
    }

    #[test]
    fn body_alignment_is_on_by_default_and_switches_off_by_option_or_env() {
        let none = MapEnv(HashMap::new());
        assert!(Settings::resolve_with(&RawOptions::default(), &none).unwrap().align_request_body);
        let off = RawOptions { align_request_body: Some(false), ..Default::default() };
        assert!(!Settings::resolve_with(&off, &none).unwrap().align_request_body);
        for (v, on) in [("0", false), ("false", false), ("1", true)] {
            let env = MapEnv(HashMap::from([("QWEN_ALIGN_BODY", v)]));
            assert_eq!(Settings::resolve_with(&RawOptions::default(), &env).unwrap().align_request_body, on, "{v}");
        }
        // The option wins over the environment.
        let env = MapEnv(HashMap::from([("QWEN_ALIGN_BODY", "0")]));
        let on = RawOptions { align_request_body: Some(true), ..Default::default() };
        assert!(Settings::resolve_with(&on, &env).unwrap().align_request_body);
    }
}
