//! Google Cloud: credentials, Cloud Storage resumable uploads, Compute
//! Engine images and their operations.
//!
//! Every endpoint can be pointed at a local stand-in (`STORAGE_EMULATOR_HOST`,
//! `KILN_COMPUTE_ENDPOINT`), so the whole publish path runs without a cloud
//! account in tests.

pub mod auth;
pub mod compute;
mod http;
pub mod progress;
pub mod retry;
pub mod storage;
mod validate;

pub use auth::{AccessToken, AuthError, Credentials, TokenSource};
pub use compute::{ComputeClient, ComputeError, ImageRequest, Operation, OperationError};
pub use progress::UploadProgress;
pub use retry::RetryPolicy;
pub use storage::{ObjectMetadata, StorageClient, StorageError, UploadOptions};
pub use validate::{ValidationError, validate_image_request};
