//! Templates as Packer users have them: deprecated keys, `kiln fix`, and
//! builders of other types beside the qemu one.

use serde_json::json;

use crate::util::{GuestRoot, Scratch, assert_nothing_left, fixture_builder, path_str};

const SKIP_LINE: &str = "skipping build \"virtualbox-iso\": builder type virtualbox-iso is not \
                         supported by kiln (it builds qemu and googlecompute)";

/// A bento-style template: one box for VirtualBox and QEMU, the qemu
/// builder on `qemu` and written with deprecated keys.
fn mixed(scratch: &Scratch, qemu: serde_json::Value) -> std::path::PathBuf {
    scratch.write_json(
        "t.json",
        &json!({
            "builders": [
                {
                    "type": "virtualbox-iso",
                    "guest_additions_path": "VBoxGuestAdditions_{{.Version}}.iso",
                    "vboxmanage": [["modifyvm", "{{.Name}}", "--memory", "1024"]],
                    "iso_checksum_type": "sha256"
                },
                qemu
            ],
            "provisioners": [
                {"type": "shell", "inline": ["echo qemu > /root/which.txt"],
                 "override": {"virtualbox-iso": {"inline": ["echo vbox > /root/which.txt"]}}},
                {"type": "shell", "inline": ["touch /root/vbox-only"], "only": ["virtualbox-iso"]}
            ],
            "post-processors": [{"type": "vagrant", "only": ["virtualbox-iso"]}]
        }),
    )
}

fn qemu_on_an_empty_image(scratch: &Scratch) -> serde_json::Value {
    let image = scratch.write("base.qcow2", "");
    json!({
        "type": "qemu",
        "iso_url": path_str(&image),
        "iso_checksum_type": "none",
        "disk_image": true,
        "ssh_username": "root",
        "ssh_wait_timeout": "10m"
    })
}

#[test]
fn validate_passes_beside_other_builders_and_says_what_it_skips() {
    let scratch = Scratch::new();
    let qemu = qemu_on_an_empty_image(&scratch);
    let template = mixed(&scratch, qemu);
    let run = scratch.run(&["validate", path_str(&template)]);
    run.assert_success();
    assert!(
        run.stdout.contains("The configuration is valid."),
        "{}",
        run.all()
    );
    assert_eq!(run.stderr.matches(SKIP_LINE).count(), 1, "{}", run.all());
    for warning in [
        "Warning: builders[1]: iso_checksum_type is deprecated: write \"iso_checksum\": \"none\"",
        "Warning: builders[1]: ssh_wait_timeout is deprecated: write \"ssh_timeout\": \"10m\"",
    ] {
        run.assert_error_on_stderr(warning);
    }
    // The skipped builder's own deprecated key is not reported.
    assert!(!run.stderr.contains("builders[0]"), "{}", run.stderr);

    // Selecting the qemu build: nothing skipped, nothing to say about it.
    let run = scratch.run(&["validate", "-only=qemu", path_str(&template)]);
    run.assert_success();
    assert!(!run.all().contains("skipping"), "{}", run.all());

    // Selecting only what kiln skips is an error that says why.
    for selection in ["-only=virtualbox-iso", "-except=qemu"] {
        let run = scratch.run(&["validate", selection, path_str(&template)]);
        run.assert_usage_error();
        run.assert_error_on_stderr(
            "nothing to build: build \"virtualbox-iso\" is skipped: builder type \
             virtualbox-iso is not supported by kiln (it builds qemu and googlecompute)",
        );
    }
}

#[test]
fn fix_prints_the_template_rewritten_in_its_own_order() {
    let scratch = Scratch::new();
    let template = scratch.write(
        "old.json",
        r#"{
  "variables": {"sum": "abc"},
  "builders": [{
    "type": "qemu",
    "iso_checksum_type": "sha256",
    "iso_checksum": "{{user `sum`}}",
    "ssh_host_port_min": 2222,
    "ssh_wait_timeout": "20m",
    "disk_size": 10240
  }],
  "post-processors": [{"type": "manifest", "filename": "m.json"}]
}"#,
    );
    let run = scratch.run(&["fix", path_str(&template)]);
    run.assert_success();
    assert_eq!(
        run.stdout,
        r#"{
  "variables": {
    "sum": "abc"
  },
  "builders": [
    {
      "type": "qemu",
      "iso_checksum": "sha256:{{user `sum`}}",
      "host_port_min": 2222,
      "ssh_timeout": "20m",
      "disk_size": "10240M"
    }
  ],
  "post-processors": [
    {
      "type": "manifest",
      "output": "m.json"
    }
  ]
}
"#
    );
    for line in [
        "fixed post-processors[0]: filename is deprecated: write \"output\": \"m.json\"",
        "fixed builders[0]: iso_checksum_type is deprecated: write \"iso_checksum\": \"sha256:{{user `sum`}}\"",
        "fixed builders[0]: ssh_host_port_min is deprecated: write \"host_port_min\": 2222",
        "fixed builders[0]: a number disk_size is the older form: write \"disk_size\": \"10240M\"",
    ] {
        run.assert_error_on_stderr(line);
    }

    // Its output needs no more fixing.
    let fixed = scratch.write("new.json", &run.stdout);
    let again = scratch.run(&["fix", path_str(&fixed)]);
    again.assert_success();
    assert_eq!(again.stdout, run.stdout);
    assert!(again.stderr.contains("nothing to fix"), "{}", again.stderr);
}

#[test]
fn fix_refuses_what_is_not_a_template() {
    let scratch = Scratch::new();
    let missing = scratch.path().join("missing.json");
    let run = scratch.run(&["fix", path_str(&missing)]);
    run.assert_usage_error();
    run.assert_error_on_stderr("missing.json");
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    let broken = scratch.write("broken.json", "{\"builders\": [\n");
    let run = scratch.run(&["fix", path_str(&broken)]);
    run.assert_usage_error();
    run.assert_error_on_stderr("not valid JSON at line");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_build_beside_other_builders_builds_only_qemu_and_says_so_once() {
    let scratch = Scratch::new();
    let mut qemu = fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}));
    let b = qemu.as_object_mut().expect("object");
    b.remove("iso_checksum");
    b.insert("iso_checksum_type".into(), json!("none"));
    let template = mixed(&scratch, qemu);
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    assert_eq!(run.all().matches(SKIP_LINE).count(), 1, "{}", run.all());
    assert!(
        run.stderr.contains("iso_checksum_type is deprecated"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("==> virtualbox-iso"), "{}", run.all());

    let disk = scratch.path().join("out/disk.qcow2");
    let root = GuestRoot::open(&disk);
    assert_eq!(root.read("/root/which.txt").as_deref(), Some("qemu\n"));
    assert_eq!(root.read("/root/vbox-only"), None);
    assert!(!scratch.path().join("output-virtualbox-iso").exists());
    assert_nothing_left(&scratch);
}
