//! Chat-completions bodies as the Qwen Code CLI sends them.
//!
//! OpenCode's AI SDK writes a plain OpenAI body. The CLI (0.24.4) sends every request through its DashScope
//! provider (`provider/dashscope.ts`, `buildRequest`): always for `qwen-oauth`, and for API keys whenever
//! the base URL is a DashScope host, which all four key endpoints are (`coding[-intl].dashscope.aliyuncs.com`
//! end in `.dashscope.aliyuncs.com`). This module applies the same changes to OpenCode's bytes, so the
//! rules are the same for both auth types:
//!
//! - GLM models without tools or tool history: text-only content arrays are joined into one string
//!   (`flattenTextContent`), and no cache markers are set (the CLI's GLM branch).
//! - Otherwise `cache_control: {"type":"ephemeral"}` on the last content part of the first system message
//!   (a string becomes `[{"type":"text","text":…}]`); when `stream` is set, also on the last content part of
//!   the last message and on the last tool (`addDashScopeCacheControl`).
//! - `stream_options.include_usage: true` when streaming (`pipeline.ts`).
//! - `metadata: {sessionId, promptId}` for qwen-family models (`qwen*` or `coder-model`;
//!   `shouldSendRequestMetadata`). No `channel`: the CLI omits it in a plain terminal.
//! - `vl_high_resolution_images: true` for the models on the CLI's vision list (by model, not by whether
//!   this request holds an image: `isVisionModel`), then `preserve_thinking: true` for every model.
//!
//! New keys are appended in the CLI's order; keys OpenCode already sent keep their place (JS object-spread
//! semantics, which `serde_json`'s `preserve_order` map reproduces). Anything unexpected leaves the body
//! exactly as it came: the rewrite never fails a request.
//!
//! Two ways to the same bytes: `fast` (one validating scan, `scan` + `strings`, that keeps the text and
//! splices in the changes) for nearly every body, and `apply` on a parsed `Value` for the rest (GLM without
//! tools, repeated keys, odd shapes); the tests hold both to the CLI's output and to each other.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use rand::Rng;
use serde_json::{Map, Value};

use super::Request;
use crate::config::Settings;
use crate::debug_log;

mod fast;
mod scan;
mod strings;

/// OpenCode's title request starts its conversation with this fixed user message (`tools: {}`, agent
/// `title`); see `classify`.
const OPENCODE_TITLE_PROMPT: &str = "Generate a title for this conversation:";
/// The CLI's own title request is a side query with this prompt id (`runSideQuery`, purpose `session-title`).
const TITLE_PROMPT_ID: &str = "side-query:session-title";
/// `MAIN_SESSION_PROMPT_ID_DELIMITER`.
const PROMPT_ID_DELIMITER: &str = "########";
/// OpenCode sessions remembered per process; the least recently used is forgotten beyond this.
const MAX_SESSIONS: usize = 1024;

/// The CLI's `VISION_MODEL_EXACT_MATCHES` and `VISION_MODEL_PREFIX_PATTERNS` (lower-case model ids).
const VISION_EXACT: &[&str] = &["coder-model"];
const VISION_PREFIXES: &[&str] = &["qwen-vl", "qwen3-vl-plus", "qwen3.5-plus", "qwen3.6-plus", "qwen3.7-plus"];

/// The CLI-side identity of one conversation: a UUID v4 and how many prompts it has started.
#[derive(Debug, Clone)]
struct Conversation {
    session_id: String,
    prompts: u64,
}

impl Conversation {
    fn new() -> Self {
        Conversation { session_id: uuid_v4(), prompts: 0 }
    }

    /// The prompt id for a request of this kind, counting a new prompt.
    ///
    /// The CLI numbers user prompts from 0 (`<sessionId>########<n>`, n = prompts before this one) and sends
    /// the follow-up turns that carry tool results with the id of the prompt they belong to. Here a request
    /// whose last message is the user's starts a prompt; one ending in a tool result (or an assistant
    /// message) continues the current one. OpenCode's title request is the CLI's title side query: its
    /// own id, and it does not count (it may also run concurrently with the first prompt). A continuation
    /// seen before any prompt (the process started mid-session) is prompt 0 and counts as started.
    fn prompt_id(&mut self, kind: Kind) -> String {
        let n = match kind {
            Kind::Title => return TITLE_PROMPT_ID.to_string(),
            Kind::Prompt => {
                self.prompts += 1;
                self.prompts - 1
            }
            Kind::Continuation => {
                self.prompts = self.prompts.max(1);
                self.prompts - 1
            }
        };
        // Pushed, not `format!`ted: the formatting machinery is cold code between requests.
        let mut id = String::with_capacity(self.session_id.len() + PROMPT_ID_DELIMITER.len() + 20);
        id.push_str(&self.session_id);
        id.push_str(PROMPT_ID_DELIMITER);
        crate::pipeline::push_decimal(&mut id, n);
        id
    }
}

/// OpenCode sessions (its `x-session-id`, `ses_…`) → conversations, shared by every client in the process
/// so a session keeps one id whichever client carries it.
#[derive(Default)]
struct Registry {
    by_session: HashMap<String, (Conversation, u64)>,
    tick: u64,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

impl Registry {
    fn prompt_id(&mut self, key: &str, kind: Kind) -> (String, String) {
        self.tick += 1;
        let tick = self.tick;
        if !self.by_session.contains_key(key) && self.by_session.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.by_session.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) {
                self.by_session.remove(&oldest);
            }
        }
        // No key copy for a session already known (nearly every request).
        let (conv, used) = match self.by_session.get_mut(key) {
            Some(known) => known,
            None => self.by_session.entry(key.to_string()).or_insert_with(|| (Conversation::new(), tick)),
        };
        *used = tick;
        let prompt_id = conv.prompt_id(kind);
        (conv.session_id.clone(), prompt_id)
    }
}

