//! Upload progress for the CLI to draw; nothing here writes to a terminal.

use std::time::{Duration, Instant};

/// A snapshot handed to the progress callback after every chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadProgress {
    /// Bytes the server has confirmed.
    pub bytes_sent: u64,
    /// Total size, once the end of the data was seen.
    pub total: Option<u64>,
    /// Average rate since the upload started, bytes per second.
    pub bytes_per_sec: f64,
}

/// Builds [`UploadProgress`] values from the start time.
pub(crate) struct UploadMeter {
    started: Instant,
}

impl UploadMeter {
    pub(crate) fn new() -> Self {
        UploadMeter {
            started: Instant::now(),
        }
    }

    pub(crate) fn snapshot(&self, bytes_sent: u64, total: Option<u64>) -> UploadProgress {
        let secs = self
            .started
            .elapsed()
            .max(Duration::from_millis(1))
            .as_secs_f64();
        UploadProgress {
            bytes_sent,
            total,
            bytes_per_sec: bytes_sent as f64 / secs,
        }
    }
}
