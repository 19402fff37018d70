//! Reopening a finished raw deflate stream so that another can follow it.
//!
//! libdeflate compresses a whole buffer at a time and always closes the
//! stream: its last block carries the BFINAL bit. To join independently
//! compressed pieces into one deflate stream, that bit must be cleared and
//! the stream brought to a byte boundary, which is what zlib's sync flush
//! does (an empty stored block). Deflate blocks carry no length, so finding
//! the last one means walking every symbol of the stream. Nothing is
//! decompressed, so the walk costs about a tenth of the compression's time.

use std::sync::OnceLock;

/// A stream that does not parse as deflate; only a defect in the
/// compressor could produce one, so it names the offset for a bug report.
#[derive(Debug, thiserror::Error)]
#[error("malformed deflate stream at bit {bit}: {what}")]
pub struct Malformed {
    pub bit: usize,
    pub what: &'static str,
}

/// Where a complete stream's last block starts and where its bits end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamEnd {
    pub final_header_bit: usize,
    pub end_bit: usize,
}

/// Makes `stream`, a complete raw deflate stream, joinable: its last block
/// is no longer final and it ends on a byte boundary after an empty stored
/// block, exactly as a sync flush leaves a stream.
pub fn reopen(stream: &mut Vec<u8>) -> Result<(), Malformed> {
    let end = locate(stream)?;
    // The truncation below keeps only what the walk accounted for: a walk
    // that stopped early would silently cut compressed data.
    if end.end_bit.div_ceil(8) != stream.len() {
        return Err(Malformed {
            bit: end.end_bit,
            what: "final block ends before the stream's last byte",
        });
    }
    stream[end.final_header_bit / 8] &= !(1 << (end.final_header_bit % 8));
    stream.truncate(end.end_bit.div_ceil(8));
    if end.end_bit % 8 != 0 {
        let last = stream.len() - 1;
        stream[last] &= (1u8 << (end.end_bit % 8)) - 1;
    }
    // The stored block's three header bits are zeros (not final, type 0);
    // then padding to the byte, LEN 0 and its complement.
    stream.resize((end.end_bit + 3).div_ceil(8), 0);
    stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    Ok(())
}

/// Walks `stream` block by block to its final block's end.
fn locate(stream: &[u8]) -> Result<StreamEnd, Malformed> {
    let mut bits = BitReader::new(stream);
    let mut dynamic = WalkTables::default();
    loop {
        let header_bit = bits.pos();
        if header_bit >= stream.len() * 8 {
            return Err(bits.malformed("stream ends before its final block"));
        }
        let is_final = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => bits.skip_stored()?,
            1 => bits.skip_symbols(fixed_tables())?,
            2 => {
                dynamic.read_header(&mut bits)?;
                bits.skip_symbols(&dynamic)?;
            }
            _ => return Err(bits.malformed("reserved block type")),
        }
        if is_final {
            return Ok(StreamEnd {
                final_header_bit: header_bit,
                end_bit: bits.pos(),
            });
        }
    }
}

const MAX_CODE_LEN: usize = 15;
const END_OF_BLOCK: usize = 256;
const LENGTH_EXTRA_BITS: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_EXTRA_BITS: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which a dynamic header lists the code-length code lengths.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
/// A literal/length code plus its extra bits, then a distance code plus
/// its extra bits: the most one step of the walk consumes.
const LONGEST_STEP: u32 = 15 + 5 + 15 + 13;
/// Zero bits read past the end before the walk gives up; a valid stream
/// never needs them, they only let the fast path read whole words.
const PAST_END_LIMIT: usize = 64;

/// Table entries for walking symbols: the bits a symbol takes with its
/// extra bits (low 5 bits) and what kind of symbol it is.
const LITERAL: u16 = 0;
const LENGTH: u16 = 1 << 5;
const BLOCK_END: u16 = 2 << 5;
const INVALID: u16 = 3 << 5;
const BITS_MASK: u16 = 0x1f;

