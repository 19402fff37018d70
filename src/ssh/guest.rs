//! A handle on the guest's SSH session that reconnects after the guest
//! dropped the connection (a reboot in a provisioner with
//! `expect_disconnect`, for one).

use super::{Session, SshConfig, SshError};

/// The SSH login to the guest and its current session, if any.
pub struct Guest {
    config: SshConfig,
    session: Option<Session>,
}

impl Guest {
    /// Wraps an already established session.
    pub fn new(config: SshConfig, session: Session) -> Self {
        Guest {
            config,
            session: Some(session),
        }
    }

    /// Where and as whom kiln logs in: what a program on this machine
    /// needs to reach the guest too (the `ansible` provisioner).
    pub fn login(&self) -> &SshConfig {
        &self.config
    }

    /// The live session, reconnecting first when the last one was lost.
    pub async fn session(&mut self) -> Result<&Session, SshError> {
        let session = match self.session.take() {
            Some(session) => session,
            None => Session::connect(&self.config).await?,
        };
        Ok(self.session.insert(session))
    }

    /// The current session, if there is one, without reconnecting.
    pub fn live_session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Forgets the current session: the next use reconnects.
    pub async fn disconnected(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }

    /// Closes the session, if there is one, and gives the handle up.
    pub async fn close(mut self) {
        self.disconnected().await;
    }
}
