//! The API-key path: the endpoints a Qwen key is used with (Alibaba Cloud Coding Plan, DashScope), which
//! plan an endpoint belongs to, and the key-shape check the official CLI applies (Coding Plan keys start
//! `sk-sp-`, `alibaba-coding-plan.ts`; DashScope keys start `sk-`). Messages never contain the key.

use reqwest::Url;

/// Which product a key / endpoint belongs to. They differ in key shape, models and default model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Alibaba Cloud Model Studio Coding Plan (subscription; `sk-sp-` keys).
    CodingPlan,
    /// DashScope / Model Studio pay-as-you-go, OpenAI-compatible mode (`sk-` keys).
    DashScope,
}

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::CodingPlan => "Coding Plan",
            Plan::DashScope => "DashScope",
        }
    }
}

pub struct Endpoint {
    pub label: &'static str,
    pub url: &'static str,
    pub hint: &'static str,
    pub plan: Plan,
}

/// The choices of the login's endpoint prompt, in the order shown. URLs as the CLI's presets spell them.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        label: "Coding Plan China",
        url: "https://coding.dashscope.aliyuncs.com/v1",
        hint: "sk-sp- key, Beijing",
        plan: Plan::CodingPlan,
    },
    Endpoint {
        label: "Coding Plan international",
        url: "https://coding-intl.dashscope.aliyuncs.com/v1",
        hint: "sk-sp- key, Singapore",
        plan: Plan::CodingPlan,
    },
    Endpoint {
        label: "DashScope Beijing",
        url: "https://dashscope.aliyuncs.com/compatible-mode/v1",
        hint: "sk- key, pay as you go",
        plan: Plan::DashScope,
    },
    Endpoint {
        label: "DashScope Singapore",
        url: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        hint: "sk- key, pay as you go",
        plan: Plan::DashScope,
    },
];

const CODING_PLAN_PREFIX: &str = "sk-sp-";
const DASHSCOPE_PREFIX: &str = "sk-";

fn host_of(url: &str) -> Option<String> {
    let host = Url::parse(url).ok()?.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    Some(host)
}

/// The plan an endpoint URL belongs to, when it is one of Alibaba's (any path under the host counts).
pub fn known_plan(url: &str) -> Option<Plan> {
    let host = host_of(url)?;
    if !(host == "aliyuncs.com" || host.ends_with(".aliyuncs.com")) {
        return None;
    }
    if host.starts_with("coding.") || host.starts_with("coding-intl.") {
        Some(Plan::CodingPlan)
    } else if host == "dashscope.aliyuncs.com"
        || host.ends_with(".dashscope.aliyuncs.com")
        || host.starts_with("dashscope-")
    {
        Some(Plan::DashScope)
    } else {
        None
    }
}

/// The plan for a request: the endpoint's when it is an Alibaba one, else (a proxy, a local test server)
/// what the key's shape says.
pub fn plan_for(url: &str, key: &str) -> Plan {
    known_plan(url).unwrap_or_else(|| key_plan(key))
}

fn key_plan(key: &str) -> Plan {
    if key.trim().starts_with(CODING_PLAN_PREFIX) {
        Plan::CodingPlan
    } else {
        Plan::DashScope
    }
}

/// Where a key goes when the stored login names no endpoint: the China endpoint of the key's plan (the
/// CLI's defaults for both presets).
pub fn default_endpoint(key: &str) -> &'static str {
    let plan = key_plan(key);
    ENDPOINTS.iter().find(|e| e.plan == plan).map(|e| e.url).unwrap_or(ENDPOINTS[0].url)
}

/// The endpoint's name as the login menu shows it, else its URL.
pub fn endpoint_name(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    ENDPOINTS
        .iter()
        .find(|e| trimmed.starts_with(e.url))
        .map(|e| format!("{} ({})", e.label, e.url))
        .unwrap_or_else(|| trimmed.to_string())
}

