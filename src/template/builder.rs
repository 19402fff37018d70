//! The `qemu` builder's options, with the defaults of the current
//! packer-plugin-qemu.
//!
//! The boot command, HTTP server and VNC options are read by `boot`. Packer
//! qemu options kiln cannot honour (bridges, extra disks, ...) are rejected
//! with a message saying so, rather than silently dropped.

use std::path::{Path, PathBuf};

use super::decode::{Obj, string_list_value};
use super::paths;
use crate::plan::defaults;
use crate::plan::{Accelerator, Checksum, DiskFormat, Location, QemuConfig};

/// Packer qemu options kiln knows about but does not implement.
const UNSUPPORTED: &[&str] = &[
    "boot_steps",
    "cdrom_interface",
    "disk_additional_size",
    "efi_drop_efivars",
    "efi_firmware_code",
    "efi_firmware_vars",
    "net_bridge",
    "qemu_img_args",
    "qmp_enable",
    "qmp_socket_path",
    "tpm_device_type",
    "vtpm",
];

const DISK_INTERFACES: &[&str] = &["ide", "sata", "scsi", "virtio", "virtio-scsi"];
const DISK_CACHES: &[&str] = &["writethrough", "writeback", "none", "unsafe", "directsync"];
const DISK_DISCARDS: &[&str] = &["unmap", "ignore"];
const DETECT_ZEROES: &[&str] = &["unmap", "on", "off"];
const NET_DEVICES: &[&str] = &[
    "ne2k_pci",
    "i82551",
    "i82557b",
    "i82559er",
    "rtl8139",
    "e1000",
    "pcnet",
    "virtio",
    "virtio-net",
    "virtio-net-pci",
    "usb-net",
    "i82559a",
    "i82559b",
    "i82559c",
    "i82550",
    "i82562",
    "i82557a",
    "i82557c",
    "i82801",
    "vmxnet3",
    "i82558a",
    "i82558b",
];

/// Decodes one builder object (its `type` already checked to be `qemu`).
///
/// The options are read in a fixed order, so problems are listed in it.
pub(super) fn decode(mut o: Obj<'_>, build_name: &str, cwd: &Path) -> Option<QemuConfig> {
    o.allow(&["type", "name"]);
    reject_unsupported(&mut o);
    let vnc = super::boot::vnc(&mut o);
    let http = super::boot::http(&mut o, cwd);
    let iso_urls = iso_urls(&mut o, cwd);
    let iso_checksum = iso_checksum(&mut o, cwd);
    // The cache names entries by digest and checks them on every use, so
    // a chosen extension or a skipped cache changes nothing it could get
    // wrong: both are read for their type and otherwise not applied.
    let _ = o.string("iso_target_extension");
    let _ = o.bool("iso_skip_cache");
    let iso_target_path = o
        .non_empty_string("iso_target_path")
        .map(|p| paths::resolve(cwd, &p));
    let mut disk = Disk::decode(&mut o);
    let machine = Machine::decode(&mut o, cwd);
    let cd_files = cd_files(&mut o, cwd);
    let cd_content = o.string_map("cd_content").unwrap_or_default();
    let cd_label = o.non_empty_string("cd_label");
    let floppy = super::floppy::decode(&mut o, cwd);
    let output_directory_shown = o
        .non_empty_string("output_directory")
        .unwrap_or_else(|| defaults::output_directory(build_name));
    let output_directory = paths::resolve(cwd, &output_directory_shown);
    let output_directory_shown = PathBuf::from(output_directory_shown);
    let vm_name = o
        .non_empty_string("vm_name")
        .unwrap_or_else(|| defaults::vm_name(build_name));
    let shutdown_command = o.non_empty_string("shutdown_command");
    let shutdown_timeout = o
        .duration("shutdown_timeout")
        .unwrap_or(defaults::SHUTDOWN_TIMEOUT);
    let boot_wait = o.duration("boot_wait").unwrap_or(defaults::BOOT_WAIT);
    let boot = super::boot::boot(&mut o, &vm_name);
    let (host_port_min, host_port_max) = host_ports(&mut o);
    let communicator = super::communicator::decode(&mut o, cwd);
    disk.apply_format_rules(&o);
    o.finish();

    Some(QemuConfig {
        iso_urls: iso_urls?,
        iso_checksum: iso_checksum?,
        iso_target_path,
        disk_image: disk.image,
        use_backing_file: disk.use_backing_file,
        skip_resize_disk: disk.skip_resize,
        disk_size_mib: disk.size_mib?,
        format: disk.format?,
        disk_interface: disk.interface,
        disk_cache: disk.cache,
        disk_discard: disk.discard,
        disk_detect_zeroes: disk.detect_zeroes,
        skip_compaction: disk.skip_compaction,
        disk_compression: disk.compression,
        accelerator: machine.accelerator?,
        cpus: machine.cpus,
        memory_mib: machine.memory_mib,
        machine_type: machine.machine_type,
        net_device: machine.net_device,
        qemu_binary: machine.qemu_binary,
        qemuargs: machine.qemuargs,
        headless: machine.headless,
        firmware: machine.firmware,
        efi_boot: machine.efi_boot,
        cd_files,
        cd_content,
        cd_label,
        floppy,
        output_directory,
        output_directory_shown,
        vm_name,
        shutdown_command,
        shutdown_timeout,
        boot_wait,
        boot,
        http,
        vnc,
        host_port_min,
        host_port_max,
        communicator: communicator?,
    })
}

