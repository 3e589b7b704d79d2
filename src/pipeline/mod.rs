//! The request pipeline behind the plugin's `fetch`: token → CLI headers → machine-wide pacing → send →
//! 401/403 forced refresh + one retry, 429 Retry-After, 5xx/transport retries before the first byte →
//! streamed body. Every wait and the body itself end at once when the request's `CancellationToken` fires.

pub mod body;
pub mod exchange;
pub mod headers;
pub mod model_alias;
pub mod pacing;
pub mod retry;
pub mod trust;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::debug_log;
use crate::error::{Error, Result};
use crate::http;
use crate::token_manager::TokenManager;
pub use exchange::{Exchange, Verdict, DELIVERED_BELOW, PREFIX_LIMIT};

/// How requests are authorised.
#[derive(Clone)]
pub enum Auth {
    /// Qwen OAuth: token from the manager, `X-DashScope-AuthType: qwen-oauth`.
    OAuth(Arc<TokenManager>),
    /// A DashScope / Coding Plan API key.
    ApiKey(String),
}

/// A request as `fetch(url, init)` describes it.
pub struct Request {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Resolved at the response headers, like `fetch`.
pub struct Response {
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    pub url: String,
    /// The caller owns the connection through this stream: dropping it closes the connection (see `bridge`,
    /// which also ends it on abort).
    pub body: BodyStream,
    /// The whole body, when it had already arrived together with the headers (small answers usually do);
    /// `body` is then empty. Lets the caller hand headers and body over in one go instead of streaming.
    pub complete_body: Option<Bytes>,
}

pub struct Pipeline {
    settings: Arc<Settings>,
    auth: Auth,
    /// Session and prompt ids for CLI-aligned bodies.
    pub(crate) sessions: body::Sessions,
    /// The latest URL that passed the trust check: an agent sends request after request to one endpoint.
    last_trusted: std::sync::Mutex<Option<(String, reqwest::Url)>>,
}

impl Pipeline {
    pub fn new(settings: Arc<Settings>, auth: Auth) -> Self {
        Pipeline { settings, auth, sessions: body::Sessions::default(), last_trusted: Default::default() }
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// `trust::check`, remembered for the latest URL that passed.
    pub(crate) fn trusted_url(&self, url: &str) -> Result<reqwest::Url> {
        let mut last = self.last_trusted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((text, parsed)) = last.as_ref().filter(|(text, _)| text == url) {
            debug_assert_eq!(text, url);
            return Ok(parsed.clone());
        }
        let parsed = trust::check(url, &self.settings)?;
        *last = Some((url.to_string(), parsed.clone()));
        Ok(parsed)
    }

    pub async fn execute(&self, req: Request, cancel: CancellationToken) -> Result<Response> {
        if cancel.is_cancelled() {
            return Err(Error::Aborted);
        }
        let mut ex = Exchange::new(self, req)?;
        // Built on first use (rustls roots take ms): before the pacing wait, not between a slot and the send.
        let client = http::client();
        loop {
            let headers = match ex.ready() {
                Some(headers) => headers,
                None => ex.prepare(&cancel).await?,
            };
            let mut builder = client.request(ex.method.clone(), ex.url.clone()).headers(header_map(headers)?);
            if let Some(body) = &ex.body {
                builder = builder.body(body.clone());
            }
            let sent = tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Aborted),
                r = builder.send() => r,
            };
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) if e.is_builder() => return Err(Error::invalid_arg("request", e.to_string())),
                Err(e) => match ex.network_error(Error::network(&ex.endpoint, &e)) {
                    Verdict::Retry(wait) => {
                        pause(wait, &cancel).await?;
                        continue;
                    }
                    Verdict::Fail(err) => return Err(err),
                    Verdict::Deliver | Verdict::ReadPrefix => unreachable!("a failed send has nothing to deliver"),
                },
            };
            let status = resp.status().as_u16();
            let verdict = match ex.judge(status, resp.headers()) {
                Verdict::ReadPrefix => {
                    let head = Head::of(&resp);
                    let (prefix, rest) = match read_prefix(resp, &ex.endpoint, &cancel).await {
                        Ok(read) => read,
                        Err(Error::Aborted) => return Err(Error::Aborted),
                        // It broke off mid-body: still the same status, just without a readable reason.
                        Err(_) => (Bytes::new(), None),
                    };
                    match ex.judge_prefix(status, &prefix).await {
                        Verdict::Deliver => return Ok(head.with_body(prefix, rest)),
                        other => other,
                    }
                }
                Verdict::Deliver => {
                    // From here on the body belongs to the caller: no replay whatever happens to it.
                    let head = Head::of(&resp);
                    let endpoint = ex.endpoint.clone();
                    let mut stream: BodyStream =
                        Box::pin(resp.bytes_stream().map(move |r| r.map_err(|e| Error::network(&endpoint, &e))));
                    let (ready, complete) = take_ready(&mut stream);
                    if complete {
                        return Ok(head.complete(ready));
                    }
                    let body: BodyStream = Box::pin(futures_util::stream::iter(ready).chain(stream));
                    return Ok(head.into_response(body));
                }
                // Dropping the response closes its connection; its body is of no use to anyone.
                other => other,
            };
            match verdict {
                Verdict::Retry(wait) => pause(wait, &cancel).await?,
                Verdict::Fail(err) => return Err(err),
                Verdict::Deliver | Verdict::ReadPrefix => unreachable!("handled above"),
            }
        }
    }

    /// The body to send. With an API key: first refuse a key whose shape cannot fit the endpoint (before
    /// pacing or sending anything), then map the OAuth model ids onto the plan's default model.
    pub(crate) fn key_path_body(&self, req: &Request) -> Result<Option<Bytes>> {
        let Auth::ApiKey(key) = &self.auth else { return Ok(req.body.clone()) };
        if let Some(reason) = crate::api_key::check_key(key, &req.url) {
            return Err(Error::KeyInvalid { reason });
        }
        let Some(body) = &req.body else { return Ok(None) };
        let json = req
            .headers
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
            .is_none_or(|(_, v)| v.to_ascii_lowercase().contains("json"));
        if !json {
            return Ok(Some(body.clone()));
        }
        let plan = crate::api_key::plan_for(&req.url, key);
        match model_alias::rewrite(body, plan) {
            Some(rewritten) => {
                debug_log!("{} key: OAuth model id mapped to the plan's default model", plan.name());
                Ok(Some(rewritten))
            }
            None => Ok(Some(body.clone())),
        }
    }
}

