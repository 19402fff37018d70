//! Seed and CD images, written in-process: the cloud-init NoCloud seed
//! (`user-data`, `meta-data`, volume label `cidata`) and the template's
//! `cd_files`/`cd_content`, as ISO 9660 images with Joliet and Rock Ridge
//! names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

/// What the guest learns from a NoCloud seed.
pub struct NoCloud<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// The SSH user the build logs in as; created by cloud-init when it is
    /// not the image's default user.
    pub username: &'a str,
    /// One OpenSSH public key line.
    pub public_key: &'a str,
}

/// Writes a NoCloud seed ISO (label `cidata`) to `out`.
pub fn nocloud_seed(out: &Path, seed: &NoCloud<'_>) -> Result<(), SeedError> {
    let _ = (out, seed);
    todo!("seed::nocloud_seed")
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
    let _ = (files, content, label, out);
    todo!("seed::cd_image")
}