/// Reports each option of [`UNSUPPORTED`] that is set.
fn reject_unsupported(o: &mut Obj<'_>) {
    for key in UNSUPPORTED {
        if o.has(key) {
            o.cx()
                .problem(o.key_path(key), super::unsupported::builder_option(key));
        }
    }
    o.allow(UNSUPPORTED);
}

fn iso_checksum(o: &mut Obj<'_>, cwd: &Path) -> Option<Checksum> {
    match o.string("iso_checksum") {
        Some(s) => parse_checksum(&s, cwd)
            .map_err(|e| o.cx().problem(o.key_path("iso_checksum"), e))
            .ok(),
        None => {
            o.missing(
                "iso_checksum",
                "a checksum such as \"sha256:<hex>\", or \"none\" to skip the check",
            );
            None
        }
    }
}

/// The disk options; `None` in a field that has a problem.
struct Disk {
    image: bool,
    use_backing_file: bool,
    skip_resize: bool,
    size_mib: Option<u64>,
    format: Option<DiskFormat>,
    interface: String,
    cache: String,
    discard: Option<String>,
    detect_zeroes: Option<String>,
    skip_compaction: bool,
    compression: bool,
}

impl Disk {
    fn decode(o: &mut Obj<'_>) -> Disk {
        let cx = o.cx();
        let image = o.bool("disk_image").unwrap_or(false);
        let use_backing_file = o.bool("use_backing_file").unwrap_or(false);
        let skip_resize = o.bool("skip_resize_disk").unwrap_or(false);
        let size_mib = match o.raw("disk_size") {
            None => Some(defaults::DISK_SIZE_MIB),
            Some(v) => {
                let path = o.key_path("disk_size");
                let text = match v {
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    other => super::decode::string_value(cx, &path, other),
                };
                text.and_then(|t| parse_disk_size(&t).map_err(|e| cx.problem(&path, e)).ok())
            }
        };
        let format = match o.string("format").as_deref() {
            None | Some("") | Some("qcow2") => Some(DiskFormat::Qcow2),
            Some("raw") => Some(DiskFormat::Raw),
            Some(other) => {
                cx.problem(
                    o.key_path("format"),
                    format!("expected qcow2 or raw, got {other:?}"),
                );
                None
            }
        };
        Disk {
            image,
            use_backing_file,
            skip_resize,
            size_mib,
            format,
            interface: o
                .choice("disk_interface", DISK_INTERFACES)
                .unwrap_or_else(|| defaults::DISK_INTERFACE.into()),
            cache: o
                .choice("disk_cache", DISK_CACHES)
                .unwrap_or_else(|| defaults::DISK_CACHE.into()),
            discard: o.choice("disk_discard", DISK_DISCARDS),
            detect_zeroes: o.choice("disk_detect_zeroes", DETECT_ZEROES),
            skip_compaction: o.bool("skip_compaction").unwrap_or(false),
            compression: o.bool("disk_compression").unwrap_or(false),
        }
    }

