//! Builds that boot the fixture image under QEMU.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::json;

use crate::util::{
    GuestRoot, Scratch, assert_nothing_left, fixture_builder, path_str, qemu_processes_with,
};

#[test]
fn shell_and_file_provisioners_change_the_output_disk() {
    let scratch = Scratch::new();
    scratch.write("files/app.conf", "listen = 8080\n");
    scratch.write("files/nested/data.txt", "nested data\n");
    scratch.write("single.txt", "one file\n");
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"greeting": "hello", "token": "s3cr3t-t0ken"},
            "sensitive-variables": ["token"],
            "builders": [fixture_builder(json!({
                "name": "fixture",
                "output_directory": "out",
                "vm_name": "disk.qcow2",
            }))],
            "provisioners": [
                {
                    "type": "shell",
                    "environment_vars": ["GREETING={{user `greeting`}}", "TOKEN={{user `token`}}"],
                    "inline": [
                        "echo \"$GREETING from $PACKER_BUILD_NAME\" > /root/greeting.txt",
                        "echo \"using $TOKEN\"",
                        "echo to-stderr >&2"
                    ]
                },
                {"type": "file", "source": "files/", "destination": "/etc/app"},
                {"type": "file", "source": "single.txt", "destination": "/root/"},
                {"type": "file", "content": "generated {{build_name}}\n", "destination": "/root/content.txt"},
                {"type": "shell", "inline": ["cat /etc/app/nested/data.txt > /root/copied.txt"]},
                {"type": "file", "direction": "download", "source": "/root/greeting.txt", "destination": "fetched.txt"},
                {"type": "shell-local", "inline": ["echo local \"$PACKER_BUILD_NAME\" > local.txt"]}
            ],
            "post-processors": [
                {"type": "checksum", "checksum_types": ["sha256"], "output": "out/{{.BuildName}}.{{.ChecksumType}}"},
                {"type": "manifest", "output": "manifest.json"},
                {
                    "type": "shell-local",
                    "inline": ["echo \"$PACKER_BUILD_NAME $PACKER_BUILDER_TYPE\" > pp.txt", "echo from-the-post-processor"],
                    "keep_input_artifact": false
                }
            ]
        }),
    );
    let run = scratch.run(&["build", "-machine-readable", path_str(&template)]);
    run.assert_success();
    let disk = scratch.path().join("out/disk.qcow2");
    assert!(
        disk.exists(),
        "no disk at {}:\n{}",
        disk.display(),
        run.all()
    );

    // What the provisioners did is on the disk, read without booting it.
    let root = GuestRoot::open(&disk);
    for (path, expected) in [
        ("/root/greeting.txt", "hello from fixture\n"),
        ("/etc/app/app.conf", "listen = 8080\n"),
        ("/root/single.txt", "one file\n"),
        ("/root/content.txt", "generated fixture\n"),
        ("/root/copied.txt", "nested data\n"),
    ] {
        assert_eq!(root.read(path).as_deref(), Some(expected), "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("fetched.txt")).expect("downloaded"),
        "hello from fixture\n"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("local.txt")).expect("shell-local ran"),
        "local fixture\n"
    );

    // Guest output is streamed, prefixed by the build, with the secret masked.
    assert!(run.stdout.contains("to-stderr"), "{}", run.stdout);
    assert!(run.stdout.contains("using <sensitive>"), "{}", run.stdout);
    assert!(
        !run.all().contains("s3cr3t-t0ken"),
        "secret leaked:\n{}",
        run.all()
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(",fixture,artifact,0,builder-id,")),
        "{}",
        run.stdout
    );

    assert_post_processed(scratch.path(), &disk);
    // The shell-local post-processor ran on this machine with the build's
    // variables, its output streamed, and kept the disk whatever its
    // keep_input_artifact says, as Packer's does.
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("pp.txt"))
            .expect("shell-local post-processor ran"),
        "fixture qemu\n"
    );
    assert!(
        run.stdout.contains("fixture: from-the-post-processor"),
        "{}",
        run.stdout
    );
    assert!(disk.exists());
    // The paths are shown as the template wrote them, and every artifact
    // is listed: the disk (kept by checksum), the checksum file, and what
    // the manifest and shell-local passed on.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(manifest["builds"][0]["files"][0]["name"], "out/disk.qcow2");
    for record in [
        ",fixture,artifact-count,4",
        ",fixture,artifact,0,string,VM files in directory: out",
        ",fixture,artifact,0,file,0,out/disk.qcow2",
        ",fixture,artifact,1,builder-id,packer.post-processor.checksum",
        ",fixture,artifact,1,string,Created artifact from files: out/fixture.sha256",
        ",fixture,artifact,2,id,VM",
        ",fixture,artifact,3,file,0,out/disk.qcow2",
    ] {
        assert!(
            run.stdout.lines().any(|l| l.ends_with(record)),
            "no {record:?} in:\n{}",
            run.stdout
        );
    }

    // The serial console was logged beside the output.
    let serial =
        std::fs::read_to_string(scratch.path().join("out.serial.log")).expect("serial log");
    assert!(!serial.trim().is_empty());
    assert_nothing_left(&scratch);
}

