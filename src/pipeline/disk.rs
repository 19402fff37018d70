//! The build's disk: made from the source image in the output directory,
//! and compacted there once the guest is down. Everything goes through
//! `qemu-img` (run by `export::qemu_img`), which knows every format QEMU
//! does.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::export::ToolError;
use crate::plan::DiskFormat;

/// A failure to create, resize or compact the build's disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    QemuImg(#[from] ToolError),
    #[error("checking the source image stopped")]
    Check(#[source] tokio::task::JoinError),
    #[error("source image")]
    Source(#[from] crate::export::ImageError),
    #[error(
        "disk_size {wanted} MiB is smaller than the source image ({actual} MiB); raise disk_size or set skip_resize_disk"
    )]
    TooSmall { wanted: u64, actual: u64 },
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot replace {} with its compacted copy", path.display())]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `qemu-img args`, its output unused. Its own process group (a
/// terminal's Ctrl-C is kiln's to handle), killed when this future is
/// dropped and when kiln dies.
async fn qemu_img(args: &[&OsStr]) -> Result<(), DiskError> {
    crate::export::qemu_img::run(args).await?;
    Ok(())
}

/// A `&str` argument, to sit beside the paths (which may not be UTF-8).
fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

/// How the build disk is made from the source.
pub struct DiskPlan<'a> {
    pub source: &'a Path,
    pub target: &'a Path,
    pub format: DiskFormat,
    pub size_mib: u64,
    pub use_backing_file: bool,
    pub skip_resize: bool,
    /// The source's format when its origin says it (see
    /// `source::known_format`); `None`: read from its header.
    pub source_format: Option<crate::export::ImageFormat>,
}

/// Makes the build disk from a bootable source image (`disk_image: true`).
pub async fn from_image(plan: &DiskPlan<'_>) -> Result<(), DiskError> {
    // The format is read from the header once and then told to qemu-img;
    // a backing chain must be sound (no loop, every format recorded).
    let source_path_owned = plan.source.to_path_buf();
    let policy = plan
        .source_format
        .map_or(crate::export::FormatPolicy::DetectTrusted, |f| {
            crate::export::FormatPolicy::Known(f)
        });
    let source =
        tokio::task::spawn_blocking(move || crate::export::check_image(&source_path_owned, policy))
            .await
            .map_err(DiskError::Check)??;
    let source_format = source.format.as_str();
    let target = plan.target.as_os_str();
    if plan.use_backing_file {
        overlay(&source.path, source_format, plan.target).await?;
    } else if source_format == plan.format.as_str() {
        // Same format: a plain copy keeps holes and is far quicker than a
        // convert.
        let (from, to) = (plan.source.to_path_buf(), plan.target.to_path_buf());
        tokio::task::spawn_blocking(move || copy_sparse(&from, &to))
            .await
            .map_err(|err| DiskError::Copy {
                from: plan.source.to_path_buf(),
                to: plan.target.to_path_buf(),
                source: std::io::Error::other(err),
            })??;
    } else {
        qemu_img(&[
            os("convert"),
            os("-q"),
            os("-f"),
            os(source_format),
            os("-O"),
            os(plan.format.as_str()),
            source.path.as_os_str(),
            target,
        ])
        .await?;
    }
    if plan.skip_resize {
        return Ok(());
    }
    let actual_mib = source.virtual_size.div_ceil(1024 * 1024);
    if plan.size_mib < actual_mib {
        return Err(DiskError::TooSmall {
            wanted: plan.size_mib,
            actual: actual_mib,
        });
    }
    if plan.size_mib > actual_mib {
        let format = if plan.use_backing_file {
            "qcow2"
        } else {
            plan.format.as_str()
        };
        let size = format!("{}M", plan.size_mib);
        qemu_img(&[
            os("resize"),
            os("-q"),
            os("-f"),
            os(format),
            target,
            os(&size),
        ])
        .await?;
    }
    Ok(())
}

/// An empty disk for an installer ISO.
pub async fn blank(target: &Path, format: DiskFormat, size_mib: u64) -> Result<(), DiskError> {
    let size = format!("{size_mib}M");
    qemu_img(&[
        os("create"),
        os("-q"),
        os("-f"),
        os(format.as_str()),
        target.as_os_str(),
        os(&size),
    ])
    .await
}

