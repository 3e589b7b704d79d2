//! The rewrite without building the whole body as a `Value`.
//!
//! One validating pass over the text (`scan`) keeps every top-level value, every message and every tool as
//! a slice of the input; only what changes is parsed (the system message, the last message, the last
//! tool, `stream_options`) and written anew, everything else is copied through as it came. The result is
//! the same as `super::apply` on the parsed body, byte for byte for the compact JSON `JSON.stringify`
//! writes (the tests compare both paths); outside the parts that change, the input's text is kept exactly.
//! Bodies this path does not take (GLM models without tools, whose texts may be flattened; duplicate keys;
//! `messages` or `tools` that are not arrays) return `None`, and the caller uses the full path.

use std::borrow::Cow;

use serde_json::Value;

use super::scan::{Scanner, Span};
use super::strings::Block;

use super::{
    first_text, include_usage, is_qwen_family, is_vision_model, truthy, write_json, Kind, OPENCODE_TITLE_PROMPT,
};

/// A top-level value: as it came, or (`messages`, `tools`) split into its elements.
enum Field<'a> {
    Raw(&'a str),
    List(Vec<&'a str>),
}

pub(super) struct Body<'a> {
    text: Text<'a>,
    fields: Vec<(Cow<'a, str>, Field<'a>)>,
    /// Lower-cased `model`, "" when absent or not a string (borrowed when it is lower-case already).
    model: Cow<'a, str>,
    stream: bool,
}