/// Per client: the conversation of requests that name no OpenCode session.
pub struct Sessions {
    unnamed: Mutex<Conversation>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { unnamed: Mutex::new(Conversation::new()) }
    }
}

impl Sessions {
    /// `(sessionId, promptId)` for a request of OpenCode session `key` (None: this client's own conversation).
    fn ids(&self, key: Option<&str>, kind: Kind) -> Option<(String, String)> {
        match key {
            Some(key) => {
                let mut reg = REGISTRY.lock().ok()?;
                Some(reg.prompt_id(key, kind))
            }
            None => {
                let mut conv = self.unnamed.lock().ok()?;
                let prompt_id = conv.prompt_id(kind);
                Some((conv.session_id.clone(), prompt_id))
            }
        }
    }
}

/// What a request is to the prompt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Title,
    Prompt,
    Continuation,
}

/// The body to send: aligned with the CLI when the option is on and the request is a JSON chat completion,
/// else the very bytes that came in.
pub fn align(body: Option<Bytes>, req: &Request, settings: &Settings, sessions: &Sessions) -> Option<Bytes> {
    let bytes = body?;
    if !settings.align_request_body || !is_chat_completion(req) || !declared_json(&req.headers) {
        return Some(bytes);
    }
    match rewrite(&bytes, session_key(&req.headers), sessions) {
        Some(out) => {
            debug_log!("request body aligned with the Qwen Code CLI ({} -> {} bytes)", bytes.len(), out.len());
            Some(out)
        }
        None => Some(bytes),
    }
}

/// The rewritten body; None when it is not a JSON object (or anything else is off).
///
/// Usually one validating pass that keeps the text and parses only what changes (`fast`); bodies that path
/// does not take are parsed whole, changed and written whole (`apply`), with the same result.
fn rewrite(body: &[u8], session: Option<&str>, sessions: &Sessions) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let fast = fast::Body::parse(text);
    let mut whole = None;
    let kind = match &fast {
        Some(b) => b.kind(),
        None => {
            let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
                return None;
            };
            let kind = classify(&map);
            whole = Some(map);
            kind
        }
    };
    let (session_id, prompt_id) = sessions.ids(session, kind)?;
    if let Some(out) = fast.and_then(|b| b.write(&session_id, &prompt_id)) {
        return Some(Bytes::from(out));
    }
    let mut map = match whole {
        Some(map) => map,
        None => match serde_json::from_str::<Value>(text).ok()? {
            Value::Object(map) => map,
            _ => return None,
        },
    };
    apply(&mut map, &session_id, &prompt_id);
    write_json(&Value::Object(map)).map(Bytes::from)
}

/// Compact JSON text, numbers as `JSON.stringify` writes them.
fn write_json(value: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JsNumbers);
    serde::Serialize::serialize(value, &mut ser).ok()?;
    Some(out)
}

/// Compact JSON whose non-integer numbers are written the way `JSON.stringify` writes them (`0.000001`,
/// `1e+21`, `123456789012345680000`), where serde_json would write `1e-6`, `1e21`, `1.2345678901234568e20`:
/// a body nobody meant to change keeps its numbers' text. Integers and strings already match.
struct JsNumbers;

impl serde_json::ser::Formatter for JsNumbers {
    fn write_f64<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, value: f64) -> std::io::Result<()> {
        writer.write_all(js_number(value).as_bytes())
    }
}

/// ECMAScript `Number::toString` (radix 10) for a finite number; JSON has no NaN or infinities.
fn js_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as JS does: "d.ddd" and the exponent.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    // The decimal point sits after n digits.
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    let mut s = String::with_capacity(k.max(n).unsigned_abs() as usize + 8);
    if v < 0.0 {
        s.push('-');
    }
    if k <= n && n <= 21 {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-n) as usize));
        s.push_str(&digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if n > 0 { '+' } else { '-' });
        s.push_str(&(n - 1).unsigned_abs().to_string());
    }
    s
}

/// The DashScope provider's `buildRequest`, in its order (see the module comment).
fn apply(map: &mut Map<String, Value>, session_id: &str, prompt_id: &str) {
    let model = map.get("model").and_then(Value::as_str).map(str::to_ascii_lowercase).unwrap_or_default();
    let stream = map.get("stream").is_some_and(truthy);

    if model.starts_with("glm-") && !has_function_calling_context(map) {
        if let Some(Value::Array(messages)) = map.get_mut("messages") {
            flatten_text_content(messages);
        }
    } else {
        add_cache_control(map, stream);
    }

    if stream {
        match map.get_mut("stream_options") {
            Some(Value::Object(opts)) => {
                opts.insert("include_usage".into(), Value::Bool(true));
            }
            Some(other) => *other = include_usage(),
            None => {
                // pipeline.ts sets it right after `stream`.
                let at = map.keys().position(|k| k == "stream").map_or(map.len(), |i| i + 1);
                map.shift_insert(at, "stream_options".into(), include_usage());
            }
        }
    }

    if is_qwen_family(&model) {
        let mut metadata = Map::new();
        metadata.insert("sessionId".into(), Value::String(session_id.into()));
        metadata.insert("promptId".into(), Value::String(prompt_id.into()));
        map.insert("metadata".into(), Value::Object(metadata));
    }
    if is_vision_model(&model) {
        map.insert("vl_high_resolution_images".into(), Value::Bool(true));
    }
    map.insert("preserve_thinking".into(), Value::Bool(true));
}

