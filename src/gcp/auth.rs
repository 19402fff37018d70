//! Credentials and OAuth2 access tokens.
//!
//! Where credentials come from, in order: the template's `account_file`,
//! then Application Default Credentials as Google's client libraries find
//! them (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
//! `application_default_credentials.json`, the metadata server). Against a
//! local emulator no credentials are needed: [`Credentials::None`].
//!
//! Tokens and keys never reach a log: every type holding one has a `Debug`
//! that redacts it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::http;

/// The scope kiln asks for: Storage and Compute both accept it.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// A token is renewed this long before it expires, so a request never
/// carries one that dies in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// The metadata server answers at once on GCE; anywhere else it does not
/// exist, and waiting long for it only delays the error.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid JSON of a known kind")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "credentials file {path} has type {kind:?}; expected service_account or authorized_user"
    )]
    UnsupportedKind { path: PathBuf, kind: String },
    #[error("cannot sign the token request with the service account key")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("token request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("token request to {url} was refused with HTTP {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("token response from {url} is not valid")]
    BadResponse {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no credentials to get a token with")]
    NoCredentials,
    #[error("the system clock is before 1970")]
    Clock(#[source] std::time::SystemTimeError),
}

/// A service account key, as downloaded from the console.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

/// A user's refresh token, as `gcloud auth application-default login` writes it.
#[derive(Clone, Deserialize)]
pub struct AuthorizedUser {
    pub client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.to_string()
}

/// What proves kiln's identity to Google.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// No `Authorization` header: for local emulators and fakes.
    None,
    ServiceAccount(ServiceAccountKey),
    AuthorizedUser(AuthorizedUser),
    /// The GCE metadata server of the instance kiln runs on.
    Metadata {
        base_url: String,
    },
}

/// Where [`Credentials::discover`] found the credentials, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSource {
    AccountFile(PathBuf),
    EnvVar(PathBuf),
    Gcloud(PathBuf),
    MetadataServer,
}

impl fmt::Display for CredentialsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsSource::AccountFile(p) => write!(f, "account_file {}", p.display()),
            CredentialsSource::EnvVar(p) => {
                write!(f, "GOOGLE_APPLICATION_CREDENTIALS {}", p.display())
            }
            CredentialsSource::Gcloud(p) => write!(f, "gcloud credentials {}", p.display()),
            CredentialsSource::MetadataServer => write!(f, "the metadata server"),
        }
    }
}

#[derive(Deserialize)]
struct KindOnly {
    #[serde(rename = "type", default)]
    kind: String,
}

impl Credentials {
    /// Reads a service-account or authorized-user JSON file.
    pub fn from_file(path: &Path) -> Result<Credentials, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses credentials JSON; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Credentials, AuthError> {
        let parse_err = |source| AuthError::ParseFile {
            path: path.to_path_buf(),
            source,
        };
        let kind: KindOnly = serde_json::from_str(text).map_err(parse_err)?;
        match kind.kind.as_str() {
            "service_account" => Ok(Credentials::ServiceAccount(
                serde_json::from_str(text).map_err(parse_err)?,
            )),
            "authorized_user" => Ok(Credentials::AuthorizedUser(
                serde_json::from_str(text).map_err(parse_err)?,
            )),
            other => Err(AuthError::UnsupportedKind {
                path: path.to_path_buf(),
                kind: other.to_string(),
            }),
        }
    }

    /// Finds credentials the way Google's client libraries do, after the
    /// template's own `account_file`.
    pub fn discover(
        account_file: Option<&Path>,
    ) -> Result<(Credentials, CredentialsSource), AuthError> {
        Self::discover_with(account_file, &|name| {
            std::env::var_os(name).map(PathBuf::from)
        })
    }