impl<'a> Body<'a> {
    /// `None`: not for this path (see the module comment), or not a JSON object at all.
    pub(super) fn parse(text: &'a str) -> Option<Body<'a>> {
        let mut scan = Scanner::new(text);
        let mut fields: Vec<(Cow<'a, str>, Field<'a>)> = Vec::with_capacity(12);
        let mut first = true;
        while let Some((from, to)) = scan.next_key(std::mem::take(&mut first))? {
            let key = key_text(&text[from..to])?;
            if fields.iter().any(|(k, _)| *k == key) {
                return None;
            }
            let value = if key == "messages" || key == "tools" {
                let items = scan.array()?;
                Field::List(items.into_iter().map(|(a, b)| &text[a..b]).collect())
            } else {
                let (a, b) = scan.value()?;
                Field::Raw(&text[a..b])
            };
            fields.push((key, value));
        }
        if !scan.at_end() {
            return None;
        }
        let text = Text { whole: text, blocks: scan.into_blocks() };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let model = match field("model") {
            Some(Field::Raw(raw)) if raw.starts_with('"') => match key_text(raw) {
                Some(m) if m.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(m.to_ascii_lowercase()),
                Some(m) => m,
                None => Cow::Borrowed(""),
            },
            _ => Cow::Borrowed(""),
        };
        // GLM without tools may need its texts flattened (`hasFunctionCallingContext` looks at every message):
        // the full path's job. With tools it is marked like any model.
        let has_tools = fields.iter().any(|(k, v)| k == "tools" && matches!(v, Field::List(t) if !t.is_empty()));
        if model.starts_with("glm-") && !has_tools {
            return None;
        }
        let stream = match field("stream") {
            // The usual literals without the parser: its code is cold between requests.
            Some(Field::Raw("true")) => true,
            Some(Field::Raw("false" | "null")) => false,
            Some(Field::Raw(raw)) => truthy(&serde_json::from_str::<Value>(raw).ok()?),
            _ => false,
        };
        Some(Body { text, fields, model, stream })
    }

    fn list(&self, name: &str) -> Option<&[&'a str]> {
        self.fields.iter().find_map(|(k, v)| match v {
            Field::List(items) if k == name => Some(items.as_slice()),
            _ => None,
        })
    }

    /// As `super::classify` decides on the parsed body.
    pub(super) fn kind(&self) -> Kind {
        let Some(messages) = self.list("messages") else {
            return Kind::Continuation;
        };
        let no_tools = self.list("tools").is_none_or(|t| t.is_empty());
        if no_tools {
            let first_user = messages.iter().find(|m| role(&self.text, m).as_deref() == Some("user"));
            if let Some(user) = first_user.filter(|m| may_hold_title_prompt(m)) {
                let user: Value = serde_json::from_str(user).unwrap_or(Value::Null);
                if first_text(&user).is_some_and(|t| t.starts_with(OPENCODE_TITLE_PROMPT)) {
                    return Kind::Title;
                }
            }
        }
        match messages.last().and_then(|m| role(&self.text, m)).as_deref() {
            Some("user") => Kind::Prompt,
            _ => Kind::Continuation,
        }
    }

    /// The rewritten body (as `super::apply` would have it).
    pub(super) fn write(&self, session_id: &str, prompt_id: &str) -> Option<Vec<u8>> {
        // Messages to mark: the first system message; when streaming, the last one too.
        let mut marked: Vec<(usize, Vec<u8>)> = Vec::new();
        if let Some(messages) = self.list("messages") {
            let system = messages.iter().position(|m| role(&self.text, m).as_deref() == Some("system"));
            let last = messages.len().checked_sub(1).filter(|_| self.stream);
            for i in [system, last].into_iter().flatten() {
                if marked.iter().any(|(j, _)| *j == i) {
                    continue;
                }
                if let Some(message) = mark_message(&self.text, messages[i])? {
                    marked.push((i, message.into_bytes()));
                }
            }
        }
        let last_tool = match self.list("tools") {
            Some([.., last]) if self.stream && last.starts_with('{') => {
                Some(with_cache_control(&self.text, last)?.into_bytes())
            }
            _ => None,
        };
        // Only a `stream_options` the caller sent is parsed; an absent one is inserted as text below (building
        // the `Value` anyway cost serde's cold code on every streamed request).
        let stream_options = match self.fields.iter().find(|(k, _)| k == "stream_options") {
            Some((_, Field::Raw(raw))) if self.stream => Some(match serde_json::from_str::<Value>(raw).ok()? {
                Value::Object(mut opts) => {
                    opts.insert("include_usage".into(), Value::Bool(true));
                    Value::Object(opts)
                }
                _ => include_usage(),
            }),
            _ => None,
        };
        let insert_stream_options = self.stream && !self.fields.iter().any(|(k, _)| k == "stream_options");

        // Set in place when present, else appended in this order. Written as text: building `Value`s for
        // these few fixed shapes took a dozen allocations per request.
        let mut extra: Vec<(&str, Extra)> = Vec::with_capacity(3);
        if is_qwen_family(&self.model) {
            extra.push(("metadata", Extra::Metadata));
        }
        if is_vision_model(&self.model) {
            extra.push(("vl_high_resolution_images", Extra::True));
        }
        extra.push(("preserve_thinking", Extra::True));
        let write_extra = |out: &mut Vec<u8>, e: &Extra| -> Option<()> {
            match e {
                Extra::True => out.extend_from_slice(b"true"),
                Extra::Metadata => {
                    out.extend_from_slice(br#"{"sessionId":"#);
                    json_string(out, session_id)?;
                    out.extend_from_slice(br#","promptId":"#);
                    json_string(out, prompt_id)?;
                    out.push(b'}');
                }
            }
            Some(())
        };

        let size: usize = self.fields.iter().map(|(k, v)| k.len() + field_len(v) + 4).sum();
        let mut out = Vec::with_capacity(size + 512);
        out.push(b'{');
        let mut first = true;
        // `plain`: a key known to need no escaping, written between quotes as it is. A key read from the body
        // without escapes is one: the scan found no quote, backslash or control character in it.
        let mut key = |out: &mut Vec<u8>, k: &str, plain: bool| -> Option<()> {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            if plain {
                quoted(out, k);
            } else {
                json_string(out, k)?;
            }
            out.push(b':');
            Some(())
        };
        for (k, v) in &self.fields {
            key(&mut out, k, matches!(k, Cow::Borrowed(_)))?;
            if let Some((_, value)) = extra.iter().find(|(name, _)| name == k) {
                write_extra(&mut out, value)?;
            } else if k == "stream_options" && stream_options.is_some() {
                out.extend(write_json(stream_options.as_ref()?)?);
            } else {
                match v {
                    Field::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
                    Field::List(items) => {
                        let replaced = |i: usize| -> Option<&[u8]> {
                            match k.as_ref() {
                                "messages" => marked.iter().find(|(j, _)| *j == i).map(|(_, b)| b.as_slice()),
                                "tools" if i + 1 == items.len() => last_tool.as_deref(),
                                _ => None,
                            }
                        };
                        out.push(b'[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(replaced(i).unwrap_or(item.as_bytes()));
                        }
                        out.push(b']');
                    }
                }
            }
            // pipeline.ts sets stream_options right after stream.
            if k == "stream" && insert_stream_options {
                key(&mut out, "stream_options", true)?;
                out.extend_from_slice(INCLUDE_USAGE.as_bytes());
            }
        }
        for (name, value) in &extra {
            if !self.fields.iter().any(|(k, _)| k == name) {
                key(&mut out, name, true)?;
                write_extra(&mut out, value)?;
            }
        }
        out.push(b'}');
        Some(out)
    }
}

fn field_len(v: &Field) -> usize {
    match v {
        Field::Raw(raw) => raw.len(),
        Field::List(items) => items.iter().map(|i| i.len() + 1).sum::<usize>() + 2,
    }
}

/// A value the CLI adds, by shape.
enum Extra {
    /// `{"sessionId":…,"promptId":…}`
    Metadata,
    True,
}

/// `{include_usage: true}` as `JSON.stringify` writes it.
const INCLUDE_USAGE: &str = r#"{"include_usage":true}"#;

/// `{"type":"ephemeral"}` as `JSON.stringify` writes it.
const EPHEMERAL: &str = r#"{"type":"ephemeral"}"#;

/// An object's keys and value spans in order, and where its `}` is.
type Fields<'a> = (Vec<(Cow<'a, str>, Span)>, usize);

/// The fields of an object's text; `None` for anything but an object without repeated keys.
/// A body's text and its scanner's masks: a message, tool or content part of it is scanned again without
/// computing them again (and without an allocation per scan).
struct Text<'a> {
    whole: &'a str,
    blocks: Vec<Block>,
}

