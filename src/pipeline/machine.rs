//! The build's virtual machine: credentials and seed, launch, SSH, and a
//! clean shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::BuildContext;
use super::traces::{self, BuildKey};
use crate::plan::render_late;
use crate::plan::{Accelerator, Communicator, KeyPairType, QemuConfig, SshOptions};
use crate::qemu::{self, Accel, LaunchSpec, QemuProcess, Qmp};
use crate::ssh::Guest;
use crate::ssh::{Auth, Session, SshConfig, SshError};

mod warm;
pub use warm::KeptKey;

/// Why the build's virtual machine could not be prepared, started, reached
/// or shut down.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The build's SSH key pair could not be generated or written.
    #[error("ssh key")]
    Key(#[source] SshError),
    /// kiln's NoCloud seed or the template's CD image could not be written.
    #[error("seed image")]
    Seed(#[source] crate::seed::SeedError),
    /// The template's floppy image could not be written.
    #[error("floppy image")]
    Floppy(#[source] crate::seed::floppy::FloppyError),
    #[error("no free port between {min} and {max} on 127.0.0.1 for SSH")]
    /// Every port in host_port_min..=host_port_max is taken.
    NoPort {
        /// The lowest port tried.
        min: u16,
        /// The highest port tried.
        max: u16,
    },
    /// Every port in vnc_port_min..=vnc_port_max is taken.
    #[error(
        "no free port between {min} and {max} on {address} for VNC (vnc_port_min, vnc_port_max)"
    )]
    NoVncPort {
        /// `vnc_bind_address`.
        address: std::net::IpAddr,
        /// The lowest port tried.
        min: u16,
        /// The highest port tried.
        max: u16,
    },
    /// The boot command, its references filled in, is not one kiln can
    /// type.
    #[error("boot_command[{}]", .0.entry)]
    BootCommand(#[source] crate::bootcmd::ParseError),
    /// A key of the boot command did not reach the guest.
    #[error("typing the boot command")]
    Typing(#[source] qemu::QemuError),
    /// QEMU could not be started or talked to over QMP.
    #[error("QEMU")]
    Qemu(#[source] qemu::QemuError),
    /// QEMU exited: nothing that follows can work, and nothing is retried.
    #[error(
        "QEMU exited {} {during}{}{}",
        .exit.status,
        qemu_said(&.exit.stderr),
        tail_suffix(.serial_tail)
    )]
    QemuExited {
        /// How QEMU ended, and what it wrote to stderr.
        exit: qemu::QemuExit,
        /// The stage that was running, as one of the `DURING_*` phrases.
        during: &'static str,
        /// The last lines of the guest's serial console, indented.
        serial_tail: String,
    },
    /// The emulated GCE instance could not be set up or cleaned up.
    #[error(transparent)]
    Gce(#[from] super::gce_guest::GceGuestError),
    /// The guest's SSH server did not let kiln in within ssh_timeout.
    #[error(
        "timed out after {timeout:?} waiting for SSH{}{}",
        .last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default(),
        tail_suffix(.serial_tail)
    )]
    SshTimeout {
        /// The template's ssh_timeout.
        timeout: Duration,
        /// The last connection attempt's failure, if any attempt got far
        /// enough to fail.
        last_error: Option<String>,
        /// The last lines of the guest's serial console, indented.
        serial_tail: String,
    },
    /// The SSH connection failed in a way that is not a timeout or a
    /// rejected login.
    #[error("ssh")]
    Ssh(#[source] SshError),
    /// The guest's SSH server rejected kiln's credentials for the user.
    #[error("authentication as {username} was rejected; {}", user_advice(.username, .default_user))]
    AuthRejected {
        /// The ssh_username kiln logged in as.
        username: String,
        /// The image's default user, as the guest's console names it.
        default_user: Option<String>,
    },
    /// The login succeeded but the guest answers every command with a
    /// refusal (cloud-init's disable_root does this for root).
    #[error("logged in as {username}, every command gets the answer \"{said}\"; {}", user_advice(.username, .default_user))]
    LoginRefused {
        /// The ssh_username kiln logged in as.
        username: String,
        /// The message the guest answers every command with.
        said: String,
        /// The image's default user, from that message or the console.
        default_user: Option<String>,
    },
    /// kiln could not confirm that the build key and its seed were removed
    /// from the guest.
    #[error(
        "the build key may stay in the image{}{}{}",
        if .places.is_empty() { String::new() } else { format!(" ({})", .places.join(", ")) },
        .failure.as_ref().map(|f| format!("; the cleanup ended with {f}")).unwrap_or_default(),
        if .said.trim().is_empty() { String::new() } else { format!("; the guest said: {}", .said.trim()) }
    )]
    KeyLeft {
        /// How the cleanup command ended, when not with status 0.
        failure: Option<String>,
        /// Files or homes the key could not be removed from or checked in.
        places: Vec<String>,
        /// What the cleanup command printed.
        said: String,
    },
    /// The saved machine could not be started (QEMU refused the saved
    /// state, the guest did not answer SSH in time, or could not be set
    /// right); QEMU is gone. The build can boot cold instead.
    #[error("the saved machine could not be restored: {why}")]
    RestoreFailed {
        /// What went wrong, QEMU's or the guest's words included.
        why: String,
    },
    /// The guest was still running when shutdown_timeout ran out.
    #[error("the guest did not power off within shutdown_timeout ({0:?}); QEMU was killed")]
    ShutdownTimeout(Duration),
    /// The guest panicked, stopped, powered off early or found nothing to
    /// boot. QEMU's own words come first, the console after them.
    #[error("{failure}{}", failure_tail_suffix(.failure, .serial_tail))]
    GuestFailed {
        /// What QMP or the firmware's log showed happened to the guest.
        failure: qemu::QemuError,
        /// The last lines of the guest's serial console, indented.
        serial_tail: String,
    },
}

