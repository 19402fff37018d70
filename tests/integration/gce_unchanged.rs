//! A googlecompute template in the shape most often found in public
//! repositories (the `ubuntu16.json` of the many "reddit-base" course
//! repositories: every value from user variables, `tags` and `disk_size`
//! as strings, scripts run with `sudo {{.Path}}` by a non-root user)
//! builds unchanged: the only thing added is an image map entry for its
//! source family.

use serde_json::json;

use crate::util::{GuestRoot, Scratch, fixture, path_str};

const TEMPLATE: &str = r#"{
    "variables": {
        "project_id": null,
        "source_image_family": null,
        "machine_type": "f1-micro",
        "image_description": "no description",
        "disk_size": "10",
        "disk_type": "pd-standard",
        "network": "default",
        "tags": "puma-server"
    },
    "builders": [
        {
            "type": "googlecompute",
            "project_id": "{{user `project_id`}}",
            "image_name": "reddit-base-{{timestamp}}",
            "image_family": "reddit-base",
            "source_image_family": "{{user `source_image_family`}}",
            "zone": "europe-west1-b",
            "ssh_username": "appuser",
            "machine_type": "{{user `machine_type`}}",
            "disk_type": "{{user `disk_type`}}",
            "disk_size": "{{user `disk_size`}}",
            "image_description": "{{user `image_description`}}",
            "network": "{{user `network`}}",
            "tags": "{{user `tags`}}"
        }
    ],
    "provisioners": [
        {
            "type": "shell",
            "script": "scripts/install_ruby.sh",
            "execute_command": "sudo {{.Path}}"
        },
        {
            "type": "shell",
            "script": "scripts/install_mongodb.sh",
            "execute_command": "sudo {{.Path}}"
        }
    ]
}
"#;

#[test]
fn a_public_googlecompute_template_builds_with_only_an_image_map_entry() {
    let scratch = Scratch::new();
    let template = scratch.write("ubuntu16.json", TEMPLATE);
    scratch.write(
        "variables.json",
        r#"{"project_id": "infra-123456", "source_image_family": "ubuntu-1604-lts"}"#,
    );
    // The scripts stand in for the real ones (which install Ruby and
    // MongoDB): each leaves a mark, written as root through sudo.
    for (script, mark) in [
        ("install_ruby.sh", "ruby"),
        ("install_mongodb.sh", "mongodb"),
    ] {
        scratch.write(
            &format!("scripts/{script}"),
            &format!("#!/bin/sh\nset -e\nid -u > /var/lib/{mark}-installed-by-uid\n"),
        );
    }
    let map = scratch.write_json(
        "images.json",
        &json!({"ubuntu-1604-lts": {"url": path_str(fixture()), "checksum": "none"}}),
    );

    // Relative script paths are read from the working directory, as
    // Packer reads them: the template's users run it from its directory.
    let mut command = scratch.kiln(&[
        "build",
        "-publish=false",
        "-var-file=variables.json",
        path_str(&template),
    ]);
    command.env("KILN_IMAGE_MAP", &map);
    let run = crate::util::Run::from(command.output().expect("run kiln"));
    run.assert_success();
    let all = run.all();
    assert!(
        all.contains("googlecompute options not applied locally: disk_type, tags"),
        "{all}"
    );

    let output = scratch.path().join("output-googlecompute");
    let disks: Vec<_> = std::fs::read_dir(&output)
        .expect("output directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .collect();
    assert_eq!(disks.len(), 1, "{disks:?}");
    let name = disks[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("reddit-base-"), "{name}");
    let root = GuestRoot::open(&disks[0]);
    for mark in ["ruby", "mongodb"] {
        assert_eq!(
            root.read(&format!("/var/lib/{mark}-installed-by-uid"))
                .as_deref()
                .map(str::trim),
            Some("0"),
            "{mark}"
        );
    }
    // The build's user exists, its key does not stay.
    let keys = root
        .read("/home/appuser/.ssh/authorized_keys")
        .unwrap_or_default();
    assert!(!keys.contains("ssh-"), "a key stayed: {keys}");
}