impl<'a> Text<'a> {
    /// `part` must be a slice of this text (else it is scanned on its own).
    fn scan<'s>(&'s self, part: &'s str) -> Scanner<'s> {
        Scanner::part(self.whole, &self.blocks, part)
    }
}

fn object_fields<'t>(whole: &Text, text: &'t str) -> Option<Fields<'t>> {
    if !text.starts_with('{') {
        return None;
    }
    let (spans, close) = whole.scan(text).object()?;
    let mut fields: Vec<(Cow<'_, str>, Span)> = Vec::with_capacity(spans.len());
    for ((ka, kb), value) in spans {
        let key = key_text(&text[ka..kb])?;
        if fields.iter().any(|(k, _)| *k == key) {
            return None;
        }
        fields.push((key, value));
    }
    Some((fields, close))
}

/// `{...object, cache_control: {type: "ephemeral"}}` on an object's text: an existing `cache_control`
/// keeps its place, else the key is appended. `None` for repeated keys.
fn with_cache_control(whole: &Text, object: &str) -> Option<String> {
    let (fields, close) = object_fields(whole, object)?;
    let mut out = String::with_capacity(object.len() + 48);
    match fields.iter().find(|(k, _)| k == "cache_control") {
        Some((_, (a, b))) => {
            out.push_str(&object[..*a]);
            out.push_str(EPHEMERAL);
            out.push_str(&object[*b..]);
        }
        None => {
            out.push_str(&object[..close]);
            if !fields.is_empty() {
                out.push(',');
            }
            out.push_str(r#""cache_control":"#);
            out.push_str(EPHEMERAL);
            out.push_str(&object[close..]);
        }
    }
    Some(out)
}

/// `super::mark_last_part` on a message's text, splicing instead of rebuilding: `Some(None)` when the
/// message stays as it is, `None` when this path cannot say (repeated keys).
fn mark_message(whole: &Text, message: &str) -> Option<Option<String>> {
    if !message.starts_with('{') {
        return Some(None);
    }
    let (fields, _) = object_fields(whole, message)?;
    let Some((_, (a, b))) = fields.iter().find(|(k, _)| k == "content") else {
        return Some(None);
    };
    let content = &message[*a..*b];
    // Pushed piece by piece, not `format!`ted: the formatting machinery is cold code between requests.
    let mut out = String::with_capacity(message.len() + 96);
    out.push_str(&message[..*a]);
    if content.starts_with('"') {
        out.push_str(r#"[{"type":"text","text":"#);
        out.push_str(content);
        out.push_str(r#","cache_control":"#);
        out.push_str(EPHEMERAL);
        out.push_str("}]");
    } else if content.starts_with('[') {
        let parts = whole.scan(content).array()?;
        let Some(&(pa, pb)) = parts.last() else {
            return Some(None);
        };
        let part = &content[pa..pb];
        if !part.starts_with('{') {
            return Some(None);
        }
        out.push_str(&content[..pa]);
        out.push_str(&with_cache_control(whole, part)?);
        out.push_str(&content[pb..]);
    } else {
        return Some(None);
    }
    out.push_str(&message[*b..]);
    Some(Some(out))
}

/// Whether a message's raw JSON could hold OpenCode's title prompt: the prompt has no character JSON must
/// escape, so it appears verbatim unless written with `\u` escapes. Saves parsing every other first message.
fn may_hold_title_prompt(message: &&str) -> bool {
    message.contains(OPENCODE_TITLE_PROMPT) || message.contains("\\u")
}

/// A message's `role`, read without building the message (`None` when absent or not a string).
///
/// The role nearly always comes first: it is looked for in the message's first bytes, so that a system
/// prompt of tens of KB is not classified whole (twice per request) to read one short value. Only a role
/// found there is taken; anything else (cut mid-value, no role yet) reads the whole message.
fn role<'a>(whole: &Text, message: &&'a str) -> Option<Cow<'a, str>> {
    const PREFIX: usize = 256;
    if message.len() > PREFIX {
        if let Some(found) = role_in(whole, &message[..message.floor_char_boundary(PREFIX)]) {
            return Some(found);
        }
    }
    role_in(whole, message)
}

/// The first `role` key's string value in an object's text, as far as the text is well-formed.
fn role_in<'m>(whole: &Text, message: &'m str) -> Option<Cow<'m, str>> {
    let mut scan = whole.scan(message);
    let mut first = true;
    while let Some((from, to)) = scan.next_key(std::mem::take(&mut first))? {
        let (a, b) = scan.value()?;
        if key_text(&message[from..to])? == "role" {
            let value = &message[a..b];
            return value.starts_with('"').then(|| key_text(value)).flatten();
        }
    }
    None
}

