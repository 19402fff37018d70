//! `googlecompute` templates under `kiln validate` and `kiln inspect`: the
//! image map (`KILN_IMAGE_MAP`, `-source-image`, the built-ins) decides
//! which local disk stands in for the source image, before anything boots.

use serde_json::{Value, json};

use crate::util::{Scratch, path_str};

fn template(scratch: &Scratch, extra: Value) -> std::path::PathBuf {
    let mut builder = json!({
        "type": "googlecompute",
        "name": "web",
        "project_id": "my-project",
        "zone": "us-central1-a",
        "source_image": "corp-golden-v3",
        "source_image_project_id": "corp-images",
        "image_name": "web-{{user `version`}}",
        "ssh_username": "packer",
        "tags": ["web"],
        "network": "shared-vpc"
    });
    for (k, v) in extra.as_object().expect("object") {
        builder[k] = v.clone();
    }
    scratch.write_json(
        "template.json",
        &json!({
            "variables": {"version": "1"},
            "builders": [builder],
            "provisioners": [{"type": "shell", "inline": ["true"]}]
        }),
    )
}

fn map_file(scratch: &Scratch, entries: Value) -> std::path::PathBuf {
    scratch.write_json("maps/images.json", &entries)
}

#[test]
fn a_mapped_googlecompute_template_validates_and_says_what_is_not_applied() {
    let scratch = Scratch::new();
    scratch.write("maps/golden.qcow2", "not really a disk");
    let map = map_file(
        &scratch,
        json!({"corp-images/corp-golden-v3": {"url": "golden.qcow2", "checksum": "none"}}),
    );
    let template = template(&scratch, json!({}));
    let run = Run::with_map(&scratch, &map, &["validate", path_str(&template)]);
    run.0.assert_success();
    assert!(
        run.0.all().contains("The configuration is valid."),
        "{}",
        run.0.all()
    );
    assert!(
        run.0
            .all()
            .contains("googlecompute options not applied locally: network, tags"),
        "{}",
        run.0.all()
    );

    let run = Run::with_map(&scratch, &map, &["inspect", path_str(&template)]);
    run.0.assert_success();
    let golden = scratch.path().join("maps/golden.qcow2");
    let line = format!(
        "source projects/corp-images/global/images/corp-golden-v3 = {}",
        golden.display()
    );
    assert!(run.0.stdout.contains(&line), "{}", run.0.stdout);
    assert!(run.0.stdout.contains("web                  googlecompute"));
}

#[test]
fn source_image_arguments_win_over_the_map_file() {
    let scratch = Scratch::new();
    let map = map_file(
        &scratch,
        json!({"corp-golden-v3": {"url": "golden.qcow2", "checksum": "none"}}),
    );
    let template = template(&scratch, json!({}));
    let run = Run::with_map(
        &scratch,
        &map,
        &[
            "inspect",
            "-source-image",
            "corp-golden-v3=https://images.example.com/golden.qcow2",
            path_str(&template),
        ],
    );
    run.0.assert_success();
    assert!(
        run.0.stdout.contains(
            "source projects/corp-images/global/images/corp-golden-v3 = https://images.example.com/golden.qcow2"
        ),
        "{}",
        run.0.stdout
    );
}

#[test]
fn public_families_are_built_in() {
    let scratch = Scratch::new();
    let template = template(
        &scratch,
        json!({"source_image": "", "source_image_project_id": [], "source_image_family": "debian-12"}),
    );
    let run = scratch.run(&["inspect", path_str(&template)]);
    run.assert_success();
    assert!(
        run.stdout.contains(
            "source projects/debian-cloud/global/images/family/debian-12 = \
             https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unmapped_image_is_refused_before_anything_starts() {
    let scratch = Scratch::new();
    let template = template(&scratch, json!({}));
    let run = scratch.run(&["validate", path_str(&template)]);
    run.assert_usage_error();
    run.assert_error_on_stderr("builders[0].source_image");
    run.assert_error_on_stderr("no local disk is mapped for the image \"corp-golden-v3\"");
    run.assert_error_on_stderr("KILN_IMAGE_MAP");
    run.assert_error_on_stderr("-source-image corp-golden-v3=<path or URL>");
}

#[test]
fn a_bad_map_file_names_the_file_and_the_entry() {
    let scratch = Scratch::new();
    let map = map_file(
        &scratch,
        json!({"corp-golden-v3": {"url": "golden.qcow2", "checksum": "sha256:nothex"}}),
    );
    let template = template(&scratch, json!({}));
    let run = Run::with_map(&scratch, &map, &["validate", path_str(&template)]);
    run.0.assert_usage_error();
    run.0.assert_error_on_stderr(&format!(
        "image map {}: entry \"corp-golden-v3\": checksum:",
        map.display()
    ));
}

#[test]
fn googlecompute_options_are_checked_as_packer_checks_them() {
    let scratch = Scratch::new();
    let template = template(
        &scratch,
        json!({
            "source_image": "",
            "source_image_family": "ubuntu-2204-lts",
            "source_image_project_id": [],
            "image_name": "Web_1",
            "preemptible": true,
            "on_host_maintenance": "MIGRATE",
            "machine_type": "z9-mega-1",
            "disk_sise": 10
        }),
    );
    let run = scratch.run(&["validate", path_str(&template)]);
    run.assert_usage_error();
    for needle in [
        "builders[0].image_name: Invalid image name \"Web_1\"",
        "builders[0].on_host_maintenance: on_host_maintenance must be TERMINATE when using \
         preemptible instances.",
        "builders[0].machine_type: unknown machine type \"z9-mega-1\"",
        "builders[0].disk_sise: unknown key (did you mean disk_size?)",
    ] {
        run.assert_error_on_stderr(needle);
    }
}

/// A kiln run with `KILN_IMAGE_MAP` set.
struct Run(crate::util::Run);

impl Run {
    fn with_map(scratch: &Scratch, map: &std::path::Path, args: &[&str]) -> Run {
        let output = scratch
            .kiln(args)
            .env("KILN_IMAGE_MAP", map)
            .output()
            .expect("run kiln");
        Run(crate::util::Run::from(output))
    }
}
