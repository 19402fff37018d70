//! Printing errors (the whole chain of causes on one line), and the one
//! error for a file that could not be read or written.

use std::io;
use std::path::{Path, PathBuf};

/// An error and all its sources on one line: `a: b: c`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's message; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A file kiln could not read or write. Module errors carry it as a
/// transparent variant, so every such message reads the same.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening, reading or inspecting the file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Creating, writing or syncing the file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// For `map_err`: a failure to read `path`.
    pub fn read(path: &Path) -> impl Fn(io::Error) -> FileError + Copy + '_ {
        move |source| FileError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// For `map_err`: a failure to write `path`.
    pub fn write(path: &Path) -> impl Fn(io::Error) -> FileError + Copy + '_ {
        move |source| FileError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file the failure is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Read { path, .. } | FileError::Write { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_file_and_keep_the_cause() {
        let cause = || io::Error::from(io::ErrorKind::PermissionDenied);
        let read = FileError::read(Path::new("/a/b"))(cause());
        assert_eq!(read.to_string(), "cannot read /a/b");
        assert_eq!(read.path(), Path::new("/a/b"));
        let write = FileError::write(Path::new("c"))(cause());
        assert_eq!(error_chain(&write), format!("cannot write c: {}", cause()));
    }
}
