//! A local OAuth2 token endpoint (and metadata server) for auth tests. It
//! checks the service-account JWT with the test public key before handing
//! out a token.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::task::JoinHandle;

use super::TEST_PUBLIC_KEY_PEM;

struct TokenState {
    requests: AtomicUsize,
    expires_in: u64,
    base_url: String,
}

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
            requests: AtomicUsize::new(0),
            expires_in,
            base_url: base_url.clone(),
        });
        let app = Router::new()
            .route("/token", post(token))
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

    /// Token requests answered so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn issue(state: &TokenState) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(serde_json::json!({
        "access_token": format!("test-token-{n}"),
        "expires_in": state.expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
}

fn refuse(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": "invalid_grant", "error_description": message })),
    )
        .into_response()
}

async fn token(State(state): State<Arc<TokenState>>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = form.get("assertion") else {
                return refuse("no assertion");
            };
            let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes())
            else {
                return refuse("bad test key");
            };
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_audience(&[format!("{}/token", state.base_url)]);
            match jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation) {
                Ok(_) => issue(&state),
                Err(e) => refuse(&format!("bad assertion: {e}")),
            }
        }
        Some("refresh_token")
            if form
                .get("refresh_token")
                .is_some_and(|t| t == "good-refresh") =>
        {
            issue(&state)
        }
        _ => refuse("unsupported grant"),
    }
}

async fn metadata_token(State(state): State<Arc<TokenState>>, headers: HeaderMap) -> Response {
    if headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
    }
    issue(&state)
}
