//! Reading the disk back out of a GCE image tarball (`disk.raw` in a gzip'd
//! GNU tar, usually sparse), so `kiln test` can boot what is about to be
//! published. Holes stay holes: a 10 GiB disk with 1 GiB of data costs
//! 1 GiB of space.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TarballError {
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
    #[error("{} is not a GCE image tarball: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Whether `path` starts like a gzip file.
pub fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// Extracts the tarball's `disk.raw` to `out` (sparse) and returns its size.
pub fn extract_disk(tarball: &Path, out: &Path) -> Result<u64, TarballError> {
    let read_err = |source| TarballError::Read {
        path: tarball.to_path_buf(),
        source,
    };
    let invalid = |reason: String| TarballError::Invalid {
        path: tarball.to_path_buf(),
        reason,
    };
    let file = File::open(tarball).map_err(read_err)?;
    let mut input = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut found = None;
    loop {
        let mut header = [0u8; BLOCK];
        if !read_block(&mut input, &mut header).map_err(read_err)? || header.iter().all(|b| *b == 0)
        {
            break;
        }
        if !checksum_ok(&header) {
            return Err(invalid("a tar header's checksum is wrong".into()));
        }
        let name = field_str(&header[0..100]);
        let stored = octal(&header[124..136]).ok_or_else(|| invalid("bad size field".into()))?;
        let kind = header[156];
        if name != "disk.raw" || !matches!(kind, b'0' | 0 | b'S') {
            skip(&mut input, stored).map_err(read_err)?;
            continue;
        }
        if found.is_some() {
            return Err(invalid("it holds more than one disk.raw".into()));
        }
        let (regions, real_size) = if kind == b'S' {
            sparse_map(&mut input, &header).map_err(|e| match e {
                MapError::Io(source) => read_err(source),
                MapError::Bad(reason) => invalid(reason),
            })?
        } else {
            (vec![(0, stored)], stored)
        };
        let stored_in_map: u64 = regions.iter().map(|(_, len)| len).sum();
        if stored_in_map != stored {
            return Err(invalid(format!(
                "its sparse map holds {stored_in_map} bytes, the entry {stored}"
            )));
        }
        write_regions(&mut input, &regions, real_size, out).map_err(|e| match e {
            CopyError::Read(source) => read_err(source),
            CopyError::Write(source) => TarballError::Write {
                path: out.to_path_buf(),
                source,
            },
        })?;
        skip_padding(&mut input, stored).map_err(read_err)?;
        found = Some(real_size);
    }
    found.ok_or_else(|| invalid("it holds no disk.raw".into()))
}

fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..])? {
            0 if filled == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(true)
}

fn checksum_ok(header: &[u8; BLOCK]) -> bool {
    let Some(expected) = octal(&header[148..156]) else {
        return false;
    };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == expected
}

