//! Parallel gzip, joined much as pigz joins it: the input is cut into
//! blocks, each block is raw-deflated by libdeflate on its own thread, every
//! block but the last is reopened to end like a sync flush (not final, on a
//! byte boundary), and the pieces are written in order after one gzip
//! header. The CRC-32s of the blocks are combined into the trailer, so the
//! result is one ordinary gzip member. libdeflate takes no preset
//! dictionary, so blocks are large enough for the lost back-references
//! across their edges not to matter (about 0.1% of the output).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

use super::deflate_end;

/// Uncompressed bytes each compression thread takes at a time.
pub const DEFAULT_BLOCK: usize = 4 << 20;
/// The default thread count's ceiling: more cores than this outrun any
/// disk or network, and every thread holds two blocks in flight.
const MAX_DEFAULT_THREADS: usize = 16;
/// The smallest block accepted, so tests can use small ones.
const MIN_BLOCK: usize = 32 << 10;

/// What went through the compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipSummary {
    /// Uncompressed bytes in.
    pub bytes_in: u64,
    /// Compressed bytes out.
    pub bytes_out: u64,
}

struct Job {
    seq: u64,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    seq: u64,
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// A `Write` that gzips on `threads` threads; `finish` writes the end.
/// Memory is bounded: at most two blocks per thread are in flight.
pub struct ParallelGzip<W: Write> {
    out: W,
    block_size: usize,
    block: Vec<u8>,
    submitted: u64,
    written: u64,
    max_in_flight: u64,
    ready: BTreeMap<u64, Done>,
    jobs: Option<Sender<Job>>,
    results: Receiver<io::Result<Done>>,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
    bytes_in: u64,
    bytes_out: u64,
}

impl<W: Write> ParallelGzip<W> {
    /// `level` 0..=9; `threads` 0 means one per core, up to 16.
    pub fn new(out: W, level: u32, threads: usize, block_size: usize) -> io::Result<Self> {
        let level = level.min(9);
        let threads = match threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_DEFAULT_THREADS),
            n => n,
        };
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads {
            let jobs = Arc::clone(&job_rx);
            let done = done_tx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("kiln-gzip-{index}"))
                .spawn(move || work(level, &jobs, &done))?;
            workers.push(worker);
        }
        let mut gzip = ParallelGzip {
            out,
            block_size: block_size.max(MIN_BLOCK),
            block: Vec::new(),
            submitted: 0,
            written: 0,
            max_in_flight: 2 * threads as u64,
            ready: BTreeMap::new(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            crc: crc32fast::Hasher::new(),
            bytes_in: 0,
            bytes_out: 0,
        };
        gzip.block.reserve(gzip.block_size);
        gzip.emit(&header(level))?;
        Ok(gzip)
    }

    /// Compresses what is left, writes the trailer and flushes.
    pub fn finish(mut self) -> io::Result<GzipSummary> {
        self.submit(true)?;
        while self.written < self.submitted {
            self.write_next()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is the input length modulo 2^32, by definition.
        trailer[4..].copy_from_slice(&(self.bytes_in as u32).to_le_bytes());
        self.emit(&trailer)?;
        self.out.flush()?;
        Ok(GzipSummary {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.submitted - self.written >= self.max_in_flight {
            self.write_next()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.block_size));
        self.bytes_in += data.len() as u64;
        let job = Job {
            seq: self.submitted,
            data,
            last,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("gzip worker threads stopped"));
        }
        self.submitted += 1;
        // Write whatever is already done, to keep the output flowing.
        while let Some(done) = self.ready.remove(&self.written) {
            self.write_done(done)?;
        }
        Ok(())
    }

    /// Waits for the next block in order and writes it.
    fn write_next(&mut self) -> io::Result<()> {
        loop {
            if let Some(done) = self.ready.remove(&self.written) {
                return self.write_done(done);
            }
            let done = self
                .results
                .recv()
                .map_err(|_| io::Error::other("gzip worker threads stopped"))??;
            self.ready.insert(done.seq, done);
        }
    }

    fn write_done(&mut self, done: Done) -> io::Result<()> {
        self.crc.combine(&done.crc);
        self.emit(&done.deflated)?;
        self.written += 1;
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.bytes_out += bytes.len() as u64;
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block_size - self.block.len();
        let taken = room.min(buf.len());
        self.block.extend_from_slice(&buf[..taken]);
        if self.block.len() == self.block_size {
            self.submit(false)?;
        }
        Ok(taken)
    }

    /// Blocks are cut at fixed sizes whatever the flushes, so the output
    /// does not depend on how the input was written; nothing to do here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Closing the queue ends the workers once their current block is done.
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A gzip header with no name and no time, so equal input gives equal
/// output. XFL and OS as gzip writes them.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]
}

