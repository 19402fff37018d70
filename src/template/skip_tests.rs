//! Templates as Packer users have them: deprecated keys read with a
//! warning, builders of other types beside the qemu ones.

use serde_json::json;

use super::*;
use crate::pipeline::{Selection, SelectionError};
use crate::plan::Checksum;

const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn load_value(value: serde_json::Value) -> Result<Plan, TemplateError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.json");
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    load(&path, &Overrides::default())
}

fn problems(value: serde_json::Value) -> Vec<String> {
    match load_value(value) {
        Err(TemplateError::Invalid { problems, .. }) => problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

fn qemu() -> serde_json::Value {
    json!({
        "type": "qemu",
        "iso_url": "/images/base.qcow2",
        "iso_checksum": "none",
        "disk_image": true,
        "ssh_username": "root"
    })
}

/// A bento-style template: the same box for VirtualBox and QEMU.
fn mixed() -> serde_json::Value {
    json!({
        "builders": [
            {
                "type": "virtualbox-iso",
                "guest_additions_path": "VBoxGuestAdditions.iso",
                "vboxmanage": [["modifyvm", "{{.Name}}", "--memory", "1024"]],
                "iso_checksum_type": "sha256"
            },
            qemu()
        ],
        "provisioners": [
            {"type": "shell", "inline": ["echo all"],
             "override": {"virtualbox-iso": {"inline": ["echo vbox"]}}},
            {"type": "shell", "inline": ["echo vbox only"], "only": ["virtualbox-iso"]},
            {"type": "shell", "inline": ["echo not vbox"], "except": ["virtualbox-iso"]}
        ],
        "post-processors": [
            {"type": "vagrant", "only": ["virtualbox-iso"]},
            [{"type": "checksum", "except": ["virtualbox-iso"]}]
        ]
    })
}

#[test]
fn other_builders_are_named_and_skipped_without_reading_their_options() {
    let plan = load_value(mixed()).unwrap();
    let names: Vec<&str> = plan.builds.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["qemu"]);
    assert_eq!(
        plan.skipped,
        [crate::plan::SkippedBuild {
            name: "virtualbox-iso".into(),
            builder_type: "virtualbox-iso".into(),
            reason: "builder type virtualbox-iso is not supported by kiln (it builds qemu and googlecompute)".into(),
        }]
    );
    // Steps limited to the skipped build stay valid and are left out.
    let qemu = &plan.builds[0];
    assert_eq!(qemu.provisioners.len(), 2);
    assert_eq!(qemu.post_processors.len(), 1);
    // The skipped builder's deprecated key is not worth a warning.
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn a_skipped_builders_name_and_type_are_still_checked() {
    let got = problems(json!({"builders": [
        qemu(),
        {"type": "vmware-iso", "name": 7},
        {"type": "vmwar-iso"},
        {"type": "qemu", "name": "qemu"}
    ]}));
    assert_eq!(
        got,
        [
            "builders[1].name: expected a non-empty string, got a number",
            "builders[2].type: unknown builder type \"vmwar-iso\" (did you mean vmware-iso?)",
            "builders[3].name: duplicate build name \"qemu\": give each builder a distinct name",
        ]
    );
    // A step naming a build that does not exist is still a mistake.
    let got = problems(json!({
        "builders": [qemu(), {"type": "docker"}],
        "provisioners": [{"type": "shell", "inline": ["x"], "only": ["dokcer"]}]
    }));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("provisioners[0].only[0]: no build is named \"dokcer\""));
}

#[test]
fn the_selection_decides_what_is_skipped_and_whether_anything_is_built() {
    let plan = load_value(mixed()).unwrap();
    let names = |only: &[&str], except: &[&str]| {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        let except: Vec<String> = except.iter().map(|s| s.to_string()).collect();
        Selection::new(&only, &except)
            .check(&plan)
            .map(|skipped| skipped.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
    };
    assert_eq!(names(&[], &[]).unwrap(), ["virtualbox-iso"]);
    assert!(names(&["qemu"], &[]).unwrap().is_empty());
    assert!(names(&[], &["virtualbox-iso"]).unwrap().is_empty());
    for (only, except) in [(&["virtualbox-iso"][..], &[][..]), (&[][..], &["qemu"][..])] {
        let err = names(only, except).unwrap_err();
        assert!(
            matches!(err, SelectionError::NothingBuildable(_)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "nothing to build: build \"virtualbox-iso\" is skipped: builder type \
             virtualbox-iso is not supported by kiln (it builds qemu and googlecompute)"
        );
    }
    assert!(matches!(
        names(&["vbox"], &[]),
        Err(SelectionError::UnknownBuild { .. })
    ));
}

#[test]
fn a_template_with_no_buildable_builder_loads_but_selects_nothing() {
    let plan =
        load_value(json!({"builders": [{"type": "hyperv-iso"}, {"type": "amazon-ebs"}]})).unwrap();
    assert!(plan.builds.is_empty());
    let err = Selection::new(&[], &[]).check(&plan).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"hyperv-iso\" is skipped"), "{text}");
    assert!(text.contains("\"amazon-ebs\" is skipped"), "{text}");
}

#[test]
fn deprecated_keys_are_read_as_their_modern_form_with_one_warning_each() {
    let mut builder = qemu();
    let b = builder.as_object_mut().unwrap();
    b.insert("iso_checksum".into(), json!(SHA));
    b.insert("iso_checksum_type".into(), json!("sha256"));
    b.insert("ssh_wait_timeout".into(), json!("7m"));
    b.insert("ssh_host_port_min".into(), json!(3000));
    b.insert("ssh_host_port_max".into(), json!(3001));
    b.insert("disk_size".into(), json!(2048));
    let plan = load_value(json!({
        "builders": [builder],
        "post-processors": [{"type": "manifest", "filename": "m.json"}]
    }))
    .unwrap();
    let q = &plan.builds[0].qemu;
    assert_eq!(q.iso_checksum, Checksum::Sha256(SHA.into()));
    assert_eq!(q.host_port_min, 3000);
    assert_eq!(q.host_port_max, 3001);
    assert_eq!(q.disk_size_mib, 2048);
    match &q.communicator {
        crate::plan::Communicator::Ssh(ssh) => {
            assert_eq!(ssh.timeout, std::time::Duration::from_secs(420));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan.warnings,
        [
            // In the order of Packer's fixers.
            "post-processors[0]: filename is deprecated: write \"output\": \"m.json\"",
            "builders[0]: ssh_wait_timeout is deprecated: write \"ssh_timeout\": \"7m\"",
            &format!(
                "builders[0]: iso_checksum_type is deprecated: write \"iso_checksum\": \"sha256:{SHA}\""
            ),
            "builders[0]: ssh_host_port_min is deprecated: write \"host_port_min\": 3000",
            "builders[0]: ssh_host_port_max is deprecated: write \"host_port_max\": 3001",
        ]
    );
}

#[test]
fn iso_checksum_type_none_needs_no_digest() {
    let mut builder = qemu();
    let b = builder.as_object_mut().unwrap();
    b.remove("iso_checksum");
    b.insert("iso_checksum_type".into(), json!("none"));
    let plan = load_value(json!({"builders": [builder]})).unwrap();
    assert_eq!(plan.builds[0].qemu.iso_checksum, Checksum::None);
    assert_eq!(plan.warnings.len(), 1);
}

#[test]
fn fix_reads_the_file_and_rejects_what_it_cannot_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(
        &path,
        r#"{"builders": [{"type": "qemu", "ssh_wait_timeout": "1m"}]}"#,
    )
    .unwrap();
    let (fixed, fixes) = fix(&path).unwrap();
    assert_eq!(
        fixed,
        json!({"builders": [{"type": "qemu", "ssh_timeout": "1m"}]})
    );
    assert_eq!(fixes.len(), 1);
    std::fs::write(&path, "[]").unwrap();
    assert!(
        fix(&path)
            .unwrap_err()
            .to_string()
            .contains("expected a JSON object")
    );
    std::fs::write(&path, r#"{"a": 1, "a": 2}"#).unwrap();
    assert!(
        fix(&path)
            .unwrap_err()
            .to_string()
            .contains("more than once")
    );
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(fix(&path), Err(TemplateError::Json { .. })));
}

#[test]
fn the_users_mistakes_are_not_worded_as_kilns_gaps() {
    let got = problems(json!({
        "variables": {"needed": null},
        "builders": [qemu()],
        "provisioners": [
            {"type": "shell", "script": "/nonexistent/setup.sh"},
            {"type": "salt-masterless"}
        ]
    }));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with("variables.needed: required variable not set"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("provisioners[0].script: script not found: /nonexistent/setup.sh"),
        "{got:?}"
    );
    assert!(
        got[2].starts_with(
            "provisioners[1].type: the salt-masterless provisioner is not supported by kiln yet: "
        ),
        "{got:?}"
    );
}

#[test]
fn an_invalid_template_says_which_keys_were_read_in_their_modern_form() {
    let mut builder = qemu();
    let b = builder.as_object_mut().unwrap();
    b.insert("iso_checksum".into(), json!("abc"));
    b.insert("iso_checksum_type".into(), json!("sha256"));
    let err = load_value(json!({"builders": [builder]})).unwrap_err();
    let text = err.to_string();
    // The problem names the key the user did not write; the note says why.
    assert!(
        text.contains("* builders[0].iso_checksum: a sha256 digest has 64 hex digits, got 3"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Deprecated keys were read as their modern form (see kiln fix):\n  \
             * builders[0]: iso_checksum_type is deprecated: write \"iso_checksum\": \"sha256:abc\""
        ),
        "{text}"
    );
}
