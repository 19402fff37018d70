//! The source image: find it and check its checksum. Its format is
//! `export::format`'s to tell.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::FileError;

/// The digest the source must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// No checksum to verify (`iso_checksum` is `none`).
    None,
    /// SHA-256, as hex.
    Sha256(String),
    /// SHA-512, as hex.
    Sha512(String),
    /// SHA-1, as hex.
    Sha1(String),
    /// MD5, as hex.
    Md5(String),
}

impl Digest {
    /// The algorithm's name and the expected hex, unless there is nothing
    /// to check.
    fn expected(&self) -> Option<(&'static str, &str)> {
        match self {
            Digest::None => None,
            Digest::Sha256(hex) => Some(("sha256", hex)),
            Digest::Sha512(hex) => Some(("sha512", hex)),
            Digest::Sha1(hex) => Some(("sha1", hex)),
            Digest::Md5(hex) => Some(("md5", hex)),
        }
    }
}

/// Why no usable source image was found.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No candidate (`iso_url`/`iso_urls`) is a file.
    #[error("none of the source images exist: {}", list(.tried))]
    NotFound {
        /// Every candidate, in the order tried.
        tried: Vec<PathBuf>,
    },
    /// The source image could not be read to check its checksum.
    #[error(transparent)]
    File(#[from] FileError),
    /// The source image's digest differs from `iso_checksum`.
    #[error(
        "{} does not match its {algorithm} checksum: expected {expected}, got {actual}",
        path.display()
    )]
    ChecksumMismatch {
        /// The source image.
        path: PathBuf,
        /// `sha256`, `sha512`, `sha1` or `md5`.
        algorithm: &'static str,
        /// The template's digest, lowercase hex.
        expected: String,
        /// The file's digest, lowercase hex.
        actual: String,
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
    let Some(found) = candidates.iter().find(|p| p.is_file()) else {
        return Err(SourceError::NotFound {
            tried: candidates.to_vec(),
        });
    };
    for missing in candidates.iter().take_while(|p| *p != found) {
        tracing::info!(path = %missing.display(), "source candidate missing");
    }
    if let Some((algorithm, expected)) = digest.expected() {
        let actual = hash_file(found, algorithm).map_err(FileError::read(found))?;
        let expected = expected.trim();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(SourceError::ChecksumMismatch {
                path: found.clone(),
                algorithm,
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
        tracing::info!(path = %found.display(), algorithm, "source checksum verified");
    }
    Ok(found.clone())
}

/// The lowercase hex digest of the file under `algorithm` (`md5`, `sha1`,
/// `sha224`, `sha256`, `sha384` or `sha512`), read in chunks: source images
/// and artifacts are gigabytes.
pub fn hash_file(path: &Path, algorithm: &str) -> io::Result<String> {
    use sha2::Digest as _;
    let mut file = File::open(path)?;
    let digest = match algorithm {
        "md5" => stream(&mut file, md5::Md5::new())?,
        "sha1" => stream(&mut file, sha1::Sha1::new())?,
        "sha224" => stream(&mut file, sha2::Sha224::new())?,
        "sha256" => stream(&mut file, sha2::Sha256::new())?,
        "sha384" => stream(&mut file, sha2::Sha384::new())?,
        "sha512" => stream(&mut file, sha2::Sha512::new())?,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown digest {other}"),
            ));
        }
    };
    Ok(hex::encode(digest))
}

fn stream<D: sha2::Digest>(reader: &mut impl Read, mut hasher: D) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Digests of "abc", from FIPS 180 and RFC 1321.
    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const SHA512_ABC: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    const SHA1_ABC: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

    fn abc(dir: &Path) -> PathBuf {
        let path = dir.join("abc.img");
        std::fs::write(&path, "abc").unwrap();
        path
    }

    #[test]
    fn every_algorithm_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = abc(dir.path());
        for digest in [
            Digest::None,
            Digest::Sha256(SHA256_ABC.to_string()),
            Digest::Sha512(SHA512_ABC.to_string()),
            Digest::Sha1(SHA1_ABC.to_string()),
            Digest::Md5(MD5_ABC.to_string()),
            Digest::Sha256(SHA256_ABC.to_ascii_uppercase()),
        ] {
            assert_eq!(resolve(std::slice::from_ref(&path), &digest).unwrap(), path);
        }
    }

    #[test]
    fn mismatch_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = abc(dir.path());
        let wrong = "0".repeat(64);
        let err = resolve(std::slice::from_ref(&path), &Digest::Sha256(wrong.clone())).unwrap_err();
        match &err {
            SourceError::ChecksumMismatch {
                path: p,
                algorithm,
                expected,
                actual,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*algorithm, "sha256");
                assert_eq!(expected, &wrong);
                assert_eq!(actual, SHA256_ABC);
            }
            other => panic!("unexpected {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&wrong) && message.contains(SHA256_ABC),
            "{message}"
        );
    }

    #[test]
    fn first_existing_candidate_wins() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let second = dir.path().join("second.img");
        std::fs::write(&second, "x").unwrap();
        let first = abc(dir.path());
        let found = resolve(&[missing, first.clone(), second], &Digest::None).unwrap();
        assert_eq!(found, first);
    }

    #[test]
    fn not_found_lists_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let tried = vec![dir.path().join("a.img"), dir.path().join("b.img")];
        let err = resolve(&tried, &Digest::None).unwrap_err();
        assert!(matches!(&err, SourceError::NotFound { tried: t } if *t == tried));
        let message = err.to_string();
        assert!(
            message.contains("a.img") && message.contains("b.img"),
            "{message}"
        );
    }
}
