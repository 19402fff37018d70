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