struct BitReader<'a> {
    data: &'a [u8],
    /// The next byte to load into `buf`.
    next: usize,
    buf: u64,
    /// Valid bits in `buf`, from the bottom.
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    fn pos(&self) -> usize {
        self.next * 8 - self.avail as usize
    }

    fn malformed(&self, what: &'static str) -> Malformed {
        Malformed {
            bit: self.pos(),
            what,
        }
    }

    /// Tops `buf` up to at least 56 valid bits. Bits of a partly loaded
    /// byte above `avail` are the byte's own, so loading it again later
    /// ORs in the same values.
    #[inline(always)]
    fn refill(&mut self) -> Result<(), Malformed> {
        match self.data.get(self.next..self.next + 8) {
            Some(bytes) => {
                let word = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
                self.buf |= word << self.avail;
                let whole = (63 - self.avail) / 8;
                self.next += whole as usize;
                self.avail += whole * 8;
                Ok(())
            }
            None => self.refill_near_end(),
        }
    }

    #[cold]
    fn refill_near_end(&mut self) -> Result<(), Malformed> {
        while self.avail <= 56 {
            let byte = self.data.get(self.next).copied().unwrap_or(0);
            self.buf |= u64::from(byte) << self.avail;
            self.next += 1;
            self.avail += 8;
        }
        if self.next > self.data.len() + PAST_END_LIMIT / 8 {
            return Err(self.malformed("stream ends inside a block"));
        }
        Ok(())
    }

    /// Drops `count` bits; the caller has made sure they are loaded.
    #[inline(always)]
    fn drop_bits(&mut self, count: u32) {
        self.buf >>= count;
        self.avail -= count;
    }

    fn take(&mut self, count: u32) -> Result<u32, Malformed> {
        if self.avail < count {
            self.refill()?;
        }
        let value = (self.buf & ((1u64 << count) - 1)) as u32;
        self.drop_bits(count);
        Ok(value)
    }

    /// Fails if the walk has gone past the last byte.
    fn check_in_bounds(&self) -> Result<(), Malformed> {
        if self.pos() > self.data.len() * 8 {
            return Err(self.malformed("stream ends inside a block"));
        }
        Ok(())
    }

    fn skip_stored(&mut self) -> Result<(), Malformed> {
        self.take(self.avail % 8)?;
        let len = self.take(16)?;
        let nlen = self.take(16)?;
        if len != !nlen & 0xffff {
            return Err(self.malformed("stored block length and its complement differ"));
        }
        let resume = self.pos() / 8 + len as usize;
        if resume > self.data.len() {
            return Err(self.malformed("stream ends inside a block"));
        }
        self.next = resume;
        self.buf = 0;
        self.avail = 0;
        Ok(())
    }

    /// Walks a Huffman-coded block to its end. The reader's state lives in
    /// locals here: kept in `self`, every step would wait on a store.
    fn skip_symbols(&mut self, tables: &WalkTables) -> Result<(), Malformed> {
        let (litlen, litlen_mask) = (tables.litlen.as_slice(), tables.litlen_mask);
        let (distance, distance_mask) = (tables.distance.as_slice(), tables.distance_mask);
        let data = self.data;
        let (mut buf, mut avail, mut next) = (self.buf, self.avail, self.next);
        let outcome = loop {
            if avail < LONGEST_STEP {
                match data.get(next..next + 8) {
                    Some(bytes) => {
                        let word = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
                        buf |= word << avail;
                        let whole = (63 - avail) / 8;
                        next += whole as usize;
                        avail += whole * 8;
                    }
                    None => {
                        (self.buf, self.avail, self.next) = (buf, avail, next);
                        self.refill_near_end()?;
                        (buf, avail, next) = (self.buf, self.avail, self.next);
                    }
                }
            }
            let entry = litlen[(buf & litlen_mask) as usize];
            let len = u32::from(entry & BITS_MASK);
            buf >>= len;
            avail -= len;
            match entry & !BITS_MASK {
                LITERAL => continue,
                LENGTH => {
                    let entry = distance[(buf & distance_mask) as usize];
                    if entry == INVALID {
                        break Err("invalid distance code");
                    }
                    let len = u32::from(entry & BITS_MASK);
                    buf >>= len;
                    avail -= len;
                }
                BLOCK_END => break Ok(()),
                _ => break Err("invalid literal/length code"),
            }
        };
        (self.buf, self.avail, self.next) = (buf, avail, next);
        match outcome {
            Ok(()) => self.check_in_bounds(),
            Err(what) => Err(self.malformed(what)),
        }
    }
}

