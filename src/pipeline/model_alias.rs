//! API-key path: `coder-model` (and the retired `vision-model`) in a request body become the plan's default
//! model, so an OpenCode config written for the OAuth login keeps working with a key.
//!
//! Only the top-level `"model"` string of a JSON object is touched, and every other byte is kept as it was:
//! a small scanner walks the top-level keys (OpenCode writes `model` first, so it usually stops at once)
//! instead of parsing and re-serialising a body that can be hundreds of kilobytes.

use bytes::{Bytes, BytesMut};

use crate::api_key::Plan;
use crate::models;

/// The body with its top-level `"model"` replaced by the key-path alias, or `None` to send it unchanged
/// (not a JSON object, no `model`, or a model that is not an alias).
pub fn rewrite(body: &[u8], plan: Plan) -> Option<Bytes> {
    let (start, end) = top_level_model(body)?;
    // The value must be a plain JSON string; an id with escapes is not one of ours.
    let raw = &body[start..end];
    let id = std::str::from_utf8(raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?).ok()?;
    if id.contains('\\') {
        return None;
    }
    let target = models::key_alias(plan, id)?;
    let mut out = BytesMut::with_capacity(body.len() + target.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(b"\"");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

/// Byte range of the value of the first top-level `"model"` key of a JSON object.
fn top_level_model(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = skip_ws(b, 0);
    // A UTF-8 byte-order mark is legal before JSON text sent by some clients.
    if b[i..].starts_with(b"\xEF\xBB\xBF") {
        i = skip_ws(b, i + 3);
    }
    // A JSON object from start to end; the end is checked cheaply (the last byte closes it) rather than by
    // walking the whole body, which is the server's job.
    if b.get(i) != Some(&b'{') || b[..skip_ws_back(b)].last() != Some(&b'}') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if key == b"model" {
            return Some((start, end));
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

/// Length of `b` without trailing whitespace.
fn skip_ws_back(b: &[u8]) -> usize {
    let mut n = b.len();
    while n > 0 && matches!(b[n - 1], b' ' | b'\t' | b'\n' | b'\r') {
        n -= 1;
    }
    n
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is an opening quote; the index just past the closing one.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The index just past the JSON value starting at `i` (structure only: strings and brackets are matched,
/// scalars run to the next delimiter).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(body: &str, plan: Plan) -> Option<String> {
        rewrite(body.as_bytes(), plan).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn coder_model_becomes_the_plans_default_and_nothing_else_changes() {
        let body = r#"{"model":"coder-model","max_tokens":32000,"messages":[{"role":"user","content":"say \"coder-model\""}],"stream":true}"#;
        let cp = rw(body, Plan::CodingPlan).unwrap();
        assert_eq!(cp, body.replacen(r#""model":"coder-model""#, r#""model":"qwen3.5-plus""#, 1));
        let ds = rw(body, Plan::DashScope).unwrap();
        assert!(ds.starts_with(r#"{"model":"qwen3.6-plus","#), "{ds}");
        assert!(ds.contains(r#"say \"coder-model\""#), "message text is untouched: {ds}");
    }

    #[test]
    fn model_after_nested_values_and_whitespace() {
        let body = "\u{feff}{ \"messages\" : [ {\"content\": \"} ] { \\\" model\"}, [1, {\"model\": \"x\"}] ],\n \"n\": -1.5e3, \"ok\": true, \"z\": null,\r\n\t\"model\" :\"vision-model\" }";
        let out = rw(body, Plan::CodingPlan).unwrap();
        assert_eq!(out, body.replace("\"model\" :\"vision-model\"", "\"model\" :\"qwen3.5-plus\""));
        // The nested {"model": "x"} was skipped, not mistaken for the top-level key.
        assert!(out.contains("{\"model\": \"x\"}"));
    }

    #[test]
    fn other_models_and_non_objects_are_left_alone() {
        for body in [
            r#"{"model":"qwen3-coder-plus","messages":[]}"#,
            r#"{"messages":[{"model":"coder-model"}]}"#,
            r#"[{"model":"coder-model"}]"#,
            r#""coder-model""#,
            r#"{"model":["coder-model"]}"#,
            r#"{"model":"coder\u002dmodel"}"#,
            r#"{"model":"coder-model""#,
            r#"{"model" "coder-model"}"#,
            "model=coder-model",
            "",
            "{",
            r#"{"a":"unterminated}"#,
        ] {
            assert_eq!(rw(body, Plan::CodingPlan), None, "{body}");
        }
    }

    #[test]
    fn a_large_body_is_rewritten_in_place() {
        let big = "x".repeat(200_000);
        let body = format!(r#"{{"messages":[{{"role":"user","content":"{big}"}}],"model":"coder-model"}}"#);
        let out = rewrite(body.as_bytes(), Plan::DashScope).unwrap();
        assert_eq!(out.len(), body.len() - "coder-model".len() + "qwen3.6-plus".len());
        assert!(out.ends_with(br#""model":"qwen3.6-plus"}"#));
    }
}
