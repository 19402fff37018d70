//! HTTP/1.x for the metadata server, over one connection: QEMU's
//! `guestfwd=...-cmd:` runs `kiln __gce-metadata DOC` once per guest
//! connection, with the connection on its stdin and stdout. Requests are
//! answered from the document until the guest closes the connection or
//! asks to.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::metadata::{Request, Response, answer};

/// The longest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// Why the metadata server stopped before the guest closed the connection.
#[derive(Debug, thiserror::Error)]
pub enum MetadataServeError {
    /// The document could not be read.
    #[error("cannot read the metadata document {path}: {source}")]
    Document {
        /// The document.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The document is not JSON.
    #[error("the metadata document {path} is not JSON: {source}")]
    Json {
        /// The document.
        path: String,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the answer failed (the guest went away).
    #[error("writing the answer: {0}")]
    Write(#[source] std::io::Error),
}

/// `kiln __gce-metadata DOC`: serves the document on stdin/stdout.
pub fn serve_stdio(doc: &Path) -> Result<(), MetadataServeError> {
    let text = std::fs::read_to_string(doc).map_err(|source| MetadataServeError::Document {
        path: doc.display().to_string(),
        source,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| MetadataServeError::Json {
        path: doc.display().to_string(),
        source,
    })?;
    let mut input = Input::spawn(std::io::stdin());
    serve(&doc, &mut input, &mut std::io::stdout().lock())
}

/// The connection's incoming bytes, read on a thread of their own so that
/// a held answer (`wait_for_change`) ends as soon as the guest goes away.
pub struct Input {
    chunks: Receiver<Vec<u8>>,
    buffer: Vec<u8>,
    closed: bool,
}

impl Input {
    /// Reads `source` on a new thread until its end.
    pub fn spawn(mut source: impl Read + Send + 'static) -> Input {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 8192];
            loop {
                match source.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Input {
            chunks: rx,
            buffer: Vec::new(),
            closed: false,
        }
    }

    /// Waits for more bytes; false at the end of the input.
    fn more(&mut self) -> bool {
        match self.chunks.recv() {
            Ok(chunk) => {
                self.buffer.extend_from_slice(&chunk);
                true
            }
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// Waits `delay`, or less when the other side sends something or goes
    /// away; false when it went away.
    fn hold(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return false;
                }
            }
        }
    }

    /// The next request head (up to the empty line), or `None` at the end
    /// of the input; `Err` with a 400 answer for a head too long.
    fn head(&mut self) -> Option<Result<String, ()>> {
        loop {
            if let Some(end) = find_head_end(&self.buffer) {
                let head: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
                return Some(Ok(String::from_utf8_lossy(&head[..end.0]).into_owned()));
            }
            if self.buffer.len() > MAX_HEAD {
                return Some(Err(()));
            }
            if self.closed || !self.more() {
                return None;
            }
        }
    }

    /// Skips a request body of `length` bytes.
    fn skip(&mut self, mut length: usize) {
        loop {
            let taken = length.min(self.buffer.len());
            self.buffer.drain(..taken);
            length -= taken;
            if length == 0 || self.closed || !self.more() {
                return;
            }
        }
    }
}

/// Where the head ends: its length and the terminator's.
fn find_head_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buffer.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) if b < a => Some((b, 2)),
        (Some(a), _) => Some((a, 4)),
        (None, Some(b)) => Some((b, 2)),
        (None, None) => None,
    }
}

/// Answers requests from `input` on `output` until the input ends or a
/// request asks to close.
pub fn serve(
    doc: &Value,
    input: &mut Input,
    output: &mut impl Write,
) -> Result<(), MetadataServeError> {
    while let Some(head) = input.head() {
        let Ok(head) = head else {
            let response = Response {
                status: 400,
                headers: Vec::new(),
                body: "request head too long\n".to_string(),
                delay: Duration::ZERO,
            };
            write_response(output, &response, false, true)?;
            return Ok(());
        };
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let request_line = lines.next().unwrap_or_default();
        let parts: Vec<&str> = request_line.split_whitespace().collect();
        let [method, target, version] = parts.as_slice() else {
            let response = Response {
                status: 400,
                headers: Vec::new(),
                body: "malformed request line\n".to_string(),
                delay: Duration::ZERO,
            };
            write_response(output, &response, false, true)?;
            return Ok(());
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_ascii_lowercase())
        };
        if let Some(length) = header("Content-Length").and_then(|l| l.parse().ok()) {
            input.skip(length);
        }
        let close = match header("Connection").as_deref() {
            Some("close") => true,
            Some("keep-alive") => false,
            _ => *version == "HTTP/1.0",
        };
        let response = answer(
            doc,
            &Request {
                method,
                target,
                headers: &headers,
            },
        );
        if !response.delay.is_zero() && !input.hold(response.delay) {
            return Ok(());
        }
        write_response(output, &response, *method == "HEAD", close)?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

fn write_response(
    output: &mut impl Write,
    response: &Response,
    head_only: bool,
    close: bool,
) -> Result<(), MetadataServeError> {
    let mut text = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason());
    for (name, value) in &response.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    if close {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    if !head_only {
        text.push_str(&response.body);
    }
    output
        .write_all(text.as_bytes())
        .and_then(|()| output.flush())
        .map_err(MetadataServeError::Write)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc() -> Value {
        json!({"instance": {"name": "vm-1", "attributes": {"a": "b"}}})
    }

    fn exchange(input: &str) -> String {
        let mut input = Input::spawn(std::io::Cursor::new(input.as_bytes().to_vec()));
        let mut out = Vec::new();
        serve(&doc(), &mut input, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn answers_a_request_with_its_headers() {
        let out = exchange(
            "GET /computeMetadata/v1/instance/name HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Metadata-Flavor: Google\r\n"));
        assert!(out.contains("Content-Length: 4\r\n"));
        assert!(out.contains("Connection: close\r\n"));
        assert!(out.ends_with("\r\n\r\nvm-1"));
    }

    #[test]
    fn keeps_answering_until_the_input_ends() {
        let out = exchange(concat!(
            "GET /computeMetadata/v1/instance/name HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
            "GET /computeMetadata/v1/instance/attributes/a HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
            "GET /computeMetadata/v1/instance/name HTTP/1.1\r\n\r\n",
        ));
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert_eq!(out.matches("HTTP/1.1 403 Forbidden").count(), 1);
        assert!(out.contains("\r\n\r\nb"));
    }

    #[test]
    fn http_1_0_closes_after_one_answer() {
        let out = exchange(concat!(
            "GET /computeMetadata/v1/instance/name HTTP/1.0\nMetadata-Flavor: Google\n\n",
            "GET /computeMetadata/v1/instance/name HTTP/1.0\nMetadata-Flavor: Google\n\n",
        ));
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1);
    }

    #[test]
    fn a_request_body_is_skipped() {
        let out = exchange(concat!(
            "PUT /computeMetadata/v1/instance/name HTTP/1.1\r\nMetadata-Flavor: Google\r\nContent-Length: 5\r\n\r\nhello",
            "GET /computeMetadata/v1/instance/name HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
        ));
        assert!(out.starts_with("HTTP/1.1 405"));
        assert!(out.ends_with("vm-1"));
    }

    #[test]
    fn head_has_no_body() {
        let out = exchange(
            "HEAD /computeMetadata/v1/instance/name HTTP/1.1\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n",
        );
        assert!(out.contains("Content-Length: 4\r\n"));
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn garbage_gets_a_400() {
        assert!(exchange("nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(MAX_HEAD + 10));
        assert!(exchange(&long).starts_with("HTTP/1.1 400"));
        assert_eq!(exchange(""), "");
    }

    #[test]
    fn a_held_answer_ends_when_the_guest_goes_away() {
        // The input ends during the hold: nothing is written, at once.
        let out = exchange(
            "GET /computeMetadata/v1/instance/name?wait_for_change=true&timeout_sec=3000 HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
        );
        assert_eq!(out, "");
    }

    #[test]
    fn a_missing_document_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = serve_stdio(&dir.path().join("none.json")).unwrap_err();
        assert!(matches!(err, MetadataServeError::Document { .. }));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(matches!(
            serve_stdio(&bad).unwrap_err(),
            MetadataServeError::Json { .. }
        ));
    }
}
