//! Reading the disk back out of a GCE image tarball (`disk.raw` in a gzip'd
//! GNU tar, usually sparse), so `kiln test` can boot what is about to be
//! published. The `tar` crate reads the archive (oldgnu sparse entries and
//! their extension blocks included) and seeks over the holes as it
//! unpacks: a 10 GiB disk with 1 GiB of data costs 1 GiB of space.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ::tar::{Archive, EntryType, Unpacked};

use super::ENTRY_NAME;
use crate::error::FileError;

/// Why a tarball's `disk.raw` could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    /// The tarball (or the unpacked disk) could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a gzip'd tar, or a damaged one.
    #[error("{} is not a GCE image tarball", path.display())]
    Malformed {
        /// The tarball.
        path: PathBuf,
        /// What the gzip or tar reader said.
        #[source]
        source: std::io::Error,
    },
    /// The disk could not be unpacked: the archive's data ended or was
    /// damaged, or the copy could not be written (the tar crate does not
    /// say which).
    #[error("cannot unpack disk.raw from {} to {}", tarball.display(), out.display())]
    Unpack {
        /// The tarball.
        tarball: PathBuf,
        /// The copy being written.
        out: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A readable archive, but not what Compute Engine imports.
    #[error("{} is not a GCE image tarball: {reason}", path.display())]
    Invalid {
        /// The tarball.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Whether `path` starts like a gzip file.
pub fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// Unpacks the tarball's `disk.raw` to `out` (sparse) and returns its size.
/// Blocking: from async code, call it in `spawn_blocking`.
pub fn extract_disk(tarball: &Path, out: &Path) -> Result<u64, TarballError> {
    let malformed = |source| TarballError::Malformed {
        path: tarball.to_path_buf(),
        source,
    };
    let invalid = |reason| TarballError::Invalid {
        path: tarball.to_path_buf(),
        reason,
    };
    let file = File::open(tarball).map_err(FileError::read(tarball))?;
    let mut archive = Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    // The copy is kiln's scratch file: the archive's times and modes are
    // not wanted on it.
    archive.set_preserve_mtime(false);
    archive.set_preserve_permissions(false);
    let mut found = None;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let is_file = matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::GNUSparse
        );
        if entry.path_bytes().as_ref() != ENTRY_NAME.as_bytes() || !is_file {
            continue;
        }
        if found.is_some() {
            return Err(invalid("it holds more than one disk.raw"));
        }
        // For a sparse entry: the disk's size, not the bytes stored.
        let size = entry.size();
        let unpacked = entry.unpack(out).map_err(|source| TarballError::Unpack {
            tarball: tarball.to_path_buf(),
            out: out.to_path_buf(),
            source,
        })?;
        let Unpacked::File(copy) = unpacked else {
            return Err(invalid("its disk.raw is not a file"));
        };
        // A header's mode of 000 must not lock kiln out of its own copy.
        let write_err = FileError::write(out);
        copy.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        copy.sync_all().map_err(write_err)?;
        found = Some(size);
    }
    found.ok_or_else(|| invalid("it holds no disk.raw"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn tar(dir: &Path, args: &[&str]) {
        let status = Command::new("tar")
            .current_dir(dir)
            .args(args)
            .status()
            .expect("GNU tar is needed for this test");
        assert!(status.success(), "tar {args:?}");
    }

    /// A sparse `disk.raw` of `size` bytes with `writes` in it.
    fn sparse_disk(dir: &Path, size: u64, writes: &[(u64, &[u8])]) -> PathBuf {
        let disk = dir.join("disk.raw");
        let mut file = File::create(&disk).unwrap();
        file.set_len(size).unwrap();
        for (offset, data) in writes {
            file.seek(SeekFrom::Start(*offset)).unwrap();
            file.write_all(data).unwrap();
        }
        disk
    }

    fn same_bytes(a: &Path, b: &Path) -> bool {
        let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = a.read(&mut x).unwrap();
            if n == 0 {
                return b.read(&mut y).unwrap() == 0;
            }
            if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
                return false;
            }
        }
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn gnu_tar_sparse_disk_comes_back_byte_for_byte_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        // More regions than fit in the header: extension blocks are read.
        let chunk = vec![0xabu8; 4096];
        let writes: Vec<(u64, &[u8])> = (0..30u64)
            .map(|i| (i * (1 << 20), chunk.as_slice()))
            .collect();
        let disk = sparse_disk(dir.path(), 64 << 20, &writes);
        tar(
            dir.path(),
            &["--format=oldgnu", "-Sczf", "image.tar.gz", "disk.raw"],
        );
        let tarball = dir.path().join("image.tar.gz");
        assert!(is_gzip(&tarball));
        let out = dir.path().join("out.raw");
        assert_eq!(extract_disk(&tarball, &out).unwrap(), 64 << 20);
        assert!(same_bytes(&disk, &out), "extracted disk differs");
        assert!(allocated(&out) < 4 << 20, "not sparse");
    }

    #[test]
    fn kilns_own_export_comes_back_byte_for_byte_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(256u32 << 10)).map(|i| (i * 7 % 251) as u8).collect();
        // A whole GiB: the export rounds the size up to one, so the disk
        // and its copy are compared as they are.
        let writes: Vec<(u64, &[u8])> = (0..40u64)
            .map(|i| (i * (24 << 20) + 4096, data.as_slice()))
            .collect();
        let disk = sparse_disk(dir.path(), super::super::GIB, &writes);
        let tarball = dir.path().join("disk.tar.gz");
        let options = super::super::PackageOptions {
            mtime: Some(1_700_000_000),
            threads: 2,
            ..Default::default()
        };
        super::super::package_to_file(&disk, &tarball, false, &options).unwrap();
        let out = dir.path().join("out.raw");
        assert_eq!(extract_disk(&tarball, &out).unwrap(), super::super::GIB);
        assert!(same_bytes(&disk, &out), "extracted disk differs");
        assert!(allocated(&out) < 64 << 20, "not sparse");
    }

    #[test]
    fn a_plain_entry_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let disk = sparse_disk(dir.path(), 1 << 20, &[(100, b"boot")]);
        tar(dir.path(), &["-czf", "image.tar.gz", "disk.raw"]);
        let out = dir.path().join("out.raw");
        let tarball = dir.path().join("image.tar.gz");
        assert_eq!(extract_disk(&tarball, &out).unwrap(), 1 << 20);
        assert!(same_bytes(&disk, &out));
    }

    #[test]
    fn a_tarball_without_disk_raw_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        tar(dir.path(), &["-czf", "t.tar.gz", "other.txt"]);
        let tarball = dir.path().join("t.tar.gz");
        let err = extract_disk(&tarball, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("holds no disk.raw"), "{err}");
        assert!(!is_gzip(&dir.path().join("other.txt")));
    }

    #[test]
    fn two_disks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        sparse_disk(dir.path(), 4096, &[]);
        tar(
            dir.path(),
            &[
                "--hard-dereference",
                "-czf",
                "t.tar.gz",
                "disk.raw",
                "disk.raw",
            ],
        );
        let tarball = dir.path().join("t.tar.gz");
        let err = extract_disk(&tarball, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("more than one disk.raw"), "{err}");
    }

    #[test]
    fn damaged_tarballs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        sparse_disk(dir.path(), 1 << 20, &[(0, b"data")]);
        tar(dir.path(), &["-czf", "t.tar.gz", "disk.raw"]);
        let tarball = dir.path().join("t.tar.gz");
        let whole = std::fs::read(&tarball).unwrap();
        std::fs::write(&tarball, &whole[..whole.len() / 2]).unwrap();
        let err = extract_disk(&tarball, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("t.tar.gz"), "{err}");

        // A gzip'd file that is no tar: the header checksum fails.
        let not_tar = dir.path().join("n.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&not_tar).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&[b'x'; 2048]).unwrap();
        gz.finish().unwrap();
        let err = extract_disk(&not_tar, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, TarballError::Malformed { .. }), "{err:?}");

        let missing = dir.path().join("missing.tar.gz");
        let err = extract_disk(&missing, &dir.path().join("out")).unwrap_err();
        assert!(
            matches!(err, TarballError::File(FileError::Read { .. })),
            "{err:?}"
        );
    }
}
