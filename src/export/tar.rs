//! One sparse file in a GNU tar archive, laid out as
//! `tar --format=oldgnu -S` lays it out: type 'S', four sparse map entries
//! in the header, 21 more per extension block, the stored chunks one after
//! the other (each padded to 512 bytes), two zero blocks, and zeros up to a
//! whole 10240-byte record.

use std::io::{self, Write};

use super::extents::{Extent, READ_CHUNK, ReadAt};

/// A tar block: headers and data come in these.
pub const BLOCK: usize = 512;
/// GNU tar's default record: 20 blocks (`-b20`); the archive ends on one.
pub const RECORD: u64 = 20 * BLOCK as u64;

const SPARSES_IN_HEADER: usize = 4;
const SPARSES_IN_EXTENSION: usize = 21;
const OLDGNU_MAGIC: &[u8; 8] = b"ustar  \0";

/// The entry's metadata: the map says which ranges of `real_size` bytes are
/// stored; the rest reads as zeros.
pub struct SparseEntry<'a> {
    pub name: &'a str,
    pub real_size: u64,
    pub mtime: u64,
    pub map: &'a [Extent],
}

/// Fails only on a name that does not fit the header.
#[derive(Debug, thiserror::Error)]
#[error("tar entry name {0:?} is longer than 99 bytes")]
pub struct NameTooLong(String);

/// Where a failure came from while streaming an archive.
#[derive(Debug)]
pub enum StreamError {
    Read(io::Error),
    Write(io::Error),
}

/// Bytes stored for the data: GNU tar's `size` field.
pub fn stored_size(map: &[Extent]) -> u64 {
    map.iter().map(|extent| extent.len).sum()
}

