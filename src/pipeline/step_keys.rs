//! What each step-cache key of a build is made of: everything of the plan
//! that reaches the guest before and during a step, and nothing that only
//! shapes the output on the host (its directory, its format), so that a
//! change the guest cannot see reuses the cache.

use std::path::{Path, PathBuf};

use crate::plan::{BuildSpec, Communicator, ProvisionerSpec, QemuConfig};
use crate::stepcache::key::{self, BootInputs, StepKey};

/// The keys of one build's steps, in order: the boot, then one per
/// provisioner while each can be computed, then the finished disk.
#[derive(Debug, Clone)]
pub struct BuildKeys {
    /// The machine right after SSH first answered.
    pub boot: StepKey,
    /// After each provisioner. Shorter than the provisioners when a step's
    /// inputs could not be read: that step and the ones after it are not
    /// cached.
    pub steps: Vec<StepKey>,
    /// Why `steps` stops early, for the log.
    pub uncached_from: Option<(usize, String)>,
    /// The finished, shut-down disk in the output format; `None` when a
    /// step is not cached.
    pub finished: Option<StepKey>,
}

/// Computes the build's keys. `source_digest` is the source image's
/// sha256; `qemu_version` the `qemu-system` binary's version line (a
/// saved machine only loads into the QEMU that saved it).
pub fn compute(
    spec: &BuildSpec,
    source_digest: &str,
    qemu_version: &str,
) -> Result<BuildKeys, key::KeyError> {
    let config = &spec.qemu;
    // A googlecompute build's VM name is its image's file name (often
    // with a `{{timestamp}}` in it): the guest is named after the instance,
    // hashed below, and never sees it.
    let named_by_vm_name = spec.gce.is_none();
    let mut launch = launch_lines(config, named_by_vm_name);
    launch.push(format!("qemu {qemu_version}"));
    if let Some(gce) = &spec.gce {
        launch.push(format!("gce instance {:?}", gce.instance));
        launch.push(format!("gce startup script {:?}", gce.startup_script));
        launch.push(format!("gce state timeout {:?}", gce.state_timeout));
    }
    let boot = key::boot_key(&BootInputs {
        kiln_version: env!("CARGO_PKG_VERSION"),
        source_digest: source_digest.to_string(),
        launch,
        files: boot_files(config),
    })?;
    let mut steps = Vec::with_capacity(spec.provisioners.len());
    let mut uncached_from = None;
    let mut parent = boot;
    for (position, provisioner) in spec.provisioners.iter().enumerate() {
        let files = crate::stepcache::inputs::provisioner_files(provisioner);
        match key::step_key(&parent, &describe(provisioner), &files) {
            Ok(next) => {
                steps.push(next);
                parent = next;
            }
            Err(err) => {
                uncached_from = Some((position, crate::error::error_chain(&err)));
                break;
            }
        }
    }
    let finished = uncached_from
        .is_none()
        .then(|| key::final_key(&parent, &finish_description(config, named_by_vm_name)));
    Ok(BuildKeys {
        boot,
        steps,
        uncached_from,
        finished,
    })
}

/// The provisioner as it runs: its settings with the rendered
/// environment (secrets included: the text is only ever hashed).
fn describe(provisioner: &ProvisionerSpec) -> String {
    format!(
        "{} {:?} {:?}",
        provisioner.type_name, provisioner.common, provisioner.kind
    )
}

