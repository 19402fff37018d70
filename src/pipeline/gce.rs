//! Publishing to Compute Engine: the disk is packaged as GCE's tarball and
//! streamed straight into a Cloud Storage resumable upload (no local
//! `disk.raw` or `.tar.gz`), then registered as an image; the uploaded
//! object is deleted afterwards unless `skip_clean`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::BuildContext;
use super::report::{Artifact, ProgressMeter, Reporter};
use crate::export::{FormatPolicy, ImageFormat};
use crate::gcp::{
    ComputeClient, ComputeError, Credentials, ImageRequest, StorageClient, StorageError,
    TokenSource, UploadOptions, validate_image_request,
};
use crate::plan::{CompressionLevel, GceImportConfig};

/// How much packaged data may wait for the upload.
const PIPE_BYTES: usize = 16 << 20;

/// A failure to publish a disk as a Compute Engine image.
#[derive(Debug, thiserror::Error)]
pub enum GceError {
    /// The image request is not one GCE would take.
    #[error(transparent)]
    Invalid(#[from] crate::gcp::ValidationError),
    /// No usable Google Cloud credentials.
    #[error("Google Cloud credentials")]
    Auth(#[from] crate::gcp::AuthError),
    /// The Cloud Storage upload failed.
    #[error("Cloud Storage upload of gs://{bucket}/{object}")]
    Upload {
        /// The bucket.
        bucket: String,
        /// The object.
        object: String,
        /// What went wrong.
        #[source]
        source: Box<StorageError>,
    },
    /// Packaging the disk for the upload failed.
    #[error("packaging {} for the upload", disk.display())]
    Package {
        /// The disk.
        disk: PathBuf,
        /// What went wrong.
        #[source]
        source: crate::export::ExportError,
    },
    /// A Compute Engine request failed.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// The packaging thread panicked or was lost.
    #[error("the packaging thread failed: {0}")]
    Thread(String),
    /// Cancelled (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

/// A disk to publish as a Compute Engine image: what `kiln export
/// --bucket` and the `googlecompute-import` post-processor both ask for.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The disk, qcow2 or raw.
    pub disk: PathBuf,
    /// What the disk's format may be taken to be: never probed.
    pub format: FormatPolicy,
    /// The image, and the Cloud Storage object that carries the disk.
    pub image: ImageRequest,
    /// A credentials file; `None`: Application Default Credentials.
    pub account_file: Option<PathBuf>,
    /// A service account to act as: its tokens come from IAM
    /// (`generateAccessToken`) with the credentials found.
    pub impersonate_service_account: Option<String>,
    /// gzip level of the streamed tarball.
    pub level: CompressionLevel,
    /// Keep the uploaded object after the import.
    pub skip_clean: bool,
    /// How long to wait for each image operation.
    pub create_timeout: Duration,
    /// Delete an existing image of the same name first.
    pub force: bool,
    /// The Compute API endpoint; `None` reads `KILN_COMPUTE_ENDPOINT`.
    pub compute_endpoint: Option<String>,
}

impl PublishRequest {
    /// What a `googlecompute-import` post-processor asks for `disk`.
    fn from_import(config: &GceImportConfig, disk: PathBuf, format: ImageFormat) -> Self {
        PublishRequest {
            disk,
            format: FormatPolicy::Known(format),
            image: ImageRequest::from(config),
            account_file: config.account_file.clone(),
            impersonate_service_account: config.impersonate_service_account.clone(),
            level: config.compression_level,
            skip_clean: config.skip_clean,
            create_timeout: config.image_create_timeout,
            force: false,
            compute_endpoint: None,
        }
    }

    /// Names, labels and the disk checked, before anything is sent: a
    /// request GCE would refuse, or a disk kiln may not read as it stands,
    /// costs no upload.
    pub fn check(&self) -> Result<(), GceError> {
        validate_image_request(&self.image)?;
        crate::export::check_image(&self.disk, self.format).map_err(|source| {
            GceError::Package {
                disk: self.disk.clone(),
                source: source.into(),
            }
        })?;
        Ok(())
    }
}

/// The image a [`PublishRequest`] made, as Compute Engine describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublishedImage {
    /// The project the image is in.
    pub project: String,
    /// The image's name.
    pub name: String,
    /// GCE's numeric id (a string of digits).
    pub id: String,
    /// The image's full URL.
    pub self_link: String,
    /// The image family, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Uploads the disk and creates the image, reporting as `export`.
pub async fn publish_disk(
    request: &PublishRequest,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> Result<PublishedImage, GceError> {
    let ctx = BuildContext::standalone("export", reporter, cancel.clone());
    // Dropped on a cancel: the packaging stops, the object's guard deletes
    // what was uploaded.
    tokio::select! {
        result = publish(&ctx, request) => result,
        () = cancel.cancelled() => Err(GceError::Cancelled),
    }
}

/// [`publish_disk`] for a stage that has its build's context.
pub(super) async fn publish(
    ctx: &BuildContext,
    request: &PublishRequest,
) -> Result<PublishedImage, GceError> {
    let publisher = Publisher::new(request.clone())?;
    // Known before a byte is uploaded: an image that is already there.
    publisher.replace_existing(ctx).await?;
    let uploaded = publisher.upload(ctx).await;
    // The object may exist from here on; a cancel during the image's
    // creation must not leave it behind (unless skip_clean keeps it).
    let object_guard = publisher.object_guard();
    let result = match uploaded {
        Ok(()) => publisher.create(ctx).await,
        Err(err) => Err(err),
    };
    // The object only carried the disk to GCE: it goes whether the image
    // was made or not.
    if let Some(guard) = object_guard {
        guard.disarm();
    }
    publisher.remove_object(ctx).await;
    result
}

/// One image's way to Compute Engine, in the steps a build may take apart:
/// the upload can run while the disk is still being tested, the image is
/// made only once it passed.
pub(super) struct Publisher {
    request: PublishRequest,
    storage: StorageClient,
    compute: ComputeClient,
}

impl Publisher {
    /// Checks the request and finds the credentials; sends nothing.
    pub fn new(request: PublishRequest) -> Result<Publisher, GceError> {
        request.check()?;
        let (storage_base, storage_emulated) = StorageClient::endpoint_from_env();
        let compute_endpoint = request
            .compute_endpoint
            .clone()
            .or_else(|| std::env::var("KILN_COMPUTE_ENDPOINT").ok())
            .filter(|e| !e.is_empty());
        // Local stand-ins take no credentials; anything real does.
        let tokens = if storage_emulated
            && compute_endpoint.is_some()
            && request.account_file.is_none()
            && request.impersonate_service_account.is_none()
        {
            Arc::new(TokenSource::none())
        } else {
            let (credentials, source) = Credentials::discover(request.account_file.as_deref())?;
            tracing::info!(%source, "Google Cloud credentials");
            Arc::new(match &request.impersonate_service_account {
                Some(account) => TokenSource::impersonating(credentials, account)?,
                None => TokenSource::new(credentials)?,
            })
        };
        let compute = ComputeClient::new(compute_endpoint.as_deref(), tokens.clone())?;
        let storage = StorageClient::new(&storage_base, tokens)
            .map_err(|source| upload_error(&request.image, source))?;
        Ok(Publisher {
            request,
            storage,
            compute,
        })
    }

    /// Fails when the image exists and the request may not replace it;
    /// deletes nothing (a build whose tests fail must leave the old image).
    pub async fn refuse_existing(&self) -> Result<(), GceError> {
        let image = &self.request.image;
        if !self.request.force
            && self
                .compute
                .image_exists(&image.project, &image.name)
                .await?
        {
            return Err(ComputeError::ImageExists {
                project: image.project.clone(),
                name: image.name.clone(),
            }
            .into());
        }
        Ok(())
    }

    /// An existing image of the requested name fails the request, or with
    /// `force` is deleted.
    pub async fn replace_existing(&self, ctx: &BuildContext) -> Result<(), GceError> {
        replace_existing(ctx, &self.compute, &self.request).await
    }

    /// Packages the disk straight into the staging object.
    pub async fn upload(&self, ctx: &BuildContext) -> Result<(), GceError> {
        let image = &self.request.image;
        ctx.say(&format!(
            "Uploading {} to gs://{}/{} as a GCE tarball (level {})...",
            self.request.disk.display(),
            image.bucket,
            image.object,
            self.request.level
        ));
        upload(ctx, &self.storage, &self.request).await
    }

    /// Deletes the staging object when dropped armed (`None` with
    /// `skip_clean`): a cancelled build leaves nothing in the bucket.
    pub fn object_guard(&self) -> Option<crate::gcp::DeleteOnDrop> {
        let image = &self.request.image;
        (!self.request.skip_clean)
            .then(|| self.storage.delete_on_drop(&image.bucket, &image.object))
    }

    /// Makes the image from the uploaded object.
    pub async fn create(&self, ctx: &BuildContext) -> Result<PublishedImage, GceError> {
        let published = create(ctx, &self.compute, &self.request).await?;
        ctx.say(&format!("Image created: {}", published.self_link));
        Ok(published)
    }

    /// Deletes the staging object unless `skip_clean`.
    pub async fn remove_object(&self, ctx: &BuildContext) {
        remove_object(ctx, &self.storage, &self.request).await;
    }

    /// Deletes whatever was uploaded of an image that will not be made,
    /// `skip_clean` or not: a disk that failed its tests must not stay in
    /// the bucket. Quiet when nothing was uploaded.
    pub async fn discard(&self, ctx: &BuildContext) {
        let image = &self.request.image;
        match self
            .storage
            .delete_object(&image.bucket, &image.object)
            .await
        {
            Ok(true) => ctx.say(&format!(
                "Deleted gs://{}/{} (not published)",
                image.bucket, image.object
            )),
            Ok(false) => {}
            Err(err) => ctx.reporter.error(
                &ctx.name,
                &format!(
                    "could not delete gs://{}/{}: {}",
                    image.bucket,
                    image.object,
                    crate::error::error_chain(&err)
                ),
            ),
        }
    }
}

/// An image of the requested name already there fails the request, or
/// with `force` is deleted first.
async fn replace_existing(
    ctx: &BuildContext,
    compute: &ComputeClient,
    request: &PublishRequest,
) -> Result<(), GceError> {
    let image = &request.image;
    if compute.image_exists(&image.project, &image.name).await? {
        if !request.force {
            return Err(ComputeError::ImageExists {
                project: image.project.clone(),
                name: image.name.clone(),
            }
            .into());
        }
        ctx.say(&format!(
            "Deleting the existing image {} (-force)...",
            image.name
        ));
        compute
            .delete_image(
                &image.project,
                &image.name,
                request.create_timeout,
                &ctx.cancel,
            )
            .await?;
    }
    Ok(())
}

/// Deletes the uploaded object unless `skip_clean`; a failed delete is
/// reported, not returned: the image's outcome is the request's.
async fn remove_object(ctx: &BuildContext, storage: &StorageClient, request: &PublishRequest) {
    let image = &request.image;
    if request.skip_clean {
        ctx.say(&format!(
            "skip_clean: keeping gs://{}/{}",
            image.bucket, image.object
        ));
    } else {
        match storage.delete_object(&image.bucket, &image.object).await {
            Ok(_) => ctx.say(&format!("Deleted gs://{}/{}", image.bucket, image.object)),
            Err(err) => ctx.reporter.error(
                &ctx.name,
                &format!(
                    "could not delete gs://{}/{}: {}",
                    image.bucket,
                    image.object,
                    crate::error::error_chain(&err)
                ),
            ),
        }
    }
}

/// Inserts the image, waits for it, and reads back what GCE made of it.
async fn create(
    ctx: &BuildContext,
    compute: &ComputeClient,
    request: &PublishRequest,
) -> Result<PublishedImage, GceError> {
    let image = &request.image;
    ctx.say(&format!(
        "Creating image {} in project {}...",
        image.name, image.project
    ));
    compute
        .create_image(image, request.create_timeout, &ctx.cancel)
        .await?;
    let made = compute.get_image(&image.project, &image.name).await?;
    Ok(PublishedImage {
        project: image.project.clone(),
        name: made.name,
        id: made.id,
        self_link: made.self_link,
        family: made.family,
    })
}

fn upload_error(image: &ImageRequest, source: StorageError) -> GceError {
    GceError::Upload {
        bucket: image.bucket.clone(),
        object: image.object.clone(),
        source: Box::new(source),
    }
}

/// Packages on a blocking thread into a pipe that the upload reads from.
async fn upload(
    ctx: &BuildContext,
    storage: &StorageClient,
    request: &PublishRequest,
) -> Result<(), GceError> {
    let (disk, format, image) = (request.disk.as_path(), request.format, &request.image);
    let started = Instant::now();
    // Stops the packaging thread when the build or export is cancelled, or
    // when this future is dropped; kiln waits for it to clean up.
    let cancel = ctx.cancel.child_token();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let pending = crate::cleanup::Pending::start();
    // A duplex pipe, not a simplex one: when the upload fails or is dropped,
    // its end goes and the packager's next write fails instead of waiting
    // forever on a full pipe that nobody reads.
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let finished = Arc::new(AtomicBool::new(false));
    // How far the packaging is through the disk's data: the upload's ETA.
    let packaged_bytes = Arc::new(AtomicU64::new(0));
    let data_bytes = Arc::new(AtomicU64::new(0));
    let packager = {
        let finished = finished.clone();
        let (packaged_bytes, data_bytes) = (packaged_bytes.clone(), data_bytes.clone());
        let disk = disk.to_path_buf();
        let level = request.level.get();
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
            // The end of the stream, said explicitly.
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
            &image.bucket,
            &image.object,
            guarded,
            &UploadOptions::default(),
            &mut progress,
        )
        .await;
    ctx.progress(None);
    let packaged = packager
        .await
        .map_err(|err| GceError::Thread(err.to_string()))?;
    // A packaging failure explains an upload failure, so it comes first;
    // unless the packaging only stopped because the upload went away.
    if let (Err(_), Err(err)) = (&uploaded, &packaged)
        && closed_pipe(err)
    {
        return uploaded
            .map(drop)
            .map_err(|source| upload_error(image, source));
    }
    let summary = packaged.map_err(|source| GceError::Package {
        disk: disk.to_path_buf(),
        source,
    })?;
    let object = uploaded.map_err(|source| upload_error(image, source))?;
    ctx.say(&format!(
        "Uploaded {:.0} MiB ({} MiB of disk) in {:.1}s; crc32c checked",
        object.size_bytes().unwrap_or(summary.compressed_bytes) as f64 / f64::from(1 << 20),
        summary.raw_size >> 20,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Whether `err` comes from writing into a pipe whose reader is gone.
fn closed_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = err.source();
    }
    false
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

/// What a `googlecompute-import` post-processor asks for the disk of
/// `input`.
pub(super) fn import_publisher(
    config: &GceImportConfig,
    input: &Artifact,
    format: ImageFormat,
) -> Result<Publisher, super::BuildError> {
    let disk = super::post::disk_of("googlecompute-import", input)?;
    Ok(Publisher::new(PublishRequest::from_import(
        config, disk, format,
    ))?)
}

/// The `googlecompute-import` post-processor whose upload already ran
/// (beside the smoke tests): makes the image and removes the object.
pub(super) async fn import_uploaded(
    ctx: &BuildContext,
    config: &GceImportConfig,
    input: &Artifact,
    publisher: &Publisher,
) -> Result<Artifact, super::BuildError> {
    let created = match publisher.replace_existing(ctx).await {
        Ok(()) => publisher.create(ctx).await,
        Err(err) => Err(err),
    };
    publisher.remove_object(ctx).await;
    let image = created?;
    Ok(import_artifact(config, input, image))
}

fn import_artifact(config: &GceImportConfig, input: &Artifact, image: PublishedImage) -> Artifact {
    Artifact {
        build_name: input.build_name.clone(),
        builder_type: input.builder_type.clone(),
        builder_id: "packer.post-processor.googlecompute-import".to_string(),
        id: None,
        description: format!("A disk image was created: {}", config.image_name),
        files: vec![PathBuf::from(image.self_link)],
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
    let image = publish(ctx, &PublishRequest::from_import(config, disk, format)).await?;
    Ok(import_artifact(config, input, image))
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
