use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::{Overrides, TemplateError, load_bytes};
use super::check_name;
use crate::plan::{Checksum, Communicator, DiskFormat, Location, Plan};

fn base() -> Value {
    json!({
        "type": "googlecompute",
        "project_id": "my-project",
        "zone": "us-central1-a",
        "source_image_family": "ubuntu-2204-lts",
        "ssh_username": "packer"
    })
}

fn load_with(builder_extra: Value, overrides: &Overrides) -> Result<Plan, TemplateError> {
    let mut builder = base();
    for (k, v) in builder_extra.as_object().unwrap() {
        if v.is_null() {
            builder.as_object_mut().unwrap().remove(k);
        } else {
            builder[k] = v.clone();
        }
    }
    let template = json!({ "builders": [builder] });
    load_bytes(
        &PathBuf::from("/t/template.json"),
        template.to_string().as_bytes(),
        overrides,
    )
}

fn load(builder_extra: Value) -> Result<Plan, TemplateError> {
    load_with(builder_extra, &Overrides::default())
}

fn problems(builder_extra: Value) -> Vec<(String, String)> {
    match load(builder_extra) {
        Err(TemplateError::Invalid { problems, .. }) => {
            problems.into_iter().map(|p| (p.path, p.message)).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn problem(builder_extra: Value) -> (String, String) {
    let mut all = problems(builder_extra);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn defaults_follow_packer_and_the_machine_follows_the_instance() {
    let plan = load(json!({})).unwrap();
    let build = &plan.builds[0];
    assert_eq!(build.name, "googlecompute");
    assert_eq!(build.builder_type, "googlecompute");
    let q = &build.qemu;
    assert!(q.disk_image);
    assert_eq!(q.disk_size_mib, 20 * 1024);
    assert_eq!(q.format, DiskFormat::Qcow2);
    assert!(q.headless);
    assert_eq!(q.accelerator, None);
    assert_eq!(q.shutdown_command, None);
    assert_eq!(
        q.output_directory_shown,
        PathBuf::from("output-googlecompute")
    );
    assert!(q.output_directory.is_absolute());
    assert_eq!(
        q.iso_urls,
        [Location::Url(
            url::Url::parse(
                "https://cloud-images.ubuntu.com/releases/jammy/release/ubuntu-22.04-server-cloudimg-amd64.img"
            )
            .unwrap()
        )]
    );
    assert!(matches!(q.iso_checksum, Checksum::File(_)));
    // n1-standard-1, unless the host is smaller.
    assert_eq!(q.cpus, 1);
    assert!(q.memory_mib <= 3840 && q.memory_mib >= 256);
    match &q.communicator {
        Communicator::Ssh(ssh) => {
            assert_eq!(ssh.username, "packer");
            assert_eq!(ssh.timeout, Duration::from_secs(300));
        }
        Communicator::None => panic!("no communicator"),
    }

    let gce = build.gce.as_ref().unwrap();
    assert_eq!(gce.state_timeout, Duration::from_secs(300));
    assert!(gce.not_applied.is_empty());
    assert_eq!(gce.startup_script, None);
    let i = &gce.instance;
    assert_eq!(i.project_id, "my-project");
    assert_eq!(i.zone, "us-central1-a");
    assert_eq!(i.machine_type, "n1-standard-1");
    assert!(i.name.starts_with("packer-"), "{}", i.name);
    assert_eq!(i.name.len(), "packer-".len() + 36);
    assert_eq!(
        i.image,
        "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts"
    );
    assert_eq!(i.network, "default");
    assert_eq!(i.subnetwork, None);
    assert_eq!(i.scopes.len(), 3);
    assert_eq!(i.service_account_email, None);
    assert!(!i.no_service_account);
    assert_eq!(i.ssh_username, "packer");
    assert!((100_000_000_000..1_000_000_000_000).contains(&i.numeric_project_id));
    assert!(i.id >= 1_000_000_000_000_000_000);
    let img = &gce.image;
    assert_eq!(img.project_id, "my-project");
    assert!(img.name.starts_with("packer-"), "{}", img.name);
    assert!(
        img.name["packer-".len()..]
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
    assert_eq!(img.description.as_deref(), Some("Created by Packer"));
    assert_eq!(img.family, None);
    assert_eq!(img.account_file, None);
    assert_eq!(q.vm_name, format!("{}.qcow2", img.name));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn ids_are_stable() {
    let a = load(json!({"instance_name": "builder-1"})).unwrap();
    let b = load(json!({"instance_name": "builder-1"})).unwrap();
    let (a, b) = (
        &a.builds[0].gce.as_ref().unwrap().instance,
        &b.builds[0].gce.as_ref().unwrap().instance,
    );
    assert_eq!(a.id, b.id);
    assert_eq!(a.numeric_project_id, b.numeric_project_id);
    let c = load(json!({"instance_name": "builder-2", "project_id": "other"})).unwrap();
    let c = &c.builds[0].gce.as_ref().unwrap().instance;
    assert_ne!(a.id, c.id);
    assert_ne!(a.numeric_project_id, c.numeric_project_id);
}

/// The default instance name is the same on every run, so that a cached
/// rebuild can restore the guest that had it; other builds get another.
#[test]
fn the_default_instance_name_is_the_same_on_every_run() {
    let name = |extra: Value| {
        load(extra).unwrap().builds[0]
            .gce
            .as_ref()
            .unwrap()
            .instance
            .name
            .clone()
    };
    let first = name(json!({}));
    assert_eq!(first, name(json!({})));
    assert!(first.starts_with("packer-"), "{first}");
    assert_ne!(first, name(json!({"name": "other"})));
    assert_ne!(first, name(json!({"project_id": "other"})));
    assert_eq!(name(json!({"instance_name": "builder-1"})), "builder-1");
}

#[test]
fn given_options_reach_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    std::fs::write(&key, "{}").unwrap();
    let plan = load(json!({
        "name": "web",
        "account_file": key.to_str().unwrap(),
        "source_image": "ubuntu-2004-focal-v20240110",
        "source_image_family": "ignored-when-an-image-is-given",
        "image_name": "web-1",
        "image_family": "web",
        "image_description": "the web tier",
        "image_labels": {"tier": "web"},
        "image_licenses": ["projects/x/global/licenses/y"],
        "image_guest_os_features": ["UEFI_COMPATIBLE"],
        "image_storage_locations": ["us"],
        "instance_name": "web-builder",
        "machine_type": "e2-small",
        "disk_size": "30",
        "state_timeout": "10m",
        "labels": {"team": "a"},
        "service_account_email": "sa@my-project.iam.gserviceaccount.com",
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "subnetwork": "sub",
        "ssh_timeout": "20m"
    }))
    .unwrap();
    let build = &plan.builds[0];
    assert_eq!(build.name, "web");
    assert_eq!(build.qemu.disk_size_mib, 30 * 1024);
    assert_eq!(
        build.qemu.output_directory_shown,
        PathBuf::from("output-web")
    );
    assert_eq!(build.qemu.cpus.min(2), build.qemu.cpus);
    assert!(build.qemu.memory_mib <= 2048);
    let gce = build.gce.as_ref().unwrap();
    assert_eq!(gce.state_timeout, Duration::from_secs(600));
    let i = &gce.instance;
    assert_eq!(i.name, "web-builder");
    assert_eq!(i.machine_type, "e2-small");
    assert_eq!(
        i.image,
        "projects/ubuntu-os-cloud/global/images/ubuntu-2004-focal-v20240110"
    );
    assert_eq!(i.labels["team"], "a");
    assert_eq!(
        i.service_account_email.as_deref(),
        Some("sa@my-project.iam.gserviceaccount.com")
    );
    assert_eq!(i.scopes, ["https://www.googleapis.com/auth/cloud-platform"]);
    // A subnetwork alone: no default network, as in Packer.
    assert_eq!(i.network, "");
    assert_eq!(i.subnetwork.as_deref(), Some("sub"));
    let img = &gce.image;
    assert_eq!(img.name, "web-1");
    assert_eq!(img.family.as_deref(), Some("web"));
    assert_eq!(img.description.as_deref(), Some("the web tier"));
    assert_eq!(img.labels["tier"], "web");
    assert_eq!(img.licenses, ["projects/x/global/licenses/y"]);
    assert_eq!(img.guest_os_features, ["UEFI_COMPATIBLE"]);
    assert_eq!(img.storage_locations, ["us"]);
    assert_eq!(img.account_file.as_deref(), Some(key.as_path()));
    assert_eq!(build.qemu.vm_name, "web-1.qcow2");
    assert!(
        build.qemu.iso_urls[0]
            .to_string()
            .contains("focal/release-20240110/")
    );
    assert_eq!(gce.not_applied, ["subnetwork"]);
}

#[test]
fn metadata_files_and_the_startup_script_file_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("startup.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "payload").unwrap();
    let plan = load(json!({
        "metadata": {"a": "1", "startup-script": "overridden by the file"},
        "metadata_files": {"b": data.to_str().unwrap()},
        "startup_script_file": script.to_str().unwrap()
    }))
    .unwrap();
    let gce = plan.builds[0].gce.as_ref().unwrap();
    assert_eq!(gce.startup_script.as_deref(), Some("#!/bin/sh\necho hi\n"));
    let attributes = &gce.instance.attributes;
    assert_eq!(attributes["a"], "1");
    assert_eq!(attributes["b"], "payload");
    assert_eq!(attributes["startup-script"], "#!/bin/sh\necho hi\n");

    // Without a file, the metadata key is the script.
    let plan = load(json!({"metadata": {"startup-script": "echo from metadata"}})).unwrap();
    let gce = plan.builds[0].gce.as_ref().unwrap();
    assert_eq!(gce.startup_script.as_deref(), Some("echo from metadata"));
}

#[test]
fn unreadable_files_are_problems_at_their_keys() {
    let (path, message) = problem(json!({"metadata_files": {"b": "/nonexistent/b.txt"}}));
    assert_eq!(path, "builders[0].metadata_files.b");
    assert!(
        message.starts_with("cannot read /nonexistent/b.txt: "),
        "{message}"
    );
    let (path, message) = problem(json!({"startup_script_file": "/nonexistent/s.sh"}));
    assert_eq!(path, "builders[0].startup_script_file");
    assert!(
        message.starts_with("startup_script_file: cannot read /nonexistent/s.sh: "),
        "{message}"
    );
    let (path, message) = problem(json!({"account_file": "/nonexistent/key.json"}));
    assert_eq!(path, "builders[0].account_file");
    assert_eq!(
        message,
        "account_file path does not exist: /nonexistent/key.json"
    );
}

#[test]
fn required_options() {
    assert_eq!(
        problems(json!({"project_id": null, "zone": null, "source_image_family": null})),
        [
            (
                "builders[0].project_id".to_string(),
                "is required: the project the instance and image belong to".to_string()
            ),
            (
                "builders[0].zone".to_string(),
                "is required: the zone the instance runs in, such as us-central1-a".to_string()
            ),
            (
                "builders[0].source_image".to_string(),
                "is required: a source_image or source_image_family must be specified".to_string()
            ),
        ]
    );
    assert_eq!(
        problem(json!({"ssh_username": null})),
        (
            "builders[0].ssh_username".to_string(),
            "is required: the user to connect as over SSH".to_string()
        )
    );
}

#[test]
fn image_names_follow_compute_engines_rule() {
    assert_eq!(check_name("name", "packer-1700000000"), Ok(()));
    assert_eq!(check_name("name", "a"), Ok(()));
    assert!(check_name("name", "1abc").is_err());
    assert!(check_name("name", "abc-").is_err());
    assert!(check_name("name", "Abc").is_err());
    assert!(check_name("name", "a_b").is_err());
    assert_eq!(
        check_name("family", &"a".repeat(64)),
        Err("Invalid image family: Must not be longer than 63 characters".into())
    );
    assert_eq!(check_name("name", &"a".repeat(63)), Ok(()));
    assert_eq!(
        problem(json!({"image_name": "My_Image"})),
        (
            "builders[0].image_name".to_string(),
            "Invalid image name \"My_Image\": The first character must be a lowercase letter, \
             and all following characters must be a dash, lowercase letter, or digit, except \
             the last character, which cannot be a dash"
                .to_string()
        )
    );
    assert_eq!(
        problem(json!({"image_family": "web-"})).0,
        "builders[0].image_family"
    );
    assert_eq!(
        problem(json!({"image_storage_locations": ["us", "eu"]})),
        (
            "builders[0].image_storage_locations".to_string(),
            "Invalid image storage locations: Must not have more than 1 region".to_string()
        )
    );
}

#[test]
fn packers_rules_between_options() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"preemptible": true, "on_host_maintenance": "MIGRATE"}),
            "builders[0].on_host_maintenance",
            "on_host_maintenance must be TERMINATE when using preemptible instances.",
        ),
        (
            json!({"on_host_maintenance": "RESTART"}),
            "builders[0].on_host_maintenance",
            "on_host_maintenance must be one of MIGRATE or TERMINATE.",
        ),
        (
            json!({"accelerator_count": 1, "on_host_maintenance": "TERMINATE"}),
            "builders[0].accelerator_type",
            "'accelerator_type' must be set when 'accelerator_count' is more than 0",
        ),
        (
            json!({"accelerator_count": 1, "accelerator_type": "nvidia-tesla-t4"}),
            "builders[0].on_host_maintenance",
            "'on_host_maintenance' must be set to 'TERMINATE' when 'accelerator_count' is more than 0",
        ),
        (
            json!({"omit_external_ip": true}),
            "builders[0].use_internal_ip",
            "'use_internal_ip' must be true if 'omit_external_ip' is true",
        ),
        (
            json!({"disable_default_service_account": true, "service_account_email": "a@b"}),
            "builders[0].service_account_email",
            "you may not specify a 'service_account_email' when 'disable_default_service_account' is true",
        ),
        (
            json!({"enable_integrity_monitoring": true}),
            "builders[0].enable_integrity_monitoring",
            "You cannot enable Integrity Monitoring when vTPM is disabled.",
        ),
        (
            json!({"machine_type": "m1-ultramem-40"}),
            "builders[0].machine_type",
            "unknown machine type \"m1-ultramem-40\": kiln knows n1-standard-N, n1-highmem-N, \
             n1-highcpu-N, n2-standard-N, n2-highmem-N, n2-highcpu-N, e2-standard-N, \
             e2-highmem-N, e2-highcpu-N, e2-micro, e2-small, e2-medium, f1-micro, g1-small, \
             [n1-|n2-|e2-]custom-CPUS-MiB[-ext]",
        ),
        (
            json!({"image_encryption_key": {"kmsKeyName": "k", "rawkey": "x"}}),
            "builders[0].image_encryption_key.rawkey",
            "unknown key (did you mean rawKey?)",
        ),
    ];
    for (extra, path, message) in cases {
        assert_eq!(
            problem(extra.clone()),
            (path.to_string(), message.to_string()),
            "{extra}"
        );
    }
    let mut both = problems(json!({
        "omit_external_ip": true,
        "use_internal_ip": true,
        "address": "1.2.3.4"
    }));
    assert_eq!(both.len(), 1);
    assert_eq!(
        both.remove(0),
        (
            "builders[0].address".to_string(),
            "you can not specify an external address when 'omit_external_ip' is true".to_string()
        )
    );
}

