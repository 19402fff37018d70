//! Compute Engine images: insert from a Cloud Storage tarball, delete, and
//! wait for the global operations those start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::TokenSource;
use super::http::{self, HttpError, read_json, status_error};
use super::retry::RetryPolicy;
use super::storage;
use super::validate::{ValidationError, validate_image_request};

/// The real endpoint.
const COMPUTE_ENDPOINT: &str = "https://compute.googleapis.com/compute/v1";
/// How long an image insert may take before kiln stops waiting.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a Compute Engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The request failed on its way or was refused.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The image request breaks GCE's rules.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The image exists and may not be replaced.
    #[error("image {name:?} already exists in project {project}; use -force to replace it")]
    ImageExists {
        /// The project.
        project: String,
        /// The image.
        name: String,
    },
    /// There is no such image.
    #[error("image {name:?} not found in project {project}")]
    ImageNotFound {
        /// The project.
        project: String,
        /// The image.
        name: String,
    },
    /// The operation finished with errors.
    #[error("operation {operation} ({kind} of {target}) failed: {}", format_errors(.errors))]
    OperationFailed {
        /// The operation's name.
        operation: String,
        /// `insert`, `delete`, ...
        kind: String,
        /// The resource it worked on.
        target: String,
        /// What GCE reported.
        errors: Vec<OperationError>,
    },
    /// kiln stopped waiting; the operation goes on.
    #[error("gave up waiting for operation {operation} after {waited:?}; it may still finish")]
    Timeout {
        /// The operation's name.
        operation: String,
        /// How long kiln waited.
        waited: Duration,
    },
    /// Cancelled while waiting; the operation goes on.
    #[error("stopped waiting for operation {operation}: cancelled; it may still finish")]
    Cancelled {
        /// The operation's name.
        operation: String,
    },
}

fn format_errors(errors: &[OperationError]) -> String {
    errors
        .iter()
        .map(|e| match &e.location {
            Some(loc) => format!("{}: {} (at {loc})", e.code, e.message),
            None => format!("{}: {}", e.code, e.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An image to create from a `disk.raw` tarball in Cloud Storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The project the image goes into.
    pub project: String,
    /// The image name.
    pub name: String,
    /// The image family, if any.
    pub family: Option<String>,
    /// A free-text description.
    pub description: Option<String>,
    /// Labels (keys and values as GCE allows them).
    pub labels: BTreeMap<String, String>,
    /// e.g. `UEFI_COMPATIBLE`, `VIRTIO_SCSI_MULTIQUEUE`, `GVNIC`.
    pub guest_os_features: Vec<String>,
    /// License URLs, or `projects/<project>/global/licenses/<name>`.
    pub licenses: Vec<String>,
    /// Where the image is stored (`us`, `eu`, ...); GCE picks when empty.
    pub storage_locations: Vec<String>,
    /// `X86_64` or `ARM64`.
    pub architecture: Option<String>,
    /// The bucket holding the tarball.
    pub bucket: String,
    /// The tarball's object name.
    pub object: String,
}

impl ImageRequest {
    /// A request with only the required fields set.
    pub fn new(project: &str, name: &str, bucket: &str, object: &str) -> ImageRequest {
        ImageRequest {
            project: project.to_string(),
            name: name.to_string(),
            family: None,
            description: None,
            labels: BTreeMap::new(),
            guest_os_features: Vec::new(),
            licenses: Vec::new(),
            storage_locations: Vec::new(),
            architecture: None,
            bucket: bucket.to_string(),
            object: object.to_string(),
        }
    }

    /// The `images.insert` request body.
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": self.name,
            "rawDisk": { "source": storage::public_url(&self.bucket, &self.object) },
        });
        let map = body.as_object_mut();
        if let Some(map) = map {
            if let Some(family) = &self.family {
                map.insert("family".into(), family.clone().into());
            }
            if let Some(description) = &self.description {
                map.insert("description".into(), description.clone().into());
            }
            if !self.labels.is_empty() {
                map.insert("labels".into(), serde_json::json!(self.labels));
            }
            if !self.guest_os_features.is_empty() {
                let features: Vec<_> = self
                    .guest_os_features
                    .iter()
                    .map(|f| serde_json::json!({ "type": f }))
                    .collect();
                map.insert("guestOsFeatures".into(), features.into());
            }
            if !self.licenses.is_empty() {
                map.insert("licenses".into(), serde_json::json!(self.licenses));
            }
            if !self.storage_locations.is_empty() {
                map.insert(
                    "storageLocations".into(),
                    serde_json::json!(self.storage_locations),
                );
            }
            if let Some(arch) = &self.architecture {
                map.insert("architecture".into(), arch.clone().into());
            }
        }
        body
    }
}

