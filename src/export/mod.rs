//! The tarball Compute Engine imports: one sparse `disk.raw` in a GNU tar,
//! gzipped, streamed from a disk of any format without an intermediate raw
//! copy.
//!
//! Raw disks are read in place, their holes taken from the filesystem;
//! other formats are read through `qemu-nbd` on a unix socket, their holes
//! taken from `qemu-img map`. All-zero blocks inside the data become holes
//! too. The gzip is compressed on every core but is one ordinary member.
//!
//! Such a tarball is also read back here (`unpack`), for booting it.

mod deflate_end;
mod error;
mod extents;
mod format;
mod gzip;
mod nbd;
pub mod qemu_img;
mod tar;
#[cfg(test)]
mod tests;
pub mod tool;
pub mod unpack;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use tokio_util::sync::CancellationToken;

pub use error::{ExportError, ToolError};
pub use format::{CheckedImage, FormatPolicy, ImageError, ImageFormat, check_image};
pub use gzip::{GzipSummary, ParallelGzip};
pub use nbd::NbdError;

use extents::{Extent, RawFile, ReadAt};

/// Compute Engine wants the raw disk to be a whole number of GiB.
pub const GIB: u64 = 1 << 30;
/// All-zero blocks of this size (aligned on the disk) are left out.
const ZERO_BLOCK: u64 = 64 << 10;
/// The one name Compute Engine looks for in the tarball.
const ENTRY_NAME: &str = "disk.raw";

/// Data bytes copied so far, and the total to copy.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// How to package.
#[derive(Clone, Copy)]
pub struct PackageOptions<'a> {
    /// gzip level, 0 to 9.
    pub level: u32,
    /// Compression threads; 0 means one per core, up to 16.
    pub threads: usize,
    /// The entry's modification time (seconds since the epoch); `None`
    /// takes the disk file's. A fixed value makes the output reproducible.
    pub mtime: Option<u64>,
    /// Told how far the packaging is through the disk's data.
    pub progress: Option<Progress<'a>>,
    /// What the disk's format may be taken to be: never probed.
    pub format: FormatPolicy,
    /// Checked before every block: the packaging stops, kills its tools and
    /// removes what it made.
    pub cancel: Option<&'a CancellationToken>,
}

impl Default for PackageOptions<'_> {
    fn default() -> Self {
        PackageOptions {
            level: 6,
            threads: 0,
            mtime: None,
            progress: None,
            format: FormatPolicy::Detect,
            cancel: None,
        }
    }
}

/// What was packaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSummary {
    /// The format the disk was read as.
    pub format: String,
    /// The guest-visible size of the disk.
    pub virtual_size: u64,
    /// The size of `disk.raw` in the tarball: `virtual_size` rounded up to
    /// a whole GiB.
    pub raw_size: u64,
    /// The data stored; everything else is a hole.
    pub data_bytes: u64,
    /// The tar stream's length before compression.
    pub tar_bytes: u64,
    /// The `.tar.gz` length.
    pub compressed_bytes: u64,
}

/// Writes the `.tar.gz` of `disk` to `out`. Blocking, with compression
/// threads inside: from async code, call it in `spawn_blocking`.
pub fn package(
    disk: &Path,
    out: &mut dyn Write,
    options: &PackageOptions,
) -> Result<PackageSummary, ExportError> {
    let opened = open(disk, options.format, options.cancel)?;
    let cancelled = |err: ExportError| match options.cancel {
        Some(cancel) if cancel.is_cancelled() => ExportError::Cancelled {
            disk: disk.to_path_buf(),
        },
        _ => err,
    };
    let mut reader = Cancellable {
        inner: opened.reader,
        cancel: options.cancel,
    };
    let map =
        extents::drop_zero_blocks(&mut reader, &opened.extents, ZERO_BLOCK).map_err(|source| {
            cancelled(ExportError::Read {
                disk: disk.to_path_buf(),
                source,
            })
        })?;
    let raw_size = opened.virtual_size.div_ceil(GIB) * GIB;
    let data_bytes = tar::stored_size(&map);
    tracing::debug!(
        disk = %disk.display(),
        format = %opened.format,
        virtual_size = opened.virtual_size,
        extents = map.len(),
        data_bytes,
        "packaging"
    );
    let entry = tar::SparseEntry {
        name: ENTRY_NAME,
        real_size: raw_size,
        mtime: options.mtime.unwrap_or(opened.mtime),
        map: &map,
    };
    let write_error = |source| ExportError::Write {
        disk: disk.to_path_buf(),
        source,
    };
    let mut gzip = ParallelGzip::new(out, options.level, options.threads, gzip::DEFAULT_BLOCK)
        .map_err(write_error)?;
    let mut progress = |copied| {
        if let Some(report) = options.progress {
            report(copied, data_bytes);
        }
    };
    let tar_bytes =
        tar::write_archive(&entry, &mut reader, &mut gzip, &mut progress).map_err(|err| {
            cancelled(match err {
                tar::StreamError::Read(source) => ExportError::Read {
                    disk: disk.to_path_buf(),
                    source,
                },
                tar::StreamError::Write(source) => write_error(source),
            })
        })?;
    let compressed = gzip.finish().map_err(write_error)?;
    Ok(PackageSummary {
        format: opened.format,
        virtual_size: opened.virtual_size,
        raw_size,
        data_bytes,
        tar_bytes,
        compressed_bytes: compressed.bytes_out,
    })
}

