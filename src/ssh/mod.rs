//! The SSH communicator: keys, connect with retry, exec with streamed output,
//! upload and download (SFTP, with a fallback through an exec channel for
//! guests without an SFTP server).

mod connect;
mod exec;
mod guest;
mod keys;
mod quote;
mod transfer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use guest::Guest;
pub use keys::{GeneratedKey, generate_key};
pub use quote::shell_quote;

#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH private key file (unencrypted).
    KeyFile(PathBuf),
}

/// Without the password (an `SshConfig` in a log shows this).
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(<sensitive>)"),
            Auth::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Auth,
    /// Give up connecting after this long.
    pub timeout: Duration,
    /// How many times to try credentials the server rejected (Packer's
    /// `ssh_handshake_attempts`: cloud-init may install the key only after
    /// sshd is up); 0 tries until `timeout`. Connections that fail before
    /// authentication (the guest still booting) do not count.
    pub handshake_attempts: u32,
    /// Request a PTY for exec channels.
    pub pty: bool,
}

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    Signal(String),
    /// The connection went away before the command reported an exit.
    Disconnected,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "timed out after {:.1}s waiting for SSH on {host}:{port}{}",
        elapsed.as_secs_f64(),
        last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Timeout {
        host: String,
        port: u16,
        elapsed: Duration,
        /// The last connection error seen, if any.
        last_error: Option<String>,
    },
    #[error("authentication as {username} was rejected")]
    AuthRejected { username: String },
    #[error("cannot read private key {}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("ssh protocol error")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("transfer of {path} failed")]
    Transfer {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("local file error on {}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A connected, authenticated session.
pub struct Session {
    handle: russh::client::Handle<connect::Client>,
    pty: bool,
    /// How files move on this guest, found out on the first transfer.
    transport: tokio::sync::OnceCell<transfer::Transport>,
}

impl SshError {
    fn protocol(err: impl std::error::Error + Send + Sync + 'static) -> SshError {
        SshError::Protocol(Box::new(err))
    }

    fn transfer(path: &str, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SshError {
        SshError::Transfer {
            path: path.to_string(),
            source: err.into(),
        }
    }

    fn local(path: &std::path::Path, source: std::io::Error) -> SshError {
        SshError::Local {
            path: path.to_path_buf(),
            source,
        }
    }
}
