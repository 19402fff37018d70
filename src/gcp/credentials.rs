//! Where Google credentials come from, in gcloud's and Application Default
//! Credentials' order: the explicit account file (`--account-file`, the
//! template's `account_file`), then `GOOGLE_APPLICATION_CREDENTIALS`, then
//! gcloud's `application_default_credentials.json` (under `CLOUDSDK_CONFIG`,
//! else `~/.config/gcloud`), then the metadata server of the instance kiln
//! runs on. Against local emulators no credentials are needed:
//! [`Credentials::None`].
//!
//! Only the finding happens here; turning credentials into tokens is
//! `google-cloud-auth`'s job ([`super::auth`]).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::auth::AuthError;

/// The environment as a function, so lookups can be tested without
/// touching the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A variable's value, unless unset or empty.
pub(crate) fn non_empty(env: Env<'_>, name: &str) -> Option<OsString> {
    env(name).filter(|v| !v.is_empty())
}

/// gcloud's configuration directory: `CLOUDSDK_CONFIG`, else
/// `~/.config/gcloud`.
pub(crate) fn gcloud_config_dir(env: Env<'_>) -> Option<PathBuf> {
    non_empty(env, "CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| non_empty(env, "HOME").map(|home| Path::new(&home).join(".config/gcloud")))
}

/// The kinds of credentials file kiln can use, by their `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A service account key, as downloaded from the console.
    ServiceAccount,
    /// A user's refresh token, as `gcloud auth application-default login` writes it.
    AuthorizedUser,
    /// Workload identity federation: a token from another identity
    /// provider (GitHub Actions, GitLab, AWS, ...) exchanged at Google's STS.
    ExternalAccount,
    /// Workforce identity federation with a refresh token.
    ExternalAccountAuthorizedUser,
    /// Other credentials acting as a service account through IAM.
    ImpersonatedServiceAccount,
}

impl FileKind {
    const ALL: [(&'static str, FileKind); 5] = [
        ("service_account", FileKind::ServiceAccount),
        ("authorized_user", FileKind::AuthorizedUser),
        ("external_account", FileKind::ExternalAccount),
        (
            "external_account_authorized_user",
            FileKind::ExternalAccountAuthorizedUser,
        ),
        (
            "impersonated_service_account",
            FileKind::ImpersonatedServiceAccount,
        ),
    ];

    fn from_type(name: &str) -> Option<FileKind> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind)
    }

    fn known_types() -> String {
        Self::ALL.map(|(n, _)| n).join(", ")
    }
}

/// A credentials JSON file, read and of a known kind; made by
/// [`Credentials::from_file`]. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct CredentialsFile {
    path: PathBuf,
    kind: FileKind,
    json: serde_json::Value,
}

impl fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl CredentialsFile {
    /// Reads a credentials file.
    pub(crate) fn read(path: &Path) -> Result<CredentialsFile, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses credentials JSON; `path` names it in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<CredentialsFile, AuthError> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|source| AuthError::ParseFile {
                path: path.to_path_buf(),
                source,
            })?;
        let kind_name = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let kind = FileKind::from_type(kind_name).ok_or_else(|| AuthError::UnsupportedKind {
            path: path.to_path_buf(),
            kind: kind_name.to_string(),
            known: FileKind::known_types(),
        })?;
        Ok(CredentialsFile {
            path: path.to_path_buf(),
            kind,
            json,
        })
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What kind of credentials it holds.
    pub(crate) fn kind(&self) -> FileKind {
        self.kind
    }

    /// The project the file names: a key's `project_id`, else the
    /// `quota_project_id` gcloud writes into user credentials.
    pub(crate) fn project(&self) -> Option<&str> {
        ["project_id", "quota_project_id"]
            .iter()
            .find_map(|key| self.json.get(key)?.as_str().filter(|p| !p.is_empty()))
    }

    /// The JSON, for `google-cloud-auth`'s builders.
    pub(crate) fn json(&self) -> &serde_json::Value {
        &self.json
    }
}

