use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln::gcp::auth::{
    AuthError, CLOUD_PLATFORM_SCOPE, Credentials, CredentialsSource, JwtClaims, TokenSource,
    jwt_assertion,
};
use kiln_test_support::token_server::TokenServer;
use kiln_test_support::{TEST_PRIVATE_KEY_PEM, TEST_PUBLIC_KEY_PEM};

fn service_account_json(token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "key-1",
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": "kiln@proj.iam.gserviceaccount.com",
        "client_id": "123",
        "token_uri": token_uri,
    })
    .to_string()
}

fn authorized_user_json(token_uri: &str, refresh: &str) -> String {
    serde_json::json!({
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": "very-secret",
        "refresh_token": refresh,
        "token_uri": token_uri,
    })
    .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn service_account(token_uri: &str) -> Credentials {
    Credentials::from_json(&service_account_json(token_uri), Path::new("sa.json")).unwrap()
}

#[test]
fn jwt_assertion_carries_the_claims_google_wants() {
    let Credentials::ServiceAccount(key) = service_account("https://oauth2.example/token") else {
        panic!("not a service account");
    };
    let now = SystemTime::now();
    let jwt = jwt_assertion(&key, CLOUD_PLATFORM_SCOPE, now).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some("key-1"));
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://oauth2.example/token"]);
    let claims = jsonwebtoken::decode::<JwtClaims>(&jwt, &public, &validation)
        .unwrap()
        .claims;
    let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        claims,
        JwtClaims {
            iss: "kiln@proj.iam.gserviceaccount.com".into(),
            scope: CLOUD_PLATFORM_SCOPE.into(),
            aud: "https://oauth2.example/token".into(),
            iat,
            exp: iat + 3600,
        }
    );
}

/// An environment made of the given variables only.
fn env_of(vars: Vec<(&'static str, PathBuf)>) -> impl Fn(&str) -> Option<PathBuf> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn adc_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let account = write(
        dir.path(),
        "account.json",
        &service_account_json("https://t/a"),
    );
    let from_env = write(
        dir.path(),
        "env.json",
        &authorized_user_json("https://t/e", "r"),
    );
    let home = dir.path().join("home");
    let gcloud = home.join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    let gcloud_file = write(
        &gcloud,
        "application_default_credentials.json",
        &authorized_user_json("https://t/g", "r"),
    );

    let all = || {
        env_of(vec![
            ("GOOGLE_APPLICATION_CREDENTIALS", from_env.clone()),
            ("HOME", home.clone()),
        ])
    };
    // 1. The template's account_file beats everything.
    let (_, source) = Credentials::discover_with(Some(&account), &all()).unwrap();
    assert_eq!(source, CredentialsSource::AccountFile(account.clone()));
    // 2. Then GOOGLE_APPLICATION_CREDENTIALS.
    let (creds, source) = Credentials::discover_with(None, &all()).unwrap();
    assert_eq!(source, CredentialsSource::EnvVar(from_env.clone()));
    assert!(matches!(creds, Credentials::AuthorizedUser(ref u) if u.token_uri == "https://t/e"));
    // 3. Then gcloud's file under HOME, or under CLOUDSDK_CONFIG.
    let (_, source) =
        Credentials::discover_with(None, &env_of(vec![("HOME", home.clone())])).unwrap();
    assert_eq!(source, CredentialsSource::Gcloud(gcloud_file.clone()));
    let (_, source) =
        Credentials::discover_with(None, &env_of(vec![("CLOUDSDK_CONFIG", gcloud.clone())]))
            .unwrap();
    assert_eq!(source, CredentialsSource::Gcloud(gcloud_file));
    // 4. Then the metadata server.
    let empty_home = dir.path().join("empty");
    let (creds, source) =
        Credentials::discover_with(None, &env_of(vec![("HOME", empty_home.clone())])).unwrap();
    assert_eq!(source, CredentialsSource::MetadataServer);
    assert!(
        matches!(creds, Credentials::Metadata { ref base_url } if base_url == "http://metadata.google.internal")
    );
    let (creds, _) = Credentials::discover_with(
        None,
        &env_of(vec![
            ("HOME", empty_home),
            ("GCE_METADATA_HOST", "127.0.0.1:1".into()),
        ]),
    )
    .unwrap();
    assert!(
        matches!(creds, Credentials::Metadata { ref base_url } if base_url == "http://127.0.0.1:1")
    );
}

