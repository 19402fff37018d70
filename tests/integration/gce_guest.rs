//! A `googlecompute` template built locally: the guest (the tiny fixture,
//! mapped in as the source image) sees a GCE instance, checked from inside
//! it; the image keeps neither the build key nor the hosts line.

use std::process::Command;

use serde_json::json;

use crate::util::{GuestRoot, Run, Scratch, fixture, path_str};

/// A googlecompute builder on the tiny fixture, with `extra` keys.
fn gce_builder(extra: serde_json::Value) -> serde_json::Value {
    let mut builder = json!({
        "type": "googlecompute",
        "project_id": "kiln-gce-test",
        "zone": "europe-west1-b",
        "source_image": "ubuntu-2204-lts",
        "machine_type": "e2-small",
        "disk_size": 2,
        "image_name": "kiln-gce-image",
        "instance_name": "kiln-gce-vm",
        "ssh_username": "packer",
        "ssh_timeout": "3m",
        "tags": ["web", "ssh"],
        "metadata": {"role": "builder", "team": "images"},
    });
    if let (Some(builder), Some(extra)) = (builder.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            builder.insert(key.clone(), value.clone());
        }
    }
    builder
}

/// Runs `kiln build` with the fixture as `ubuntu-2204-lts`.
fn build(scratch: &Scratch, template: &serde_json::Value) -> Run {
    let map = scratch.write_json(
        "image-map.json",
        &json!({"ubuntu-2204-lts": {"url": fixture().display().to_string(), "checksum": "none"}}),
    );
    let template = scratch.write_json("t.json", template);
    // Nothing is published: the disk stays in the output directory.
    let mut command: Command = scratch.kiln(&["build", "-publish=false", path_str(&template)]);
    command.env("KILN_IMAGE_MAP", &map);
    Run::from(command.output().expect("run kiln"))
}

/// One `wget` of the metadata server, labelled for the output.
fn fetch(label: &str, path: &str) -> String {
    format!(
        "echo \"{label}=$(wget -qO- --header 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/{path})\""
    )
}

#[test]
fn the_guest_sees_a_gce_instance_and_the_image_keeps_no_trace() {
    let scratch = Scratch::new();
    let template = json!({
        "builders": [gce_builder(json!({
            "startup_script_file": "startup.sh",
        }))],
        "provisioners": [{
            "type": "shell",
            "inline": [
                "echo \"startup-file=$(cat /var/lib/kiln-startup-ran)\"",
                fetch("name", "instance/name"),
                fetch("project", "project/project-id"),
                fetch("role", "instance/attributes/role"),
                fetch("ssh-keys", "instance/attributes/ssh-keys"),
                fetch("hostname", "instance/hostname"),
                fetch("recursive", "instance/?recursive=true"),
                "echo \"noheader=$(wget -O- http://metadata.google.internal/computeMetadata/v1/instance/name 2>&1 | grep -o '403 Forbidden')\"",
                "echo \"product=$(cat /sys/class/dmi/id/product_name)\"",
                "echo \"vendor=$(cat /sys/class/dmi/id/sys_vendor)\"",
                "echo \"bios=$(cat /sys/class/dmi/id/bios_vendor)\"",
                "echo \"hosts=$(grep -c metadata.google.internal /etc/hosts)\"",
                "echo \"sudo=$(sudo -n id -u)\"",
            ]
        }]
    });
    scratch.write(
        "startup.sh",
        "#!/bin/sh\necho startup script says hello\necho \"$(id -u)\" > /var/lib/kiln-startup-ran\n",
    );
    let run = build(&scratch, &template);
    run.assert_success();
    let all = run.all();
    for expected in [
        "startup script says hello",
        "startup-file=0",
        "name=kiln-gce-vm",
        "project=kiln-gce-test",
        "role=builder",
        "ssh-keys=packer:ssh-",
        "hostname=kiln-gce-vm.europe-west1-b.c.kiln-gce-test.internal",
        "\"machineType\":\"projects/",
        "\"networkInterfaces\":[{",
        "\"tags\":[\"web\",\"ssh\"]",
        "noheader=403 Forbidden",
        "product=Google Compute Engine",
        "vendor=Google",
        "bios=Google",
        "hosts=1",
        "sudo=0",
    ] {
        assert!(all.contains(expected), "{expected:?} missing in:\n{all}");
    }
    // The startup script ran before the provisioner.
    let started = all.find("startup script says hello").unwrap();
    let provisioned = all.find("startup-file=0").unwrap();
    assert!(started < provisioned, "{all}");

    let disk = scratch
        .path()
        .join("output-googlecompute/kiln-gce-image.qcow2");
    let root = GuestRoot::open(&disk);
    let hosts = root.read("/etc/hosts").expect("/etc/hosts");
    assert!(!hosts.contains("metadata.google.internal"), "{hosts}");
    let keys = root
        .read("/home/packer/.ssh/authorized_keys")
        .expect("packer's authorized_keys");
    assert!(!keys.contains("ssh-"), "the build key stayed: {keys}");
    let passwd = root.read("/etc/passwd").expect("/etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with("packer:")), "{passwd}");
}

#[test]
fn a_failing_startup_script_fails_the_build_with_its_status() {
    let scratch = Scratch::new();
    let template = json!({
        "builders": [gce_builder(json!({
            "metadata": {"startup-script": "#!/bin/sh\necho about to fail\nexit 3\n"},
        }))],
        "provisioners": [{"type": "shell", "inline": ["echo provisioner-ran"]}]
    });
    let run = build(&scratch, &template);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("startup script exited with status 3"), "{all}");
    assert!(all.contains("about to fail"), "{all}");
    assert!(!all.contains("provisioner-ran"), "{all}");
}
