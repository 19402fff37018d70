//! Tokens for every kind of credentials, end to end against the local
//! token server (OAuth2, STS, IAM Credentials, metadata server).

use std::path::{Path, PathBuf};

use kiln::gcp::{AuthError, Credentials, TokenSource};
use kiln_test_support::token_server::{Call, GOOD_REFRESH_TOKEN, GOOD_SUBJECT_TOKEN, TokenServer};
use kiln_test_support::{TEST_PRIVATE_KEY_PEM, TEST_PUBLIC_KEY_PEM};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
const SOURCE_ACCOUNT: &str = "kiln@proj.iam.gserviceaccount.com";
const TARGET_ACCOUNT: &str = "deployer@proj.iam.gserviceaccount.com";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/github";

fn service_account_json(token_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "key-1",
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": SOURCE_ACCOUNT,
        "client_id": "123",
        "token_uri": token_uri,
    })
}

fn authorized_user_json(token_uri: &str, refresh: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": "very-secret",
        "refresh_token": refresh,
        "token_uri": token_uri,
    })
}

/// A workload identity federation file whose subject token is read from
/// a file, as GitHub Actions' and GitLab's setups write it.
fn external_account_json(
    server: &TokenServer,
    subject_token_file: &Path,
    impersonate: bool,
) -> serde_json::Value {
    let mut json = serde_json::json!({
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/token", server.base_url),
        "credential_source": { "file": subject_token_file },
    });
    if impersonate {
        json["service_account_impersonation_url"] = server.impersonation_url(TARGET_ACCOUNT).into();
    }
    json
}

fn credentials(json: &serde_json::Value) -> Credentials {
    Credentials::from_json(&json.to_string(), Path::new("creds.json")).unwrap()
}

fn subject_token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("oidc-token");
    std::fs::write(&path, token).unwrap();
    path
}

async fn token_of(source: &TokenSource) -> String {
    source.token().await.unwrap().unwrap().secret().to_string()
}

#[tokio::test]
async fn service_account_tokens_are_self_signed_jwts() {
    // Google's libraries sign the token with the key itself (AIP-4111):
    // the token endpoint in the file is never called.
    let server = TokenServer::start(3600).await.unwrap();
    let json = service_account_json(&format!("{}/token", server.base_url));
    let source = TokenSource::new(credentials(&json)).unwrap();
    let jwt = token_of(&source).await;
    assert_eq!(token_of(&source).await, jwt, "cached");

    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some("key-1"));
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &public, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["iss"], SOURCE_ACCOUNT);
    assert_eq!(claims["sub"], SOURCE_ACCOUNT);
    assert_eq!(claims["scope"], CLOUD_PLATFORM);
    assert_eq!(server.requests(), 0);
    assert!(!format!("{source:?}").contains(&jwt));
}

