//! The `ansible` provisioner: `ansible-playbook` on this machine, logging
//! in to the guest's forwarded SSH port with the build's user and key.
//!
//! Packer puts an SSH proxy of its own between Ansible and the guest; kiln
//! lets Ansible connect straight to the port QEMU forwards on 127.0.0.1
//! (Packer's `use_proxy: false`), so what Ansible sees is the guest's own
//! SSH server.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Context, ProvisionError};
use crate::plan::AnsibleConfig;
use crate::plan::render_late;
use crate::ssh::{Auth, SshConfig};

/// What kiln gives ssh unless `ansible_ssh_extra_args` says otherwise: the
/// build's key only, and no entry for the guest's throw-away host key in
/// the user's `known_hosts`.
const SSH_EXTRA_ARGS: &str = "-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null";

/// Ansible's own ssh arguments without the master connection it keeps for
/// 60s: a persisting master would outlive the build (and the guest).
const SSH_ARGS: &str = "-C -o ControlMaster=no";

/// Runs galaxy (with `galaxy_file`), then the playbook.
pub async fn run(config: &AnsibleConfig, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    (ctx.say)("Provisioning with Ansible...");
    let login = ctx.guest()?.login().clone();
    let scratch =
        crate::tmp::private_dir("kiln-ansible-").map_err(|source| ProvisionError::Local {
            what: "cannot make a temporary directory for the inventory".to_string(),
            source,
        })?;
    let inventory = match &config.inventory_file {
        Some(path) => Inventory::Given(path.clone()),
        None => {
            let dir = config
                .inventory_directory
                .as_deref()
                .unwrap_or(scratch.path());
            let text = inventory_text(config, &login);
            let file = write_private(dir, "packer-provisioner-ansible", &text)?;
            if config.keep_inventory_file {
                let (_, path) = file.keep().map_err(|err| ProvisionError::Local {
                    what: "cannot keep the inventory file".to_string(),
                    source: err.error,
                })?;
                Inventory::Given(path)
            } else {
                Inventory::Temporary(file)
            }
        }
    };
    if let Some(galaxy_file) = &config.galaxy_file {
        galaxy(config, galaxy_file, ctx).await?;
    }
    let password_file = match &login.auth {
        Auth::Password(password) if !names_password(&config.extra_arguments) => {
            let vars = serde_json::json!({ "ansible_password": password }).to_string();
            Some(write_private(scratch.path(), "password-", &vars)?)
        }
        _ => None,
    };
    let args = arguments(
        config,
        ctx,
        &login,
        inventory.path(),
        password_file.as_ref().map(|f| f.path()),
    );
    (ctx.say)(&format!(
        "Executing Ansible: {} {}",
        config.command,
        args.join(" ")
    ));
    let mut command = tokio::process::Command::new(&config.command);
    command.args(&args).envs(environment(config));
    let status = super::local::run(command, &config.command, ctx.output, &ctx.cancel).await?;
    check(&config.command, status)
}

/// The inventory Ansible is given: the template's, or one kiln wrote.
enum Inventory {
    Given(PathBuf),
    Temporary(tempfile::NamedTempFile),
}

impl Inventory {
    fn path(&self) -> &Path {
        match self {
            Inventory::Given(path) => path,
            Inventory::Temporary(file) => file.path(),
        }
    }
}

/// Packer's inventory: the host line, again under each of `groups`, then
/// each of `empty_groups` with no host.
fn inventory_text(config: &AnsibleConfig, login: &SshConfig) -> String {
    let user = config.user.as_deref().unwrap_or(&login.username);
    let port = login.port.to_string();
    let host = match &config.inventory_file_template {
        Some(template) => render_late(
            template,
            &[
                ("HostAlias", &config.host_alias),
                ("Host", &login.host),
                ("Port", &port),
                ("User", user),
            ],
        ),
        None => format!(
            "{} ansible_host={} ansible_user={user} ansible_port={port}\n",
            config.host_alias, login.host
        ),
    };
    let mut text = host.clone();
    for group in &config.groups {
        text.push_str(&format!("[{group}]\n{host}"));
    }
    for group in &config.empty_groups {
        text.push_str(&format!("[{group}]\n"));
    }
    text
}

/// A new file, mode 0600 from the start, in `dir`.
fn write_private(
    dir: &Path,
    prefix: &str,
    text: &str,
) -> Result<tempfile::NamedTempFile, ProvisionError> {
    let local = |source| ProvisionError::Local {
        what: format!("cannot write a file for Ansible in {}", dir.display()),
        source,
    };
    let mut file = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(local)?;
    file.write_all(text.as_bytes()).map_err(local)?;
    file.flush().map_err(local)?;
    Ok(file)
}

/// Whether the template passes `ansible_password` itself (Packer's
/// `checkArg`).
fn names_password(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg.split('=').any(|part| part == "ansible_password"))
}

