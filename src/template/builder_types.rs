//! Which builder types kiln builds, and which Packer builder types it
//! recognises but skips. The one place a new buildable type is added.

/// The builder types kiln builds.
pub const BUILDABLE: &[&str] = &["qemu", "googlecompute"];

/// Packer 1.6.6's builder types (`command/plugin.go`). A template may
/// carry any of these beside its qemu builds; kiln skips them with a
/// warning.
const PACKER: &[&str] = &[
    "alicloud-ecs",
    "amazon-chroot",
    "amazon-ebs",
    "amazon-ebssurrogate",
    "amazon-ebsvolume",
    "amazon-instance",
    "azure-arm",
    "azure-chroot",
    "azure-dtl",
    "cloudstack",
    "digitalocean",
    "docker",
    "file",
    "googlecompute",
    "hcloud",
    "hyperone",
    "hyperv-iso",
    "hyperv-vmcx",
    "jdcloud",
    "linode",
    "lxc",
    "lxd",
    "ncloud",
    "null",
    "oneandone",
    "openstack",
    "oracle-classic",
    "oracle-oci",
    "osc-bsu",
    "osc-bsusurrogate",
    "osc-bsuvolume",
    "osc-chroot",
    "parallels-iso",
    "parallels-pvm",
    "profitbricks",
    "proxmox",
    "proxmox-clone",
    "proxmox-iso",
    "qemu",
    "scaleway",
    "tencentcloud-cvm",
    "triton",
    "ucloud-uhost",
    "vagrant",
    "virtualbox-iso",
    "virtualbox-ovf",
    "virtualbox-vm",
    "vmware-iso",
    "vmware-vmx",
    "vsphere-clone",
    "vsphere-iso",
    "yandex",
];

/// What kiln does with a builder of some type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// kiln builds it.
    Buildable,
    /// A Packer builder kiln does not run: skipped, for this reason.
    Skipped(String),
    /// Not a Packer builder type: a mistake, with a suggestion if one is
    /// close.
    Unknown(Option<&'static str>),
}

/// Sorts `builder_type`.
pub fn kind(builder_type: &str) -> Kind {
    if BUILDABLE.contains(&builder_type) {
        Kind::Buildable
    } else if PACKER.contains(&builder_type) {
        Kind::Skipped(format!(
            "builder type {builder_type} is not supported by kiln (it builds {})",
            BUILDABLE.join(" and ")
        ))
    } else {
        Kind::Unknown(super::decode::closest(
            &builder_type.to_ascii_lowercase(),
            PACKER,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_sorted_into_built_skipped_and_mistaken() {
        assert_eq!(kind("qemu"), Kind::Buildable);
        assert_eq!(kind("googlecompute"), Kind::Buildable);
        assert_eq!(
            kind("virtualbox-iso"),
            Kind::Skipped(
                "builder type virtualbox-iso is not supported by kiln (it builds qemu and googlecompute)"
                    .into()
            )
        );
        assert_eq!(kind("qemuu"), Kind::Unknown(Some("qemu")));
        assert_eq!(kind("QEMU"), Kind::Unknown(Some("qemu")));
    }
}
