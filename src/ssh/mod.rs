//! The SSH communicator: keys, connect with retry, exec with streamed output,
//! upload and download (SFTP, with a fallback through an exec channel for
//! guests without an SFTP server).

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH private key file (unencrypted).
    KeyFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Auth,
    /// Give up connecting after this long.
    pub timeout: Duration,
    /// How many times to retry a handshake that reached the server but failed.
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
    #[error("timed out after {elapsed:?} waiting for SSH on {host}:{port}")]
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

/// A temporary key pair written for one build.
pub struct GeneratedKey {
    /// OpenSSH private key, mode 0600.
    pub private_key_path: PathBuf,
    /// `ssh-ed25519 AAAA... kiln` (one line, no newline).
    pub public_key_openssh: String,
}

/// Generates a key pair (ed25519 or rsa) and writes the private key, mode
/// 0600, into `dir`.
pub fn generate_key(dir: &Path, rsa: bool) -> Result<GeneratedKey, SshError> {
    let _ = (dir, rsa);
    todo!("ssh::generate_key")
}

/// A connected, authenticated session.
pub struct Session {}

impl Session {
    /// Connects, retrying every 250 ms at most, until `config.timeout`.
    pub async fn connect(config: &SshConfig) -> Result<Session, SshError> {
        let _ = config;
        todo!("ssh::Session::connect")
    }

    /// Runs `command`, calling `on_line` for each complete line of output
    /// (a trailing partial line is flushed at the end).
    pub async fn exec(
        &self,
        command: &str,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitStatus, SshError> {
        let _ = (command, on_line);
        todo!("ssh::Session::exec")
    }

    /// Writes `data` to the remote file `remote` (created or truncated).
    pub async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), SshError> {
        let _ = (data, remote, mode);
        todo!()
    }

    /// Uploads a local file or directory tree to `remote` (the exact target
    /// path; the caller applies Packer's trailing-slash rule).
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<(), SshError> {
        let _ = (local, remote);
        todo!()
    }

    /// Downloads a remote file or directory tree to `local` (the exact
    /// target path).
    pub async fn download(&self, remote: &str, local: &Path) -> Result<(), SshError> {
        let _ = (remote, local);
        todo!()
    }

    /// Whether `remote` is a directory on the guest.
    pub async fn is_dir(&self, remote: &str) -> Result<bool, SshError> {
        let _ = remote;
        todo!()
    }

    pub async fn close(self) {}
}