/// Packer's command line: the build's variables, the ssh arguments, the
/// template's `extra_arguments`, the credentials, the inventory and the
/// playbook.
fn arguments(
    config: &AnsibleConfig,
    ctx: &Context<'_>,
    login: &SshConfig,
    inventory: &Path,
    password_file: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        "-e".to_string(),
        format!("packer_build_name={:?}", ctx.build_name),
        "-e".to_string(),
        format!("packer_builder_type={}", ctx.builder_type),
    ];
    let ssh_extra_args = if config.ssh_extra_args.is_empty() {
        SSH_EXTRA_ARGS.to_string()
    } else {
        config.ssh_extra_args.join(" ")
    };
    args.push("--ssh-extra-args".to_string());
    args.push(ssh_extra_args);
    args.extend(config.extra_arguments.iter().cloned());
    match (&login.auth, password_file) {
        (_, Some(file)) => {
            args.push("-e".to_string());
            args.push(format!("@{}", file.display()));
        }
        (Auth::KeyFile(key), None) if !names_password(&config.extra_arguments) => {
            args.push("-e".to_string());
            args.push(format!("ansible_ssh_private_key_file={}", key.display()));
        }
        _ => {}
    }
    args.push("-i".to_string());
    args.push(inventory.display().to_string());
    args.push(config.playbook_file.display().to_string());
    args
}

/// kiln's defaults, then `ansible_env_vars` (which win).
fn environment(config: &AnsibleConfig) -> Vec<(String, String)> {
    let mut env = vec![("ANSIBLE_HOST_KEY_CHECKING".to_string(), "False".to_string())];
    if !config.use_sftp {
        env.push(("ANSIBLE_SCP_IF_SSH".to_string(), "True".to_string()));
    }
    let given = |name: &str| {
        std::env::var_os(name).is_some() || config.env_vars.iter().any(|(k, _)| k == name)
    };
    if !given("ANSIBLE_SSH_ARGS") {
        env.push(("ANSIBLE_SSH_ARGS".to_string(), SSH_ARGS.to_string()));
    }
    env.extend(config.env_vars.iter().cloned());
    env
}

/// `ansible-galaxy install` for roles, `collection install` for
/// collections, as the galaxy file lists them (roles when it says
/// neither).
async fn galaxy(
    config: &AnsibleConfig,
    galaxy_file: &Path,
    ctx: &Context<'_>,
) -> Result<(), ProvisionError> {
    let text = tokio::fs::read_to_string(galaxy_file)
        .await
        .map_err(|source| ProvisionError::Local {
            what: format!("cannot read {}", galaxy_file.display()),
            source,
        })?;
    let has = |key: &str| text.lines().any(|line| line.starts_with(key));
    let (roles, collections) = (has("roles:"), has("collections:"));
    let file = galaxy_file.display().to_string();
    let mut runs = Vec::new();
    if roles || !collections {
        let mut args = vec!["install".to_string(), "-r".to_string(), file.clone()];
        if config.galaxy_force_install {
            args.push("-f".to_string());
        }
        if let Some(path) = &config.roles_path {
            args.extend(["-p".to_string(), path.clone()]);
        }
        runs.push(args);
    }
    if collections {
        let mut args = vec![
            "collection".to_string(),
            "install".to_string(),
            "-r".to_string(),
            file,
        ];
        if config.galaxy_force_install {
            args.push("-f".to_string());
        }
        if let Some(path) = &config.collections_path {
            args.extend(["-p".to_string(), path.clone()]);
        }
        runs.push(args);
    }
    for args in runs {
        (ctx.say)(&format!(
            "Executing Ansible Galaxy: {} {}",
            config.galaxy_command,
            args.join(" ")
        ));
        let mut command = tokio::process::Command::new(&config.galaxy_command);
        command.args(&args);
        let status =
            super::local::run(command, &config.galaxy_command, ctx.output, &ctx.cancel).await?;
        check(&config.galaxy_command, status)?;
    }
    Ok(())
}

