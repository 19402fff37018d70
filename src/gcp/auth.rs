//! OAuth2 access tokens, from Google's own `google-cloud-auth`: every kind
//! of credentials file gcloud and Google's libraries accept (service account
//! keys, user credentials, workload identity federation, impersonation) and
//! the metadata server, each with the library's caching and refresh.
//!
//! Tokens and keys never reach a log: [`AccessToken`] and [`TokenSource`]
//! have a `Debug` that shows no secret.

use std::fmt;
use std::path::PathBuf;

use google_cloud_auth::build_errors::Error as BuildError;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, CacheableResource, CredentialsProvider as _, external_account,
    external_account_authorized_user, impersonated, mds, service_account, user_account,
};

use super::credentials::{Credentials, CredentialsFile, Env, FileKind, non_empty, process_env};

/// IAM Credentials, which mints tokens for an impersonated service account.
const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// gcloud's override of that endpoint (`api_endpoint_overrides/iamcredentials`).
const IAM_ENDPOINT_OVERRIDE_VAR: &str = "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS";

/// Why there are no credentials or no token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials file cannot be read.
    #[error("cannot read credentials file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not JSON.
    #[error("credentials file {path} is not valid JSON")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The credentials file has a `type` kiln cannot use.
    #[error("credentials file {path} has type {kind:?}; expected one of {known}")]
    UnsupportedKind {
        /// The file.
        path: PathBuf,
        /// Its `type`.
        kind: String,
        /// The types kiln can use.
        known: String,
    },
    /// The credentials file is of a known kind but incomplete or wrong.
    #[error("cannot use the credentials in {path}")]
    Build {
        /// The file.
        path: PathBuf,
        /// What the library found wrong.
        #[source]
        source: BuildError,
    },
    /// The metadata server's credentials cannot be set up.
    #[error("cannot use the metadata server's credentials")]
    Metadata(#[source] BuildError),
    /// Impersonation was asked for with nothing to impersonate with.
    #[error("cannot impersonate {account} without credentials")]
    NothingToImpersonateWith {
        /// The service account.
        account: String,
    },
    /// Impersonation cannot be set up.
    #[error("cannot impersonate {account}")]
    Impersonate {
        /// The service account.
        account: String,
        /// What the library found wrong.
        #[source]
        source: BuildError,
    },
    /// The token request failed (refused, unreachable, ...).
    #[error("cannot get an access token")]
    Token(#[source] google_cloud_auth::errors::CredentialsError),
    /// No credentials were found and the metadata server, the last resort,
    /// did not give a token: most likely kiln does not run on Google Cloud.
    #[error(
        "no Google Cloud credentials: give --account-file (account_file), set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`; the metadata server did not give a token"
    )]
    NoCredentialsFound(#[source] google_cloud_auth::errors::CredentialsError),
}

