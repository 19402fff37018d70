//! The `vagrant` post-processor on a real build, and the build's floppy.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use crate::util::{Scratch, assert_nothing_left, fixture_builder, path_str};

/// The members of a gzip'd tar, in order, with their contents.
fn box_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("box");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("name").display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("member");
        out.push((name, content));
    }
    out
}

#[test]
fn a_raw_build_becomes_a_libvirt_box_whose_disk_boots() {
    let scratch = Scratch::new();
    scratch.write(
        "Vagrantfile.tpl",
        "# made by {{ .BuildName }} for {{ .Provider }}\n",
    );
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "name": "fixture",
                "output_directory": "out",
                "vm_name": "disk.raw",
                "format": "raw",
                "floppy_content": {"answers/ks.cfg": "text\n"},
                "floppy_label": "OEMDRV",
            }))],
            "provisioners": [{"type": "shell", "inline": ["echo boxed > /root/boxed.txt"]}],
            "post-processors": [{
                "type": "vagrant",
                "output": "boxes/{{.BuildName}}-{{.Provider}}.box",
                "vagrantfile_template": "Vagrantfile.tpl",
            }]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    assert!(
        run.stdout.contains("Creating floppy disk"),
        "{}",
        run.stdout
    );
    let box_path = scratch.path().join("boxes/fixture-libvirt.box");
    assert!(
        run.stdout
            .contains("'libvirt' provider box: boxes/fixture-libvirt.box"),
        "{}",
        run.stdout
    );
    // Packer deletes the input when keep_input_artifact is not set.
    assert!(!scratch.path().join("out/disk.raw").exists());

    let members = box_members(&box_path);
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Vagrantfile", "box.img", "metadata.json"]);
    let metadata: serde_json::Value = serde_json::from_slice(&members[2].1).expect("metadata");
    assert_eq!(
        metadata,
        json!({"provider": "libvirt", "format": "qcow2", "virtual_size": 1})
    );
    let vagrantfile = String::from_utf8_lossy(&members[0].1);
    assert!(
        vagrantfile.contains("libvirt.driver = \"qemu\""),
        "{vagrantfile}"
    );
    assert!(
        vagrantfile.contains("# made by fixture for libvirt"),
        "{vagrantfile}"
    );
    let disk = &members[1].1;
    assert_eq!(&disk[..4], b"QFI\xfb", "box.img is not qcow2");

    // The box's disk boots, and is the provisioned one.
    let image = scratch.path().join("box.qcow2");
    std::fs::write(&image, disk).expect("unpack box.img");
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [{"name": "provisioned", "file": "/root/boxed.txt", "contains": "boxed"}]}"#,
    );
    let tested = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--accelerator",
        "tcg",
        "--memory",
        "512",
        path_str(&image),
    ]);
    tested.assert_success();
    assert!(
        tested.stdout.contains("All 1 check(s) passed"),
        "{}",
        tested.stdout
    );
    assert_nothing_left(&scratch);
}

#[test]
fn bad_vagrant_and_floppy_options_are_named_before_anything_runs() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "floppy_files": ["missing.xml"],
            }))],
            "post-processors": [{
                "type": "vagrant",
                "compression_level": 12,
                "vagrantfile_template": "nowhere/Vagrantfile",
            }]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    // An invalid template, as for any other option.
    run.assert_code(2);
    for text in [
        "builders[0].floppy_files[0]",
        "missing.xml",
        "post-processors[0].compression_level",
        "expected an integer from -1 to 9, got 12",
        "post-processors[0].vagrantfile_template",
        "nowhere/Vagrantfile",
    ] {
        assert!(run.stderr.contains(text), "{text}:\n{}", run.stderr);
    }
    assert!(!scratch.path().join("output-qemu").exists());
    assert_nothing_left(&scratch);
}

#[test]
fn too_much_for_a_floppy_fails_the_build_before_qemu_starts() {
    let scratch = Scratch::new();
    let big = scratch.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 1_500_000]).expect("big file");
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [fixture_builder(json!({
            "output_directory": "out",
            "floppy_files": [path_str(&big)],
        }))]}),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    assert!(
        run.stderr.contains("a 1.44 MB floppy holds"),
        "{}",
        run.stderr
    );
    assert!(!scratch.path().join("out").exists(), "{}", run.all());
    assert_nothing_left(&scratch);
}