/// Wait before a retry (none after a refused token), ending early with `Aborted`.
async fn pause(wait: Duration, cancel: &CancellationToken) -> Result<()> {
    if wait.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = cancel.cancelled() => Err(Error::Aborted),
        _ = tokio::time::sleep(wait) => Ok(()),
    }
}

/// Status line and headers of a response whose body is handled separately.
struct Head {
    status: u16,
    status_text: String,
    headers: Vec<(String, String)>,
    url: String,
}

impl Head {
    fn of(resp: &reqwest::Response) -> Head {
        let status = resp.status();
        Head {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or("").to_string(),
            headers: resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            url: resp.url().to_string(),
        }
    }

    fn into_response(self, body: BodyStream) -> Response {
        Response {
            status: self.status,
            status_text: self.status_text,
            headers: self.headers,
            url: self.url,
            body,
            complete_body: None,
        }
    }

    /// A response whose body is all here already: no body task, no channel.
    fn complete(self, chunks: Vec<Result<Bytes>>) -> Response {
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().and_then(|c| c.ok()).unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::new();
                for c in chunks.into_iter().flatten() {
                    all.extend_from_slice(&c);
                }
                all.freeze()
            }
        };
        Response {
            status: self.status,
            status_text: self.status_text,
            headers: self.headers,
            url: self.url,
            body: Box::pin(futures_util::stream::empty()),
            complete_body: Some(body),
        }
    }

    /// A response whose first bytes were already read: replay them, then the rest of the stream.
    fn with_body(self, prefix: Bytes, rest: Option<BodyStream>) -> Response {
        let head = (!prefix.is_empty()).then_some(Ok(prefix));
        let first = futures_util::stream::iter(head);
        let body: BodyStream = match rest {
            Some(rest) => Box::pin(first.chain(rest)),
            None => Box::pin(first),
        };
        self.into_response(body)
    }
}

/// At most this much of a body is taken at the headers without waiting (see `take_ready`).
const READY_LIMIT: usize = 256 * 1024;

