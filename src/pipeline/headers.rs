//! The headers the Qwen Code CLI sends, and the ones OpenCode adds that Qwen refuses.

/// Incoming headers we never forward: OpenCode's `x-session-affinity` and `OpenAI-Beta` (Qwen answers them
/// with 400), its `x-session-id` (the CLI never sends it; the session travels in the body's `metadata`),
/// any credential the caller set (we set our own), and framing headers the HTTP client owns.
/// `accept-encoding` goes too: our client does not decompress, so a compressed answer would reach the
/// caller as raw gzip bytes.
const DROPPED: &[&str] = &[
    "authorization",
    "x-session-affinity",
    "x-session-id",
    "openai-beta",
    "user-agent",
    "x-api-key",
    "content-length",
    "host",
    "accept-encoding",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "x-dashscope-useragent",
    "x-dashscope-cachecontrol",
    "x-dashscope-authtype",
];

/// How the request is authorised, which decides `X-DashScope-AuthType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    OAuth,
    ApiKey,
}

impl AuthKind {
    /// The CLI's `AuthType` enum value it sends as `X-DashScope-AuthType` (`auth-type.ts`): `qwen-oauth` for
    /// the OAuth login; `openai` for API keys, since the CLI's Coding Plan and DashScope presets are
    /// `protocol: "openai"` and all four key endpoints get its DashScope provider (and so these headers).
    pub fn header_value(self) -> &'static str {
        match self {
            AuthKind::OAuth => "qwen-oauth",
            AuthKind::ApiKey => "openai",
        }
    }
}

/// A line break or NUL: what no header name or value may hold, and what would split a joined header list.
/// Eight bytes at a time (every header of every request passes here): `str::contains` with a char set
/// decodes characters, and a byte loop cost ~6 instructions a byte.
pub fn breaks_line(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of x is zero (exact as a yes/no answer).
    let any_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut words = s.as_bytes().chunks_exact(8);
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if any_zero(x) | any_zero(x ^ (ONES * u64::from(b'\n'))) | any_zero(x ^ (ONES * u64::from(b'\r'))) {
            return true;
        }
    }
    words.remainder().iter().any(|b| matches!(b, b'\n' | b'\r' | 0))
}

/// `QwenCode/<version> (<platform>; <arch>)` with Node's names for the real OS and CPU.
pub fn user_agent(cli_version: &str) -> String {
    format!("QwenCode/{} ({}; {})", cli_version, node_platform(), node_arch())
}

/// `user_agent`, formatted once per version (one per process in practice) instead of on every request.
/// Shared, not copied: one request takes it twice.
fn cached_user_agent(cli_version: &str) -> std::sync::Arc<str> {
    static LAST: std::sync::Mutex<Option<(String, std::sync::Arc<str>)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match last.as_ref() {
        Some((version, ua)) if version == cli_version => ua.clone(),
        _ => {
            let ua: std::sync::Arc<str> = user_agent(cli_version).into();
            *last = Some((cli_version.to_string(), ua.clone()));
            ua
        }
    }
}

/// `process.platform` for this OS.
pub fn node_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

/// `process.arch` for this CPU.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The headers to send: the caller's, minus the dropped ones, plus the CLI's.
pub fn build(incoming: &[(String, String)], token: &str, kind: AuthKind, cli_version: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(incoming.len() + 6);
    each(incoming, token, kind, cli_version, |k, v| out.push((k.to_string(), v.to_string())));
    out
}

