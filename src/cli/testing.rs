//! Helpers for the CLI's unit tests.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pipeline::report::Progress;

/// A writer whose clones share one buffer: hand one to the code under test,
/// read what it wrote through another.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An upload of 600 MiB at 40 MiB/s, `fraction` of the way through.
pub fn upload(fraction: f64) -> Progress {
    Progress {
        action: "Uploading",
        bytes: 600 << 20,
        bytes_per_sec: f64::from(40 << 20),
        fraction: Some(fraction),
        eta: Some(Duration::from_secs(75)),
    }
}