/// The chunks of a body that have already arrived, without waiting for more, and whether that was all of it
/// (only then are they free of errors). A small answer usually comes in the same read as its headers;
/// handing it over whole saves the caller a round trip per chunk and the end-of-stream.
fn take_ready(stream: &mut BodyStream) -> (Vec<Result<Bytes>>, bool) {
    use futures_util::FutureExt;
    let mut ready = Vec::new();
    let mut total = 0;
    loop {
        match stream.next().now_or_never() {
            Some(Some(Ok(chunk))) => {
                total += chunk.len();
                ready.push(Ok(chunk));
                if total >= READY_LIMIT {
                    return (ready, false);
                }
            }
            Some(Some(Err(e))) => {
                ready.push(Err(e));
                return (ready, false);
            }
            Some(None) => return (ready, true),
            None => return (ready, false),
        }
    }
}

/// Read a body up to `PREFIX_LIMIT` bytes; the unread remainder (if any) comes back as a stream.
async fn read_prefix(
    resp: reqwest::Response,
    endpoint: &str,
    cancel: &CancellationToken,
) -> Result<(Bytes, Option<BodyStream>)> {
    let endpoint = endpoint.to_string();
    let mut stream: BodyStream =
        Box::pin(resp.bytes_stream().map(move |r| r.map_err(|e| Error::network(&endpoint, &e))));
    let mut buf = bytes::BytesMut::new();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Aborted),
            next = stream.next() => next,
        };
        match next {
            None => return Ok((buf.freeze(), None)),
            Some(chunk) => {
                buf.extend_from_slice(&chunk?);
                if buf.len() >= PREFIX_LIMIT {
                    return Ok((buf.freeze(), Some(stream)));
                }
            }
        }
    }
}

/// `fetch` upper-cases the standard methods and leaves others as given.
pub(crate) fn parse_method(method: &str) -> Result<reqwest::Method> {
    const STANDARD: &[&str] = &["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"];
    // The usual ones as constants: no copy, no parse.
    match method {
        "POST" => return Ok(reqwest::Method::POST),
        "GET" | "" => return Ok(reqwest::Method::GET),
        _ => {}
    }
    let m = if STANDARD.iter().any(|s| s.eq_ignore_ascii_case(method)) {
        method.to_ascii_uppercase()
    } else {
        method.to_string()
    };
    reqwest::Method::from_bytes(m.as_bytes()).map_err(|_| Error::invalid_arg("request method", format!("{method:?}")))
}

fn header_map(pairs: Vec<(String, String)>) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::invalid_arg("request header", format!("{name:?} is not a valid header name")))?;
        // Never echo the value: it may be a credential.
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Error::invalid_arg("request header", format!("the value of {name:?} is not valid")))?;
        map.append(header, value);
    }
    Ok(map)
}

pub(crate) fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// `n` in decimal onto `out`, without the formatting machinery (cold code between requests).
pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_decimal_writes_what_display_writes() {
        for n in [0, 7, 10, 99, 1000, 123_456_789, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn methods_are_normalised_like_fetch() {
        assert_eq!(parse_method("post").unwrap(), reqwest::Method::POST);
        assert_eq!(parse_method("").unwrap(), reqwest::Method::GET);
        assert_eq!(parse_method("PROPFIND").unwrap().as_str(), "PROPFIND");
        assert_eq!(parse_method("bad method").unwrap_err().code(), "E_INVALID_ARG");
    }

    #[test]
    fn bad_header_values_are_refused_without_echoing_them() {
        let e = header_map(vec![("x-k".into(), "secret\nvalue".into())]).unwrap_err();
        assert_eq!(e.code(), "E_INVALID_ARG");
        assert!(!e.to_string().contains("secret"), "{e}");
        let ok = header_map(vec![("A".into(), "1".into()), ("a".into(), "2".into())]).unwrap();
        assert_eq!(ok.get_all("a").iter().count(), 2);
    }

    #[test]
    fn take_ready_takes_a_body_that_is_all_here_and_stops_at_the_first_wait() {
        let all: BodyStream =
            Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))]));
        let mut all = all;
        let (ready, complete) = take_ready(&mut all);
        assert!(complete);
        assert_eq!(ready.len(), 2);

        let hanging: BodyStream = Box::pin(
            futures_util::stream::iter(vec![Ok(Bytes::from_static(b"a"))]).chain(futures_util::stream::pending()),
        );
        let mut hanging = hanging;
        let (ready, complete) = take_ready(&mut hanging);
        assert!(!complete, "a body still waiting for data is not complete");
        assert_eq!(ready.len(), 1);
    }
}
