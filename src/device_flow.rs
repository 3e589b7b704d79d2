//! RFC 8628 device login loop, polled the way the Qwen Code CLI polls it: 2 s, pending resets to 2 s,
//! slow_down ×1.5 up to 10 s, no server `interval`; terminal errors end the flow at once; cancellable.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::credentials::Credentials;
use crate::error::Result;
use crate::oauth::DeviceAuthorization;
use crate::pkce::Pkce;

pub struct DeviceLogin {
    pub authorization: DeviceAuthorization,
    pkce: Pkce,
    settings: Arc<Settings>,
    cancel: CancellationToken,
}

impl DeviceLogin {
    /// Generates PKCE and requests a device code. Nothing is written yet.
    pub async fn start(settings: Arc<Settings>) -> Result<DeviceLogin> {
        let _ = settings;
        todo!("DeviceLogin::start")
    }

    /// Cancelling this token makes `wait` return `Error::OAuthCancelled` promptly.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Polls until approved, then saves the credentials (device-flow key order) and hands them to the
    /// token manager of this `qwen_home`, and returns them.
    pub async fn wait(&self) -> Result<Credentials> {
        let _ = (&self.pkce, &self.settings);
        todo!("DeviceLogin::wait")
    }
}