#[tokio::test]
async fn authorized_user_token_is_fetched_once_and_cached() {
    let server = TokenServer::start(3600).await.unwrap();
    let json = authorized_user_json(&format!("{}/token", server.base_url), GOOD_REFRESH_TOKEN);
    let source = TokenSource::new(credentials(&json)).unwrap();
    let first = source.token().await.unwrap().unwrap();
    let second = source.token().await.unwrap().unwrap();
    assert_eq!(first.secret(), "test-token-1");
    assert_eq!(first, second);
    assert_eq!(first.bearer(), "Bearer test-token-1");
    assert_eq!(server.calls(), vec![Call::Refresh]);
    assert_eq!(format!("{first:?}"), "AccessToken(<redacted>)");
    let debug = format!("{source:?}");
    assert!(
        !debug.contains("test-token") && !debug.contains("very-secret"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_refused_refresh_is_an_error_that_says_why() {
    let server = TokenServer::start(3600).await.unwrap();
    let json = authorized_user_json(&format!("{}/token", server.base_url), "revoked");
    let err = TokenSource::new(credentials(&json))
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Token(_)), "{err}");
    let chain = kiln::error::error_chain(&err);
    assert!(
        chain.contains("invalid_grant") && chain.contains("400"),
        "{chain}"
    );
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn metadata_server_token() {
    let server = TokenServer::start(3600).await.unwrap();
    let source = TokenSource::new(Credentials::Metadata {
        endpoint: Some(server.base_url.clone()),
    })
    .unwrap();
    assert_eq!(token_of(&source).await, "test-token-1");
    assert_eq!(server.calls(), vec![Call::Metadata]);
}

#[tokio::test]
async fn no_credentials_means_no_token() {
    let source = TokenSource::none();
    assert!(source.token().await.unwrap().is_none());
    assert!(
        TokenSource::new(Credentials::None)
            .unwrap()
            .token()
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn external_account_exchanges_the_subject_token_at_sts() {
    let server = TokenServer::start(3600).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = subject_token_file(dir.path(), GOOD_SUBJECT_TOKEN);
    let source = TokenSource::new(credentials(&external_account_json(
        &server, &subject, false,
    )))
    .unwrap();
    assert_eq!(token_of(&source).await, "sts-test-token-1");
    assert_eq!(
        server.calls(),
        vec![Call::Exchange {
            audience: AUDIENCE.into(),
            scope: CLOUD_PLATFORM.into(),
        }]
    );
}

#[tokio::test]
async fn external_account_then_impersonates_its_service_account() {
    let server = TokenServer::start(3600).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = subject_token_file(dir.path(), GOOD_SUBJECT_TOKEN);
    let source =
        TokenSource::new(credentials(&external_account_json(&server, &subject, true))).unwrap();
    assert_eq!(token_of(&source).await, "test-token-2");
    assert_eq!(
        server.calls(),
        vec![
            Call::Exchange {
                audience: AUDIENCE.into(),
                scope: IAM_SCOPE.into(),
            },
            Call::Impersonate {
                account: TARGET_ACCOUNT.into(),
                caller: "sts".into(),
                scope: vec![CLOUD_PLATFORM.into()],
            },
        ]
    );
}

#[tokio::test]
async fn external_account_with_a_refused_subject_token_fails() {
    let server = TokenServer::start(3600).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = subject_token_file(dir.path(), "forged");
    let err = TokenSource::new(credentials(&external_account_json(
        &server, &subject, false,
    )))
    .unwrap()
    .token()
    .await
    .unwrap_err();
    let chain = kiln::error::error_chain(&err);
    assert!(chain.contains("bad subject token"), "{chain}");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn impersonated_service_account_file() {
    let server = TokenServer::start(3600).await.unwrap();
    let json = serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": server.impersonation_url(TARGET_ACCOUNT),
        "source_credentials": service_account_json("https://oauth2.invalid/token"),
    });
    let source = TokenSource::new(credentials(&json)).unwrap();
    assert_eq!(token_of(&source).await, "test-token-1");
    assert_eq!(token_of(&source).await, "test-token-1", "cached");
    assert_eq!(
        server.calls(),
        vec![Call::Impersonate {
            account: TARGET_ACCOUNT.into(),
            caller: SOURCE_ACCOUNT.into(),
            scope: vec![CLOUD_PLATFORM.into()],
        }]
    );
}

#[tokio::test]
async fn impersonation_from_user_credentials_refreshes_first() {
    let server = TokenServer::start(3600).await.unwrap();
    let json = serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": server.impersonation_url(TARGET_ACCOUNT),
        "source_credentials": authorized_user_json(
            &format!("{}/token", server.base_url),
            GOOD_REFRESH_TOKEN,
        ),
    });
    let source = TokenSource::new(credentials(&json)).unwrap();
    assert_eq!(token_of(&source).await, "test-token-2");
    assert_eq!(
        server.calls(),
        vec![
            Call::Refresh,
            Call::Impersonate {
                account: TARGET_ACCOUNT.into(),
                caller: "test-token-1".into(),
                scope: vec![CLOUD_PLATFORM.into()],
            },
        ]
    );
}

#[tokio::test]
async fn an_incomplete_file_of_a_known_kind_is_refused_with_its_path() {
    let err = TokenSource::new(
        Credentials::from_json(
            r#"{"type":"external_account","audience":"a"}"#,
            Path::new("wif.json"),
        )
        .unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, AuthError::Build { ref path, .. } if path == Path::new("wif.json")),
        "{err}"
    );
}