#[test]
fn unknown_and_mistyped_options_are_named() {
    assert_eq!(
        problem(json!({"disk_sise": 10})),
        (
            "builders[0].disk_sise".to_string(),
            "unknown key (did you mean disk_size?)".to_string()
        )
    );
    // A qemu option is not a googlecompute one.
    assert_eq!(problem(json!({"headless": true})).0, "builders[0].headless");
    assert_eq!(
        problem(json!({"preemptible": "maybe"})).0,
        "builders[0].preemptible"
    );
    assert_eq!(problem(json!({"tags": {"a": 1}})).0, "builders[0].tags");
    assert_eq!(
        problem(json!({"state_timeout": "soon"})).0,
        "builders[0].state_timeout"
    );
    assert_eq!(
        problem(json!({"metadata": ["a"]})).0,
        "builders[0].metadata"
    );
}

#[test]
fn options_without_local_meaning_are_listed_once() {
    let plan = load(json!({
        "network": "vpc",
        "network_project_id": "host-project",
        "tags": ["web"],
        "use_internal_ip": true,
        "omit_external_ip": true,
        "preemptible": true,
        "accelerator_type": "nvidia-tesla-t4",
        "accelerator_count": 1,
        "disk_type": "pd-ssd",
        "use_os_login": true,
        "use_iap": false,
        "region": "",
        "min_cpu_platform": "Intel Skylake",
        "wait_to_add_ssh_keys": "10s",
        "image_encryption_key": {"kmsKeyName": "projects/p/locations/l/keyRings/r/cryptoKeys/k"}
    }))
    .unwrap();
    let gce = plan.builds[0].gce.as_ref().unwrap();
    assert_eq!(
        gce.not_applied,
        [
            "network",
            "use_internal_ip",
            "omit_external_ip",
            "preemptible",
            "accelerator_type",
            "accelerator_count",
            "disk_type",
            "min_cpu_platform",
            "network_project_id",
            "tags",
            "use_os_login",
            "wait_to_add_ssh_keys",
            "image_encryption_key",
        ]
    );
    // The instance still shows what the guest would see.
    assert_eq!(gce.instance.tags, ["web"]);
    assert_eq!(gce.instance.network, "vpc");
    assert_eq!(
        plan.warnings,
        [format!(
            "build \"googlecompute\": googlecompute options not applied locally: {}",
            gce.not_applied.join(", ")
        )]
    );
}

