//! What can go wrong while packaging a disk.

use std::io;
use std::path::PathBuf;

/// A failure of `package`/`package_to_file`; every message names the disk
/// (or the output) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read disk {disk}")]
    Open {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Names the disk itself.
    #[error(transparent)]
    Image(#[from] super::format::ImageError),
    #[error("disk {disk} has a virtual size of 0")]
    EmptyImage { disk: PathBuf },
    #[error("cannot map the allocated extents of {disk}")]
    Map {
        disk: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error("cannot serve {disk} with qemu-nbd")]
    Nbd {
        disk: PathBuf,
        #[source]
        source: super::nbd::NbdError,
    },
    #[error("cannot read the data of {disk}")]
    Read {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the tarball of {disk}")]
    Write {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("packaging {disk} was cancelled")]
    Cancelled { disk: PathBuf },
    #[error("the output {path} is the disk being read ({input}); choose another output")]
    OutputIsInput { path: PathBuf, input: PathBuf },
    #[error("the output {path} exists; give --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("the output {path} is a directory; give a file name")]
    OutputIsDirectory { path: PathBuf },
    #[error("cannot create the tarball {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A qemu-img run that failed or said something kiln cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {program}{}", install_hint(source))]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{program} was cancelled")]
    Cancelled { program: &'static str },
    #[error("{program} did not finish within {seconds}s and was killed")]
    TimedOut { program: &'static str, seconds: u64 },
    #[error("unexpected output from {program}")]
    Parse {
        program: &'static str,
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
