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