fn field_str(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A numeric field: octal text, or GNU's base-256 for big values.
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(value);
    }
    let text = field_str(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

enum MapError {
    Io(std::io::Error),
    Bad(String),
}

/// The old GNU sparse map: four entries in the header, 21 in each
/// extension block that follows while `isextended` is set.
fn sparse_map(
    input: &mut impl Read,
    header: &[u8; BLOCK],
) -> Result<(Vec<(u64, u64)>, u64), MapError> {
    let bad = |what: &str| MapError::Bad(format!("bad sparse header: {what}"));
    let mut regions = Vec::new();
    let mut push_entries = |bytes: &[u8], count: usize| -> Result<(), MapError> {
        for i in 0..count {
            let entry = &bytes[i * 24..i * 24 + 24];
            if entry[0] == 0 {
                break;
            }
            let offset = octal(&entry[0..12]).ok_or_else(|| bad("offset"))?;
            let len = octal(&entry[12..24]).ok_or_else(|| bad("length"))?;
            regions.push((offset, len));
        }
        Ok(())
    };
    push_entries(&header[386..482], 4)?;
    let real_size = octal(&header[483..495]).ok_or_else(|| bad("real size"))?;
    let mut extended = header[482] != 0;
    while extended {
        let mut block = [0u8; BLOCK];
        if !read_block(input, &mut block).map_err(MapError::Io)? {
            return Err(bad("the extension block is missing"));
        }
        push_entries(&block[0..504], 21)?;
        extended = block[504] != 0;
    }
    if regions.iter().any(|(offset, len)| offset + len > real_size) {
        return Err(bad("a region lies past the end"));
    }
    Ok((regions, real_size))
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn write_regions(
    input: &mut impl Read,
    regions: &[(u64, u64)],
    real_size: u64,
    out: &Path,
) -> Result<(), CopyError> {
    let mut file = File::create(out).map_err(CopyError::Write)?;
    let mut buffer = vec![0u8; 1 << 20];
    for (offset, len) in regions {
        file.seek(SeekFrom::Start(*offset))
            .map_err(CopyError::Write)?;
        let mut left = *len;
        while left > 0 {
            let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
            input
                .read_exact(&mut buffer[..want])
                .map_err(CopyError::Read)?;
            // Zero blocks inside a region stay holes too.
            if buffer[..want].iter().all(|b| *b == 0) {
                file.seek(SeekFrom::Current(want as i64))
                    .map_err(CopyError::Write)?;
            } else {
                file.write_all(&buffer[..want]).map_err(CopyError::Write)?;
            }
            left -= want as u64;
        }
    }
    file.set_len(real_size).map_err(CopyError::Write)?;
    file.sync_all().map_err(CopyError::Write)?;
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn skip(input: &mut impl Read, size: u64) -> std::io::Result<()> {
    let total = size + padding(size);
    let copied = std::io::copy(&mut input.take(total), &mut std::io::sink())?;
    if copied == total {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

fn skip_padding(input: &mut impl Read, size: u64) -> std::io::Result<()> {
    let pad = padding(size);
    let copied = std::io::copy(&mut input.take(pad), &mut std::io::sink())?;
    if copied == pad {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A sparse disk.raw packed by GNU tar, as GCE's docs do it.
    fn gnu_tarball(dir: &Path, size: &str, writes: &[(u64, &[u8])]) -> (PathBuf, PathBuf) {
        let disk = dir.join("disk.raw");
        let status = Command::new("truncate")
            .args(["-s", size])
            .arg(&disk)
            .status()
            .unwrap();
        assert!(status.success());
        let mut file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        for (offset, data) in writes {
            file.seek(SeekFrom::Start(*offset)).unwrap();
            file.write_all(data).unwrap();
        }
        drop(file);
        let tarball = dir.join("image.tar.gz");
        let status = Command::new("tar")
            .current_dir(dir)
            .args(["--format=oldgnu", "-Sczf"])
            .arg(&tarball)
            .arg("disk.raw")
            .status()
            .unwrap();
        assert!(status.success());
        (disk, tarball)
    }

    #[test]
    fn sparse_disk_comes_back_byte_for_byte_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        // More regions than fit in the header: extension blocks are read.
        let chunk = vec![0xabu8; 4096];
        let writes: Vec<(u64, &[u8])> = (0..30u64)
            .map(|i| (i * (1 << 20), chunk.as_slice()))
            .collect();
        let (disk, tarball) = gnu_tarball(dir.path(), "64M", &writes);
        assert!(is_gzip(&tarball));
        let out = dir.path().join("out.raw");
        let size = extract_disk(&tarball, &out).unwrap();
        assert_eq!(size, 64 << 20);
        let same = Command::new("cmp").arg(&disk).arg(&out).status().unwrap();
        assert!(same.success(), "extracted disk differs");
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&out).unwrap());
        assert!(blocks * 512 < 4 << 20, "not sparse: {blocks} blocks");
    }

    #[test]
    fn a_tarball_without_disk_raw_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        let tarball = dir.path().join("t.tar.gz");
        let status = Command::new("tar")
            .current_dir(dir.path())
            .args(["-czf"])
            .arg(&tarball)
            .arg("other.txt")
            .status()
            .unwrap();
        assert!(status.success());
        let err = extract_disk(&tarball, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("holds no disk.raw"), "{err}");
        assert!(!is_gzip(&dir.path().join("other.txt")));
    }
}