#[test]
fn unmapped_images_fail_with_how_to_map_them() {
    let (path, message) = problem(json!({"source_image": "my-golden-v3"}));
    assert_eq!(path, "builders[0].source_image");
    assert!(
        message.starts_with(
            "no local disk is mapped for the image \"my-golden-v3\": map it with -source-image \
             my-golden-v3=<path or URL>"
        ),
        "{message}"
    );
    let (path, _) = problem(json!({"source_image_family": "centos-7"}));
    assert_eq!(path, "builders[0].source_image_family");
}

#[test]
fn the_image_map_and_source_image_arguments_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.json");
    std::fs::write(
        &map,
        r#"{"corp/golden": {"url": "golden.qcow2", "checksum": "none"}}"#,
    )
    .unwrap();
    let overrides = Overrides {
        source_images: vec![("ubuntu-2204-lts".into(), "/disks/u.qcow2".into())],
        image_map: Some(map.clone()),
        ..Default::default()
    };
    let plan = load_with(json!({}), &overrides).unwrap();
    assert_eq!(
        plan.builds[0].qemu.iso_urls,
        [Location::Path("/disks/u.qcow2".into())]
    );
    assert_eq!(plan.builds[0].qemu.iso_checksum, Checksum::None);
    let plan = load_with(
        json!({"source_image": "golden", "source_image_project_id": "corp"}),
        &overrides,
    )
    .unwrap();
    assert_eq!(
        plan.builds[0].qemu.iso_urls,
        [Location::Path(dir.path().join("golden.qcow2"))]
    );
    assert_eq!(
        plan.builds[0].gce.as_ref().unwrap().instance.image,
        "projects/corp/global/images/golden"
    );

    std::fs::write(&map, r#"{"x": {"url": "ftp://x", "checksum": "none"}}"#).unwrap();
    let err = load_with(json!({}), &overrides).unwrap_err();
    let TemplateError::Invalid { problems, .. } = err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "KILN_IMAGE_MAP");
    assert!(
        problems[0]
            .message
            .starts_with(&format!("image map {}: entry \"x\": url: ", map.display())),
        "{}",
        problems[0].message
    );
}