/// The header block followed by its extension blocks.
fn header_blocks(entry: &SparseEntry) -> Result<Vec<u8>, NameTooLong> {
    if entry.name.len() >= 100 {
        return Err(NameTooLong(entry.name.to_string()));
    }
    // GNU tar always closes the map with an empty chunk at the real size,
    // which is how a reader learns the size when the file ends in a hole.
    let mut sparse: Vec<(u64, u64)> = entry
        .map
        .iter()
        .map(|extent| (extent.offset, extent.len))
        .collect();
    sparse.push((entry.real_size, 0));

    let mut header = [0u8; BLOCK];
    header[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
    put_number(&mut header[100..108], 0o644);
    put_number(&mut header[108..116], 0);
    put_number(&mut header[116..124], 0);
    put_number(&mut header[124..136], stored_size(entry.map));
    put_number(&mut header[136..148], entry.mtime);
    header[156] = b'S';
    header[257..265].copy_from_slice(OLDGNU_MAGIC);
    header[265..269].copy_from_slice(b"root");
    header[297..301].copy_from_slice(b"root");
    let (first, rest) = sparse.split_at(sparse.len().min(SPARSES_IN_HEADER));
    put_sparse(&mut header[386..482], first);
    header[482] = u8::from(!rest.is_empty());
    put_number(&mut header[483..495], entry.real_size);
    put_checksum(&mut header);

    let mut blocks = header.to_vec();
    let mut chunks = rest.chunks(SPARSES_IN_EXTENSION).peekable();
    while let Some(chunk) = chunks.next() {
        let mut extension = [0u8; BLOCK];
        put_sparse(&mut extension[..504], chunk);
        extension[504] = u8::from(chunks.peek().is_some());
        blocks.extend_from_slice(&extension);
    }
    Ok(blocks)
}

/// Two zero blocks, then zeros to the end of the record, after `written`
/// bytes of archive.
fn end_of_archive(written: u64) -> Vec<u8> {
    let end = (written + 2 * BLOCK as u64).div_ceil(RECORD) * RECORD;
    vec![0u8; (end - written) as usize]
}

/// Writes the whole archive: header, the map's data read from `disk`, end.
/// `progress` gets the data bytes copied so far after each piece.
pub fn write_archive(
    entry: &SparseEntry,
    disk: &mut dyn ReadAt,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StreamError> {
    let header = header_blocks(entry).map_err(|err| StreamError::Write(io::Error::other(err)))?;
    out.write_all(&header).map_err(StreamError::Write)?;
    let mut written = header.len() as u64;
    let mut copied = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    for extent in entry.map {
        let mut pos = extent.offset;
        while pos < extent.end() {
            let len = (extent.end() - pos).min(buf.len() as u64) as usize;
            let piece = &mut buf[..len];
            disk.read_exact_at(piece, pos).map_err(StreamError::Read)?;
            out.write_all(piece).map_err(StreamError::Write)?;
            pos += len as u64;
            copied += len as u64;
            progress(copied);
        }
        let pad = extent.len.next_multiple_of(BLOCK as u64) - extent.len;
        out.write_all(&[0u8; BLOCK][..pad as usize])
            .map_err(StreamError::Write)?;
        written += extent.len + pad;
    }
    let end = end_of_archive(written);
    out.write_all(&end).map_err(StreamError::Write)?;
    Ok(written + end.len() as u64)
}

/// GNU's numeric fields: zero-padded octal ending in NUL while it fits,
/// else base-256 (first byte 0x80, the value big-endian), which GNU tar
/// writes for sizes and offsets of 8 GiB and more.
fn put_number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits * 3 >= 64 || value >> (digits * 3) == 0 {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let len = field.len();
        field[len - bytes.len()..].copy_from_slice(&bytes);
    }
}

fn put_sparse(area: &mut [u8], entries: &[(u64, u64)]) {
    for (slot, &(offset, len)) in area.chunks_exact_mut(24).zip(entries) {
        put_number(&mut slot[..12], offset);
        put_number(&mut slot[12..], len);
    }
}

/// The byte sum with the checksum field read as spaces, written as six
/// octal digits, NUL, space.
fn put_checksum(header: &mut [u8; BLOCK]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0");
    header[148..155].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_switch_to_base_256_past_the_octal_range() {
        let mut field = [0u8; 12];
        put_number(&mut field, 0o400000000);
        assert_eq!(&field, b"00400000000\0");
        put_number(&mut field, 10 << 30);
        assert_eq!(&field, b"\x80\0\0\0\0\0\0\x02\x80\0\0\0");
        put_number(&mut field, (1 << 33) - 1);
        assert_eq!(&field, b"77777777777\0");
        let mut mode = [0u8; 8];
        put_number(&mut mode, 0o644);
        assert_eq!(&mode, b"0000644\0");
    }

    #[test]
    fn long_maps_spill_into_extension_blocks() {
        let map: Vec<Extent> = (0..30).map(|i| Extent::new(i * 8192, 512)).collect();
        let entry = SparseEntry {
            name: "disk.raw",
            real_size: 1 << 30,
            mtime: 0,
            map: &map,
        };
        let blocks = header_blocks(&entry).unwrap();
        // 31 entries: 4 in the header, 21 + 6 in two extensions.
        assert_eq!(blocks.len(), 3 * BLOCK);
        assert_eq!(blocks[482], 1);
        assert_eq!(blocks[BLOCK + 504], 1);
        assert_eq!(blocks[2 * BLOCK + 504], 0);
        let last = &blocks[2 * BLOCK + 5 * 24..2 * BLOCK + 6 * 24];
        assert_eq!(last, b"10000000000\x0000000000000\0");
    }

    #[test]
    fn archive_ends_on_a_record() {
        assert_eq!(end_of_archive(512).len() as u64, RECORD - 512);
        assert_eq!(end_of_archive(RECORD - 1024).len(), 1024);
        assert_eq!(end_of_archive(RECORD - 512).len() as u64, 512 + RECORD);
    }

    #[test]
    fn long_names_are_refused() {
        let entry = SparseEntry {
            name: &"x".repeat(100),
            real_size: 0,
            mtime: 0,
            map: &[],
        };
        assert!(header_blocks(&entry).is_err());
    }
}