/// The request a `googlecompute-import` post-processor describes: the one
/// place its settings become an image request.
impl From<&crate::plan::GceImportConfig> for ImageRequest {
    fn from(config: &crate::plan::GceImportConfig) -> ImageRequest {
        ImageRequest {
            project: config.project_id.clone(),
            name: config.image_name.clone(),
            family: config.image_family.clone(),
            description: config.image_description.clone(),
            labels: config.image_labels.clone(),
            guest_os_features: config.image_guest_os_features.clone(),
            // Packer's googlecompute-import takes no licenses.
            licenses: Vec::new(),
            storage_locations: config.image_storage_locations.clone(),
            architecture: config.image_architecture.clone(),
            bucket: config.bucket.clone(),
            object: config.gcs_object_name.clone(),
        }
    }
}

/// An image as `images.get` returns it, as much of it as kiln reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The image's name.
    pub name: String,
    /// GCE's numeric id, sent as a string of digits (a uint64).
    pub id: String,
    /// The image's full URL, as other API calls take it.
    pub self_link: String,
    /// The image family, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// `PENDING`, `READY` or `FAILED`.
    #[serde(default)]
    pub status: String,
    /// The size of a disk made from it, in GB (a string, as GCE sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// The image's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of an operation's `error.errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    #[serde(default)]
    /// GCE's error code (`INVALID_TARBALL`, ...).
    pub code: String,
    #[serde(default)]
    /// What went wrong, in words.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The field or resource concerned, when GCE names one.
    pub location: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
/// The `error` of an operation.
pub struct OperationErrors {
    #[serde(default)]
    /// Every error reported.
    pub errors: Vec<OperationError>,
}

/// A global operation, as much of it as kiln reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The operation's name, to poll it by.
    pub name: String,
    /// `PENDING`, `RUNNING` or `DONE`.
    pub status: String,
    #[serde(default)]
    /// `insert`, `delete`, ...
    pub operation_type: String,
    #[serde(default)]
    /// The resource the operation works on.
    pub target_link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The operation's own URL.
    pub self_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Percent done, when GCE reports it.
    pub progress: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Set when the operation failed.
    pub error: Option<OperationErrors>,
}

impl Operation {
    /// Whether the operation finished (with or without errors).
    pub fn is_done(&self) -> bool {
        self.status == "DONE"
    }

    /// The errors of a finished operation, if it failed.
    pub(crate) fn errors(&self) -> &[OperationError] {
        self.error.as_ref().map_or(&[], |e| &e.errors)
    }
}

/// A Compute Engine API client.
#[derive(Debug, Clone)]
pub struct ComputeClient {
    http: reqwest::Client,
    endpoint: String,
    tokens: Arc<TokenSource>,
    retry: RetryPolicy,
    poll_interval: Duration,
}