/// Canonical Huffman decoding: for every `len`-bit code, `fill` receives
/// its symbol and length and every table index whose low bits are the
/// code (sent most significant bit first, so reversed). Returns the mask
/// that picks the index from the next bits.
fn build_table(
    lengths: &[u8],
    entries: &mut Vec<u16>,
    entry: impl Fn(usize, u32) -> u16,
) -> Result<u64, &'static str> {
    let longest = usize::from(lengths.iter().copied().max().unwrap_or(0));
    let mut count = [0u32; MAX_CODE_LEN + 1];
    for &len in lengths {
        count[usize::from(len)] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; MAX_CODE_LEN + 1];
    let mut code = 0u32;
    for len in 1..=MAX_CODE_LEN {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
        if code + count[len] > 1 << len {
            return Err("over-subscribed Huffman code");
        }
    }
    let size = 1usize << longest;
    entries.clear();
    entries.resize(size, INVALID);
    for (symbol, &len) in lengths.iter().enumerate() {
        if len == 0 {
            continue;
        }
        let len = u32::from(len);
        let code = next[len as usize];
        next[len as usize] += 1;
        let reversed = (code.reverse_bits() >> (32 - len)) as usize;
        let value = entry(symbol, len);
        for index in (reversed..size).step_by(1 << len) {
            entries[index] = value;
        }
    }
    Ok(size as u64 - 1)
}

fn litlen_entry(symbol: usize, len: u32) -> u16 {
    let len = len as u16;
    match symbol {
        0..END_OF_BLOCK => LITERAL | len,
        END_OF_BLOCK => BLOCK_END | len,
        _ => match LENGTH_EXTRA_BITS.get(symbol - END_OF_BLOCK - 1) {
            Some(&extra) => LENGTH | (len + u16::from(extra)),
            None => INVALID,
        },
    }
}

fn distance_entry(symbol: usize, len: u32) -> u16 {
    match DISTANCE_EXTRA_BITS.get(symbol) {
        Some(&extra) => len as u16 + u16::from(extra),
        None => INVALID,
    }
}

#[derive(Default)]
struct WalkTables {
    litlen: Vec<u16>,
    litlen_mask: u64,
    distance: Vec<u16>,
    distance_mask: u64,
    code_lengths: Vec<u16>,
    lengths: Vec<u8>,
}

impl WalkTables {
    fn build(&mut self, litlen: &[u8], distance: &[u8]) -> Result<(), &'static str> {
        self.litlen_mask = build_table(litlen, &mut self.litlen, litlen_entry)?;
        self.distance_mask = build_table(distance, &mut self.distance, distance_entry)?;
        Ok(())
    }

    fn read_header(&mut self, bits: &mut BitReader) -> Result<(), Malformed> {
        let litlen_count = bits.take(5)? as usize + 257;
        let distance_count = bits.take(5)? as usize + 1;
        let code_length_count = bits.take(4)? as usize + 4;
        let mut code_length_lengths = [0u8; 19];
        for &index in &CODE_LENGTH_ORDER[..code_length_count] {
            code_length_lengths[index] = bits.take(3)? as u8;
        }
        // Entries: the symbol above four bits of code length.
        let mask = build_table(
            &code_length_lengths,
            &mut self.code_lengths,
            |symbol, len| (symbol as u16) << 4 | len as u16,
        )
        .map_err(|what| bits.malformed(what))?;
        let total = litlen_count + distance_count;
        self.lengths.clear();
        while self.lengths.len() < total {
            if bits.avail < 16 {
                bits.refill()?;
            }
            let entry = self.code_lengths[(bits.buf & mask) as usize];
            if entry == INVALID {
                return Err(bits.malformed("invalid code-length code"));
            }
            bits.drop_bits(u32::from(entry & 0xf));
            let symbol = entry >> 4;
            let (value, repeat) = match symbol {
                0..=15 => (symbol as u8, 1),
                16 => {
                    let previous = *self
                        .lengths
                        .last()
                        .ok_or_else(|| bits.malformed("repeat with no previous length"))?;
                    (previous, 3 + bits.take(2)? as usize)
                }
                17 => (0, 3 + bits.take(3)? as usize),
                _ => (0, 11 + bits.take(7)? as usize),
            };
            if self.lengths.len() + repeat > total {
                return Err(bits.malformed("code lengths overrun the header"));
            }
            self.lengths.extend(std::iter::repeat_n(value, repeat));
        }
        let lengths = std::mem::take(&mut self.lengths);
        let (litlen, distance) = lengths.split_at(litlen_count);
        let built = if litlen[END_OF_BLOCK] == 0 {
            Err("no end-of-block code")
        } else {
            self.build(litlen, distance)
        };
        self.lengths = lengths;
        built.map_err(|what| bits.malformed(what))
    }
}