#[test]
fn a_bad_credentials_setting_is_an_error_not_a_fallthrough() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = Credentials::discover_with(
        None,
        &env_of(vec![("GOOGLE_APPLICATION_CREDENTIALS", missing.clone())]),
    )
    .unwrap_err();
    assert!(
        matches!(err, AuthError::ReadFile { ref path, .. } if *path == missing),
        "{err}"
    );
    let odd = write(dir.path(), "odd.json", r#"{"type":"external_account"}"#);
    let err = Credentials::from_file(&odd).unwrap_err();
    assert!(err.to_string().contains("external_account"), "{err}");
    let broken = write(dir.path(), "broken.json", "{");
    assert!(matches!(
        Credentials::from_file(&broken),
        Err(AuthError::ParseFile { .. })
    ));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let creds = service_account("https://t/a");
    let text = format!("{creds:?}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let user = Credentials::from_json(
        &authorized_user_json("https://t", "refresh-xyz"),
        Path::new("u"),
    )
    .unwrap();
    let text = format!("{user:?}");
    assert!(
        !text.contains("refresh-xyz") && !text.contains("very-secret"),
        "{text}"
    );
}

#[tokio::test]
async fn service_account_token_is_fetched_and_cached() {
    let server = TokenServer::start(3600).await.unwrap();
    let source = TokenSource::new(service_account(&format!("{}/token", server.base_url))).unwrap();
    let first = source.token().await.unwrap().unwrap();
    let second = source.token().await.unwrap().unwrap();
    assert_eq!(first.secret(), "test-token-1");
    assert_eq!(first, second);
    assert_eq!(server.requests(), 1);
    assert_eq!(format!("{first:?}"), "AccessToken(<redacted>)");
    assert!(!format!("{source:?}").contains("test-token"));
}

#[tokio::test]
async fn a_token_near_expiry_is_renewed() {
    // Lifetime under the renewal margin: every call needs a new token.
    let server = TokenServer::start(60).await.unwrap();
    let source = TokenSource::new(service_account(&format!("{}/token", server.base_url))).unwrap();
    source.token().await.unwrap();
    let second = source.token().await.unwrap().unwrap();
    assert_eq!(second.secret(), "test-token-2");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn authorized_user_refresh_and_refusal() {
    let server = TokenServer::start(3600).await.unwrap();
    let uri = format!("{}/token", server.base_url);
    let good = Credentials::from_json(&authorized_user_json(&uri, "good-refresh"), Path::new("u"))
        .unwrap();
    let token = TokenSource::new(good)
        .unwrap()
        .token()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.bearer(), "Bearer test-token-1");

    let bad =
        Credentials::from_json(&authorized_user_json(&uri, "revoked"), Path::new("u")).unwrap();
    let err = TokenSource::new(bad).unwrap().token().await.unwrap_err();
    assert!(
        matches!(err, AuthError::Refused { status: 400, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn metadata_server_token() {
    let server = TokenServer::start(3600).await.unwrap();
    let source = TokenSource::new(Credentials::Metadata {
        base_url: server.base_url.clone(),
    })
    .unwrap();
    assert_eq!(
        source.token().await.unwrap().unwrap().secret(),
        "test-token-1"
    );
}

#[tokio::test]
async fn no_credentials_means_no_token() {
    let source = TokenSource::none().unwrap();
    assert!(source.token().await.unwrap().is_none());
}