fn user_advice(tried: &str, default_user: &Option<String>) -> String {
    match default_user {
        Some(user) if user != tried => format!(
            "the image's default user is {user} (from the guest's console): set ssh_username to {user}"
        ),
        Some(user) => format!("cloud-init on the guest's console gave the key to {user}"),
        None => "the guest's console does not name the image's default user; ssh_username must be the user cloud-init gives the key to (its console line \"Authorized keys from ... for user NAME\")".to_string(),
    }
}

impl MachineError {
    /// The user tried and the image's default user, when the login failed
    /// because of the user name.
    pub fn wrong_user(&self) -> Option<(&str, Option<&str>)> {
        match self {
            MachineError::AuthRejected {
                username,
                default_user,
            }
            | MachineError::LoginRefused {
                username,
                default_user,
                ..
            } => Some((username, default_user.as_deref())),
            _ => None,
        }
    }
}

fn qemu_said(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; QEMU said: {}", stderr.replace('\n', "; "))
    }
}

/// The firmware's words already say why a boot failed, and a console that
/// printed nothing is then expected.
fn failure_tail_suffix(failure: &qemu::QemuError, tail: &str) -> String {
    match failure {
        qemu::QemuError::NotBootable { .. } if tail.trim().is_empty() => String::new(),
        qemu::QemuError::NotBootable { .. } => {
            format!("\nlast lines of the serial console:\n{tail}")
        }
        _ => tail_suffix(tail),
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        "; the serial console printed nothing".to_string()
    } else {
        format!("; last lines of the serial console:\n{tail}")
    }
}

/// The last `lines` lines of the serial log, with terminal control
/// sequences removed.
fn serial_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let clean = crate::qemu::printable(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The build's QEMU virtual machine, from its launch settings to its exit.
pub struct Machine {
    config: QemuConfig,
    spec: LaunchSpec,
    ssh: Option<SshConfig>,
    process: Option<QemuProcess>,
    /// Shared with the boot command's typing, which runs while `lost`
    /// watches the guest through it.
    qmp: Option<std::sync::Arc<Qmp>>,
    serial_log: PathBuf,
    /// Set when kiln's seed gave the guest the build's key.
    build_key: Option<BuildKey>,
    /// The template boots from the network on purpose (a TFTP boot file).
    network_boot: bool,
    /// The build's HTTP server's port (`{{ .HTTPPort }}`), when it has one.
    http_port: Option<u16>,
    /// A `googlecompute` build: the guest is on GCE's network.
    gce: bool,
    /// kiln added its `metadata.google.internal` line to /etc/hosts.
    hosts_line: bool,
    /// Checkpoints taken so far (they name the overlays' QEMU nodes).
    checkpoints: u32,
}

/// Who the guest is: its hostname, and the GCE instance it emulates.
pub struct Identity<'a> {
    /// The guest's hostname (the seed's `local-hostname`).
    pub hostname: &'a str,
    /// A `googlecompute` build's instance.
    pub gce: Option<&'a crate::plan::GceInstance>,
}

// What each stage after launch says when the machine goes away.
/// Names the wait for the guest's SSH server in [`MachineError::QemuExited`].
const DURING_SSH_WAIT: &str = "while kiln waited for SSH";
/// Names the boot command's typing in [`MachineError::QemuExited`].
const DURING_BOOT_COMMAND: &str = "while kiln typed the boot command";
/// Names the startup script's run in [`MachineError::QemuExited`].
pub const DURING_STARTUP_SCRIPT: &str = "while the startup script ran";
/// Names the provisioners' run in [`MachineError::QemuExited`].
pub const DURING_PROVISIONING: &str = "while the provisioners ran";
/// Names the guest's power-off in [`MachineError::QemuExited`].
const DURING_SHUTDOWN: &str = "while the guest shut down";
/// Names `kiln test`'s checks in [`MachineError::QemuExited`].
pub const DURING_TESTS: &str = "while the checks ran";

