//! How a build tells the outside world what it is doing. The CLI decides
//! what that looks like (live TTY lines, plain lines, machine-readable).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The build stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Finding and checking the source image.
    Source,
    /// Creating the output disk.
    Disk,
    /// Writing the cloud-init seed.
    Seed,
    /// Starting QEMU.
    Launch,
    /// Waiting for SSH.
    Connect,
    /// Running the provisioners.
    Provision,
    /// Shutting the guest down.
    Shutdown,
    /// Booting the disk again to run the checks.
    Test,
    /// Compacting the disk.
    Finalize,
    /// Uploading the disk and creating the Compute Engine image.
    Publish,
    /// Running the post-processors.
    Post,
    /// Removing temporary files (or all of a failed build's).
    Cleanup,
}

impl Stage {
    /// The stage's name in status lines and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Disk => "disk",
            Stage::Seed => "seed",
            Stage::Launch => "launch",
            Stage::Connect => "connect",
            Stage::Provision => "provision",
            Stage::Shutdown => "shutdown",
            Stage::Test => "test",
            Stage::Finalize => "finalize",
            Stage::Publish => "publish",
            Stage::Post => "post",
            Stage::Cleanup => "cleanup",
        }
    }
}

/// The qemu builder's artifact id, as Packer's qemu builder reports it.
pub(super) const QEMU_BUILDER_ID: &str = "transcend.qemu";

/// Packer's googlecompute builder id: the artifact of a published image.
pub(super) const GCE_BUILDER_ID: &str = "packer.googlecompute";

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The build that made it.
    pub build_name: String,
    /// The builder's type (`qemu`).
    pub builder_type: String,
    /// Packer's builder id, kept for manifest and machine-readable output.
    pub builder_id: String,
    /// Packer's artifact id when the artifact names something of its own
    /// (a published image's name); `None`: the id its kind always has.
    pub id: Option<String>,
    /// The files it consists of.
    pub files: Vec<PathBuf>,
    /// One line that says what it is, for people.
    pub description: String,
}

impl Artifact {
    /// Packer's artifact id: the one it carries (a published image's
    /// name), else `VM` for the qemu builder's, empty for the
    /// post-processors kiln has (their Packer counterparts report none).
    pub fn id(&self) -> &str {
        if let Some(id) = &self.id {
            id
        } else if self.builder_id == QEMU_BUILDER_ID {
            "VM"
        } else {
            ""
        }
    }
}

/// How far a long transfer has come: what a progress bar shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// What is under way, such as `Uploading`.
    pub action: &'static str,
    /// Bytes moved so far (written or uploaded).
    pub bytes: u64,
    /// Average rate since the start, bytes per second.
    pub bytes_per_sec: f64,
    /// Share of the whole job done, 0 to 1, once the total is known.
    pub fraction: Option<f64>,
    /// Time left at the rate so far, once there is a rate to go by.
    pub eta: Option<Duration>,
}

/// Builds [`Progress`] values for one transfer from its start time.
pub(super) struct ProgressMeter {
    action: &'static str,
    started: Instant,
}

impl ProgressMeter {
    /// A meter for `action` (`Uploading`), started now.
    pub fn new(action: &'static str) -> Self {
        ProgressMeter {
            action,
            started: Instant::now(),
        }
    }

    /// `bytes` moved so far; the job is `done` of `total` through (in
    /// whatever unit it counts, often not the bytes moved: an upload
    /// follows the packaging of the disk's data).
    pub fn progress(&self, bytes: u64, done: u64, total: u64) -> Progress {
        self.progress_after(self.started.elapsed(), bytes, done, total)
    }

    fn progress_after(&self, elapsed: Duration, bytes: u64, done: u64, total: u64) -> Progress {
        let elapsed = elapsed.max(Duration::from_millis(1));
        let fraction = (total > 0).then(|| done.min(total) as f64 / total as f64);
        let eta = fraction
            .filter(|&f| f > 0.0)
            .map(|f| elapsed.mul_f64((1.0 - f) / f));
        Progress {
            action: self.action,
            bytes,
            bytes_per_sec: bytes as f64 / elapsed.as_secs_f64(),
            fraction,
            eta,
        }
    }
}

