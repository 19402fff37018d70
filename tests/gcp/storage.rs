use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;

use kiln::gcp::{
    HttpError, RetryPolicy, StorageClient, StorageError, TokenSource, UploadOptions, UploadProgress,
};
use kiln_test_support::emulators::StorageEmulator;
use kiln_test_support::fault_proxy::{Fault, FaultProxy, RequestInfo};

const KIB256: usize = 256 * 1024;
const BUCKET: &str = "kiln-test";

fn client(base_url: &str) -> StorageClient {
    StorageClient::new(base_url, Arc::new(TokenSource::none()))
        .unwrap()
        .with_retry(RetryPolicy::fast(5))
}

fn options(chunk_size: usize) -> UploadOptions {
    UploadOptions {
        chunk_size,
        retry: RetryPolicy::fast(8),
        ..UploadOptions::default()
    }
}

/// Deterministic, incompressible-looking bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A reader fed by a task that produces `len` bytes in odd-sized pieces
/// while the upload runs, like an exporter writing a tarball. Returns the
/// reader and the CRC32C of everything it will yield.
fn generated(len: usize, seed: u64) -> (tokio::io::DuplexStream, u32) {
    let bytes = data(len, seed);
    let crc = crc32c::crc32c(&bytes);
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        for piece in bytes.chunks(100_003) {
            if tx.write_all(piece).await.is_err() {
                return;
            }
        }
    });
    (rx, crc)
}

async fn download(client: &StorageClient, object: &str) -> Vec<u8> {
    let mut out = Vec::new();
    client.download_to(BUCKET, object, &mut out).await.unwrap();
    out
}

async fn upload_bytes(
    client: &StorageClient,
    object: &str,
    bytes: &[u8],
    opts: &UploadOptions,
) -> Result<kiln::gcp::ObjectMetadata, StorageError> {
    client
        .upload(BUCKET, object, bytes, opts, &mut |_| {})
        .await
}

async fn small_round_trip(emulator: &StorageEmulator) {
    let client = client(&emulator.base_url);
    let bytes = data(1000, 1);
    let object = "images/small one.tar.gz";
    let meta = upload_bytes(&client, object, &bytes, &options(KIB256))
        .await
        .unwrap();
    assert_eq!(meta.size_bytes(), Some(1000));
    assert_eq!(meta.crc32c_value(), Some(crc32c::crc32c(&bytes)));
    assert_eq!(download(&client, object).await, bytes);
    assert!(client.object_exists(BUCKET, object).await.unwrap());
    assert!(client.delete_object(BUCKET, object).await.unwrap());
    assert!(!client.object_exists(BUCKET, object).await.unwrap());
    assert!(!client.delete_object(BUCKET, object).await.unwrap());
}

#[tokio::test]
async fn small_upload_to_fake_gcs_server() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET).await.unwrap();
    small_round_trip(&emulator).await;
}

#[tokio::test]
async fn small_upload_to_gcp_storage_emulator() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET).await.unwrap();
    small_round_trip(&emulator).await;
}

async fn large_streamed(emulator: &StorageEmulator) {
    let client = client(&emulator.base_url);
    let len = 64 * 1024 * 1024 + 12_345;
    let (reader, crc) = generated(len, 2);
    let mut seen: Vec<UploadProgress> = Vec::new();
    let meta = client
        .upload(
            BUCKET,
            "large",
            reader,
            &UploadOptions::default(),
            &mut |p| seen.push(p),
        )
        .await
        .unwrap();
    assert_eq!(meta.size_bytes(), Some(len as u64));
    assert_eq!(meta.crc32c_value(), Some(crc));
    let back = download(&client, "large").await;
    assert_eq!(back.len(), len);
    assert!(back == data(len, 2), "downloaded object differs");
    // Progress: one report per 8 MiB chunk and a last one with the total.
    assert_eq!(seen.len(), 9);
    assert!(seen.windows(2).all(|w| w[0].bytes_sent < w[1].bytes_sent));
    assert_eq!(seen.last().map(|p| p.total), Some(Some(len as u64)));
}

#[tokio::test]
async fn large_streamed_upload_to_fake_gcs_server() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET).await.unwrap();
    large_streamed(&emulator).await;
}

#[tokio::test]
async fn large_streamed_upload_to_gcp_storage_emulator() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET).await.unwrap();
    large_streamed(&emulator).await;
}

