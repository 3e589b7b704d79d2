//! Where a token may be sent: https under qwen.ai / aliyuncs.com, hosts the user lists, loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use crate::config::Settings;
use crate::error::{Error, Result};

/// Domains (and their subdomains) the Qwen API lives under.
const QWEN_DOMAINS: &[&str] = &["qwen.ai", "aliyuncs.com"];

/// The parsed URL when a token may be sent to it, else `Error::UntrustedHost` (or `InvalidArg` for a
/// malformed URL).
pub fn check(url: &str, settings: &Settings) -> Result<Url> {
    let parsed = Url::parse(url).map_err(|e| Error::invalid_arg("request URL", format!("{}: {e}", redacted(url))))?;
    if is_trusted(&parsed, &settings.trusted_hosts) {
        Ok(parsed)
    } else {
        Err(Error::UntrustedHost { url: redacted(url) })
    }
}

/// The URL as it may appear in messages: no query, fragment or userinfo.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or(url).to_string(),
    }
}

fn is_trusted(url: &Url, trusted_hosts: &[String]) -> bool {
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return false,
    };
    // Credentials in the URL would be sent as Basic auth next to our token; refuse such URLs outright.
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    let Some(host) = url.host_str() else { return false };
    // IPv6 hosts come bracketed; the url crate already lower-cases and canonicalises IP literals.
    let host = normalize(host.trim_start_matches('[').trim_end_matches(']'));
    // Loopback never leaves the machine, so plain http is fine there (local proxies, the test mock).
    let loopback = match host.parse::<IpAddr>() {
        Ok(ip) => is_loopback(ip),
        Err(_) => host == "localhost",
    };
    if loopback {
        return true;
    }
    if !https {
        return false;
    }
    QWEN_DOMAINS.iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
        || trusted_hosts.iter().any(|entry| matches_entry(&host, entry))
}

/// Lower case without a trailing root dot (`QWEN.ai.` is `qwen.ai`).
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `example.com` matches exactly; `.example.com` matches any subdomain (and the bare domain).
fn matches_entry(host: &str, entry: &str) -> bool {
    let entry = entry.trim();
    let entry = entry.trim_start_matches('[').trim_end_matches(']');
    if let Some(suffix) = entry.strip_prefix('.') {
        let suffix = normalize(suffix);
        !suffix.is_empty() && (host == suffix || host.ends_with(&format!(".{suffix}")))
    } else {
        let entry = normalize(entry);
        !entry.is_empty() && host == entry
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped().is_some_and(|v4: Ipv4Addr| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawOptions, Settings};

    fn settings(trusted: &[&str]) -> Settings {
        let mut s = Settings::resolve(&RawOptions::default()).unwrap();
        s.trusted_hosts = trusted.iter().map(|s| s.to_string()).collect();
        s
    }

    fn ok(url: &str, trusted: &[&str]) -> bool {
        check(url, &settings(trusted)).is_ok()
    }

    #[test]
    fn qwen_hosts_over_https_are_trusted() {
        assert!(ok("https://portal.qwen.ai/v1/chat/completions", &[]));
        assert!(ok("https://qwen.ai/v1", &[]));
        assert!(ok("https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions", &[]));
        assert!(ok("https://coding.dashscope.aliyuncs.com/v1", &[]));
        assert!(ok("https://PORTAL.Qwen.AI./v1", &[]));
        assert!(ok("https://portal.qwen.ai:8443/v1", &[]));
    }

    #[test]
    fn qwen_hosts_over_http_are_refused() {
        let e = check("http://portal.qwen.ai/v1", &settings(&[])).unwrap_err();
        assert_eq!(e.code(), "E_UNTRUSTED_HOST");
    }

    #[test]
    fn lookalike_hosts_are_refused() {
        for url in [
            "https://evilqwen.ai/v1",
            "https://qwen.ai.evil.com/v1",
            "https://notaliyuncs.com/v1",
            "https://example.com/qwen.ai",
            "https://portal.qwen.ai@evil.com/v1",
            "https://user:pw@portal.qwen.ai/v1",
            "ftp://portal.qwen.ai/v1",
            "https://10.0.0.1/v1",
        ] {
            assert!(!ok(url, &[]), "{url}");
        }
    }

    #[test]
    fn loopback_over_http_and_https() {
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://127.1.2.3/v1",
            "https://127.0.0.1/v1",
            "http://[::1]:9000/v1",
            "http://localhost:3000/v1",
            "http://LOCALHOST./v1",
            "http://[::ffff:127.0.0.1]/v1",
        ] {
            assert!(ok(url, &[]), "{url}");
        }
        assert!(!ok("http://128.0.0.1/v1", &[]));
        assert!(!ok("http://localhost.evil.com/v1", &[]));
    }

    #[test]
    fn user_listed_hosts_exact_and_suffix() {
        assert!(ok("https://api.example.com/v1", &["api.example.com"]));
        assert!(!ok("https://x.api.example.com/v1", &["api.example.com"]));
        assert!(ok("https://x.example.com/v1", &[".example.com"]));
        assert!(ok("https://example.com/v1", &[".example.com"]));
        assert!(!ok("https://badexample.com/v1", &[".example.com"]));
        assert!(ok("https://10.0.0.1/v1", &["10.0.0.1"]));
        assert!(ok("https://[fd00::1]/v1", &["[fd00::1]"]));
        // A listed host still needs https: the token must not travel in clear text.
        assert!(!ok("http://api.example.com/v1", &["api.example.com"]));
        assert!(!ok("https://example.com/v1", &["", "."]));
    }

    #[test]
    fn error_names_the_url_without_query() {
        let e = check("https://evil.test/v1/chat?key=secret#x", &settings(&[])).unwrap_err();
        assert_eq!(e, Error::UntrustedHost { url: "https://evil.test/v1/chat".into() });
        assert_eq!(check("not a url", &settings(&[])).unwrap_err().code(), "E_INVALID_ARG");
    }
}