    /// [`Credentials::discover`] with the environment passed in, so the
    /// lookup order can be tested without touching the process environment.
    pub fn discover_with(
        account_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<(Credentials, CredentialsSource), AuthError> {
        if let Some(path) = account_file {
            let creds = Self::from_file(path)?;
            return Ok((creds, CredentialsSource::AccountFile(path.to_path_buf())));
        }
        if let Some(path) =
            env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.as_os_str().is_empty())
        {
            // An explicit setting that points nowhere is an error, not a
            // reason to fall through to other credentials silently.
            let creds = Self::from_file(&path)?;
            return Ok((creds, CredentialsSource::EnvVar(path)));
        }
        let gcloud_dir = env("CLOUDSDK_CONFIG")
            .or_else(|| env("HOME").map(|home| home.join(".config").join("gcloud")));
        if let Some(dir) = gcloud_dir {
            let path = dir.join("application_default_credentials.json");
            if path.is_file() {
                let creds = Self::from_file(&path)?;
                return Ok((creds, CredentialsSource::Gcloud(path)));
            }
        }
        let host = env("GCE_METADATA_HOST")
            .and_then(|h| h.to_str().map(str::to_string))
            .unwrap_or_else(|| METADATA_HOST.to_string());
        Ok((
            Credentials::Metadata {
                base_url: format!("http://{host}"),
            },
            CredentialsSource::MetadataServer,
        ))
    }
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

/// The claims of the JWT a service account signs to get a token.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtClaims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The signed JWT assertion for the jwt-bearer grant, valid for an hour.
pub fn jwt_assertion(
    key: &ServiceAccountKey,
    scope: &str,
    now: SystemTime,
) -> Result<String, AuthError> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(AuthError::Clock)?
        .as_secs();
    let claims = JwtClaims {
        iss: key.client_email.clone(),
        scope: scope.to_string(),
        aud: key.token_uri.clone(),
        iat,
        exp: iat + 3600,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
        .map_err(AuthError::Sign)?;
    jsonwebtoken::encode(&header, &claims, &signing_key).map_err(AuthError::Sign)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    token: AccessToken,
    renew_at: Instant,
}

/// Hands out access tokens for one set of credentials, fetching a new one
/// only when the cached one is close to expiry.
pub struct TokenSource {
    credentials: Credentials,
    scope: String,
    http: reqwest::Client,
    cache: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.credentials)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(credentials: Credentials) -> Result<TokenSource, AuthError> {
        Ok(TokenSource {
            credentials,
            scope: CLOUD_PLATFORM_SCOPE.to_string(),
            http: http::client().map_err(AuthError::Client)?,
            cache: Mutex::new(None),
        })
    }

    /// No credentials: for emulators.
    pub fn none() -> Result<TokenSource, AuthError> {
        Self::new(Credentials::None)
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A valid token, or `None` for [`Credentials::None`].
    pub async fn token(&self) -> Result<Option<AccessToken>, AuthError> {
        if matches!(self.credentials, Credentials::None) {
            return Ok(None);
        }
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(Some(cached.token.clone()));
        }
        let (token, lifetime) = self.fetch().await?;
        *cache = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
        });
        Ok(Some(token))
    }

    /// Adds the `Authorization` header when there are credentials.
    pub async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AuthError> {
        Ok(match self.token().await? {
            Some(token) => request.header(reqwest::header::AUTHORIZATION, token.bearer()),
            None => request,
        })
    }

    async fn fetch(&self) -> Result<(AccessToken, Duration), AuthError> {
        let (url, request) = match &self.credentials {
            Credentials::None => return Err(AuthError::NoCredentials),
            Credentials::ServiceAccount(key) => {
                let assertion = jwt_assertion(key, &self.scope, SystemTime::now())?;
                let body = form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ]);
                (key.token_uri.clone(), self.form_post(&key.token_uri, body))
            }
            Credentials::AuthorizedUser(user) => {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &user.client_id),
                    ("client_secret", &user.client_secret),
                    ("refresh_token", &user.refresh_token),
                ]);
                (
                    user.token_uri.clone(),
                    self.form_post(&user.token_uri, body),
                )
            }
            Credentials::Metadata { base_url } => {
                let url = format!("{base_url}{METADATA_TOKEN_PATH}");
                let request = self
                    .http
                    .get(&url)
                    .header("Metadata-Flavor", "Google")
                    .timeout(METADATA_TIMEOUT);
                (url, request)
            }
        };
        let response = request.send().await.map_err(|source| AuthError::Request {
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(AuthError::Refused {
                url,
                status: status.as_u16(),
                message: http::error_message(&body),
            });
        }
        let parsed: TokenResponse = response
            .json()
            .await
            .map_err(|source| AuthError::BadResponse { url, source })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        Ok((AccessToken(parsed.access_token), lifetime))
    }

    fn form_post(&self, url: &str, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