#[test]
fn a_machine_bigger_than_the_host_is_capped_with_a_warning() {
    let plan = load(json!({"machine_type": "n2-highmem-128"})).unwrap();
    let q = &plan.builds[0].qemu;
    let host = super::gce_shapes::Host::current();
    assert!(q.cpus <= host.cores);
    assert!(q.memory_mib <= host.memory_mib / 2);
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].starts_with(
            "build \"googlecompute\": machine_type n2-highmem-128 (128 vCPUs, 1048576 MiB) runs \
             locally with"
        ),
        "{}",
        plan.warnings[0]
    );
}

#[test]
fn relative_files_resolve_against_the_working_directory() {
    // metadata_files and startup_script_file are read as Packer reads
    // them: relative to where kiln runs.
    let cwd = std::env::current_dir().unwrap();
    let (_, message) = problem(json!({"startup_script_file": "no-such-startup.sh"}));
    assert!(
        message.contains(&cwd.join("no-such-startup.sh").display().to_string()),
        "{message}"
    );
}

#[test]
fn skip_create_image_is_applied_not_just_checked() {
    let plan = load(json!({"skip_create_image": true})).unwrap();
    let gce = plan.builds[0].gce.as_ref().unwrap();
    assert!(gce.skip_create_image);
    assert!(!gce.not_applied.iter().any(|o| o == "skip_create_image"));
    let plan = load(json!({})).unwrap();
    assert!(!plan.builds[0].gce.as_ref().unwrap().skip_create_image);
    let (path, message) = problem(json!({"skip_create_image": "yes"}));
    assert_eq!(path, "builders[0].skip_create_image", "{message}");
}
