//! A local stand-in for Google's token endpoints, for auth tests: the OAuth2
//! token endpoint (refresh-token grant), STS (the token exchange of workload
//! identity federation), IAM Credentials' `generateAccessToken`
//! (impersonation) and the metadata server's token. Credentials files point
//! their `token_uri`, `token_url` and `service_account_impersonation_url`
//! here. Every token it hands out is `test-token-N`, N counting from 1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::task::JoinHandle;

use super::TEST_PUBLIC_KEY_PEM;

/// The refresh token the token endpoint accepts; any other is refused.
pub const GOOD_REFRESH_TOKEN: &str = "good-refresh";
/// The subject token STS accepts; any other is refused.
pub const GOOD_SUBJECT_TOKEN: &str = "good-subject-token";

/// One token request the server answered with a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The refresh-token grant at `/token`.
    Refresh,
    /// An STS token exchange at `/token`.
    Exchange {
        /// The workload identity provider.
        audience: String,
        /// The requested scope.
        scope: String,
    },
    /// `generateAccessToken` for `account`.
    Impersonate {
        /// The service account impersonated.
        account: String,
        /// Who asked: a service account's email (from its self-signed
        /// JWT), `sts` for a token from the exchange, or the token this
        /// server issued.
        caller: String,
        /// The scopes asked for.
        scope: Vec<String>,
    },
    /// The metadata server's token.
    Metadata,
}

struct TokenState {
    issued: AtomicUsize,
    expires_in: u64,
    calls: Mutex<Vec<Call>>,
}

impl TokenState {
    fn record(&self, call: Call) -> String {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
        format!(
            "test-token-{}",
            self.issued.fetch_add(1, Ordering::SeqCst) + 1
        )
    }
}

/// The running server; it stops when dropped.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT`; the token endpoint is `{base_url}/token`.
    pub base_url: String,
    state: Arc<TokenState>,
    task: JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Tokens it hands out live `expires_in` seconds.
    pub async fn start(expires_in: u64) -> std::io::Result<TokenServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let state = Arc::new(TokenState {
            issued: AtomicUsize::new(0),
            expires_in,
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/-/serviceAccounts/{name}", post(generate))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TokenServer {
            base_url,
            state,
            task,
        })
    }

    /// Tokens handed out so far.
    pub fn requests(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// The requests answered with a token, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `generateAccessToken` URL for `account`.
    pub fn impersonation_url(&self, account: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{account}:generateAccessToken",
            self.base_url
        )
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": "invalid_grant", "error_description": message })),
    )
        .into_response()
}

/// The request's parameters, from a form or a JSON object (Google's
/// libraries send either).
fn params(headers: &HeaderMap, body: &str) -> HashMap<String, String> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(body) else {
            return HashMap::new();
        };
        return map
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
    }
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

async fn token(State(state): State<Arc<TokenState>>, headers: HeaderMap, body: String) -> Response {
    let form = params(&headers, &body);
    let get = |key: &str| form.get(key).map(String::as_str).unwrap_or("");
    match get("grant_type") {
        "refresh_token" if get("refresh_token") == GOOD_REFRESH_TOKEN => {
            let token = state.record(Call::Refresh);
            axum::Json(serde_json::json!({
                "access_token": token,
                "expires_in": state.expires_in,
                "token_type": "Bearer",
            }))
            .into_response()
        }
        "urn:ietf:params:oauth:grant-type:token-exchange" => {
            if get("subject_token") != GOOD_SUBJECT_TOKEN {
                return refuse(StatusCode::BAD_REQUEST, "bad subject token");
            }
            if get("audience").is_empty() || get("subject_token_type").is_empty() {
                return refuse(StatusCode::BAD_REQUEST, "no audience or subject token type");
            }
            let token = state.record(Call::Exchange {
                audience: get("audience").to_string(),
                scope: get("scope").to_string(),
            });
            axum::Json(serde_json::json!({
                "access_token": format!("sts-{token}"),
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": state.expires_in,
            }))
            .into_response()
        }
        _ => refuse(StatusCode::BAD_REQUEST, "unsupported grant"),
    }
}

/// Who the bearer token says the caller is: `sts` for a token from the
/// exchange, the token itself for another token this server issued, or the
/// service account of a self-signed JWT made with the test key.
fn caller(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    if bearer.starts_with("sts-test-token-") {
        return Some("sts".to_string());
    }
    if bearer.starts_with("test-token-") {
        return Some(bearer.to_string());
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes()).ok()?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(bearer, &key, &validation)
        .ok()?
        .claims;
    claims.get("iss")?.as_str().map(str::to_string)
}

async fn generate(
    State(state): State<Arc<TokenState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(account) = name.strip_suffix(":generateAccessToken") else {
        return refuse(StatusCode::NOT_FOUND, "no such method");
    };
    let Some(caller) = caller(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "no valid bearer token");
    };
    let Ok(request) = serde_json::from_str::<serde_json::Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let scope: Vec<String> = request
        .get("scope")
        .and_then(|s| s.as_array())
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if scope.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "no scope");
    }
    let token = state.record(Call::Impersonate {
        account: account.to_string(),
        caller,
        scope,
    });
    let expire_time = chrono::Utc::now()
        + chrono::Duration::seconds(i64::try_from(state.expires_in).unwrap_or(3600));
    axum::Json(serde_json::json!({
        "accessToken": token,
        "expireTime": expire_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

async fn metadata_token(State(state): State<Arc<TokenState>>, headers: HeaderMap) -> Response {
    if headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
    }
    let token = state.record(Call::Metadata);
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": state.expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}
