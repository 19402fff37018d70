//! Smoke tests: the `tests` section of a build, and `kiln test` on images.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::util::{Scratch, assert_nothing_left, fixture, fixture_builder, path_str};

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("json report")
}

#[test]
fn a_build_checks_a_fresh_instance_of_its_result() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [{"type": "shell", "inline": [
                "cp /var/lib/fixture/first-boot /root/build-boot",
                "echo hello > /etc/motd",
            ]}],
            "tests": [
                {"name": "motd", "file": "/etc/motd", "contains": "hello", "mode": "0644", "owner": "root"},
                {"name": "first boot ran again", "inline": [
                    "! cmp -s /var/lib/fixture/first-boot /root/build-boot",
                    "cat /var/lib/fixture/first-boot",
                ], "expect_stdout": "instance-id: kiln-"},
                {"name": "new hostname", "command": "hostname", "expect_stdout": "^disk-qcow2-test$"},
                {"name": "sshd listens", "port": 22},
                {"name": "comes up late", "inline": [
                    "[ -e /tmp/late ] || { touch /tmp/late; exit 1; }"
                ], "retry_for": "20s"},
            ]
        }),
    );
    let run = scratch.run(&["build", "-test-report", "report.json", path_str(&template)]);
    run.assert_success();
    let report = report(&scratch.path().join("report.json"));
    assert_eq!(report["tests"], 5, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    assert_eq!(report["checks"][4]["name"], "comes up late");
    assert!(
        report["checks"][4]["attempts"].as_u64().expect("attempts") >= 2,
        "{report}"
    );
    assert!(scratch.path().join("out/disk.qcow2").exists());
    assert!(
        run.stdout.contains("5 check(s), 5 passed, 0 failed"),
        "{}",
        run.stdout
    );
    assert_nothing_left(&scratch);
}

#[test]
fn failing_checks_fail_the_build_before_any_post_processor() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out"}))],
            "tests": [
                {"name": "passes", "command": "true"},
                {"name": "wrong exit", "command": "exit 3"},
                {"name": "wrong output", "command": "echo goodbye", "expect_stdout": "^hello"},
                {"name": "too slow", "command": "sleep 30", "timeout": "2s"},
                {"name": "no systemd here", "service": "ssh"},
            ],
            "post-processors": [{"type": "manifest", "output": "manifest.json"}]
        }),
    );
    let run = scratch.run(&["build", "-test-report", "junit.xml", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("4 of 5 check(s) failed"), "{all}");
    assert!(all.contains("exit code 3, expected 0"), "{all}");
    assert!(all.contains("stdout does not match /^hello/"), "{all}");
    assert!(all.contains("timed out after 2.0s"), "{all}");
    assert!(all.contains("need systemd"), "{all}");
    assert!(
        !scratch.path().join("manifest.json").exists(),
        "a post-processor ran"
    );
    assert!(
        !scratch.path().join("out").exists(),
        "the failed artifact was kept"
    );
    let xml = std::fs::read_to_string(scratch.path().join("junit.xml")).expect("junit report");
    assert!(xml.contains("tests=\"5\" failures=\"4\""), "{xml}");
    assert!(xml.contains("<testcase name=\"passes\""), "{xml}");
    assert_nothing_left(&scratch);
}

#[test]
fn with_on_error_abort_the_failed_artifact_stays_marked() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "tests": [{"name": "fails", "command": "false"}]
        }),
    );
    let run = scratch.run(&["build", "-on-error=abort", path_str(&template)]);
    run.assert_failure();
    assert!(
        scratch.path().join("out/disk.qcow2").exists(),
        "{}",
        run.all()
    );
    let marker = std::fs::read_to_string(scratch.path().join("out/TESTS-FAILED.json"))
        .unwrap_or_else(|err| panic!("no TESTS-FAILED.json ({err}):\n{}", run.all()));
    let marker: serde_json::Value = serde_json::from_str(&marker).expect("json marker");
    assert_eq!(marker["failures"], 1, "{marker}\n{}", run.all());
    assert_eq!(marker["checks"][0]["name"], "fails", "{marker}");
}

const PASSING: &str = r#"{"tests": [
    {"name": "root fs", "file": "/etc/passwd", "contains": "root:"},
    {"name": "first boot", "file": "/var/lib/fixture/first-boot", "contains": "instance-id: kiln-"},
    {"name": "sshd", "port": 22}
]}"#;

fn kiln_test(scratch: &Scratch, image: &Path, checks: &Path, report: &str) -> crate::util::Run {
    scratch.run(&[
        "test",
        "--tests",
        path_str(checks),
        "-test-report",
        report,
        "--accelerator",
        "tcg",
        "--memory",
        "512",
        path_str(image),
    ])
}

