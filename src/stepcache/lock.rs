//! Entry locks: open file description (OFD) record locks on `<key>.lock`.
//!
//! Not `flock`: committing an entry turns the builder's exclusive lock into
//! a shared one, and `flock` does that by dropping the lock and taking a
//! new one, a window in which `kiln cache prune` could take the lock and
//! delete the entry just made. An OFD lock changes type atomically, and a
//! failed non-blocking upgrade keeps the shared lock.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use super::StepCacheError;

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held lock on one entry; released when dropped.
#[derive(Debug)]
pub(crate) struct EntryLock {
    file: File,
    path: PathBuf,
    mode: Mode,
}

impl EntryLock {
    /// Takes the lock at `path`, waiting if `wait`; `None` when not waiting
    /// and someone else holds a conflicting lock.
    pub(crate) fn take(
        path: &Path,
        mode: Mode,
        wait: bool,
    ) -> Result<Option<EntryLock>, StepCacheError> {
        let err = |source| StepCacheError::Lock {
            path: path.to_path_buf(),
            source,
        };
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(err)?;
            match set(&file, mode, wait) {
                Ok(()) => {}
                Err(e) if !wait && would_block(&e) => return Ok(None),
                Err(e) => return Err(err(e)),
            }
            if same_file(&file, path) {
                return Ok(Some(EntryLock {
                    file,
                    path: path.to_path_buf(),
                    mode,
                }));
            }
            // Whoever held it removed the entry and its lock file as it let
            // go: the lock now lives in a new file.
        }
    }

    /// Changes an exclusive lock into a shared one (never waits).
    pub(crate) fn downgrade(&mut self) -> Result<(), StepCacheError> {
        if self.mode == Mode::Shared {
            return Ok(());
        }
        set(&self.file, Mode::Shared, true).map_err(|source| StepCacheError::Lock {
            path: self.path.clone(),
            source,
        })?;
        self.mode = Mode::Shared;
        Ok(())
    }

    /// Changes a shared lock into an exclusive one if nobody else holds it;
    /// whether it did. On `false` the shared lock is still held.
    pub(crate) fn try_upgrade(&mut self) -> Result<bool, StepCacheError> {
        if self.mode == Mode::Exclusive {
            return Ok(true);
        }
        match set(&self.file, Mode::Exclusive, false) {
            Ok(()) => {
                self.mode = Mode::Exclusive;
                Ok(true)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(source) => Err(StepCacheError::Lock {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Removes the lock file, then lets go (the entry is gone: the lock file
    /// would only be litter). Waiters notice the file changed and retry.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

fn set(file: &File, mode: Mode, wait: bool) -> io::Result<()> {
    // SAFETY: an all-zero flock is a valid value; the fields that matter
    // are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = match mode {
        Mode::Shared => libc::F_RDLCK,
        Mode::Exclusive => libc::F_WRLCK,
    } as _;
    lock.l_whence = libc::SEEK_SET as _;
    // l_start = l_len = 0: the whole file.
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: the descriptor is open for the call's duration and `lock`
        // is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether the open `file` is still the one at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}
