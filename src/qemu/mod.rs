//! QEMU: the command line (a pure function of [`LaunchSpec`]), the process
//! (its own process group, killed when kiln goes away), the QMP client, and
//! the choice of accelerator.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    /// Leave the choice to QEMU.
    Default,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    /// qcow2 | raw
    pub format: String,
    /// virtio | ide | scsi | virtio-scsi | ...
    pub interface: String,
    pub cache: String,
    pub discard: String,
    pub detect_zeroes: String,
    /// Open read-only (test boots of a result use an overlay instead).
    pub read_only: bool,
}

/// Everything QEMU's command line is made from.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub binary: String,
    pub vm_name: String,
    pub accel: Accel,
    pub machine_type: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    /// ISO images attached as CD-ROMs, in order.
    pub cdroms: Vec<PathBuf>,
    pub net_device: String,
    /// Host port on 127.0.0.1 forwarded to the guest's SSH port.
    pub ssh_forward: Option<(u16, u16)>,
    pub firmware: Option<PathBuf>,
    pub efi_boot: bool,
    pub headless: bool,
    pub qmp_socket: PathBuf,
    pub serial_log: PathBuf,
    /// The template's `qemuargs`, already rendered, merged as Packer does.
    pub extra_args: Vec<Vec<String>>,
}

/// The full argv (without the binary itself).
pub fn argv(spec: &LaunchSpec) -> Vec<String> {
    let _ = spec;
    todo!("qemu::argv")
}

/// Why QEMU could not be started, talked to, or kept running.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("{0}")]
    Other(String),
}

impl QemuError {
    pub fn other(message: impl Into<String>) -> QemuError {
        QemuError::Other(message.into())
    }

    /// QEMU refused to start because the forwarded host port was taken
    /// (another process bound it after kiln probed it): worth a retry on
    /// another port.
    pub fn is_port_in_use(&self) -> bool {
        todo!("qemu::QemuError::is_port_in_use")
    }
}

/// The accelerator to use when the template leaves it open, and why
/// (for the log): KVM when `/dev/kvm` opens read-write and the CPU
/// advertises `vmx` or `svm`, TCG otherwise.
pub fn detect_accel() -> (Accel, String) {
    todo!("qemu::detect_accel")
}

/// A running QEMU: its own process group, killed (the whole group) when this
/// is dropped or kiln dies; stderr captured for error messages.
pub struct QemuProcess {}

impl QemuProcess {
    /// Starts `binary argv...`. Fails if QEMU exits at once (bad arguments,
    /// port in use, ...), with its stderr in the error.
    pub async fn spawn(binary: &str, argv: &[String]) -> Result<QemuProcess, QemuError> {
        let _ = (binary, argv);
        todo!("qemu::QemuProcess::spawn")
    }

    /// Resolves when QEMU has exited; describes how (exit code or signal, and
    /// the last lines of its stderr). Cancel-safe.
    pub async fn exited(&mut self) -> String {
        todo!("qemu::QemuProcess::exited")
    }

    /// Waits up to `timeout` for QEMU to exit; `None` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<String> {
        let _ = timeout;
        todo!("qemu::QemuProcess::wait_timeout")
    }

    /// Kills the whole process group now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        todo!("qemu::QemuProcess::kill")
    }
}

/// A QMP connection over a unix socket (kiln's own small transport: events are
/// kept as JSON, never a reason to drop the connection).
pub struct Qmp {}

impl Qmp {
    /// Connects to QEMU's QMP socket, retrying until it appears or `timeout`
    /// passes, and negotiates capabilities.
    pub async fn connect(
        path: &std::path::Path,
        timeout: std::time::Duration,
    ) -> Result<Qmp, QemuError> {
        let _ = (path, timeout);
        todo!("qemu::Qmp::connect")
    }

    /// Presses the ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QemuError> {
        todo!("qemu::Qmp::system_powerdown")
    }

    /// The run state (`running`, `internal-error`, `shutdown`, ...).
    pub async fn run_state(&self) -> Result<String, QemuError> {
        todo!("qemu::Qmp::run_state")
    }
}

/// Resolves only if the guest fails: a run state such as `internal-error`
/// or `guest-panicked`, or (with KVM) a guest that makes no progress after
/// the firmware. Never resolves while the guest is healthy.
pub async fn watch_guest(qmp: &Qmp, accel: Accel, serial_log: &std::path::Path) -> QemuError {
    let _ = (qmp, accel, serial_log);
    todo!("qemu::watch_guest")
}
