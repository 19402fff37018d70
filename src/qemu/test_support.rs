//! What the tests that start a real QEMU share.

/// The QEMU binary the tests start.
pub const QEMU: &str = "qemu-system-x86_64";

/// CI installs QEMU; a machine without it fails these tests loudly rather
/// than skipping them.
pub fn require_qemu() {
    let found = std::process::Command::new(QEMU)
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{QEMU} is needed for this test (install qemu-system-x86)"
    );
}

impl super::LaunchSpec {
    /// The smallest guest the tests start: `disk` (of `format`) on virtio,
    /// TCG, 1 CPU, 128 MiB, no SSH forward, headless, its QMP socket and
    /// logs in `dir`. A test changes what it is about.
    pub fn for_tests(disk: std::path::PathBuf, format: &str, dir: &std::path::Path) -> Self {
        super::LaunchSpec {
            binary: QEMU.into(),
            vm_name: "kiln-test".into(),
            accel: super::Accel::Tcg,
            machine_type: "pc".into(),
            cpus: 1,
            memory_mib: 128,
            disks: vec![super::Disk {
                path: disk,
                format: format.into(),
                interface: "virtio".into(),
                cache: "writeback".into(),
                discard: "ignore".into(),
                detect_zeroes: "off".into(),
                read_only: false,
            }],
            cdroms: vec![],
            floppy: None,
            net_device: "virtio-net".into(),
            ssh_forward: None,
            firmware: None,
            efi_boot: false,
            headless: true,
            qmp_socket: dir.join("qmp.sock"),
            serial_log: dir.join("serial.log"),
            firmware_log: Some(dir.join("firmware.log")),
            extra_args: vec![],
            vnc: None,
            display: None,
            gce: None,
            incoming: false,
        }
    }
}