/// `isQwenFamilyWireModel` (on the lower-cased model): where `metadata` goes.
fn is_qwen_family(model: &str) -> bool {
    model.starts_with("qwen") || model == "coder-model"
}

/// `isVisionModel` (on the lower-cased model): where `vl_high_resolution_images` goes.
fn is_vision_model(model: &str) -> bool {
    VISION_EXACT.contains(&model) || VISION_PREFIXES.iter().any(|p| model.starts_with(p))
}

fn include_usage() -> Value {
    let mut opts = Map::new();
    opts.insert("include_usage".into(), Value::Bool(true));
    Value::Object(opts)
}

fn ephemeral() -> Value {
    let mut marker = Map::new();
    marker.insert("type".into(), Value::String("ephemeral".into()));
    Value::Object(marker)
}

/// `addDashScopeCacheControl(request, stream ? "all" : "system_only")`.
fn add_cache_control(map: &mut Map<String, Value>, stream: bool) {
    if let Some(Value::Array(messages)) = map.get_mut("messages") {
        let system = messages.iter().position(|m| m.get("role").and_then(Value::as_str) == Some("system"));
        let last = messages.len().checked_sub(1);
        for (i, message) in messages.iter_mut().enumerate() {
            if Some(i) == system || (stream && Some(i) == last) {
                mark_last_part(message);
            }
        }
    }
    if stream {
        if let Some(Value::Array(tools)) = map.get_mut("tools") {
            if let Some(Value::Object(tool)) = tools.last_mut() {
                tool.insert("cache_control".into(), ephemeral());
            }
        }
    }
}

/// `addCacheControlToContent`: string content becomes one text part; the last part gets the marker.
/// Messages without content (`null`, e.g. tool calls only) are left alone, as are shapes the CLI never
/// produces (content that is neither a string nor an array, parts that are not objects).
fn mark_last_part(message: &mut Value) {
    let Some(content) = message.get_mut("content") else {
        return;
    };
    match content {
        Value::String(text) => {
            let mut part = Map::new();
            part.insert("type".into(), Value::String("text".into()));
            part.insert("text".into(), Value::String(std::mem::take(text)));
            part.insert("cache_control".into(), ephemeral());
            *content = Value::Array(vec![Value::Object(part)]);
        }
        Value::Array(parts) => {
            if let Some(Value::Object(part)) = parts.last_mut() {
                part.insert("cache_control".into(), ephemeral());
            }
        }
        _ => {}
    }
}

/// `hasFunctionCallingContext`: tools declared, or tool results / tool calls in the history.
fn has_function_calling_context(map: &Map<String, Value>) -> bool {
    if map.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return true;
    }
    let Some(messages) = map.get("messages").and_then(Value::as_array) else {
        return false;
    };
    messages.iter().any(|m| match m.get("role").and_then(Value::as_str) {
        Some("tool") => true,
        Some("assistant") => m.get("tool_calls").and_then(Value::as_array).is_some_and(|c| !c.is_empty()),
        _ => false,
    })
}

/// `flattenTextContent`: a content array made only of text parts becomes their texts joined by a blank line.
fn flatten_text_content(messages: &mut [Value]) {
    for message in messages {
        let Some(content) = message.get_mut("content") else {
            continue;
        };
        let Value::Array(parts) = content else {
            continue;
        };
        if parts.is_empty() || !parts.iter().all(|p| p.get("type").and_then(Value::as_str) == Some("text")) {
            continue;
        }
        let text =
            parts.iter().map(|p| p.get("text").and_then(Value::as_str).unwrap_or("")).collect::<Vec<_>>().join("\n\n");
        *content = Value::String(text);
    }
}

/// Title side query, new prompt, or a turn continuing one (see `Conversation::prompt_id`).
fn classify(map: &Map<String, Value>) -> Kind {
    let Some(messages) = map.get("messages").and_then(Value::as_array) else {
        return Kind::Continuation;
    };
    let no_tools = map.get("tools").and_then(Value::as_array).is_none_or(|t| t.is_empty());
    let first_user = messages.iter().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    if no_tools && first_user.and_then(first_text).is_some_and(|t| t.starts_with(OPENCODE_TITLE_PROMPT)) {
        return Kind::Title;
    }
    match messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) {
        Some("user") => Kind::Prompt,
        _ => Kind::Continuation,
    }
}

/// The text of a message: string content, or its first text part.
fn first_text(message: &Value) -> Option<&str> {
    match message.get("content")? {
        Value::String(s) => Some(s),
        Value::Array(parts) => parts.iter().find_map(|p| {
            (p.get("type").and_then(Value::as_str) == Some("text"))
                .then(|| p.get("text").and_then(Value::as_str))
                .flatten()
        }),
        _ => None,
    }
}

/// JavaScript truthiness, as the CLI tests `request.stream`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// POST to `…/chat/completions` (query and fragment ignored).
fn is_chat_completion(req: &Request) -> bool {
    // Byte searches: a `split` on a char set and a lower-cased copy ran the generic searchers on every request.
    let end = req.url.bytes().position(|b| b == b'?' || b == b'#').unwrap_or(req.url.len());
    req.method.eq_ignore_ascii_case("POST") && req.url[..end].trim_end_matches('/').ends_with("/chat/completions")
}

/// No content type (fetch with a string body says text/plain, the AI SDK says application/json) or a JSON one.
fn declared_json(headers: &[(String, String)]) -> bool {
    header(headers, "content-type").is_none_or(|v| v.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"json")))
}

