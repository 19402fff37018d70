//! What every Google API client here shares: the HTTP client and the
//! reading of Google's JSON error bodies.

use std::time::Duration;

use serde::Deserialize;

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

/// Why a request that was retried did not get an answer worth reading.
#[derive(Debug)]
pub(crate) enum CallError {
    Auth(super::auth::AuthError),
    Transport(reqwest::Error),
    /// The last retryable status (408, 429, 5xx) and its message.
    Status {
        status: u16,
        message: String,
    },
}

/// Sends the request `build` makes, again after connection errors and
/// retryable statuses. Any other answer, success or not, is the caller's
/// to read; `Err` also tells how many attempts were made.
pub(crate) async fn send_retrying(
    tokens: &super::auth::TokenSource,
    retry: &super::retry::RetryPolicy,
    build: &(dyn Fn() -> reqwest::RequestBuilder + Send + Sync),
) -> Result<reqwest::Response, (CallError, u32)> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let request = tokens
            .authorize(build())
            .await
            .map_err(|e| (CallError::Auth(e), attempts))?;
        let error = match request.send().await {
            Ok(response) if super::retry::retryable_status(response.status().as_u16()) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                CallError::Status {
                    status,
                    message: error_message(&body),
                }
            }
            Ok(response) => return Ok(response),
            Err(e) => CallError::Transport(e),
        };
        if !retry.allows(attempts) {
            return Err((error, attempts));
        }
        tracing::debug!(attempt = attempts, error = ?error, "retrying request");
        tokio::time::sleep(retry.delay(attempts)).await;
    }
}