/// `None` when `key` has the shape `endpoint` expects; else a message saying what is wrong and what to do.
/// Endpoints that are not Alibaba's (proxies, tests) only need a non-empty key without spaces.
pub fn check_key(key: &str, endpoint: &str) -> Option<String> {
    let key = key.trim();
    if key.is_empty() {
        return Some(
            "Paste your Qwen API key (Coding Plan keys start with \"sk-sp-\", DashScope keys with \"sk-\").".into(),
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("The API key contains spaces or line breaks; paste the key alone.".into());
    }
    let at = endpoint_name(endpoint);
    match known_plan(endpoint) {
        Some(Plan::CodingPlan) if !key.starts_with(CODING_PLAN_PREFIX) => Some(format!(
            "Invalid API key for {at}: Coding Plan API keys start with \"sk-sp-\". A key starting with \"sk-\" only is a DashScope (pay-as-you-go) key: choose DashScope Beijing or Singapore for it, or copy the Coding Plan key from the Model Studio console."
        )),
        Some(Plan::DashScope) if key.starts_with(CODING_PLAN_PREFIX) => Some(format!(
            "This is a Coding Plan key (\"sk-sp-\"), which {at} does not accept: choose Coding Plan China or Coding Plan international for it."
        )),
        Some(Plan::DashScope) if !key.starts_with(DASHSCOPE_PREFIX) => Some(format!(
            "Invalid API key for {at}: DashScope API keys start with \"sk-\". Copy the key from the Model Studio console (API keys page of the same region)."
        )),
        _ => None,
    }
}

/// Whether an error body is the Coding Plan's 405 "Coding Plan is currently only available for Coding Agents".
pub fn is_coding_agents_only(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).to_ascii_lowercase().contains("only available for coding agents")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_the_four_of_the_login_prompt() {
        let urls: Vec<_> = ENDPOINTS.iter().map(|e| e.url).collect();
        assert_eq!(
            urls,
            [
                "https://coding.dashscope.aliyuncs.com/v1",
                "https://coding-intl.dashscope.aliyuncs.com/v1",
                "https://dashscope.aliyuncs.com/compatible-mode/v1",
                "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            ]
        );
        for e in ENDPOINTS {
            assert_eq!(known_plan(e.url), Some(e.plan), "{}", e.url);
        }
    }

    #[test]
    fn plan_from_host_then_from_key() {
        assert_eq!(known_plan("https://coding.dashscope.aliyuncs.com/v1/chat/completions"), Some(Plan::CodingPlan));
        assert_eq!(known_plan("https://CODING-INTL.dashscope.aliyuncs.com./v1"), Some(Plan::CodingPlan));
        assert_eq!(known_plan("https://dashscope-us.aliyuncs.com/compatible-mode/v1"), Some(Plan::DashScope));
        assert_eq!(known_plan("https://cn-hongkong.dashscope.aliyuncs.com/compatible-mode/v1"), Some(Plan::DashScope));
        assert_eq!(known_plan("http://127.0.0.1:8080/v1"), None);
        assert_eq!(known_plan("https://coding.example.com/v1"), None);
        assert_eq!(known_plan("not a url"), None);
        assert_eq!(plan_for("http://127.0.0.1:8080/v1", "sk-sp-abc"), Plan::CodingPlan);
        assert_eq!(plan_for("http://127.0.0.1:8080/v1", "sk-abc"), Plan::DashScope);
        // The endpoint wins over the key: a mismatch is reported, not silently re-planned.
        assert_eq!(plan_for("https://dashscope.aliyuncs.com/compatible-mode/v1", "sk-sp-abc"), Plan::DashScope);
    }

    #[test]
    fn coding_plan_wants_sk_sp_keys() {
        let cp = "https://coding.dashscope.aliyuncs.com/v1";
        assert_eq!(check_key("sk-sp-0123456789abcdef", cp), None);
        assert_eq!(check_key("  sk-sp-0123456789abcdef\n", cp), None, "surrounding whitespace is trimmed");
        let m = check_key("sk-0123456789abcdef", cp).unwrap();
        assert!(m.contains("Coding Plan API keys start with \"sk-sp-\""), "{m}");
        assert!(m.contains("Coding Plan China (https://coding.dashscope.aliyuncs.com/v1)"), "{m}");
        assert!(m.contains("DashScope"), "{m}");
        assert!(!m.contains("0123456789abcdef"), "the key never appears: {m}");
    }

    #[test]
    fn dashscope_wants_sk_keys_and_refuses_coding_plan_keys() {
        let ds = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1";
        assert_eq!(check_key("sk-0123456789abcdef", ds), None);
        let m = check_key("sk-sp-0123456789abcdef", ds).unwrap();
        assert!(m.contains("Coding Plan key") && m.contains("DashScope Singapore"), "{m}");
        let m = check_key("AKIA0123456789", ds).unwrap();
        assert!(m.contains("DashScope API keys start with \"sk-\""), "{m}");
        assert!(!m.contains("AKIA0123456789"), "{m}");
    }

    #[test]
    fn empty_or_broken_keys_are_refused_everywhere() {
        for endpoint in [ENDPOINTS[0].url, ENDPOINTS[2].url, "http://127.0.0.1:9/v1"] {
            assert!(check_key("", endpoint).unwrap().contains("Paste your Qwen API key"));
            assert!(check_key("  ", endpoint).is_some());
            assert!(check_key("sk-sp-ab cd", endpoint).unwrap().contains("spaces"));
        }
        // Any other endpoint (a proxy, a test server) accepts any non-empty key.
        assert_eq!(check_key("anything", "http://127.0.0.1:9/v1"), None);
    }

    #[test]
    fn default_endpoint_follows_the_key() {
        assert_eq!(default_endpoint("sk-sp-x"), "https://coding.dashscope.aliyuncs.com/v1");
        assert_eq!(default_endpoint("sk-x"), "https://dashscope.aliyuncs.com/compatible-mode/v1");
    }

    #[test]
    fn coding_agents_gate_is_recognised() {
        assert!(is_coding_agents_only(br#"{"error":"Coding Plan is currently only available for Coding Agents"}"#));
        assert!(is_coding_agents_only(b"coding plan is currently ONLY AVAILABLE FOR CODING AGENTS"));
        assert!(!is_coding_agents_only(br#"{"error":{"message":"Method Not Allowed"}}"#));
        assert!(!is_coding_agents_only(b""));
    }

    #[test]
    fn endpoint_names() {
        assert_eq!(
            endpoint_name("https://coding-intl.dashscope.aliyuncs.com/v1/chat/completions"),
            "Coding Plan international (https://coding-intl.dashscope.aliyuncs.com/v1)"
        );
        assert_eq!(endpoint_name("http://127.0.0.1:1/v1/"), "http://127.0.0.1:1/v1");
    }
}
