//! `kiln build -cache` of a `googlecompute` template: a rebuild restores
//! the machine saved after the startup script and the first provisioner,
//! and the restored guest still sees its GCE instance.

use serde_json::json;

use crate::util::{GuestRoot, Run, Scratch, fixture, path_str};

const STARTUP: &str =
    "#!/bin/sh\necho STARTUP-SCRIPT-RAN\necho ran >> /var/lib/kiln-startup-runs\n";

/// Reads the metadata attribute `color` from `host` into `file` and
/// prints it.
fn read_attribute(host: &str, file: &str) -> String {
    format!(
        "wget -q -O- --header 'Metadata-Flavor: Google' \
         http://{host}/computeMetadata/v1/instance/attributes/color > {file} \
         && echo \"{file}=$(cat {file})\""
    )
}

/// Prints the instance's name as the metadata server gives it.
fn print_instance_name() -> String {
    "echo \"instance=$(wget -q -O- --header 'Metadata-Flavor: Google' \
     http://metadata.google.internal/computeMetadata/v1/instance/name)\""
        .to_string()
}

/// A googlecompute template as templates are written (a new image name
/// on every run, the instance named by default), with a startup script and
/// metadata; `last` is its second provisioner, run as root.
fn template(scratch: &Scratch, last: &[String]) {
    scratch.write_json(
        "t.json",
        &json!({
            "builders": [{
                "type": "googlecompute",
                "project_id": "kiln-gce-test",
                "zone": "europe-west1-b",
                "source_image": "ubuntu-2204-lts",
                "disk_size": 2,
                "image_name": "kiln-gce-cached-{{timestamp}}",
                "ssh_username": "packer",
                "ssh_timeout": "3m",
                "metadata": {"color": "teal", "startup-script": STARTUP},
            }],
            "provisioners": [
                {"type": "shell",
                 "inline": ["echo FIRST-PROVISIONER", "sudo sh -c 'echo one > /etc/one'"]},
                {"type": "shell",
                 "execute_command": "sudo sh -c '{{ .Vars }} {{ .Path }}'",
                 "inline": last},
            ]
        }),
    );
}

fn build(scratch: &Scratch) -> Run {
    let map = scratch.write_json(
        "image-map.json",
        &json!({"ubuntu-2204-lts": {"url": path_str(fixture()), "checksum": "none"}}),
    );
    let mut command = scratch.kiln(&["build", "-cache", "-force", "-publish=false", "t.json"]);
    command
        .env("KILN_IMAGE_MAP", &map)
        .env("KILN_CACHE_DIR", scratch.path().join("cache"));
    Run::from(command.output().expect("run kiln"))
}

/// The one disk in the output directory (its name has the build's time).
fn output(scratch: &Scratch) -> GuestRoot {
    let disks: Vec<_> = std::fs::read_dir(scratch.path().join("output-googlecompute"))
        .expect("output directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "qcow2"))
        .collect();
    assert_eq!(disks.len(), 1, "{disks:?}");
    GuestRoot::open(&disks[0])
}

/// What the guest printed as `label=...`.
fn printed<'a>(all: &'a str, label: &str) -> &'a str {
    all.lines()
        .find_map(|line| line.split(&format!("{label}=")).nth(1))
        .unwrap_or_else(|| panic!("no {label}= in:\n{all}"))
        .trim()
}

#[test]
fn a_cached_googlecompute_rebuild_restores_a_guest_that_still_sees_its_instance() {
    let scratch = Scratch::new();
    template(
        &scratch,
        &[
            read_attribute("metadata.google.internal", "/etc/color-by-name"),
            print_instance_name(),
        ],
    );
    let first = build(&scratch);
    first.assert_success();
    let all = first.all();
    for expected in [
        "STARTUP-SCRIPT-RAN",
        "FIRST-PROVISIONER",
        "/etc/color-by-name=teal",
        "step cache: 0 hit(s), 4 miss(es)",
    ] {
        assert!(all.contains(expected), "{expected:?} missing in:\n{all}");
    }
    let name = printed(&all, "instance").to_string();
    assert!(name.starts_with("packer-"), "{name}");

    // Only the last provisioner changed: the machine saved after the first
    // one comes back, and asks the metadata server again, by address.
    template(
        &scratch,
        &[
            read_attribute("169.254.169.254", "/etc/color-by-address"),
            print_instance_name(),
        ],
    );
    let second = build(&scratch);
    second.assert_success();
    let all = second.all();
    for expected in [
        "step cache: restoring the machine saved after provisioner 1",
        "Restored the saved machine in",
        "/etc/color-by-address=teal",
        "Removed the metadata.google.internal line from /etc/hosts",
        "step cache: 2 hit(s), 2 miss(es)",
    ] {
        assert!(all.contains(expected), "{expected:?} missing in:\n{all}");
    }
    // The metadata server names the instance the restored guest was.
    assert_eq!(printed(&all, "instance"), name);
    for unexpected in [
        "STARTUP-SCRIPT-RAN",
        "FIRST-PROVISIONER",
        "warm boot failed",
    ] {
        assert!(!all.contains(unexpected), "{unexpected:?} in:\n{all}");
    }

    let root = output(&scratch);
    assert_eq!(root.read("/etc/color-by-address").as_deref(), Some("teal"));
    assert_eq!(root.read("/etc/color-by-name"), None);
    assert_eq!(root.read("/etc/one").as_deref(), Some("one\n"));
    assert_eq!(
        root.read("/var/lib/kiln-startup-runs").as_deref(),
        Some("ran\n"),
        "the startup script ran once, before the first provisioner"
    );
    let hosts = root.read("/etc/hosts").expect("/etc/hosts");
    assert!(!hosts.contains("metadata.google.internal"), "{hosts}");
}
