//! The step cache: one entry per build step (the machine right after boot,
//! after each provisioner, and the finished disk), each a qcow2 overlay on
//! the one before with the VM's saved state, so a rebuild resumes after
//! the longest unchanged prefix of steps.
//!
//! Layout, under `<cache root>/steps/`:
//!
//! ```text
//! <key>/disk.qcow2   overlay; backing = the parent's disk.qcow2 (or the source image)
//! <key>/state        QEMU migration stream (boot and step entries)
//! <key>/ssh_key      the private key the machine was booted with, mode 0600
//! <key>/meta.json    written last: its presence means the entry is complete
//! <key>.lock         the entry's lock (apart, so removing the dir cannot race it)
//! digests/           memoised sha256 of source images
//! ```
//!
//! [`key`] computes the keys, [`inputs`] names the host files a provisioner
//! reads, [`store`] creates, validates and locks entries, [`prune`] lists
//! and removes them for `kiln cache`.

pub mod inputs;
pub mod key;
mod lock;
pub mod prune;
pub mod store;

pub use key::{BootInputs, KeyError, StepKey, boot_key, final_key, source_digest, step_key};
pub use store::{
    Began, CommitInfo, EntryInfo, EntryKind, FileRecord, Found, Meta, PendingEntry, StepStore,
    UsedEntry,
};

use std::path::PathBuf;

use crate::error::FileError;

/// What the step cache could not do.
#[derive(Debug, thiserror::Error)]
pub enum StepCacheError {
    /// Reading or writing a file of the cache failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Taking or changing an entry's lock failed.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` could not be encoded.
    #[error("cannot encode the record {}", path.display())]
    Encode {
        /// The record.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The SSH key of an entry being committed is readable by others.
    #[error("{} has mode {mode:04o}; a cached SSH key must have mode 0600", path.display())]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An entry being committed lacks a file its kind needs.
    #[error("cannot commit {}: it is missing", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// An entry being committed names a parent that is not a complete entry.
    #[error("cannot commit {}: its parent entry {parent} is not complete", dir.display())]
    NoParent {
        /// The entry's directory.
        dir: PathBuf,
        /// The parent's key.
        parent: StepKey,
    },
    /// A step or final entry was begun without naming its parent.
    #[error("cannot commit {}: a step or final entry needs a parent entry", dir.display())]
    ParentNotGiven {
        /// The entry's directory.
        dir: PathBuf,
    },
    /// Hashing an input failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The blocking task doing the work was cancelled or panicked.
    #[error("the step cache task stopped")]
    Task(#[source] tokio::task::JoinError),
}
