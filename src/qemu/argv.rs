//! The QEMU command line, built the way Packer's qemu builder builds it
//! (`getDefaultArgs` + `applyUserOverrides`) so that templates' `qemuargs`
//! mean the same thing under kiln.

use std::path::{Path, PathBuf};

use super::{Accel, Disk, GcePlatform, LaunchSpec, QemuError};

/// Where OVMF looks for its code when the template names no firmware.
const DEFAULT_OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";

/// The full argv (without the binary itself).
pub fn argv(spec: &LaunchSpec) -> Vec<String> {
    let mut argv = merge_qemuargs(&default_args(spec), &spec.extra_args, &spec.net_device);
    // kiln's own, after the merge: a template's `-device` or `-chardev`
    // replaces Packer's defaults, and must not silently take away what
    // tells kiln that the disk does not boot.
    if let Some(log) = &spec.firmware_log
        && has_isa_debug_port(spec)
        && !argv.iter().any(|arg| arg.contains("debugcon"))
    {
        argv.extend([
            "-chardev".to_string(),
            format!("file,id=kiln-firmware,path={}", escape(log)),
            "-device".to_string(),
            format!("isa-debugcon,iobase={SEABIOS_DEBUG_PORT:#x},chardev=kiln-firmware"),
        ]);
    }
    // Last, and beyond the reach of qemuargs: everything before it must be
    // the machine the saved state was taken from.
    if spec.incoming {
        argv.extend(["-incoming".to_string(), "defer".to_string()]);
    }
    argv
}

/// The I/O port SeaBIOS (as built for QEMU) writes its messages to.
const SEABIOS_DEBUG_PORT: u16 = 0x402;

/// Only x86 PC machines have the ISA bus an `isa-debugcon` sits on.
fn has_isa_debug_port(spec: &LaunchSpec) -> bool {
    let binary = Path::new(&spec.binary)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let x86 = binary.contains("x86_64") || binary.contains("i386") || binary == "qemu-kvm";
    let pc = spec.machine_type.starts_with("pc") || spec.machine_type.starts_with("q35");
    x86 && pc
}

/// Whether a QEMU window could open on this host: without it a template
/// that is not headless must still run with `-display none`.
pub fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// The writable copy of the UEFI variable store that `efi_boot` attaches as
/// the second pflash drive, next to the QMP socket (the build's scratch
/// directory). [`prepare_efi_vars`] creates it.
fn efi_vars_path(spec: &LaunchSpec) -> PathBuf {
    spec.qmp_socket.with_file_name("efivars.fd")
}

/// Copies the variable store that matches the firmware code
/// (`OVMF_CODE_4M.fd` -> `OVMF_VARS_4M.fd`) to `efivars.fd` next to the
/// QMP socket: OVMF writes to it, so it must never be the packaged file.
pub fn prepare_efi_vars(spec: &LaunchSpec) -> Result<(), QemuError> {
    if !spec.efi_boot {
        return Ok(());
    }
    let code = efi_code(spec);
    let template = vars_for_code(&code).ok_or_else(|| {
        QemuError::other(format!(
            "no UEFI variable store found next to {}",
            code.display()
        ))
    })?;
    let target = efi_vars_path(spec);
    std::fs::copy(&template, &target).map_err(|source| QemuError::Io {
        context: format!("copying {} to {}", template.display(), target.display()),
        source,
    })?;
    Ok(())
}

fn efi_code(spec: &LaunchSpec) -> PathBuf {
    spec.firmware
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OVMF_CODE))
}

fn vars_for_code(code: &Path) -> Option<PathBuf> {
    let name = code.file_name()?.to_str()?;
    let mut candidates = Vec::new();
    if name.contains("CODE") {
        candidates.push(code.with_file_name(name.replacen("CODE", "VARS", 1)));
    }
    if name.contains("code") {
        candidates.push(code.with_file_name(name.replacen("code", "vars", 1)));
    }
    candidates.push(code.with_file_name("OVMF_VARS_4M.fd"));
    candidates.push(code.with_file_name("OVMF_VARS.fd"));
    candidates.into_iter().find(|path| path.is_file())
}

