//! What a build created, and how to take it away again: run in reverse on
//! failure or Ctrl-C, skipped (and listed) with `-on-error=abort`.

use std::path::PathBuf;

/// One thing a stage created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A private temporary directory (QMP socket, key, seed): removed after
    /// every build, successful or not.
    TempDir(PathBuf),
    /// The output directory, holding a half-written disk until the build
    /// succeeds.
    OutputDir(PathBuf),
    /// A file written into a place that already existed.
    File(PathBuf),
}

impl Created {
    fn remove(&self) -> std::io::Result<()> {
        let result = match self {
            Created::TempDir(path) | Created::OutputDir(path) => std::fs::remove_dir_all(path),
            Created::File(path) => std::fs::remove_file(path),
        };
        match result {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// What was created.
    pub fn path(&self) -> &PathBuf {
        match self {
            Created::TempDir(path) | Created::OutputDir(path) | Created::File(path) => path,
        }
    }

    fn kept_on_success(&self) -> bool {
        !matches!(self, Created::TempDir(_))
    }
}

/// What a build created, newest last: removed on failure, kept (all but
/// temporary files) on success.
#[derive(Debug, Default)]
pub struct UndoStack {
    created: Vec<Created>,
}

impl UndoStack {
    /// Records something the build created.
    pub fn push(&mut self, created: Created) {
        self.created.push(created);
    }

    /// The build succeeded: its outputs stay, its scratch space goes.
    pub fn succeed(self) -> Vec<(PathBuf, std::io::Error)> {
        let (scratch, _kept): (Vec<_>, Vec<_>) =
            self.created.into_iter().partition(|c| !c.kept_on_success());
        remove_all(scratch)
    }

    /// The build failed: everything goes, newest first. Returns what could
    /// not be removed.
    pub fn unwind(self) -> Vec<(PathBuf, std::io::Error)> {
        remove_all(self.created)
    }

    /// `-on-error=abort`: everything stays; returns what was left.
    pub fn abandon(self) -> Vec<PathBuf> {
        self.created.into_iter().map(|c| c.path().clone()).collect()
    }
}

fn remove_all(mut items: Vec<Created>) -> Vec<(PathBuf, std::io::Error)> {
    let mut failures = Vec::new();
    while let Some(item) = items.pop() {
        if let Err(err) = item.remove() {
            failures.push((item.path().clone(), err));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwind_removes_everything_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let disk = out.join("disk");
        std::fs::write(&disk, b"x").unwrap();
        let scratch = root.path().join("tmp");
        std::fs::create_dir(&scratch).unwrap();
        let mut undo = UndoStack::default();
        undo.push(Created::OutputDir(out.clone()));
        undo.push(Created::File(disk.clone()));
        undo.push(Created::TempDir(scratch.clone()));
        assert!(undo.unwind().is_empty());
        assert!(!out.exists() && !scratch.exists());
    }

    #[test]
    fn success_keeps_outputs_and_drops_scratch() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let scratch = root.path().join("tmp");
        std::fs::create_dir(&out).unwrap();
        std::fs::create_dir(&scratch).unwrap();
        let mut undo = UndoStack::default();
        undo.push(Created::OutputDir(out.clone()));
        undo.push(Created::TempDir(scratch.clone()));
        assert!(undo.succeed().is_empty());
        assert!(out.exists());
        assert!(!scratch.exists());
    }

    #[test]
    fn abandon_touches_nothing() {
        let root = tempfile::tempdir().unwrap();
        let mut undo = UndoStack::default();
        undo.push(Created::TempDir(root.path().to_path_buf()));
        assert_eq!(undo.abandon(), vec![root.path().to_path_buf()]);
        assert!(root.path().exists());
    }
}
