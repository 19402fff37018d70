//! kiln's temporary directories: private (0700) whatever the umask. They
//! hold the QMP and NBD sockets, the build's SSH key and disks in the
//! making: with the umask's 0755 (0777 under umask 000) any local user
//! could read the disk or drive QEMU.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;

const PRIVATE_DIR: u32 = 0o700;

/// A new `<prefix>XXXXXX` directory in the system's temp dir, mode 0700,
/// removed when dropped.
pub fn private_dir(prefix: &str) -> std::io::Result<TempDir> {
    private_dir_in(&std::env::temp_dir(), prefix)
}

/// [`private_dir`] inside `parent`.
fn private_dir_in(parent: &Path, prefix: &str) -> std::io::Result<TempDir> {
    let mode = std::fs::Permissions::from_mode(PRIVATE_DIR);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        // Created 0700 (never visible with more), then set exactly: the
        // umask could also take bits the owner needs.
        .permissions(mode.clone())
        .tempdir_in(parent)?;
    std::fs::set_permissions(dir.path(), mode)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CHILD: &str = "KILN_TMP_TEST_PARENT";

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Run by [`private_under_umask_000`] in a process of its own: the umask
    /// is the whole process's, and other tests run in threads beside this
    /// one.
    #[test]
    fn child_makes_a_dir_under_umask_000() {
        let Some(parent) = std::env::var_os(CHILD) else {
            return;
        };
        // SAFETY: umask has no memory-safety preconditions.
        unsafe { libc::umask(0) };
        let dir = private_dir_in(Path::new(&parent), "kiln-umask-").unwrap();
        // Left for the parent to look at; the parent's temp dir removes it.
        let _ = dir.keep();
    }

    #[test]
    fn private_under_umask_000() {
        let parent = tempfile::tempdir().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tmp::tests::child_makes_a_dir_under_umask_000",
                "--test-threads=1",
            ])
            .env(CHILD, parent.path())
            .status()
            .unwrap();
        assert!(status.success());
        let made: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(made.len(), 1, "{made:?}");
        assert_eq!(mode_of(&made[0]), 0o700, "{}", made[0].display());
    }

    #[test]
    fn private_in_this_process_too() {
        let dir = private_dir("kiln-private-").unwrap();
        assert_eq!(mode_of(dir.path()), 0o700);
        assert!(
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kiln-private-")
        );
    }
}