/// What proves kiln's identity to Google.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// No `Authorization` header: for local emulators and fakes.
    None,
    /// A credentials file of any kind Google's libraries accept.
    File(CredentialsFile),
    /// The metadata server of the GCE instance (or GKE pod) kiln runs on.
    Metadata {
        /// `http://HOST` in place of the real server (`GCE_METADATA_HOST`).
        endpoint: Option<String>,
    },
}

/// Where [`Credentials::discover`] found the credentials, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSource {
    /// `--account-file` or the template's `account_file`.
    AccountFile(PathBuf),
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    EnvVar(PathBuf),
    /// gcloud's `application_default_credentials.json`.
    Gcloud(PathBuf),
    /// The metadata server.
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

impl Credentials {
    /// Reads a credentials file of any supported kind.
    pub fn from_file(path: &Path) -> Result<Credentials, AuthError> {
        CredentialsFile::read(path).map(Credentials::File)
    }

    /// Parses credentials JSON; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Credentials, AuthError> {
        CredentialsFile::parse(text, path).map(Credentials::File)
    }

    /// Finds credentials the way gcloud and Google's client libraries do,
    /// after the explicit `account_file`.
    pub fn discover(
        account_file: Option<&Path>,
    ) -> Result<(Credentials, CredentialsSource), AuthError> {
        Self::discover_with(account_file, &process_env)
    }

    /// [`Credentials::discover`] in the environment `env`.
    pub(crate) fn discover_with(
        account_file: Option<&Path>,
        env: Env<'_>,
    ) -> Result<(Credentials, CredentialsSource), AuthError> {
        if let Some((file, source)) = find_file(account_file, env)? {
            return Ok((Credentials::File(file), source));
        }
        let endpoint = non_empty(env, "GCE_METADATA_HOST")
            .map(|host| format!("http://{}", host.to_string_lossy()));
        Ok((
            Credentials::Metadata { endpoint },
            CredentialsSource::MetadataServer,
        ))
    }
}

