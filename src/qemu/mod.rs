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

use accel::cpu_has_virtualization;
pub use accel::detect_accel;
pub use argv::{argv, display_available, prepare_efi_vars};
pub use process::{QemuExit, QemuProcess};
pub use qmp::{Qmp, TopImage};
pub use watch::{Watch, printable, watch_guest};

/// The accelerator QEMU runs the guest with (`-machine accel=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's own CPU emulation: works everywhere, several times slower.
    Tcg,
    /// Leave the choice to QEMU.
    Default,
}

/// A disk image attached to the guest, with its `-drive` options.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// qcow2 | raw
    pub format: String,
    /// virtio | ide | scsi | virtio-scsi | ...
    pub interface: String,
    /// `-drive cache=` (writeback, none, unsafe, ...).
    pub cache: String,
    /// `-drive discard=`: `unmap` passes the guest's TRIM to the image.
    pub discard: String,
    /// `-drive detect-zeroes=`; left out when empty or `off`.
    pub detect_zeroes: String,
    /// Open read-only (test boots of a result use an overlay instead).
    pub read_only: bool,
}

/// Everything QEMU's command line is made from.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The QEMU executable, by name on PATH or by path.
    pub binary: String,
    /// `-name`: the window title and QEMU's process name.
    pub vm_name: String,
    /// The accelerator for `-machine accel=`.
    pub accel: Accel,
    /// `-machine type=` (`pc`, `q35`, ...).
    pub machine_type: String,
    /// `-smp`: virtual CPUs, at least 1.
    pub cpus: u32,
    /// `-m`: guest memory in MiB.
    pub memory_mib: u64,
    /// Disks attached in order; the first is the one the guest boots from.
    pub disks: Vec<Disk>,
    /// ISO images attached as CD-ROMs, in order.
    pub cdroms: Vec<PathBuf>,
    /// A raw floppy image attached as the first floppy drive (`-fda`).
    pub floppy: Option<PathBuf>,
    /// The NIC model on QEMU's user-mode network (`virtio-net`, `e1000`, ...).
    pub net_device: String,
    /// Host port on 127.0.0.1 forwarded to the guest's SSH port.
    pub ssh_forward: Option<(u16, u16)>,
    /// `-bios` file, or the UEFI code when `efi_boot` is set.
    pub firmware: Option<PathBuf>,
    /// Boot with OVMF from pflash drives, with a writable copy of its
    /// variable store (see [`prepare_efi_vars`]).
    pub efi_boot: bool,
    /// `-display none`. The caller decides: a template that is not headless
    /// on a host without `DISPLAY`/`WAYLAND_DISPLAY` should set this too
    /// (see [`display_available`]), as QEMU would fail to open a window.
    pub headless: bool,
    /// The unix socket QEMU serves QMP on; its directory also holds the
    /// UEFI variable store.
    pub qmp_socket: PathBuf,
    /// The file the guest's serial console is written to.
    pub serial_log: PathBuf,
    /// Where the firmware's debug console (I/O port 0x402) is written:
    /// SeaBIOS reports boot failures there, not on the serial port.
    pub firmware_log: Option<PathBuf>,
    /// The template's `qemuargs`, already rendered, merged as Packer does.
    pub extra_args: Vec<Vec<String>>,
    /// `-vnc`'s value (`127.0.0.1:3`, `...,password=on`) when the display
    /// is served over VNC.
    pub vnc: Option<String>,
    /// `-display`'s value for a window (the template's `display`); `None`
    /// leaves the choice to QEMU. Not used when `headless`.
    pub display: Option<String>,
    /// A `googlecompute` build: the guest is made to look like a GCE
    /// instance (its network, metadata server and SMBIOS).
    pub gce: Option<GcePlatform>,
    /// `-incoming defer`: QEMU starts with no guest running and waits for
    /// a saved machine state to load over QMP (a warm boot).
    pub incoming: bool,
}

/// What makes a guest look like a GCE instance from inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcePlatform {
    /// The command QEMU runs for each guest connection to
    /// `169.254.169.254:80`, with the connection on its stdin and stdout:
    /// words in shell quoting, run without a shell.
    pub metadata_command: String,
    /// The SMBIOS system serial number (`GoogleCloud-<hex>`).
    pub serial: String,
}

/// What kiln says when a guest under KVM fails: on this kind of host the
/// cure is always the same.
const KVM_HINT: &str = "KVM failed on this machine (the CPU may lack vmx/svm); use accelerator tcg";