/// `build`, one header at a time and nothing collected: the runtime transport writes them straight into the
/// one string it hands to JS (a pair of `String`s per header was a dozen allocations per request).
pub fn each(
    incoming: &[(String, String)],
    token: &str,
    kind: AuthKind,
    cli_version: &str,
    mut f: impl FnMut(&str, &str),
) {
    let mut accept = false;
    for (k, v) in incoming {
        let name = k.trim();
        if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            continue;
        }
        accept |= name.eq_ignore_ascii_case("accept");
        f(k, v);
    }
    if !accept {
        f("Accept", "application/json");
    }
    let ua = cached_user_agent(cli_version);
    let mut bearer = String::with_capacity("Bearer ".len() + token.len());
    bearer.push_str("Bearer ");
    bearer.push_str(token);
    f("Authorization", &bearer);
    f("User-Agent", &ua);
    f("X-DashScope-CacheControl", "enable");
    f("X-DashScope-UserAgent", &ua);
    f("X-DashScope-AuthType", kind.header_value());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        h.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn breaks_line_finds_each_of_lf_cr_nul_anywhere() {
        for bad in ["a\nb", "\r", "x\0", "é\n", "Bearer tok\r\n"] {
            assert!(breaks_line(bad), "{bad:?}");
        }
        for good in ["", "application/json", "Bearer abc.def", "é中😀", "\t tab"] {
            assert!(!breaks_line(good), "{good:?}");
        }
        // Every position in and after the 8-byte words, beside bytes one bit away from the bad ones.
        const NEAR: [u8; 10] = [0x0b, 0x0e, 0x2a, 0x4a, 0x0c, 0x2d, 0x4d, 0x01, 0x20, 0x40];
        for len in 1..40 {
            for at in 0..len {
                for (byte, bad) in [(b'\n', true), (b'\r', true), (0, true)].into_iter().chain(NEAR.map(|b| (b, false)))
                {
                    let mut v = vec![b'a'; len];
                    v[at] = byte;
                    let text = String::from_utf8(v).expect("ASCII");
                    assert_eq!(breaks_line(&text), bad, "{byte:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn user_agent_uses_node_names() {
        let ua = user_agent("0.24.4");
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(ua, "QwenCode/0.24.4 (linux; x64)");
        #[cfg(all(target_os = "macos", target_arch = "aarch64"))]
        assert_eq!(ua, "QwenCode/0.24.4 (darwin; arm64)");
        #[cfg(all(target_os = "windows", target_arch = "x86_64"))]
        assert_eq!(ua, "QwenCode/0.24.4 (win32; x64)");
        assert!(ua.starts_with("QwenCode/0.24.4 ("), "{ua}");
        assert!(!ua.contains("macos") && !ua.contains("x86_64") && !ua.contains("aarch64"), "{ua}");
    }

    #[test]
    fn strips_refused_and_credential_headers_case_insensitively() {
        let incoming = pairs(&[
            ("x-session-affinity", "ses_1"),
            ("x-session-id", "ses_1"),
            ("OpenAI-Beta", "assistants=v2"),
            ("AUTHORIZATION", "Bearer placeholder"),
            ("x-api-key", "k"),
            ("User-Agent", "ai-sdk/openai-compatible"),
            ("content-length", "12"),
            ("Host", "example.com"),
            ("Accept-Encoding", "gzip"),
            ("X-DashScope-AuthType", "other"),
            ("Content-Type", "application/json"),
            ("x-custom", "kept"),
        ]);
        let h = build(&incoming, "tok", AuthKind::OAuth, "0.24.4");
        for gone in [
            "x-session-affinity",
            "x-session-id",
            "openai-beta",
            "x-api-key",
            "content-length",
            "host",
            "accept-encoding",
        ] {
            assert!(get(&h, gone).is_empty(), "{gone} still present");
        }
        assert_eq!(get(&h, "authorization"), vec!["Bearer tok"]);
        assert_eq!(get(&h, "user-agent"), vec![user_agent("0.24.4").as_str()]);
        assert_eq!(get(&h, "x-dashscope-useragent"), vec![user_agent("0.24.4").as_str()]);
        assert_eq!(get(&h, "x-dashscope-cachecontrol"), vec!["enable"]);
        assert_eq!(get(&h, "x-dashscope-authtype"), vec!["qwen-oauth"]);
        assert_eq!(get(&h, "content-type"), vec!["application/json"]);
        assert_eq!(get(&h, "x-custom"), vec!["kept"]);
        assert_eq!(get(&h, "accept"), vec!["application/json"]);
    }

    #[test]
    fn keeps_the_callers_accept() {
        let h = build(&pairs(&[("accept", "text/event-stream")]), "key", AuthKind::ApiKey, "1.0.0");
        assert_eq!(get(&h, "accept"), vec!["text/event-stream"]);
    }

    #[test]
    fn api_keys_get_the_cli_headers_of_its_openai_auth_type() {
        // What the CLI's DashScope provider sends for a Coding Plan / DashScope key: same UA pair and cache
        // control as OAuth, auth type "openai", the key as the bearer.
        let incoming =
            pairs(&[("Authorization", "Bearer opencode-oauth-dummy-key"), ("X-DashScope-AuthType", "qwen-oauth")]);
        let h = build(&incoming, "sk-sp-key", AuthKind::ApiKey, "0.24.4");
        assert_eq!(get(&h, "authorization"), vec!["Bearer sk-sp-key"]);
        assert_eq!(get(&h, "x-dashscope-authtype"), vec!["openai"]);
        assert_eq!(get(&h, "user-agent"), vec![user_agent("0.24.4").as_str()]);
        assert_eq!(get(&h, "x-dashscope-useragent"), vec![user_agent("0.24.4").as_str()]);
        assert_eq!(get(&h, "x-dashscope-cachecontrol"), vec!["enable"]);
        assert_eq!(get(&h, "accept"), vec!["application/json"]);
    }
}
