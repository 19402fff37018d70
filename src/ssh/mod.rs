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
pub use keys::{GeneratedKey, generate_key, public_key_of};
pub use quote::shell_quote;

/// How kiln proves who it is to the guest's SSH server.
#[derive(Clone)]
pub enum Auth {
    /// Password authentication, with this password.
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

/// Where and as whom to log in, and how hard to try.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// The address to connect to (the guest's forwarded port is on
    /// 127.0.0.1).
    pub host: String,
    /// The TCP port to connect to.
    pub port: u16,
    /// The user to log in as.
    pub username: String,
    /// The password or key to log in with.
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
    /// The command's standard output.
    Stdout,
    /// The command's standard error (merged into stdout under a PTY).
    Stderr,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command exited with this code.
    Code(u32),
    /// The command was killed by this signal (`TERM`, `KILL`, ...).
    Signal(String),
    /// The connection went away before the command reported an exit.
    Disconnected,
}

/// Why an SSH connection, command or transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No connection could be made and logged in before the timeout.
    #[error(
        "timed out after {:.1}s waiting for SSH on {host}:{port}{}",
        elapsed.as_secs_f64(),
        last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Timeout {
        /// The address kiln connected to.
        host: String,
        /// The port kiln connected to.
        port: u16,
        /// How long kiln kept trying.
        elapsed: Duration,
        /// The last connection error seen, if any.
        last_error: Option<String>,
    },
    /// The server rejected the credentials as often as
    /// `handshake_attempts` allows.
    #[error("authentication as {username} was rejected")]
    AuthRejected {
        /// The user kiln logged in as.
        username: String,
    },
    /// A private key could not be generated, read or parsed.
    #[error("cannot read private key {}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SSH connection or a channel on it failed.
    #[error("ssh protocol error")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file could not be copied to or from the guest.
    #[error("transfer of {path} failed")]
    Transfer {
        /// The path on the guest.
        path: String,
        /// What SFTP or the shell fallback said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file on this machine could not be read or written.
    #[error("local file error on {}", path.display())]
    Local {
        /// The local file.
        path: PathBuf,
        /// What the system said.
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