/// `package` into the file `out`, which appears whole or not at all: the
/// tarball is written beside it under a temporary name and renamed. An
/// existing `out` is replaced only with `force`, and never when it is the
/// disk or one of its backing files.
pub fn package_to_file(
    disk: &Path,
    out: &Path,
    force: bool,
    options: &PackageOptions,
) -> Result<PackageSummary, ExportError> {
    let output_error = |source| ExportError::Output {
        path: out.to_path_buf(),
        source,
    };
    check_output(disk, out, force, options.format)?;
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Dropped on any error or cancel below, which deletes it.
    let temp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(output_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, temp.as_file());
    let summary = package(disk, &mut writer, options)?;
    writer.flush().map_err(output_error)?;
    drop(writer);
    temp.as_file().sync_all().map_err(output_error)?;
    set_mode_0644(temp.as_file()).map_err(output_error)?;
    if force {
        temp.persist(out).map_err(|err| output_error(err.error))?;
    } else {
        // Made meanwhile by someone else: still not ours to replace.
        temp.persist_noclobber(out).map_err(|err| {
            if err.error.kind() == std::io::ErrorKind::AlreadyExists {
                ExportError::OutputExists {
                    path: out.to_path_buf(),
                }
            } else {
                output_error(err.error)
            }
        })?;
    }
    Ok(summary)
}

/// Refuses an output that is the disk (or a file it reads through), by
/// device and inode, so neither a symlink nor a hard link hides it; and an
/// existing one without `force`.
pub fn check_output(
    disk: &Path,
    out: &Path,
    force: bool,
    policy: FormatPolicy,
) -> Result<(), ExportError> {
    use std::os::unix::fs::MetadataExt;
    let existing = match std::fs::metadata(out) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ExportError::Output {
                path: out.to_path_buf(),
                source,
            });
        }
    };
    if existing.is_dir() {
        return Err(ExportError::OutputIsDirectory {
            path: out.to_path_buf(),
        });
    }
    let image = format::check_image(disk, policy)?;
    let same = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|m| m.dev() == existing.dev() && m.ino() == existing.ino())
    };
    if let Some(input) = std::iter::once(&image.path)
        .chain(&image.backing_chain)
        .find(|path| same(path))
    {
        return Err(ExportError::OutputIsInput {
            path: out.to_path_buf(),
            input: input.clone(),
        });
    }
    if !force {
        return Err(ExportError::OutputExists {
            path: out.to_path_buf(),
        });
    }
    Ok(())
}

/// A temp file is private; the tarball is an ordinary file.
fn set_mode_0644(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// A disk ready to read: its raw view and where the data may be.
struct Opened {
    format: String,
    virtual_size: u64,
    mtime: u64,
    extents: Vec<Extent>,
    reader: Box<dyn ReadAt>,
    // Declared last: dropped after the reader, whose connection it serves.
    _server: Option<nbd::NbdServer>,
}

fn open(
    disk: &Path,
    policy: FormatPolicy,
    cancel: Option<&CancellationToken>,
) -> Result<Opened, ExportError> {
    let open_error = |source| ExportError::Open {
        disk: disk.to_path_buf(),
        source,
    };
    let image = format::check_image(disk, policy)?;
    let path = image.path;
    let metadata = std::fs::metadata(&path).map_err(open_error)?;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |age| age.as_secs());
    if image.virtual_size == 0 {
        return Err(ExportError::EmptyImage {
            disk: disk.to_path_buf(),
        });
    }
    let limit = image.virtual_size.next_multiple_of(extents::SECTOR);
    if image.format == ImageFormat::Raw {
        let file = File::open(&path).map_err(open_error)?;
        let found = extents::raw_extents(&file, image.virtual_size).map_err(open_error)?;
        return Ok(Opened {
            format: image.format.as_str().to_string(),
            virtual_size: image.virtual_size,
            mtime,
            extents: extents::normalize(found, limit),
            reader: Box::new(RawFile(file)),
            _server: None,
        });
    }
    let found = qemu_img::map(&path, image.format, cancel).map_err(|source| match source {
        ToolError::Cancelled { .. } => ExportError::Cancelled {
            disk: disk.to_path_buf(),
        },
        source => ExportError::Map {
            disk: disk.to_path_buf(),
            source,
        },
    })?;
    let nbd_error = |source| ExportError::Nbd {
        disk: disk.to_path_buf(),
        source,
    };
    let mut server = nbd::NbdServer::start(&path, image.format.as_str()).map_err(nbd_error)?;
    let client = server.connect(cancel).map_err(|source| match source {
        nbd::NbdError::Cancelled => ExportError::Cancelled {
            disk: disk.to_path_buf(),
        },
        source => nbd_error(source),
    })?;
    Ok(Opened {
        format: image.format.as_str().to_string(),
        virtual_size: image.virtual_size,
        mtime,
        extents: extents::normalize(found, limit),
        reader: Box::new(client),
        _server: Some(server),
    })
}

/// A reader that fails every read once the packaging is cancelled: both
/// passes over the disk stop within one block.
struct Cancellable<'a> {
    inner: Box<dyn ReadAt>,
    cancel: Option<&'a CancellationToken>,
}

impl ReadAt for Cancellable<'_> {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
        }
        self.inner.read_exact_at(buf, offset)
    }
}
