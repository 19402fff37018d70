//! The project to work in when none is given, found as gcloud and Google's
//! libraries find it: `GOOGLE_CLOUD_PROJECT`, `CLOUDSDK_CORE_PROJECT`, the
//! credentials file's project, then gcloud's active configuration.

use std::path::{Path, PathBuf};

use super::auth::AuthError;
use super::credentials::{Env, find_file, gcloud_config_dir, non_empty, process_env};

/// Why no project was found.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The credentials file that names the project cannot be read.
    #[error("cannot read the credentials for their project")]
    Credentials(#[source] AuthError),
    /// A gcloud configuration file exists but cannot be read.
    #[error("cannot read gcloud configuration {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing names a project.
    #[error(
        "no project: give --project, set GOOGLE_CLOUD_PROJECT, or run `gcloud config set project PROJECT`"
    )]
    NotFound,
}

/// The project: `flag` when given, else, in order, `GOOGLE_CLOUD_PROJECT`,
/// `CLOUDSDK_CORE_PROJECT`, the credentials file's `project_id` (or
/// `quota_project_id`), the `[core] project` of gcloud's active
/// configuration. The credentials file is the one auth uses:
/// `account_file`, else `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's
/// application default credentials.
pub fn default_project(
    flag: Option<&str>,
    account_file: Option<&Path>,
) -> Result<String, ProjectError> {
    default_project_with(flag, account_file, &process_env)
}

/// [`default_project`] in the environment `env`.
pub(crate) fn default_project_with(
    flag: Option<&str>,
    account_file: Option<&Path>,
    env: Env<'_>,
) -> Result<String, ProjectError> {
    if let Some(project) = flag.filter(|p| !p.is_empty()) {
        return Ok(project.to_string());
    }
    for var in ["GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"] {
        if let Some(project) = non_empty(env, var) {
            return Ok(project.to_string_lossy().into_owned());
        }
    }
    let found = find_file(account_file, env).map_err(ProjectError::Credentials)?;
    if let Some(project) = found.as_ref().and_then(|(file, _)| file.project()) {
        return Ok(project.to_string());
    }
    if let Some(dir) = gcloud_config_dir(env)
        && let Some(project) = gcloud_project(&dir, env)?
    {
        return Ok(project);
    }
    Err(ProjectError::NotFound)
}

/// The `[core] project` of gcloud's active configuration in `dir`: the one
/// `CLOUDSDK_ACTIVE_CONFIG_NAME` names, else the one in `active_config`,
/// else `default`.
fn gcloud_project(dir: &Path, env: Env<'_>) -> Result<Option<String>, ProjectError> {
    let name = match non_empty(env, "CLOUDSDK_ACTIVE_CONFIG_NAME") {
        Some(name) => name.to_string_lossy().into_owned(),
        None => read_optional(&dir.join("active_config"))?
            .map(|text| text.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "default".to_string()),
    };
    let config = dir.join("configurations").join(format!("config_{name}"));
    Ok(read_optional(&config)?.and_then(|text| ini_value(&text, "core", "project")))
}

