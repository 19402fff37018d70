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
    #[error("{disk} is not a disk image qemu-img can read")]
    NotAnImage {
        disk: PathBuf,
        #[source]
        source: ToolError,
    },
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
    #[error("cannot run {program}")]
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
    #[error("unexpected output from {program}")]
    Parse {
        program: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
