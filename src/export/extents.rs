//! Which byte ranges of a disk's raw view hold data: the extent map.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Tar stores data in 512-byte blocks; extents are kept on that grid so
/// every stored chunk fills whole blocks.
pub const SECTOR: u64 = 512;
/// Reads go in pieces of this size: large enough to be cheap per call, small
/// enough to keep memory flat.
pub const READ_CHUNK: usize = 4 << 20;

/// `len` bytes of data starting at `offset` in the raw view of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    /// `len` bytes from `offset`.
    pub fn new(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    /// The offset just past the extent.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Random access to the guest-visible bytes of a disk.
pub trait ReadAt {
    /// Fills `buf` from `offset`; bytes past the end of the disk read as
    /// zeros.
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// A raw disk file, read in place.
pub struct RawFile(pub File);

impl ReadAt for RawFile {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// The data ranges of a raw file, from the filesystem's own map
/// (SEEK_DATA/SEEK_HOLE). A filesystem without that map gives one extent
/// over the whole file, and the zero-block scan finds the holes instead.
pub fn raw_extents(file: &File, size: u64) -> io::Result<Vec<Extent>> {
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(data) => data,
            // No data after pos: the rest is a hole.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => break,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) && pos == 0 => {
                return Ok(vec![Extent::new(0, size)]);
            }
            Err(err) => return Err(err),
        };
        if data >= size {
            break;
        }
        let hole = match seek(fd, data, libc::SEEK_HOLE) {
            Ok(hole) => hole.min(size),
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => size,
            Err(err) => return Err(err),
        };
        extents.push(Extent::new(data, hole - data));
        pos = hole;
    }
    Ok(extents)
}

fn seek(fd: i32, pos: u64, whence: i32) -> io::Result<u64> {
    let pos = libc::off_t::try_from(pos).map_err(io::Error::other)?;
    // SAFETY: lseek only moves the offset of a descriptor this process owns;
    // all reads go through pread, which ignores that offset.
    let found = unsafe { libc::lseek(fd, pos, whence) };
    if found < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(found as u64)
}

/// Sorted, merged, on the 512-byte grid and within `limit` (the disk size
/// rounded up to that grid).
pub fn normalize(mut extents: Vec<Extent>, limit: u64) -> Vec<Extent> {
    extents.sort_by_key(|extent| extent.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for extent in extents {
        let start = extent.offset / SECTOR * SECTOR;
        let end = extent
            .end()
            .div_ceil(SECTOR)
            .saturating_mul(SECTOR)
            .min(limit);
        if end <= start {
            continue;
        }
        match out.last_mut() {
            Some(last) if start <= last.end() => {
                last.len = last.len.max(end - last.offset);
            }
            _ => out.push(Extent::new(start, end - start)),
        }
    }
    out
}

/// The extents with every all-zero `block` (aligned on the disk) cut out,
/// so that space the guest zeroed, or a format stored as data, becomes a
/// hole in the tarball.
pub fn drop_zero_blocks(
    reader: &mut dyn ReadAt,
    extents: &[Extent],
    block: u64,
) -> io::Result<Vec<Extent>> {
    let block = block.max(SECTOR);
    let mut buf = vec![0u8; READ_CHUNK.max(block as usize)];
    let mut out: Vec<Extent> = Vec::new();
    for extent in extents {
        let mut pos = extent.offset;
        while pos < extent.end() {
            // Whole blocks per read, so no block straddles two reads.
            let chunk_end = ((pos / block) * block + buf.len() as u64).min(extent.end());
            let chunk = &mut buf[..(chunk_end - pos) as usize];
            reader.read_exact_at(chunk, pos)?;
            let mut piece_start = pos;
            while piece_start < chunk_end {
                let piece_end = ((piece_start / block + 1) * block).min(chunk_end);
                let bytes = &chunk[(piece_start - pos) as usize..(piece_end - pos) as usize];
                if !is_zero(bytes) {
                    push_merged(&mut out, Extent::new(piece_start, piece_end - piece_start));
                }
                piece_start = piece_end;
            }
            pos = chunk_end;
        }
    }
    Ok(out)
}

fn push_merged(out: &mut Vec<Extent>, extent: Extent) {
    match out.last_mut() {
        Some(last) if last.end() == extent.offset => last.len += extent.len,
        _ => out.push(extent),
    }
}

/// Word-wise OR in sector-sized steps: vectorizes, and stops at the first
/// sector with data, which is where data blocks usually show it.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(SECTOR as usize)
        .all(|sector| sector.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<u8>);

    impl ReadAt for Mem {
        fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            buf.fill(0);
            let start = (offset as usize).min(self.0.len());
            let end = (start + buf.len()).min(self.0.len());
            buf[..end - start].copy_from_slice(&self.0[start..end]);
            Ok(())
        }
    }

    #[test]
    fn normalize_sorts_aligns_merges_and_clamps() {
        let extents = vec![
            Extent::new(4096, 100),
            Extent::new(0, 512),
            Extent::new(512, 512),
            Extent::new(10_000, 5_000),
        ];
        assert_eq!(
            normalize(extents, 12_288),
            vec![
                Extent::new(0, 1024),
                Extent::new(4096, 512),
                Extent::new(9_728, 12_288 - 9_728)
            ]
        );
    }

    #[test]
    fn zero_blocks_inside_extents_become_holes() {
        let block = 4096u64;
        let mut disk = vec![0u8; 8 * block as usize];
        disk[10] = 1; // block 0
        disk[3 * block as usize + 7] = 1; // block 3
        disk[4 * block as usize] = 1; // block 4
        disk[7 * block as usize + 100] = 1; // block 7, partly outside the extent
        disk[7 * block as usize + 2000] = 1; // outside the extent: not looked at
        let extents = vec![Extent::new(0, 7 * block + 1024)];
        let kept = drop_zero_blocks(&mut Mem(disk), &extents, block).unwrap();
        assert_eq!(
            kept,
            vec![
                Extent::new(0, block),
                Extent::new(3 * block, 2 * block),
                Extent::new(7 * block, 1024)
            ]
        );
    }

    #[test]
    fn zero_scan_handles_extents_larger_than_one_read() {
        let len = READ_CHUNK * 2 + 8192;
        let mut disk = vec![0u8; len];
        disk[READ_CHUNK - 1] = 1;
        disk[READ_CHUNK] = 1;
        let kept =
            drop_zero_blocks(&mut Mem(disk), &[Extent::new(512, len as u64 - 512)], 65536).unwrap();
        let start = READ_CHUNK as u64 - 65536;
        assert_eq!(kept, vec![Extent::new(start, 2 * 65536)]);
    }

    #[test]
    fn raw_extents_follow_the_files_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let file = File::create(&path).unwrap();
        file.set_len(16 << 20).unwrap();
        file.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        file.sync_all().unwrap();
        let extents = raw_extents(&file, 16 << 20).unwrap();
        let data: u64 = extents.iter().map(|extent| extent.len).sum();
        assert!(
            extents
                .iter()
                .any(|e| e.offset <= 1 << 20 && e.end() >= (1 << 20) + 8192)
        );
        // The filesystem may round to its block size, but not map it all.
        assert!(data < 16 << 20, "{extents:?}");
    }
}
