//! The build's virtual machine: credentials and seed, launch, SSH, and a
//! clean shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::BuildContext;
use super::traces::{self, BuildKey};
use crate::provision::Guest;
use crate::qemu::{self, Accel, LaunchSpec, QemuProcess, Qmp};
use crate::ssh::{Auth, Session, SshConfig, SshError};
use crate::template::model::{Accelerator, Checksum, Communicator, KeyPairType, QemuConfig};
use crate::template::render_late;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh key")]
    Key(#[source] SshError),
    #[error("seed image")]
    Seed(#[source] crate::seed::SeedError),
    #[error("no free port between {min} and {max} on 127.0.0.1 for SSH")]
    NoPort { min: u16, max: u16 },
    #[error("QEMU")]
    Qemu(#[source] qemu::QemuError),
    #[error("QEMU exited before SSH answered ({status}){}", tail_suffix(.serial_tail))]
    ExitedEarly { status: String, serial_tail: String },
    #[error(
        "timed out after {timeout:?} waiting for SSH{}{}",
        .last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default(),
        tail_suffix(.serial_tail)
    )]
    SshTimeout {
        timeout: Duration,
        last_error: Option<String>,
        serial_tail: String,
    },
    #[error("ssh")]
    Ssh(#[source] SshError),
    #[error("authentication as {username} was rejected; {}", user_advice(.username, .default_user))]
    AuthRejected {
        username: String,
        /// The image's default user, as the guest's console names it.
        default_user: Option<String>,
    },
    #[error("logged in as {username}, every command gets the answer \"{said}\"; {}", user_advice(.username, .default_user))]
    LoginRefused {
        username: String,
        said: String,
        default_user: Option<String>,
    },
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
        said: String,
    },
    #[error("the guest did not power off within shutdown_timeout ({0:?}); QEMU was killed")]
    ShutdownTimeout(Duration),
    /// QEMU's own words come first, the console after them.
    #[error("{failure}{}", tail_suffix(.serial_tail))]
    GuestFailed {
        failure: qemu::QemuError,
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

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        "; the serial console printed nothing".to_string()
    } else {
        format!("; last lines of the serial console:\n{tail}")
    }
}

/// The last `lines` lines of the serial log, with terminal control
/// sequences removed.
pub fn serial_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let clean: String = text
        .chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect();
    let all: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn source_digest(checksum: &Checksum) -> crate::source::Digest {
    use crate::source::Digest;
    match checksum {
        Checksum::None => Digest::None,
        Checksum::Sha256(hex) => Digest::Sha256(hex.clone()),
        Checksum::Sha512(hex) => Digest::Sha512(hex.clone()),
        Checksum::Sha1(hex) => Digest::Sha1(hex.clone()),
        Checksum::Md5(hex) => Digest::Md5(hex.clone()),
    }
}

