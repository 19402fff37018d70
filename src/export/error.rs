//! What can go wrong while packaging a disk.

use std::io;
use std::path::PathBuf;

/// A failure of `package`/`package_to_file`; every message names the disk
/// (or the output) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The disk could not be opened.
    #[error("cannot read disk {disk}")]
    Open {
        /// The disk.
        disk: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },
    /// Names the disk itself.
    #[error(transparent)]
    Image(#[from] super::format::ImageError),
    /// The disk holds no data at all.
    #[error("disk {disk} has a virtual size of 0")]
    EmptyImage {
        /// The disk.
        disk: PathBuf,
    },
    /// `qemu-img map` could not list the disk's allocated extents.
    #[error("cannot map the allocated extents of {disk}")]
    Map {
        /// The disk.
        disk: PathBuf,
        /// The failed `qemu-img` run.
        #[source]
        source: ToolError,
    },
    /// A qcow2 disk could not be served by `qemu-nbd` to be read.
    #[error("cannot serve {disk} with qemu-nbd")]
    Nbd {
        /// The disk.
        disk: PathBuf,
        /// What went wrong with `qemu-nbd`.
        #[source]
        source: super::nbd::NbdError,
    },
    /// Reading the disk's data failed part way.
    #[error("cannot read the data of {disk}")]
    Read {
        /// The disk.
        disk: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// Writing the tarball failed (the file or the upload's pipe).
    #[error("cannot write the tarball of {disk}")]
    Write {
        /// The disk being packaged.
        disk: PathBuf,
        /// The write error.
        #[source]
        source: io::Error,
    },
    /// The packaging was cancelled (Ctrl-C, or the upload ended).
    #[error("packaging {disk} was cancelled")]
    Cancelled {
        /// The disk being packaged.
        disk: PathBuf,
    },
    /// The output file is the disk itself.
    #[error("the output {path} is the disk being read ({input}); choose another output")]
    OutputIsInput {
        /// The output as given.
        path: PathBuf,
        /// The disk it resolves to.
        input: PathBuf,
    },
    /// The output file exists and `--force` was not given.
    #[error("the output {path} exists; give --force to replace it")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// The output names a directory.
    #[error("the output {path} is a directory; give a file name")]
    OutputIsDirectory {
        /// The output.
        path: PathBuf,
    },
    /// The output file could not be created or finished.
    #[error("cannot create the tarball {path}")]
    Output {
        /// The output.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A qemu-img run that failed or said something kiln cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started (not installed, say).
    #[error("cannot run {program}{}", install_hint(source))]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// The program exited with a failure.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: &'static str,
        /// How it exited.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The run was cancelled and the program killed.
    #[error("{program} was cancelled")]
    Cancelled {
        /// The program.
        program: &'static str,
    },
    /// The program ran past its time limit and was killed.
    #[error("{program} did not finish within {seconds}s and was killed")]
    TimedOut {
        /// The program.
        program: &'static str,
        /// The time limit.
        seconds: u64,
    },
    /// The program's JSON output could not be read.
    #[error("unexpected output from {program}")]
    Parse {
        /// The program.
        program: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// The tools kiln runs (qemu-img, qemu-nbd) come with one package.
fn install_hint(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::NotFound {
        " (is qemu-utils installed?)"
    } else {
        ""
    }
}