/// A file's text; `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ProjectError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProjectError::ReadConfig {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `key`'s value in `[section]` of an INI text as gcloud writes its
/// configurations (`key = value`, `#` and `;` comments); `None` if unset
/// or empty.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == section;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let value = v.trim();
            return (!value.is_empty()).then(|| value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcp::credentials::tests::{env_of, write};

    fn gcloud_config(dir: &Path, name: &str, text: &str) {
        let configs = dir.join("configurations");
        std::fs::create_dir_all(&configs).unwrap();
        std::fs::write(configs.join(format!("config_{name}")), text).unwrap();
    }

    #[test]
    fn lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let gcloud = dir.path().join("gcloud");
        gcloud_config(
            &gcloud,
            "default",
            "[core]\naccount = me@example.com\nproject = from-gcloud\n",
        );
        let key = write(
            dir.path(),
            "key.json",
            serde_json::json!({"type": "service_account", "project_id": "from-key"}),
        );
        let adc = write(
            dir.path(),
            "adc.json",
            serde_json::json!({"type": "authorized_user", "quota_project_id": "from-adc"}),
        );
        let p = |s: &'static str| Path::new(s);
        let full = [
            ("GOOGLE_CLOUD_PROJECT", p("from-google-env")),
            ("CLOUDSDK_CORE_PROJECT", p("from-cloudsdk-env")),
            ("GOOGLE_APPLICATION_CREDENTIALS", adc.as_path()),
            ("CLOUDSDK_CONFIG", gcloud.as_path()),
        ];
        let project = |flag, account: Option<&Path>, vars: &[(&str, &Path)]| {
            default_project_with(flag, account, &env_of(vars)).unwrap()
        };
        assert_eq!(project(Some("flag"), Some(&key), &full), "flag");
        assert_eq!(project(None, Some(&key), &full), "from-google-env");
        assert_eq!(project(None, Some(&key), &full[1..]), "from-cloudsdk-env");
        // The explicit account file is the credentials file, before the
        // one GOOGLE_APPLICATION_CREDENTIALS names.
        assert_eq!(project(None, Some(&key), &full[2..]), "from-key");
        assert_eq!(project(None, None, &full[2..]), "from-adc");
        assert_eq!(project(None, None, &full[3..]), "from-gcloud");
        // An empty setting counts as none.
        assert_eq!(
            project(Some(""), None, &[("GOOGLE_CLOUD_PROJECT", p("")), full[3]]),
            "from-gcloud"
        );
    }

    #[test]
    fn a_credentials_file_without_a_project_falls_through_to_gcloud() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let gcloud = home.join(".config/gcloud");
        gcloud_config(&gcloud, "default", "[core]\nproject = home-project\n");
        write(
            &gcloud,
            "application_default_credentials.json",
            serde_json::json!({"type": "external_account"}),
        );
        let env = env_of(&[("HOME", &home)]);
        assert_eq!(
            default_project_with(None, None, &env).unwrap(),
            "home-project"
        );
    }

    #[test]
    fn the_active_configuration_is_the_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let gcloud = dir.path();
        gcloud_config(gcloud, "default", "[core]\nproject = default-project\n");
        gcloud_config(
            gcloud,
            "work",
            "; gcloud's own comment\n[compute]\nproject = not-core\n[core]\nproject = work-project\n",
        );
        gcloud_config(gcloud, "ci", "[core]\nproject = ci-project\n");
        std::fs::write(gcloud.join("active_config"), "work\n").unwrap();
        let project = |vars: &[(&str, &Path)]| default_project_with(None, None, &env_of(vars));
        assert_eq!(
            project(&[("CLOUDSDK_CONFIG", gcloud)]).unwrap(),
            "work-project"
        );
        assert_eq!(
            project(&[
                ("CLOUDSDK_CONFIG", gcloud),
                ("CLOUDSDK_ACTIVE_CONFIG_NAME", Path::new("ci")),
            ])
            .unwrap(),
            "ci-project"
        );
        std::fs::remove_file(gcloud.join("active_config")).unwrap();
        assert_eq!(
            project(&[("CLOUDSDK_CONFIG", gcloud)]).unwrap(),
            "default-project"
        );
    }

    #[test]
    fn nothing_names_a_project() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("HOME", dir.path())]);
        let err = default_project_with(None, None, &env).unwrap_err();
        assert!(matches!(err, ProjectError::NotFound), "{err}");
        assert!(err.to_string().contains("--project"), "{err}");
        // A configuration with no project set.
        gcloud_config(
            &dir.path().join(".config/gcloud"),
            "default",
            "[core]\nproject =\n",
        );
        assert!(matches!(
            default_project_with(None, None, &env),
            Err(ProjectError::NotFound)
        ));
    }

    #[test]
    fn a_broken_credentials_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let env = env_of(&[("GOOGLE_APPLICATION_CREDENTIALS", &missing)]);
        let err = default_project_with(None, None, &env).unwrap_err();
        assert!(
            matches!(err, ProjectError::Credentials(AuthError::ReadFile { .. })),
            "{err}"
        );
    }

    #[test]
    fn ini_values() {
        let text = "[core]\n  project = p  \n# project = commented\n[other]\nproject = q\n";
        assert_eq!(ini_value(text, "core", "project").as_deref(), Some("p"));
        assert_eq!(ini_value(text, "other", "project").as_deref(), Some("q"));
        assert_eq!(ini_value(text, "core", "account"), None);
        assert_eq!(ini_value("project = top\n", "core", "project"), None);
    }
}
