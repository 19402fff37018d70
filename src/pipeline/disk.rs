//! The build's disk: made from the source image in the output directory,
//! and compacted there once the guest is down. Everything goes through
//! `qemu-img`, which knows every format QEMU does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::plan::DiskFormat;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot run qemu-img (is qemu-utils installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("qemu-img {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
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

async fn qemu_img(args: &[&str]) -> Result<String, DiskError> {
    let mut command = tokio::process::Command::new("qemu-img");
    let parent = std::process::id();
    command
        .args(args)
        .stdin(Stdio::null())
        // Its own group (a terminal's Ctrl-C is kiln's to handle), killed
        // when this future is dropped and when kiln dies.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the hook makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(move || crate::export::tool::parent_death_signal(parent));
    }
    let output = command.output().await.map_err(DiskError::Spawn)?;
    if !output.status.success() {
        return Err(DiskError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How the build disk is made from the source.
pub struct DiskPlan<'a> {
    pub source: &'a Path,
    pub target: &'a Path,
    pub format: DiskFormat,
    pub size_mib: u64,
    pub use_backing_file: bool,
    pub skip_resize: bool,
}

/// Makes the build disk from a bootable source image (`disk_image: true`).
pub async fn from_image(plan: &DiskPlan<'_>) -> Result<(), DiskError> {
    // The format is read from the header once and then told to qemu-img;
    // a backing chain must be sound (no loop, every format recorded).
    let source_path_owned = plan.source.to_path_buf();
    let source = tokio::task::spawn_blocking(move || {
        crate::export::check_image(
            &source_path_owned,
            crate::export::FormatPolicy::DetectTrusted,
        )
    })
    .await
    .map_err(|err| DiskError::Spawn(std::io::Error::other(err)))??;
    let source_format = source.format.as_str();
    let source_path = source.path.to_string_lossy();
    let target = plan.target.to_string_lossy();
    if plan.use_backing_file {
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            source_format,
            "-b",
            &source_path,
            &target,
        ])
        .await?;
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
            "convert",
            "-q",
            "-f",
            source_format,
            "-O",
            plan.format.as_str(),
            &source_path,
            &target,
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
        qemu_img(&["resize", "-q", "-f", format, &target, &size]).await?;
    }
    Ok(())
}

/// An empty disk for an installer ISO.
pub async fn blank(target: &Path, format: DiskFormat, size_mib: u64) -> Result<(), DiskError> {
    let size = format!("{size_mib}M");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        format.as_str(),
        &target.to_string_lossy(),
        &size,
    ])
    .await?;
    Ok(())
}

/// A qcow2 overlay on `base` at `target`: everything a test boot writes
/// lands there, `base` is only read.
pub async fn overlay(base: &Path, base_format: &str, target: &Path) -> Result<(), DiskError> {
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        base_format,
        "-b",
        &base.to_string_lossy(),
        &target.to_string_lossy(),
    ])
    .await
    .map(|_| ())
}

/// Rewrites the disk without the blocks the guest freed (and compressed,
/// when asked), then puts it in place of the original.
pub async fn compact(path: &Path, format: DiskFormat, compress: bool) -> Result<(), DiskError> {
    let scratch = path.with_extension("compacting");
    let (source, target) = (path.to_string_lossy(), scratch.to_string_lossy());
    let mut args = vec![
        "convert",
        "-q",
        "-f",
        format.as_str(),
        "-O",
        format.as_str(),
    ];
    if compress && format == DiskFormat::Qcow2 {
        args.push("-c");
    }
    args.push(&source);
    args.push(&target);
    if let Err(err) = qemu_img(&args).await {
        let _ = std::fs::remove_file(&scratch);
        return Err(err);
    }
    std::fs::rename(&scratch, path).map_err(|source| {
        let _ = std::fs::remove_file(&scratch);
        DiskError::Rename {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Copies a file, keeping its holes (SEEK_DATA/SEEK_HOLE), so a sparse
/// image stays sparse.
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

    #[tokio::test]
    async fn image_copy_resize_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.qcow2");
        blank(&source, DiskFormat::Qcow2, 64).await.unwrap();
        let target = dir.path().join("out.qcow2");
        let plan = DiskPlan {
            source: &source,
            target: &target,
            format: DiskFormat::Qcow2,
            size_mib: 128,
            use_backing_file: false,
            skip_resize: false,
        };
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
    async fn shrinking_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.qcow2");
        blank(&source, DiskFormat::Qcow2, 256).await.unwrap();
        let target = dir.path().join("out.qcow2");
        let plan = DiskPlan {
            source: &source,
            target: &target,
            format: DiskFormat::Qcow2,
            size_mib: 128,
            use_backing_file: true,
            skip_resize: false,
        };
        let err = from_image(&plan).await.unwrap_err();
        assert!(
            err.to_string().contains("smaller than the source image"),
            "{err}"
        );
    }
}