/// A qcow2 overlay on `base` at `target`: everything a test boot writes
/// lands there, `base` is only read.
pub async fn overlay(base: &Path, base_format: &str, target: &Path) -> Result<(), DiskError> {
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    qemu_img(&[
        os("create"),
        os("-q"),
        os("-f"),
        os("qcow2"),
        os("-F"),
        os(base_format),
        os("-b"),
        base.as_os_str(),
        target.as_os_str(),
    ])
    .await
}

/// Rewrites the disk without the blocks the guest freed (and compressed,
/// when asked), then puts it in place of the original.
pub async fn compact(path: &Path, format: DiskFormat, compress: bool) -> Result<(), DiskError> {
    let scratch = path.with_extension("compacting");
    let mut args = vec![
        os("convert"),
        os("-q"),
        os("-f"),
        os(format.as_str()),
        os("-O"),
        os(format.as_str()),
    ];
    if compress && format == DiskFormat::Qcow2 {
        args.push(os("-c"));
    }
    args.push(path.as_os_str());
    args.push(scratch.as_os_str());
    // Also when this future is dropped (a failed test stops the build
    // mid-way): the half-written copy goes, the disk stays as it was.
    let mut partial = RemoveOnDrop(Some(scratch.clone()));
    qemu_img(&args).await?;
    std::fs::rename(&scratch, path).map_err(|source| DiskError::Rename {
        path: path.to_path_buf(),
        source,
    })?;
    partial.0 = None;
    Ok(())
}

/// A file removed when this is dropped holding it.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a qcow2 disk takes and what its rewrite would take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// The file's length.
    pub file_bytes: u64,
    /// `qemu-img measure`'s size of a qcow2 copy: the clusters that hold
    /// data, and the metadata.
    pub compacted_bytes: u64,
}

impl Footprint {
    /// What a rewrite would save.
    pub fn reclaimable(&self) -> u64 {
        self.file_bytes.saturating_sub(self.compacted_bytes)
    }
}

/// Measures `path` (qcow2); `None` when qemu-img cannot tell.
pub async fn footprint(path: &Path) -> Option<Footprint> {
    let out = crate::export::qemu_img::run(&[
        os("measure"),
        os("--output=json"),
        os("-f"),
        os("qcow2"),
        os("-O"),
        os("qcow2"),
        path.as_os_str(),
    ])
    .await
    .map_err(|err| tracing::debug!(error = %err, "qemu-img measure failed"))
    .ok()?;
    #[derive(serde::Deserialize)]
    struct Measure {
        required: u64,
    }
    let measured: Measure = serde_json::from_slice(&out).ok()?;
    let file_bytes = std::fs::metadata(path).ok()?.len();
    Some(Footprint {
        file_bytes,
        compacted_bytes: measured.required,
    })
}

/// Copies a file, keeping its holes (SEEK_DATA/SEEK_HOLE), so a sparse
/// image stays sparse.
/// Writes the image `top` (with its backing chain) as one standalone
/// disk in `format`: the build's compaction when the step cache keeps the
/// machine as a chain of overlays.
pub async fn flatten(
    top: &Path,
    target: &Path,
    format: DiskFormat,
    compress: bool,
) -> Result<(), DiskError> {
    let mut args = vec![
        os("convert"),
        os("-q"),
        os("-f"),
        os("qcow2"),
        os("-O"),
        os(format.as_str()),
    ];
    if compress && format == DiskFormat::Qcow2 {
        args.push(os("-c"));
    }
    args.push(top.as_os_str());
    args.push(target.as_os_str());
    if let Err(err) = qemu_img(&args).await {
        let _ = std::fs::remove_file(target);
        return Err(err);
    }
    Ok(())
}

/// Puts the disk `from` (a finished step-cache entry) at `to`: a hard
/// link where both are on one file system, a copy otherwise. A write
/// through the link changes the entry's times, so the cache sees it and
/// makes the entry again rather than use it.
pub async fn link_or_copy(from: &Path, to: &Path) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(to);
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => copy(from, to).await,
    }
}

/// Copies a disk keeping its holes (a reflink where the file system
/// offers one).
pub async fn copy(from: &Path, to: &Path) -> Result<(), DiskError> {
    let (from_owned, to_owned) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || copy_sparse(&from_owned, &to_owned))
        .await
        .map_err(|err| DiskError::Copy {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source: std::io::Error::other(err),
        })?
}