/// Packer's defaults, one entry per flag in a fixed order (Packer keeps
/// them in a map; a stable order keeps argv testable and logs diffable).
fn default_args(spec: &LaunchSpec) -> Vec<(String, Vec<String>)> {
    let mut args: Vec<(String, Vec<String>)> = Vec::new();
    let mut push = |flag: &str, values: Vec<String>| {
        if !values.is_empty() {
            args.push((flag.to_string(), values));
        }
    };

    push("-name", vec![spec.vm_name.clone()]);
    let machine = match spec.accel {
        Accel::Kvm => format!("type={},accel=kvm", spec.machine_type),
        Accel::Tcg => format!("type={},accel=tcg", spec.machine_type),
        Accel::Default => format!("type={}", spec.machine_type),
    };
    push("-machine", vec![machine]);
    push("-m", vec![format!("{}M", spec.memory_mib)]);
    push("-smp", vec![spec.cpus.max(1).to_string()]);
    // Packer boots `once=d` from an ISO and `c` from a disk image. The spec
    // does not say which this is, but it need not: SeaBIOS and OVMF skip a
    // blank disk, so "disk, then CD" installs from the ISO onto a fresh
    // disk, boots a disk image straight away (its seed CD is not bootable),
    // and after an installer reboots lands on the installed disk.
    let boot = if spec.cdroms.is_empty() {
        "c"
    } else {
        "order=cd"
    };
    push("-boot", vec![boot.to_string()]);

    let (drives, mut devices) = disks_and_cdroms(spec);
    devices.push(format!("{},netdev=user.0", spec.net_device));
    push("-drive", drives);
    push("-device", devices);

    let mut netdev = "user,id=user.0".to_string();
    if let Some(gce) = &spec.gce {
        netdev.push_str(&gce_network(gce));
    }
    if let Some((host, guest)) = spec.ssh_forward {
        // Bound to loopback only: the guest's SSH (often with a known
        // password) must not be reachable from the network.
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    push("-netdev", vec![netdev]);
    if let Some(gce) = &spec.gce {
        push("-smbios", gce_smbios(gce));
    }
    if !spec.efi_boot
        && let Some(firmware) = &spec.firmware
    {
        push("-bios", vec![firmware.display().to_string()]);
    }
    push(
        "-qmp",
        vec![format!(
            "unix:{},server=on,wait=off",
            escape(&spec.qmp_socket)
        )],
    );
    push(
        "-serial",
        vec![format!("file:{}", spec.serial_log.display())],
    );
    if let Some(vnc) = &spec.vnc {
        push("-vnc", vec![vnc.clone()]);
    }
    if spec.headless {
        push("-display", vec!["none".to_string()]);
    } else if let Some(display) = &spec.display {
        push("-display", vec![display.clone()]);
    }
    args
}

/// The user network of a `googlecompute` build's guest: GCE's link-local
/// range, so that QEMU forwards the metadata address to kiln's metadata
/// server (QEMU refuses a `guestfwd` outside the guest's network). The
/// guest gets its address by DHCP, as on GCE.
fn gce_network(gce: &GcePlatform) -> String {
    use crate::gcp::metadata::{DNS_IP, GATEWAY_IP, GUEST_IP, GUEST_NET, METADATA_IP};
    // QEMU reads the command up to the next `,`: a comma in it (a path)
    // is doubled.
    format!(
        ",net={GUEST_NET},host={GATEWAY_IP},dns={DNS_IP},dhcpstart={GUEST_IP},guestfwd=tcp:{METADATA_IP}:80-cmd:{}",
        gce.metadata_command.replace(',', ",,")
    )
}

/// SMBIOS tables that say "Google Compute Engine", where cloud-init and
/// Google's guest software look to decide they run on GCE.
fn gce_smbios(gce: &GcePlatform) -> Vec<String> {
    vec![
        "type=0,vendor=Google".to_string(),
        format!(
            "type=1,manufacturer=Google,product=Google Compute Engine,serial={}",
            gce.serial.replace(',', ",,")
        ),
        "type=2,manufacturer=Google,product=Google Compute Engine".to_string(),
        "type=3,manufacturer=Google".to_string(),
    ]
}

/// The `-drive` values (disks, CDs, EFI firmware) and the `-device`
/// values the disks need, in order.
fn disks_and_cdroms(spec: &LaunchSpec) -> (Vec<String>, Vec<String>) {
    let (mut devices, mut drives) = (Vec::new(), Vec::new());
    let mut scsi_controller = false;
    for (index, disk) in spec.disks.iter().enumerate() {
        if is_scsi(&disk.interface) {
            if !scsi_controller {
                devices.push("virtio-scsi-pci,id=scsi0".to_string());
                scsi_controller = true;
            }
            devices.push(format!("scsi-hd,bus=scsi0.0,drive=drive{index}"));
        }
        drives.push(drive_arg(disk, index));
    }
    // The first CD goes where `-cdrom` puts it, the secondary channel's
    // master (unit 2): on the primary master, Linux's ATA probing costs a
    // guest about half a second more at boot. Units IDE disks hold (they
    // count up from 0) are skipped.
    let ide_disks = spec.disks.iter().filter(|d| d.interface == "ide").count();
    let mut free_units = [2usize, 3, 1, 0]
        .into_iter()
        .filter(|unit| *unit >= ide_disks);
    for cdrom in &spec.cdroms {
        match free_units.next() {
            Some(unit) => drives.push(format!("file={},media=cdrom,index={unit}", escape(cdrom))),
            // More CDs than IDE units: QEMU says so.
            None => drives.push(format!("file={},media=cdrom", escape(cdrom))),
        }
    }
    // Packer's `-fda`, with the format said: the template's own `-fda`
    // replaces it, as in Packer.
    if let Some(floppy) = &spec.floppy
        && !spec
            .extra_args
            .iter()
            .any(|group| group.first().is_some_and(|f| f == "-fda"))
    {
        drives.push(format!(
            "file={},if=floppy,index=0,format=raw",
            escape(floppy)
        ));
    }
    if spec.efi_boot {
        drives.push(format!(
            "file={},if=pflash,unit=0,format=raw,readonly=on",
            escape(&efi_code(spec))
        ));
        drives.push(format!(
            "file={},if=pflash,unit=1,format=raw",
            escape(&efi_vars_path(spec))
        ));
    }
    (drives, devices)
}

fn is_scsi(interface: &str) -> bool {
    matches!(interface, "virtio-scsi" | "scsi")
}

fn drive_arg(disk: &Disk, index: usize) -> String {
    let file = escape(&disk.path);
    let mut arg = if is_scsi(&disk.interface) {
        format!(
            "if=none,file={file},id=drive{index},cache={},discard={},format={}",
            disk.cache, disk.discard, disk.format
        )
    } else {
        format!(
            "file={file},if={},cache={},discard={},format={}",
            disk.interface, disk.cache, disk.discard, disk.format
        )
    };
    if !disk.detect_zeroes.is_empty() && disk.detect_zeroes != "off" {
        arg.push_str(&format!(",detect-zeroes={}", disk.detect_zeroes));
    }
    if disk.read_only {
        arg.push_str(",readonly=on");
    }
    arg
}

/// A path inside a QEMU option list, where `,` must be doubled.
fn escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Packer's `applyUserOverrides`: each `qemuargs` group is a flag and its
/// value (the rest of the group joined without a separator, as Packer
/// does); a flag given there replaces every default occurrence of that flag
/// (so one `-drive` replaces all default drives); a group with only a flag
/// is a bare flag. As in Packer, when `-device` is overridden without the
/// network device, the default network device is added back so `user.0`
/// keeps a NIC. Overridden flags keep the defaults' position; new flags
/// follow in the template's order.
fn merge_qemuargs(
    defaults: &[(String, Vec<String>)],
    extra: &[Vec<String>],
    net_device: &str,
) -> Vec<String> {
    let mut user: Vec<(String, Vec<String>)> = Vec::new();
    for group in extra {
        let Some((flag, rest)) = group.split_first() else {
            continue;
        };
        let value = rest.concat();
        let index = match user.iter().position(|(known, _)| known == flag) {
            Some(index) => index,
            None => {
                user.push((flag.clone(), Vec::new()));
                user.len() - 1
            }
        };
        if !value.is_empty() {
            user[index].1.push(value);
        }
    }
    if let Some((_, devices)) = user.iter_mut().find(|(flag, _)| flag == "-device")
        && !devices.concat().contains(net_device)
    {
        devices.push(format!("{net_device},netdev=user.0"));
    }

    let mut out = Vec::new();
    let mut emit = |flag: &str, values: &[String]| {
        if values.is_empty() {
            out.push(flag.to_string());
        }
        for value in values {
            out.push(flag.to_string());
            out.push(value.clone());
        }
    };
    for (flag, values) in defaults {
        match user.iter().find(|(known, _)| known == flag) {
            Some((_, overriding)) => emit(flag, overriding),
            None => emit(flag, values),
        }
    }
    for (flag, values) in &user {
        if !defaults.iter().any(|(known, _)| known == flag) {
            emit(flag, values);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            vm_name: "debian".into(),
            accel: Accel::Kvm,
            cpus: 2,
            memory_mib: 1024,
            ssh_forward: Some((3022, 22)),
            qmp_socket: "/scratch/qmp.sock".into(),
            serial_log: "/out/serial.log".into(),
            firmware_log: None,
            ..LaunchSpec::for_tests("/out/debian.qcow2".into(), "qcow2", Path::new("/out"))
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The values following each occurrence of `flag`.
    fn values(argv: &[String], flag: &str) -> Vec<String> {
        argv.windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
            .collect()
    }

    #[test]
    fn defaults_match_packer() {
        let argv = argv(&spec());
        assert_eq!(
            argv,
            strings(&[
                "-name",
                "debian",
                "-machine",
                "type=pc,accel=kvm",
                "-m",
                "1024M",
                "-smp",
                "2",
                "-boot",
                "c",
                "-drive",
                "file=/out/debian.qcow2,if=virtio,cache=writeback,discard=ignore,format=qcow2",
                "-device",
                "virtio-net,netdev=user.0",
                "-netdev",
                "user,id=user.0,hostfwd=tcp:127.0.0.1:3022-:22",
                "-qmp",
                "unix:/scratch/qmp.sock,server=on,wait=off",
                "-serial",
                "file:/out/serial.log",
                "-display",
                "none",
            ])
        );
    }

    #[test]
    fn a_restore_waits_for_its_state_last_and_changes_nothing_else() {
        let cold = argv(&spec());
        let warm = argv(&LaunchSpec {
            incoming: true,
            ..spec()
        });
        assert_eq!(warm[..cold.len()], cold[..]);
        assert_eq!(warm[cold.len()..], strings(&["-incoming", "defer"]));
    }

    fn gce_spec() -> LaunchSpec {
        LaunchSpec {
            gce: Some(GcePlatform {
                metadata_command: "'/opt/k,iln/kiln' __gce-metadata '/tmp/s/metadata.json'".into(),
                serial: "GoogleCloud-0123ABCD".into(),
            }),
            ..spec()
        }
    }

    #[test]
    fn a_gce_guest_gets_gce_network_and_smbios() {
        let argv = argv(&gce_spec());
        assert_eq!(
            values(&argv, "-netdev"),
            strings(&[concat!(
                "user,id=user.0,net=169.254.169.0/24,host=169.254.169.1,dns=169.254.169.253,",
                "dhcpstart=169.254.169.15,guestfwd=tcp:169.254.169.254:80-cmd:",
                "'/opt/k,,iln/kiln' __gce-metadata '/tmp/s/metadata.json',",
                "hostfwd=tcp:127.0.0.1:3022-:22"
            )])
        );
        assert_eq!(
            values(&argv, "-smbios"),
            strings(&[
                "type=0,vendor=Google",
                "type=1,manufacturer=Google,product=Google Compute Engine,serial=GoogleCloud-0123ABCD",
                "type=2,manufacturer=Google,product=Google Compute Engine",
                "type=3,manufacturer=Google",
            ])
        );
        // Everything else is the qemu builder's.
        let plain = super::argv(&spec());
        let strip = |argv: &[String]| -> Vec<String> {
            let mut out = Vec::new();
            let mut skip = false;
            for arg in argv {
                if skip {
                    skip = false;
                } else if arg == "-netdev" || arg == "-smbios" {
                    skip = true;
                } else {
                    out.push(arg.clone());
                }
            }
            out
        };
        assert_eq!(strip(&argv), strip(&plain));
        assert!(values(&plain, "-smbios").is_empty());
    }

    #[test]
    fn a_templates_netdev_replaces_the_gce_network_too() {
        let mut spec = gce_spec();
        spec.extra_args = vec![strings(&[
            "-netdev",
            "user,id=user.0,hostfwd=tcp::2222-:22",
        ])];
        assert_eq!(
            values(&argv(&spec), "-netdev"),
            strings(&["user,id=user.0,hostfwd=tcp::2222-:22"])
        );
        // The same override on a qemu build: as before.
        let mut plain = super::tests::spec();
        plain.extra_args = spec.extra_args.clone();
        assert_eq!(
            values(&argv(&plain), "-netdev"),
            strings(&["user,id=user.0,hostfwd=tcp::2222-:22"])
        );
    }

    #[test]
    fn the_firmware_log_is_kilns_own_debug_console() {
        let mut spec = spec();
        spec.firmware_log = Some("/scratch/fw,1.log".into());
        let argv = argv(&spec);
        assert_eq!(
            argv[argv.len() - 4..],
            strings(&[
                "-chardev",
                "file,id=kiln-firmware,path=/scratch/fw,,1.log",
                "-device",
                "isa-debugcon,iobase=0x402,chardev=kiln-firmware",
            ])
        );
        // A template's `-device` replaces Packer's defaults, not this.
        spec.extra_args = vec![strings(&["-device", "virtio-rng-pci"])];
        assert!(values(&argv_of(&spec), "-device").contains(&"virtio-rng-pci".to_string()));
        assert!(
            values(&argv_of(&spec), "-device")
                .contains(&"isa-debugcon,iobase=0x402,chardev=kiln-firmware".to_string())
        );
    }

    #[test]
    fn no_firmware_log_where_it_cannot_or_need_not_be() {
        let with = |binary: &str, machine: &str, extra: Vec<Vec<String>>| {
            let mut spec = spec();
            spec.firmware_log = Some("/scratch/fw.log".into());
            spec.binary = binary.into();
            spec.machine_type = machine.into();
            spec.extra_args = extra;
            argv(&spec).iter().any(|a| a.contains("kiln-firmware"))
        };
        assert!(with("/usr/bin/qemu-system-x86_64", "q35", vec![]));
        assert!(with("qemu-system-i386", "pc-i440fx-9.0", vec![]));
        assert!(!with("qemu-system-aarch64", "virt", vec![]));
        assert!(!with("qemu-system-x86_64", "microvm", vec![]));
        // The template has its own debug console on the port.
        assert!(!with(
            "qemu-system-x86_64",
            "pc",
            vec![strings(&["-debugcon", "file:/tmp/debug.log"])]
        ));
        assert!(!argv(&spec()).iter().any(|a| a.contains("debugcon")));
    }

    #[test]
    fn accelerator_choices() {
        let mut spec = spec();
        spec.accel = Accel::Tcg;
        assert_eq!(values(&argv(&spec), "-machine"), ["type=pc,accel=tcg"]);
        spec.accel = Accel::Default;
        spec.machine_type = "q35".into();
        assert_eq!(values(&argv(&spec), "-machine"), ["type=q35"]);
    }

    #[test]
    fn ssh_forward_is_bound_to_loopback_only() {
        let argv = argv(&spec());
        let netdev = values(&argv, "-netdev");
        assert_eq!(netdev.len(), 1);
        assert!(netdev[0].contains("hostfwd=tcp:127.0.0.1:3022-:22"));
        assert!(!netdev[0].contains("hostfwd=tcp::"));
    }

    #[test]
    fn no_forward_without_communicator() {
        let mut spec = spec();
        spec.ssh_forward = None;
        assert_eq!(values(&argv(&spec), "-netdev"), ["user,id=user.0"]);
    }

    #[test]
    fn not_headless_leaves_the_display_to_qemu() {
        let mut spec = spec();
        spec.headless = false;
        assert!(!argv(&spec).contains(&"-display".to_string()));
    }

    #[test]
    fn vnc_and_display() {
        let mut spec = spec();
        spec.vnc = Some("127.0.0.1:3,password=on".into());
        let argv = argv(&spec);
        assert_eq!(values(&argv, "-vnc"), ["127.0.0.1:3,password=on"]);
        assert_eq!(values(&argv, "-display"), ["none"]);
        spec.headless = false;
        spec.display = Some("sdl".into());
        assert_eq!(values(&argv_of(&spec), "-display"), ["sdl"]);
        spec.vnc = None;
        assert!(values(&argv_of(&spec), "-vnc").is_empty());
    }

    #[test]
    fn disk_options() {
        let mut spec = spec();
        spec.disks[0].detect_zeroes = "unmap".into();
        spec.disks[0].read_only = true;
        spec.disks[0].format = "raw".into();
        spec.disks[0].interface = "ide".into();
        assert_eq!(
            values(&argv(&spec), "-drive"),
            [
                "file=/out/debian.qcow2,if=ide,cache=writeback,discard=ignore,format=raw,detect-zeroes=unmap,readonly=on"
            ]
        );
    }

    #[test]
    fn scsi_disks_get_a_controller_and_a_scsi_hd() {
        for interface in ["virtio-scsi", "scsi"] {
            let mut spec = spec();
            spec.disks[0].interface = interface.into();
            let argv = argv(&spec);
            assert_eq!(
                values(&argv, "-device"),
                [
                    "virtio-scsi-pci,id=scsi0",
                    "scsi-hd,bus=scsi0.0,drive=drive0",
                    "virtio-net,netdev=user.0"
                ]
            );
            assert_eq!(
                values(&argv, "-drive"),
                [
                    "if=none,file=/out/debian.qcow2,id=drive0,cache=writeback,discard=ignore,format=qcow2"
                ]
            );
        }
    }

    #[test]
    fn cdroms_take_the_ide_units_an_ide_disk_leaves() {
        let mut spec = spec();
        spec.disks[0].interface = "ide".into();
        spec.cdroms = vec!["/a.iso".into(), "/b.iso".into(), "/c.iso".into()];
        let drives = values(&argv(&spec), "-drive");
        assert_eq!(
            drives[1..],
            [
                "file=/a.iso,media=cdrom,index=2",
                "file=/b.iso,media=cdrom,index=3",
                "file=/c.iso,media=cdrom,index=1",
            ]
        );
    }

    #[test]
    fn a_floppy_is_the_first_floppy_drive_unless_qemuargs_bring_one() {
        let mut spec = spec();
        spec.floppy = Some("/scratch/a,b/floppy.img".into());
        let drives = values(&argv(&spec), "-drive");
        assert_eq!(
            drives.last().map(String::as_str),
            Some("file=/scratch/a,,b/floppy.img,if=floppy,index=0,format=raw")
        );
        spec.extra_args = vec![strings(&["-fda", "/mine.img"])];
        let argv = argv(&spec);
        assert!(
            !values(&argv, "-drive")
                .iter()
                .any(|d| d.contains("if=floppy"))
        );
        assert_eq!(values(&argv, "-fda"), ["/mine.img"]);
        spec.floppy = None;
        spec.extra_args.clear();
        assert!(
            !values(&argv_of(&spec), "-drive")
                .iter()
                .any(|d| d.contains("floppy"))
        );
    }

    #[test]
    fn several_cdroms_boot_after_the_disk() {
        let mut spec = spec();
        spec.cdroms = vec!["/iso/debian.iso".into(), "/scratch/seed.iso".into()];
        let argv = argv(&spec);
        let drives = values(&argv, "-drive");
        assert_eq!(drives.len(), 3);
        assert_eq!(drives[1], "file=/iso/debian.iso,media=cdrom,index=2");
        assert_eq!(drives[2], "file=/scratch/seed.iso,media=cdrom,index=3");
        assert_eq!(values(&argv, "-boot"), ["order=cd"]);
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut spec = spec();
        spec.cdroms = vec!["/iso/a,b.iso".into()];
        assert!(
            values(&argv(&spec), "-drive")
                .contains(&"file=/iso/a,,b.iso,media=cdrom,index=2".into())
        );
    }

    #[test]
    fn firmware_without_efi_is_a_bios() {
        let mut spec = spec();
        spec.firmware = Some("/fw/bios.bin".into());
        let argv = argv(&spec);
        assert_eq!(values(&argv, "-bios"), ["/fw/bios.bin"]);
        assert!(!values(&argv, "-drive").iter().any(|d| d.contains("pflash")));
    }

    #[test]
    fn efi_boot_uses_pflash_code_and_a_private_vars_copy() {
        let mut spec = spec();
        spec.efi_boot = true;
        let argv = argv(&spec);
        let drives = values(&argv, "-drive");
        assert!(
            drives.contains(
                &"file=/usr/share/OVMF/OVMF_CODE_4M.fd,if=pflash,unit=0,format=raw,readonly=on"
                    .to_string()
            )
        );
        assert!(drives.contains(&"file=/scratch/efivars.fd,if=pflash,unit=1,format=raw".into()));
        assert!(values(&argv, "-bios").is_empty());

        spec.firmware = Some("/fw/OVMF_CODE.fd".into());
        assert!(
            values(&argv_of(&spec), "-drive")
                .contains(&"file=/fw/OVMF_CODE.fd,if=pflash,unit=0,format=raw,readonly=on".into())
        );
    }

    fn argv_of(spec: &LaunchSpec) -> Vec<String> {
        argv(spec)
    }

    #[test]
    fn prepare_efi_vars_copies_the_matching_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("OVMF_CODE_4M.fd"), b"code").unwrap();
        std::fs::write(dir.path().join("OVMF_VARS_4M.fd"), b"vars").unwrap();
        let mut spec = spec();
        spec.efi_boot = true;
        spec.firmware = Some(dir.path().join("OVMF_CODE_4M.fd"));
        spec.qmp_socket = dir.path().join("scratch-qmp.sock");
        prepare_efi_vars(&spec).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("efivars.fd")).unwrap(),
            b"vars"
        );
    }

    #[test]
    fn qemuargs_replace_the_default_of_the_same_flag() {
        let mut spec = spec();
        spec.extra_args = vec![strings(&["-m", "2048M"])];
        let argv = argv(&spec);
        assert_eq!(values(&argv, "-m"), ["2048M"]);
        // In the default's place, not appended.
        let at = argv.iter().position(|a| a == "-m").unwrap();
        assert_eq!(at, 4);
    }

    #[test]
    fn qemuargs_values_are_joined_without_separator() {
        let mut spec = spec();
        spec.extra_args = vec![strings(&[
            "-netdev",
            "user,id=user.0,",
            "hostfwd=tcp::{{ .SSHHostPort }}-:22",
        ])];
        assert_eq!(
            values(&argv(&spec), "-netdev"),
            ["user,id=user.0,hostfwd=tcp::{{ .SSHHostPort }}-:22"]
        );
    }

    #[test]
    fn overriding_device_keeps_the_network_device() {
        let mut spec = spec();
        spec.extra_args = vec![
            strings(&["-device", "virtio-rng-pci"]),
            strings(&["-device", "usb-kbd"]),
        ];
        assert_eq!(
            values(&argv(&spec), "-device"),
            ["virtio-rng-pci", "usb-kbd", "virtio-net,netdev=user.0"]
        );
        spec.extra_args = vec![strings(&[
            "-device",
            "virtio-net,netdev=user.0,mac=52:54:00:00:00:01",
        ])];
        assert_eq!(
            values(&argv(&spec), "-device"),
            ["virtio-net,netdev=user.0,mac=52:54:00:00:00:01"]
        );
    }

    #[test]
    fn overriding_drive_replaces_all_default_drives() {
        let mut spec = spec();
        spec.cdroms = vec!["/iso/x.iso".into()];
        spec.extra_args = vec![strings(&["-drive", "file=/mine.img,if=virtio"])];
        assert_eq!(values(&argv(&spec), "-drive"), ["file=/mine.img,if=virtio"]);
    }

    #[test]
    fn other_qemuargs_are_appended_in_order() {
        let mut spec = spec();
        spec.extra_args = vec![
            strings(&["-cpu", "host"]),
            vec![],
            strings(&["-no-reboot"]),
            strings(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]),
            strings(&["-cpu", "max"]),
        ];
        let argv = argv(&spec);
        let tail: Vec<&str> = argv[argv.len() - 7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-cpu",
                "host",
                "-cpu",
                "max",
                "-no-reboot",
                "-object",
                "rng-random,id=rng0,filename=/dev/urandom"
            ]
        );
    }

    #[test]
    fn a_bare_flag_replacing_a_default_has_no_value() {
        let mut spec = spec();
        spec.extra_args = vec![strings(&["-display"])];
        let argv = argv(&spec);
        assert_eq!(argv.last().map(String::as_str), Some("-display"));
        assert!(values(&argv, "-display").is_empty());
    }
}
