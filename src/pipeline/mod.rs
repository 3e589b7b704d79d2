//! The request pipeline behind the plugin's `fetch`: token → CLI headers → machine-wide pacing → send →
//! 401/403 forced refresh + one retry, 429 Retry-After, 5xx/transport retries before the first byte →
//! streamed body. Every wait and the body itself end at once when the request's `CancellationToken` fires.

pub mod headers;
pub mod pacing;
pub mod retry;
pub mod trust;

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error::Result;
use crate::token_manager::TokenManager;

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
    pub body: BodyStream,
}

pub struct Pipeline {
    settings: Arc<Settings>,
    auth: Auth,
}

impl Pipeline {
    pub fn new(settings: Arc<Settings>, auth: Auth) -> Self {
        Pipeline { settings, auth }
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub async fn execute(&self, req: Request, cancel: CancellationToken) -> Result<Response> {
        let _ = (req, cancel);
        todo!("Pipeline::execute")
    }
}