impl Machine {
    /// Picks the accelerator and the credentials, and writes the seed and CD
    /// images into `scratch`.
    pub async fn prepare(
        ctx: &BuildContext,
        config: &QemuConfig,
        source: &Path,
        disk: &Path,
        scratch: &Path,
        serial_log: &Path,
        identity: &Identity<'_>,
    ) -> Result<Machine, MachineError> {
        Self::prepare_with(
            ctx, config, source, disk, scratch, serial_log, identity, None,
        )
        .await
    }

    /// [`Machine::prepare`] for [`Machine::restore`]: `disk` is a new qcow2
    /// overlay on the image a checkpoint froze, and the guest is logged in
    /// to with the key it was booted with (`kept`, from
    /// [`Machine::kept_key`]; `None` when the template brings its own
    /// credentials). Everything else must be as for the cold boot the
    /// checkpoint was taken in: QEMU loads the state only into the same
    /// machine.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_warm(
        ctx: &BuildContext,
        config: &QemuConfig,
        source: &Path,
        disk: &Path,
        scratch: &Path,
        serial_log: &Path,
        identity: &Identity<'_>,
        kept: Option<&KeptKey>,
    ) -> Result<Machine, MachineError> {
        let mut machine = Self::prepare_with(
            ctx, config, source, disk, scratch, serial_log, identity, kept,
        )
        .await?;
        machine.spec.disks[0].format = "qcow2".to_string();
        machine.hosts_line = kept.is_some_and(|kept| kept.hosts_line);
        Ok(machine)
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare_with(
        ctx: &BuildContext,
        config: &QemuConfig,
        source: &Path,
        disk: &Path,
        scratch: &Path,
        serial_log: &Path,
        identity: &Identity<'_>,
        kept: Option<&KeptKey>,
    ) -> Result<Machine, MachineError> {
        let hostname = identity.hostname;
        let accel = choose_accel(ctx, config);
        ctx.stage(super::report::Stage::Seed);
        // The CD drives in order: the installer, kiln's seed, the template's
        // own CD.
        let mut cdroms = Vec::new();
        if !config.disk_image {
            cdroms.push(source.to_path_buf());
        }
        let key_user = identity.gce.map(|gce| gce.ssh_username.as_str());
        let (ssh, build_key) = match &config.communicator {
            Communicator::None => (None, None),
            Communicator::Ssh(options) => {
                let (auth, seed) =
                    ssh_auth(ctx, config, options, scratch, hostname, key_user, kept)?;
                let build_key = seed.map(|seed| {
                    cdroms.push(seed.image);
                    seed.key
                });
                (Some(ssh_config(options, auth)), build_key)
            }
        };
        if has_user_cd(config) {
            let cd_path = scratch.join("cd.iso");
            crate::seed::cd_image(
                &config.cd_files,
                &config.cd_content,
                config.cd_label.as_deref(),
                &cd_path,
            )
            .map_err(MachineError::Seed)?;
            cdroms.push(cd_path);
        }
        let mut spec = launch_spec(config, accel, disk, cdroms, scratch, serial_log);
        if let Some(instance) = identity.gce {
            let public_key = build_key.as_ref().map(|key| key.public_key.as_str());
            let instance = super::gce_guest::with_ssh_key(instance, public_key);
            spec.gce = Some(super::gce_guest::prepare(&instance, scratch)?);
        }
        if !config.floppy.is_empty() {
            let image = scratch.join("floppy.img");
            ctx.say("Creating floppy disk...");
            crate::seed::floppy::write(&config.floppy, &image).map_err(MachineError::Floppy)?;
            spec.floppy = Some(image);
        }
        Ok(Machine {
            config: config.clone(),
            spec,
            ssh,
            process: None,
            qmp: None,
            serial_log: serial_log.to_path_buf(),
            build_key,
            network_boot: false,
            http_port: None,
            gce: identity.gce.is_some(),
            hosts_line: false,
            checkpoints: 0,
        })
    }

    /// The port of the build's HTTP server, for `{{ .HTTPPort }}` in
    /// `qemuargs` and `boot_command`.
    pub fn set_http_port(&mut self, port: u16) {
        self.http_port = Some(port);
    }

    /// `-vnc`'s value and the password to set, when the display is served
    /// over VNC (see [`crate::plan::VncConfig::exposed`]); says where to
    /// connect, as Packer does.
    fn vnc(&self, ctx: &BuildContext) -> Result<Option<(String, Option<String>)>, MachineError> {
        let vnc = &self.config.vnc;
        if !vnc.exposed(self.config.headless) {
            return Ok(None);
        }
        let port = free_port_on(vnc.bind_address, vnc.port_min, vnc.port_max).ok_or(
            MachineError::NoVncPort {
                address: vnc.bind_address,
                min: vnc.port_min,
                max: vnc.port_max,
            },
        )?;
        let display = port - crate::plan::boot::VNC_DISPLAY_BASE;
        let password = vnc.use_password.then(vnc_password);
        let mut arg = format!("{}:{display}", vnc.bind_address);
        match &password {
            Some(password) => {
                arg.push_str(",password=on");
                ctx.say(&format!(
                    "The guest's display: vnc://{}:{port} with the password: {password}",
                    vnc.bind_address
                ));
            }
            None => ctx.say(&format!(
                "The guest's display: vnc://{}:{port} (no password)",
                vnc.bind_address
            )),
        }
        Ok(Some((arg, password)))
    }

    /// The host's address as the guest sees it.
    pub fn host_ip(&self) -> &'static str {
        if self.gce {
            crate::gcp::metadata::GATEWAY_IP
        } else {
            crate::plan::boot::HTTP_IP
        }
    }

    /// A `googlecompute` build, once logged in: makes
    /// `metadata.google.internal` resolve in the guest, until
    /// [`Machine::remove_build_key`] takes the line out again.
    pub async fn resolve_metadata_name(
        &mut self,
        ctx: &BuildContext,
        guest: &mut Guest,
    ) -> Result<(), MachineError> {
        if self.gce {
            self.hosts_line = super::gce_guest::add_hosts_line(ctx, guest).await?;
        }
        Ok(())
    }

    /// The values of the late references in `qemuargs` and
    /// `boot_command`, as Packer names them.
    fn late_values(&self, ssh_host_port: Option<u16>) -> Vec<(&'static str, String)> {
        vec![
            (
                "SSHHostPort",
                ssh_host_port.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("Name", self.config.vm_name.clone()),
            (
                "OutputDir",
                self.config.output_directory.display().to_string(),
            ),
            ("HTTPIP", self.host_ip().to_string()),
            // Packer's value when no server runs.
            ("HTTPPort", self.http_port.unwrap_or(0).to_string()),
        ]
    }

    /// Waits `boot_wait`, then types the boot command into the guest's
    /// keyboard, watching the machine all along. Nothing to do without a
    /// boot command (kiln then does not wait either).
    pub async fn type_boot_command(&mut self, ctx: &BuildContext) -> Result<(), MachineError> {
        let boot = self.config.boot.clone();
        if boot.command.is_empty() {
            return Ok(());
        }
        let ssh_port = self.ssh.as_ref().map(|ssh| ssh.port);
        let late = self.late_values(ssh_port);
        let late: Vec<(&str, &str)> = late.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rendered: Vec<String> = boot
            .command
            .iter()
            .map(|entry| render_late(entry, &late))
            .collect();
        let steps = crate::bootcmd::parse(&rendered).map_err(MachineError::BootCommand)?;
        let interval = crate::bootcmd::key_interval(
            boot.key_interval,
            std::env::var(crate::bootcmd::KEY_INTERVAL_ENV)
                .ok()
                .as_deref(),
        );
        let wait = self.config.boot_wait;
        if !wait.is_zero() {
            ctx.say(&format!(
                "Waiting {} for boot...",
                crate::human::duration(wait)
            ));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                lost = self.lost(DURING_BOOT_COMMAND) => return Err(lost),
            }
        }
        ctx.say("Typing the boot command...");
        tracing::debug!(build = %ctx.name, command = %rendered.concat(), "boot command");
        let Some(qmp) = self.qmp.clone() else {
            return Err(MachineError::Qemu(qemu::QemuError::other(
                "QEMU is not running",
            )));
        };
        let typing = crate::bootcmd::type_steps(&*qmp, &steps, interval);
        tokio::select! {
            typed = typing => typed.map_err(MachineError::Typing),
            lost = self.lost(DURING_BOOT_COMMAND) => Err(lost),
        }
    }

    /// Starts QEMU with the SSH port forwarded from a free host port, and
    /// connects to its QMP socket.
    pub async fn launch(&mut self, ctx: &BuildContext) -> Result<(), MachineError> {
        self.launch_as(ctx, false).await
    }

    /// [`Machine::launch`], or with `incoming` a QEMU that waits for a
    /// saved state instead of booting.
    async fn launch_as(&mut self, ctx: &BuildContext, incoming: bool) -> Result<(), MachineError> {
        let vnc = self.vnc(ctx)?;
        let guest_port = match &self.config.communicator {
            Communicator::Ssh(options) => Some(options.port),
            Communicator::None => None,
        };
        // Another process can take the port between our probe and QEMU's
        // bind: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let host_port = match guest_port {
                Some(_) => Some(free_port(
                    self.config.host_port_min,
                    self.config.host_port_max,
                )?),
                None => None,
            };
            let mut spec = self.spec.clone();
            spec.ssh_forward = host_port.zip(guest_port);
            spec.incoming = incoming;
            spec.vnc = vnc.as_ref().map(|(arg, _)| arg.clone());
            let late = self.late_values(host_port);
            let late: Vec<(&str, &str)> = late.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spec.extra_args = self
                .config
                .qemuargs
                .iter()
                .map(|group| group.iter().map(|arg| render_late(arg, &late)).collect())
                .collect();
            let argv = qemu::argv(&spec);
            tracing::debug!(build = %ctx.name, ?argv, "launching QEMU");
            ctx.say(&format!(
                "Starting QEMU ({}, {} MiB, {} CPU){}",
                accel_name(spec.accel),
                spec.memory_mib,
                spec.cpus,
                host_port
                    .map(|p| format!("; SSH on 127.0.0.1:{p}"))
                    .unwrap_or_default()
            ));
            qemu::prepare_efi_vars(&spec).map_err(MachineError::Qemu)?;
            match QemuProcess::spawn(&spec.binary, &argv).await {
                Ok(process) => {
                    let qmp = Qmp::connect(&spec.qmp_socket, Duration::from_secs(30))
                        .await
                        .map_err(MachineError::Qemu)?;
                    if let Some((_, Some(password))) = &vnc {
                        qmp.set_vnc_password(password)
                            .await
                            .map_err(MachineError::Qemu)?;
                    }
                    if let (Some(ssh), Some(port)) = (self.ssh.as_mut(), host_port) {
                        ssh.port = port;
                    }
                    self.process = Some(process);
                    self.qmp = Some(std::sync::Arc::new(qmp));
                    self.spec = spec;
                    self.network_boot = argv.iter().any(|arg| arg.contains("bootfile="));
                    return Ok(());
                }
                Err(err) if err.is_port_in_use() => last_error = Some(err),
                Err(err) => return Err(MachineError::Qemu(err)),
            }
        }
        Err(MachineError::Qemu(last_error.unwrap_or_else(|| {
            qemu::QemuError::other("could not start QEMU")
        })))
    }

    /// Resolves only when the machine is gone for good: QEMU exited, the
    /// guest reached a state it does not come back from (panic, internal
    /// error, power off), or the firmware found nothing to boot. Every
    /// stage after launch runs against this, so that a dead machine ends
    /// the build at once instead of being waited for or reconnected to.
    /// `during` names the stage in the message. Cancel-safe.
    pub async fn lost(&mut self, during: &'static str) -> MachineError {
        let Machine {
            process,
            qmp,
            serial_log,
            ..
        } = self;
        let Some(process) = process.as_mut() else {
            return std::future::pending().await;
        };
        let watch = qemu::Watch {
            accel: self.spec.accel,
            serial_log,
            firmware_log: self.spec.firmware_log.as_deref(),
            shutdown_expected: false,
            network_boot: self.network_boot,
        };
        enum Ended {
            Exited(qemu::QemuExit),
            Failed(qemu::QemuError),
        }
        let ended = tokio::select! {
            exit = process.exited() => Ended::Exited(exit),
            failure = watch_or_pending(qmp.as_deref(), &watch) => Ended::Failed(failure),
        };
        let serial_tail = serial_tail(serial_log, 20);
        match ended {
            Ended::Exited(exit) => MachineError::QemuExited {
                exit,
                during,
                serial_tail,
            },
            Ended::Failed(failure) => MachineError::GuestFailed {
                failure,
                serial_tail,
            },
        }
    }

    /// `lost` if the machine is gone or goes within `grace`: asked after a
    /// stage failed, as the SSH connection breaks a moment before QEMU's
    /// exit is seen, and the machine's end is the cause worth reporting.
    pub async fn lost_within(
        &mut self,
        during: &'static str,
        grace: Duration,
    ) -> Option<MachineError> {
        tokio::time::timeout(grace, self.lost(during)).await.ok()
    }

    /// Waits for SSH, while watching QEMU: a guest that dies, a QEMU that
    /// exits or a disk that does not boot ends the wait at once.
    pub async fn connect(&mut self, ctx: &BuildContext) -> Result<Guest, MachineError> {
        let Some(ssh) = self.ssh.clone() else {
            return Err(MachineError::Ssh(SshError::Protocol(
                "no communicator".into(),
            )));
        };
        if self.process.is_none() {
            return Err(MachineError::Qemu(qemu::QemuError::other(
                "QEMU is not running",
            )));
        }
        let (pause, not_applied) = match &self.config.communicator {
            Communicator::Ssh(options) => (
                options.pause_before_connecting,
                options.not_applied.join(", "),
            ),
            Communicator::None => (Duration::ZERO, String::new()),
        };
        if !not_applied.is_empty() {
            ctx.say(&format!(
                "SSH options accepted but not applied: {not_applied}"
            ));
        }
        if !pause.is_zero() {
            ctx.say(&format!("Pausing {pause:?} before connecting..."));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                lost = self.lost(DURING_SSH_WAIT) => return Err(lost),
            }
        }
        ctx.say(&format!("Waiting for SSH on {}:{}...", ssh.host, ssh.port));
        let started = Instant::now();
        let result = tokio::select! {
            session = Session::connect(&ssh) => session,
            lost = self.lost(DURING_SSH_WAIT) => return Err(lost),
        };
        match result {
            Ok(session) => {
                ctx.say(&format!(
                    "Connected to SSH in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                let mut guest = Guest::new(ssh.clone(), session);
                // Only root is ever refused this way (cloud-init's
                // disable_root); other users cost nothing here.
                if ssh.username == "root"
                    && let Some(said) = traces::refused_login(&mut guest).await?
                {
                    guest.close().await;
                    let default_user = traces::refused_for(&said)
                        .or_else(|| traces::default_user(&self.console()));
                    return Err(MachineError::LoginRefused {
                        username: ssh.username.clone(),
                        said,
                        default_user,
                    });
                }
                Ok(guest)
            }
            Err(err) => {
                if let Some(lost) = self.lost_within(DURING_SSH_WAIT, LOST_GRACE).await {
                    return Err(lost);
                }
                match err {
                    SshError::AuthRejected { username } => Err(MachineError::AuthRejected {
                        username,
                        default_user: traces::default_user(&self.console()),
                    }),
                    SshError::Timeout { last_error, .. } => Err(MachineError::SshTimeout {
                        timeout: ssh.timeout,
                        last_error,
                        serial_tail: serial_tail(&self.serial_log, 20),
                    }),
                    err => Err(MachineError::Ssh(err)),
                }
            }
        }
    }

    /// What the guest printed on its serial console so far.
    fn console(&self) -> String {
        std::fs::read(&self.serial_log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Takes out of the guest what kiln's seed put in (the build key, in
    /// every file cloud-init wrote it to, and cloud-init's copy of the
    /// seed), and kiln's `/etc/hosts` line of a `googlecompute` build, so
    /// the image holds only what the provisioners made. Nothing to do when
    /// the template brought its own key or seed.
    pub async fn remove_build_key(
        &self,
        ctx: &BuildContext,
        guest: &mut Guest,
    ) -> Result<(), MachineError> {
        if self.hosts_line {
            super::gce_guest::remove_hosts_line(ctx, guest).await?;
        }
        match &self.build_key {
            Some(key) => traces::remove(ctx, guest, key).await,
            None => Ok(()),
        }
    }

    /// Powers the guest off (shutdown_command, or the ACPI power button) and
    /// waits for QEMU to exit, watching the guest all along: a panic or an
    /// abnormal exit on the way is an error, as the disk may be incomplete.
    pub async fn shutdown(
        &mut self,
        ctx: &BuildContext,
        guest: Option<Guest>,
    ) -> Result<(), MachineError> {
        let timeout = self.config.shutdown_timeout;
        let Machine {
            config,
            spec,
            process,
            qmp,
            serial_log,
            network_boot,
            ..
        } = &mut *self;
        let watch = qemu::Watch {
            accel: spec.accel,
            serial_log,
            firmware_log: spec.firmware_log.as_deref(),
            shutdown_expected: true,
            network_boot: *network_boot,
        };
        let Some(running) = process.as_mut() else {
            return Ok(());
        };
        let lost = |failure| MachineError::GuestFailed {
            failure,
            serial_tail: serial_tail(serial_log, 20),
        };
        // QEMU may exit while the command is still "running": that is the
        // command doing its job.
        let exit = tokio::select! {
            requested = request_shutdown(ctx, config, qmp.as_deref(), guest) => {
                requested?;
                None
            }
            exit = running.exited() => Some(exit),
            failure = watch_or_pending(qmp.as_deref(), &watch) => return Err(lost(failure)),
        };
        let exit = match exit {
            Some(exit) => exit,
            None => tokio::select! {
                exit = running.exited() => exit,
                failure = watch_or_pending(qmp.as_deref(), &watch) => return Err(lost(failure)),
                () = tokio::time::sleep(timeout) => {
                    running.kill();
                    return Err(MachineError::ShutdownTimeout(timeout));
                }
            },
        };
        *process = None;
        if exit.success {
            ctx.say("The virtual machine is off.");
            Ok(())
        } else if powered_off_before_crash(qmp.as_deref(), &exit) {
            // The guest flushed its disk and powered off; QEMU died on
            // its way out (seen once in many runs with QEMU 10.0 under
            // TCG). Nothing the guest wrote is lost.
            ctx.say(&format!(
                "The virtual machine is off (the guest powered off; then {exit})."
            ));
            Ok(())
        } else {
            Err(MachineError::QemuExited {
                exit,
                during: DURING_SHUTDOWN,
                serial_tail: serial_tail(serial_log, 20),
            })
        }
    }
}

/// Whether QEMU was killed by a signal after the guest itself had powered
/// off (QMP's `SHUTDOWN` event from the guest).
fn powered_off_before_crash(qmp: Option<&Qmp>, exit: &qemu::QemuExit) -> bool {
    exit.status.starts_with("on signal")
        && qmp.is_some_and(|qmp| guest_powered_off(&qmp.recent_events()))
}

/// Whether QMP's events say the guest powered itself off (not QEMU told
/// to quit, not a reset).
fn guest_powered_off(events: &[serde_json::Value]) -> bool {
    events.iter().any(|event| {
        event["event"] == "SHUTDOWN" && event["data"]["guest"] == serde_json::json!(true)
    })
}

#[cfg(test)]
mod shutdown_tests {
    use super::guest_powered_off;
    use serde_json::json;

    #[test]
    fn only_the_guests_own_power_off_counts() {
        let guest =
            json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}});
        let quit =
            json!({"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}});
        let reset = json!({"event": "RESET", "data": {"guest": true}});
        assert!(guest_powered_off(&[reset.clone(), guest]));
        assert!(!guest_powered_off(&[quit, reset]));
        assert!(!guest_powered_off(&[]));
    }
}

/// After a failure, how long the machine is given to show it died.
pub const LOST_GRACE: Duration = Duration::from_secs(2);

async fn watch_or_pending(qmp: Option<&Qmp>, watch: &qemu::Watch<'_>) -> qemu::QemuError {
    match qmp {
        Some(qmp) => qemu::watch_guest(qmp, watch).await,
        None => std::future::pending().await,
    }
}

/// Asks the guest to power off: its shutdown_command over SSH, or the ACPI
/// power button.
async fn request_shutdown(
    ctx: &BuildContext,
    config: &QemuConfig,
    qmp: Option<&Qmp>,
    guest: Option<Guest>,
) -> Result<(), MachineError> {
    match (&config.shutdown_command, guest) {
        (Some(command), Some(mut guest)) => {
            ctx.say(&format!(
                "Gracefully halting the virtual machine: {command}"
            ));
            let output = |line: &str| ctx.reporter.output(&ctx.name, line);
            if let Ok(session) = guest.session().await {
                // The guest going away mid-command is the point.
                let ended = session.exec(command, &mut |_, line| output(line)).await;
                tracing::debug!(?ended, "shutdown command returned");
            }
            guest.close().await;
            tracing::debug!("ssh session closed");
        }
        (None, guest) if !matches!(config.communicator, Communicator::None) => {
            if let Some(guest) = guest {
                guest.close().await;
            }
            ctx.say("Pressing the ACPI power button...");
            if let Some(qmp) = qmp {
                qmp.system_powerdown().await.map_err(MachineError::Qemu)?;
            }
        }
        _ => ctx.say("Waiting for the guest to power off by itself..."),
    }
    Ok(())
}

/// The template's accelerator, or the best one this host offers (said to
/// the user, as it decides how slow the build is).
fn choose_accel(ctx: &BuildContext, config: &QemuConfig) -> Accel {
    match config.accelerator {
        Some(Accelerator::Kvm) => Accel::Kvm,
        Some(Accelerator::Tcg) => Accel::Tcg,
        Some(Accelerator::None) => Accel::Default,
        None => {
            let (accel, reason) = qemu::detect_accel();
            tracing::info!(build = %ctx.name, ?accel, %reason, "accelerator chosen");
            ctx.say(&format!("Accelerator: {} ({reason})", accel_name(accel)));
            accel
        }
    }
}

/// The template asks for a CD of its own (cd_files or cd_content).
fn has_user_cd(config: &QemuConfig) -> bool {
    !config.cd_files.is_empty() || !config.cd_content.is_empty()
}

/// The template's own CD is a NoCloud seed: cloud-init reads the first
/// `cidata` volume it finds, so kiln's would compete with it.
fn user_cd_is_seed(config: &QemuConfig) -> bool {
    config
        .cd_label
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case("cidata"))
        && has_user_cd(config)
}

