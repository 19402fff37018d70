//! Cloud Storage: resumable uploads streamed while the data is produced,
//! and the few object calls the publish path needs.
//!
//! The upload follows the JSON API's resumable protocol: a session is
//! started with a POST, chunks go up with `Content-Range: bytes A-B/*`, the
//! total is only named with the last chunk (`bytes A-B/TOTAL`, or
//! `bytes */TOTAL` with no body when the data ended on a chunk boundary).
//! After an error the session is asked what it holds (`bytes */*` → 308 with
//! `Range: bytes=0-N`, no `Range` meaning nothing) and the upload goes on
//! from N+1; the chunk being sent stays in memory until the server has it.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::TokenSource;
use super::http::{self, HttpError, status_error};
use super::progress::{UploadMeter, UploadProgress};
use super::retry::RetryPolicy;

/// The real endpoint.
const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
/// Chunks other than the last must be a multiple of this.
const CHUNK_ALIGN: usize = 256 * 1024;
/// Big enough for a fast link, small enough to hold in memory.
const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Characters escaped in an object name inside a URL path: everything but
/// the unreserved ones, so `/` in a name becomes `%2F` as the API wants.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a Cloud Storage call or upload failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A request failed on its way or was refused.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The chunk size breaks the protocol's rule.
    #[error("chunk size {size} is not a positive multiple of 256 KiB")]
    ChunkSize {
        /// The size asked for.
        size: usize,
    },
    /// The endpoint is not a URL.
    #[error("invalid Cloud Storage endpoint {url:?}")]
    Endpoint {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// The data to upload cannot be read.
    #[error("cannot read the data to upload")]
    Read(#[source] std::io::Error),
    /// The downloaded data cannot be written.
    #[error("cannot write the downloaded data")]
    Write(#[source] std::io::Error),
    /// Starting an upload gave no session.
    #[error("the server did not return an upload session URL")]
    NoSessionUrl,
    /// The session expired or was cancelled.
    #[error("the upload session is gone (HTTP {status}); the upload must start again")]
    SessionGone {
        /// 404 or 410.
        status: u16,
    },
    /// A 308 whose `Range` header kiln cannot read.
    #[error("the upload session answered with an unreadable Range header {value:?}")]
    BadRange {
        /// The header.
        value: String,
    },
    /// The session's answers contradict each other or the data.
    #[error("the upload session is inconsistent: {detail}")]
    Protocol {
        /// What was inconsistent.
        detail: String,
    },
    /// The object's checksum is not the data's.
    #[error(
        "gs://{bucket}/{object} is corrupt: crc32c of the uploaded data is {local}, the object's is {remote}"
    )]
    Crc32cMismatch {
        /// The bucket.
        bucket: String,
        /// The object.
        object: String,
        /// The CRC32C of the data read, base64.
        local: String,
        /// The object's CRC32C, base64.
        remote: String,
    },
    /// The object has no checksum to compare.
    #[error("gs://{bucket}/{object} has no crc32c to check the upload against")]
    NoCrc32c {
        /// The bucket.
        bucket: String,
        /// The object.
        object: String,
    },
}

/// An object's metadata, as much of it as kiln reads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetadata {
    /// The bucket.
    pub bucket: String,
    /// The object name.
    pub name: String,
    /// Decimal, as the API sends it.
    #[serde(default)]
    pub size: String,
    /// Base64 of the big-endian CRC32C.
    #[serde(default)]
    pub crc32c: Option<String>,
    #[serde(default)]
    /// Base64 of the MD5, when the object has one.
    pub md5_hash: Option<String>,
    #[serde(default)]
    /// The object's generation.
    pub generation: Option<String>,
    #[serde(default)]
    /// The content type.
    pub content_type: Option<String>,
}

impl ObjectMetadata {
    /// The size as a number.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size.parse().ok()
    }

    /// The CRC32C as a number, when the object has a readable one.
    pub fn crc32c_value(&self) -> Option<u32> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.crc32c.as_deref()?)
            .ok()?;
        Some(u32::from_be_bytes(raw.try_into().ok()?))
    }
}

