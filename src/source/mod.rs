//! The source image: found locally or downloaded into the cache, and
//! checked against its checksum. Its format is `export::format`'s to tell.
//!
//! Local files are used in place. A remote source is kept in the cache
//! under its expected digest (`sources/sha256-<hex>`), or under a hash of
//! its URL when `iso_checksum` is `none`; an entry is checked against its
//! digest each time it is used, and fetched again when it does not match.

mod download;
mod gcs;
pub mod image_map;
mod sums;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::cache::{Cache, CacheError, EntryPaths, Kind, Meta};
use crate::error::FileError;
use crate::plan::{Checksum, Location};

pub use download::DownloadError;

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

    /// `hex` under the algorithm `name` (any case), as go-getter accepts:
    /// md5, sha1, sha256 or sha512, with the matching length.
    pub fn typed(name: &str, hex: &str) -> Option<Digest> {
        let digest = Digest::from_length(hex)?;
        let (algorithm, _) = digest.expected()?;
        name.eq_ignore_ascii_case(algorithm).then_some(digest)
    }

    /// `hex` under the algorithm its length implies (32 md5, 40 sha1, 64
    /// sha256, 128 sha512), as Packer guesses an untyped checksum.
    pub fn from_length(hex: &str) -> Option<Digest> {
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hex = hex.to_ascii_lowercase();
        match hex.len() {
            32 => Some(Digest::Md5(hex)),
            40 => Some(Digest::Sha1(hex)),
            64 => Some(Digest::Sha256(hex)),
            128 => Some(Digest::Sha512(hex)),
            _ => None,
        }
    }

    /// `algorithm:hex`, as cache records keep it.
    fn parse(text: &str) -> Option<Digest> {
        let (name, hex) = text.split_once(':')?;
        Digest::typed(name, hex)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.expected() {
            Some((algorithm, hex)) => write!(f, "{algorithm}:{}", hex.to_ascii_lowercase()),
            None => f.write_str("none"),
        }
    }
}

/// The plan's digest, when it names one (not a checksum list).
fn known_digest(checksum: &Checksum) -> Option<Digest> {
    match checksum {
        Checksum::None => Some(Digest::None),
        Checksum::Sha256(hex) => Some(Digest::Sha256(hex.clone())),
        Checksum::Sha512(hex) => Some(Digest::Sha512(hex.clone())),
        Checksum::Sha1(hex) => Some(Digest::Sha1(hex.clone())),
        Checksum::Md5(hex) => Some(Digest::Md5(hex.clone())),
        Checksum::File(_) => None,
    }
}

