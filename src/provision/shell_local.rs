//! The `shell-local` provisioner: run commands on the host.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Context, ProvisionError, describe_codes, env::flatten_env};
use crate::plan::render_late;
use crate::plan::{ShellLocalConfig, ShellLocalSource};

/// Runs the inline lines, the command, or each script in turn, as a
/// local script.
pub async fn run(config: &ShellLocalConfig, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    if !config.only_on.is_empty() && !config.only_on.iter().any(|os| os == std::env::consts::OS) {
        (ctx.say)("Skipping shell-local due to runtime OS");
        return Ok(());
    }
    let mut env = ctx.builtin_env();
    env.extend(config.environment.iter().cloned());
    let vars = flatten_env(&env);

    let inline = |lines: &[String]| -> Result<tempfile::TempPath, ProvisionError> {
        let mut script = format!("#!{}\n", config.inline_shebang);
        for line in lines {
            script.push_str(line);
            script.push('\n');
        }
        write_temp_script(&script)
    };
    match &config.source {
        ShellLocalSource::Inline(lines) => {
            let script = inline(lines)?;
            (ctx.say)("Running local shell script: <inline>");
            run_script(config, ctx, &script, &env, &vars).await
        }
        ShellLocalSource::Command(command) => {
            let script = inline(std::slice::from_ref(command))?;
            (ctx.say)(&format!("Running local command: {command}"));
            run_script(config, ctx, &script, &env, &vars).await
        }
        ShellLocalSource::Scripts(paths) => {
            for path in paths {
                (ctx.say)(&format!("Running local shell script: {}", path.display()));
                run_script(config, ctx, path, &env, &vars).await?;
            }
            Ok(())
        }
    }
}

fn write_temp_script(script: &str) -> Result<tempfile::TempPath, ProvisionError> {
    let local = |source| ProvisionError::Local {
        what: "cannot write a temporary script".to_string(),
        source,
    };
    let mut file = tempfile::Builder::new()
        .prefix("kiln-shell-local-")
        .suffix(".sh")
        .tempfile()
        .map_err(local)?;
    file.write_all(script.as_bytes()).map_err(local)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(local)?;
    Ok(file.into_temp_path())
}

async fn run_script(
    config: &ShellLocalConfig,
    ctx: &Context<'_>,
    script: &Path,
    env: &[(String, String)],
    vars: &str,
) -> Result<(), ProvisionError> {
    let script_text = script.display().to_string();
    let argv: Vec<String> = config
        .execute_command
        .iter()
        .map(|arg| render_late(arg, &[("Vars", vars), ("Script", &script_text)]))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Err(ProvisionError::Invalid(
            "execute_command is empty".to_string(),
        ));
    };
    let mut command = tokio::process::Command::new(program);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    let status = super::local::run(command, program, ctx.output, &ctx.cancel).await?;
    match status.code() {
        Some(code) if config.valid_exit_codes.contains(&i64::from(code)) => Ok(()),
        Some(code) => Err(ProvisionError::ExitCode {
            code: i64::from(code),
            valid: describe_codes(&config.valid_exit_codes),
        }),
        None => Err(ProvisionError::Signal(format!("{status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cancel ends the command and what it started in the background,
    /// not just the shell kiln spawned.
    #[tokio::test]
    async fn a_cancel_kills_the_whole_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let config = ShellLocalConfig {
            source: ShellLocalSource::Command(format!(
                "sleep 600 & echo $! > {}; wait",
                pid_file.display()
            )),
            environment: Vec::new(),
            execute_command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "{{.Vars}} {{.Script}}".into(),
            ],
            inline_shebang: "/bin/sh -e".into(),
            valid_exit_codes: vec![0],
            only_on: Vec::new(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let quiet = |_: &str| {};
        let mut ctx = Context {
            build_name: "t",
            builder_type: "qemu",
            guest: None,
            output: &quiet,
            say: &quiet,
            cancel: cancel.clone(),
        };
        let watcher = {
            let pid_file = pid_file.clone();
            tokio::spawn(async move {
                while std::fs::metadata(&pid_file).map_or(true, |m| m.len() == 0) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                cancel.cancel();
            })
        };
        let err = run(&config, &mut ctx).await.unwrap_err();
        watcher.await.unwrap();
        assert!(matches!(err, ProvisionError::Cancelled), "{err}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Killed: gone, or a zombie until init reaps it. (The bound only
        // keeps a broken kill from hanging the suite.)
        let mut alive = true;
        for _ in 0..6000 {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
                alive = false;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!alive, "the background sleep outlived the cancel");
    }
}