pub struct Machine {
    config: QemuConfig,
    spec: LaunchSpec,
    ssh: Option<SshConfig>,
    process: Option<QemuProcess>,
    qmp: Option<Qmp>,
    serial_log: PathBuf,
    /// Set when kiln's seed gave the guest the build's key.
    build_key: Option<BuildKey>,
}

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
        hostname: &str,
    ) -> Result<Machine, MachineError> {
        let accel = match config.accelerator {
            Some(Accelerator::Kvm) => Accel::Kvm,
            Some(Accelerator::Tcg) => Accel::Tcg,
            Some(Accelerator::None) => Accel::Default,
            None => {
                let (accel, reason) = qemu::detect_accel();
                tracing::info!(build = %ctx.name, ?accel, %reason, "accelerator chosen");
                ctx.say(&format!("Accelerator: {} ({reason})", accel_name(accel)));
                accel
            }
        };
        ctx.stage(super::report::Stage::Seed);
        let mut cdroms = Vec::new();
        if !config.disk_image {
            cdroms.push(source.to_path_buf());
        }
        let user_cd_is_seed = config
            .cd_label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("cidata"))
            && (!config.cd_files.is_empty() || !config.cd_content.is_empty());

        let mut build_key = None;
        let ssh = match &config.communicator {
            Communicator::None => None,
            Communicator::Ssh(options) => {
                let auth = if let Some(password) = &options.password {
                    Auth::Password(password.clone())
                } else if let Some(key) = &options.private_key_file {
                    Auth::KeyFile(key.clone())
                } else {
                    let key = crate::ssh::generate_key(
                        scratch,
                        options.temporary_key_pair_type == KeyPairType::Rsa,
                    )
                    .map_err(MachineError::Key)?;
                    if user_cd_is_seed {
                        ctx.say("cd_label is cidata: the template's own seed is used, without kiln's generated key");
                    } else {
                        let seed_path = scratch.join("seed.iso");
                        let instance_id = format!("kiln-{}", uuid::Uuid::new_v4());
                        crate::seed::nocloud_seed(
                            &seed_path,
                            &crate::seed::NoCloud {
                                instance_id: &instance_id,
                                hostname,
                                public_key: &key.public_key_openssh,
                            },
                        )
                        .map_err(MachineError::Seed)?;
                        cdroms.push(seed_path);
                        build_key = Some(BuildKey {
                            public_key: key.public_key_openssh.clone(),
                            instance_id,
                        });
                    }
                    Auth::KeyFile(key.private_key_path)
                };
                Some(SshConfig {
                    host: "127.0.0.1".to_string(),
                    port: 0,
                    username: options.username.clone(),
                    auth,
                    timeout: options.timeout,
                    handshake_attempts: options.handshake_attempts,
                    pty: options.pty,
                })
            }
        };
        if !config.cd_files.is_empty() || !config.cd_content.is_empty() {
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

        let spec = LaunchSpec {
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
                discard: config.disk_discard.clone(),
                detect_zeroes: config.disk_detect_zeroes.clone(),
                read_only: false,
            }],
            cdroms,
            net_device: config.net_device.clone(),
            ssh_forward: None,
            firmware: config.firmware.clone(),
            efi_boot: config.efi_boot,
            // Without a display to open a window on, QEMU would fail to start.
            headless: config.headless || !qemu::display_available(),
            qmp_socket: scratch.join("qmp.sock"),
            serial_log: serial_log.to_path_buf(),
            extra_args: Vec::new(),
        };
        Ok(Machine {
            config: config.clone(),
            spec,
            ssh,
            process: None,
            qmp: None,
            serial_log: serial_log.to_path_buf(),
            build_key,
        })
    }

    /// Starts QEMU with the SSH port forwarded from a free host port, and
    /// connects to its QMP socket.
    pub async fn launch(&mut self, ctx: &BuildContext) -> Result<(), MachineError> {
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
            let port_text = host_port.map(|p| p.to_string()).unwrap_or_default();
            let output_dir = self.config.output_directory.display().to_string();
            let late = [
                ("SSHHostPort", port_text.as_str()),
                ("Name", self.config.vm_name.as_str()),
                ("OutputDir", output_dir.as_str()),
                ("HTTPIP", "10.0.2.2"),
            ];
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
                    if let (Some(ssh), Some(port)) = (self.ssh.as_mut(), host_port) {
                        ssh.port = port;
                    }
                    self.process = Some(process);
                    self.qmp = Some(qmp);
                    self.spec = spec;
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

    /// Waits for SSH, while watching QEMU: a guest that dies or a QEMU that
    /// exits ends the wait at once.
    pub async fn connect(&mut self, ctx: &BuildContext) -> Result<Guest, MachineError> {
        let Some(ssh) = self.ssh.clone() else {
            return Err(MachineError::Ssh(SshError::Protocol(
                "no communicator".into(),
            )));
        };
        let (Some(process), Some(qmp)) = (self.process.as_mut(), self.qmp.as_ref()) else {
            return Err(MachineError::Qemu(qemu::QemuError::other(
                "QEMU is not running",
            )));
        };
        ctx.say(&format!("Waiting for SSH on 127.0.0.1:{}...", ssh.port));
        let started = Instant::now();
        let accel = self.spec.accel;
        let result = tokio::select! {
            session = Session::connect(&ssh) => session,
            status = process.exited() => {
                return Err(MachineError::ExitedEarly {
                    status,
                    serial_tail: serial_tail(&self.serial_log, 20),
                });
            }
            failure = qemu::watch_guest(qmp, accel, &self.serial_log) => {
                return Err(MachineError::GuestFailed {
                    failure,
                    serial_tail: serial_tail(&self.serial_log, 20),
                });
            }
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
            Err(SshError::AuthRejected { username }) => Err(MachineError::AuthRejected {
                username,
                default_user: traces::default_user(&self.console()),
            }),
            Err(SshError::Timeout { last_error, .. }) => Err(MachineError::SshTimeout {
                timeout: ssh.timeout,
                last_error,
                serial_tail: serial_tail(&self.serial_log, 20),
            }),
            Err(err) => Err(MachineError::Ssh(err)),
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
    /// seed), so the image holds only what the provisioners made. Nothing
    /// to do when the template brought its own key or seed.
    pub async fn remove_build_key(
        &self,
        ctx: &BuildContext,
        guest: &mut Guest,
    ) -> Result<(), MachineError> {
        match &self.build_key {
            Some(key) => traces::remove(ctx, guest, key).await,
            None => Ok(()),
        }
    }

    /// Powers the guest off (shutdown_command, or the ACPI power button) and
    /// waits for QEMU to exit.
    pub async fn shutdown(
        &mut self,
        ctx: &BuildContext,
        guest: Option<Guest>,
    ) -> Result<(), MachineError> {
        let timeout = self.config.shutdown_timeout;
        match (&self.config.shutdown_command, guest) {
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
            (None, guest) if !matches!(self.config.communicator, Communicator::None) => {
                if let Some(guest) = guest {
                    guest.close().await;
                }
                ctx.say("Pressing the ACPI power button...");
                if let Some(qmp) = &self.qmp {
                    qmp.system_powerdown().await.map_err(MachineError::Qemu)?;
                }
            }
            _ => ctx.say("Waiting for the guest to power off by itself..."),
        }
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        if process.wait_timeout(timeout).await.is_some() {
            ctx.say("The virtual machine is off.");
            self.process = None;
            Ok(())
        } else {
            process.kill();
            Err(MachineError::ShutdownTimeout(timeout))
        }
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
    }
}
