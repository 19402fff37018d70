//! Seed and CD images, written in-process: the cloud-init NoCloud seed
//! (`user-data`, `meta-data`, volume label `cidata`) and the template's
//! `cd_files`/`cd_content`, as ISO 9660 images with Joliet and Rock Ridge
//! names.

mod cd;
pub mod iso9660;
mod nocloud;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use nocloud::{meta_data, user_data};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cd_files: {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cd_files: bad pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("cd_content: {path:?} is not a file path inside the CD")]
    ContentPath { path: String },
    #[error("cd_files: too many nested directories under {}", path.display())]
    TooDeep { path: PathBuf },
    #[error("file name too long for the CD image: {name:?}")]
    NameTooLong { name: String },
    #[error("{} changed size while the CD image was written", path.display())]
    Changed { path: PathBuf },
    #[error("the CD image would exceed the ISO 9660 size limit")]
    TooLarge,
}

/// What the guest learns from a NoCloud seed.
pub struct NoCloud<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// One OpenSSH public key line.
    pub public_key: &'a str,
}

/// Writes a NoCloud seed ISO (label `cidata`) to `out`.
pub fn nocloud_seed(out: &Path, seed: &NoCloud<'_>) -> Result<(), SeedError> {
    nocloud::write(out, seed, image_timestamp())
}

/// Writes the template's `cd_files` (files and directories; globs already
/// expanded or expanded here, as Packer does) and `cd_content` (name →
/// content) into one ISO at `out`, with volume label `label` (Packer's
/// default when `None`).
pub fn cd_image(
    files: &[PathBuf],
    content: &BTreeMap<String, String>,
    label: Option<&str>,
    out: &Path,
) -> Result<(), SeedError> {
    cd::write(files, content, label, out, image_timestamp())
}

/// The dates written into images: `SOURCE_DATE_EPOCH` when set, so that
/// builds can be reproduced byte for byte, else now.
fn image_timestamp() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp())
}
#[cfg(test)]
mod tests;
