//! The `ansible-local` provisioner: the playbook and what it needs are
//! uploaded to a staging directory in the guest, and `ansible-playbook`
//! runs there against the guest itself (`-c local`).

use std::path::Path;

use super::{Context, ProvisionError};
use crate::plan::{AnsibleLocalConfig, AnsibleLocalPlaybooks};
use crate::ssh::{ExitStatus, shell_quote};

/// The shell's "command not found".
const NOT_FOUND: u32 = 127;

/// Stages the files, runs galaxy (with `galaxy_file`) and each playbook,
/// and removes the staging directory when asked.
pub async fn run(config: &AnsibleLocalConfig, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    (ctx.say)("Provisioning with Ansible...");
    let staging = config.staging_directory.trim_end_matches('/').to_string();
    match &config.playbook_dir {
        Some(dir) => {
            (ctx.say)("Uploading Playbook directory to Ansible staging directory...");
            make_dir(ctx, &staging).await?;
            upload(ctx, dir, &staging).await?;
        }
        None => {
            (ctx.say)("Creating Ansible staging directory...");
            make_dir(ctx, &staging).await?;
        }
    }
    let playbooks = stage_playbooks(config, ctx, &staging).await?;

    let inventory = match &config.inventory_file {
        Some(file) => {
            let remote = join(&staging, &base_name(file));
            (ctx.say)("Uploading inventory file...");
            upload(ctx, file, &remote).await?;
            remote
        }
        None => {
            let remote = join(
                &staging,
                &format!(
                    "packer-provisioner-ansible-local{}",
                    rand::random_range(0..1_000_000_000u32)
                ),
            );
            (ctx.say)("Uploading inventory file...");
            let text = inventory_text(&config.inventory_groups);
            let session = ctx.guest()?.session().await?;
            session
                .upload_bytes(text.as_bytes(), &remote, 0o644)
                .await?;
            remote
        }
    };
    if let Some(file) = &config.galaxy_file {
        (ctx.say)("Uploading galaxy file...");
        upload(ctx, file, &join(&staging, &base_name(file))).await?;
    }
    for (dir, name) in [
        (&config.group_vars, "group_vars"),
        (&config.host_vars, "host_vars"),
    ] {
        if let Some(dir) = dir {
            (ctx.say)(&format!("Uploading {name} directory..."));
            let remote = join(&staging, name);
            make_dir(ctx, &remote).await?;
            upload(ctx, dir, &remote).await?;
        }
    }
    if !config.role_paths.is_empty() {
        (ctx.say)("Uploading role directories...");
        for dir in &config.role_paths {
            let remote = join(&staging, &format!("roles/{}", base_name(dir)));
            make_dir(ctx, &remote).await?;
            upload(ctx, dir, &remote).await?;
        }
    }
    if !config.playbook_paths.is_empty() {
        (ctx.say)("Uploading additional Playbooks...");
        for dir in &config.playbook_paths {
            let remote = join(&staging, &format!("playbooks/{}", base_name(dir)));
            make_dir(ctx, &remote).await?;
            upload(ctx, dir, &remote).await?;
        }
    }

    if let Some(file) = &config.galaxy_file {
        let command = format!(
            "cd {} && {} install -r {} -p {}",
            shell_quote(&staging),
            config.galaxy_command,
            shell_quote(&join(&staging, &base_name(file))),
            shell_quote(&join(&staging, "roles")),
        );
        (ctx.say)(&format!("Executing Ansible Galaxy: {command}"));
        guest_command(ctx, &command, &config.galaxy_command).await?;
    }
    for playbook in playbooks {
        let command = playbook_command(config, ctx, &staging, &playbook, &inventory);
        (ctx.say)(&format!("Executing Ansible: {command}"));
        guest_command(ctx, &command, &config.command).await?;
    }
    if config.clean_staging_directory {
        (ctx.say)("Removing staging directory...");
        let command = format!("rm -rf {}", shell_quote(&staging));
        guest_command(ctx, &command, "rm").await?;
    }
    Ok(())
}

