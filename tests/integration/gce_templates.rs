//! The real-world templates in `templates/`: a hardened base image and an
//! OpenVPN server, written for Packer's `googlecompute` builder, built here
//! unchanged on the realistic fixture (standing in for `ubuntu-2204-lts`
//! through the image map), each with its own smoke tests on a fresh
//! instance.
//!
//! Every build boots the guest twice (build, then smoke test) under TCG,
//! which takes minutes: each template is built once, and everything about
//! its result is asserted on that one build.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use kiln_test_support::compute_fake::ComputeFake;
use kiln_test_support::emulators::StorageEmulator;

use crate::util::{GuestRoot, Run, Scratch, assert_nothing_left, path_str, realistic_fixture};

/// The repository's `templates/` directory.
fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// An image map in `scratch` that makes `ubuntu-2204-lts` the realistic
/// fixture, as a user would point kiln at a local copy of the image.
fn image_map(scratch: &Scratch) -> PathBuf {
    scratch.write_json(
        "images.json",
        &json!({"ubuntu-2204-lts": {
            "url": path_str(realistic_fixture()),
            "checksum": "none",
        }}),
    )
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_str(&text).expect("json")
}

/// The smoke-test report: every check passed, and their names.
#[track_caller]
fn assert_all_passed(report: &Value) -> Vec<String> {
    assert_eq!(report["failures"], 0, "{report:#}");
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(report["tests"], checks.len(), "{report:#}");
    checks
        .iter()
        .map(|c| {
            assert_eq!(c["result"], "pass", "{c:#}");
            c["name"].as_str().expect("name").to_string()
        })
        .collect()
}

/// One check's output in a report.
fn check_output<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["output"].as_str())
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

#[test]
fn both_templates_validate_and_name_their_googlecompute_build() {
    let scratch = Scratch::new();
    for (template, build) in [
        ("base-image.json", "base-image"),
        ("openvpn.json", "openvpn"),
    ] {
        let path = templates().join(template);
        scratch.run(&["validate", path_str(&path)]).assert_success();
        let run = scratch.run(&["inspect", path_str(&path)]);
        run.assert_success();
        assert!(
            run.stdout.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(build) && words.next() == Some("googlecompute")
            }),
            "no {build} googlecompute builder:\n{}",
            run.stdout
        );
    }
}

const PROJECT: &str = "demo-project";
const BUCKET: &str = "staging";

/// `kiln build` of one of the repository's templates, from `scratch`, with
/// a JSON test report, published through `emulator` and `compute`; it
/// succeeded.
async fn build_published(
    scratch: &Scratch,
    emulator: &StorageEmulator,
    compute: &ComputeFake,
    template: &str,
) -> Run {
    let map = image_map(scratch);
    let template = templates().join(template);
    let mut command = scratch.kiln(&[
        "build",
        "-gce-bucket",
        BUCKET,
        "-var",
        &format!("project_id={PROJECT}"),
        "-test-report",
        "report.json",
        path_str(&template),
    ]);
    command
        .env("KILN_IMAGE_MAP", &map)
        .env("STORAGE_EMULATOR_HOST", &emulator.base_url)
        .env("KILN_COMPUTE_ENDPOINT", &compute.base_url);
    let run = tokio::task::spawn_blocking(move || Run::from(command.output().expect("run kiln")))
        .await
        .expect("join");
    run.assert_success();
    run
}

/// The base image, built, smoke-tested and published as Packer would
/// publish it: through a Cloud Storage emulator and the Compute API fake.
#[tokio::test(flavor = "multi_thread")]
async fn base_image_is_hardened_tested_and_published_to_its_family() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let run = build_published(&scratch, &emulator, &compute, "base-image.json").await;

    let report = read_json(&scratch.path().join("report.json"));
    let names = assert_all_passed(&report);
    for expected in [
        "cloud-init finished on the new instance",
        "cloud-init ran as a new instance",
        "machine-id made anew",
        "SSH host keys made anew",
        "sysctl kernel.kptr_restrict",
        "sysctl rp_filter",
        "sysctl accept_redirects",
        "sysctl tcp_syncookies",
        "sshd PermitRootLogin",
        "sshd PasswordAuthentication",
        "unattended-upgrades installed",
        "auto-upgrades in effect",
        "tools on PATH",
        "apt cache empty",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }

    // Published under the template's name, family and labels.
    let name = published_name(&run);
    assert!(name.starts_with("base-ubuntu-2204-"), "{name}");
    let image = compute
        .image(PROJECT, &name)
        .unwrap_or_else(|| panic!("no image {name:?} in {PROJECT}:\n{}", run.stdout));
    assert_eq!(image["family"], "base-ubuntu-2204");
    assert_eq!(image["labels"]["role"], "base");
    assert_eq!(image["labels"]["os"], "ubuntu-2204");
    assert_eq!(image["description"], "Hardened Ubuntu 22.04 LTS base image");
    assert_nothing_left(&scratch);
}

