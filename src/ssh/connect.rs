//! Connecting to a guest that is still booting: retry until the deadline,
//! then authenticate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::net::TcpStream;

use super::{Auth, Session, SshConfig, SshError, keys};

/// Between attempts while nothing answers: short, so the session is up
/// promptly once sshd listens. A refused or dropped local connection costs
/// next to nothing, on the host and in the guest.
const RETRY_DELAY: Duration = Duration::from_millis(50);
/// How long a new connection may stay silent before the server's banner
/// is given up on and the connection made anew, while the guest has not
/// answered yet. QEMU's user-mode network accepts the connection on the
/// host at once and sends the SYN on to a guest whose network may not be
/// up yet; that SYN is then only retried with a growing backoff, seconds
/// apart, while a new connection sends a new SYN straight away.
const BANNER_WAIT_BOOTING: Duration = Duration::from_millis(400);
/// Once the guest has answered (even by hanging up), a silent connection
/// means a slow server: wait longer each time, up to the attempt limit.
const BANNER_WAIT_ANSWERED: Duration = Duration::from_secs(2);
/// After the server turned the credentials down. What is awaited then
/// (cloud-init installing the key or setting the password) takes seconds,
/// and each rejection costs the guest a process and a log line.
const AUTH_RETRY_DELAY: Duration = Duration::from_secs(1);
/// One attempt may not hang on a half-open connection for the whole timeout.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(30);
/// A guest that stops answering keepalives for about this long is gone.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: usize = 3;
/// Bounds the goodbye in `close`.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// russh's callbacks for kiln's connections.
pub(super) struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    /// Any host key: the guest is our own ephemeral machine, reached over
    /// a local port forward, with a host key generated at its first boot.
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

enum Failure {
    /// The server turned the credentials down.
    Rejected,
    /// The connection was made but nothing came back in time.
    Silent,
    /// The other end hung up before a word: QEMU's forward when the guest
    /// answered the SYN with a reset (its network is up, its sshd is not).
    HungUp,
    /// Anything that may go away as the guest boots.
    Retry(String),
}

enum Credentials {
    Password(String),
    Key(Arc<PrivateKey>),
}

impl Session {
    /// Connects, retrying every 250 ms at most, until `config.timeout`.
    ///
    /// Rejected credentials are retried too (cloud-init may not have
    /// installed the key yet), at most `handshake_attempts` times when that
    /// is not 0, as Packer does; the error is then `AuthRejected`.
    pub async fn connect(config: &SshConfig) -> Result<Session, SshError> {
        let credentials = match &config.auth {
            Auth::Password(password) => Credentials::Password(password.clone()),
            Auth::KeyFile(path) => Credentials::Key(Arc::new(keys::load_private(path)?)),
        };
        let client_config = Arc::new(client_config());
        let started = Instant::now();
        let deadline = started + config.timeout;
        let mut last_error = None;
        let mut rejections = 0u32;
        let mut rejected_last = false;
        let mut banner_wait = BANNER_WAIT_BOOTING;
        let mut guest_answered = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let attempt = attempt(config, &client_config, &credentials, banner_wait);
            let delay = match tokio::time::timeout(remaining.min(ATTEMPT_LIMIT), attempt).await {
                Ok(Ok(handle)) => {
                    return Ok(Session {
                        handle,
                        pty: config.pty,
                        transport: tokio::sync::OnceCell::new(),
                    });
                }
                Ok(Err(Failure::Rejected)) => {
                    rejections += 1;
                    rejected_last = true;
                    if config.handshake_attempts > 0 && rejections >= config.handshake_attempts {
                        break;
                    }
                    AUTH_RETRY_DELAY
                }
                Ok(Err(Failure::Silent)) => {
                    tracing::trace!(?banner_wait, "ssh connect: no banner yet; reconnecting");
                    if guest_answered {
                        banner_wait = (banner_wait * 2).min(ATTEMPT_LIMIT);
                    }
                    if last_error.is_none() {
                        last_error = Some("no answer from the server".to_string());
                    }
                    rejected_last = false;
                    Duration::ZERO
                }
                Ok(Err(Failure::HungUp)) => {
                    tracing::trace!("ssh connect: hung up before the banner");
                    if !guest_answered {
                        guest_answered = true;
                        banner_wait = BANNER_WAIT_ANSWERED;
                    }
                    last_error =
                        Some("the connection was closed before the SSH banner".to_string());
                    rejected_last = false;
                    RETRY_DELAY
                }
                Ok(Err(Failure::Retry(message))) => {
                    tracing::debug!("ssh connect to {}:{}: {message}", config.host, config.port);
                    last_error = Some(message);
                    rejected_last = false;
                    RETRY_DELAY
                }
                Err(_) => {
                    // Cut short by the deadline, an attempt says less than
                    // the failure before it.
                    if last_error.is_none() || remaining >= ATTEMPT_LIMIT {
                        last_error = Some("no answer from the server".to_string());
                    }
                    rejected_last = false;
                    RETRY_DELAY
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(delay.min(remaining)).await;
        }
        if rejected_last {
            return Err(SshError::AuthRejected {
                username: config.username.clone(),
            });
        }
        Err(SshError::Timeout {
            host: config.host.clone(),
            port: config.port,
            elapsed: started.elapsed(),
            last_error,
        })
    }

    /// Says goodbye to the server; bounded, so a dead guest cannot hang it.
    pub(crate) async fn close(self) {
        if let Some(super::transfer::Transport::Sftp(sftp)) = self.transport.get() {
            let _ = tokio::time::timeout(CLOSE_LIMIT, sftp.close()).await;
        }
        let goodbye = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(CLOSE_LIMIT, goodbye).await;
    }
}

fn client_config() -> client::Config {
    client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    }
}

