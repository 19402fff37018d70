//! The GCE instance a `googlecompute` build's guest believes it is: the
//! metadata document served at `metadata.google.internal` (QEMU runs
//! `kiln __gce-metadata DOC` per connection), the SMBIOS serial, the
//! `/etc/hosts` line that makes the name resolve while kiln is logged in,
//! and the startup script, run as root before the provisioners as
//! Packer's `googlecompute` waits for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BuildContext;
use crate::gcp::metadata::{self, HOSTS_LINE};
use crate::plan::GceInstance;
use crate::qemu::GcePlatform;
use crate::ssh::{ExitStatus, Guest, SshError, shell_quote};

/// The hidden command of the kiln binary that serves the metadata.
const METADATA_COMMAND: &str = "__gce-metadata";

/// Why the emulated instance could not be set up, or its startup script
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum GceGuestError {
    /// The metadata document could not be written.
    #[error("cannot write the metadata document {}", path.display())]
    Document {
        /// The document.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// kiln could not find its own binary, the metadata server.
    #[error("cannot find the kiln binary to serve the metadata")]
    Exe(#[source] std::io::Error),
    /// An SSH command or upload failed.
    #[error("ssh")]
    Ssh(#[from] SshError),
    /// The `/etc/hosts` line could not be added or removed.
    #[error("cannot {action} the metadata.google.internal line of /etc/hosts ({status}){}", said_suffix(.said))]
    Hosts {
        /// `add` or `remove`.
        action: &'static str,
        /// How the command ended.
        status: String,
        /// What it printed.
        said: String,
    },
    /// The startup script ended with a non-zero status.
    #[error("startup script exited with status {0}")]
    StartupStatus(u32),
    /// The startup script was killed.
    #[error("startup script was killed by signal {0}")]
    StartupSignal(String),
    /// The connection went away while the startup script ran.
    #[error("the connection to the guest closed while the startup script ran")]
    StartupDisconnected,
    /// The startup script ran longer than `state_timeout`.
    #[error("startup script did not finish within state_timeout ({})", crate::human::duration(*.0))]
    StartupTimeout(Duration),
}

fn said_suffix(said: &str) -> String {
    if said.trim().is_empty() {
        String::new()
    } else {
        format!("; the guest said: {}", said.trim())
    }
}

/// The instance the guest sees: `instance` with the `ssh-keys` entry that
/// gives `public_key` (when kiln generated one) to `ssh_username`.
pub fn with_ssh_key(instance: &GceInstance, public_key: Option<&str>) -> GceInstance {
    let mut instance = instance.clone();
    if let Some(key) = public_key {
        instance.attributes.insert(
            "ssh-keys".to_string(),
            format!("{}:{}", instance.ssh_username, key.trim()),
        );
    }
    instance
}

/// Writes the metadata document into `scratch` and returns what QEMU needs
/// to serve it and to look like GCE.
pub fn prepare(instance: &GceInstance, scratch: &Path) -> Result<GcePlatform, GceGuestError> {
    let doc = scratch.join("gce-metadata.json");
    std::fs::write(&doc, metadata::document(instance).to_string()).map_err(|source| {
        GceGuestError::Document {
            path: doc.clone(),
            source,
        }
    })?;
    let exe = std::env::current_exe().map_err(GceGuestError::Exe)?;
    Ok(GcePlatform {
        metadata_command: metadata_command(&exe, &doc),
        serial: smbios_serial(instance),
    })
}

/// The command QEMU runs per connection: split into words with shell
/// quoting rules (libslirp's `g_shell_parse_argv`), run without a shell.
fn metadata_command(exe: &Path, doc: &Path) -> String {
    format!(
        "{} {METADATA_COMMAND} {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&doc.display().to_string())
    )
}

/// `GoogleCloud-<32 hex digits>`, stable for an instance, as GCE's serial
/// numbers look.
fn smbios_serial(instance: &GceInstance) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(
        format!("{}/{}/{}", instance.project_id, instance.zone, instance.id).as_bytes(),
    );
    format!("GoogleCloud-{}", hex::encode_upper(&digest[..16]))
}

/// Runs `script` with root's rights: directly as root, else through
/// `sudo -n` (the `ssh-keys` user has password-less sudo).
fn as_root(script: &str) -> String {
    let quoted = shell_quote(script);
    format!("if [ \"$(id -u)\" = 0 ]; then sh -c {quoted}; else sudo -n sh -c {quoted}; fi")
}

/// Adds the line only when it is not there, and prints `added` then.
fn add_hosts_script() -> String {
    let line = shell_quote(HOSTS_LINE);
    format!(
        "grep -qxF -- {line} /etc/hosts 2>/dev/null && exit 0; \
         printf '%s\\n' {line} >>/etc/hosts && echo added"
    )
}

/// Removes exactly the line, rewriting the file in place (owner, mode and
/// a symlinked /etc/hosts stay), and checks it is gone.
fn remove_hosts_script() -> String {
    let line = shell_quote(HOSTS_LINE);
    format!(
        "grep -qxF -- {line} /etc/hosts || exit 0; \
         t=$(mktemp) || exit 1; \
         grep -vxF -- {line} /etc/hosts >\"$t\"; \
         cat \"$t\" >/etc/hosts; rm -f \"$t\"; \
         ! grep -qxF -- {line} /etc/hosts"
    )
}

async fn run_as_root(
    guest: &mut Guest,
    script: &str,
    action: &'static str,
) -> Result<Vec<String>, GceGuestError> {
    let session = guest.session().await?;
    let mut lines = Vec::new();
    let status = session
        .exec(&as_root(script), &mut |_, line| {
            lines.push(line.to_string())
        })
        .await?;
    match status {
        ExitStatus::Code(0) => Ok(lines),
        status => Err(GceGuestError::Hosts {
            action,
            status: describe(&status),
            said: lines.join("\n"),
        }),
    }
}

fn describe(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exit code {code}"),
        ExitStatus::Signal(signal) => format!("signal {signal}"),
        ExitStatus::Disconnected => "the connection closed".to_string(),
    }
}

/// Makes `metadata.google.internal` resolve in the guest; true when kiln
/// added the line (and must take it out again).
pub async fn add_hosts_line(ctx: &BuildContext, guest: &mut Guest) -> Result<bool, GceGuestError> {
    let lines = run_as_root(guest, &add_hosts_script(), "add").await?;
    let added = lines.iter().any(|l| l.trim() == "added");
    if added {
        ctx.say("metadata.google.internal resolves to 169.254.169.254 (an /etc/hosts line, removed before shutdown)");
    }
    Ok(added)
}

/// Takes kiln's `/etc/hosts` line out of the guest.
pub async fn remove_hosts_line(ctx: &BuildContext, guest: &mut Guest) -> Result<(), GceGuestError> {
    run_as_root(guest, &remove_hosts_script(), "remove").await?;
    ctx.say("Removed the metadata.google.internal line from /etc/hosts");
    Ok(())
}

/// Where the startup script goes in the guest.
fn startup_script_path() -> String {
    format!("/tmp/kiln-startup-script-{}", uuid::Uuid::new_v4().simple())
}

/// The command that runs the uploaded script as root and removes it.
fn startup_command(path: &str) -> String {
    let path = shell_quote(path);
    as_root(&format!(
        "chmod 700 {path} && {path}; s=$?; rm -f {path}; exit $s"
    ))
}

/// Uploads the startup script, runs it as root with its output shown as
/// provisioner output, within `timeout`; a non-zero exit fails the build.
pub async fn run_startup_script(
    ctx: &BuildContext,
    guest: &mut Guest,
    script: &str,
    timeout: Duration,
) -> Result<(), GceGuestError> {
    ctx.say("Running the startup script as root...");
    let path = startup_script_path();
    let session = guest.session().await?;
    session
        .upload_bytes(script.as_bytes(), &path, 0o700)
        .await?;
    let command = startup_command(&path);
    let mut output = |_, line: &str| ctx.reporter.output(&ctx.name, line);
    let running = session.exec(&command, &mut output);
    let status = match tokio::time::timeout(timeout, running).await {
        Ok(status) => status?,
        Err(_) => return Err(GceGuestError::StartupTimeout(timeout)),
    };
    match status {
        ExitStatus::Code(0) => {
            ctx.say("The startup script finished.");
            Ok(())
        }
        ExitStatus::Code(code) => Err(GceGuestError::StartupStatus(code)),
        ExitStatus::Signal(signal) => Err(GceGuestError::StartupSignal(signal)),
        ExitStatus::Disconnected => Err(GceGuestError::StartupDisconnected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> GceInstance {
        GceInstance {
            project_id: "p".into(),
            zone: "us-central1-a".into(),
            name: "vm".into(),
            id: 7,
            ssh_username: "packer".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_build_key_goes_into_ssh_keys() {
        let with = with_ssh_key(&instance(), Some("ssh-ed25519 AAAA kiln\n"));
        assert_eq!(
            with.attributes.get("ssh-keys").map(String::as_str),
            Some("packer:ssh-ed25519 AAAA kiln")
        );
        assert!(with_ssh_key(&instance(), None).attributes.is_empty());
    }

    #[test]
    fn the_metadata_command_quotes_its_paths() {
        assert_eq!(
            metadata_command(Path::new("/opt/it's/kiln"), Path::new("/tmp/a b/doc.json")),
            r#"'/opt/it'"'"'s/kiln' __gce-metadata '/tmp/a b/doc.json'"#
        );
    }

    #[test]
    fn prepare_writes_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let platform = prepare(&with_ssh_key(&instance(), Some("k")), dir.path()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("gce-metadata.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(doc["instance"]["attributes"]["ssh-keys"], "packer:k");
        assert!(platform.metadata_command.contains("__gce-metadata"));
        assert!(platform.serial.starts_with("GoogleCloud-"));
        assert_eq!(platform.serial.len(), "GoogleCloud-".len() + 32);
        assert_eq!(platform.serial, smbios_serial(&instance()));
        let missing = dir.path().join("gone");
        assert!(matches!(
            prepare(&instance(), &missing),
            Err(GceGuestError::Document { .. })
        ));
    }

    /// The hosts scripts, run by a real shell on a copy of /etc/hosts.
    #[test]
    fn the_hosts_line_is_added_once_and_removed_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let before =
            "127.0.0.1 localhost\n169.254.169.254 metadata.google.internal  # Added by Google\n";
        std::fs::write(&hosts, before).unwrap();
        let run = |script: String| {
            let script = script.replace("/etc/hosts", &hosts.display().to_string());
            std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap()
        };
        let first = run(add_hosts_script());
        assert!(first.status.success());
        assert_eq!(String::from_utf8_lossy(&first.stdout).trim(), "added");
        let second = run(add_hosts_script());
        assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), "");
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            format!("{before}{HOSTS_LINE}\n")
        );
        assert!(run(remove_hosts_script()).status.success());
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), before);
        // Nothing to remove: still fine.
        assert!(run(remove_hosts_script()).status.success());
    }

    #[test]
    fn the_startup_command_runs_as_root_and_cleans_up() {
        let command = startup_command("/tmp/kiln-startup-script-1");
        assert!(command.contains("sudo -n sh -c"));
        assert!(command.contains("rm -f"));
        assert!(startup_script_path().starts_with("/tmp/kiln-startup-script-"));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            GceGuestError::StartupStatus(3).to_string(),
            "startup script exited with status 3"
        );
        assert_eq!(
            GceGuestError::StartupTimeout(Duration::from_secs(300)).to_string(),
            format!(
                "startup script did not finish within state_timeout ({})",
                crate::human::duration(Duration::from_secs(300))
            )
        );
    }
}