/// Counts the chunk uploads (PUTs with a body) and picks their fault.
fn chunk_plan(
    pick: impl Fn(usize) -> Fault + Send + Sync + 'static,
) -> impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static {
    let chunks = AtomicUsize::new(0);
    move |req: &RequestInfo| {
        if req.method == "PUT" && req.body_len > 0 {
            pick(chunks.fetch_add(1, Ordering::SeqCst))
        } else {
            Fault::Pass
        }
    }
}

async fn proxied(
    plan: impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static,
) -> (StorageEmulator, FaultProxy, StorageClient) {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET).await.unwrap();
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", emulator.port), plan)
        .await
        .unwrap();
    let client = client(&proxy.base_url);
    (emulator, proxy, client)
}

fn ranges(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .log()
        .iter()
        .filter(|(r, _)| r.method == "PUT")
        .filter_map(|(r, _)| r.content_range.clone())
        .collect()
}

#[tokio::test]
async fn data_ending_on_a_chunk_boundary_is_finished_with_an_empty_request() {
    let (_emulator, proxy, client) = proxied(|_| Fault::Pass).await;
    let bytes = data(2 * KIB256, 3);
    upload_bytes(&client, "boundary", &bytes, &options(KIB256))
        .await
        .unwrap();
    assert_eq!(
        ranges(&proxy),
        [
            "bytes 0-262143/*",
            "bytes 262144-524287/*",
            "bytes */524288"
        ]
    );
    let last = proxy.log().last().map(|(r, _)| r.body_len);
    assert_eq!(last, Some(0));
    assert_eq!(download(&client, "boundary").await, bytes);
}

#[tokio::test]
async fn the_total_goes_with_the_last_chunk() {
    let (_emulator, proxy, client) = proxied(|_| Fault::Pass).await;
    let bytes = data(KIB256 + 10, 4);
    upload_bytes(&client, "short-last", &bytes, &options(KIB256))
        .await
        .unwrap();
    assert_eq!(
        ranges(&proxy),
        ["bytes 0-262143/*", "bytes 262144-262153/262154"]
    );
}

#[tokio::test]
async fn resumes_after_dropped_connections() {
    let (_emulator, proxy, client) = proxied(chunk_plan(|n| match n {
        1 => Fault::DropMidBody,
        4 => Fault::DropResponse,
        6 => Fault::DropMidBody,
        _ => Fault::Pass,
    }))
    .await;
    let len = 5 * KIB256 + 777;
    let (reader, _) = generated(len, 5);
    client
        .upload(BUCKET, "dropped", reader, &options(KIB256), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(download(&client, "dropped").await, data(len, 5));
    assert_eq!(proxy.faults_injected(), 3);
    // Each fault was followed by a status query.
    let queries = ranges(&proxy).iter().filter(|r| *r == "bytes */*").count();
    assert_eq!(queries, 3);
}

#[tokio::test]
async fn resumes_mid_chunk_when_the_server_kept_part_of_it() {
    let (_emulator, proxy, client) = proxied(chunk_plan(|n| {
        if n == 1 {
            Fault::ForwardHalf
        } else {
            Fault::Pass
        }
    }))
    .await;
    let len = 3 * 2 * KIB256 + 99;
    let bytes = data(len, 6);
    upload_bytes(&client, "half", &bytes, &options(2 * KIB256))
        .await
        .unwrap();
    assert_eq!(download(&client, "half").await, bytes);
    let sent = ranges(&proxy);
    // The second chunk (bytes 524288..) lost its answer after the server
    // kept 256 KiB of it; the client resent only the rest.
    assert!(sent.contains(&"bytes */*".to_string()), "{sent:?}");
    assert!(
        sent.contains(&"bytes 786432-1048575/*".to_string()),
        "{sent:?}"
    );
}

#[tokio::test]
async fn resumes_after_503s() {
    let queries = AtomicUsize::new(0);
    let chunks = AtomicUsize::new(0);
    let (_emulator, proxy, client) = proxied(move |req: &RequestInfo| {
        if req.method != "PUT" {
            return Fault::Pass;
        }
        if req.body_len == 0 && req.content_range.as_deref() == Some("bytes */*") {
            // The first status query fails too.
            return if queries.fetch_add(1, Ordering::SeqCst) == 0 {
                Fault::Respond(503)
            } else {
                Fault::Pass
            };
        }
        // Not the first chunk: gcp-storage-emulator answers a status query
        // on an empty session with `Range: bytes=0-0` (one byte held)
        // where GCS sends no Range, so a resume from zero cannot be tested
        // against it.
        if chunks.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            Fault::Respond(503)
        } else {
            Fault::Pass
        }
    })
    .await;
    let len = 4 * KIB256 + 1;
    let (reader, _) = generated(len, 7);
    client
        .upload(BUCKET, "flaky", reader, &options(KIB256), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(download(&client, "flaky").await, data(len, 7));
    assert!(proxy.faults_injected() >= 5, "{}", proxy.faults_injected());
}

#[tokio::test]
async fn gives_up_after_bounded_attempts() {
    // From the second chunk on (see resumes_after_503s for why not the first).
    let (_emulator, proxy, client) = proxied(chunk_plan(|n| {
        if n == 0 {
            Fault::Pass
        } else {
            Fault::Respond(503)
        }
    }))
    .await;
    let opts = UploadOptions {
        retry: RetryPolicy::fast(3),
        ..options(KIB256)
    };
    let err = upload_bytes(&client, "doomed", &data(KIB256 + 1000, 8), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Http(HttpError::GaveUp { attempts: 3, .. })
        ),
        "{}",
        kiln::error::error_chain(&err)
    );
    assert!(
        kiln::error::error_chain(&err).contains("HTTP 503"),
        "{}",
        kiln::error::error_chain(&err)
    );
    assert_eq!(proxy.faults_injected(), 3, "{:#?}", proxy.log());
}

