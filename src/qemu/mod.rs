//! QEMU: the command line (a pure function of [`LaunchSpec`]), the process
//! (its own process group, killed when kiln goes away), the QMP client, and
//! the choice of accelerator.

mod accel;
mod argv;
mod process;
mod qmp;
mod watch;

#[cfg(test)]
mod test_support;

use std::path::PathBuf;

pub use accel::{choose_accel, cpu_has_virtualization, detect_accel};
pub use argv::{argv, display_available, efi_vars_path, merge_qemuargs, prepare_efi_vars};
pub use process::{QemuExit, QemuProcess};
pub use qmp::Qmp;
pub use watch::{Watch, printable, watch_guest};

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
    /// `-display none`. The caller decides: a template that is not headless
    /// on a host without `DISPLAY`/`WAYLAND_DISPLAY` should set this too
    /// (see [`display_available`]), as QEMU would fail to open a window.
    pub headless: bool,
    pub qmp_socket: PathBuf,
    pub serial_log: PathBuf,
    /// Where the firmware's debug console (I/O port 0x402) is written:
    /// SeaBIOS reports boot failures there, not on the serial port.
    pub firmware_log: Option<PathBuf>,
    /// The template's `qemuargs`, already rendered, merged as Packer does.
    pub extra_args: Vec<Vec<String>>,
}

/// What kiln says when a guest under KVM fails: on this kind of host the
/// cure is always the same.
pub const KVM_HINT: &str =
    "KVM failed on this machine (the CPU may lack vmx/svm); use accelerator tcg";

/// Why QEMU could not be started, talked to, or kept running.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited while starting; `stderr` is the tail of what it printed.
    #[error("QEMU exited at once {status}{}", stderr_suffix(.stderr))]
    Exited { status: String, stderr: String },
    #[error("could not connect to QMP at {path}: {reason}")]
    QmpConnect { path: PathBuf, reason: String },
    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    /// The QMP conversation itself broke (connection closed, bad JSON, no
    /// answer in time).
    #[error("QMP: {0}")]
    QmpProtocol(String),
    /// The guest reached a state it cannot recover from.
    #[error("the guest failed: {state}{}{}", detail_suffix(.detail), kvm_suffix(*.kvm))]
    GuestFailed {
        state: String,
        detail: String,
        kvm: bool,
    },
    /// The firmware went through every boot device and found nothing to
    /// boot: the disk has no boot loader (or is not a disk at all).
    #[error(
        "the disk is not bootable: the firmware found nothing to boot from; it said:\n{}",
        indent(.firmware_said)
    )]
    NotBootable { firmware_said: String },
    /// KVM accepted the guest but the vCPU makes no progress.
    #[error("the guest makes no progress under KVM ({detail}): {KVM_HINT}")]
    KvmUnusable { detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn kvm_suffix(kvm: bool) -> String {
    if kvm {
        format!("; {KVM_HINT}")
    } else {
        String::new()
    }
}

impl QemuError {
    pub fn other(message: impl Into<String>) -> QemuError {
        QemuError::Other(message.into())
    }

    /// QEMU refused to start because the forwarded host port was taken
    /// (another process bound it after kiln probed it): worth a retry on
    /// another port.
    pub fn is_port_in_use(&self) -> bool {
        match self {
            QemuError::Exited { stderr, .. } => {
                stderr.contains("Could not set up host forwarding rule")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_is_recognised_from_stderr() {
        let err = QemuError::Exited {
            status: "exit code 1".into(),
            stderr: "qemu-system-x86_64: -netdev user,id=user.0,hostfwd=tcp:127.0.0.1:2222-:22: \
                     Could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'"
                .into(),
        };
        assert!(err.is_port_in_use());
        let other = QemuError::Exited {
            status: "exit code 1".into(),
            stderr: "qemu-system-x86_64: -m foo: Parameter 'size' expects a size".into(),
        };
        assert!(!other.is_port_in_use());
        assert!(!QemuError::other("x").is_port_in_use());
    }

    #[test]
    fn errors_read_well() {
        let err = QemuError::GuestFailed {
            state: "internal-error".into(),
            detail: String::new(),
            kvm: true,
        };
        let text = err.to_string();
        assert!(text.contains("internal-error"), "{text}");
        assert!(text.contains("use accelerator tcg"), "{text}");
        let err = QemuError::Exited {
            status: "with status 1".into(),
            stderr: "boom\n".into(),
        };
        assert_eq!(err.to_string(), "QEMU exited at once with status 1: boom");
    }

    /// Every shape of argv kiln produces must be one QEMU accepts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu_accepts_the_command_lines_kiln_builds() {
        let qemu = "qemu-system-x86_64";
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .expect("qemu-img is needed for this test");
        assert!(made.success());
        let iso = dir.path().join("a,b.iso");
        std::fs::write(&iso, vec![0u8; 2048]).unwrap();
        let seed = dir.path().join("seed.iso");
        std::fs::write(&seed, vec![0u8; 2048]).unwrap();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ovmf = std::path::Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file();
        let cases = [
            ("virtio", false, false),
            // QEMU itself refuses read-only IDE disks.
            ("ide", false, false),
            ("virtio-scsi", false, ovmf),
            ("scsi", true, false),
        ];
        for (interface, read_only, efi_boot) in cases {
            let spec = LaunchSpec {
                binary: qemu.into(),
                vm_name: "kiln-test".into(),
                accel: Accel::Tcg,
                machine_type: "pc".into(),
                cpus: 2,
                memory_mib: 128,
                disks: vec![Disk {
                    path: disk.clone(),
                    format: "qcow2".into(),
                    interface: interface.into(),
                    cache: "writeback".into(),
                    discard: "unmap".into(),
                    detect_zeroes: "unmap".into(),
                    read_only,
                }],
                cdroms: vec![iso.clone(), seed.clone()],
                net_device: "virtio-net".into(),
                ssh_forward: Some((port, 22)),
                firmware: None,
                efi_boot,
                headless: true,
                qmp_socket: dir.path().join("qmp.sock"),
                serial_log: dir.path().join("serial.log"),
                firmware_log: Some(dir.path().join("firmware.log")),
                extra_args: vec![vec!["-no-reboot".into()]],
            };
            prepare_efi_vars(&spec).unwrap();
            let mut process = QemuProcess::spawn(qemu, &argv(&spec))
                .await
                .unwrap_or_else(|err| panic!("{interface}: {err}"));
            let qmp = Qmp::connect(&spec.qmp_socket, std::time::Duration::from_secs(10))
                .await
                .unwrap_or_else(|err| panic!("{interface}: {err}: {}", process.stderr_tail()));
            assert_eq!(qmp.run_state().await.unwrap(), "running", "{interface}");
            drop(qmp);
            process.kill();
        }
    }
}