/// kiln's NoCloud seed image, which gives the guest the build's key.
struct Seed {
    image: PathBuf,
    key: BuildKey,
}

/// How kiln logs in: the template's password or key file, or else a key
/// generated for this build, handed to the guest by a seed image (returned)
/// unless the template brings its own seed.
fn ssh_auth(
    ctx: &BuildContext,
    config: &QemuConfig,
    options: &SshOptions,
    scratch: &Path,
    hostname: &str,
    key_user: Option<&str>,
    kept: Option<&KeptKey>,
) -> Result<(Auth, Option<Seed>), MachineError> {
    if let Some(password) = &options.password {
        return Ok((Auth::Password(password.clone()), None));
    }
    if let Some(key) = &options.private_key_file {
        return Ok((Auth::KeyFile(key.clone()), None));
    }
    let key = match kept {
        // A restored guest knows only the key it was booted with; its seed
        // is made again the same, as the CD drive must hold one.
        Some(kept) => crate::ssh::GeneratedKey {
            public_key_openssh: crate::ssh::public_key_of(&kept.private_key)
                .map_err(MachineError::Key)?,
            private_key_path: kept.private_key.clone(),
        },
        None => {
            crate::ssh::generate_key(scratch, options.temporary_key_pair_type == KeyPairType::Rsa)
                .map_err(MachineError::Key)?
        }
    };
    let seed = if user_cd_is_seed(config) {
        ctx.say(
            "cd_label is cidata: the template's own seed is used, without kiln's generated key",
        );
        None
    } else {
        let image = scratch.join("seed.iso");
        let instance_id = match kept {
            Some(kept) => kept.instance_id.clone(),
            None => format!("kiln-{}", uuid::Uuid::new_v4()),
        };
        crate::seed::nocloud_seed(
            &image,
            &crate::seed::NoCloud {
                instance_id: &instance_id,
                hostname,
                public_key: &key.public_key_openssh,
                key_user,
            },
        )
        .map_err(MachineError::Seed)?;
        Some(Seed {
            image,
            key: BuildKey {
                public_key: key.public_key_openssh.clone(),
                instance_id,
            },
        })
    };
    Ok((Auth::KeyFile(key.private_key_path), seed))
}

