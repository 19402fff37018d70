//! Packaging a disk as GCE's `disk.raw` tarball in a local file: what
//! `kiln export --output` and the `compress` post-processor both ask for.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::BuildContext;
use super::post::PostError;
use super::report::{Reporter, packaging_progress};
use crate::error::FileError;
use crate::export::{ExportError, FormatPolicy};
use crate::plan::CompressionLevel;

/// A disk to package into a file.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The disk, qcow2 or raw.
    pub disk: PathBuf,
    /// What the disk's format may be taken to be: never probed.
    pub format: FormatPolicy,
    /// Where the `.tar.gz` goes; it appears whole or not at all.
    pub output: PathBuf,
    /// gzip level.
    pub level: CompressionLevel,
    /// Replace an existing output (never the disk itself).
    pub force: bool,
    /// Read the finished tarball back for its SHA-256: costs a pass over
    /// the file, so only when someone will print it.
    pub sha256: bool,
}

/// The tarball a [`PackageRequest`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedFile {
    /// The tarball, as the request named it.
    pub path: PathBuf,
    /// The `.tar.gz` size.
    pub size_bytes: u64,
    /// The size of `disk.raw` inside: the disk's size, rounded up to a GiB.
    pub disk_size_bytes: u64,
    /// The disk's data; the rest of `disk.raw` is holes.
    pub data_bytes: u64,
    /// When asked for: the tarball's SHA-256, lowercase hex.
    pub sha256: Option<String>,
}

/// Packages `request.disk` into `request.output` on a blocking thread,
/// with its progress reported as `export`'s. A cancel stops the packaging
/// within a block and removes the partial file.
pub async fn package_disk(
    request: &PackageRequest,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> Result<PackagedFile, PostError> {
    let ctx = BuildContext::standalone("export", reporter, cancel);
    package(&ctx, request).await
}

/// [`package_disk`] for a stage that has its build's context.
pub(crate) async fn package(
    ctx: &BuildContext,
    request: &PackageRequest,
) -> Result<PackagedFile, PostError> {
    let summary = package_to_file(ctx, request).await?;
    let sha256 = if request.sha256 {
        let path = request.output.clone();
        let digest = tokio::task::spawn_blocking(move || crate::source::hash_file(&path, "sha256"))
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))
            .and_then(|hashed| hashed)
            .map_err(|source| FileError::Read {
                path: request.output.clone(),
                source,
            })?;
        Some(digest)
    } else {
        None
    };
    Ok(PackagedFile {
        path: request.output.clone(),
        size_bytes: summary.compressed_bytes,
        disk_size_bytes: summary.raw_size,
        data_bytes: summary.data_bytes,
        sha256,
    })
}

/// GCE's tarball of the disk at the output, made on a blocking thread with
/// its progress on the build's status line. A cancel (or this future being
/// dropped) stops the packaging within a block; kiln waits for it to remove
/// its temp file and stop its tools before exiting.
async fn package_to_file(
    ctx: &BuildContext,
    request: &PackageRequest,
) -> Result<crate::export::PackageSummary, ExportError> {
    let (from, to) = (request.disk.clone(), request.output.clone());
    let (level, format, force) = (request.level, request.format, request.force);
    let progress = packaging_progress(ctx.reporter.clone(), ctx.name.clone());
    let cancel = ctx.cancel.child_token();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let pending = crate::cleanup::Pending::start();
    let packaged = tokio::task::spawn_blocking(move || {
        let _pending = pending;
        crate::export::package_to_file(
            &from,
            &to,
            force,
            &crate::export::PackageOptions {
                level: level.get(),
                progress: Some(&progress),
                format,
                cancel: Some(&cancel),
                ..Default::default()
            },
        )
    })
    .await;
    ctx.progress(None);
    packaged.map_err(|err| ExportError::Write {
        disk: request.disk.clone(),
        source: std::io::Error::other(err.to_string()),
    })?
}