/// One TCP connect, handshake and authentication.
async fn attempt(
    config: &SshConfig,
    client_config: &Arc<client::Config>,
    credentials: &Credentials,
    banner_wait: Duration,
) -> Result<Handle<Client>, Failure> {
    let stream = TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|err| Failure::Retry(format!("connect: {err}")))?;
    // The handshake is a series of small round trips.
    let _ = stream.set_nodelay(true);
    // The server speaks first; peeking leaves its banner for russh.
    let mut first = [0u8; 4];
    match tokio::time::timeout(banner_wait, stream.peek(&mut first)).await {
        Err(_) => return Err(Failure::Silent),
        Ok(Ok(0)) => return Err(Failure::HungUp),
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return Err(Failure::Retry(format!("connect: {err}"))),
    }
    // QEMU's port forward accepts the connection and then closes it while
    // the guest's sshd is not up yet: that shows up here, as a failed
    // handshake, and is retried like a refused connection.
    let mut handle = client::connect_stream(client_config.clone(), stream, Client)
        .await
        .map_err(|err| Failure::Retry(format!("handshake: {err}")))?;
    let accepted = authenticate(&mut handle, &config.username, credentials)
        .await
        .map_err(|err| Failure::Retry(format!("authentication: {err}")))?;
    if accepted {
        Ok(handle)
    } else {
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        Err(Failure::Rejected)
    }
}

async fn authenticate(
    handle: &mut Handle<Client>,
    username: &str,
    credentials: &Credentials,
) -> Result<bool, russh::Error> {
    match credentials {
        Credentials::Key(key) => {
            let hash = if key.algorithm().is_rsa() {
                handle.best_supported_rsa_hash().await?.flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(key.clone(), hash);
            Ok(handle
                .authenticate_publickey(username, key)
                .await?
                .success())
        }
        Credentials::Password(password) => {
            match handle.authenticate_password(username, password).await? {
                AuthResult::Success => Ok(true),
                // Some guests only take passwords through keyboard-interactive
                // (PAM), as Packer also tries.
                AuthResult::Failure { .. } => {
                    keyboard_interactive(handle, username, password).await
                }
            }
        }
    }
}

/// Answers every prompt with the password.
async fn keyboard_interactive(
    handle: &mut Handle<Client>,
    username: &str,
    password: &str,
) -> Result<bool, russh::Error> {
    let mut response = handle
        .authenticate_keyboard_interactive_start(username, None)
        .await?;
    // Servers ask a round or two; a bound keeps a confused one from
    // looping us forever.
    for _ in 0..5 {
        match response {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts.iter().map(|_| password.to_string()).collect();
                response = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(false)
}