    /// Packer's rules between the disk options, checked once all options
    /// are read: compaction and compression only apply to qcow2, and a
    /// backing file would be defeated by compaction.
    fn apply_format_rules(&mut self, o: &Obj<'_>) {
        let cx = o.cx();
        if let Some(fmt) = self.format {
            if fmt != DiskFormat::Qcow2 {
                self.skip_compaction = true;
                self.compression = false;
            }
            if self.use_backing_file {
                self.skip_compaction = true;
                if !(self.image && fmt == DiskFormat::Qcow2) {
                    cx.problem(
                        o.key_path("use_backing_file"),
                        "can only be enabled for qcow2 images and when disk_image is true",
                    );
                }
            }
        }
        if self.skip_resize && !self.image {
            cx.problem(
                o.key_path("skip_resize_disk"),
                "can only be used when disk_image is true",
            );
        }
    }
}

/// The virtual machine's options; `None` in a field that has a problem.
struct Machine {
    accelerator: Option<Option<Accelerator>>,
    cpus: u32,
    memory_mib: u64,
    machine_type: String,
    net_device: String,
    qemu_binary: String,
    qemuargs: Vec<Vec<String>>,
    headless: bool,
    firmware: Option<PathBuf>,
    efi_boot: bool,
}

impl Machine {
    fn decode(o: &mut Obj<'_>, cwd: &Path) -> Machine {
        Machine {
            accelerator: accelerator(o),
            // Packer quietly replaces values below these floors by its
            // defaults.
            cpus: o
                .int("cpus", 0, i64::from(u32::MAX))
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .unwrap_or(defaults::CPUS),
            memory_mib: o
                .int("memory", 0, i64::from(u32::MAX))
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n >= defaults::MEMORY_FLOOR_MIB)
                .unwrap_or(defaults::MEMORY_MIB),
            machine_type: o
                .non_empty_string("machine_type")
                .unwrap_or_else(|| defaults::MACHINE_TYPE.into()),
            net_device: o
                .choice("net_device", NET_DEVICES)
                .unwrap_or_else(|| defaults::NET_DEVICE.into()),
            qemu_binary: o
                .non_empty_string("qemu_binary")
                .unwrap_or_else(|| defaults::QEMU_BINARY.into()),
            qemuargs: qemuargs(o),
            headless: o.bool("headless").unwrap_or(false),
            firmware: o
                .non_empty_string("firmware")
                .map(|s| paths::resolve(cwd, &s)),
            efi_boot: o.bool("efi_boot").unwrap_or(false),
        }
    }
}

/// The host port range forwarded to the guest's SSH port.
fn host_ports(o: &mut Obj<'_>) -> (u16, u16) {
    let min = port(
        o,
        "host_port_min",
        "ssh_host_port_min",
        defaults::HOST_PORT_MIN,
    );
    let max = port(
        o,
        "host_port_max",
        "ssh_host_port_max",
        defaults::HOST_PORT_MAX,
    );
    if min > max {
        o.cx().problem(
            o.key_path("host_port_min"),
            format!("must not be above host_port_max ({min} > {max})"),
        );
    }
    (min, max)
}