/// An OAuth2 bearer token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// The value for an `Authorization` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The raw token, for tests and for handing to another client.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Hands out access tokens for one set of credentials; the library caches
/// them and renews them before they expire.
#[derive(Clone)]
pub struct TokenSource {
    credentials: Option<AccessTokenCredentials>,
    /// The metadata server was the last resort of the lookup: its failure
    /// means no credentials were found.
    last_resort: bool,
    /// What the credentials are, for `Debug`: the library's own `Debug`
    /// is not promised to leave secrets out.
    what: String,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.what)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// No credentials: requests go out without `Authorization`, for emulators.
    pub fn none() -> TokenSource {
        TokenSource {
            credentials: None,
            last_resort: false,
            what: "none".to_string(),
        }
    }

    /// Tokens for `credentials`. Must be called inside a Tokio runtime: the
    /// library refreshes tokens on a task of its own.
    pub fn new(credentials: Credentials) -> Result<TokenSource, AuthError> {
        let what = describe(&credentials);
        let built = match &credentials {
            Credentials::None => return Ok(Self::none()),
            Credentials::File(file) => build_file(file)?,
            Credentials::Metadata { endpoint } => metadata(endpoint.as_deref())
                .build_access_token_credentials()
                .map_err(AuthError::Metadata)?,
        };
        Ok(TokenSource {
            credentials: Some(built),
            last_resort: matches!(credentials, Credentials::Metadata { .. }),
            what,
        })
    }

    /// Tokens for the service account `account`, minted by IAM
    /// (`generateAccessToken`) with `credentials`, as gcloud's
    /// `--impersonate-service-account` does. IAM is reached at
    /// `CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS` when that is set.
    pub fn impersonating(
        credentials: Credentials,
        account: &str,
    ) -> Result<TokenSource, AuthError> {
        Self::impersonating_with(credentials, account, &process_env)
    }

    /// [`TokenSource::impersonating`] in the environment `env`.
    pub(crate) fn impersonating_with(
        credentials: Credentials,
        account: &str,
        env: Env<'_>,
    ) -> Result<TokenSource, AuthError> {
        let what = format!("{} impersonating {account}", describe(&credentials));
        let failed = |source| AuthError::Impersonate {
            account: account.to_string(),
            source,
        };
        let builder = match credentials {
            Credentials::None => {
                return Err(AuthError::NothingToImpersonateWith {
                    account: account.to_string(),
                });
            }
            // A file's JSON goes inside an impersonated_service_account
            // one: the same path as such a file, and the IAM URL is kiln's
            // to choose.
            Credentials::File(file) if file.kind() != FileKind::ImpersonatedServiceAccount => {
                let endpoint = non_empty(env, IAM_ENDPOINT_OVERRIDE_VAR)
                    .map(|v| v.to_string_lossy().trim_end_matches('/').to_string())
                    .unwrap_or_else(|| IAM_CREDENTIALS_ENDPOINT.to_string());
                impersonated::Builder::new(serde_json::json!({
                    "type": "impersonated_service_account",
                    "service_account_impersonation_url": format!(
                        "{endpoint}/v1/projects/-/serviceAccounts/{account}:generateAccessToken"
                    ),
                    "source_credentials": file.json(),
                }))
            }
            // The library has no JSON form for these; it calls Google's IAM.
            other => {
                let source = TokenSource::new(other)?.credentials.ok_or_else(|| {
                    AuthError::NothingToImpersonateWith {
                        account: account.to_string(),
                    }
                })?;
                impersonated::Builder::from_source_credentials(source.into())
                    .with_target_principal(account)
            }
        };
        let built = builder.build_access_token_credentials().map_err(failed)?;
        Ok(TokenSource {
            credentials: Some(built),
            last_resort: false,
            what,
        })
    }

    /// A valid token, or `None` without credentials.
    pub async fn token(&self) -> Result<Option<AccessToken>, AuthError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let token = credentials
            .access_token()
            .await
            .map_err(|e| self.token_error(e))?;
        Ok(Some(AccessToken(token.token)))
    }

    /// Adds the headers the credentials call for (`Authorization`, and a
    /// quota project's `x-goog-user-project`) when there are credentials.
    pub(crate) async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AuthError> {
        let Some(credentials) = &self.credentials else {
            return Ok(request);
        };
        let headers = credentials
            .headers(http::Extensions::new())
            .await
            .map_err(|e| self.token_error(e))?;
        Ok(match headers {
            CacheableResource::New { data, .. } => request.headers(data),
            // Only answered to a caller that passed an entity tag, which
            // this one never does; the token alone still authorizes.
            CacheableResource::NotModified => match self.token().await? {
                Some(token) => request.header(reqwest::header::AUTHORIZATION, token.bearer()),
                None => request,
            },
        })
    }

    /// A failed token request, said as what it most likely means.
    fn token_error(&self, error: google_cloud_auth::errors::CredentialsError) -> AuthError {
        if self.last_resort {
            AuthError::NoCredentialsFound(error)
        } else {
            AuthError::Token(error)
        }
    }
}

fn describe(credentials: &Credentials) -> String {
    match credentials {
        Credentials::None => "none".to_string(),
        Credentials::File(file) => format!("{:?} {}", file.kind(), file.path().display()),
        Credentials::Metadata { .. } => "the metadata server".to_string(),
    }
}

fn metadata(endpoint: Option<&str>) -> mds::Builder {
    let builder = mds::Builder::default();
    match endpoint {
        Some(endpoint) => builder.with_endpoint(endpoint),
        None => builder,
    }
}