/// Uploads the playbooks and returns their paths in the guest, in order.
/// A playbook inside `playbook_dir` came with it; one outside lands under
/// the staging directory at its full local path, as Packer puts it.
async fn stage_playbooks(
    config: &AnsibleLocalConfig,
    ctx: &mut Context<'_>,
    staging: &str,
) -> Result<Vec<String>, ProvisionError> {
    match &config.playbooks {
        AnsibleLocalPlaybooks::File(file) => {
            (ctx.say)("Uploading main Playbook file...");
            let remote = join(staging, &base_name(file));
            upload(ctx, file, &remote).await?;
            Ok(vec![remote])
        }
        AnsibleLocalPlaybooks::Files(files) => {
            let mut remote = Vec::new();
            for file in files {
                if let Some(inside) = config
                    .playbook_dir
                    .as_deref()
                    .and_then(|dir| file.strip_prefix(dir).ok())
                {
                    remote.push(join(staging, &inside.to_string_lossy()));
                    continue;
                }
                (ctx.say)(&format!("Uploading playbook file: {}", file.display()));
                let target = join(staging, &file.to_string_lossy());
                if let Some((parent, _)) = target.rsplit_once('/') {
                    make_dir(ctx, parent).await?;
                }
                upload(ctx, file, &target).await?;
                remote.push(target);
            }
            Ok(remote)
        }
    }
}

/// Packer's generated inventory: the guest itself, in each group asked for.
fn inventory_text(groups: &[String]) -> String {
    if groups.is_empty() {
        return "127.0.0.1".to_string();
    }
    groups
        .iter()
        .map(|group| format!("[{group}]\n127.0.0.1\n"))
        .collect()
}

/// Packer's command line: run from the staging directory, the build's
/// variables, `extra_arguments` as written, a local connection.
fn playbook_command(
    config: &AnsibleLocalConfig,
    ctx: &Context<'_>,
    staging: &str,
    playbook: &str,
    inventory: &str,
) -> String {
    let mut command = format!(
        "cd {} && {} {} --extra-vars \"packer_build_name={} packer_builder_type={}\"",
        shell_quote(staging),
        config.command,
        shell_quote(playbook),
        ctx.build_name,
        ctx.builder_type,
    );
    for arg in &config.extra_arguments {
        command.push(' ');
        command.push_str(arg);
    }
    command.push_str(&format!(" -c local -i {}", shell_quote(inventory)));
    command
}

async fn guest_command(
    ctx: &mut Context<'_>,
    command: &str,
    program: &str,
) -> Result<(), ProvisionError> {
    let output = ctx.output;
    let status = ctx
        .guest()?
        .session()
        .await?
        .exec(command, &mut |_, line| output(line))
        .await?;
    match status {
        ExitStatus::Code(0) => Ok(()),
        ExitStatus::Code(NOT_FOUND) => Err(ProvisionError::NotInGuest {
            program: program.to_string(),
        }),
        ExitStatus::Code(code) => Err(ProvisionError::CommandFailed {
            program: program.to_string(),
            code: i32::try_from(code).unwrap_or(i32::MAX),
        }),
        ExitStatus::Signal(signal) => Err(ProvisionError::Signal(signal)),
        ExitStatus::Disconnected => {
            ctx.guest()?.disconnected().await;
            Err(ProvisionError::Disconnected)
        }
    }
}

async fn make_dir(ctx: &mut Context<'_>, dir: &str) -> Result<(), ProvisionError> {
    guest_command(ctx, &format!("mkdir -p {}", shell_quote(dir)), "mkdir").await
}

/// A file to the exact path `remote`, or a directory's content into
/// `remote`.
async fn upload(ctx: &mut Context<'_>, local: &Path, remote: &str) -> Result<(), ProvisionError> {
    let session = ctx.guest()?.session().await?;
    session.upload(local, remote).await?;
    Ok(())
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `dir/rest`, with one slash between.
fn join(dir: &str, rest: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        rest.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_inventory_lists_the_guest_in_each_group() {
        assert_eq!(inventory_text(&[]), "127.0.0.1");
        assert_eq!(
            inventory_text(&["web".into(), "db".into()]),
            "[web]\n127.0.0.1\n[db]\n127.0.0.1\n"
        );
    }

    #[test]
    fn playbook_files_outside_the_staging_copy_keep_their_path() {
        assert_eq!(
            join("/tmp/s/", "/home/me/site.yml"),
            "/tmp/s/home/me/site.yml"
        );
        assert_eq!(base_name(&PathBuf::from("/a/roles/web")), "web");
    }
}
