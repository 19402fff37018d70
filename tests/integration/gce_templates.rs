//! The real-world templates in `templates/`: a hardened base image and an
//! OpenVPN server, written for Packer's `googlecompute` builder, built here
//! unchanged on the realistic fixture (standing in for `ubuntu-2204-lts`
//! through the image map), each with its own smoke tests on a fresh
//! instance.
//!
//! Every build boots the guest twice (build, then smoke test) under TCG,
//! which takes minutes: each template is built once, and everything about
//! its result is asserted on that one build.

use std::path::{Path, PathBuf};
use serde_json::{Value, json};

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

/// `kiln build -publish=false` of one of the repository's templates, from
/// `scratch` (so `output-<build>/` lands there), with a JSON test report.
fn build_unpublished(scratch: &Scratch, template: &str) -> Run {
    let map = image_map(scratch);
    let template = templates().join(template);
    let mut command = scratch.kiln(&[
        "build",
        "-publish=false",
        "-test-report",
        "report.json",
        path_str(&template),
    ]);
    command.env("KILN_IMAGE_MAP", &map);
    Run::from(command.output().expect("run kiln"))
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

/// The disk a `-publish=false` build keeps in `output-<build>/`.
fn output_disk(scratch: &Scratch, build: &str) -> PathBuf {
    let dir = scratch.path().join(format!("output-{build}"));
    let disks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "qcow2" || ext == "raw" || ext == "img")
        })
        .collect();
    assert_eq!(disks.len(), 1, "one disk in {}: {disks:?}", dir.display());
    disks.into_iter().next().expect("disk")
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

#[test]
fn base_image_builds_hardened_and_leaves_no_instance_identity() {
    let scratch = Scratch::new();
    let run = build_unpublished(&scratch, "base-image.json");
    run.assert_success();
    let report = read_json(&scratch.path().join("report.json"));
    let names = assert_all_passed(&report);
    for expected in [
        "cloud-init finished on the new instance",
        "machine-id made anew",
        "sysctl kernel.kptr_restrict",
        "sshd PermitRootLogin",
        "unattended-upgrades installed",
        "tools on PATH",
        "apt cache empty",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }

    // The image itself, read without booting it: the hardening is in
    // place, and nothing that makes an instance unique was kept.
    let root = GuestRoot::open(&output_disk(&scratch, "base-image"));
    let sysctl = root
        .read("/etc/sysctl.d/90-hardening.conf")
        .expect("sysctl file");
    assert!(sysctl.contains("net.ipv4.tcp_syncookies = 1"), "{sysctl}");
    let sshd = root
        .read("/etc/ssh/sshd_config.d/10-hardening.conf")
        .expect("sshd drop-in");
    assert!(sshd.contains("PermitRootLogin no"), "{sshd}");
    assert_eq!(root.read("/etc/machine-id").as_deref(), Some(""));
    let ssh = root.list("/etc/ssh").expect("/etc/ssh");
    assert!(
        !ssh.iter().any(|name| name.starts_with("ssh_host_")),
        "host keys kept: {ssh:?}"
    );
    let archives = root
        .list("/var/cache/apt/archives")
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name.ends_with(".deb"))
        .collect::<Vec<_>>();
    assert!(archives.is_empty(), "packages left: {archives:?}");
    assert!(
        root.list("/var/lib/cloud/instances")
            .unwrap_or_default()
            .is_empty(),
        "cloud-init state kept"
    );
    assert_nothing_left(&scratch);
}

/// The checks `kiln test` runs on a second instance of the OpenVPN image.
const OPENVPN_CHECKS: &str = r#"{"tests": [
    {"name": "server running", "service": "openvpn-server@server", "active": true, "retry_for": "3m"},
    {"name": "listening on 1194/udp", "port": 1194, "protocol": "udp", "retry_for": "1m"},
    {"name": "CA fingerprint", "command": "openssl x509 -in /etc/openvpn/server/ca.crt -noout -fingerprint -sha256", "expect_stdout": "Fingerprint="},
    {"name": "server key fingerprint", "command": "sudo openssl pkey -in /etc/openvpn/server/server.key -pubout | sha256sum", "expect_stdout": "^[0-9a-f]{64}"}
]}"#;

#[test]
fn openvpn_instances_of_one_image_make_their_own_keys() {
    let scratch = Scratch::new();
    let run = build_unpublished(&scratch, "openvpn.json");
    run.assert_success();
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

    // No key material in the image: only the configuration.
    let disk = output_disk(&scratch, "openvpn");
    let root = GuestRoot::open(&disk);
    let server = root.list("/etc/openvpn/server").expect("server dir");
    assert_eq!(server, vec!["server.conf".to_string()]);
    assert!(root.list("/etc/openvpn/easy-rsa/pki").is_none());

    // A second instance of the same image.
    let checks = scratch.write("checks.json", OPENVPN_CHECKS);
    let second = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--ssh-username",
        "ubuntu",
        "--memory",
        "1024",
        "-test-report",
        "second.json",
        path_str(&disk),
    ]);
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
    assert_nothing_left(&scratch);
}