fn copy_sparse(from: &Path, to: &Path) -> Result<(), DiskError> {
    use std::os::unix::io::AsRawFd;
    let err = |source| DiskError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    let input = std::fs::File::open(from).map_err(err)?;
    let output = std::fs::File::create(to).map_err(err)?;
    let len = input.metadata().map_err(err)?.len();
    output.set_len(len).map_err(err)?;
    let (fd_in, fd_out) = (input.as_raw_fd(), output.as_raw_fd());
    let mut offset: i64 = 0;
    let len = len as i64;
    while offset < len {
        // SAFETY: plain syscalls on file descriptors owned above.
        let data = unsafe { libc::lseek(fd_in, offset, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data: the rest is a hole
        }
        let hole = unsafe { libc::lseek(fd_in, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { len } else { hole };
        let mut off_in = data;
        let mut off_out = data;
        let mut remaining = (hole - data) as usize;
        while remaining > 0 {
            let copied = unsafe {
                libc::copy_file_range(fd_in, &mut off_in, fd_out, &mut off_out, remaining, 0)
            };
            if copied < 0 {
                return Err(err(std::io::Error::last_os_error()));
            }
            if copied == 0 {
                break;
            }
            remaining -= copied as usize;
        }
        offset = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.raw");
        let to = dir.path().join("b.raw");
        let mut file = std::fs::File::create(&from).unwrap();
        file.set_len(64 << 20).unwrap();
        file.seek(SeekFrom::Start(32 << 20)).unwrap();
        file.write_all(b"hello").unwrap();
        drop(file);
        copy_sparse(&from, &to).unwrap();
        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&to).unwrap().blocks();
        assert!(
            blocks * 512 < 8 << 20,
            "copy is not sparse: {blocks} blocks"
        );
    }

    async fn info(path: &Path) -> Result<crate::export::CheckedImage, crate::export::ImageError> {
        crate::export::check_image(path, crate::export::FormatPolicy::DetectTrusted)
    }

    /// A blank qcow2 source of `mib` MiB in `dir`, and where its copy goes.
    async fn source_and_target(dir: &Path, mib: u64) -> (PathBuf, PathBuf) {
        let source = dir.join("src.qcow2");
        blank(&source, DiskFormat::Qcow2, mib).await.unwrap();
        (source, dir.join("out.qcow2"))
    }

    /// A full qcow2 copy of `source`, resized to 128 MiB.
    fn plan<'a>(source: &'a Path, target: &'a Path) -> DiskPlan<'a> {
        DiskPlan {
            source,
            target,
            format: DiskFormat::Qcow2,
            size_mib: 128,
            use_backing_file: false,
            skip_resize: false,
            source_format: None,
        }
    }

    #[tokio::test]
    async fn image_copy_resize_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = source_and_target(dir.path(), 64).await;
        let plan = plan(&source, &target);
        from_image(&plan).await.unwrap();
        assert_eq!(info(&target).await.unwrap().virtual_size, 128 << 20);
        compact(&target, DiskFormat::Qcow2, true).await.unwrap();
        assert_eq!(
            info(&target).await.unwrap().format,
            crate::export::ImageFormat::Qcow2
        );

        let raw = dir.path().join("out.raw");
        let plan = DiskPlan {
            target: &raw,
            format: DiskFormat::Raw,
            ..plan
        };
        from_image(&plan).await.unwrap();
        assert_eq!(
            info(&raw).await.unwrap().format,
            crate::export::ImageFormat::Raw
        );
    }

    #[tokio::test]
    async fn a_qemu_img_failure_says_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("no-such-dir").join("disk.qcow2");
        let err = blank(&target, DiskFormat::Qcow2, 64).await.unwrap_err();
        assert!(
            matches!(&err, DiskError::QemuImg(ToolError::Failed { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[tokio::test]
    async fn shrinking_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = source_and_target(dir.path(), 256).await;
        let plan = DiskPlan {
            use_backing_file: true,
            ..plan(&source, &target)
        };
        let err = from_image(&plan).await.unwrap_err();
        assert!(
            err.to_string().contains("smaller than the source image"),
            "{err}"
        );
    }
}