/// The image a publishing build says it created.
fn published_name(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.split("A disk image was created: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image created:\n{}", run.stdout))
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The checks `kiln test` runs on a second instance of the OpenVPN image.
const OPENVPN_CHECKS: &str = r#"{"tests": [
    {"name": "server running", "service": "openvpn-server@server", "active": true, "retry_for": "3m"},
    {"name": "listening on 1194/udp", "port": 1194, "protocol": "udp", "retry_for": "1m"},
    {"name": "CA fingerprint", "command": "openssl x509 -in /etc/openvpn/server/ca.crt -noout -fingerprint -sha256", "expect_stdout": "Fingerprint="},
    {"name": "server key fingerprint", "command": "sudo openssl pkey -in /etc/openvpn/server/server.key -pubout | sha256sum", "expect_stdout": "^[0-9a-f]{64}"}
]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn openvpn_is_published_and_its_instances_make_their_own_keys() {
    // The other Cloud Storage emulator than the base image's test.
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET)
        .await
        .expect("gcp-storage-emulator");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let run = build_published(&scratch, &emulator, &compute, "openvpn.json").await;
    let first = read_json(&scratch.path().join("report.json"));
    let names = assert_all_passed(&first);
    for expected in [
        "server running",
        "listening on 1194/udp",
        "ss shows 1194/udp",
        "certificate signed by the instance's CA",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    assert!(
        run.stdout.contains("no OpenVPN keys in the image"),
        "{}",
        run.stdout
    );

    // The published image, as an instance made from it boots it.
    let name = published_name(&run);
    assert!(name.starts_with("openvpn-ubuntu-2204-"), "{name}");
    let image = compute
        .image(PROJECT, &name)
        .unwrap_or_else(|| panic!("no image {name:?} in {PROJECT}:\n{}", run.stdout));
    assert_eq!(image["family"], "openvpn-ubuntu-2204", "{image:#}");
    let tarball = scratch.path().join("published.tar.gz");
    let disk = compute
        .image_disk(PROJECT, &name)
        .expect("the image's disk");
    std::fs::write(&tarball, disk.as_slice()).expect("write the image's tarball");

    // No key material in the image: only the configuration.
    let raw = scratch.path().join("disk.raw");
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(scratch.path())
        .arg("disk.raw")
        .status()
        .expect("tar");
    assert!(status.success(), "tar -x of the published image");
    {
        let root = GuestRoot::open(&raw);
        let server = root.list("/etc/openvpn/server").expect("server dir");
        assert_eq!(server, vec!["server.conf".to_string()]);
        assert!(root.list("/etc/openvpn/easy-rsa/pki").is_none());
    }
    std::fs::remove_file(&raw).expect("remove disk.raw");

    // A second instance of the published image.
    let checks = scratch.write("checks.json", OPENVPN_CHECKS);
    let mut second = scratch.kiln(&[
        "test",
        "--tests",
        path_str(&checks),
        "--ssh-username",
        "ubuntu",
        // As the template's own ssh_timeout: the image's first boot runs
        // cloud-init, minutes under TCG on a busy machine.
        "--ssh-timeout",
        "20m",
        "--memory",
        "1024",
        "-test-report",
        "second.json",
        path_str(&tarball),
    ]);
    let second = tokio::task::spawn_blocking(move || Run::from(second.output().expect("run kiln")))
        .await
        .expect("join");
    second.assert_success();
    let second = read_json(&scratch.path().join("second.json"));
    assert_all_passed(&second);
    let fingerprint = |report: &Value| {
        check_output(report, "CA fingerprint")
            .lines()
            .find(|l| l.contains("Fingerprint="))
            .expect("a fingerprint line")
            .to_string()
    };
    assert_ne!(
        fingerprint(&first),
        fingerprint(&second),
        "two instances share a CA"
    );
    std::fs::remove_file(&tarball).expect("remove the tarball");
    assert_nothing_left(&scratch);
}