/// The credentials file the lookup order finds, if any (the metadata
/// server being the last resort, it has none).
pub(crate) fn find_file(
    account_file: Option<&Path>,
    env: Env<'_>,
) -> Result<Option<(CredentialsFile, CredentialsSource)>, AuthError> {
    if let Some(path) = account_file {
        let file = CredentialsFile::read(path)?;
        return Ok(Some((file, CredentialsSource::AccountFile(path.into()))));
    }
    if let Some(path) = non_empty(env, "GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from) {
        // An explicit setting that points nowhere is an error, not a
        // reason to fall through to other credentials silently.
        let file = CredentialsFile::read(&path)?;
        return Ok(Some((file, CredentialsSource::EnvVar(path))));
    }
    if let Some(dir) = gcloud_config_dir(env) {
        let path = dir.join("application_default_credentials.json");
        if path.is_file() {
            let file = CredentialsFile::read(&path)?;
            return Ok(Some((file, CredentialsSource::Gcloud(path))));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment made of the given variables only.
    pub(crate) fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    pub(crate) fn write(dir: &Path, name: &str, json: serde_json::Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    fn user(token_uri: &str) -> serde_json::Value {
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "cid",
            "client_secret": "very-secret",
            "refresh_token": "r",
            "token_uri": token_uri,
        })
    }

    fn token_uri(creds: &Credentials) -> &str {
        match creds {
            Credentials::File(file) => file.json()["token_uri"].as_str().unwrap(),
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn adc_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let account = write(dir.path(), "account.json", user("https://t/a"));
        let from_env = write(dir.path(), "env.json", user("https://t/e"));
        let home = dir.path().join("home");
        let gcloud = home.join(".config/gcloud");
        let gcloud_file = write(
            &gcloud,
            "application_default_credentials.json",
            user("https://t/g"),
        );
        let all = env_of(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", &from_env),
            ("HOME", &home),
        ]);

        // 1. The explicit account file beats everything.
        let (creds, source) = Credentials::discover_with(Some(&account), &all).unwrap();
        assert_eq!(source, CredentialsSource::AccountFile(account.clone()));
        assert_eq!(token_uri(&creds), "https://t/a");
        // 2. Then GOOGLE_APPLICATION_CREDENTIALS.
        let (creds, source) = Credentials::discover_with(None, &all).unwrap();
        assert_eq!(source, CredentialsSource::EnvVar(from_env.clone()));
        assert_eq!(token_uri(&creds), "https://t/e");
        // 3. Then gcloud's file under HOME, or under CLOUDSDK_CONFIG.
        let (_, source) = Credentials::discover_with(None, &env_of(&[("HOME", &home)])).unwrap();
        assert_eq!(source, CredentialsSource::Gcloud(gcloud_file.clone()));
        let elsewhere = dir.path().join("elsewhere");
        let (_, source) = Credentials::discover_with(
            None,
            &env_of(&[("CLOUDSDK_CONFIG", &gcloud), ("HOME", &elsewhere)]),
        )
        .unwrap();
        assert_eq!(source, CredentialsSource::Gcloud(gcloud_file));
        // 4. Then the metadata server, at GCE_METADATA_HOST if set.
        let (creds, source) =
            Credentials::discover_with(None, &env_of(&[("HOME", &elsewhere)])).unwrap();
        assert_eq!(source, CredentialsSource::MetadataServer);
        assert!(
            matches!(creds, Credentials::Metadata { endpoint: None }),
            "{creds:?}"
        );
        let (creds, _) = Credentials::discover_with(
            None,
            &env_of(&[
                ("HOME", &elsewhere),
                ("GCE_METADATA_HOST", Path::new("127.0.0.1:1")),
            ]),
        )
        .unwrap();
        assert!(
            matches!(creds, Credentials::Metadata { endpoint: Some(ref e) } if e == "http://127.0.0.1:1"),
            "{creds:?}"
        );
    }

    #[test]
    fn a_bad_credentials_setting_is_an_error_not_a_fallthrough() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = Credentials::discover_with(
            None,
            &env_of(&[("GOOGLE_APPLICATION_CREDENTIALS", &missing)]),
        )
        .unwrap_err();
        assert!(
            matches!(err, AuthError::ReadFile { ref path, .. } if *path == missing),
            "{err}"
        );
        let odd = write(
            dir.path(),
            "odd.json",
            serde_json::json!({"type": "gdch_service_account"}),
        );
        let err = Credentials::from_file(&odd).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("gdch_service_account") && text.contains("external_account"),
            "{text}"
        );
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{").unwrap();
        assert!(matches!(
            Credentials::from_file(&broken),
            Err(AuthError::ParseFile { .. })
        ));
    }

    #[test]
    fn every_kind_google_writes_is_known() {
        for (name, kind) in FileKind::ALL {
            let file =
                CredentialsFile::parse(&format!(r#"{{"type":"{name}"}}"#), Path::new("f")).unwrap();
            assert_eq!(file.kind(), kind);
        }
    }

    #[test]
    fn the_project_a_file_names() {
        let parse = |json: serde_json::Value| {
            CredentialsFile::parse(&json.to_string(), Path::new("f")).unwrap()
        };
        let key = parse(serde_json::json!({"type": "service_account", "project_id": "p1"}));
        assert_eq!(key.project(), Some("p1"));
        let user = parse(serde_json::json!({"type": "authorized_user", "quota_project_id": "q"}));
        assert_eq!(user.project(), Some("q"));
        let none = parse(serde_json::json!({"type": "external_account", "project_id": ""}));
        assert_eq!(none.project(), None);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let creds = Credentials::from_json(&user("https://t").to_string(), Path::new("u")).unwrap();
        let text = format!("{creds:?}");
        assert!(
            !text.contains("very-secret") && !text.contains("refresh_token"),
            "{text}"
        );
        assert!(text.contains("AuthorizedUser"), "{text}");
    }
}