fn iso_urls(o: &mut Obj<'_>, cwd: &Path) -> Option<Vec<Location>> {
    let cx = o.cx();
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Some(url) = o.string("iso_url") {
        entries.push((o.key_path("iso_url"), url));
    }
    if let Some(list) = o.string_list("iso_urls") {
        if list.is_empty() {
            cx.problem(o.key_path("iso_urls"), "must list at least one path");
        }
        for (i, url) in list.into_iter().enumerate() {
            entries.push((format!("{}[{i}]", o.key_path("iso_urls")), url));
        }
    }
    if !o.has("iso_url") && !o.has("iso_urls") {
        o.missing("iso_url", "one of iso_url or iso_urls");
        return None;
    }
    if o.has("iso_url") && o.has("iso_urls") {
        cx.problem(
            o.key_path("iso_urls"),
            "only one of iso_url or iso_urls may be set",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (path, url) in entries {
        match paths::source_location(cwd, &url) {
            Ok(location) => out.push(location),
            Err(e) => {
                cx.problem(path, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `sha256:<hex>` and friends, `none`, or a bare digest whose length names the
/// algorithm (as go-getter guesses it).
pub(super) fn parse_checksum(s: &str, cwd: &Path) -> Result<Checksum, String> {
    let s = s.trim();
    // `none:<digest>` is what the deprecated `iso_checksum_type` becomes
    // when its value is only known once variables are rendered.
    if s.eq_ignore_ascii_case("none") || s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("none:"))
    {
        return Ok(Checksum::None);
    }
    if let Some(list) = s.strip_prefix("file:") {
        // The checksum list: a URL, a `file:` URL or a path (go-getter's
        // `file:./SHA256SUMS`).
        return paths::source_location(cwd, list)
            .map(Checksum::File)
            .map_err(|e| format!("checksum list: {e}"));
    }
    let (algo, hex) = match s.split_once(':') {
        Some((a, h)) => (Some(a.to_ascii_lowercase()), h),
        None => (None, s),
    };
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected a checksum such as \"sha256:<hex digest>\" or \"none\", got {s:?}"
        ));
    }
    let hex = hex.to_ascii_lowercase();
    let algo = match algo {
        Some(a) => a,
        None => match hex.len() {
            32 => "md5".into(),
            40 => "sha1".into(),
            64 => "sha256".into(),
            128 => "sha512".into(),
            n => {
                return Err(format!(
                    "cannot tell the checksum type of a {n}-digit digest; prefix it, as in \"sha256:<hex>\""
                ));
            }
        },
    };
    let (want, checksum) = match algo.as_str() {
        "md5" => (32, Checksum::Md5(hex.clone())),
        "sha1" => (40, Checksum::Sha1(hex.clone())),
        "sha256" => (64, Checksum::Sha256(hex.clone())),
        "sha512" => (128, Checksum::Sha512(hex.clone())),
        other => {
            return Err(format!(
                "unsupported checksum type {other:?}: expected md5, sha1, sha256, sha512 or none"
            ));
        }
    };
    if hex.len() != want {
        return Err(format!(
            "a {algo} digest has {want} hex digits, got {}",
            hex.len()
        ));
    }
    Ok(checksum)
}

/// Packer's `disk_size`: digits with an optional unit b/k/m/g/t (any case);
/// a bare number is MiB; empty or `0` is the default.
fn parse_disk_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("expected a size such as \"10G\", \"10240M\" or a number of MiB, got {s:?}");
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() || t == "0" {
        return Ok(defaults::DISK_SIZE_MIB);
    }
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t.as_str(), 'm'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    const MIB: u64 = 1024 * 1024;
    let mib = match unit {
        'b' => n.div_ceil(MIB),
        'k' => n.div_ceil(1024),
        'm' => n,
        'g' => n.checked_mul(1024).ok_or_else(bad)?,
        't' => n.checked_mul(1024 * 1024).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if mib == 0 {
        return Err(format!("disk size {s:?} is less than 1 MiB"));
    }
    Ok(mib)
}

fn accelerator(o: &mut Obj<'_>) -> Option<Option<Accelerator>> {
    let Some(s) = o.string("accelerator") else {
        return Some(None);
    };
    let problem = |m: String| {
        o.cx().problem(o.key_path("accelerator"), m);
        None
    };
    match s.as_str() {
        "" => Some(None),
        "kvm" => Some(Some(Accelerator::Kvm)),
        "tcg" => Some(Some(Accelerator::Tcg)),
        "none" => Some(Some(Accelerator::None)),
        "xen" | "hax" | "hvf" | "whpx" => problem(format!(
            "accelerator {s:?} is not supported by kiln on Linux: use kvm, tcg or none (or leave it out to pick automatically)"
        )),
        _ => problem(format!("expected kvm, tcg or none, got {s:?}")),
    }
}

/// `qemuargs`, then `-cpu <cpu_model>` unless they already choose a CPU:
/// Packer's qemu builder treats `cpu_model` as a default `-cpu`.
fn qemuargs(o: &mut Obj<'_>) -> Vec<Vec<String>> {
    let mut args = explicit_qemuargs(o);
    if let Some(model) = o.non_empty_string("cpu_model")
        && !args
            .iter()
            .any(|group| group.first().is_some_and(|f| f == "-cpu"))
    {
        args.push(vec!["-cpu".to_string(), model]);
    }
    args
}

fn explicit_qemuargs(o: &mut Obj<'_>) -> Vec<Vec<String>> {
    let Some(v) = o.raw("qemuargs") else {
        return Vec::new();
    };
    let cx = o.cx();
    let path = o.key_path("qemuargs");
    let serde_json::Value::Array(groups) = v else {
        cx.problem(path, "expected an array of arrays of strings");
        return Vec::new();
    };
    groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| string_list_value(cx, &format!("{path}[{i}]"), g))
        .collect()
}

fn cd_files(o: &mut Obj<'_>, cwd: &Path) -> Vec<PathBuf> {
    let Some(list) = o.string_list("cd_files") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let p = paths::resolve(cwd, f);
        // Globs are expanded when the CD is made; plain paths must exist.
        if !f.contains(['*', '?', '[']) && !p.exists() {
            o.cx().problem(
                format!("{}[{i}]", o.key_path("cd_files")),
                format!("file not found: {}", p.display()),
            );
        }
        out.push(p);
    }
    out
}

fn port(o: &mut Obj<'_>, key: &'static str, alias: &'static str, default: u16) -> u16 {
    let value = o.int(key, 1, 65535).or_else(|| o.int(alias, 1, 65535));
    value.and_then(|n| u16::try_from(n).ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_disk_size("10G"), Ok(10240));
        assert_eq!(parse_disk_size("10240M"), Ok(10240));
        assert_eq!(parse_disk_size("10240"), Ok(10240));
        assert_eq!(parse_disk_size("1T"), Ok(1_048_576));
        assert_eq!(parse_disk_size("2048k"), Ok(2));
        assert_eq!(parse_disk_size("1g"), Ok(1024));
        assert_eq!(parse_disk_size("0"), Ok(40960));
        assert_eq!(parse_disk_size("1048576b"), Ok(1));
        assert_eq!(
            parse_disk_size("ten"),
            Err(
                "expected a size such as \"10G\", \"10240M\" or a number of MiB, got \"ten\""
                    .into()
            )
        );
        assert!(parse_disk_size("10GB").is_err());
        assert!(parse_disk_size("G").is_err());
    }

    #[test]
    fn checksums() {
        let h64 = "a".repeat(64);
        let cwd = Path::new("/t");
        assert_eq!(parse_checksum("none", cwd), Ok(Checksum::None));
        assert_eq!(
            parse_checksum(&format!("sha256:{}", h64.to_uppercase()), cwd),
            Ok(Checksum::Sha256(h64.clone()))
        );
        assert_eq!(parse_checksum(&h64, cwd), Ok(Checksum::Sha256(h64.clone())));
        assert_eq!(
            parse_checksum(&"b".repeat(32), cwd),
            Ok(Checksum::Md5("b".repeat(32)))
        );
        assert_eq!(
            parse_checksum(&"c".repeat(40), cwd),
            Ok(Checksum::Sha1("c".repeat(40)))
        );
        assert_eq!(
            parse_checksum(&format!("sha512:{}", "d".repeat(128)), cwd),
            Ok(Checksum::Sha512("d".repeat(128)))
        );
        assert_eq!(
            parse_checksum(&format!("md5:{}", "e".repeat(32)), cwd),
            Ok(Checksum::Md5("e".repeat(32)))
        );
        assert!(
            parse_checksum("sha256:abc", cwd)
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert_eq!(
            parse_checksum("file:SHA256SUMS", cwd),
            Ok(Checksum::File(Location::Path("/t/SHA256SUMS".into())))
        );
        assert_eq!(
            parse_checksum("file:./SHA256SUMS", cwd),
            Ok(Checksum::File(Location::Path("/t/./SHA256SUMS".into())))
        );
        assert_eq!(
            parse_checksum("file:https://x/SHA256SUMS", cwd),
            Ok(Checksum::File(Location::Url(
                url::Url::parse("https://x/SHA256SUMS").unwrap()
            )))
        );
        assert!(
            parse_checksum("file:ftp://x/SHA256SUMS", cwd)
                .unwrap_err()
                .starts_with("checksum list: unsupported source")
        );
        assert!(parse_checksum("abc", cwd).is_err());
        assert!(parse_checksum("crc32:abcd", cwd).is_err());
        assert!(parse_checksum("sha256:zz", cwd).is_err());
    }
}