fn work(level: u32, jobs: &Mutex<Receiver<Job>>, done: &Sender<io::Result<Done>>) {
    let level = CompressionLvl::new(level as i32).expect("levels 0 to 9 are libdeflate levels");
    let mut compressor = Compressor::new(level);
    loop {
        let job = match jobs.lock() {
            Ok(queue) => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let result = deflate_block(&mut compressor, &job).map(|deflated| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&job.data);
            Done {
                seq: job.seq,
                deflated,
                crc,
            }
        });
        if done.send(result).is_err() {
            return;
        }
    }
}

fn deflate_block(compressor: &mut Compressor, job: &Job) -> io::Result<Vec<u8>> {
    // Room for the stored-block marker `reopen` may add.
    let mut out = vec![0; compressor.deflate_compress_bound(job.data.len()) + 8];
    let len = compressor
        .deflate_compress(&job.data, &mut out)
        .map_err(|err| io::Error::other(format!("deflate: {err:?}")))?;
    out.truncate(len);
    if !job.last {
        deflate_end::reopen(&mut out).map_err(io::Error::other)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::{Command, Stdio};

    fn sample(len: usize) -> Vec<u8> {
        // Random bytes in parts, text-like runs in others, so both stored
        // and compressed deflate blocks show up.
        let mut data = vec![0u8; len];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for (i, byte) in data.iter_mut().enumerate() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = if (i / 300_000) % 2 == 0 {
                state as u8
            } else {
                b"kiln builds images "[i % 19]
            };
        }
        data
    }

    fn gzip(data: &[u8], level: u32, threads: usize, block: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut gz = ParallelGzip::new(&mut out, level, threads, block).unwrap();
        // Odd-sized writes, to cross block edges in the middle of a write.
        for piece in data.chunks(77_777) {
            gz.write_all(piece).unwrap();
        }
        let summary = gz.finish().unwrap();
        assert_eq!(summary.bytes_in, data.len() as u64);
        assert_eq!(summary.bytes_out, out.len() as u64);
        out
    }

    fn gunzip_with_gzip(compressed: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip is needed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let input = compressed.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(output.status.success());
        output.stdout
    }

    #[test]
    fn round_trips_through_gzip_and_flate2() {
        let data = sample(5_300_000);
        let compressed = gzip(&data, 6, 3, 1 << 20);
        assert_eq!(gunzip_with_gzip(&compressed), data);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        // One member: a multi-member reader would not be needed.
        assert!(compressed.len() < data.len() / 2 + 200_000);
    }

    #[test]
    fn output_is_the_same_whatever_the_thread_count() {
        let data = sample(2_500_000);
        let one = gzip(&data, 6, 1, 256 << 10);
        let four = gzip(&data, 6, 4, 256 << 10);
        assert_eq!(one, four);
        let level1 = gzip(&data, 1, 2, 256 << 10);
        assert_eq!(gunzip_with_gzip(&level1), data);
        assert_eq!(level1[8], 4);
    }

    #[test]
    fn empty_and_exact_block_inputs_are_valid_gzip() {
        for len in [0usize, 64 << 10, 128 << 10] {
            let data = sample(len);
            let compressed = gzip(&data, 6, 2, 64 << 10);
            assert_eq!(gunzip_with_gzip(&compressed), data, "length {len}");
        }
    }

    #[test]
    fn gzip_test_accepts_the_output() {
        let data = sample(3_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.gz");
        std::fs::write(&path, gzip(&data, 9, 2, 1 << 20)).unwrap();
        let status = Command::new("gzip").arg("-t").arg(&path).status().unwrap();
        assert!(status.success());
    }
}
