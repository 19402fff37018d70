//! Choosing between KVM and TCG.

use super::Accel;

/// The accelerator to use when the template leaves it open, and why
/// (for the log): KVM when `/dev/kvm` opens read-write and the CPU
/// advertises `vmx` or `svm`, TCG otherwise.
pub fn detect_accel() -> (Accel, String) {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    let kvm = kvm.map(drop).map_err(|err| err.to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    choose_accel(kvm, &cpuinfo)
}

/// The decision behind [`detect_accel`]. `/dev/kvm` alone is not enough:
/// some sandboxes expose a `/dev/kvm` that opens while the CPU has no
/// hardware virtualisation, and guests then die or hang after the BIOS.
fn choose_accel(kvm_open: Result<(), String>, cpuinfo: &str) -> (Accel, String) {
    match (kvm_open, cpu_has_virtualization(cpuinfo)) {
        (Ok(()), true) => (
            Accel::Kvm,
            "/dev/kvm opens and the CPU advertises hardware virtualisation".to_string(),
        ),
        (Ok(()), false) => (
            Accel::Tcg,
            "/dev/kvm opens but the CPU advertises neither vmx nor svm".to_string(),
        ),
        (Err(why), _) => (Accel::Tcg, format!("/dev/kvm cannot be opened: {why}")),
    }
}

/// Whether any CPU in `/proc/cpuinfo` lists `vmx` (Intel) or `svm` (AMD).
pub(crate) fn cpu_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim() == "flags")
        .any(|(_, flags)| {
            flags
                .split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm lm\n";
    const NONE: &str =
        "processor\t: 0\nflags\t\t: fpu vme hypervisor lm avx512_vmx_fake\nvmx flags\t: ept\n";

    #[test]
    fn kvm_when_device_opens_and_cpu_has_vmx_or_svm() {
        assert_eq!(choose_accel(Ok(()), INTEL).0, Accel::Kvm);
        assert_eq!(choose_accel(Ok(()), AMD).0, Accel::Kvm);
    }

    #[test]
    fn tcg_when_the_cpu_lacks_virtualisation() {
        let (accel, why) = choose_accel(Ok(()), NONE);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.contains("neither vmx nor svm"), "{why}");
    }

    #[test]
    fn tcg_when_dev_kvm_does_not_open() {
        let (accel, why) = choose_accel(Err("Permission denied".into()), INTEL);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.contains("Permission denied"), "{why}");
    }

    #[test]
    fn flags_are_matched_whole() {
        assert!(!cpu_has_virtualization(NONE));
        assert!(!cpu_has_virtualization(""));
        assert!(cpu_has_virtualization(INTEL));
    }

    #[test]
    fn detect_accel_gives_a_reason() {
        let (_, why) = detect_accel();
        assert!(!why.is_empty());
    }
}
