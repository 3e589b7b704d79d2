//! Where a token may go and what goes with it: `pipeline::trust::check` on arbitrary URLs (also as derived
//! from an arbitrary `resource_url` by `credentials::api_base_url`), and `pipeline::headers::build` on
//! arbitrary incoming headers.
//!
//! Checks: no panic; an accepted URL is http(s) without credentials, plain http only to loopback, and its
//! host is loopback, under qwen.ai / aliyuncs.com, or one the user listed (an independent re-check); a
//! refusal never echoes a query, fragment or password; the built headers carry exactly one Authorization (ours),
//! one User-Agent, one auth type (ours), and none of the headers we drop.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use opencode_qwen_oauth::config::{RawOptions, Settings};
use opencode_qwen_oauth::credentials::api_base_url;
use opencode_qwen_oauth::pipeline::{headers, trust};
use reqwest::Url;

static SETTINGS: LazyLock<Settings> = LazyLock::new(|| {
    let mut s = Settings::resolve(&RawOptions::default()).expect("default settings");
    s.trusted_hosts = vec!["api.example.com".into(), ".corp.example".into()];
    s
});

const DROPPED: &[&str] = &["x-session-affinity", "openai-beta", "x-api-key", "content-length", "host", "accept-encoding"];

fn trusted_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let under = |d: &str| h == d || h.ends_with(&format!(".{d}"));
    under("qwen.ai") || under("aliyuncs.com") || h == "api.example.com" || under("corp.example")
}

fn loopback(url: &Url) -> bool {
    let Some(h) = url.host_str() else { return false };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => h.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

fn check_url(raw: &str) {
    match trust::check(raw, &SETTINGS) {
        Ok(()) => {
            let url = Url::parse(raw).expect("an accepted URL parses");
            assert!(matches!(url.scheme(), "http" | "https"), "{raw}");
            assert!(url.username().is_empty() && url.password().is_none(), "{raw}");
            let lb = loopback(&url);
            assert!(lb || url.scheme() == "https", "plain http off loopback: {raw}");
            assert!(lb || trusted_host(url.host_str().unwrap_or("")), "untrusted host accepted: {raw}");
        }
        Err(e) => assert!(matches!(e.code(), "E_UNTRUSTED_HOST" | "E_INVALID_ARG"), "{e:?}"),
    }
}

/// A query, a fragment or a password (places where a key or token may sit) never shows in a refusal.
fn check_hidden_parts(raw: &str) {
    // The URL parser drops tabs and newlines anywhere; skip inputs that could spell a marker themselves.
    let squeezed: String = raw.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    if squeezed.to_ascii_uppercase().contains("QX") || squeezed.contains('%') {
        return;
    }
    let mut variants = vec![format!("{raw}?token=QXQUERYQX#QXFRAGQX")];
    if let Ok(mut url) = Url::parse(raw) {
        if url.set_password(Some("QXPASSQX")).is_ok() {
            variants.push(url.to_string());
        }
    }
    for v in variants {
        if let Err(e) = trust::check(&v, &SETTINGS) {
            let msg = e.to_string();
            for marker in ["QXQUERYQX", "QXFRAGQX", "QXPASSQX"] {
                assert!(!msg.contains(marker), "hidden part echoed: {msg}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let first = parts.next().unwrap_or("");
    check_url(first);
    check_url(&api_base_url(Some(first)));
    check_hidden_parts(first);

    let incoming: Vec<(String, String)> = parts
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let oauth = data.first().is_some_and(|b| b & 1 == 1);
    let kind = if oauth { headers::AuthKind::OAuth } else { headers::AuthKind::ApiKey };
    let out = headers::build(&incoming, "TOKEN-VALUE", kind, "0.24.4");
    let count = |name: &str| out.iter().filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).count();
    assert_eq!(count("authorization"), 1);
    assert!(out.iter().any(|(k, v)| k == "Authorization" && v == "Bearer TOKEN-VALUE"));
    assert_eq!(count("user-agent"), 1);
    assert_eq!(count("x-dashscope-authtype"), 1);
    assert!(out.iter().any(|(k, v)| k == "X-DashScope-AuthType" && v == kind.header_value()));
    for d in DROPPED {
        assert_eq!(count(d), 0, "{d} forwarded");
    }
});
