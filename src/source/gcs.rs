//! `gs://bucket/object` sources: a Compute Engine image exported to Cloud
//! Storage (`gcloud compute images export`: a tar.gz holding `disk.raw`).
//! The tarball is downloaded into the cache like any remote source, then
//! its disk is unpacked beside it, once; the build uses the raw disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Digest, Events, SourceError, blocking, check_entry, entry_key_text, verify};
use crate::cache::{Cache, EntryPaths, Kind, Meta};
use crate::error::FileError;
use crate::export::unpack::{TarballError, extract_disk};
use crate::gcp::{AuthError, Credentials, StorageClient, StorageError, TokenSource};

/// Why a `gs://` source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// No credentials for Cloud Storage.
    #[error("Google Cloud credentials")]
    Auth(#[from] AuthError),
    /// The download failed.
    #[error("downloading it")]
    Storage(#[from] StorageError),
    /// The download could not be written.
    #[error("writing it to the cache")]
    Write(#[source] std::io::Error),
    /// The tarball holds no usable disk.
    #[error("unpacking its disk.raw")]
    Unpack(#[from] TarballError),
}

fn err(url: &str) -> impl Fn(GcsError) -> SourceError + '_ {
    move |source| SourceError::Gcs {
        url: url.to_string(),
        source: Box::new(source),
    }
}

/// The unpacked `disk.raw` of `gs://bucket/object`, from the cache when it
/// is there and still matches.
pub(super) async fn fetch(
    bucket: &str,
    object: &str,
    digest: &Digest,
    cache: &Cache,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    let url = format!("gs://{bucket}/{object}");
    let key = entry_key_text(&url, digest);
    let tarball = cache.entry(Kind::Source, &key);
    let disk = cache.entry(Kind::Source, &format!("{key}-disk.raw"));
    let lock = {
        let paths = tarball.clone();
        blocking(move || Ok(paths.lock()?)).await?
    };
    let result = fetch_locked(bucket, object, &url, digest, &tarball, &disk, events).await;
    lock.release();
    result
}

async fn fetch_locked(
    bucket: &str,
    object: &str,
    url: &str,
    digest: &Digest,
    tarball: &EntryPaths,
    disk: &EntryPaths,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    let cached = tarball.data.exists() && {
        let (checked, expected, what) = (tarball.clone(), digest.clone(), url.to_string());
        blocking(move || Ok(check_entry(&checked, &expected, &what)))
            .await?
            .is_ok()
    };
    if cached && disk.data.exists() {
        tarball.touch();
        disk.touch();
        events.say(&format!("Using the cached {url}"));
        return Ok(disk.data.clone());
    }
    if !cached {
        download(bucket, object, url, digest, tarball, events).await?;
    }
    events.say(&format!("Unpacking disk.raw from {url}"));
    let (from, to) = (tarball.data.clone(), disk.part.clone());
    let unpacked = blocking(move || {
        extract_disk(&from, &to).map_err(|e| err_owned(&from, e.into()))?;
        Ok(())
    })
    .await;
    if let Err(e) = unpacked {
        let _ = std::fs::remove_file(&disk.part);
        return Err(relabel(e, url));
    }
    disk.write_meta(&Meta {
        origin: format!("{url} (disk.raw)"),
        digest: "none:".into(),
        stored: now(),
    })?;
    std::fs::rename(&disk.part, &disk.data).map_err(FileError::write(&disk.data))?;
    events.say(&format!("{url} => {}", disk.data.display()));
    Ok(disk.data.clone())
}

/// The error of a blocking step, named after the tarball until
/// [`relabel`] names it after the URL.
fn err_owned(tarball: &Path, source: GcsError) -> SourceError {
    SourceError::Gcs {
        url: tarball.display().to_string(),
        source: Box::new(source),
    }
}

fn relabel(e: SourceError, url: &str) -> SourceError {
    match e {
        SourceError::Gcs { source, .. } => SourceError::Gcs {
            url: url.to_string(),
            source,
        },
        other => other,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Cloud Storage client: the emulator's (no credentials) when
/// `STORAGE_EMULATOR_HOST` is set, else Application Default Credentials.
fn client() -> Result<StorageClient, GcsError> {
    let (base, emulated) = StorageClient::endpoint_from_env();
    let tokens = if emulated {
        TokenSource::none()
    } else {
        let (credentials, source) = Credentials::discover(None)?;
        tracing::info!(%source, "Google Cloud credentials");
        TokenSource::new(credentials)?
    };
    Ok(StorageClient::new(&base, Arc::new(tokens))?)
}

async fn download(
    bucket: &str,
    object: &str,
    url: &str,
    digest: &Digest,
    tarball: &EntryPaths,
    events: &dyn Events,
) -> Result<(), SourceError> {
    let client = client().map_err(err(url))?;
    events.say(&format!("Downloading {url}"));
    let mut out = tokio::fs::File::create(&tarball.part)
        .await
        .map_err(|e| err(url)(GcsError::Write(e)))?;
    let downloaded = client.download_to(bucket, object, &mut out).await;
    drop(out);
    if let Err(e) = downloaded {
        let _ = std::fs::remove_file(&tarball.part);
        return Err(err(url)(e.into()));
    }
    let (part, expected, what) = (tarball.part.clone(), digest.clone(), url.to_string());
    let recorded = blocking(move || {
        verify(&part, &expected, &what)?;
        let hex = super::hash_file(&part, "sha256").map_err(FileError::read(&part))?;
        Ok(format!("sha256:{hex}"))
    })
    .await;
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tarball.part);
            return Err(e);
        }
    };
    tarball.write_meta(&Meta {
        origin: url.to_string(),
        digest: match digest.expected() {
            Some((algorithm, hex)) => format!("{algorithm}:{}", hex.to_ascii_lowercase()),
            None => recorded,
        },
        stored: now(),
    })?;
    std::fs::rename(&tarball.part, &tarball.data).map_err(FileError::write(&tarball.data))?;
    Ok(())
}