#[tokio::test]
async fn a_corrupted_upload_is_detected_by_crc32c() {
    let (_emulator, _proxy, client) = proxied(chunk_plan(|n| {
        if n == 1 { Fault::FlipByte } else { Fault::Pass }
    }))
    .await;
    let bytes = data(3 * KIB256, 9);
    let err = upload_bytes(&client, "corrupt", &bytes, &options(KIB256))
        .await
        .unwrap_err();
    match &err {
        StorageError::Crc32cMismatch { local, remote, .. } => {
            assert_ne!(local, remote);
            assert_eq!(*local, kiln::gcp::crc32c_base64(crc32c::crc32c(&bytes)));
        }
        other => panic!(
            "expected a crc32c mismatch, got {}",
            kiln::error::error_chain(other)
        ),
    }
    assert!(
        err.to_string()
            .contains("gs://kiln-test/corrupt is corrupt"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_chunk_size_is_refused_before_any_request() {
    let (_emulator, proxy, client) = proxied(|_| Fault::Pass).await;
    let err = upload_bytes(&client, "x", b"abc", &options(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::ChunkSize { size: 1000 }),
        "{err}"
    );
    assert!(proxy.log().is_empty());
}

#[tokio::test]
async fn an_empty_upload_makes_an_empty_object() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET).await.unwrap();
    let client = client(&emulator.base_url);
    let meta = upload_bytes(&client, "empty", b"", &options(KIB256))
        .await
        .unwrap();
    assert_eq!(meta.size_bytes(), Some(0));
    assert!(download(&client, "empty").await.is_empty());
}

#[tokio::test]
async fn every_request_carries_the_cached_token() {
    use kiln::gcp::Credentials;
    use kiln_test_support::token_server::{GOOD_REFRESH_TOKEN, TokenServer};

    let tokens = TokenServer::start(3600).await.unwrap();
    let user = serde_json::json!({
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": "secret",
        "refresh_token": GOOD_REFRESH_TOKEN,
        "token_uri": format!("{}/token", tokens.base_url),
    });
    let creds =
        Credentials::from_json(&user.to_string(), std::path::Path::new("user.json")).unwrap();
    let (_emulator, proxy, _) = proxied(chunk_plan(|n| {
        if n == 1 {
            Fault::DropMidBody
        } else {
            Fault::Pass
        }
    }))
    .await;
    let client =
        StorageClient::new(&proxy.base_url, Arc::new(TokenSource::new(creds).unwrap())).unwrap();
    let bytes = data(3 * KIB256, 10);
    upload_bytes(&client, "authorized", &bytes, &options(KIB256))
        .await
        .unwrap();
    let log = proxy.log();
    assert!(log.len() >= 6, "{log:#?}");
    for (request, _) in &log {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer test-token-1"),
            "{request:?}"
        );
    }
    assert_eq!(tokens.requests(), 1);
}
