//! Google Cloud: credentials and the default project, Cloud Storage
//! resumable uploads, Compute Engine images and their operations.
//!
//! Every endpoint can be pointed at a local stand-in (`STORAGE_EMULATOR_HOST`,
//! `KILN_COMPUTE_ENDPOINT`), so the whole publish path runs without a cloud
//! account in tests.

#![warn(missing_docs)]

mod auth;
mod compute;
mod credentials;
mod http;
pub mod metadata;
pub mod metadata_http;
mod progress;
mod project;
mod retry;
mod storage;
mod validate;

pub use auth::{AccessToken, AuthError, TokenSource};
pub use compute::{
    ComputeClient, ComputeError, DEFAULT_WAIT_TIMEOUT, ImageRequest, Operation, OperationError,
    OperationErrors,
};
pub use credentials::{Credentials, CredentialsFile, CredentialsSource};
pub use http::HttpError;
pub use progress::UploadProgress;
pub use project::{ProjectError, default_project};
pub use retry::RetryPolicy;
pub use storage::{
    DeleteOnDrop, ObjectMetadata, StorageClient, StorageError, UploadOptions, crc32c_base64,
};
pub use validate::{ValidationError, validate_image_request};