/// How an upload is done.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bytes per request; a multiple of 256 KiB. Also the memory an upload holds.
    pub chunk_size: usize,
    /// The object's content type.
    pub content_type: String,
    /// The retry policy of the upload's requests.
    pub retry: RetryPolicy,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            content_type: "application/octet-stream".to_string(),
            retry: RetryPolicy::default(),
        }
    }
}

/// The base URL for a `STORAGE_EMULATOR_HOST` value, which Google's client
/// libraries accept with or without a scheme.
fn emulator_base_url(value: &str) -> String {
    let value = value.trim().trim_end_matches('/');
    if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    }
}

/// The `https://storage.googleapis.com/BUCKET/OBJECT` form Compute Engine
/// takes as an image's `rawDisk.source`.
pub(crate) fn public_url(bucket: &str, object: &str) -> String {
    format!("{STORAGE_ENDPOINT}/{bucket}/{object}")
}

/// The CRC32C in the form the API shows it.
pub fn crc32c_base64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// What a chunk request achieved.
enum ChunkOutcome {
    /// The server holds everything before this offset.
    Committed(u64),
    Finished(ObjectMetadata),
}

/// An upload session that did not finish: cancelled from `Drop` (which
/// cannot wait) on a task kiln waits for before exiting.
struct SessionGuard {
    client: StorageClient,
    bucket: String,
    object: String,
    session: String,
    /// The last chunk went out, so the object may exist.
    final_sent: bool,
    armed: bool,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let client = self.client.clone();
        let (bucket, object, session) = (
            self.bucket.clone(),
            self.object.clone(),
            self.session.clone(),
        );
        let final_sent = self.final_sent;
        spawn_cleanup(async move {
            tracing::debug!(bucket, object, "cancelling the upload session");
            // GCS answers 499 to a cancelled session; any answer will do.
            let _ = client.http.delete(&session).send().await;
            if final_sent {
                let _ = client.delete_object(&bucket, &object).await;
            }
        });
    }
}

/// Runs a clean-up from a `Drop` (which cannot wait) on the current
/// runtime; kiln waits for it before exiting (`cleanup::Pending`).
fn spawn_cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pending = crate::cleanup::Pending::start();
    runtime.spawn(async move {
        work.await;
        drop(pending);
    });
}

/// Deletes an object when dropped, unless disarmed: for an object that
/// only serves a step a cancel can cut short.
pub struct DeleteOnDrop {
    client: StorageClient,
    bucket: String,
    object: String,
    armed: bool,
}

impl DeleteOnDrop {
    /// Keeps the object.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, bucket, object) = (
            self.client.clone(),
            self.bucket.clone(),
            self.object.clone(),
        );
        spawn_cleanup(async move {
            if let Err(err) = client.delete_object(&bucket, &object).await {
                tracing::warn!(bucket, object, error = %err, "could not delete the object");
            }
        });
    }
}

/// A Cloud Storage JSON API client.
#[derive(Debug, Clone)]
pub struct StorageClient {
    http: reqwest::Client,
    base: String,
    tokens: Arc<TokenSource>,
    retry: RetryPolicy,
}