/// The SSH login to the guest; the port is filled in at launch, once a
/// free host port is forwarded to the guest's. `ssh_host` replaces the
/// address, as in Packer's qemu builder.
fn ssh_config(options: &SshOptions, auth: Auth) -> SshConfig {
    SshConfig {
        host: options
            .host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_string()),
        port: 0,
        username: options.username.clone(),
        auth,
        timeout: options.timeout,
        handshake_attempts: options.handshake_attempts,
        pty: options.pty,
    }
}

/// QEMU's launch settings for the build disk and the CDs, before the SSH
/// forward and the template's qemuargs, which are chosen at launch.
fn launch_spec(
    config: &QemuConfig,
    accel: Accel,
    disk: &Path,
    cdroms: Vec<PathBuf>,
    scratch: &Path,
    serial_log: &Path,
) -> LaunchSpec {
    LaunchSpec {
        binary: config.qemu_binary.clone(),
        vm_name: config.vm_name.clone(),
        accel,
        machine_type: config.machine_type.clone(),
        cpus: config.cpus,
        memory_mib: config.memory_mib,
        disks: vec![qemu::Disk {
            path: disk.to_path_buf(),
            format: config.format.as_str().to_string(),
            interface: config.disk_interface.clone(),
            cache: config.disk_cache.clone(),
            discard: config.discard().to_string(),
            detect_zeroes: config.detect_zeroes().to_string(),
            read_only: false,
        }],
        cdroms,
        floppy: None,
        net_device: config.net_device.clone(),
        ssh_forward: None,
        firmware: config.firmware.clone(),
        efi_boot: config.efi_boot,
        // Without a display to open a window on, QEMU would fail to start.
        headless: config.headless || !qemu::display_available(),
        qmp_socket: scratch.join("qmp.sock"),
        serial_log: serial_log.to_path_buf(),
        firmware_log: Some(scratch.join("firmware.log")),
        extra_args: Vec::new(),
        vnc: None,
        // Packer's "none" here means "QEMU's default", not no display.
        display: config
            .vnc
            .display
            .clone()
            .filter(|d| d != "none" && !config.vnc.use_default_display),
        gce: None,
        incoming: false,
    }
}