/// A packaging progress callback (`PackageOptions::progress`) that feeds
/// `reporter`; it runs on the packaging thread.
pub(super) fn packaging_progress(
    reporter: std::sync::Arc<dyn Reporter>,
    build: String,
) -> impl Fn(u64, u64) + Send + Sync {
    let meter = ProgressMeter::new("Packaging");
    move |done, total| reporter.progress(&build, Some(&meter.progress(done, done, total)))
}

impl Progress {
    /// One line for logs: `Uploading: 612 MiB at 38.2 MiB/s, 45% done,
    /// about 51.0s left`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{}: {} at {}/s",
            self.action,
            crate::human::bytes(self.bytes),
            format_bytes_fine(self.bytes_per_sec)
        );
        if let Some(fraction) = self.fraction {
            text.push_str(&format!(", {}% done", (fraction * 100.0) as u32));
        }
        if let Some(eta) = self.eta.filter(|_| self.fraction.is_some_and(|f| f < 1.0)) {
            text.push_str(&format!(", about {} left", crate::human::duration(eta)));
        }
        text
    }
}

/// A rate, with a decimal: `38.2 MiB`.
fn format_bytes_fine(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1 << 20))
}

/// Receives everything a build has to say. Implementations must be cheap and
/// must not block for long: they are called from the build's tasks.
pub trait Reporter: Send + Sync {
    /// A stage began.
    fn stage(&self, build: &str, stage: Stage);
    /// A progress message from kiln itself.
    fn say(&self, build: &str, message: &str);
    /// One line of guest (or local command) output.
    fn output(&self, build: &str, line: &str);
    /// An error message (the build goes on to fail or clean up).
    fn error(&self, build: &str, message: &str);
    /// The build finished with these artifacts (the builder's, when kept,
    /// then the post-processors'), in Packer's order.
    fn artifacts(&self, build: &str, artifacts: &[Artifact]);
    /// A long transfer moved on (called often: implementations pace their
    /// output themselves); `None` when it is over.
    fn progress(&self, build: &str, progress: Option<&Progress>);
    /// Asks the person at the terminal `question` (`-on-error=ask`,
    /// `-debug`) and returns the line they typed, or `None` when nobody can
    /// answer: no terminal, or its input ended. Blocks until answered, so
    /// callers run it off the async threads.
    fn ask(&self, _build: &str, _question: &str) -> Option<String> {
        None
    }
    /// The build is over, cleaned up and reported: nothing more comes for
    /// it (a live display drops its line).
    fn finished(&self, _build: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_estimates_the_time_left_from_the_share_done() {
        let meter = ProgressMeter::new("Uploading");
        let quarter = meter.progress_after(Duration::from_secs(10), 40 << 20, 25, 100);
        assert_eq!(quarter.fraction, Some(0.25));
        assert_eq!(quarter.eta, Some(Duration::from_secs(30)));
        assert_eq!(quarter.bytes_per_sec, f64::from(4 << 20));
        assert_eq!(
            quarter.describe(),
            "Uploading: 40 MiB at 4.0 MiB/s, 25% done, about 30.0s left"
        );
        let half = meter.progress_after(Duration::from_secs(60), 3 << 30, 50, 100);
        assert_eq!(
            half.describe(),
            "Uploading: 3.00 GiB at 51.2 MiB/s, 50% done, about 1m00s left"
        );
    }

    #[test]
    fn no_estimate_before_anything_is_done_or_once_all_is() {
        let meter = ProgressMeter::new("Packaging");
        let start = meter.progress_after(Duration::from_secs(1), 0, 0, 100);
        assert_eq!(start.fraction, Some(0.0));
        assert_eq!(start.eta, None);
        assert_eq!(start.describe(), "Packaging: 0 KiB at 0.0 MiB/s, 0% done");
        let unknown = meter.progress_after(Duration::from_secs(1), 512 << 10, 0, 0);
        assert_eq!(unknown.fraction, None);
        assert_eq!(unknown.describe(), "Packaging: 512 KiB at 0.5 MiB/s");
        let end = meter.progress_after(Duration::from_secs(8), 8 << 20, 100, 100);
        assert_eq!(end.eta, Some(Duration::ZERO));
        assert_eq!(end.describe(), "Packaging: 8 MiB at 1.0 MiB/s, 100% done");
    }
}
