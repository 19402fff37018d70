//! HTTP downloads that survive a flaky network: a dropped connection is
//! resumed where it stopped (a `Range` request), transient failures (resets,
//! timeouts, 5xx, 429) are retried with backoff, and the bytes are hashed as
//! they arrive. A refused connection or a 404 fails at once: waiting does
//! not fix those.

use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};

use super::Hasher;

/// How many failures in a row without new bytes before giving up.
const ATTEMPTS: u32 = 5;
/// The first wait after a failure; doubled after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts (a server's `Retry-After` included).
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A checksum list larger than this is not one.
const MAX_LIST_BYTES: usize = 16 << 20;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server could not be reached (refused, no route, no such host).
    #[error("cannot connect")]
    Connect(#[source] reqwest::Error),
    /// The server answered with an error status that retrying cannot fix.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// Transient failures went on past the retry limit.
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        /// How many attempts failed in a row.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<DownloadError>,
    },
    /// The connection failed or timed out mid-transfer, or the server
    /// answered 5xx or 429 (retried until the limit).
    #[error("{0}")]
    Transient(String, #[source] Option<reqwest::Error>),
    /// Writing the downloaded bytes failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The partial file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The checksum list is larger than any checksum list.
    #[error("larger than {} bytes: not a checksum list", MAX_LIST_BYTES)]
    TooLarge,
}

impl DownloadError {
    fn from_request(err: reqwest::Error) -> DownloadError {
        if err.is_connect() && !err.is_timeout() {
            DownloadError::Connect(err)
        } else {
            DownloadError::Transient("the connection failed".into(), Some(err))
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, DownloadError::Transient(..))
    }
}

/// Bytes so far, and the whole size when the server said.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// The HTTP client downloads use.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        // A stalled transfer counts as a dropped connection.
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Downloads `url` into `part`, resuming what is already there (a download
/// a killed build left), and returns the file's digest under `hasher`'s
/// algorithm and its size. On error, `part` holds what arrived so far.
pub async fn to_file(
    client: &reqwest::Client,
    url: &url::Url,
    part: &Path,
    mut hasher: Hasher,
    progress: Progress<'_>,
) -> Result<(String, u64), DownloadError> {
    let write_err = |source| DownloadError::Write {
        path: part.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(write_err)?;
    let mut offset = hash_existing(&mut file, &mut hasher).map_err(write_err)?;
    if offset > 0 {
        tracing::info!(url = %url, bytes = offset, "resuming a partial download");
    }
    let mut failures = 0u32;
    loop {
        let before = offset;
        match attempt(
            client,
            url,
            part,
            &mut file,
            &mut hasher,
            &mut offset,
            progress,
        )
        .await
        {
            Ok(()) => {
                file.sync_all().map_err(write_err)?;
                return Ok((hasher.finish(), offset));
            }
            Err(Failure { error, retry_after }) => {
                if offset > before {
                    failures = 0;
                }
                failures += 1;
                if !error.retryable() {
                    return Err(error);
                }
                if failures >= ATTEMPTS {
                    return Err(DownloadError::GaveUp {
                        attempts: failures,
                        last: Box::new(error),
                    });
                }
                let wait = retry_after
                    .unwrap_or(FIRST_BACKOFF * 2u32.pow(failures - 1))
                    .min(MAX_BACKOFF);
                tracing::warn!(
                    url = %url,
                    error = %crate::error::error_chain(&error),
                    bytes = offset,
                    "download interrupted; retrying in {}",
                    crate::human::duration(wait)
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A small file (a checksum list) read whole, with the same retries.
pub async fn to_memory(client: &reqwest::Client, url: &url::Url) -> Result<Vec<u8>, DownloadError> {
    let mut failures = 0u32;
    loop {
        let result = async {
            let response = client
                .get(url.clone())
                .send()
                .await
                .map_err(DownloadError::from_request)?;
            check_status(&response)?;
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(DownloadError::from_request)?
            {
                if body.len() + chunk.len() > MAX_LIST_BYTES {
                    return Err(DownloadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
        .await;
        match result {
            Ok(body) => return Ok(body),
            Err(error) if error.retryable() && failures + 1 < ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(failures - 1)).await;
            }
            Err(error) if error.retryable() => {
                return Err(DownloadError::GaveUp {
                    attempts: failures + 1,
                    last: Box::new(error),
                });
            }
            Err(error) => return Err(error),
        }
    }
}

struct Failure {
    error: DownloadError,
    retry_after: Option<Duration>,
}

impl From<DownloadError> for Failure {
    fn from(error: DownloadError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// One request: from `offset` to the end, appended to `file`.
async fn attempt(
    client: &reqwest::Client,
    url: &url::Url,
    part: &Path,
    file: &mut std::fs::File,
    hasher: &mut Hasher,
    offset: &mut u64,
    progress: Progress<'_>,
) -> Result<(), Failure> {
    let mut request = client.get(url.clone());
    if *offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let response = request.send().await.map_err(DownloadError::from_request)?;
    let status = response.status();
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // What we hold is not a prefix of what the server has now.
        restart(part, file, hasher, offset)?;
        return Err(DownloadError::Transient("the partial download is stale".into(), None).into());
    }
    if let Err(error) = check_status(&response) {
        return Err(Failure {
            error,
            retry_after: retry_after(&response),
        });
    }
    let total = match status {
        StatusCode::PARTIAL_CONTENT => {
            let (start, total) = content_range(&response).unwrap_or((u64::MAX, None));
            if start != *offset {
                restart(part, file, hasher, offset)?;
                return Err(DownloadError::Transient(
                    "the server resumed at the wrong place".into(),
                    None,
                )
                .into());
            }
            total
        }
        _ => {
            if *offset > 0 {
                // The server does not do ranges: start over.
                restart(part, file, hasher, offset)?;
            }
            response.content_length()
        }
    };
    progress(*offset, total);
    let mut response = response;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(DownloadError::from_request)?
    {
        file.write_all(&chunk)
            .map_err(|source| DownloadError::Write {
                path: part.to_path_buf(),
                source,
            })?;
        hasher.update(&chunk);
        *offset += chunk.len() as u64;
        progress(*offset, total);
    }
    match total {
        Some(total) if *offset < total => Err(DownloadError::Transient(
            format!("the connection closed after {offset} of {total} bytes"),
            None,
        )
        .into()),
        _ => Ok(()),
    }
}

fn check_status(response: &reqwest::Response) -> Result<(), DownloadError> {
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(DownloadError::Transient(
            format!("the server answered {status}"),
            None,
        ))
    } else {
        Err(DownloadError::Status(status))
    }
}

/// `Retry-After` in seconds (the date form is rare enough to ignore).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// `Content-Range: bytes START-END/TOTAL`: the start and the total.
fn content_range(response: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    parse_content_range(value)
}

fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn restart(
    part: &Path,
    file: &mut std::fs::File,
    hasher: &mut Hasher,
    offset: &mut u64,
) -> Result<(), Failure> {
    let reset = file.set_len(0).and_then(|()| file.rewind());
    reset.map_err(|source| DownloadError::Write {
        path: part.to_path_buf(),
        source,
    })?;
    hasher.reset();
    *offset = 0;
    Ok(())
}

/// Feeds what `file` already holds to `hasher`, leaving the file positioned
/// at its end; returns its length.
fn hash_existing(file: &mut std::fs::File, hasher: &mut Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
