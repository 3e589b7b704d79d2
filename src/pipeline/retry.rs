//! Retry policy: Retry-After parsing, back-off with jitter, and recognising the daily-quota 429.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// First back-off step, doubled per attempt.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Ceiling of the exponential back-off before jitter (the caller also caps every wait at `max_wait_ms`).
const BACKOFF_CEILING: Duration = Duration::from_secs(30);

/// How long the server asks us to wait: `retry-after-ms` (milliseconds, OpenAI's extension) first, then
/// `retry-after` as delta-seconds or an HTTP-date. A date in the past means "now".
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(parse_non_negative) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Some(secs) = parse_non_negative(value) {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A finite, non-negative number no larger than a day (anything else is not a usable delay).
fn parse_non_negative(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && (0.0..=86_400_000.0).contains(&v)).then_some(v)
}

/// Delay before retry number `attempt` (0-based) when the server gave none: `min(1 s · 2^attempt, 30 s)`
/// scaled by `0.75 + 0.25 · rand`, with `rand` uniform in [0, 1). The jitter keeps processes that failed
/// together from retrying in lock-step.
pub fn backoff(attempt: u32, rand: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let base = exp.min(BACKOFF_CEILING);
    // NaN would make `mul_f64` panic; treat any non-finite draw as the low end.
    let rand = if rand.is_finite() { rand.clamp(0.0, 1.0) } else { 0.0 };
    base.mul_f64(0.75 + 0.25 * rand)
}

/// Whether a 429 means the daily free quota is used up, so retrying is pointless. Matches the CLI's
/// `isQwenQuotaExceededError` (code `insufficient_quota` with "Free allocated quota exceeded"), the
/// provider code `Throttling.AllocationQuota`, and a quota message announcing its reset time. Other
/// 429s, including `insufficient_quota` with a different message, are ordinary rate limits.
pub fn is_free_quota_exhausted(status: u16, body: &[u8]) -> bool {
    if status != 429 {
        return false;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    // OpenAI-compatible bodies nest the error; DashScope-native ones put code/message at the top.
    let err = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
    let code = err.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = err.get("message").and_then(|m| m.as_str()).unwrap_or("").to_lowercase();
    if code == "insufficient_quota" && message.contains("free allocated quota exceeded") {
        return true;
    }
    if code == "Throttling.AllocationQuota" {
        return true;
    }
    message.contains("quota")
        && (message.contains("exhausted") || message.contains("exceeded"))
        && (message.contains("will reset") || message.contains("reset at"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_survives_a_non_finite_draw() {
        assert_eq!(backoff(0, f64::NAN), backoff(0, 0.0));
        assert_eq!(backoff(2, f64::INFINITY), backoff(2, 0.0));
    }

    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_seconds_and_fractions() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&headers(&[("retry-after", "2")]), now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after", " 0.5 ")]), now), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "nan")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(10)));
        let past = headers(&[("retry-after", "Sun, 06 Nov 1994 08:40:00 GMT")]);
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_ceiling() {
        assert_eq!(backoff(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(750));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(5, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(40, 0.0), Duration::from_millis(22_500));
        let mid = backoff(2, 0.5);
        assert!(mid > Duration::from_secs(3) && mid < Duration::from_secs(4), "{mid:?}");
    }

    #[test]
    fn free_quota_429_is_recognised() {
        let body = br#"{"error":{"code":"insufficient_quota","message":"Free allocated quota exceeded.","param":null,"type":"insufficient_quota"},"request_id":"x"}"#;
        assert!(is_free_quota_exhausted(429, body));
        assert!(!is_free_quota_exhausted(400, body));
        let upper = br#"{"error":{"code":"insufficient_quota","message":"FREE ALLOCATED QUOTA EXCEEDED"}}"#;
        assert!(is_free_quota_exhausted(429, upper));
        let provider = br#"{"code":"Throttling.AllocationQuota","message":"Allocated quota exceeded, please increase your quota limit."}"#;
        assert!(is_free_quota_exhausted(429, provider));
        let reset = br#"{"error":{"message":"Daily quota exceeded, it will reset at 00:00"}}"#;
        assert!(is_free_quota_exhausted(429, reset));
    }

    #[test]
    fn ordinary_rate_limits_are_not_quota() {
        let paid = br#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota, please check your plan."}}"#;
        assert!(!is_free_quota_exhausted(429, paid));
        let rate = br#"{"error":{"code":"rate_limit_exceeded","message":"Requests rate limit exceeded"}}"#;
        assert!(!is_free_quota_exhausted(429, rate));
        assert!(!is_free_quota_exhausted(429, b"Too Many Requests"));
        assert!(!is_free_quota_exhausted(429, b""));
    }
}
