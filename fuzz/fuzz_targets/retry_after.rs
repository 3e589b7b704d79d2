//! `Retry-After` / `retry-after-ms` parsing (`pipeline::retry::retry_after`) and the back-off formula, fed
//! arbitrary header bytes, clock and attempt numbers.
//!
//! Checks: no panic (no Duration overflow, NaN or negative conversions); `retry-after-ms` wins when usable;
//! a delay in seconds or milliseconds is at most the documented bound; back-off stays within 0.75–30 s.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use opencode_qwen_oauth::pipeline::retry;
use reqwest::header::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let clock = u64::from_le_bytes(data[..8].try_into().unwrap()) % (400 * 365 * 86_400);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(clock);
    let rest = &data[8..];
    // `ms-value \0 seconds-or-date`; either part may be missing or not a valid header value.
    let (ms, secs) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (Some(&rest[..i]), Some(&rest[i + 1..])),
        None => (None, Some(rest)),
    };
    let mut headers = HeaderMap::new();
    let ms_value = ms.and_then(|b| HeaderValue::from_bytes(b).ok());
    if let Some(v) = &ms_value {
        headers.insert("retry-after-ms", v.clone());
    }
    if let Some(v) = secs.and_then(|b| HeaderValue::from_bytes(b).ok()) {
        headers.insert("retry-after", v);
    }
    let got = retry::retry_after(&headers, now);

    if let Some(ms) = ms_value.as_ref().and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<f64>().ok()) {
        if ms.is_finite() && (0.0..=86_400_000.0).contains(&ms) {
            let d = got.expect("a usable retry-after-ms is used");
            assert!(d <= Duration::from_millis(86_400_000));
        }
    }
    if let Some(d) = got {
        // Seconds are bounded like milliseconds; an HTTP date can be at most year 9999.
        assert!(d <= Duration::from_secs(253_402_300_800), "{d:?}");
    }

    let attempt = u32::from(rest[0]) * 3;
    let r = f64::from(rest.get(1).copied().unwrap_or(0)) / 255.0;
    let b = retry::backoff(attempt, r);
    assert!(b >= Duration::from_millis(750) && b <= Duration::from_secs(30), "{b:?}");
    let _ = retry::backoff(u32::MAX, 1.0);
    let _ = retry::is_free_quota_exhausted(429, rest);
});
