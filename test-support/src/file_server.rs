//! A small HTTP/1.1 file server on 127.0.0.1 for download tests: it serves
//! files from memory, honours `Range: bytes=N-`, logs every request, and
//! breaks chosen ones: cuts the connection partway through the body, or
//! answers with an error status. One request per connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Served as asked.
    Pass,
    /// The head and this many body bytes, then the connection is closed.
    CutAfter(usize),
    /// This status with an empty body.
    Status(u16),
}

/// What the server saw of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// 0 for the first request.
    pub index: usize,
    /// The request target, such as `/disk.img`.
    pub path: String,
    /// The `Range` header, when there was one.
    pub range: Option<String>,
}

type Plan = dyn Fn(&Request) -> Fault + Send + Sync;

struct Shared {
    files: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    plan: Box<Plan>,
    log: Mutex<Vec<Request>>,
}

/// A running server; it stops when dropped.
pub struct FileServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FileServer {
    /// A server that serves every request as asked.
    pub async fn start() -> std::io::Result<FileServer> {
        FileServer::with_faults(|_| Fault::Pass).await
    }

    /// A server that treats each request as `plan` says.
    pub async fn with_faults(
        plan: impl Fn(&Request) -> Fault + Send + Sync + 'static,
    ) -> std::io::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            files: Mutex::new(HashMap::new()),
            plan: Box::new(plan),
            log: Mutex::new(Vec::new()),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &shared).await;
                });
            }
        });
        Ok(FileServer {
            base_url,
            shared,
            task,
        })
    }

    /// Serves `content` at `path` (`/disk.img`); returns its URL.
    pub fn add(&self, path: &str, content: Vec<u8>) -> String {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(content));
        format!("{}{path}", self.base_url)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests for `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let range = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("range"))
        .map(|(_, value)| value.trim().to_string());
    let request = {
        let mut log = shared.log.lock().unwrap();
        let request = Request {
            index: log.len(),
            path,
            range,
        };
        log.push(request.clone());
        request
    };
    let fault = (shared.plan)(&request);
    if let Fault::Status(code) = fault {
        let head =
            format!("HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        return stream.shutdown().await;
    }
    let file = shared.files.lock().unwrap().get(&request.path).cloned();
    let Some(file) = file else {
        let head = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await?;
        return stream.shutdown().await;
    };
    let start = request
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let total = file.len();
    let (head, body) = match start {
        Some(start) if start >= total => (
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            &file[..0],
        ),
        Some(start) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                total - 1,
                total - start
            ),
            &file[start..],
        ),
        None => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
            ),
            &file[..],
        ),
    };
    stream.write_all(head.as_bytes()).await?;
    match fault {
        Fault::CutAfter(n) => {
            stream.write_all(&body[..n.min(body.len())]).await?;
            stream.flush().await?;
            // Closed without the rest: the client sees a short body.
            drop(stream);
            Ok(())
        }
        _ => {
            stream.write_all(body).await?;
            stream.shutdown().await
        }
    }
}
