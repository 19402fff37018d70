//! Publishing to Compute Engine: the disk is packaged as GCE's tarball and
//! streamed straight into a Cloud Storage resumable upload (no local
//! `disk.raw` or `.tar.gz`), then registered as an image; the uploaded
//! object is deleted afterwards unless `skip_clean`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, ReadBuf};

use super::BuildContext;
use super::report::{Artifact, ProgressMeter};
use crate::export::{FormatPolicy, ImageFormat};
use crate::gcp::{
    ComputeClient, ComputeError, Credentials, ImageRequest, StorageClient, StorageError,
    TokenSource, UploadOptions, validate_image_request,
};
use crate::plan::GceImportConfig;

/// How much packaged data may wait for the upload.
const PIPE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GceError {
    #[error(transparent)]
    Invalid(#[from] crate::gcp::ValidationError),
    #[error("Google Cloud credentials")]
    Auth(#[from] crate::gcp::AuthError),
    #[error("Cloud Storage upload of gs://{bucket}/{object}")]
    Upload {
        bucket: String,
        object: String,
        #[source]
        source: StorageError,
    },
    #[error("packaging {} for the upload", disk.display())]
    Package {
        disk: PathBuf,
        #[source]
        source: crate::export::ExportError,
    },
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error("the packaging thread failed: {0}")]
    Thread(String),
}

/// What `kiln export` and the post-processor ask for.
pub struct Publish<'a> {
    pub config: &'a GceImportConfig,
    /// Delete an existing image of the same name first.
    pub force: bool,
    /// `--compute-endpoint`; `None` reads `KILN_COMPUTE_ENDPOINT`.
    pub compute_endpoint: Option<&'a str>,
    /// What the disk's format may be taken to be.
    pub format: FormatPolicy,
}

/// The image request a config describes; checked before anything is sent.
pub fn image_request(config: &GceImportConfig) -> ImageRequest {
    let mut request = ImageRequest::new(
        &config.project_id,
        &config.image_name,
        &config.bucket,
        &config.gcs_object_name,
    );
    request.family = config.image_family.clone();
    request.description = config.image_description.clone();
    request.labels = config.image_labels.clone();
    request.guest_os_features = config.image_guest_os_features.clone();
    request.storage_locations = config.image_storage_locations.clone();
    request.architecture = config.image_architecture.clone();
    request
}

