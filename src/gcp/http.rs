//! What every Google API client here shares: the HTTP client and the
//! reading of Google's JSON error bodies.

use std::time::Duration;

use serde::Deserialize;

use super::auth::{AuthError, TokenSource};
use super::retry::{RetryPolicy, retryable_status};

/// An HTTP client with rustls and sane timeouts. Connect timeouts are short
/// so an unreachable endpoint fails fast; there is no overall timeout because
/// a chunk of an upload may take long on a slow link.
pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// The human part of an error response: Google's `error.message` when the
/// body has one, else the body itself, shortened.
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(parsed) = serde_json::from_str::<ErrorBody>(body)
        && !parsed.error.message.is_empty()
    {
        return parsed.error.message;
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "no details".to_string();
    }
    let mut short: String = trimmed.chars().take(300).collect();
    if short.len() < trimmed.len() {
        short.push('…');
    }
    short
}

/// What can go wrong with a Google API call, the same for every client:
/// Cloud Storage and Compute Engine errors carry it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The HTTP client cannot be built (no TLS roots, ...).
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
    /// No token to send with the request.
    #[error("{what}: cannot authenticate")]
    Auth {
        /// The call, in words.
        what: String,
        /// Why.
        #[source]
        source: AuthError,
    },
    /// The request did not get an answer (connection, timeout, ...).
    #[error("{what} failed")]
    Transport {
        /// The call, in words.
        what: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was an error status.
    #[error("{what} failed with HTTP {status}: {message}")]
    Status {
        /// The call, in words.
        what: String,
        /// The HTTP status.
        status: u16,
        /// Google's `error.message`, or the body.
        message: String,
    },
    /// Retries ran out; `last` is the last attempt's error.
    #[error("{what}: gave up after {attempts} attempts")]
    GaveUp {
        /// The call, in words.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<HttpError>,
    },
    /// A success whose body is not what the API promises.
    #[error("{what}: the response is not valid")]
    BadResponse {
        /// The call, in words.
        what: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

impl HttpError {
    /// Whether the same request may succeed if tried again.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { .. } => true,
            HttpError::Status { status, .. } => retryable_status(*status),
            _ => false,
        }
    }
}

/// The error for an answer with an unexpected status.
pub(crate) async fn status_error(
    what: String,
    status: u16,
    response: reqwest::Response,
) -> HttpError {
    let body = response.text().await.unwrap_or_default();
    HttpError::Status {
        what,
        status,
        message: error_message(&body),
    }
}

/// The body of a successful answer, as JSON.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    what: &str,
    response: reqwest::Response,
) -> Result<T, HttpError> {
    response
        .json()
        .await
        .map_err(|source| HttpError::BadResponse {
            what: what.to_string(),
            source,
        })
}

/// Sends the request `build` makes, again after connection errors and
/// retryable statuses. Any other answer, success or not, is the caller's
/// to read; when retries run out the error is [`HttpError::GaveUp`].
pub(crate) async fn send_retrying(
    tokens: &TokenSource,
    retry: &RetryPolicy,
    what: &str,
    build: &(dyn Fn() -> reqwest::RequestBuilder + Send + Sync),
) -> Result<reqwest::Response, HttpError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let request = tokens
            .authorize(build())
            .await
            .map_err(|source| HttpError::Auth {
                what: what.to_string(),
                source,
            })?;
        let error = match request.send().await {
            Ok(response) if retryable_status(response.status().as_u16()) => {
                let status = response.status().as_u16();
                status_error(what.to_string(), status, response).await
            }
            Ok(response) => return Ok(response),
            Err(source) => HttpError::Transport {
                what: what.to_string(),
                source,
            },
        };
        if !retry.allows(attempts) {
            return Err(HttpError::GaveUp {
                what: what.to_string(),
                attempts,
                last: Box::new(error),
            });
        }
        tracing::debug!(attempt = attempts, error = %crate::error::error_chain(&error), "retrying request");
        tokio::time::sleep(retry.delay(attempts)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_google_error_bodies() {
        let body = r#"{"error":{"code":409,"message":"The resource already exists","errors":[]}}"#;
        assert_eq!(error_message(body), "The resource already exists");
        assert_eq!(error_message("  "), "no details");
        assert_eq!(error_message("plain text"), "plain text");
    }
}
