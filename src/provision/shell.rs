//! The `shell` provisioner: upload a script to the guest, run it through
//! `execute_command`, check its exit code, remove it.

use std::time::Instant;

use super::{Context, ProvisionError, describe_codes, env::flatten_env};
use crate::plan::render_late;
use crate::plan::{ShellConfig, ShellSource};
use crate::ssh::{ExitStatus, SshError};

/// Runs the inline script, or each script in turn, with Packer's
/// environment variables.
pub async fn run(config: &ShellConfig, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    let mut env = ctx.builtin_env();
    env.extend(config.environment.iter().cloned());
    let vars = flatten_env(&env);

    match &config.source {
        ShellSource::Inline(lines) => {
            let mut script = format!("#!{}\n", config.inline_shebang);
            for line in lines {
                script.push_str(line);
                script.push('\n');
            }
            (ctx.say)("Provisioning with shell script: <inline>");
            run_script(config, ctx, script.as_bytes(), &vars).await
        }
        ShellSource::Scripts(paths) => {
            for path in paths {
                (ctx.say)(&format!(
                    "Provisioning with shell script: {}",
                    path.display()
                ));
                let script =
                    tokio::fs::read(path)
                        .await
                        .map_err(|source| ProvisionError::Local {
                            what: format!("cannot read script {}", path.display()),
                            source,
                        })?;
                run_script(config, ctx, &script, &vars).await?;
            }
            Ok(())
        }
    }
}

fn remote_path(config: &ShellConfig) -> String {
    let file = match &config.remote_file {
        Some(name) => name.clone(),
        None => format!("script_{}.sh", rand::random_range(0..10_000u32)),
    };
    format!("{}/{}", config.remote_folder.trim_end_matches('/'), file)
}

async fn run_script(
    config: &ShellConfig,
    ctx: &mut Context<'_>,
    script: &[u8],
    vars: &str,
) -> Result<(), ProvisionError> {
    let path = remote_path(config);
    upload_with_retry(config, ctx, script, &path).await?;

    let command = render_late(&config.execute_command, &[("Vars", vars), ("Path", &path)]);
    let output = ctx.output;
    let say = ctx.say;
    let guest = ctx.guest()?;
    let status = guest
        .session()
        .await?
        .exec(&command, &mut |_, line| output(line))
        .await;

    let outcome = match status {
        Ok(ExitStatus::Code(code)) if config.valid_exit_codes.contains(&i64::from(code)) => Ok(()),
        Ok(ExitStatus::Code(code)) => Err(ProvisionError::ExitCode {
            code: i64::from(code),
            valid: describe_codes(&config.valid_exit_codes),
        }),
        Ok(ExitStatus::Signal(signal)) => Err(ProvisionError::Signal(signal)),
        Ok(ExitStatus::Disconnected) | Err(SshError::Protocol(_)) if config.expect_disconnect => {
            say("The guest disconnected, as expected; reconnecting for what follows.");
            guest.disconnected().await;
            // The script may have removed itself with the guest; a reboot
            // also empties most /tmp folders.
            return Ok(());
        }
        Ok(ExitStatus::Disconnected) => {
            guest.disconnected().await;
            Err(ProvisionError::Disconnected)
        }
        Err(err) => Err(err.into()),
    };

    // The script ended and said how: the connection works, the script can
    // go. After a broken connection there is nothing to clean up with,
    // and reconnecting (to a guest that may be gone) would only wait, and
    // put its own error in place of the one that matters.
    let connection_works = matches!(
        outcome,
        Ok(()) | Err(ProvisionError::ExitCode { .. } | ProvisionError::Signal(_))
    );
    if !config.skip_clean && connection_works {
        remove_script(guest, &path, output).await;
    }
    outcome
}

/// Best effort and bounded: a failure here is logged, never reported in
/// place of the script's outcome.
async fn remove_script(
    guest: &mut crate::ssh::Guest,
    path: &str,
    output: &(dyn Fn(&str) + Send + Sync),
) {
    let cleanup = format!("rm -f {}", crate::ssh::shell_quote(path));
    let Some(session) = guest.live_session() else {
        return;
    };
    let removed = tokio::time::timeout(
        CLEANUP_LIMIT,
        session.exec(&cleanup, &mut |_, line| output(line)),
    )
    .await;
    match removed {
        Ok(Ok(ExitStatus::Code(0))) => {}
        Ok(ended) => tracing::debug!(%path, ?ended, "could not remove the script"),
        Err(_) => tracing::debug!(%path, "removing the script took too long"),
    }
}

/// Removing the script is one short command.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Uploads the script, reconnecting and trying again until
/// `start_retry_timeout` when the guest is not reachable yet (after a reboot
/// in an earlier provisioner, for one).
async fn upload_with_retry(
    config: &ShellConfig,
    ctx: &mut Context<'_>,
    script: &[u8],
    path: &str,
) -> Result<(), ProvisionError> {
    let started = Instant::now();
    let guest = ctx.guest()?;
    loop {
        let attempt = match guest.session().await {
            Ok(session) => session.upload_bytes(script, path, 0o755).await,
            Err(err) => Err(err),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(err) if started.elapsed() < config.start_retry_timeout && is_connection(&err) => {
                guest.disconnected().await;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn is_connection(err: &SshError) -> bool {
    matches!(err, SshError::Protocol(_) | SshError::Timeout { .. })
}