fn fixed_tables() -> &'static WalkTables {
    static FIXED: OnceLock<WalkTables> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut litlen = [8u8; 288];
        litlen[144..256].fill(9);
        litlen[256..280].fill(7);
        let mut tables = WalkTables::default();
        tables
            .build(&litlen, &[5u8; 32])
            .expect("the fixed codes are valid");
        tables
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let words: [&[u8]; 5] = [b"kiln ", b"builds ", b"images ", b"\0\0\0\0", b"disk.raw "];
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (data.len() / 50_000) % 3 == 2 {
                data.push(state as u8);
            } else {
                data.extend_from_slice(words[(state % 5) as usize]);
            }
        }
        data.truncate(len);
        data
    }

    fn libdeflate(data: &[u8], level: i32) -> Vec<u8> {
        let level = libdeflater::CompressionLvl::new(level).unwrap();
        let mut compressor = libdeflater::Compressor::new(level);
        let mut out = vec![0; compressor.deflate_compress_bound(data.len())];
        let len = compressor.deflate_compress(data, &mut out).unwrap();
        out.truncate(len);
        out
    }

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn finds_the_end_of_streams_of_every_block_type() {
        // Level 0 writes stored blocks, small inputs fixed-code blocks,
        // the rest dynamic blocks; random stretches force stored blocks in.
        for (len, level) in [
            (0, 6),
            (10, 6),
            (300, 1),
            (70_000, 0),
            (900_000, 6),
            (2_000_000, 12),
        ] {
            let data = sample(len, len as u64 + 7);
            let stream = libdeflate(&data, level);
            let end = locate(&stream).unwrap();
            assert_eq!(end.end_bit.div_ceil(8), stream.len(), "length {len}");
            assert!(end.final_header_bit < end.end_bit);
            assert_eq!(
                stream[end.final_header_bit / 8] >> (end.final_header_bit % 8) & 1,
                1
            );
        }
    }

    #[test]
    fn reopened_streams_join_into_one() {
        let pieces: Vec<Vec<u8>> = (0..6)
            .map(|i| sample(40_000 * i * i + 5, i as u64))
            .collect();
        for level in [0, 1, 6, 9] {
            let mut joined = Vec::new();
            for (index, piece) in pieces.iter().enumerate() {
                let mut stream = libdeflate(piece, level);
                if index + 1 < pieces.len() {
                    reopen(&mut stream).unwrap();
                    assert_eq!(&stream[stream.len() - 4..], &[0, 0, 0xff, 0xff]);
                }
                joined.extend_from_slice(&stream);
            }
            assert_eq!(inflate(&joined), pieces.concat(), "level {level}");
        }
    }

    #[test]
    fn a_reopened_stream_is_not_final() {
        let mut stream = libdeflate(b"one block only", 6);
        reopen(&mut stream).unwrap();
        // All the data comes out, but the stream is still open.
        let mut inflater = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(100);
        let status = inflater
            .decompress_vec(&stream, &mut out, flate2::FlushDecompress::None)
            .unwrap();
        assert_eq!(status, flate2::Status::Ok);
        assert_eq!(out, b"one block only");
        assert_eq!(
            locate(&stream).unwrap_err().what,
            "stream ends before its final block"
        );
    }

    #[test]
    fn reopen_refuses_bytes_after_the_final_block() {
        let data = sample(5_000, 11);
        let mut stream = libdeflate(&data, 6);
        stream.extend_from_slice(b"trailing");
        let before = stream.clone();
        let err = reopen(&mut stream).unwrap_err();
        assert_eq!(err.what, "final block ends before the stream's last byte");
        assert_eq!(err.bit.div_ceil(8), before.len() - b"trailing".len());
        assert_eq!(stream, before, "a refused stream is left as it was");
    }

    #[test]
    fn reopen_refuses_a_truncated_stream() {
        let mut stream = libdeflate(&sample(200_000, 5), 6);
        stream.truncate(stream.len() - 10);
        assert_eq!(
            reopen(&mut stream).unwrap_err().what,
            "stream ends inside a block"
        );
    }

    #[test]
    fn rejects_truncated_and_invalid_streams() {
        let stream = libdeflate(&sample(200_000, 3), 6);
        let cut = locate(&stream[..stream.len() / 2]).unwrap_err();
        assert_eq!(cut.what, "stream ends inside a block");
        assert_eq!(locate(&[0b111]).unwrap_err().what, "reserved block type");
        let stored_mismatch = [0b001, 5, 0, 0, 0];
        assert_eq!(
            locate(&stored_mismatch).unwrap_err().what,
            "stored block length and its complement differ"
        );
    }
}