/// Uploads `disk` and creates the image; returns the image's URL.
pub async fn publish(
    ctx: &BuildContext,
    disk: &Path,
    publish: &Publish<'_>,
) -> Result<String, GceError> {
    let config = publish.config;
    let request = image_request(config);
    validate_image_request(&request)?;
    // Not a disk, or not one kiln may read as it stands: said before any
    // request is sent.
    crate::export::check_image(disk, publish.format).map_err(|source| GceError::Package {
        disk: disk.to_path_buf(),
        source: source.into(),
    })?;

    let (storage_base, storage_emulated) = StorageClient::endpoint_from_env();
    let compute_endpoint = publish
        .compute_endpoint
        .map(str::to_string)
        .or_else(|| std::env::var("KILN_COMPUTE_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    // Local stand-ins take no credentials; anything real does.
    let tokens = if storage_emulated && compute_endpoint.is_some() && config.account_file.is_none()
    {
        Arc::new(TokenSource::none()?)
    } else {
        let (credentials, source) = Credentials::discover(config.account_file.as_deref())?;
        tracing::info!(?source, "Google Cloud credentials");
        Arc::new(TokenSource::new(credentials)?)
    };
    let compute = ComputeClient::new(compute_endpoint.as_deref(), tokens.clone())?;
    let storage =
        StorageClient::new(&storage_base, tokens).map_err(|source| upload_error(config, source))?;

    // Known before a byte is uploaded: an image that is already there.
    if compute
        .image_exists(&config.project_id, &config.image_name)
        .await?
    {
        if !publish.force {
            return Err(ComputeError::ImageExists {
                project: config.project_id.clone(),
                name: config.image_name.clone(),
            }
            .into());
        }
        ctx.say(&format!(
            "Deleting the existing image {} (-force)...",
            config.image_name
        ));
        compute
            .delete_image(
                &config.project_id,
                &config.image_name,
                config.image_create_timeout,
                &ctx.cancel,
            )
            .await?;
    }

    ctx.say(&format!(
        "Uploading {} to gs://{}/{} as a GCE tarball (level {})...",
        disk.display(),
        config.bucket,
        config.gcs_object_name,
        config.compression_level
    ));
    let uploaded = upload(ctx, &storage, disk, config, publish.format).await;
    // The object may exist from here on; a cancel during the image's
    // creation must not leave it behind (unless skip_clean keeps it).
    let object_guard = (!config.skip_clean)
        .then(|| storage.delete_on_drop(&config.bucket, &config.gcs_object_name));
    let result = match uploaded {
        Ok(()) => {
            ctx.say(&format!(
                "Creating image {} in project {}...",
                config.image_name, config.project_id
            ));
            compute
                .create_image(&request, config.image_create_timeout, &ctx.cancel)
                .await
                .map(|op| {
                    if op.target_link.is_empty() {
                        format!(
                            "projects/{}/global/images/{}",
                            config.project_id, config.image_name
                        )
                    } else {
                        op.target_link
                    }
                })
                .map_err(GceError::from)
        }
        Err(err) => Err(err),
    };
    // The object only carried the disk to GCE: it goes whether the image
    // was made or not.
    if let Some(guard) = object_guard {
        guard.disarm();
    }
    if config.skip_clean {
        ctx.say(&format!(
            "skip_clean: keeping gs://{}/{}",
            config.bucket, config.gcs_object_name
        ));
    } else {
        match storage
            .delete_object(&config.bucket, &config.gcs_object_name)
            .await
        {
            Ok(_) => ctx.say(&format!(
                "Deleted gs://{}/{}",
                config.bucket, config.gcs_object_name
            )),
            Err(err) => ctx.reporter.error(
                &ctx.name,
                &format!(
                    "could not delete gs://{}/{}: {}",
                    config.bucket,
                    config.gcs_object_name,
                    crate::error::error_chain(&err)
                ),
            ),
        }
    }
    let image = result?;
    ctx.say(&format!("Image created: {image}"));
    Ok(image)
}

fn upload_error(config: &GceImportConfig, source: StorageError) -> GceError {
    GceError::Upload {
        bucket: config.bucket.clone(),
        object: config.gcs_object_name.clone(),
        source,
    }
}

/// Packages on a blocking thread into a pipe that the upload reads from.
async fn upload(
    ctx: &BuildContext,
    storage: &StorageClient,
    disk: &Path,
    config: &GceImportConfig,
    format: FormatPolicy,
) -> Result<(), GceError> {
    let started = Instant::now();
    // Stops the packaging thread when the build or export is cancelled, or
    // when this future is dropped; kiln waits for it to clean up.
    let cancel = ctx.cancel.child_token();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let pending = crate::cleanup::Pending::start();
    let (reader, writer) = tokio::io::simplex(PIPE_BYTES);
    let finished = Arc::new(AtomicBool::new(false));
    // How far the packaging is through the disk's data: the upload's ETA.
    let packaged_bytes = Arc::new(AtomicU64::new(0));
    let data_bytes = Arc::new(AtomicU64::new(0));
    let packager = {
        let finished = finished.clone();
        let (packaged_bytes, data_bytes) = (packaged_bytes.clone(), data_bytes.clone());
        let disk = disk.to_path_buf();
        let level = config.compression_level.get();
        let mut bridge = tokio_util::io::SyncIoBridge::new(writer);
        tokio::task::spawn_blocking(move || {
            let _pending = pending;
            let progress = |done: u64, total: u64| {
                packaged_bytes.store(done, Ordering::Relaxed);
                data_bytes.store(total, Ordering::Relaxed);
            };
            let options = crate::export::PackageOptions {
                level,
                progress: Some(&progress),
                format,
                cancel: Some(&cancel),
                ..Default::default()
            };
            let packaged = crate::export::package(&disk, &mut bridge, &options);
            if packaged.is_ok() {
                // Only now may the end of the stream mean the end of the data.
                finished.store(true, Ordering::SeqCst);
            }
            // The halves of a simplex pipe share one buffer: dropping the
            // writer does not end the stream, shutting it down does.
            let closed = bridge.shutdown();
            let summary = packaged?;
            closed.map_err(|source| crate::export::ExportError::Write {
                disk: disk.clone(),
                source,
            })?;
            Ok::<_, crate::export::ExportError>(summary)
        })
    };
    let meter = ProgressMeter::new("Uploading");
    let mut progress = |p: crate::gcp::UploadProgress| {
        let (done, total) = (
            packaged_bytes.load(Ordering::Relaxed),
            data_bytes.load(Ordering::Relaxed),
        );
        ctx.progress(Some(&meter.progress(p.bytes_sent, done, total)));
    };
    let guarded = UntilFinished {
        inner: reader,
        finished,
    };
    let uploaded = storage
        .upload(
            &config.bucket,
            &config.gcs_object_name,
            guarded,
            &UploadOptions::default(),
            &mut progress,
        )
        .await;
    ctx.progress(None);
    let packaged = packager
        .await
        .map_err(|err| GceError::Thread(err.to_string()))?;
    // A packaging failure explains an upload failure, so it comes first.
    let summary = packaged.map_err(|source| GceError::Package {
        disk: disk.to_path_buf(),
        source,
    })?;
    let object = uploaded.map_err(|source| upload_error(config, source))?;
    ctx.say(&format!(
        "Uploaded {:.0} MiB ({} MiB of disk) in {:.1}s; crc32c checked",
        object.size_bytes().unwrap_or(summary.compressed_bytes) as f64 / f64::from(1 << 20),
        summary.raw_size >> 20,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The pipe's reading end, which turns an end of stream into an error
/// unless the packager finished: a failed packaging must never look like a
/// complete (truncated) tarball to the upload, which would then finalize it.
struct UntilFinished<R> {
    inner: R,
    finished: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilFinished<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && buf.filled().len() == before
            && buf.remaining() > 0
            && !self.finished.load(Ordering::SeqCst)
        {
            return Poll::Ready(Err(std::io::Error::other(
                "the disk's packaging stopped before the end",
            )));
        }
        polled
    }
}

/// The `googlecompute-import` post-processor.
pub async fn import(
    ctx: &BuildContext,
    config: &GceImportConfig,
    input: &Artifact,
    format: ImageFormat,
) -> Result<Artifact, super::BuildError> {
    let disk = super::post::disk_of("googlecompute-import", input)?;
    let image = publish(
        ctx,
        &disk,
        &Publish {
            config,
            force: false,
            compute_endpoint: None,
            format: FormatPolicy::Known(format),
        },
    )
    .await?;
    Ok(Artifact {
        build_name: input.build_name.clone(),
        builder_type: input.builder_type.clone(),
        builder_id: "packer.post-processor.googlecompute-import".to_string(),
        description: format!("A disk image was created: {}", config.image_name),
        files: vec![PathBuf::from(image)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_unfinished_stream_ends_in_an_error_not_an_eof() {
        let (reader, mut writer) = tokio::io::simplex(64);
        let finished = Arc::new(AtomicBool::new(false));
        let mut guarded = UntilFinished {
            inner: reader,
            finished: finished.clone(),
        };
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"partial")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .unwrap();
        let mut out = Vec::new();
        let err = guarded.read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("stopped before the end"), "{err}");
        assert_eq!(out, b"partial");
    }

    #[tokio::test]
    async fn a_finished_stream_ends_normally() {
        let (reader, mut writer) = tokio::io::simplex(64);
        let finished = Arc::new(AtomicBool::new(false));
        let mut guarded = UntilFinished {
            inner: reader,
            finished: finished.clone(),
        };
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"all of it")
            .await
            .unwrap();
        finished.store(true, Ordering::SeqCst);
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .unwrap();
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"all of it");
    }
}