/// The library's builder for each kind of file, with its defaults (the
/// cloud-platform scope where a scope is asked for).
fn build_file(file: &CredentialsFile) -> Result<AccessTokenCredentials, AuthError> {
    let json = file.json().clone();
    match file.kind() {
        FileKind::ServiceAccount => {
            service_account::Builder::new(json).build_access_token_credentials()
        }
        FileKind::AuthorizedUser => {
            user_account::Builder::new(json).build_access_token_credentials()
        }
        FileKind::ExternalAccount => {
            external_account::Builder::new(json).build_access_token_credentials()
        }
        FileKind::ExternalAccountAuthorizedUser => {
            external_account_authorized_user::Builder::new(json).build_access_token_credentials()
        }
        FileKind::ImpersonatedServiceAccount => {
            impersonated::Builder::new(json).build_access_token_credentials()
        }
    }
    .map_err(|source| AuthError::Build {
        path: file.path().to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kiln_test_support::token_server::{Call, GOOD_REFRESH_TOKEN, TokenServer};
    use kiln_test_support::{TEST_PRIVATE_KEY_PEM, free_port};

    use super::*;
    use crate::gcp::credentials::tests::env_of;

    const SOURCE: &str = "kiln@proj.iam.gserviceaccount.com";
    const TARGET: &str = "deployer@proj.iam.gserviceaccount.com";

    fn key() -> Credentials {
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "key-1",
            "private_key": TEST_PRIVATE_KEY_PEM,
            "client_email": SOURCE,
        });
        Credentials::from_json(&json.to_string(), Path::new("key.json")).unwrap()
    }

    #[tokio::test]
    async fn impersonation_asks_iam_with_the_credentials_found() {
        let server = TokenServer::start(3600).await.unwrap();
        // gcloud's override, written as gcloud documents it: with a slash.
        let endpoint = format!("{}/", server.base_url);
        let env = env_of(&[(IAM_ENDPOINT_OVERRIDE_VAR, Path::new(&endpoint))]);
        let source = TokenSource::impersonating_with(key(), TARGET, &env).unwrap();
        let token = source.token().await.unwrap().unwrap();
        assert_eq!(token.secret(), "test-token-1");
        assert_eq!(
            server.calls(),
            vec![Call::Impersonate {
                account: TARGET.into(),
                caller: SOURCE.into(),
                scope: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            }]
        );
        let debug = format!("{source:?}");
        assert!(debug.contains("impersonating deployer@"), "{debug}");
    }

    #[tokio::test]
    async fn no_metadata_server_means_no_credentials_were_found() {
        let unanswered = free_port().unwrap();
        let source = TokenSource::new(Credentials::Metadata {
            endpoint: Some(format!("http://127.0.0.1:{unanswered}")),
        })
        .unwrap();
        let err = source.token().await.unwrap_err();
        assert!(matches!(err, AuthError::NoCredentialsFound(_)), "{err}");
        assert!(
            err.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{err}"
        );
    }

    #[test]
    fn impersonation_needs_credentials_to_start_from() {
        let err = TokenSource::impersonating(Credentials::None, TARGET).unwrap_err();
        assert!(
            matches!(err, AuthError::NothingToImpersonateWith { ref account } if account == TARGET),
            "{err}"
        );
    }

    #[tokio::test]
    async fn requests_carry_the_token_and_the_quota_project() {
        let server = TokenServer::start(3600).await.unwrap();
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "cid",
            "client_secret": "secret",
            "refresh_token": GOOD_REFRESH_TOKEN,
            "token_uri": format!("{}/token", server.base_url),
            "quota_project_id": "billing-project",
        });
        let creds = Credentials::from_json(&json.to_string(), Path::new("adc.json")).unwrap();
        let tokens = TokenSource::new(creds).unwrap();
        let client = reqwest::Client::new();
        let request = tokens
            .authorize(client.get("http://127.0.0.1:1/"))
            .await
            .unwrap()
            .build()
            .unwrap();
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header("authorization"), Some("Bearer test-token-1"));
        assert_eq!(header("x-goog-user-project"), Some("billing-project"));

        let bare = TokenSource::none()
            .authorize(client.get("http://127.0.0.1:1/"))
            .await
            .unwrap()
            .build()
            .unwrap();
        assert!(bare.headers().get("authorization").is_none());
    }
}
