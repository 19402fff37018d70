//! The source image: find it, check its checksum, tell its format.

use std::path::{Path, PathBuf};

/// The digest the source must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    None,
    Sha256(String),
    Sha512(String),
    Sha1(String),
    Md5(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("none of the source images exist: {}", list(.tried))]
    NotFound { tried: Vec<PathBuf> },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first of `candidates` that exists, after checking it against `digest`.
pub fn resolve(candidates: &[PathBuf], digest: &Digest) -> Result<PathBuf, SourceError> {
    let _ = (candidates, digest);
    todo!("source::resolve")
}

/// `qcow2` or `raw`, from the file's first bytes.
pub fn detect_format(path: &Path) -> Result<&'static str, SourceError> {
    let _ = path;
    todo!("source::detect_format")
}