fn accel_name(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG",
        Accel::Default => "QEMU's default accelerator",
    }
}

/// A port in `[min, max]` that is free on 127.0.0.1 right now, starting at a
/// random place so parallel builds don't race for the same one.
/// A port of `min..=max` free on `address`, tried from a random one on.
fn free_port_on(address: std::net::IpAddr, min: u16, max: u16) -> Option<u16> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    let start = rand::random_range(0..span);
    (0..span)
        .filter_map(|offset| u16::try_from(u32::from(min) + (start + offset) % span).ok())
        .find(|port| TcpListener::bind((address, *port)).is_ok())
}

/// A random VNC password of Packer's length and alphabet.
fn vnc_password() -> String {
    const CHARS: &[u8] = b"012345689abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..8)
        .map(|_| char::from(CHARS[rand::random_range(0..CHARS.len())]))
        .collect()
}

fn free_port(min: u16, max: u16) -> Result<u16, MachineError> {
    let (min, max) = (min.min(max), min.max(max));
    let span = u32::from(max - min) + 1;
    let start = rand::random_range(0..span);
    for offset in 0..span {
        let port = min + ((start + offset) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(MachineError::NoPort { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_stays_in_range() {
        for _ in 0..20 {
            let port = free_port(40000, 40010).unwrap();
            assert!((40000..=40010).contains(&port));
        }
    }

    #[test]
    fn no_free_port_is_an_error() {
        let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(matches!(
            free_port(port, port),
            Err(MachineError::NoPort { .. })
        ));
    }

    #[test]
    fn serial_tail_keeps_last_lines_without_control_characters() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "one\n\x1b[0mtwo\r\nthree\n\nfour\n").unwrap();
        let tail = serial_tail(&log, 2);
        assert_eq!(tail, "    | three\n    | four");
        std::fs::write(&log, "\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: x\r\n").unwrap();
        assert_eq!(serial_tail(&log, 2), "    | BdsDxe: x");
    }
}