/// Why QEMU could not be started, talked to, or kept running.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The QEMU binary could not be run.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The binary kiln tried to run.
        binary: String,
        /// Why the system could not run it.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited while starting; `stderr` is the tail of what it printed.
    #[error("QEMU exited at once {status}{}", stderr_suffix(.stderr))]
    Exited {
        /// "with status N" or "on signal N (NAME)".
        status: String,
        /// The last lines QEMU printed on stderr.
        stderr: String,
    },
    /// QEMU's QMP socket did not accept a connection in time.
    #[error("could not connect to QMP at {path}: {reason}")]
    QmpConnect {
        /// The socket kiln tried.
        path: PathBuf,
        /// The last connection error, and how long kiln tried.
        reason: String,
    },
    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        /// The QMP command kiln sent.
        command: String,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's description of the error.
        desc: String,
    },
    /// The QMP conversation itself broke (connection closed, bad JSON, no
    /// answer in time).
    #[error("QMP: {0}")]
    QmpProtocol(String),
    /// The guest reached a state it cannot recover from.
    #[error("the guest failed: {state}{}{}", detail_suffix(.detail), kvm_suffix(*.kvm))]
    GuestFailed {
        /// The run state or event that ended the guest (`internal-error`,
        /// `guest-panicked`, ...).
        state: String,
        /// What QEMU or the console said about it (a panic line), or empty.
        detail: String,
        /// The guest ran under KVM: the message then says to try TCG.
        kvm: bool,
    },
    /// The firmware went through every boot device and found nothing to
    /// boot: the disk has no boot loader (or is not a disk at all).
    #[error(
        "the disk is not bootable: the firmware found nothing to boot from; it said:\n{}",
        indent(.firmware_said)
    )]
    NotBootable {
        /// The firmware's messages from its debug console or the serial log.
        firmware_said: String,
    },
    /// KVM accepted the guest but the vCPU makes no progress.
    #[error("the guest makes no progress under KVM ({detail}): {KVM_HINT}")]
    KvmUnusable {
        /// How long the vCPU stayed stuck, and where.
        detail: String,
    },
    /// A file kiln prepares for QEMU could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What kiln was doing, naming the files.
        context: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure, already worded for the user.
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
    /// A [`QemuError::Other`] with this message.
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
        let disk = blank_disk(dir.path());
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
            let mut spec = LaunchSpec {
                cpus: 2,
                cdroms: vec![iso.clone(), seed.clone()],
                ssh_forward: Some((port, 22)),
                efi_boot,
                extra_args: vec![vec!["-no-reboot".into()]],
                ..LaunchSpec::for_tests(disk.clone(), "qcow2", dir.path())
            };
            spec.disks[0] = Disk {
                interface: interface.into(),
                discard: "unmap".into(),
                detect_zeroes: "unmap".into(),
                read_only,
                ..spec.disks[0].clone()
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

    /// An empty 64M qcow2 disk in `dir`.
    fn blank_disk(dir: &std::path::Path) -> std::path::PathBuf {
        let disk = dir.join("disk.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .expect("qemu-img is needed for this test");
        assert!(made.success());
        disk
    }

    /// The floppy kiln writes is attached where Packer's `-fda` puts it,
    /// read as raw, and QEMU starts with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu_attaches_the_floppy_as_the_first_floppy_drive() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(dir.path());
        let floppy = dir.path().join("floppy.img");
        crate::seed::floppy::write(
            &crate::plan::FloppyConfig {
                content: [("ks.cfg".to_string(), "text".to_string())].into(),
                ..Default::default()
            },
            &floppy,
        )
        .unwrap();
        let spec = LaunchSpec {
            floppy: Some(floppy.clone()),
            ..LaunchSpec::for_tests(disk, "qcow2", dir.path())
        };
        let mut process = QemuProcess::spawn("qemu-system-x86_64", &argv(&spec))
            .await
            .unwrap();
        let qmp = Qmp::connect(&spec.qmp_socket, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|err| panic!("{err}: {}", process.stderr_tail()));
        let blocks = qmp.human_command("info block").await.unwrap();
        process.kill();
        let line = blocks
            .lines()
            .find(|line| line.starts_with("floppy0"))
            .unwrap_or_else(|| panic!("no floppy0 in:\n{blocks}"));
        assert!(line.contains(&floppy.display().to_string()), "{line}");
        assert!(line.contains("raw"), "{line}");
    }

    /// QEMU takes the GCE guest's network (with the metadata forward) and
    /// SMBIOS tables, and the guest's system serial reads back as given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu_accepts_the_gce_platform() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(dir.path());
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = LaunchSpec {
            ssh_forward: Some((port, 22)),
            gce: Some(GcePlatform {
                metadata_command: "'/bin/cat' '/dev/null'".into(),
                serial: "GoogleCloud-0123ABCD".into(),
            }),
            ..LaunchSpec::for_tests(disk, "qcow2", dir.path())
        };
        let mut process = QemuProcess::spawn("qemu-system-x86_64", &argv(&spec))
            .await
            .unwrap();
        let qmp = Qmp::connect(&spec.qmp_socket, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|err| panic!("{err}: {}", process.stderr_tail()));
        let network = qmp.human_command("info usernet").await.unwrap();
        process.kill();
        assert!(network.contains(&port.to_string()), "{network}");
    }
}