/// A digest computed as bytes go by.
pub(crate) enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for `digest`'s algorithm; SHA-256 when there is none, so
    /// the cache can still record what it stored.
    fn for_digest(digest: &Digest) -> Hasher {
        use sha2::Digest as _;
        match digest {
            Digest::None | Digest::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Digest::Sha512(_) => Hasher::Sha512(sha2::Sha512::new()),
            Digest::Sha1(_) => Hasher::Sha1(sha1::Sha1::new()),
            Digest::Md5(_) => Hasher::Md5(md5::Md5::new()),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Hasher::Md5(_) => "md5",
            Hasher::Sha1(_) => "sha1",
            Hasher::Sha256(_) => "sha256",
            Hasher::Sha512(_) => "sha512",
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn reset(&mut self) {
        *self = match self {
            Hasher::Md5(_) => Hasher::for_digest(&Digest::Md5(String::new())),
            Hasher::Sha1(_) => Hasher::for_digest(&Digest::Sha1(String::new())),
            Hasher::Sha256(_) => Hasher::for_digest(&Digest::Sha256(String::new())),
            Hasher::Sha512(_) => Hasher::for_digest(&Digest::Sha512(String::new())),
        };
    }

    /// The digest as lowercase hex.
    fn finish(self) -> String {
        use sha2::Digest as _;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
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
    #[error("{what} does not match its {algorithm} checksum: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The source image: its path or URL.
        what: String,
        /// `sha256`, `sha512`, `sha1` or `md5`.
        algorithm: &'static str,
        /// The template's digest, lowercase hex.
        expected: String,
        /// The file's digest, lowercase hex.
        actual: String,
    },
    /// Downloading a source image or a checksum list failed.
    #[error("downloading {url}")]
    Download {
        /// What was being downloaded.
        url: String,
        /// Why it failed.
        #[source]
        source: DownloadError,
    },
    /// The checksum list has no line for the source.
    #[error("the checksum list {list} has no checksum for {name}")]
    NotListed {
        /// The checksum list.
        list: String,
        /// The source's file name.
        name: String,
    },
    /// The checksum list could not be read, and there is no cached copy
    /// of the source whose digest is on record.
    #[error("the checksum list {list} cannot be read and the source is not cached")]
    ListUnavailable {
        /// The checksum list.
        list: String,
    },
    /// The cache could not be used.
    #[error("the cache")]
    Cache(#[from] CacheError),
    /// Several candidates were tried and each failed.
    #[error("no source could be used:{}", failures.iter().map(|(what, err)| format!("\n  {what}: {}", crate::error::error_chain(err))).collect::<String>())]
    AllFailed {
        /// Each candidate and why it failed.
        failures: Vec<(String, SourceError)>,
    },
    /// A `gs://` source could not be downloaded or unpacked.
    #[error("{url}")]
    Gcs {
        /// The object.
        url: String,
        /// Why.
        #[source]
        source: Box<gcs::GcsError>,
    },
    /// A background task (hashing, locking) went away.
    #[error("a background task failed: {0}")]
    Task(String),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a source fetch tells the person watching.
pub trait Events: Send + Sync {
    /// A message such as `Downloading https://...`.
    fn say(&self, message: &str);
    /// A download moved on: bytes so far and the whole size when known;
    /// `None` when it is over.
    fn progress(&self, progress: Option<(u64, Option<u64>)>);
}

/// Events nobody watches.
pub struct Quiet;

impl Events for Quiet {
    fn say(&self, _message: &str) {}
    fn progress(&self, _progress: Option<(u64, Option<u64>)>) {}
}

/// Where the source comes from and what it must hash to.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `iso_url`/`iso_urls`, tried in order.
    pub candidates: &'a [Location],
    /// `iso_checksum`.
    pub checksum: &'a Checksum,
    /// `iso_target_path`: where a download goes instead of the cache.
    pub target_path: Option<&'a Path>,
}

/// The format of the disk [`resolve`] gives for `candidates`, when the
/// source says it rather than the disk's header: an exported Compute
/// Engine image's `disk.raw` is raw, whatever its first bytes look like.
pub fn known_format(candidates: &[Location]) -> Option<crate::export::ImageFormat> {
    match candidates {
        [Location::Gcs { .. }] => Some(crate::export::ImageFormat::Raw),
        _ => None,
    }
}

/// Finds the first candidate that can be used, downloading it into `cache`
/// if it is remote and not cached yet, and returns its local path, checked
/// against its digest.
pub async fn resolve(
    request: Request<'_>,
    cache: &Cache,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    let client = download::client();
    let list = match request.checksum {
        Checksum::File(location) => match read_list(&client, location).await {
            Ok(text) => Some((location, Some(text))),
            // Offline, a source downloaded before can still be checked
            // against the digest the list gave it then.
            Err(err @ SourceError::Download { .. }) => {
                if !request
                    .candidates
                    .iter()
                    .any(|c| recorded_digest(cache, c).is_some())
                {
                    return Err(err);
                }
                let cause = crate::error::error_chain(&err);
                tracing::warn!(list = %location, error = %cause, "checksum list unavailable; using the digests recorded in the cache");
                events.say(&format!(
                    "The checksum list cannot be read ({cause}); checking the cached source against the digest recorded when it was downloaded"
                ));
                Some((location, None))
            }
            Err(err) => return Err(err),
        },
        _ => None,
    };
    let mut failures = Vec::new();
    for candidate in request.candidates {
        let digest = match (&list, known_digest(request.checksum)) {
            (_, Some(digest)) => Ok(digest),
            (Some((location, Some(text))), None) => listed_digest(text, location, candidate),
            (Some((location, None)), None) => {
                recorded_digest(cache, candidate).ok_or_else(|| SourceError::ListUnavailable {
                    list: location.to_string(),
                })
            }
            (None, None) => Ok(Digest::None),
        };
        let result = match digest {
            Ok(digest) => match candidate {
                Location::Path(path) => check_local(path, &digest).await,
                Location::Url(url) => {
                    fetch(&client, url, &digest, request.target_path, cache, events).await
                }
                Location::Gcs { bucket, object } => {
                    gcs::fetch(bucket, object, &digest, cache, events).await
                }
            },
            Err(err) => Err(err),
        };
        match result {
            Ok(path) => return Ok(path),
            Err(err) => {
                tracing::info!(source = %candidate, error = %crate::error::error_chain(&err), "source candidate unusable");
                failures.push((candidate.to_string(), err));
            }
        }
    }
    let missing: Option<Vec<PathBuf>> = failures
        .iter()
        .map(|(_, err)| match err {
            SourceError::NotFound { tried } => tried.first().cloned(),
            _ => None,
        })
        .collect();
    match missing {
        Some(tried) => Err(SourceError::NotFound { tried }),
        None if failures.len() == 1 => Err(failures.remove(0).1),
        None => Err(SourceError::AllFailed { failures }),
    }
}

/// The digest the cache recorded for the entry downloaded from `candidate`.
fn recorded_digest(cache: &Cache, candidate: &Location) -> Option<Digest> {
    let Location::Url(url) = candidate else {
        return None;
    };
    let entries = cache.list().ok()?;
    entries
        .iter()
        .filter(|e| e.kind == Kind::Source && e.origin.as_deref() == Some(url.as_str()))
        .find_map(|e| Digest::parse(&cache.entry(e.kind, &e.key).read_meta()?.digest))
}

async fn read_list(client: &reqwest::Client, location: &Location) -> Result<String, SourceError> {
    let bytes = match location {
        Location::Path(path) => std::fs::read(path).map_err(FileError::read(path))?,
        Location::Gcs { .. } => {
            return Err(SourceError::NotListed {
                list: location.to_string(),
                name: "(a checksum list in Cloud Storage is not read: give the digest)".into(),
            });
        }
        Location::Url(url) => {
            download::to_memory(client, url)
                .await
                .map_err(|source| SourceError::Download {
                    url: url.to_string(),
                    source,
                })?
        }
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn listed_digest(text: &str, list: &Location, candidate: &Location) -> Result<Digest, SourceError> {
    let path_of = |location: &Location| match location {
        Location::Path(path) => path.to_string_lossy().into_owned(),
        Location::Url(url) => percent_encoding::percent_decode_str(url.path())
            .decode_utf8_lossy()
            .into_owned(),
        Location::Gcs { object, .. } => format!("/{object}"),
    };
    let source_path = path_of(candidate);
    sums::find(text, &source_path, &path_of(list)).ok_or_else(|| SourceError::NotListed {
        list: list.to_string(),
        name: source_path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

async fn check_local(path: &Path, digest: &Digest) -> Result<PathBuf, SourceError> {
    if !path.is_file() {
        return Err(SourceError::NotFound {
            tried: vec![path.to_path_buf()],
        });
    }
    let (path, digest) = (path.to_path_buf(), digest.clone());
    blocking(move || {
        verify(&path, &digest, &path.display().to_string())?;
        Ok(path)
    })
    .await
}

/// Checks `path` against `digest`; `what` names it in the error.
fn verify(path: &Path, digest: &Digest, what: &str) -> Result<(), SourceError> {
    if let Some((algorithm, expected)) = digest.expected() {
        let actual = hash_file(path, algorithm).map_err(FileError::read(path))?;
        let expected = expected.trim();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(SourceError::ChecksumMismatch {
                what: what.to_string(),
                algorithm,
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
        tracing::info!(path = %path.display(), algorithm, "source checksum verified");
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| SourceError::Task(err.to_string()))?
}

/// The cache key of a download: its digest, or its URL's when there is none.
fn entry_key(url: &url::Url, digest: &Digest) -> String {
    entry_key_text(url.as_str(), digest)
}

/// [`entry_key`] for a URL as text (a `gs://` one too).
fn entry_key_text(url: &str, digest: &Digest) -> String {
    match digest.expected() {
        Some((algorithm, hex)) => format!("{algorithm}-{}", hex.to_ascii_lowercase()),
        None => {
            use sha2::Digest as _;
            format!("url-{}", hex::encode(sha2::Sha256::digest(url)))
        }
    }
}

/// `iso_target_path` as Packer reads it: a directory (the URL's file name
/// goes in it) when it ends in `/` or has no extension.
fn target_file(target: &Path, url: &url::Url) -> PathBuf {
    let is_dir =
        target.as_os_str().to_string_lossy().ends_with('/') || target.extension().is_none();
    if is_dir {
        let name = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|name| !name.is_empty())
            .unwrap_or("source");
        target.join(name)
    } else {
        target.to_path_buf()
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &url::Url,
    digest: &Digest,
    target: Option<&Path>,
    cache: &Cache,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    let paths = match target {
        Some(target) => EntryPaths::beside(target_file(target, url)),
        None => cache.entry(Kind::Source, &entry_key(url, digest)),
    };
    let lock = {
        let paths = paths.clone();
        blocking(move || Ok(paths.lock()?)).await?
    };
    let result = fetch_locked(client, url, digest, &paths, events).await;
    lock.release();
    result
}

async fn fetch_locked(
    client: &reqwest::Client,
    url: &url::Url,
    digest: &Digest,
    paths: &EntryPaths,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    // Packer downloads again to a target path when there is nothing to
    // check what is there against.
    let checkable = paths.meta.is_some() || *digest != Digest::None;
    if checkable && paths.data.exists() {
        let (checked, url_text) = (paths.clone(), url.to_string());
        let expected = digest.clone();
        let usable = blocking(move || Ok(check_entry(&checked, &expected, &url_text))).await?;
        match usable {
            Ok(()) => {
                paths.touch();
                events.say(&format!("Using the cached {url}"));
                tracing::info!(url = %url, path = %paths.data.display(), "source found in the cache");
                return Ok(paths.data.clone());
            }
            Err(problem) => {
                tracing::warn!(
                    url = %url,
                    path = %paths.data.display(),
                    problem = %problem,
                    "cached source is damaged; removing it and downloading it again"
                );
                events.say(&format!(
                    "The cached {url} is damaged ({problem}); downloading it again"
                ));
                paths.remove()?;
            }
        }
    }
    events.say(&format!("Downloading {url}"));
    let hasher = Hasher::for_digest(digest);
    let algorithm = hasher.algorithm();
    let progress = |bytes, total| events.progress(Some((bytes, total)));
    let downloaded = download::to_file(client, url, &paths.part, hasher, &progress).await;
    events.progress(None);
    let (actual, size) = match downloaded {
        Ok(done) => done,
        Err(source) => {
            // Kept to resume from, unless nothing arrived.
            if std::fs::metadata(&paths.part).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&paths.part);
            }
            return Err(SourceError::Download {
                url: url.to_string(),
                source,
            });
        }
    };
    if let Some((_, expected)) = digest.expected()
        && !actual.eq_ignore_ascii_case(expected.trim())
    {
        let _ = std::fs::remove_file(&paths.part);
        return Err(SourceError::ChecksumMismatch {
            what: url.to_string(),
            algorithm,
            expected: expected.trim().to_ascii_lowercase(),
            actual,
        });
    }
    // The record first: an entry in place always has one.
    paths.write_meta(&Meta {
        origin: url.to_string(),
        digest: format!("{algorithm}:{actual}"),
        stored: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })?;
    std::fs::rename(&paths.part, &paths.data).map_err(FileError::write(&paths.data))?;
    tracing::info!(url = %url, path = %paths.data.display(), bytes = size, algorithm, "source downloaded and verified");
    events.say(&format!("{url} => {}", paths.data.display()));
    Ok(paths.data.clone())
}

/// Whether a stored entry may be used: it matches the expected digest, or,
/// without one, the digest recorded when it was stored. The error says why
/// not.
fn check_entry(paths: &EntryPaths, digest: &Digest, url: &str) -> Result<(), String> {
    let expected = match digest {
        Digest::None => match paths
            .read_meta()
            .and_then(|meta| Digest::parse(&meta.digest))
        {
            Some(recorded) => recorded,
            None if paths.meta.is_none() => {
                return Err("no checksum to check it against".into());
            }
            None => return Err("its record is missing".into()),
        },
        known => known.clone(),
    };
    match verify(&paths.data, &expected, url) {
        Ok(()) => Ok(()),
        Err(SourceError::ChecksumMismatch {
            expected, actual, ..
        }) => Err(format!("expected {expected}, got {actual}")),
        Err(err) => Err(crate::error::error_chain(&err)),
    }
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

    fn resolve(paths: &[PathBuf], digest: &Digest) -> Result<PathBuf, SourceError> {
        let candidates: Vec<Location> = paths.iter().cloned().map(Location::Path).collect();
        let checksum = match digest.clone() {
            Digest::None => Checksum::None,
            Digest::Sha256(hex) => Checksum::Sha256(hex),
            Digest::Sha512(hex) => Checksum::Sha512(hex),
            Digest::Sha1(hex) => Checksum::Sha1(hex),
            Digest::Md5(hex) => Checksum::Md5(hex),
        };
        let request = Request {
            candidates: &candidates,
            checksum: &checksum,
            target_path: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(super::resolve(request, &Cache::at("/nonexistent"), &Quiet))
    }

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
                what,
                algorithm,
                expected,
                actual,
            } => {
                assert_eq!(what, &path.display().to_string());
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

    #[test]
    fn digests_by_name_and_length() {
        assert_eq!(
            Digest::typed("SHA256", SHA256_ABC),
            Some(Digest::Sha256(SHA256_ABC.into()))
        );
        assert_eq!(Digest::typed("sha1", SHA256_ABC), None);
        assert_eq!(Digest::typed("crc32", "abcd1234"), None);
        assert_eq!(
            Digest::from_length(&MD5_ABC.to_uppercase()),
            Some(Digest::Md5(MD5_ABC.into()))
        );
        assert_eq!(Digest::from_length("xyz"), None);
        let digest = Digest::Sha512(SHA512_ABC.into());
        assert_eq!(Digest::parse(&digest.to_string()), Some(digest));
    }

    #[test]
    fn cache_keys_follow_the_digest_or_the_url() {
        let url = url::Url::parse("https://example.com/a/disk.img").unwrap();
        assert_eq!(
            entry_key(&url, &Digest::Sha256(SHA256_ABC.to_uppercase())),
            format!("sha256-{SHA256_ABC}")
        );
        let by_url = entry_key(&url, &Digest::None);
        assert!(
            by_url.starts_with("url-") && by_url.len() == 4 + 64,
            "{by_url}"
        );
        let other = url::Url::parse("https://example.com/b/disk.img").unwrap();
        assert_ne!(entry_key(&other, &Digest::None), by_url);
    }

    #[test]
    fn target_paths_without_extension_are_directories() {
        let url = url::Url::parse("https://example.com/a/disk.img?x=1").unwrap();
        assert_eq!(
            target_file(Path::new("/t/images"), &url),
            PathBuf::from("/t/images/disk.img")
        );
        assert_eq!(
            target_file(Path::new("/t/base.qcow2"), &url),
            PathBuf::from("/t/base.qcow2")
        );
    }

    #[test]
    fn damaged_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let url = "https://example.com/abc.img";
        let paths = cache.entry(Kind::Source, "url-x");
        std::fs::create_dir_all(paths.data.parent().unwrap()).unwrap();
        std::fs::write(&paths.data, "abc").unwrap();
        // Without a record, a download with no checksum cannot be trusted.
        assert!(check_entry(&paths, &Digest::None, url).is_err());
        paths
            .write_meta(&Meta {
                origin: url.into(),
                digest: format!("sha256:{SHA256_ABC}"),
                stored: 0,
            })
            .unwrap();
        assert_eq!(check_entry(&paths, &Digest::None, url), Ok(()));
        assert_eq!(
            check_entry(&paths, &Digest::Md5(MD5_ABC.into()), url),
            Ok(())
        );
        std::fs::write(&paths.data, "abd").unwrap();
        let problem = check_entry(&paths, &Digest::None, url).unwrap_err();
        assert!(
            problem.starts_with(&format!("expected {SHA256_ABC}, got ")),
            "{problem}"
        );
    }

    #[test]
    fn checksum_lists_pick_each_candidates_line() {
        let list = Location::Path("/srv/SHA256SUMS".into());
        let text = format!("{SHA256_ABC}  a.img\n{SHA1_ABC} *b.img\n");
        let a = Location::Url(url::Url::parse("https://h/x/a.img").unwrap());
        let b = Location::Path("/srv/b.img".into());
        assert_eq!(
            listed_digest(&text, &list, &a).unwrap(),
            Digest::Sha256(SHA256_ABC.into())
        );
        assert_eq!(
            listed_digest(&text, &list, &b).unwrap(),
            Digest::Sha1(SHA1_ABC.into())
        );
        let c = Location::Path("/srv/c.img".into());
        assert_eq!(
            listed_digest(&text, &list, &c).unwrap_err().to_string(),
            "the checksum list /srv/SHA256SUMS has no checksum for c.img"
        );
    }
}