/// The checksum post-processor wrote `disk`'s digest, and the manifest
/// names the build.
fn assert_post_processed(dir: &std::path::Path, disk: &std::path::Path) {
    let sums = std::fs::read_to_string(dir.join("out/fixture.sha256")).expect("checksum");
    let digest = sha256_hex(disk);
    assert_eq!(sums.trim_end(), format!("{digest}\tdisk.qcow2"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(manifest["builds"][0]["name"], "fixture");
    assert_eq!(manifest["builds"][0]["builder_type"], "qemu");
}

fn sha256_hex(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

#[test]
fn the_acpi_power_button_shuts_down_when_there_is_no_shutdown_command() {
    let scratch = Scratch::new();
    let mut builder =
        fixture_builder(json!({"output_directory": "out", "vm_name": "raw.img", "format": "raw"}));
    builder
        .as_object_mut()
        .expect("object")
        .remove("shutdown_command");
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [builder],
            "provisioners": [{"type": "shell", "inline": ["echo kept > /root/kept.txt"]}]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    assert!(run.stdout.contains("ACPI"), "{}", run.stdout);
    let disk = scratch.path().join("out/raw.img");
    let head = std::fs::read(&disk).expect("disk");
    assert!(
        !head.starts_with(b"QFI\xfb"),
        "format raw asked, qcow2 written"
    );
    assert_eq!(
        GuestRoot::open(&disk).read("/root/kept.txt").as_deref(),
        Some("kept\n")
    );
    assert_nothing_left(&scratch);
}

#[test]
fn a_failing_provisioner_fails_the_build_and_cleans_up() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out"}))],
            "provisioners": [
                {"type": "shell", "inline": ["echo about-to-fail", "exit 1"]},
                {"type": "shell", "inline": ["echo never-runs"]}
            ]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("about-to-fail"),
        "guest output not shown:\n{all}"
    );
    assert!(!all.contains("never-runs"), "{all}");
    assert!(all.contains("exit"), "exit status not named:\n{all}");
    assert!(all.contains("1"), "{all}");
    assert!(
        !scratch.path().join("out").exists(),
        "half-written output left"
    );
    assert_nothing_left(&scratch);
}

#[test]
fn on_error_abort_leaves_the_output_for_inspection() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [{"type": "shell", "inline": ["exit 3"]}]
        }),
    );
    let run = scratch.run(&["build", "-on-error=abort", path_str(&template)]);
    run.assert_failure();
    assert!(
        scratch.path().join("out/disk.qcow2").exists(),
        "{}",
        run.all()
    );
    assert!(run.all().contains("left"), "{}", run.all());
    let marker = scratch.path().display().to_string();
    assert!(qemu_processes_with(&marker).is_empty(), "QEMU left running");
}

