//! What the server answers: a file of `http_directory` (or its
//! `index.html`, or a listing), an `http_content` entry, or an error page.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Content;

/// Answers one request; returns the status and the body bytes sent.
pub(super) async fn respond<W: AsyncWrite + Unpin>(
    out: &mut W,
    method: &str,
    target: &str,
    content: &Content,
) -> (u16, u64) {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, send_error(out, 405, false).await);
    }
    let Some(path) = clean(target) else {
        return (400, send_error(out, 400, head_only).await);
    };
    match content {
        Content::Files(files) => match files.get(&path) {
            Some(text) => {
                let bytes = send(
                    out,
                    200,
                    content_type(&path, text.as_bytes()),
                    text.as_bytes(),
                    head_only,
                )
                .await;
                (200, bytes)
            }
            None => (404, send_error(out, 404, head_only).await),
        },
        Content::Directory(root) => serve_path(out, root, &path, target, head_only).await,
    }
}

async fn serve_path<W: AsyncWrite + Unpin>(
    out: &mut W,
    root: &Path,
    path: &str,
    target: &str,
    head_only: bool,
) -> (u16, u64) {
    let local = to_local(root, path);
    let Ok(meta) = tokio::fs::metadata(&local).await else {
        return (404, send_error(out, 404, head_only).await);
    };
    if meta.is_dir() {
        // As Go's FileServer: a directory's URL ends in a slash.
        if !path.ends_with('/') {
            let location = format!("{path}/");
            let head = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = out.write_all(head.as_bytes()).await;
            return (301, 0);
        }
        let index = local.join("index.html");
        if let Ok(body) = tokio::fs::read(&index).await {
            let bytes = send(out, 200, "text/html; charset=utf-8", &body, head_only).await;
            return (200, bytes);
        }
        let listing = listing(&local, target).await;
        let bytes = send(
            out,
            200,
            "text/html; charset=utf-8",
            listing.as_bytes(),
            head_only,
        )
        .await;
        return (200, bytes);
    }
    let mut file = match tokio::fs::File::open(&local).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            return (403, send_error(out, 403, head_only).await);
        }
        Err(_) => return (404, send_error(out, 404, head_only).await),
    };
    // Files are streamed: an http_directory may hold large images.
    let mut start = vec![0u8; 512];
    let n = read_start(&mut file, &mut start).await;
    start.truncate(n);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content_type(path, &start),
        meta.len()
    );
    if out.write_all(head.as_bytes()).await.is_err() || head_only {
        return (200, 0);
    }
    if out.write_all(&start).await.is_err() {
        return (200, 0);
    }
    let rest = tokio::io::copy(&mut file, out).await.unwrap_or(0);
    (200, start.len() as u64 + rest)
}

async fn read_start(file: &mut tokio::fs::File, buf: &mut [u8]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// The request target's path, percent-decoded and cleaned as Go's
/// `path.Clean("/" + p)`: `.` and empty segments dropped, `..` taking
/// away the segment before it and never going above the root. A trailing
/// slash is kept (it marks a directory). `None` for a target that is no
/// path or holds a NUL.
pub(super) fn clean(target: &str) -> Option<String> {
    let raw = target.split(['?', '#']).next().unwrap_or_default();
    if !raw.starts_with('/') {
        return None;
    }
    let decoded = percent_decode(raw)?;
    if decoded.contains('\0') {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if decoded.ends_with('/') && path != "/" {
        path.push('/');
    }
    Some(path)
}

fn to_local(root: &Path, clean_path: &str) -> PathBuf {
    let mut local = root.to_path_buf();
    for segment in clean_path.split('/').filter(|s| !s.is_empty()) {
        local.push(segment);
    }
    local
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn listing(dir: &Path, target: &str) -> String {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            names.push(name);
        }
    }
    names.sort();
    let mut html = format!("<pre>\n<!-- {} -->\n", escape(target));
    for name in names {
        let shown = escape(&name);
        html.push_str(&format!("<a href=\"{shown}\">{shown}</a>\n"));
    }
    html.push_str("</pre>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Go's choice for the common cases: by extension, else text when the
/// start of the file reads as UTF-8 text.
fn content_type(path: &str, body: &[u8]) -> &'static str {
    let ext = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "xml" => "text/xml; charset=utf-8",
        "iso" | "img" | "gz" | "tar" | "qcow2" => "application/octet-stream",
        _ => {
            let start = &body[..body.len().min(512)];
            let text =
                !start.contains(&0) && (std::str::from_utf8(start).is_ok() || start.len() == 512);
            if text {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(
    out: &mut W,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> u64 {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    if out.write_all(head.as_bytes()).await.is_err() || head_only {
        return 0;
    }
    match out.write_all(body).await {
        Ok(()) => body.len() as u64,
        Err(_) => 0,
    }
}

pub(super) async fn send_error<W: AsyncWrite + Unpin>(
    out: &mut W,
    status: u16,
    head_only: bool,
) -> u64 {
    let body = format!("{status} {}\n", reason(status));
    send(
        out,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
    .await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}
