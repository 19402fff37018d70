//! Seed and CD images, written in-process: the cloud-init NoCloud seed
//! (`user-data`, `meta-data`, volume label `cidata`) and the template's
//! `cd_files`/`cd_content`, as ISO 9660 images with Joliet and Rock Ridge
//! names.

mod cd;
pub mod floppy;
mod iso9660;
mod nocloud;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::FileError;

#[cfg(test)]
use nocloud::{meta_data, user_data};

/// Why a seed or CD image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A file could not be read, or the image written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A `cd_files` entry names no file or directory.
    #[error("cd_files: {} does not exist", path.display())]
    Missing {
        /// The entry, as the template gives it.
        path: PathBuf,
    },
    /// A `cd_files` glob is malformed (an unclosed `[`, a bad range).
    #[error("cd_files: bad pattern {pattern:?}: {reason}")]
    Pattern {
        /// The glob, as the template gives it.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `cd_content` key names no file, or climbs out of the CD with `..`.
    #[error("cd_content: {path:?} is not a file path inside the CD")]
    ContentPath {
        /// The key, as the template gives it.
        path: String,
    },
    /// A `cd_files` directory nests too deep: symlinked directories are
    /// followed, so a link loop ends here.
    #[error("cd_files: too many nested directories under {}", path.display())]
    TooDeep {
        /// The directory given in `cd_files`.
        path: PathBuf,
    },
    /// A name makes its directory record longer than ISO 9660 allows.
    #[error("file name too long for the CD image: {name:?}")]
    NameTooLong {
        /// The name that does not fit.
        name: String,
    },
    /// A file grew or shrank between being listed and being copied into
    /// the image.
    #[error("{} changed size while the CD image was written", path.display())]
    Changed {
        /// The file that changed.
        path: PathBuf,
    },
    /// The files add up to more than an ISO 9660 image can address.
    #[error("the CD image would exceed the ISO 9660 size limit")]
    TooLarge,
}

/// What the guest learns from a NoCloud seed.
pub struct NoCloud<'a> {
    /// The instance id: a new one makes cloud-init run again on a disk
    /// that already booted once.
    pub instance_id: &'a str,
    /// The guest's hostname (`local-hostname`).
    pub hostname: &'a str,
    /// One OpenSSH public key line.
    pub public_key: &'a str,
    /// A user that gets the key and password-less sudo, as GCE's
    /// `ssh-keys` metadata gives them (a `googlecompute` build's
    /// `ssh_username`); `None`: the key goes to the image's default user.
    pub key_user: Option<&'a str>,
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
/// A `cd_content`/`floppy_content` key as path components on the image,
/// or `None` for a key that would leave the image's root (Packer joins
/// them under a scratch directory).
fn content_path(key: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = Vec::new();
    for part in key.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p.to_string()),
        }
    }
    (!parts.is_empty()).then_some(parts)
}

#[cfg(test)]
mod tests;
