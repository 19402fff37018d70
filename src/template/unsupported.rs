//! What kiln does not do yet, said one way everywhere:
//! `<feature> is not supported by kiln yet: <workaround>` (the problem's
//! place comes first when it is shown). A user's own mistake (a missing
//! file, an unset variable, a typo) is never worded like this.

use super::decode::closest;

/// Packer qemu options kiln does not implement: the feature and what to
/// do instead. An option not listed gets the plain "remove it".
const BUILDER_OPTIONS: &[(&[&str], &str, &str)] = &[
    (
        &["cdrom_interface"],
        "choosing the CD-ROM interface",
        "remove it; kiln attaches CDs itself, and qemuargs can add a drive on another interface",
    ),
    (
        &["disk_additional_size"],
        "extra disks",
        "create the disks beforehand and attach them with qemuargs \
         ([\"-drive\", \"file=extra.qcow2,if=virtio,format=qcow2\"])",
    ),
    (
        &["efi_firmware_code", "efi_firmware_vars", "efi_drop_efivars"],
        "split EFI firmware files",
        "set \"firmware\" to a combined OVMF image with \"efi_boot\": true, \
         or pass the pflash drives in qemuargs",
    ),
    (
        &["net_bridge"],
        "bridged networking",
        "remove it; kiln uses QEMU user networking and forwards SSH on 127.0.0.1",
    ),
    (
        &["qemu_img_args"],
        "extra qemu-img arguments",
        "remove it and convert the output afterwards with qemu-img",
    ),
    (
        &["qmp_enable", "qmp_socket_path"],
        "a QMP socket of your own",
        "remove it; kiln drives QEMU over its own QMP socket",
    ),
    (
        &["tpm_device_type", "vtpm"],
        "a virtual TPM",
        "start swtpm yourself and pass its socket in qemuargs (-chardev, -tpmdev, -device)",
    ),
    (
        &["winrm_username", "winrm_password"],
        "WinRM",
        "use the ssh communicator",
    ),
];

/// The message for a Packer qemu option kiln does not implement.
pub fn builder_option(key: &str) -> String {
    match BUILDER_OPTIONS
        .iter()
        .find(|(keys, ..)| keys.contains(&key))
    {
        Some((_, feature, workaround)) => {
            format!("{feature} ({key}) is not supported by kiln yet: {workaround}")
        }
        None => format!("{key} is not supported by kiln yet: remove it"),
    }
}

/// Packer 1.6.6's provisioner types (`command/plugin.go`).
const PACKER_PROVISIONERS: &[&str] = &[
    "ansible",
    "ansible-local",
    "azure-dtlartifact",
    "breakpoint",
    "chef-client",
    "chef-solo",
    "converge",
    "file",
    "inspec",
    "powershell",
    "puppet-masterless",
    "puppet-server",
    "salt-masterless",
    "shell",
    "shell-local",
    "sleep",
    "windows-restart",
    "windows-shell",
];

/// The message for a provisioner type kiln does not run: a Packer type
/// with what to do instead, or an unknown type with the nearest one.
pub fn provisioner(type_name: &str) -> String {
    let workaround = match type_name {
        "breakpoint" => "build with -debug, which pauses before each provisioner",
        "sleep" => {
            "use \"pause_before\" on the next provisioner, or a shell provisioner that sleeps"
        }
        "powershell" | "windows-shell" | "windows-restart" => {
            "kiln reaches its guests over SSH with a POSIX shell: use a shell provisioner"
        }
        "inspec" => {
            "run the checks as kiln tests (the template's \"tests\") or from a shell provisioner"
        }
        "chef-client" | "chef-solo" | "converge" | "puppet-masterless" | "puppet-server"
        | "salt-masterless" => {
            "install and run the tool from a shell provisioner (upload its files with a file provisioner)"
        }
        _ if PACKER_PROVISIONERS.contains(&type_name) => {
            "remove it, or limit it with \"only\" to builds kiln skips"
        }
        _ => return unknown("provisioner", type_name, PACKER_PROVISIONERS),
    };
    format!("the {type_name} provisioner is not supported by kiln yet: {workaround}")
}

/// Packer 1.6.6's post-processor types (`command/plugin.go`).
const PACKER_POST_PROCESSORS: &[&str] = &[
    "alicloud-import",
    "amazon-import",
    "artifice",
    "checksum",
    "compress",
    "digitalocean-import",
    "docker-import",
    "docker-push",
    "docker-save",
    "docker-tag",
    "exoscale-import",
    "googlecompute-export",
    "googlecompute-import",
    "manifest",
    "shell-local",
    "ucloud-import",
    "vagrant",
    "vagrant-cloud",
    "vsphere",
    "vsphere-template",
    "yandex-export",
    "yandex-import",
];

/// The message for a post-processor type kiln does not run, as for
/// [`provisioner`].
pub fn post_processor(type_name: &str) -> String {
    let workaround = match type_name {
        "artifice" => "remove it; kiln's artifact is the disk in output_directory",
        t if t.starts_with("docker-") => {
            "it post-processes docker builds, which kiln skips; limit it to them with \"only\", \
             or remove it"
        }
        _ if PACKER_POST_PROCESSORS.contains(&type_name) => {
            "publish the disk in output_directory with the provider's own tools after the \
             build, or limit it with \"only\" to builds kiln skips"
        }
        _ => return unknown("post-processor", type_name, PACKER_POST_PROCESSORS),
    };
    format!("the {type_name} post-processor is not supported by kiln yet: {workaround}")
}

/// Not a Packer type at all: the user's typo, not kiln's gap.
fn unknown(what: &str, type_name: &str, known: &[&str]) -> String {
    let mut message = format!("unknown {what} type {type_name:?}");
    if let Some(best) = closest(type_name, known) {
        message.push_str(&format!(" (did you mean {best}?)"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_name_the_feature_and_the_workaround_in_one_form() {
        assert_eq!(
            builder_option("disk_additional_size"),
            "extra disks (disk_additional_size) is not supported by kiln yet: create the disks \
             beforehand and attach them with qemuargs \
             ([\"-drive\", \"file=extra.qcow2,if=virtio,format=qcow2\"])"
        );
        assert_eq!(
            builder_option("boot_steps"),
            "boot_steps is not supported by kiln yet: remove it"
        );
        for message in [
            builder_option("vtpm"),
            provisioner("puppet-masterless"),
            provisioner("windows-restart"),
            post_processor("docker-push"),
            post_processor("amazon-import"),
        ] {
            let (feature, workaround) = message
                .split_once(" is not supported by kiln yet: ")
                .unwrap_or_else(|| panic!("not in the one form: {message}"));
            assert!(!feature.is_empty() && !workaround.is_empty(), "{message}");
        }
    }

    #[test]
    fn a_type_packer_does_not_have_is_a_mistake_not_a_gap() {
        assert_eq!(
            provisioner("shel"),
            "unknown provisioner type \"shel\" (did you mean shell?)"
        );
        assert_eq!(
            post_processor("manfest"),
            "unknown post-processor type \"manfest\" (did you mean manifest?)"
        );
        assert_eq!(
            post_processor("frobnicate"),
            "unknown post-processor type \"frobnicate\""
        );
    }
}