/// `s` as a JSON string, as `JSON.stringify` writes it. Text with nothing to escape (keys, ids: nearly
/// always) is copied between quotes without the serializer, whose code is cold between requests.
fn json_string(out: &mut Vec<u8>, s: &str) -> Option<()> {
    // JSON.stringify escapes `"`, `\`, controls and lone surrogates (which a &str cannot hold). A fold without
    // an early exit: the compiler checks 16 bytes at a time.
    if !s.bytes().fold(false, |escape, b| escape | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        quoted(out, s);
        return Some(());
    }
    serde_json::to_writer(&mut *out, s).ok()
}

/// `s` between quotes as it is: text known to need no escaping.
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The text of a string token (quotes included): borrowed unless it has escapes.
fn key_text(token: &str) -> Option<Cow<'_, str>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    // A byte loop: keys are a few bytes, and `contains` set up a searcher for each of them.
    if inner.bytes().any(|b| b == b'\\') {
        serde_json::from_str::<String>(token).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_read_from_the_first_bytes_is_the_role_of_the_whole_message() {
        let long = "x".repeat(600);
        let cases = [
            (format!(r#"{{"role":"system","content":"{long}"}}"#), Some("system")),
            (format!(r#"{{"content":"{long}","role":"user"}}"#), Some("user")),
            (format!(r#"{{"content":"{}","role":"tool"}}"#, "é".repeat(200)), Some("tool")),
            (format!(r#"{{"role":7,"content":"{long}"}}"#), None),
            (format!(r#"{{"content":"{long}"}}"#), None),
            (format!(r#"{{"name":"{}\"","role":"assistant","content":"{long}"}}"#, "a".repeat(240)), Some("assistant")),
            (format!(r#"{{"role":"us\u0065r","content":"{long}"}}"#), Some("user")),
        ];
        for (message, want) in &cases {
            let alone = Text { whole: message, blocks: Scanner::new(message).into_blocks() };
            assert_eq!(role(&alone, &message.as_str()).as_deref(), *want, "{}", &message[..40]);
            assert_eq!(role_in(&alone, message).as_deref(), *want, "whole: {}", &message[..40]);
            // As a message inside a body, its masks taken from the body's.
            let body = format!(r#"{{"messages":[{message}]}}"#);
            let parsed = Body::parse(&body).expect("a body");
            let inside = parsed.list("messages").expect("messages")[0];
            assert_eq!(inside, message.as_str());
            assert_eq!(role(&parsed.text, &inside).as_deref(), *want, "in a body: {}", &message[..40]);
        }
    }

    #[test]
    fn json_string_writes_what_serde_json_writes() {
        for s in [
            "",
            "model",
            "ses_1########0",
            "é中😀",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "\u{1f}x",
            "\u{7f}",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, s).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn stream_literals_and_other_values_read_as_truthy_does() {
        for (raw, stream) in [
            ("true", true),
            ("false", false),
            ("null", false),
            ("1", true),
            ("0", false),
            ("\"\"", false),
            ("\"x\"", true),
            ("[]", true),
        ] {
            let body = format!(r#"{{"model":"coder-model","stream":{raw},"messages":[]}}"#);
            assert_eq!(Body::parse(&body).unwrap().stream, stream, "{raw}");
        }
        let body = r#"{"model":"Qwen\u0033-Coder","messages":[]}"#;
        assert_eq!(Body::parse(body).unwrap().model, "qwen3-coder", "escaped model");
        assert_eq!(Body::parse(r#"{"model":7,"messages":[]}"#).unwrap().model, "", "not a string");
    }

    /// Where the time goes (release): `cargo test --release --lib body::fast::tests::stages -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn stages() {
        let body = String::from_utf8(super::super::tests::opencode_body(100 * 1024)).unwrap();
        // The fastest of 30 batches: the machine is shared, and noise only ever adds time.
        let time = |what: &str, f: &dyn Fn()| {
            let best = (0..30)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..20 {
                        f();
                    }
                    t.elapsed().as_secs_f64() * 1e6 / 20.0
                })
                .fold(f64::INFINITY, f64::min);
            println!("{what}: {best:.1} us");
        };
        time("utf8", &|| {
            std::hint::black_box(std::str::from_utf8(std::hint::black_box(body.as_bytes())).unwrap());
        });
        time("ignored", &|| {
            std::hint::black_box(serde_json::from_str::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap());
        });
        time("blocks", &|| {
            std::hint::black_box(super::super::strings::blocks(std::hint::black_box(body.as_bytes())));
        });
        time("scan", &|| {
            let mut s = Scanner::new(std::hint::black_box(&body));
            std::hint::black_box(s.value().unwrap());
        });
        time("parse", &|| {
            std::hint::black_box(Body::parse(std::hint::black_box(&body)).unwrap());
        });
        let b = Body::parse(&body).unwrap();
        time("kind", &|| {
            std::hint::black_box(b.kind());
        });
        time("write", &|| {
            std::hint::black_box(b.write("s", "p").unwrap());
        });
        time("value", &|| {
            std::hint::black_box(serde_json::from_str::<Value>(std::hint::black_box(&body)).unwrap());
        });
    }
}