#[test]
fn kiln_test_checks_a_qcow2_image_without_writing_it() {
    let scratch = Scratch::new();
    let image = scratch.path().join("image.qcow2");
    std::fs::copy(fixture(), &image).expect("copy fixture");
    let before = sha256(&image);
    let checks = scratch.write("checks.json", PASSING);
    let run = kiln_test(&scratch, &image, &checks, "report.json");
    run.assert_success();
    assert!(
        run.stdout.contains("All 3 check(s) passed"),
        "{}",
        run.stdout
    );
    assert_eq!(report(&scratch.path().join("report.json"))["failures"], 0);
    assert_eq!(sha256(&image), before, "the image was written");
    assert_nothing_left(&scratch);
}

fn raw_copy_of_fixture(scratch: &Scratch) -> PathBuf {
    let raw = scratch.path().join("disk.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(fixture())
        .arg(&raw)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    raw
}

#[test]
fn kiln_test_on_a_raw_image_reports_failures_and_exits_1() {
    let scratch = Scratch::new();
    let raw = raw_copy_of_fixture(&scratch);
    let before = sha256(&raw);
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [
            {"name": "passes", "command": "uname -s", "expect_stdout": "Linux"},
            {"name": "missing file", "file": "/etc/nothing-here"},
            {"name": "no such package", "package": "kiln-no-such-package"}
        ]}"#,
    );
    let run = kiln_test(&scratch, &raw, &checks, "junit.xml");
    // Checks ran and some failed: 1 (an image that cannot boot is 3).
    run.assert_failure();
    run.assert_error_on_stderr("2 of 3 check(s) failed");
    run.assert_error_on_stderr("check missing file: FAIL");
    let all = run.all();
    assert!(all.contains("/etc/nothing-here does not exist"), "{all}");
    // busybox's rpm answers for the fixture.
    assert!(
        all.contains("package kiln-no-such-package is not installed"),
        "{all}"
    );
    let xml = std::fs::read_to_string(scratch.path().join("junit.xml")).expect("junit");
    assert!(xml.contains("tests=\"3\" failures=\"2\""), "{xml}");
    assert_eq!(sha256(&raw), before, "the image was written");
    assert_nothing_left(&scratch);
}

#[test]
fn kiln_test_boots_the_disk_inside_a_gce_tarball() {
    let scratch = Scratch::new();
    raw_copy_of_fixture(&scratch);
    let status = Command::new("tar")
        .current_dir(scratch.path())
        .args(["--format=oldgnu", "-Sczf", "image.tar.gz", "disk.raw"])
        .status()
        .expect("tar");
    assert!(status.success());
    std::fs::remove_file(scratch.path().join("disk.raw")).expect("rm");
    let checks = scratch.write("checks.json", PASSING);
    let run = kiln_test(
        &scratch,
        &scratch.path().join("image.tar.gz"),
        &checks,
        "report.json",
    );
    run.assert_success();
    assert!(run.stdout.contains("Unpacking disk.raw"), "{}", run.stdout);
    assert_nothing_left(&scratch);
}

#[test]
fn bad_checks_are_reported_before_anything_boots() {
    let scratch = Scratch::new();
    let image = scratch.write("image.qcow2", "");
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [
            {"name": "a", "command": "true", "expect_stdout": "("},
            {"file": "/etc/x", "mode": "999"},
            {"name": "a", "port": 70000},
            {"name": "b", "command": "x", "inline": ["y"]},
            {"name": "c", "comand": "x"}
        ]}"#,
    );
    let run = kiln_test(&scratch, &image, &checks, "r.txt");
    run.assert_usage_error();
    let all = run.all();
    assert!(all.contains("r.txt"), "{all}");
    let run = kiln_test(&scratch, &image, &checks, "r.json");
    run.assert_usage_error();
    let all = run.all();
    for expected in [
        "tests[0].expect_stdout",
        "tests[1].name",
        "tests[1].mode",
        "tests[2].port",
        "tests[3]",
        "tests[4].comand",
    ] {
        assert!(all.contains(expected), "no error names {expected}:\n{all}");
    }
    assert!(!scratch.path().join("r.json").exists());
}

/// No check can run on an image that does not boot: exit status 3, apart
/// from 1 for checks that ran and failed.
#[test]
fn kiln_test_on_an_image_that_cannot_boot_exits_3() {
    let scratch = Scratch::new();
    let blank = scratch.path().join("blank.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&blank)
        .arg("64M")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    let checks = scratch.write("checks.json", PASSING);
    let run = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--accelerator",
        "tcg",
        "--ssh-timeout",
        "20s",
        path_str(&blank),
    ]);
    run.assert_code(3);
    run.assert_error_on_stderr("Error: testing");
    assert!(!run.all().contains("check(s) passed"), "{}", run.all());
    assert_nothing_left(&scratch);
}
