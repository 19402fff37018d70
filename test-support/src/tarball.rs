//! A tiny valid GCE image tarball, and the checks Compute Engine makes on one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Disk sizes of GCE images are whole GiB.
const GIB: u64 = 1 << 30;

/// Makes `disk.tar.gz` in `dir`: a sparse 1 GiB `disk.raw` packed by GNU tar
/// in oldgnu format, as Google's docs describe. A few KiB on disk.
pub fn make_test_tarball(dir: &Path) -> std::io::Result<PathBuf> {
    let raw = dir.join("disk.raw");
    std::fs::File::create(&raw)?.set_len(GIB)?;
    let out = dir.join("disk.tar.gz");
    let status = Command::new("tar")
        .arg("--format=oldgnu")
        .arg("-Sczf")
        .arg(&out)
        .arg("-C")
        .arg(dir)
        .arg("disk.raw")
        .status()?;
    std::fs::remove_file(&raw)?;
    if !status.success() {
        return Err(std::io::Error::other(format!("tar failed: {status}")));
    }
    Ok(out)
}

/// Checks what Compute Engine checks of an image tarball: gzip, one entry
/// named `disk.raw`, GNU (oldgnu) headers, a size that is a whole number of
/// GiB. Returns a message like GCE's on failure.
pub fn validate_gce_tarball(data: &[u8]) -> Result<u64, String> {
    if data.len() < 2 || data[0] != 0x1f || data[1] != 0x8b {
        return Err("the image file is not a gzip-compressed tar file".into());
    }
    let gz = flate2::read::GzDecoder::new(data);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| format!("the image file is not a valid tar file: {e}"))?;
    let mut size = None;
    for entry in entries {
        let entry = entry.map_err(|e| format!("the image file is not a valid tar file: {e}"))?;
        if size.is_some() {
            return Err("the tar file must contain exactly one file, disk.raw".into());
        }
        let path = entry
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .to_string_lossy()
            .into_owned();
        if path != "disk.raw" {
            return Err(format!(
                "the tar file must contain disk.raw, found {path:?}"
            ));
        }
        if entry.header().as_gnu().is_none() {
            return Err("disk.raw must be stored in GNU tar (oldgnu) format".into());
        }
        // For a sparse entry this is the disk's size, not the stored bytes.
        size = Some(entry.size());
    }
    let size = size.ok_or("the tar file is empty; it must contain disk.raw")?;
    if size == 0 || size % GIB != 0 {
        return Err(format!("disk.raw is {size} bytes, not a multiple of 1 GiB"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_tarball_is_valid_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = make_test_tarball(dir.path()).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert!(data.len() < 1 << 20, "{} bytes", data.len());
        assert_eq!(validate_gce_tarball(&data), Ok(GIB));
    }

    #[test]
    fn bad_tarballs_are_refused() {
        assert!(validate_gce_tarball(b"not gzip").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.img"), b"x").unwrap();
        let out = dir.path().join("bad.tar.gz");
        let ok = Command::new("tar")
            .arg("--format=oldgnu")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(dir.path())
            .arg("other.img")
            .status()
            .unwrap();
        assert!(ok.success());
        let err = validate_gce_tarball(&std::fs::read(&out).unwrap()).unwrap_err();
        assert!(err.contains("disk.raw"), "{err}");
    }
}