impl StorageClient {
    /// A client for `base_url` (the real endpoint or an emulator's).
    pub fn new(base_url: &str, tokens: Arc<TokenSource>) -> Result<StorageClient, StorageError> {
        let base = base_url.trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|source| StorageError::Endpoint {
            url: base.clone(),
            source,
        })?;
        Ok(StorageClient {
            http: http::client().map_err(HttpError::Client)?,
            base,
            tokens,
            retry: RetryPolicy::default(),
        })
    }

    /// The endpoint Google's libraries would use: `STORAGE_EMULATOR_HOST`
    /// when set, else the real one. The flag says whether it is an emulator.
    pub fn endpoint_from_env() -> (String, bool) {
        match std::env::var("STORAGE_EMULATOR_HOST") {
            Ok(value) if !value.trim().is_empty() => (emulator_base_url(&value), true),
            _ => (STORAGE_ENDPOINT.to_string(), false),
        }
    }

    /// The retry policy of the non-upload calls.
    pub fn with_retry(mut self, retry: RetryPolicy) -> StorageClient {
        self.retry = retry;
        self
    }

    fn object_url(&self, bucket: &str, object: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            utf8_percent_encode(bucket, PATH_SEGMENT),
            utf8_percent_encode(object, PATH_SEGMENT)
        )
    }

    /// The object's metadata, or `None` when it does not exist.
    async fn get_object_metadata(
        &self,
        bucket: &str,
        object: &str,
    ) -> Result<Option<ObjectMetadata>, StorageError> {
        let what = format!("reading metadata of gs://{bucket}/{object}");
        let url = self.object_url(bucket, object);
        let response =
            http::send_retrying(&self.tokens, &self.retry, &what, &|| self.http.get(&url)).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(http::read_json(&what, response).await?)),
            status => Err(status_error(what, status, response).await.into()),
        }
    }

    /// Whether `gs://bucket/object` exists.
    pub async fn object_exists(&self, bucket: &str, object: &str) -> Result<bool, StorageError> {
        Ok(self.get_object_metadata(bucket, object).await?.is_some())
    }

    /// Deletes `gs://bucket/object` when the guard is dropped armed.
    pub fn delete_on_drop(&self, bucket: &str, object: &str) -> DeleteOnDrop {
        DeleteOnDrop {
            client: self.clone(),
            bucket: bucket.to_string(),
            object: object.to_string(),
            armed: true,
        }
    }

    /// Deletes the object; `false` when there was none.
    pub async fn delete_object(&self, bucket: &str, object: &str) -> Result<bool, StorageError> {
        let what = format!("deleting gs://{bucket}/{object}");
        let url = self.object_url(bucket, object);
        let response =
            http::send_retrying(&self.tokens, &self.retry, &what, &|| self.http.delete(&url))
                .await?;
        match response.status().as_u16() {
            200 | 204 => Ok(true),
            404 => Ok(false),
            status => Err(status_error(what, status, response).await.into()),
        }
    }

    /// Streams the object's content into `out`; returns its length.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        bucket: &str,
        object: &str,
        out: &mut W,
    ) -> Result<u64, StorageError> {
        let what = format!("downloading gs://{bucket}/{object}");
        let url = format!("{}?alt=media", self.object_url(bucket, object));
        let mut response =
            http::send_retrying(&self.tokens, &self.retry, &what, &|| self.http.get(&url)).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status_error(what, status, response).await.into());
        }
        let mut written = 0u64;
        loop {
            let piece = response
                .chunk()
                .await
                .map_err(|source| HttpError::Transport {
                    what: what.clone(),
                    source,
                })?;
            let Some(piece) = piece else { break };
            out.write_all(&piece).await.map_err(StorageError::Write)?;
            written += piece.len() as u64;
        }
        out.flush().await.map_err(StorageError::Write)?;
        Ok(written)
    }

    /// Uploads everything `reader` yields to `gs://bucket/object`, reading
    /// the next chunk while the current one is on the wire. The object's
    /// CRC32C is checked against the data read; a mismatch is an error (the
    /// corrupt object is left for the caller to delete).
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        object: &str,
        mut reader: R,
        options: &UploadOptions,
        progress: &mut (dyn FnMut(UploadProgress) + Send),
    ) -> Result<ObjectMetadata, StorageError> {
        let chunk = options.chunk_size;
        if chunk == 0 || !chunk.is_multiple_of(CHUNK_ALIGN) {
            return Err(StorageError::ChunkSize { size: chunk });
        }
        let session = self.start_session(bucket, object, options).await?;
        // Cancels the session if this future is dropped or fails before the
        // object is whole: an interrupted upload leaves nothing behind.
        let mut guard = SessionGuard {
            client: self.clone(),
            bucket: bucket.to_string(),
            object: object.to_string(),
            session: session.clone(),
            final_sent: false,
            armed: true,
        };
        let meter = UploadMeter::new();
        let mut crc = 0u32;
        let mut current = Vec::with_capacity(chunk);
        let mut eof = fill(&mut reader, &mut current, chunk, &mut crc).await?;
        let mut offset = 0u64;
        let finished = loop {
            let len = current.len() as u64;
            let total = eof.then_some(offset + len);
            let body = Bytes::from(std::mem::take(&mut current));
            guard.final_sent |= eof;
            let outcome = if eof {
                self.send_chunk(&session, offset, body, total, options)
                    .await?
            } else {
                let (sent, read) = tokio::join!(
                    self.send_chunk(&session, offset, body, total, options),
                    fill(&mut reader, &mut current, chunk, &mut crc)
                );
                let outcome = sent?;
                eof = read?;
                outcome
            };
            match outcome {
                ChunkOutcome::Finished(meta) => break meta,
                ChunkOutcome::Committed(to) => {
                    offset = to;
                    progress(meter.snapshot(offset, None));
                }
            }
        };
        // Whole: from here on the object is the caller's to keep or delete.
        guard.armed = false;
        let total = finished.size_bytes().unwrap_or(offset);
        progress(meter.snapshot(total, Some(total)));
        self.check_crc(bucket, object, finished, crc).await
    }

    async fn check_crc(
        &self,
        bucket: &str,
        object: &str,
        finished: ObjectMetadata,
        local: u32,
    ) -> Result<ObjectMetadata, StorageError> {
        let meta = if finished.crc32c.is_some() {
            finished
        } else {
            self.get_object_metadata(bucket, object)
                .await?
                .ok_or_else(|| StorageError::Protocol {
                    detail: format!("gs://{bucket}/{object} is missing right after its upload"),
                })?
        };
        let Some(remote) = meta.crc32c.clone() else {
            return Err(StorageError::NoCrc32c {
                bucket: bucket.to_string(),
                object: object.to_string(),
            });
        };
        if meta.crc32c_value() != Some(local) {
            return Err(StorageError::Crc32cMismatch {
                bucket: bucket.to_string(),
                object: object.to_string(),
                local: crc32c_base64(local),
                remote,
            });
        }
        Ok(meta)
    }

    async fn start_session(
        &self,
        bucket: &str,
        object: &str,
        options: &UploadOptions,
    ) -> Result<String, StorageError> {
        let what = format!("starting an upload to gs://{bucket}/{object}");
        let mut url = url::Url::parse(&format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base,
            utf8_percent_encode(bucket, PATH_SEGMENT)
        ))
        .map_err(|source| StorageError::Endpoint {
            url: self.base.clone(),
            source,
        })?;
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("name", object);
        let metadata = serde_json::json!({ "name": object, "contentType": options.content_type });
        let response = http::send_retrying(&self.tokens, &options.retry, &what, &|| {
            self.http
                .post(url.clone())
                .header("X-Upload-Content-Type", &options.content_type)
                .json(&metadata)
        })
        .await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(status_error(what, status, response).await.into());
        }
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(StorageError::NoSessionUrl)
    }

    /// Gets `body` (the data from `start` on) into the session, resuming
    /// after errors, until the server holds all of it (or, with `total`,
    /// has finished the object).
    async fn send_chunk(
        &self,
        session: &str,
        start: u64,
        body: Bytes,
        total: Option<u64>,
        options: &UploadOptions,
    ) -> Result<ChunkOutcome, StorageError> {
        let end = start + body.len() as u64;
        let mut confirmed = start;
        let mut failures = 0u32;
        let mut must_query = false;
        loop {
            if must_query {
                match self.query_session(session).await {
                    Ok(ChunkOutcome::Finished(meta)) => {
                        return finished_outcome(meta, total, end);
                    }
                    Ok(ChunkOutcome::Committed(held)) => {
                        if held < start || held > end {
                            return Err(StorageError::Protocol {
                                detail: format!(
                                    "the server holds {held} bytes while {start}..{end} was being sent"
                                ),
                            });
                        }
                        if held > confirmed {
                            failures = 0;
                        }
                        confirmed = held;
                        must_query = false;
                    }
                    Err(StorageError::Http(e)) if e.is_transient() => {
                        failures += 1;
                        self.back_off("querying the upload session", e, failures, options)
                            .await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if confirmed == end && total.is_none() {
                return Ok(ChunkOutcome::Committed(end));
            }
            let tail = body.slice(usize_from(confirmed - start)..);
            let range = content_range(confirmed, tail.len() as u64, total);
            match self.put(session, range, tail, options).await {
                Ok(ChunkOutcome::Finished(meta)) => return finished_outcome(meta, total, end),
                Ok(ChunkOutcome::Committed(held)) => {
                    if held < confirmed || held > end {
                        return Err(StorageError::Protocol {
                            detail: format!(
                                "the server holds {held} bytes after bytes {confirmed}..{end} were sent"
                            ),
                        });
                    }
                    // A server may keep only part of a chunk; send the rest,
                    // but do not loop forever on one that keeps nothing.
                    if held > confirmed {
                        failures = 0;
                    } else {
                        failures += 1;
                        if !options.retry.allows(failures) {
                            return Err(StorageError::Protocol {
                                detail: format!("the server keeps refusing bytes from {held} on"),
                            });
                        }
                    }
                    confirmed = held;
                }
                Err(StorageError::Http(e)) if e.is_transient() => {
                    failures += 1;
                    self.back_off("uploading a chunk", e, failures, options)
                        .await?;
                    must_query = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn back_off(
        &self,
        what: &str,
        error: HttpError,
        failures: u32,
        options: &UploadOptions,
    ) -> Result<(), StorageError> {
        if !options.retry.allows(failures) {
            return Err(HttpError::GaveUp {
                what: what.to_string(),
                attempts: failures,
                last: Box::new(error),
            }
            .into());
        }
        tracing::debug!(
            attempt = failures,
            error = %crate::error::error_chain(&error),
            "upload: {what} failed; resuming"
        );
        tokio::time::sleep(options.retry.delay(failures)).await;
        Ok(())
    }

    /// One chunk request.
    async fn put(
        &self,
        session: &str,
        range: String,
        body: Bytes,
        options: &UploadOptions,
    ) -> Result<ChunkOutcome, StorageError> {
        let request = self
            .http
            .put(session)
            .header(reqwest::header::CONTENT_RANGE, range)
            .header(reqwest::header::CONTENT_TYPE, &options.content_type)
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body);
        self.session_call("uploading a chunk", request).await
    }

    /// Asks the session how much it holds.
    async fn query_session(&self, session: &str) -> Result<ChunkOutcome, StorageError> {
        let request = self
            .http
            .put(session)
            .header(reqwest::header::CONTENT_RANGE, "bytes */*")
            .header(reqwest::header::CONTENT_LENGTH, 0);
        self.session_call("querying the upload session", request)
            .await
    }

    async fn session_call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<ChunkOutcome, StorageError> {
        let request = self
            .tokens
            .authorize(request)
            .await
            .map_err(|source| HttpError::Auth {
                what: what.to_string(),
                source,
            })?;
        // The session URL is a credential of its own: keep it out of errors.
        let response = request
            .send()
            .await
            .map_err(|source| HttpError::Transport {
                what: what.to_string(),
                source: source.without_url(),
            })?;
        match response.status().as_u16() {
            308 => {
                let range = response
                    .headers()
                    .get(reqwest::header::RANGE)
                    .map(|v| v.to_str().unwrap_or("").to_string());
                Ok(ChunkOutcome::Committed(held_bytes(range.as_deref())?))
            }
            200 | 201 => Ok(ChunkOutcome::Finished(
                http::read_json(what, response).await?,
            )),
            status @ (404 | 410) => Err(StorageError::SessionGone { status }),
            status => Err(status_error(what.to_string(), status, response)
                .await
                .into()),
        }
    }
}

fn finished_outcome(
    meta: ObjectMetadata,
    total: Option<u64>,
    end: u64,
) -> Result<ChunkOutcome, StorageError> {
    match total {
        Some(_) => Ok(ChunkOutcome::Finished(meta)),
        None => Err(StorageError::Protocol {
            detail: format!("the server finished the object at {end} bytes before the data ended"),
        }),
    }
}

/// The `Content-Range` of a request carrying `len` bytes from `start`.
pub(crate) fn content_range(start: u64, len: u64, total: Option<u64>) -> String {
    let total = total.map_or_else(|| "*".to_string(), |t| t.to_string());
    if len == 0 {
        format!("bytes */{total}")
    } else {
        format!("bytes {start}-{}/{total}", start + len - 1)
    }
}

/// How many bytes a 308's `Range: bytes=0-N` says the server holds.
pub(crate) fn held_bytes(range: Option<&str>) -> Result<u64, StorageError> {
    let Some(value) = range else { return Ok(0) };
    let bad = || StorageError::BadRange {
        value: value.to_string(),
    };
    let last = value
        .trim()
        .strip_prefix("bytes=0-")
        .ok_or_else(bad)?
        .parse::<u64>()
        .map_err(|_| bad())?;
    Ok(last + 1)
}

fn usize_from(n: u64) -> usize {
    // Offsets inside one chunk, which is held in memory.
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Reads into `buf` until it holds `size` bytes or the data ends; returns
/// whether it ended. The CRC32C follows every byte read.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    size: usize,
    crc: &mut u32,
) -> Result<bool, StorageError> {
    buf.clear();
    buf.resize(size, 0);
    let mut filled = 0;
    let mut eof = false;
    while filled < size {
        let n = reader
            .read(&mut buf[filled..])
            .await
            .map_err(StorageError::Read)?;
        if n == 0 {
            eof = true;
            break;
        }
        *crc = crc32c::crc32c_append(*crc, &buf[filled..filled + n]);
        filled += n;
    }
    buf.truncate(filled);
    Ok(eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(0, 262144, None), "bytes 0-262143/*");
        assert_eq!(
            content_range(262144, 10, Some(262154)),
            "bytes 262144-262153/262154"
        );
        assert_eq!(content_range(524288, 0, Some(524288)), "bytes */524288");
    }

    #[test]
    fn range_headers() {
        assert_eq!(held_bytes(None).unwrap(), 0);
        assert_eq!(held_bytes(Some("bytes=0-262143")).unwrap(), 262144);
        assert!(held_bytes(Some("bytes=5-9")).is_err());
        assert!(held_bytes(Some("garbage")).is_err());
    }

    #[test]
    fn emulator_hosts() {
        assert_eq!(emulator_base_url("127.0.0.1:9023"), "http://127.0.0.1:9023");
        assert_eq!(
            emulator_base_url("http://localhost:9023/"),
            "http://localhost:9023"
        );
        assert_eq!(emulator_base_url("https://gcs.test"), "https://gcs.test");
    }

    #[test]
    fn crc32c_forms() {
        // The API's example value for "hello world" is not needed: round-trip
        // through the metadata parser is what matters.
        let crc = crc32c::crc32c(b"hello world");
        let meta = ObjectMetadata {
            bucket: "b".into(),
            name: "o".into(),
            size: "11".into(),
            crc32c: Some(crc32c_base64(crc)),
            md5_hash: None,
            generation: None,
            content_type: None,
        };
        assert_eq!(meta.crc32c_value(), Some(crc));
        assert_eq!(meta.size_bytes(), Some(11));
    }

    #[test]
    fn object_names_are_escaped_in_paths() {
        let client =
            StorageClient::new("http://127.0.0.1:1/", Arc::new(TokenSource::none())).unwrap();
        assert_eq!(
            client.object_url("b", "images/a b.tar.gz"),
            "http://127.0.0.1:1/storage/v1/b/b/o/images%2Fa%20b.tar.gz"
        );
    }
}
