//! A TCP proxy on 127.0.0.1 that sits between a client and an HTTP server
//! and breaks chosen requests: drops the connection mid-body, answers with
//! an error status instead of forwarding, loses the response of a request
//! the server did handle, or flips a byte of the body.
//!
//! It handles one request per connection (it asks the server to close after
//! each answer), which keeps it simple and makes every request its own
//! connection for the client too.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Answer with this status and close; the server never sees the request.
    Respond(u16),
    /// Forward the head and half the body, then close both sides.
    DropMidBody,
    /// Forward the request, then close the client's side without the answer.
    DropResponse,
    /// Forward the request with the middle byte of its body inverted.
    FlipByte,
    /// Forward only the first half of a chunk (rounded down to 256 KiB when
    /// possible) as a chunk of its own, then lose the answer: the server
    /// holds part of what the client sent, so the client must resume
    /// mid-chunk.
    ForwardHalf,
}

/// What the proxy saw of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// 0 for the first request through the proxy.
    pub index: usize,
    pub method: String,
    pub target: String,
    pub content_range: Option<String>,
    /// The `Authorization` header, so tests can check credentials flow.
    pub authorization: Option<String>,
    pub body_len: usize,
}

type Plan = dyn Fn(&RequestInfo) -> Fault + Send + Sync;

struct Shared {
    upstream: String,
    plan: Box<Plan>,
    log: Mutex<Vec<(RequestInfo, Fault)>>,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`), asking `plan` what to do with
    /// each request.
    pub async fn start(
        upstream: &str,
        plan: impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static,
    ) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            plan: Box::new(plan),
            log: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut index = 0;
            while let Ok((client, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let this = index;
                index += 1;
                tokio::spawn(async move {
                    let _ = handle(client, this, &shared).await;
                });
            }
        });
        Ok(FaultProxy {
            base_url: format!("http://127.0.0.1:{port}"),
            shared,
            task,
        })
    }

    /// Every request so far and the fault it got.
    pub fn log(&self) -> Vec<(RequestInfo, Fault)> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// How many requests got a fault other than `Pass`.
    pub fn faults_injected(&self) -> usize {
        self.log().iter().filter(|(_, f)| *f != Fault::Pass).count()
    }
}

async fn handle(mut client: TcpStream, index: usize, shared: &Shared) -> std::io::Result<()> {
    let Some((head, mut body)) = read_request(&mut client).await? else {
        return Ok(());
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers: Vec<String> = Vec::new();
    let mut content_range = None;
    let mut authorization = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if lower.starts_with("content-range:") {
            content_range = line.split_once(':').map(|(_, v)| v.trim().to_string());
        }
        if lower.starts_with("authorization:") {
            authorization = line.split_once(':').map(|(_, v)| v.trim().to_string());
        }
        headers.push(line.to_string());
    }
    let info = RequestInfo {
        index,
        method,
        target,
        content_range,
        authorization,
        body_len: body.len(),
    };
    let fault = (shared.plan)(&info);
    if let Ok(mut log) = shared.log.lock() {
        log.push((info, fault));
    }
    if let Fault::Respond(status) = fault {
        let response = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    if fault == Fault::FlipByte && !body.is_empty() {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    if fault == Fault::ForwardHalf {
        let half = body.len() / 2;
        let aligned = half - half % (256 * 1024);
        let keep = if aligned > 0 { aligned } else { half };
        body.truncate(keep);
        let start = info_start(&headers);
        headers.retain(|h| {
            let lower = h.to_ascii_lowercase();
            !lower.starts_with("content-range:") && !lower.starts_with("content-length:")
        });
        if keep > 0 {
            headers.push(format!(
                "Content-Range: bytes {start}-{}/*",
                start + keep as u64 - 1
            ));
        }
        headers.push(format!("Content-Length: {keep}"));
    }
    let mut upstream = TcpStream::connect(&shared.upstream).await?;
    let mut out = format!("{request_line}\r\n");
    for h in &headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    if fault == Fault::DropMidBody {
        upstream.write_all(&body[..body.len() / 2]).await?;
        // Dropping both streams resets the connections.
        return Ok(());
    }
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    if matches!(fault, Fault::DropResponse | Fault::ForwardHalf) {
        return Ok(());
    }
    client.write_all(&response).await?;
    client.shutdown().await
}

/// The first byte offset of a `Content-Range: bytes A-B/T` header.
fn info_start(headers: &[String]) -> u64 {
    headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-range"))
        .and_then(|(_, v)| {
            v.trim()
                .strip_prefix("bytes ")?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Reads a request head and its `Content-Length` body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = client.read(&mut piece).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut piece).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&piece[..n]);
    }
    Ok(Some((head, body)))
}
