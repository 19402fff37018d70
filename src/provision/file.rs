//! The `file` provisioner: copy files and directories to or from the guest,
//! with Packer's trailing-slash rules.

use std::path::{Path, PathBuf};

use super::{Context, ProvisionError};
use crate::plan::{Direction, FileConfig, FileSource};

/// Copies the content, or each source in turn, in the configured direction.
pub async fn run(config: &FileConfig, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    match (&config.source, config.direction) {
        (FileSource::Content(content), _) => {
            (ctx.say)(&format!("Uploading content to {}", config.destination));
            let session = ctx.guest()?.session().await?;
            session
                .upload_bytes(content.as_bytes(), &config.destination, 0o644)
                .await?;
            Ok(())
        }
        (FileSource::Paths(sources), Direction::Upload) => {
            check_many(sources, &config.destination)?;
            for source in sources {
                upload(source, &config.destination, ctx).await?;
            }
            Ok(())
        }
        (FileSource::Paths(sources), Direction::Download) => {
            check_many(sources, &config.destination)?;
            for source in sources {
                download(source, &config.destination, ctx).await?;
            }
            Ok(())
        }
    }
}

/// Several sources can only go into a directory.
fn check_many(sources: &[String], destination: &str) -> Result<(), ProvisionError> {
    if sources.len() > 1 && !destination.ends_with('/') {
        return Err(ProvisionError::Invalid(format!(
            "destination {destination:?} must end with '/' when there are several sources"
        )));
    }
    Ok(())
}

/// The final remote or local path for one source, by Packer's rules: a
/// directory source without a trailing slash lands inside the destination
/// under its own name, one with a trailing slash has its contents copied
/// into the destination; a file goes to the destination itself, or inside it
/// when the destination ends with '/'.
pub(crate) fn target_path(source: &str, source_is_dir: bool, destination: &str) -> String {
    let base = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let into_dir = |dest: &str| format!("{}/{}", dest.trim_end_matches('/'), base);
    if source_is_dir {
        if source.ends_with('/') {
            destination.to_string()
        } else {
            into_dir(destination)
        }
    } else if destination.ends_with('/') {
        into_dir(destination)
    } else {
        destination.to_string()
    }
}

async fn upload(
    source: &str,
    destination: &str,
    ctx: &mut Context<'_>,
) -> Result<(), ProvisionError> {
    let local = PathBuf::from(source);
    let metadata = tokio::fs::metadata(&local)
        .await
        .map_err(|err| ProvisionError::Local {
            what: format!("cannot read upload source {source}"),
            source: err,
        })?;
    let target = target_path(source, metadata.is_dir(), destination);
    (ctx.say)(&format!("Uploading {source} => {target}"));
    let session = ctx.guest()?.session().await?;
    if destination.ends_with('/') && !metadata.is_dir() {
        // Packer creates a missing destination directory for file uploads.
        let parent = destination.trim_end_matches('/');
        if !parent.is_empty() {
            let mkdir = format!("mkdir -p {}", crate::ssh::shell_quote(parent));
            session.exec(&mkdir, &mut |_, _| {}).await?;
        }
    }
    session.upload(&local, &target).await?;
    Ok(())
}

async fn download(
    source: &str,
    destination: &str,
    ctx: &mut Context<'_>,
) -> Result<(), ProvisionError> {
    let say = ctx.say;
    let session = ctx.guest()?.session().await?;
    let is_dir = session.is_dir(source.trim_end_matches('/')).await?;
    let target = target_path(source, is_dir, destination);
    say(&format!("Downloading {source} => {target}"));
    let local = Path::new(&target);
    let parent = if is_dir { Some(local) } else { local.parent() };
    if let Some(parent) = parent.filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|err| ProvisionError::Local {
                what: format!("cannot create {}", parent.display()),
                source: err,
            })?;
    }
    session
        .download(source.trim_end_matches('/'), local)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::target_path;

    #[test]
    fn file_to_exact_path() {
        assert_eq!(target_path("a/b.txt", false, "/etc/c.txt"), "/etc/c.txt");
    }

    #[test]
    fn file_into_directory() {
        assert_eq!(target_path("a/b.txt", false, "/etc/"), "/etc/b.txt");
    }

    #[test]
    fn directory_without_slash_keeps_its_name() {
        assert_eq!(target_path("conf/app", true, "/etc"), "/etc/app");
        assert_eq!(target_path("conf/app", true, "/etc/"), "/etc/app");
    }

    #[test]
    fn directory_with_slash_copies_contents() {
        assert_eq!(target_path("conf/app/", true, "/etc/app"), "/etc/app");
    }
}