fn check(program: &str, status: std::process::ExitStatus) -> Result<(), ProvisionError> {
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ProvisionError::CommandFailed {
            program: program.to_string(),
            code,
        }),
        None => Err(ProvisionError::Signal(format!("{status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnsibleConfig {
        AnsibleConfig {
            command: "ansible-playbook".into(),
            playbook_file: "/work/site.yml".into(),
            extra_arguments: Vec::new(),
            env_vars: Vec::new(),
            ssh_extra_args: Vec::new(),
            groups: vec!["web".into(), "db".into()],
            empty_groups: vec!["spare".into()],
            host_alias: "default".into(),
            user: None,
            inventory_file: None,
            inventory_directory: None,
            inventory_file_template: None,
            keep_inventory_file: false,
            galaxy_file: None,
            galaxy_command: "ansible-galaxy".into(),
            galaxy_force_install: false,
            roles_path: None,
            collections_path: None,
            use_sftp: false,
        }
    }

    fn login(auth: Auth) -> SshConfig {
        SshConfig {
            host: "127.0.0.1".into(),
            port: 3456,
            username: "root".into(),
            auth,
            timeout: std::time::Duration::from_secs(1),
            handshake_attempts: 1,
            pty: false,
        }
    }

    #[test]
    fn the_inventory_is_packers_with_the_forwarded_port() {
        let text = inventory_text(&config(), &login(Auth::Password("pw".into())));
        let host = "default ansible_host=127.0.0.1 ansible_user=root ansible_port=3456\n";
        assert_eq!(text, format!("{host}[web]\n{host}[db]\n{host}[spare]\n"));
        assert!(!text.contains("pw"));
    }

    #[test]
    fn a_host_template_and_user_are_honoured() {
        let config = AnsibleConfig {
            user: Some("deploy".into()),
            inventory_file_template: Some(
                "{{ .HostAlias }} {{ .User }}@{{ .Host }}:{{ .Port }}\n".into(),
            ),
            groups: Vec::new(),
            empty_groups: Vec::new(),
            host_alias: "box".into(),
            ..config()
        };
        let text = inventory_text(&config, &login(Auth::KeyFile("/k".into())));
        assert_eq!(text, "box deploy@127.0.0.1:3456\n");
    }

    #[test]
    fn the_command_line_carries_the_key_inventory_and_playbook() {
        let quiet = |_: &str| {};
        let ctx = Context {
            build_name: "web",
            builder_type: "qemu",
            guest: None,
            output: &quiet,
            say: &quiet,
            cancel: Default::default(),
        };
        let config = AnsibleConfig {
            extra_arguments: vec!["-v".into()],
            ..config()
        };
        let args = arguments(
            &config,
            &ctx,
            &login(Auth::KeyFile("/tmp/k/kiln_ed25519".into())),
            Path::new("/tmp/inv"),
            None,
        );
        assert_eq!(
            args,
            [
                "-e",
                "packer_build_name=\"web\"",
                "-e",
                "packer_builder_type=qemu",
                "--ssh-extra-args",
                SSH_EXTRA_ARGS,
                "-v",
                "-e",
                "ansible_ssh_private_key_file=/tmp/k/kiln_ed25519",
                "-i",
                "/tmp/inv",
                "/work/site.yml",
            ]
        );
        // A template that gives the password itself gets no key.
        let config = AnsibleConfig {
            extra_arguments: vec!["-e".into(), "ansible_password=x".into()],
            ..config
        };
        let args = arguments(
            &config,
            &ctx,
            &login(Auth::KeyFile("/k".into())),
            Path::new("/i"),
            None,
        );
        assert!(!args.iter().any(|a| a.contains("private_key")), "{args:?}");
    }

    #[test]
    fn the_templates_environment_wins() {
        let config = AnsibleConfig {
            env_vars: vec![("ANSIBLE_HOST_KEY_CHECKING".into(), "True".into())],
            ..config()
        };
        let env = environment(&config);
        let last = env
            .iter()
            .rev()
            .find(|(k, _)| k == "ANSIBLE_HOST_KEY_CHECKING")
            .unwrap();
        assert_eq!(last.1, "True");
        assert!(
            env.iter()
                .any(|(k, v)| k == "ANSIBLE_SCP_IF_SSH" && v == "True")
        );
    }

    /// Roles and collections are each installed by their own galaxy run,
    /// with Packer's arguments.
    #[tokio::test]
    async fn galaxy_installs_roles_and_collections() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("requirements.yml");
        std::fs::write(&file, "roles:\n  - name: a\ncollections:\n  - name: b\n").unwrap();
        let lines = std::sync::Mutex::new(Vec::new());
        let output = |line: &str| lines.lock().unwrap().push(line.to_string());
        let quiet = |_: &str| {};
        let ctx = Context {
            build_name: "web",
            builder_type: "qemu",
            guest: None,
            output: &output,
            say: &quiet,
            cancel: Default::default(),
        };
        let config = AnsibleConfig {
            galaxy_command: "echo".into(),
            galaxy_force_install: true,
            roles_path: Some("roles".into()),
            collections_path: Some("collections".into()),
            ..config()
        };
        galaxy(&config, &file, &ctx).await.unwrap();
        let file = file.display();
        assert_eq!(
            *lines.lock().unwrap(),
            [
                format!("install -r {file} -f -p roles"),
                format!("collection install -r {file} -f -p collections"),
            ]
        );
        let failing = AnsibleConfig {
            galaxy_command: "false".into(),
            ..config
        };
        let err = galaxy(&failing, Path::new(&file.to_string()), &ctx)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProvisionError::CommandFailed { program, code: 1 } if program == "false"),
            "{err}"
        );
    }
}
