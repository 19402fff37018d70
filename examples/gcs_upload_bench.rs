//! Measures kiln's resumable upload against a local fake-gcs-server:
//! `cargo run --release --features test-support --example gcs_upload_bench -- [MiB] [chunk MiB]`.
//! The data is generated while it is uploaded, as an exporter would.

use std::sync::Arc;
use std::time::Instant;

use kiln::gcp::TokenSource;
use kiln::gcp::storage::{StorageClient, UploadOptions};
use kiln::gcp::testing::emulators::StorageEmulator;
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let chunk_mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8);
    let emulator = StorageEmulator::fake_gcs_server("bench").await?;
    let client = StorageClient::new(&emulator.base_url, Arc::new(TokenSource::none()?))?;
    let (mut tx, rx) = tokio::io::duplex(4 << 20);
    let len = mib << 20;
    tokio::spawn(async move {
        let block: Vec<u8> = (0..1usize << 20)
            .map(|i| ((i * 2_654_435_761) >> 13) as u8)
            .collect();
        for _ in 0..len >> 20 {
            if tx.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let options = UploadOptions {
        chunk_size: chunk_mib << 20,
        ..UploadOptions::default()
    };
    let started = Instant::now();
    let meta = client
        .upload("bench", "bench.bin", rx, &options, &mut |_| {})
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} MiB in {secs:.2} s = {:.0} MiB/s (chunk {chunk_mib} MiB, crc32c {})",
        mib,
        mib as f64 / secs,
        meta.crc32c.unwrap_or_default()
    );
    Ok(())
}
