//! kiln's resumable upload of one file, timed, for `bench/upload.py`:
//! `gcs_upload_bench FILE BUCKET [CHUNK_MIB]`, against the Cloud Storage
//! endpoint in `STORAGE_EMULATOR_HOST` (no credentials). The file is read
//! as a stream, as an export is, and its size is not given in advance.
//! Prints the seconds taken and the object's crc32c as JSON.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use kiln::gcp::{StorageClient, TokenSource, UploadOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gcs_upload_bench FILE BUCKET [CHUNK_MIB]";
    let file = args.next().context(usage)?;
    let bucket = args.next().context(usage)?;
    let chunk_mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8);
    let endpoint = std::env::var("STORAGE_EMULATOR_HOST")
        .context("STORAGE_EMULATOR_HOST must point at the emulator")?;
    let client = StorageClient::new(&endpoint, Arc::new(TokenSource::none()))?;
    let options = UploadOptions {
        chunk_size: chunk_mib << 20,
        ..UploadOptions::default()
    };
    let source = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("open {file}"))?;
    let started = Instant::now();
    let meta = client
        .upload(&bucket, "bench.bin", source, &options, &mut |_| {})
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "seconds": secs,
        "size": meta.size_bytes(),
        "crc32c": meta.crc32c,
    });
    println!("{json}");
    Ok(())
}