impl ComputeClient {
    /// A client for `endpoint`: the flag's value, else `KILN_COMPUTE_ENDPOINT`,
    /// else the real API.
    pub fn new(
        endpoint: Option<&str>,
        tokens: Arc<TokenSource>,
    ) -> Result<ComputeClient, ComputeError> {
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| {
                std::env::var("KILN_COMPUTE_ENDPOINT")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| COMPUTE_ENDPOINT.to_string());
        Ok(ComputeClient {
            http: http::client().map_err(HttpError::Client)?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            tokens,
            retry: RetryPolicy::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// The retry policy of every call.
    pub fn with_retry(mut self, retry: RetryPolicy) -> ComputeClient {
        self.retry = retry;
        self
    }

    /// How often [`ComputeClient::wait_operation`] polls.
    pub fn with_poll_interval(mut self, interval: Duration) -> ComputeClient {
        self.poll_interval = interval;
        self
    }

    fn images_url(&self, project: &str) -> String {
        format!("{}/projects/{project}/global/images", self.endpoint)
    }

    /// Starts `images.insert`. One request ID for every retry, so a retried
    /// request whose first try did reach the server does not fail with 409.
    pub async fn insert_image(&self, request: &ImageRequest) -> Result<Operation, ComputeError> {
        validate_image_request(request)?;
        let what = format!("creating image {}", request.name);
        let request_id = uuid::Uuid::new_v4().to_string();
        let url = self.images_url(&request.project);
        let body = request.body();
        let response = http::send_retrying(&self.tokens, &self.retry, &what, &|| {
            self.http
                .post(format!("{url}?requestId={request_id}"))
                .json(&body)
        })
        .await?;
        match response.status().as_u16() {
            200 => Ok(read_json(&what, response).await?),
            409 => Err(ComputeError::ImageExists {
                project: request.project.clone(),
                name: request.name.clone(),
            }),
            status => Err(status_error(what, status, response).await.into()),
        }
    }

    /// Starts `images.delete`; `None` when there is no such image.
    async fn start_delete_image(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<Operation>, ComputeError> {
        let what = format!("deleting image {name}");
        let request_id = uuid::Uuid::new_v4().to_string();
        let url = format!("{}/{name}", self.images_url(project));
        let response = http::send_retrying(&self.tokens, &self.retry, &what, &|| {
            self.http.delete(format!("{url}?requestId={request_id}"))
        })
        .await?;
        match response.status().as_u16() {
            200 => Ok(Some(read_json(&what, response).await?)),
            404 => Ok(None),
            status => Err(status_error(what, status, response).await.into()),
        }
    }

    /// Deletes the image and waits for that to finish; `false` when there
    /// was no such image.
    pub async fn delete_image(
        &self,
        project: &str,
        name: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<bool, ComputeError> {
        match self.start_delete_image(project, name).await? {
            Some(op) => {
                self.wait_operation(project, &op, timeout, cancel).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Inserts the image and waits for it to be ready.
    pub async fn create_image(
        &self,
        request: &ImageRequest,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Operation, ComputeError> {
        let op = self.insert_image(request).await?;
        self.wait_operation(&request.project, &op, timeout, cancel)
            .await
    }

    /// Whether an image of that name exists.
    pub async fn image_exists(&self, project: &str, name: &str) -> Result<bool, ComputeError> {
        Ok(self.lookup_image(project, name).await?.is_some())
    }

    /// The image as `images.get` returns it; [`ComputeError::ImageNotFound`]
    /// when there is none.
    pub async fn get_image(&self, project: &str, name: &str) -> Result<Image, ComputeError> {
        match self.lookup_image(project, name).await? {
            Some(response) => Ok(read_json(&format!("reading image {name}"), response).await?),
            None => Err(ComputeError::ImageNotFound {
                project: project.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// `images.get`: the answer when the image exists, `None` on 404.
    async fn lookup_image(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<reqwest::Response>, ComputeError> {
        let what = format!("looking up image {name}");
        let url = format!("{}/{name}", self.images_url(project));
        let response =
            http::send_retrying(&self.tokens, &self.retry, &what, &|| self.http.get(&url)).await?;
        match response.status().as_u16() {
            200 => Ok(Some(response)),
            404 => Ok(None),
            status => Err(status_error(what, status, response).await.into()),
        }
    }

    /// Polls the operation until it is `DONE`; a done operation with
    /// errors is [`ComputeError::OperationFailed`].
    pub async fn wait_operation(
        &self,
        project: &str,
        operation: &Operation,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Operation, ComputeError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let url = format!(
            "{}/projects/{project}/global/operations/{}",
            self.endpoint, operation.name
        );
        let mut current = operation.clone();
        loop {
            if current.is_done() {
                return finished(current);
            }
            let stopped = tokio::select! {
                _ = cancel.cancelled() => Some(ComputeError::Cancelled { operation: current.name.clone() }),
                _ = tokio::time::sleep_until(deadline) => Some(ComputeError::Timeout {
                    operation: current.name.clone(),
                    waited: started.elapsed(),
                }),
                polled = async {
                    tokio::time::sleep(self.poll_interval).await;
                    self.get_operation(&url, &current.name).await
                } => {
                    current = polled?;
                    None
                }
            };
            if let Some(err) = stopped {
                return Err(err);
            }
            tracing::debug!(
                operation = %current.name,
                status = %current.status,
                progress = ?current.progress,
                "compute operation"
            );
        }
    }

    async fn get_operation(&self, url: &str, name: &str) -> Result<Operation, ComputeError> {
        let what = format!("reading operation {name}");
        let response =
            http::send_retrying(&self.tokens, &self.retry, &what, &|| self.http.get(url)).await?;
        match response.status().as_u16() {
            200 => Ok(read_json(&what, response).await?),
            status => Err(status_error(what, status, response).await.into()),
        }
    }
}

fn finished(op: Operation) -> Result<Operation, ComputeError> {
    if op.errors().is_empty() {
        return Ok(op);
    }
    Err(ComputeError::OperationFailed {
        operation: op.name.clone(),
        kind: op.operation_type.clone(),
        target: op.target_link.clone(),
        errors: op.errors().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_body_has_the_api_shape() {
        let mut req = ImageRequest::new("p", "img", "bkt", "dir/disk.tar.gz");
        req.family = Some("fam".into());
        req.labels.insert("k".into(), "v".into());
        req.guest_os_features = vec!["UEFI_COMPATIBLE".into()];
        req.storage_locations = vec!["eu".into()];
        req.licenses = vec!["projects/p/global/licenses/l".into()];
        req.architecture = Some("X86_64".into());
        let body = req.body();
        assert_eq!(
            body,
            serde_json::json!({
                "name": "img",
                "family": "fam",
                "labels": {"k": "v"},
                "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}],
                "storageLocations": ["eu"],
                "licenses": ["projects/p/global/licenses/l"],
                "architecture": "X86_64",
                "rawDisk": {"source": "https://storage.googleapis.com/bkt/dir/disk.tar.gz"},
            })
        );
    }

    #[test]
    fn operation_errors_are_listed() {
        let err = finished(Operation {
            name: "op-1".into(),
            status: "DONE".into(),
            operation_type: "insert".into(),
            target_link: "projects/p/global/images/x".into(),
            self_link: None,
            progress: Some(100),
            error: Some(OperationErrors {
                errors: vec![OperationError {
                    code: "INVALID_TARBALL".into(),
                    message: "no disk.raw".into(),
                    location: None,
                }],
            }),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "operation op-1 (insert of projects/p/global/images/x) failed: INVALID_TARBALL: no disk.raw"
        );
    }
}
