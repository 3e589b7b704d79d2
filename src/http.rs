//! The one HTTP client of the process: connection pool shared by OAuth calls and API requests.

use std::sync::OnceLock;
use std::time::Duration;

static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();

/// Shared client. No overall timeout: LLM streams may run for many minutes; callers bound their own waits.
pub fn client() -> &'static reqwest::Client {
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            // Redirects would carry the Authorization header to wherever the server points; never follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client with rustls builds")
    })
}

/// Timeout for OAuth calls (device code, poll, refresh), as the CLI's 30 s refresh timeout.
pub const OAUTH_TIMEOUT: Duration = Duration::from_secs(30);