#[test]
fn a_guest_that_never_answers_ssh_fails_at_ssh_timeout_showing_the_console() {
    let scratch = Scratch::new();
    // Nothing listens on this port inside the guest: QEMU accepts the
    // forwarded connection and drops it, again and again.
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "ssh_port": 2200,
                "ssh_timeout": "25s",
            }))]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("timed out after 25s waiting for SSH"), "{all}");
    assert!(
        all.contains("last lines of the serial console"),
        "no serial console tail:\n{all}"
    );
    assert!(!scratch.path().join("out").exists());
    assert_nothing_left(&scratch);
}

fn cpu_has_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

#[test]
fn an_explicit_kvm_that_cannot_work_fails_fast_with_a_clear_error() {
    if cpu_has_virtualization() || !std::path::Path::new("/dev/kvm").exists() {
        eprintln!(
            "skipped: this machine's KVM may work (or is absent); the test is for broken KVM"
        );
        return;
    }
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "accelerator": "kvm",
                "ssh_timeout": "10m",
            }))]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("KVM"), "{all}");
    assert!(
        all.contains("tcg"),
        "the error should point to accelerator tcg:\n{all}"
    );
    assert!(
        !all.contains("waiting for SSH"),
        "waited for SSH instead:\n{all}"
    );
    assert_nothing_left(&scratch);
}

#[test]
fn ctrl_c_stops_the_build_and_removes_everything() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out"}))],
            "provisioners": [{"type": "shell", "inline": ["sleep 600"]}]
        }),
    );
    let mut child = scratch
        .kiln(&["build", path_str(&template)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    // Ends at the line, or when kiln exits (its ssh_timeout bounds a boot
    // that never gets there).
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        // The shell provisioner started: QEMU runs and the guest is busy.
        if line.contains("Provisioning with shell script") {
            break;
        }
    }
    assert!(
        seen.contains("Provisioning with shell script"),
        "never got to provisioning:\n{seen}"
    );
    let marker = scratch.path().display().to_string();
    assert!(
        !qemu_processes_with(&marker).is_empty(),
        "QEMU should be running now"
    );
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(
        !scratch.path().join("out").exists(),
        "output left after Ctrl-C"
    );
    assert_nothing_left(&scratch);
}

/// The README's main job: the demo template, as `scripts/demo.sh` runs it.
#[test]
fn the_demo_template_builds_tests_and_packages_the_fixture() {
    let scratch = Scratch::new();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/demo.json");
    let fixture_var = format!("fixture_image={}", crate::util::fixture().display());
    let run = scratch.run(&["build", "-force", "-var", &fixture_var, path_str(&demo)]);
    run.assert_success();
    let all = run.all();
    assert!(all.contains("4 check(s), 4 passed, 0 failed"), "{all}");
    assert!(!all.contains("demo-token-not-a-secret"), "{all}");

    let out = scratch.path().join("output-demo");
    let disk = out.join("demo.qcow2");
    let guest = GuestRoot::open(&disk);
    let motd = guest.read("/etc/motd").expect("motd");
    assert!(motd.starts_with("hello from kiln, built "), "{motd}");
    assert!(guest.read("/etc/kiln-demo/app.conf").is_some());

    let tarball = out.join("demo.disk.raw.tar.gz");
    let listing = std::process::Command::new("tar")
        .arg("-tvzf")
        .arg(&tarball)
        .output()
        .expect("tar");
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.contains(" 1073741824 "), "{listing}");
    assert!(listing.trim_end().ends_with(" disk.raw"), "{listing}");

    let sums = std::fs::read_to_string(out.join("demo.sha256")).expect("checksum file");
    let actual = std::process::Command::new("sha256sum")
        .arg(&disk)
        .output()
        .expect("sha256sum");
    let actual = String::from_utf8_lossy(&actual.stdout).into_owned();
    let digest = actual.split_whitespace().next().expect("digest");
    assert!(sums.contains(digest), "{sums} vs {actual}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(manifest["builds"][0]["name"], "demo", "{manifest}");
    assert_nothing_left(&scratch);
}
