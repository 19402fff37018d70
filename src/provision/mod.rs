//! Provisioners: `shell`, `file` and `ansible-local` over the SSH
//! communicator, `shell-local` and `ansible` on the host.

mod ansible;
mod ansible_local;
mod env;
mod file;
mod local;
mod shell;
mod shell_local;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::plan::{ProvisionerKind, ProvisionerSpec};
use crate::ssh::{Guest, SshError};

/// Why a provisioner failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A script exited with a code not in `valid_exit_codes`.
    #[error("script exited with code {code} (valid: {valid})")]
    ExitCode {
        /// The script's exit code.
        code: i64,
        /// `valid_exit_codes`, comma-separated.
        valid: String,
    },
    /// A script was killed by this signal.
    #[error("script was killed by signal {0}")]
    Signal(String),
    /// The SSH connection ended mid-script without `expect_disconnect`.
    #[error(
        "the guest closed the connection while the script ran (set expect_disconnect if that is intended)"
    )]
    Disconnected,
    /// Talking to the guest over SSH failed.
    #[error("ssh")]
    Ssh(#[from] SshError),
    /// A file or command on this machine failed.
    #[error("{what}")]
    Local {
        /// What kiln was doing, naming the file or program.
        what: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The provisioner's settings cannot work (an empty execute_command,
    /// several sources into a file).
    #[error("{0}")]
    Invalid(String),
    /// A `shell` or `file` provisioner in a build without SSH.
    #[error("this provisioner needs a communicator, but the build has `communicator: none`")]
    NoCommunicator,
    /// A program kiln ran (on this machine, or in the guest) exited with
    /// a failure code.
    #[error("{program} exited with code {code}")]
    CommandFailed {
        /// The program (`ansible-playbook`).
        program: String,
        /// Its exit code.
        code: i32,
    },
    /// The guest's shell could not find the program (exit code 127).
    #[error(
        "{program} was not found in the guest (exit code 127): install it there first, in an earlier provisioner or the image"
    )]
    NotInGuest {
        /// The command as configured.
        program: String,
    },
    /// The provisioner ran longer than its `timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The build was cancelled while the provisioner ran.
    #[error("cancelled")]
    Cancelled,
}

/// What a provisioner needs from the build around it.
pub struct Context<'a> {
    /// The build's name, given to scripts as `PACKER_BUILD_NAME`.
    pub build_name: &'a str,
    /// The builder's type, given to scripts as `PACKER_BUILDER_TYPE`.
    pub builder_type: &'a str,
    /// `None` with `communicator: none`.
    pub guest: Option<&'a mut Guest>,
    /// Receives each line of output (guest or local command).
    pub output: &'a (dyn Fn(&str) + Send + Sync),
    /// Receives kiln's own messages about what the provisioner does.
    pub say: &'a (dyn Fn(&str) + Send + Sync),
    /// Cancelled when the build is: the provisioner stops at once.
    pub cancel: CancellationToken,
}

impl Context<'_> {
    /// The variables Packer gives every script.
    fn builtin_env(&self) -> Vec<(String, String)> {
        vec![
            ("PACKER_BUILD_NAME".to_string(), self.build_name.to_string()),
            (
                "PACKER_BUILDER_TYPE".to_string(),
                self.builder_type.to_string(),
            ),
        ]
    }

    fn guest(&mut self) -> Result<&mut Guest, ProvisionError> {
        self.guest
            .as_deref_mut()
            .ok_or(ProvisionError::NoCommunicator)
    }
}

/// Runs one provisioner with its `pause_before`, `timeout` and
/// `max_retries`.
pub async fn run(spec: &ProvisionerSpec, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    let common = &spec.common;
    if !common.pause_before.is_zero() {
        (ctx.say)(&format!(
            "Pausing {:?} before the next provisioner...",
            common.pause_before
        ));
        cancellable_sleep(common.pause_before, &ctx.cancel).await?;
    }
    let mut attempt = 0;
    loop {
        let result = run_once(spec, ctx).await;
        match result {
            Ok(()) => return Ok(()),
            Err(ProvisionError::Cancelled) => return Err(ProvisionError::Cancelled),
            Err(err) if attempt < common.max_retries => {
                attempt += 1;
                // Packer waits between retries so a guest that is mid-reboot
                // can come back. The pause comes before the word: a machine
                // that died (the likely cause of a broken connection) ends
                // the build in the meantime, and is then not announced as
                // retried.
                cancellable_sleep(Duration::from_secs(2), &ctx.cancel).await?;
                (ctx.say)(&format!(
                    "{} failed ({}); retrying ({attempt}/{})",
                    spec.type_name,
                    crate::error::error_chain(&err),
                    common.max_retries
                ));
            }
            Err(err) => return Err(err),
        }
    }
}

async fn run_once(spec: &ProvisionerSpec, ctx: &mut Context<'_>) -> Result<(), ProvisionError> {
    let timeout = spec.common.timeout;
    let cancel = ctx.cancel.clone();
    let work = async {
        match &spec.kind {
            ProvisionerKind::Shell(config) => shell::run(config, ctx).await,
            ProvisionerKind::File(config) => file::run(config, ctx).await,
            ProvisionerKind::ShellLocal(config) => shell_local::run(config, ctx).await,
            ProvisionerKind::Ansible(config) => ansible::run(config, ctx).await,
            ProvisionerKind::AnsibleLocal(config) => ansible_local::run(config, ctx).await,
        }
    };
    tokio::select! {
        result = async {
            if timeout.is_zero() {
                work.await
            } else {
                tokio::time::timeout(timeout, work)
                    .await
                    .unwrap_or(Err(ProvisionError::Timeout(timeout)))
            }
        } => result,
        () = cancel.cancelled() => Err(ProvisionError::Cancelled),
    }
}

async fn cancellable_sleep(
    duration: Duration,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = cancel.cancelled() => Err(ProvisionError::Cancelled),
    }
}

/// Runs a `shell-local` configuration outside a build's provisioners (the
/// `shell-local` post-processor): no guest, the same runner.
pub async fn run_shell_local(
    config: &crate::plan::ShellLocalConfig,
    ctx: &mut Context<'_>,
) -> Result<(), ProvisionError> {
    shell_local::run(config, ctx).await
}

/// `valid_exit_codes` as people write them.
fn describe_codes(codes: &[i64]) -> String {
    codes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
