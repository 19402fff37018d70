//! Each fixer on its own: template in, template and messages out.

use serde_json::{Value as Json, json};

use super::*;

/// The fixed template (serialized: key order counts) and the fixes.
fn fixed(mut template: Json) -> (String, Vec<Fix>) {
    let fixes = apply(&mut template);
    (template.to_string(), fixes)
}

fn assert_fixed(input: Json, expected: Json) -> Vec<Fix> {
    let (out, fixes) = fixed(input);
    assert_eq!(out, expected.to_string());
    fixes
}

fn messages(fixes: &[Fix]) -> Vec<String> {
    fixes.iter().map(ToString::to_string).collect()
}

#[test]
fn iso_checksum_type_is_folded_into_the_checksum_in_place() {
    let fixes = assert_fixed(
        json!({"builders": [{
            "type": "qemu",
            "iso_checksum": "abc123",
            "iso_checksum_type": "sha256",
            "iso_url": "x.iso"
        }]}),
        json!({"builders": [{
            "type": "qemu",
            "iso_checksum": "sha256:abc123",
            "iso_url": "x.iso"
        }]}),
    );
    assert_eq!(
        messages(&fixes),
        [r#"builders[0]: iso_checksum_type is deprecated: write "iso_checksum": "sha256:abc123""#]
    );
    assert_eq!(fixes[0].fixer, "iso-checksum-type-and-url");
    assert!(fixes[0].deprecated);
    assert_eq!(fixes[0].builder, Some(0));
}

#[test]
fn iso_checksum_type_before_the_checksum_keeps_the_checksums_place() {
    assert_fixed(
        json!({"builders": [{"iso_checksum_type": "md5", "a": 1, "iso_checksum": "{{user `sum`}}"}]}),
        json!({"builders": [{"a": 1, "iso_checksum": "md5:{{user `sum`}}"}]}),
    );
}

#[test]
fn iso_checksum_type_none_is_none() {
    for digest in [json!("abc"), json!("")] {
        assert_fixed(
            json!({"builders": [{"iso_checksum_type": "none", "iso_checksum": digest}]}),
            json!({"builders": [{"iso_checksum": "none"}]}),
        );
    }
    // No iso_checksum at all: the type takes its place.
    assert_fixed(
        json!({"builders": [{"type": "qemu", "iso_checksum_type": "NONE", "x": 1}]}),
        json!({"builders": [{"type": "qemu", "iso_checksum": "none", "x": 1}]}),
    );
}

#[test]
fn iso_checksum_already_typed_is_not_typed_twice() {
    assert_fixed(
        json!({"builders": [{"iso_checksum_type": "sha256", "iso_checksum": "sha256:ab"}]}),
        json!({"builders": [{"iso_checksum": "sha256:ab"}]}),
    );
}

#[test]
fn iso_checksum_type_without_a_checksum_is_dropped_with_a_hint() {
    let fixes = assert_fixed(
        json!({"builders": [{"iso_checksum_type": "sha256"}]}),
        json!({"builders": [{}]}),
    );
    assert!(fixes[0].message.contains("no iso_checksum"), "{fixes:?}");
}

#[test]
fn iso_checksum_url_becomes_a_file_checksum() {
    let fixes = assert_fixed(
        json!({"builders": [{
            "iso_checksum_url": "https://example.com/SHA256SUMS",
            "iso_checksum_type": "sha256",
            "iso_url": "x.iso"
        }]}),
        json!({"builders": [{
            "iso_checksum": "file:https://example.com/SHA256SUMS",
            "iso_url": "x.iso"
        }]}),
    );
    assert_eq!(
        messages(&fixes),
        [
            r#"builders[0]: iso_checksum_type and iso_checksum_url are deprecated: write "iso_checksum": "file:https://example.com/SHA256SUMS""#
        ]
    );
}

#[test]
fn iso_md5_becomes_an_md5_checksum() {
    let fixes = assert_fixed(
        json!({"builders": [{"type": "qemu", "iso_md5": "d41d8", "iso_checksum_type": "sha1"}]}),
        json!({"builders": [{"type": "qemu", "iso_checksum": "md5:d41d8"}]}),
    );
    assert_eq!(
        messages(&fixes),
        [r#"builders[0]: iso_md5 is deprecated: write "iso_checksum": "md5:d41d8""#]
    );
}

#[test]
fn ssh_wait_timeout_is_renamed_unless_ssh_timeout_is_set() {
    let fixes = assert_fixed(
        json!({"builders": [{"ssh_wait_timeout": "20m", "b": 2}]}),
        json!({"builders": [{"ssh_timeout": "20m", "b": 2}]}),
    );
    assert_eq!(
        messages(&fixes),
        [r#"builders[0]: ssh_wait_timeout is deprecated: write "ssh_timeout": "20m""#]
    );
    let fixes = assert_fixed(
        json!({"builders": [{"ssh_timeout": "5m", "ssh_wait_timeout": "20m"}]}),
        json!({"builders": [{"ssh_timeout": "5m"}]}),
    );
    assert!(fixes[0].message.contains("ssh_timeout is set"), "{fixes:?}");
    // Not a string: Packer leaves it, and so does kiln.
    assert_fixed(
        json!({"builders": [{"ssh_wait_timeout": 20}]}),
        json!({"builders": [{"ssh_wait_timeout": 20}]}),
    );
}

#[test]
fn qemu_host_ports_lose_their_ssh_prefix() {
    let fixes = assert_fixed(
        json!({"builders": [
            {"type": "qemu", "ssh_host_port_min": 2222, "ssh_host_port_max": 2229},
            {"type": "virtualbox-iso", "ssh_host_port_min": 2222}
        ]}),
        json!({"builders": [
            {"type": "qemu", "host_port_min": 2222, "host_port_max": 2229},
            {"type": "virtualbox-iso", "ssh_host_port_min": 2222}
        ]}),
    );
    assert_eq!(
        messages(&fixes),
        [
            r#"builders[0]: ssh_host_port_min is deprecated: write "host_port_min": 2222"#,
            r#"builders[0]: ssh_host_port_max is deprecated: write "host_port_max": 2229"#
        ]
    );
}

#[test]
fn qemu_disk_size_number_becomes_megabytes_quietly() {
    let fixes = assert_fixed(
        json!({"builders": [{"type": "qemu", "disk_size": 10240}, {"type": "docker", "disk_size": 1}]}),
        json!({"builders": [{"type": "qemu", "disk_size": "10240M"}, {"type": "docker", "disk_size": 1}]}),
    );
    assert_eq!(fixes.len(), 1);
    assert!(!fixes[0].deprecated);
}

#[test]
fn disk_image_string_becomes_a_bool_quietly() {
    let fixes = assert_fixed(
        json!({"builders": [
            {"type": "qemu", "disk_image": "true"},
            {"type": "qemu", "disk_image": "{{user `img`}}"}
        ]}),
        json!({"builders": [
            {"type": "qemu", "disk_image": true},
            {"type": "qemu", "disk_image": "{{user `img`}}"}
        ]}),
    );
    assert_eq!(fixes.len(), 1);
    assert!(!fixes[0].deprecated);
}

#[test]
fn clean_image_name_becomes_clean_resource_name() {
    let fixes = assert_fixed(
        json!({"builders": [{
            "image_name": "base-{{timestamp | clean_image_name}}",
            "image_labels": {"l": "{{ clean_ami_name `x` }}"},
            "n": 1
        }]}),
        json!({"builders": [{
            "image_name": "base-{{timestamp | clean_resource_name}}",
            "image_labels": {"l": "{{ clean_resource_name `x` }}"},
            "n": 1
        }]}),
    );
    assert_eq!(
        messages(&fixes),
        [
            "builders[0].image_name: clean_image_name is deprecated: write clean_resource_name",
            "builders[0].image_labels.l: clean_ami_name is deprecated: write clean_resource_name"
        ]
    );
}

#[test]
fn create_time_becomes_timestamp() {
    assert_fixed(
        json!({"builders": [{"ami_name": "a-{{ .CreateTime }}", "other": "{{.CreateTime}}"}]}),
        json!({"builders": [{"ami_name": "a-{{timestamp}}", "other": "{{.CreateTime}}"}]}),
    );
}

#[test]
fn ssh_key_path_and_disable_agent_are_renamed() {
    assert_fixed(
        json!({"builders": [{"ssh_key_path": "k", "ssh_disable_agent": true}]}),
        json!({"builders": [{"ssh_private_key_file": "k", "ssh_disable_agent_forwarding": true}]}),
    );
    assert_fixed(
        json!({"builders": [{"ssh_key_path": "old", "ssh_private_key_file": "new"}]}),
        json!({"builders": [{"ssh_private_key_file": "new"}]}),
    );
}

#[test]
fn scaleway_access_key_is_the_organization() {
    assert_fixed(
        json!({"builders": [{"type": "scaleway", "access_key": "o"}, {"type": "qemu", "access_key": "o"}]}),
        json!({"builders": [{"type": "scaleway", "organization_id": "o"}, {"type": "qemu", "access_key": "o"}]}),
    );
}

#[test]
fn manifest_filename_is_its_output_in_chains_too() {
    let fixes = assert_fixed(
        json!({"post-processors": [
            "compress",
            {"type": "manifest", "filename": "m.json", "strip_path": true},
            [{"type": "checksum"}, {"type": "manifest", "filename": "n.json"}]
        ]}),
        json!({"post-processors": [
            "compress",
            {"type": "manifest", "output": "m.json", "strip_path": true},
            [{"type": "checksum"}, {"type": "manifest", "output": "n.json"}]
        ]}),
    );
    assert_eq!(
        messages(&fixes),
        [
            r#"post-processors[1]: filename is deprecated: write "output": "m.json""#,
            r#"post-processors[2][1]: filename is deprecated: write "output": "n.json""#
        ]
    );
    assert_eq!(fixes[0].builder, None);
}

#[test]
fn vagrant_provider_options_move_under_override() {
    assert_fixed(
        json!({"post-processors": [{
            "type": "vagrant",
            "virtualbox": {"a": 1},
            "output": "x.box",
            "vmware": {"b": 2}
        }]}),
        json!({"post-processors": [{
            "type": "vagrant",
            "override": {"virtualbox": {"a": 1}, "vmware": {"b": 2}},
            "output": "x.box"
        }]}),
    );
}

#[test]
fn galaxycommand_is_galaxy_command_for_ansible_local() {
    assert_fixed(
        json!({"provisioners": [
            {"type": "ansible-local", "galaxycommand": "g"},
            {"type": "shell", "galaxycommand": "g"}
        ]}),
        json!({"provisioners": [
            {"type": "ansible-local", "galaxy_command": "g"},
            {"type": "shell", "galaxycommand": "g"}
        ]}),
    );
}

#[test]
fn a_modern_template_is_left_alone() {
    let template = json!({
        "variables": {"v": "1"},
        "builders": [{"type": "qemu", "iso_checksum": "none", "disk_size": "10G"}],
        "provisioners": [{"type": "shell", "inline": ["true"]}],
        "post-processors": [{"type": "manifest", "output": "m.json"}]
    });
    let fixes = assert_fixed(template.clone(), template);
    assert!(fixes.is_empty(), "{fixes:?}");
    // Not an object, or sections of the wrong kind: nothing to fix, no panic.
    for odd in [
        json!([1]),
        json!({"builders": "x", "post-processors": {"a": 1}}),
    ] {
        assert!(fixed(odd).1.is_empty());
    }
}

#[test]
fn fixing_twice_changes_nothing_more() {
    let mut template = json!({"builders": [{
        "type": "qemu",
        "iso_checksum_type": "sha256",
        "iso_checksum": "ab",
        "ssh_wait_timeout": "1m",
        "ssh_host_port_min": 1,
        "disk_size": 5
    }]});
    assert_eq!(apply(&mut template).len(), 4);
    let once = template.clone();
    assert!(apply(&mut template).is_empty());
    assert_eq!(template, once);
}

#[test]
fn skipped_builders_get_packers_renames_too() {
    let fixes = assert_fixed(
        json!({"builders": [
            {"type": "hyperv-iso", "cpu": 2, "ram_size": 1024, "memory": 1},
            {"type": "hyperv-vmcx", "clone_from_vmxc_path": "p"},
            {"type": "parallels-iso", "headless": true, "guest_os_distribution": "ubuntu",
             "parallels_tools_host_path": "x"},
            {"type": "qemu", "cpu": 2, "headless": true}
        ]}),
        json!({"builders": [
            {"type": "hyperv-iso", "cpus": 2, "memory": 1024},
            {"type": "hyperv-vmcx", "clone_from_vmcx_path": "p"},
            {"type": "parallels-iso", "guest_os_type": "ubuntu"},
            {"type": "qemu", "cpu": 2, "headless": true}
        ]}),
    );
    assert_eq!(fixes.len(), 6, "{fixes:?}");
    assert!(fixes.iter().all(|f| f.builder.is_some_and(|i| i < 3)));
}
