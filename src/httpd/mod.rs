//! The build's HTTP server (`http_directory`, `http_content`): installers
//! fetch their preseed, kickstart or autoinstall files from it at
//! `http://{{ .HTTPIP }}:{{ .HTTPPort }}/`. QEMU's user network lets the
//! guest reach the host's loopback as 10.0.2.2, so the server need not
//! listen beyond 127.0.0.1.
//!
//! A small HTTP/1.1 server of its own: GET and HEAD, one request per
//! connection, every request reported (method, path, status, bytes). Paths
//! are cleaned as Go's `http.Dir` cleans them, so no request reaches
//! outside the directory.

mod files;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the server serves.
#[derive(Debug, Clone)]
pub enum Content {
    /// `http_directory`: the files under this directory.
    Directory(PathBuf),
    /// `http_content`: URL path (`/preseed.cfg`) → the file's text.
    Files(BTreeMap<String, String>),
}

/// One request, as reported once its answer is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// `GET`, `HEAD`, ...; empty when the request could not be read.
    pub method: String,
    /// The path asked for, as sent.
    pub path: String,
    /// The answer's status code.
    pub status: u16,
    /// The bytes of the body sent.
    pub bytes: u64,
    /// Who asked (the guest shows as the host's loopback address).
    pub peer: SocketAddr,
}

impl std::fmt::Display for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} {} -> {} ({} bytes)",
            self.method, self.path, self.status, self.bytes
        )
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpdError {
    /// Every port of the range is taken (or may not be bound).
    #[error(
        "no free port between {min} and {max} on {address} for the HTTP server (http_port_min, http_port_max){}",
        .last.as_ref().map(|e| format!("; the last try said: {e}")).unwrap_or_default()
    )]
    NoFreePort {
        /// `http_bind_address`.
        address: IpAddr,
        /// `http_port_min`.
        min: u16,
        /// `http_port_max`.
        max: u16,
        /// Why the last port could not be bound.
        #[source]
        last: Option<std::io::Error>,
    },
}

/// Reports each request.
pub type Logger = Arc<dyn Fn(&RequestLog) + Send + Sync>;

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct HttpServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Binds the first free port of `min..=max` on `address`, starting at
    /// a random one of them as Packer does (two builds at once then seldom
    /// race for the same port), and serves `content` until dropped.
    pub async fn start(
        address: IpAddr,
        min: u16,
        max: u16,
        content: Content,
        logger: Logger,
    ) -> Result<HttpServer, HttpdError> {
        let listener = bind_in_range(address, min, max).await?;
        let bound = listener.local_addr().map_err(|e| HttpdError::NoFreePort {
            address,
            min,
            max,
            last: Some(e),
        })?;
        let content = Arc::new(content);
        let task = tokio::spawn(serve(listener, content, logger));
        Ok(HttpServer {
            address: bound,
            task,
        })
    }

    /// The port the server listens on (`{{ .HTTPPort }}`).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address and port the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // The connections live in the accept task's JoinSet: they go too.
        self.task.abort();
    }
}

async fn bind_in_range(address: IpAddr, min: u16, max: u16) -> Result<TcpListener, HttpdError> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    let start = rand::random_range(0..span);
    let mut last = None;
    for step in 0..span {
        let offset = (start + step) % span;
        let Ok(port) = u16::try_from(u32::from(min) + offset) else {
            continue;
        };
        match TcpListener::bind((address, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(HttpdError::NoFreePort {
        address,
        min,
        max,
        last,
    })
}

async fn serve(listener: TcpListener, content: Arc<Content>, logger: Logger) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let content = content.clone();
                    let logger = logger.clone();
                    connections.spawn(async move {
                        if let Some(log) = answer(stream, peer, &content).await {
                            logger(&log);
                        }
                    });
                }
                Err(err) => {
                    tracing::debug!(%err, "HTTP server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The most a request head may take: real clients send a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// A client that sends no request in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one request and answers it; `None` when the client sent nothing
/// and went away.
async fn answer(mut stream: TcpStream, peer: SocketAddr, content: &Content) -> Option<RequestLog> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return None,
        Ok(Err(_)) | Err(_) => {
            let bytes = files::send_error(&mut stream, 400, false).await;
            return Some(RequestLog {
                method: String::new(),
                path: String::new(),
                status: 400,
                bytes,
                peer,
            });
        }
    };
    let mut parts = head.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, bytes) = files::respond(&mut stream, method, target, content).await;
    let _ = stream.shutdown().await;
    Some(RequestLog {
        method: method.to_string(),
        path: target.to_string(),
        status,
        bytes,
        peer,
    })
}

/// The request line, once the whole head (up to the blank line) is in.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            let head = String::from_utf8_lossy(&buf[..end]);
            let line = head.lines().next().unwrap_or_default().trim().to_string();
            return Ok(Some(line));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