/// The launch settings the guest sees: the machine, its devices, what
/// it boots and is typed, its seed's user. Paths of the build's own
/// scratch files and ports are left out: they change on every run and
/// the guest does not see them.
fn launch_lines(config: &QemuConfig, named_by_vm_name: bool) -> Vec<String> {
    let ssh = match &config.communicator {
        Communicator::None => "communicator none".to_string(),
        Communicator::Ssh(options) => format!(
            "ssh user {} port {} pty {} key type {:?} key file {:?} password set {}",
            options.username,
            options.port,
            options.pty,
            options.temporary_key_pair_type,
            options.private_key_file,
            options.password.is_some()
        ),
    };
    vec![
        format!("disk image {}", config.disk_image),
        format!(
            "disk size {} skip resize {}",
            config.disk_size_mib, config.skip_resize_disk
        ),
        format!(
            "disk {} cache {} discard {} detect zeroes {}",
            config.disk_interface,
            config.disk_cache,
            config.discard(),
            config.detect_zeroes()
        ),
        format!("accelerator {:?}", config.accelerator),
        format!(
            "machine {} cpus {} memory {} net {}",
            config.machine_type, config.cpus, config.memory_mib, config.net_device
        ),
        format!("qemu binary {}", config.qemu_binary),
        format!("qemuargs {:?}", config.qemuargs),
        format!("firmware {:?} efi {}", config.firmware, config.efi_boot),
        format!(
            "cd content {:?} label {:?}",
            config.cd_content, config.cd_label
        ),
        format!(
            "floppy content {:?} label {:?}",
            config.floppy.content, config.floppy.label
        ),
        // The seed's hostname.
        if named_by_vm_name {
            format!("vm name {}", config.vm_name)
        } else {
            "vm name not seen".to_string()
        },
        format!("boot wait {:?} {:?}", config.boot_wait, config.boot),
        format!("http content {:?}", config.http.content),
        ssh,
    ]
}

/// Host files whose content reaches the guest before the first
/// provisioner: CD and floppy files, the HTTP directory, the firmware,
/// the template's SSH key.
fn boot_files(config: &QemuConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config.cd_files.clone();
    files.extend(config.floppy.files.iter().cloned());
    files.extend(config.floppy.dirs.iter().cloned());
    files.extend(config.http.directory.iter().cloned());
    files.extend(config.firmware.iter().cloned());
    if let Communicator::Ssh(options) = &config.communicator {
        files.extend(options.private_key_file.iter().cloned());
    }
    files.retain(|path| path != Path::new(""));
    files
}

/// What turns the last step's machine into the output file.
fn finish_description(config: &QemuConfig, named_by_vm_name: bool) -> String {
    let name = if named_by_vm_name {
        config.vm_name.as_str()
    } else {
        ""
    };
    format!(
        "shutdown {:?} format {:?} compression {} skip compaction {} name {name}",
        config.shutdown_command, config.format, config.disk_compression, config.skip_compaction,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::template::{Overrides, load_bytes};

    fn keys(builder: Value) -> BuildKeys {
        let template = json!({"builders": [builder]});
        let plan = load_bytes(
            Path::new("/t/template.json"),
            template.to_string().as_bytes(),
            &Overrides::default(),
        )
        .unwrap();
        compute(&plan.builds[0], "digest", "qemu 9").unwrap()
    }

    fn gce(image_name: &str) -> Value {
        json!({
            "type": "googlecompute",
            "project_id": "my-project",
            "zone": "us-central1-a",
            "source_image_family": "ubuntu-2204-lts",
            "ssh_username": "packer",
            "image_name": image_name,
        })
    }

    /// A googlecompute image's name (`{{timestamp}}` in it, often) does
    /// not reach the guest; a qemu VM name is its hostname.
    #[test]
    fn a_googlecompute_image_name_is_not_in_the_keys() {
        let (a, b) = (keys(gce("image-1")), keys(gce("image-2")));
        assert_eq!(a.boot, b.boot);
        assert_eq!(a.finished, b.finished);
        let mut other_instance = gce("image-1");
        other_instance["instance_name"] = json!("other");
        assert_ne!(keys(other_instance).boot, a.boot);

        let qemu = |name: &str| {
            keys(json!({
                "type": "qemu",
                "iso_url": "/t/disk.qcow2",
                "iso_checksum": "none",
                "disk_image": true,
                "ssh_username": "root",
                "vm_name": name,
            }))
        };
        assert_ne!(qemu("a").boot, qemu("b").boot);
    }
}