/// OpenCode's session id: `x-session-id` (`x-session-affinity` carries the same value).
fn session_key(headers: &[(String, String)]) -> Option<&str> {
    header(headers, "x-session-id").or_else(|| header(headers, "x-session-affinity")).filter(|v| !v.is_empty())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// A random (version 4, RFC 9562 variant) UUID, lower-case hex, as `crypto.randomUUID()` prints it.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawOptions;

    /// Bodies and what the CLI's own DashScope provider made of them (`__test__/support/cli-bodies.mjs`),
    /// with sessionId "SID" and promptId "PID".
    const FIXTURE: &str = include_str!("../../../__test__/fixtures/cli-bodies.json");

    fn fixture() -> Vec<(String, String, String)> {
        let Value::Object(cases) = serde_json::from_str(FIXTURE).unwrap() else { panic!("fixture is an object") };
        cases
            .into_iter()
            .map(|(name, c)| (name, c["in"].as_str().unwrap().to_string(), c["out"].as_str().unwrap().to_string()))
            .collect()
    }

    fn applied(body: &str, session_id: &str, prompt_id: &str) -> String {
        let Value::Object(mut map) = serde_json::from_str(body).unwrap() else { panic!("object") };
        apply(&mut map, session_id, prompt_id);
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, JsNumbers);
        serde::Serialize::serialize(&Value::Object(map), &mut ser).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn settings(align: bool) -> Settings {
        Settings::resolve(&RawOptions { align_request_body: Some(align), ..Default::default() }).unwrap()
    }

    fn chat(body: &[u8], headers: &[(&str, &str)]) -> Request {
        Request {
            url: "https://portal.qwen.ai/v1/chat/completions".into(),
            method: "POST".into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Some(Bytes::copy_from_slice(body)),
        }
    }

    fn aligned(req: &Request, sessions: &Sessions) -> Value {
        let out = align(req.body.clone(), req, &settings(true), sessions).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn is_uuid_v4(s: &str) -> bool {
        let b = s.as_bytes();
        s.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && s.chars().enumerate().all(|(i, c)| [8, 13, 18, 23].contains(&i) || matches!(c, '0'..='9' | 'a'..='f'))
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn every_fixture_case_comes_out_byte_for_byte_as_the_cli_sends_it() {
        let cases = fixture();
        assert!(cases.len() >= 10, "fixture has its cases");
        for (name, input, cli) in cases {
            assert_eq!(applied(&input, "SID", "PID"), cli, "case {name}");
        }
    }

    #[test]
    fn through_align_the_fixture_gets_real_ids_and_keeps_the_cli_bytes() {
        let sessions = Sessions::default();
        for (name, input, cli) in fixture() {
            let key = format!("ses_fixture_{name}");
            let req = chat(input.as_bytes(), &[("content-type", "application/json"), ("x-session-id", &key)]);
            let out = align(req.body.clone(), &req, &settings(true), &sessions).unwrap();
            let text = String::from_utf8(out.to_vec()).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            let Some(meta) = value.get("metadata") else {
                assert_eq!(text, cli, "case {name} (no metadata for this model)");
                continue;
            };
            let sid = meta["sessionId"].as_str().unwrap();
            assert!(is_uuid_v4(sid), "{sid}");
            let pid = if name == "title" { TITLE_PROMPT_ID.to_string() } else { format!("{sid}########0") };
            assert_eq!(text, cli.replace("SID", sid).replace("PID", &pid), "case {name}");
        }
    }

    #[test]
    fn a_system_string_becomes_a_marked_text_part_and_non_streaming_marks_nothing_else() {
        let out = applied(
            r#"{"model":"coder-model","messages":[{"role":"system","content":"S"},{"role":"user","content":"U"}],"tools":[{"type":"function"}],"stream":false}"#,
            "s",
            "p",
        );
        assert_eq!(
            out,
            r#"{"model":"coder-model","messages":[{"role":"system","content":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"U"}],"tools":[{"type":"function"}],"stream":false,"metadata":{"sessionId":"s","promptId":"p"},"vl_high_resolution_images":true,"preserve_thinking":true}"#
        );
        // No `stream` at all is non-streaming too, and gets no stream_options.
        let out = applied(r#"{"model":"coder-model","messages":[{"role":"user","content":"U"}]}"#, "s", "p");
        assert!(!out.contains("cache_control") && !out.contains("stream_options"), "{out}");
    }

    #[test]
    fn streaming_marks_the_last_message_and_the_last_tool_and_adds_stream_options_after_stream() {
        let out = applied(
            r#"{"model":"qwen3-coder-next","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream":true,"tools":[{"type":"function","function":{"name":"x"}},{"type":"function","function":{"name":"y"}}],"tool_choice":"auto"}"#,
            "s",
            "p",
        );
        assert_eq!(
            out,
            r#"{"model":"qwen3-coder-next","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]}],"stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"x"}},{"type":"function","function":{"name":"y"},"cache_control":{"type":"ephemeral"}}],"tool_choice":"auto","metadata":{"sessionId":"s","promptId":"p"},"preserve_thinking":true}"#
        );
        // An existing stream_options keeps its place and its other fields.
        let out = applied(r#"{"model":"m","stream_options":{"x":1,"include_usage":false},"stream":true}"#, "s", "p");
        assert_eq!(
            out,
            r#"{"model":"m","stream_options":{"x":1,"include_usage":true},"stream":true,"preserve_thinking":true}"#
        );
    }

    #[test]
    fn vl_high_resolution_images_follows_the_clis_vision_list_not_the_request() {
        // The CLI decides by model: a listed model gets it even without an image, others never do.
        for (model, vl) in [
            ("coder-model", true),
            ("Coder-Model", true),
            ("qwen3.5-plus", true),
            ("qwen3.6-plus-2026-01", true),
            ("qwen3.7-plus", true),
            ("qwen-vl-max", true),
            ("qwen3-vl-plus", true),
            ("vision-model", false),
            ("qwen3-coder-plus", false),
            ("qwen3-max-2026-01-23", false),
            ("kimi-k2.5", false),
        ] {
            let body = format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,AA"}}}}]}}]}}"#
            );
            let out: Value = serde_json::from_str(&applied(&body, "s", "p")).unwrap();
            assert_eq!(out.get("vl_high_resolution_images") == Some(&Value::Bool(true)), vl, "{model}");
            assert_eq!(out["preserve_thinking"], Value::Bool(true), "{model}");
        }
        let out = applied(r#"{"model":"qwen3.5-plus","messages":[{"role":"user","content":"text only"}]}"#, "s", "p");
        assert!(out.ends_with(r#""vl_high_resolution_images":true,"preserve_thinking":true}"#), "{out}");
    }

    #[test]
    fn metadata_goes_to_qwen_models_only() {
        for (model, sent) in [
            ("coder-model", true),
            ("qwen3-coder-plus", true),
            ("Qwen3.5-Plus", true),
            ("glm-5", false),
            ("MiniMax-M2.5", false),
            ("kimi-k2.5", false),
            ("vision-model", false),
        ] {
            let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
            let out: Value = serde_json::from_str(&applied(&body, "s", "p")).unwrap();
            assert_eq!(out.get("metadata").is_some(), sent, "{model}");
        }
    }

    #[test]
    fn prompt_ids_count_user_prompts_and_tool_continuations_share_their_prompts_id() {
        let sessions = Sessions::default();
        let ct = ("content-type", "application/json");
        let sid_header = ("x-session-id", "ses_counting_test");
        let title = br#"{"model":"coder-model","messages":[{"role":"system","content":"t"},{"role":"user","content":"Generate a title for this conversation:\n"},{"role":"user","content":"hi"}],"stream":true}"#;
        let prompt = br#"{"model":"coder-model","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"tools":[{"type":"function"}],"stream":true}"#;
        let tool_turn = br#"{"model":"coder-model","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]},{"role":"tool","tool_call_id":"1","content":"ok"}],"tools":[{"type":"function"}],"stream":true}"#;
        let ids: Vec<(String, String)> = [&title[..], prompt, tool_turn, tool_turn, prompt, title, tool_turn, prompt]
            .iter()
            .map(|b| {
                let v = aligned(&chat(b, &[ct, sid_header]), &sessions);
                (
                    v["metadata"]["sessionId"].as_str().unwrap().to_string(),
                    v["metadata"]["promptId"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let sid = &ids[0].0;
        assert!(is_uuid_v4(sid), "{sid}");
        assert!(ids.iter().all(|(s, _)| s == sid), "one sessionId for the whole OpenCode session");
        let n: Vec<String> =
            ids.iter().map(|(_, p)| p.strip_prefix(&format!("{sid}########")).unwrap_or(p).to_string()).collect();
        assert_eq!(n, ["side-query:session-title", "0", "0", "0", "1", "side-query:session-title", "1", "2"]);
    }

    #[test]
    fn a_session_first_seen_mid_prompt_starts_at_prompt_zero() {
        let sessions = Sessions::default();
        let h = [("x-session-id", "ses_mid_prompt_test")];
        let tool_turn = br#"{"model":"coder-model","messages":[{"role":"tool","tool_call_id":"1","content":"ok"}]}"#;
        let prompt = br#"{"model":"coder-model","messages":[{"role":"user","content":"next"}]}"#;
        let a = aligned(&chat(tool_turn, &h), &sessions);
        let b = aligned(&chat(prompt, &h), &sessions);
        assert!(a["metadata"]["promptId"].as_str().unwrap().ends_with("########0"));
        assert!(b["metadata"]["promptId"].as_str().unwrap().ends_with("########1"));
    }

    #[test]
    fn each_opencode_session_has_its_own_uuid_in_every_client_and_unnamed_requests_use_the_clients() {
        let (client_a, client_b) = (Sessions::default(), Sessions::default());
        let body = br#"{"model":"coder-model","messages":[{"role":"user","content":"hi"}]}"#;
        let sid = |sessions: &Sessions, headers: &[(&str, &str)]| {
            aligned(&chat(body, headers), sessions)["metadata"]["sessionId"].as_str().unwrap().to_string()
        };
        let one_a = sid(&client_a, &[("x-session-id", "ses_uuid_one")]);
        let one_b = sid(&client_b, &[("X-Session-Id", "ses_uuid_one")]);
        let two = sid(&client_a, &[("x-session-id", "ses_uuid_two")]);
        let affinity = sid(&client_a, &[("x-session-affinity", "ses_uuid_two")]);
        assert_eq!(one_a, one_b, "same OpenCode session, same id, whichever client");
        assert_ne!(one_a, two);
        assert_eq!(two, affinity, "x-session-affinity names the same session");
        let unnamed_a = sid(&client_a, &[]);
        assert_eq!(unnamed_a, sid(&client_a, &[("x-session-id", "")]), "an empty header names no session");
        let unnamed_b = sid(&client_b, &[]);
        assert_ne!(unnamed_a, unnamed_b, "without a session header each client is its own session");
        for s in [&one_a, &two, &unnamed_a, &unnamed_b] {
            assert!(is_uuid_v4(s), "{s}");
        }
    }

    #[test]
    fn bodies_that_are_not_ours_to_touch_go_out_as_the_same_bytes() {
        let sessions = Sessions::default();
        let json_ct = ("content-type", "application/json");
        let good = br#"{"model":"coder-model","messages":[{"role":"system","content":"s"}]}"#;
        let same = |req: Request, s: &Settings| {
            let input = req.body.clone().unwrap();
            let out = align(req.body.clone(), &req, s, &sessions).unwrap();
            assert_eq!(out, input);
            // Not even copied.
            assert_eq!(out.as_ptr(), input.as_ptr());
        };
        same(chat(good, &[json_ct]), &settings(false));
        for body in [
            &b"[1,2]"[..],
            b"\"text\"",
            b"null",
            b"",
            b"{",
            b"{\"a\":1} trailing",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"x\ny\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":1,}",
            b"{\"a\":01}",
            // Left to the full path (GLM without tools), whose Value cannot hold a lone surrogate.
            b"{\"model\":\"glm-5\",\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}",
            b"model=coder-model",
        ] {
            same(chat(body, &[json_ct]), &settings(true));
        }
        same(chat(good, &[("content-type", "text/plain")]), &settings(true));
        let mut get = chat(good, &[json_ct]);
        get.method = "GET".into();
        same(get, &settings(true));
        for url in [
            "https://portal.qwen.ai/v1/models",
            "https://portal.qwen.ai/v1/completions",
            "https://portal.qwen.ai/v1/chat/completions/extra",
            "https://portal.qwen.ai/v1/embeddings?x=/chat/completions",
        ] {
            let mut req = chat(good, &[json_ct]);
            req.url = url.into();
            same(req, &settings(true));
        }
        let none = chat(good, &[json_ct]);
        assert!(align(None, &none, &settings(true), &sessions).is_none());
        // The positive control: the same body on the chat path is rewritten (also with a query or slash).
        for url in [
            "https://h/v1/chat/completions?a=1",
            "https://h/v1/chat/completions/",
            "https://h/v1/chat/completions#frag?x",
            "http://127.0.0.1:9/chat/completions",
        ] {
            let mut req = chat(good, &[json_ct]);
            req.url = url.into();
            let out = align(req.body.clone(), &req, &settings(true), &sessions).unwrap();
            assert_ne!(out, req.body.clone().unwrap(), "{url}");
        }
        // A JSON content type in any case and with parameters.
        for ct in ["Application/JSON; charset=UTF-8", "application/vnd.api+json", "x/JsOn"] {
            let req = chat(good, &[("content-type", ct)]);
            let out = align(req.body.clone(), &req, &settings(true), &sessions).unwrap();
            assert_ne!(out, req.body.clone().unwrap(), "{ct}");
        }
        same(chat(good, &[("content-type", "text/js-on")]), &settings(true));
        // No content type at all counts as JSON (what fetch says for a Uint8Array body).
        let out = align(Some(Bytes::from_static(good)), &chat(good, &[]), &settings(true), &sessions).unwrap();
        assert!(out.windows(13).any(|w| w == b"cache_control"));
    }

    #[test]
    fn numbers_and_strings_keep_their_json_text() {
        let body = r#"{"model":"m","temperature":0.5,"top_p":0.95,"a":1e-7,"b":-3,"c":32000,"d":18446744073709551615,"e":0.1,"s":"é\u0001 \"x\" \\ / 😀  "}"#;
        // As JSON.stringify writes them (`\u0001` lower-case, non-ASCII raw, U+2028 raw).
        let js = r#"{"model":"m","temperature":0.5,"top_p":0.95,"a":1e-7,"b":-3,"c":32000,"d":18446744073709551615,"e":0.1,"s":"é\u0001 \"x\" \\ / 😀  ","preserve_thinking":true}"#;
        assert_eq!(applied(body, "s", "p"), js);
    }

    /// Both paths on one body: the fast one (None when it does not take the body) and the full one.
    #[allow(clippy::type_complexity)]
    fn both_paths(body: &str) -> (Option<(Kind, String)>, Option<(Kind, String)>) {
        let fast =
            fast::Body::parse(body).map(|b| (b.kind(), String::from_utf8(b.write("SID", "PID").unwrap()).unwrap()));
        let full = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(map)) => {
                let kind = classify(&map);
                let mut map = map;
                apply(&mut map, "SID", "PID");
                Some((kind, String::from_utf8(write_json(&Value::Object(map)).unwrap()).unwrap()))
            }
            _ => None,
        };
        (fast, full)
    }

    /// On the compact JSON JSON.stringify writes (key escapes aside, which both paths write anew).
    #[test]
    fn the_fast_path_writes_the_full_paths_bytes() {
        let mut bodies: Vec<String> = fixture().into_iter().map(|(_, input, _)| input).collect();
        bodies.push(String::from_utf8(opencode_body(100 * 1024)).unwrap());
        bodies.extend(
            [
                r#"{"model":"coder-model","messages":[{"role":"user","content":"u"},{"role":"system","content":"late system"},{"role":"system","content":"second"}],"stream":true}"#,
                r#"{"model":"qwen3.5-plus","stream":"yes","messages":[{"role":"user","content":[]}],"tools":[]}"#,
                r#"{"model":"coder-model","stream":1,"stream_options":null,"messages":[7,{"role":"tool","content":{"odd":true}}],"tools":[{"a":1},"last is not an object"]}"#,
                r#"{"model":"coder-model","stream":0,"stream_options":{"x":1},"messages":[{"role":"system","content":null}]}"#,
                r#"{"model":"QWEN-VL-MAX","vl_high_resolution_images":false,"messages":[{"role":"user","content":"Generate a title for this conversation:\n"}],"metadata":"s","preserve_thinking":null}"#,
                r#"{"model":"coder-model","messages":[{"role":"user","content":[{"type":"text","text":"Generate a title for this conversation:\n"}]},{"role":"user","content":"x"}],"tools":[{"n":1}],"stream":true}"#,
                r#"{"mo\u0064el":"coder-model","m\u00e9ta":"é/","messages":[],"stream":true,"stream_options":{"include_usage":false}}"#,
                r#"{"model":5,"messages":[{"role":"user","content":"a"}]}"#,
                // The title prompt in a later user message only: not a title request.
                r#"{"model":"coder-model","messages":[{"role":"user","content":"hi"},{"role":"user","content":"Generate a title for this conversation:\n"}]}"#,
                r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[]}],"stream":true}"#,
                r#"{}"#,
            ]
            .map(String::from),
        );
        for body in &bodies {
            let (fast, full) = both_paths(body);
            let Some(fast) = fast else {
                assert!(body.contains(r#""model":"glm-5""#) && !body.contains("tools"), "fast path takes {body}");
                continue;
            };
            assert_eq!(Some(&fast), full.as_ref(), "{body}");
        }
    }

    /// The fast path parses a first user message only when its raw text could hold the title prompt.
    #[test]
    fn the_title_prompt_is_found_also_behind_unicode_escapes_and_only_in_the_first_user_message() {
        let kind = |body: &str| {
            let (fast, full) = both_paths(body);
            let (fast, full) = (fast.unwrap().0, full.unwrap().0);
            assert_eq!(fast, full, "{body}");
            fast
        };
        let plain = r#"{"model":"coder-model","messages":[{"role":"user","content":"Generate a title for this conversation:\n"}]}"#;
        let escaped = r#"{"model":"coder-model","messages":[{"role":"user","content":"\u0047enerate a title for this conversation:\n"}]}"#;
        let later = r#"{"model":"coder-model","messages":[{"role":"user","content":"hi"},{"role":"user","content":"Generate a title for this conversation:\n"}]}"#;
        assert_eq!(kind(plain), Kind::Title);
        assert_eq!(kind(escaped), Kind::Title);
        assert_eq!(kind(later), Kind::Prompt);
    }

    #[test]
    fn bodies_the_fast_path_leaves_to_the_full_path_are_still_rewritten() {
        for body in [
            r#"{"model":"glm-5","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
            r#"{"model":"coder-model","model":"qwen3-coder-plus","messages":[]}"#,
            r#"{"model":"coder-model","messages":"not a list","tools":null}"#,
        ] {
            let (fast, full) = both_paths(body);
            assert!(fast.is_none(), "{body}");
            let full = full.unwrap().1;
            let sessions = Sessions::default();
            let out = rewrite(body.as_bytes(), None, &sessions).unwrap();
            let value: Value = serde_json::from_slice(&out).unwrap();
            let sid = value.get("metadata").map(|m| m["sessionId"].as_str().unwrap().to_string());
            let expected = match sid {
                Some(sid) => full.replace("SID", &sid).replace("PID", &format!("{sid}########0")),
                None => full,
            };
            assert_eq!(String::from_utf8(out.to_vec()).unwrap(), expected, "{body}");
        }
        // Duplicate keys end as JSON.parse has them: the last value, at the first key's place.
        let out =
            rewrite(br#"{"model":"glm-5","stream":false,"model":"qwen3-coder-plus"}"#, None, &Sessions::default())
                .unwrap();
        assert!(out.starts_with(br#"{"model":"qwen3-coder-plus","stream":false,"metadata":"#), "{out:?}");
    }

    #[test]
    fn text_outside_the_changed_parts_is_kept_exactly() {
        // Whitespace, escapes JSON.stringify would not write, lone surrogates (JSON.parse takes them, so
        // OpenCode can send them) and number spellings stay as they came, also inside the messages and the
        // tool that get a marker; only the structure around the changes is written compactly.
        let body = "{ \"model\" : \"coder-model\",\n  \"messages\" : [ {\"role\":\"system\",\"content\":\"\\ud800 s\"} , {\"role\":\"user\", \"content\": \"\\u00e9 \\/ \\ud800\"} ],\n  \"temperature\": 1E-1, \"n\": 1.0, \"stream\": true,\n \"tools\": [ { \"x\" : 1E-6, \"y\": 2.50 } ] }";
        let (fast, full) = both_paths(body);
        let (_, fast) = fast.unwrap();
        assert_eq!(
            fast,
            "{\"model\":\"coder-model\",\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"\\ud800 s\",\"cache_control\":{\"type\":\"ephemeral\"}}]},{\"role\":\"user\", \"content\": [{\"type\":\"text\",\"text\":\"\\u00e9 \\/ \\ud800\",\"cache_control\":{\"type\":\"ephemeral\"}}]}],\"temperature\":1E-1,\"n\":1.0,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"tools\":[{ \"x\" : 1E-6, \"y\": 2.50 ,\"cache_control\":{\"type\":\"ephemeral\"}}],\"metadata\":{\"sessionId\":\"SID\",\"promptId\":\"PID\"},\"vl_high_resolution_images\":true,\"preserve_thinking\":true}"
        );
        assert!(full.is_none(), "serde_json's Value cannot hold a lone surrogate");
    }

    #[test]
    fn non_integers_are_written_as_json_stringify_writes_them() {
        // Left: JSON text as parsed; right: what `JSON.stringify(JSON.parse(text))` gives in Node.
        for (text, js) in [
            ("0.000001", "0.000001"),
            ("0.0000015", "0.0000015"),
            ("1e-7", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("2.5e-5", "0.000025"),
            ("1e21", "1e+21"),
            ("1.5e300", "1.5e+300"),
            ("-1.5e300", "-1.5e+300"),
            ("123456789012345680000", "123456789012345680000"),
            ("99999999999999999999", "100000000000000000000"),
            ("1e16", "10000000000000000"),
            ("0.1", "0.1"),
            ("-0.5", "-0.5"),
            ("100.25", "100.25"),
            ("1.0", "1"),
            ("-0", "0"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("0.30000000000000004", "0.30000000000000004"),
            // Integers that fit 64 bits keep their text. JS would round these two, but a body written by
            // JS never holds more digits than a double has, so that difference cannot arise.
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
        ] {
            let body = format!(r#"{{"x":{text}}}"#);
            assert_eq!(applied(&body, "s", "p"), format!(r#"{{"x":{js},"preserve_thinking":true}}"#), "{text}");
        }
    }

    #[test]
    fn the_registry_forgets_the_least_recently_used_session_beyond_its_cap() {
        let mut reg = Registry::default();
        let first = reg.prompt_id("ses_0", Kind::Prompt).0;
        for i in 1..MAX_SESSIONS {
            reg.prompt_id(&format!("ses_{i}"), Kind::Prompt);
        }
        // ses_0 used again: ses_1 is now the least recently used.
        assert_eq!(reg.prompt_id("ses_0", Kind::Continuation).0, first);
        reg.prompt_id("ses_new", Kind::Prompt);
        assert_eq!(reg.by_session.len(), MAX_SESSIONS);
        assert!(reg.by_session.contains_key("ses_0") && !reg.by_session.contains_key("ses_1"));
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let ids: std::collections::HashSet<String> = (0..200).map(|_| uuid_v4()).collect();
        assert_eq!(ids.len(), 200);
        assert!(ids.iter().all(|s| is_uuid_v4(s)), "{ids:?}");
    }

    /// An OpenCode-shaped body of about `size` bytes: a 10 KB system prompt, ten tools, and a history of user
    /// / assistant / tool messages.
    pub(crate) fn opencode_body(size: usize) -> Vec<u8> {
        let system = "You are opencode, an interactive CLI tool. ".repeat(240);
        let tools: Vec<Value> = ["bash", "edit", "glob", "grep", "read", "skill", "task", "todowrite", "webfetch", "write"]
            .iter()
            .map(|n| serde_json::json!({"type":"function","function":{"name":n,"description":"Runs the tool. ".repeat(20),"parameters":{"type":"object","properties":{"path":{"type":"string","description":"A path."}},"required":["path"]}}}))
            .collect();
        let mut messages = vec![serde_json::json!({"role":"system","content":system})];
        let mut i = 0;
        while serde_json::to_vec(&messages).unwrap().len() + serde_json::to_vec(&tools).unwrap().len() < size {
            messages.push(serde_json::json!({"role":"user","content":format!("Please look at file {i} and fix the \"bug\" in it.")}));
            messages.push(serde_json::json!({"role":"assistant","content":null,"tool_calls":[{"id":format!("call_{i}"),"type":"function","function":{"name":"read","arguments":format!("{{\"path\":\"src/file{i}.rs\"}}")}}]}));
            messages.push(serde_json::json!({"role":"tool","tool_call_id":format!("call_{i}"),"content":"fn main() {\n    println!(\"hello\");\n}\n".repeat(20)}));
            i += 1;
        }
        serde_json::to_vec(&serde_json::json!({"model":"coder-model","max_tokens":32000,"messages":messages,"tools":tools,"tool_choice":"auto","stream":true,"stream_options":{"include_usage":true}})).unwrap()
    }

    /// The small chat body of bench/profile.mjs rewritten with cold caches (an 8 MiB walk between rewrites, as
    /// an HTTP round trip leaves them) and hot: `cargo test --release --lib
    /// pipeline::body::tests::rewrite_cold -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn rewrite_cold() {
        let body = br#"{"model":"coder-model","stream":false,"messages":[{"role":"user","content":"hi"}]}"#;
        let sessions = Sessions::default();
        let mut junk = vec![0u8; 8 << 20];
        let mut cold = Vec::new();
        let mut hot = Vec::new();
        for round in 0..400u32 {
            for i in (0..junk.len()).step_by(64) {
                junk[i] = junk[i].wrapping_add(round as u8);
            }
            std::hint::black_box(&junk);
            let t = std::time::Instant::now();
            std::hint::black_box(rewrite(std::hint::black_box(body), None, &sessions).unwrap());
            cold.push(t.elapsed().as_nanos());
            let t = std::time::Instant::now();
            std::hint::black_box(rewrite(std::hint::black_box(body), None, &sessions).unwrap());
            hot.push(t.elapsed().as_nanos());
        }
        cold.sort();
        hot.sort();
        println!("rewrite_cold_ns={} rewrite_hot_ns={}", cold[cold.len() / 2], hot[hot.len() / 2]);
    }

    /// `cargo test --release --lib pipeline::body::tests::rewrite_cost -- --ignored --nocapture`:
    /// prints `rewrite_us=<median µs>` (and `rewrite_us_min`) for one rewrite of a 100 KB body, or of the body in the file
    /// `QWEN_BENCH_BODY` names (bench/body-rewrite.mjs passes the body it sends through the pipeline).
    #[test]
    #[ignore]
    fn rewrite_cost() {
        let body = match std::env::var("QWEN_BENCH_BODY") {
            Ok(path) => std::fs::read(path).expect("QWEN_BENCH_BODY is readable"),
            Err(_) => opencode_body(100 * 1024),
        };
        let sessions = Sessions::default();
        let mut samples = Vec::new();
        for _ in 0..31 {
            let start = std::time::Instant::now();
            let n = 50;
            for _ in 0..n {
                std::hint::black_box(rewrite(std::hint::black_box(&body), Some("ses_bench"), &sessions).unwrap());
            }
            samples.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        samples.sort_by(f64::total_cmp);
        println!("body_bytes={}", body.len());
        // Median and fastest batch (the machine may be shared: noise only ever adds time).
        println!("rewrite_us={:.1}", samples[samples.len() / 2]);
        println!("rewrite_us_min={:.1}", samples[0]);
    }
}
