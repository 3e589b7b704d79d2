//! `oauth_creds.json` parsing and validation (`Credentials::parse`), fed arbitrary bytes.
//!
//! Checks: no panic; whatever is accepted is written back in both CLI key orders and reads back equal;
//! a refusal is always E_CREDS_INVALID naming the file; and the message depends only on the file's
//! structure, never on the values of its strings (so a token can never surface in it).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use opencode_qwen_oauth::credentials::{Credentials, KeyOrder};
use serde_json::Value;

const PATH: &str = "/fuzz/home/oauth_creds.json";

/// Every string value (not key) replaced by a fixed one of the same emptiness.
fn mask(v: &Value) -> Value {
    match v {
        Value::String(s) if s.is_empty() => Value::String(String::new()),
        Value::String(_) => Value::String("x".into()),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), mask(v))).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new(PATH);
    let parsed = Credentials::parse(data, path);
    match &parsed {
        Ok(c) => {
            for order in [KeyOrder::DeviceFlow, KeyOrder::Refresh] {
                let text = c.to_cli_json(order);
                let again = Credentials::parse(text.as_bytes(), path).expect("our own file parses");
                assert_eq!(&again, c);
                assert!(!text.ends_with('\n'));
            }
            let _ = c.api_base_url();
            let _ = c.is_valid_at(i64::MIN);
            let _ = c.is_valid_at(i64::MAX);
            // Debug output does not depend on the tokens at all.
            let other = Credentials { access_token: "a".into(), refresh_token: "r".into(), ..c.clone() };
            assert_eq!(format!("{c:?}"), format!("{other:?}"));
        }
        Err(e) => {
            assert_eq!(e.code(), "E_CREDS_INVALID");
            let msg = e.to_string();
            assert!(msg.contains(PATH), "{msg}");
        }
    }
    // The outcome (and any message) must not change when only the string values change.
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let masked = serde_json::to_vec(&mask(&v)).unwrap();
        let other = Credentials::parse(&masked, path);
        match (&parsed, &other) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("acceptance depends on string values: {parsed:?} vs {other:?}"),
        }
    }
});
