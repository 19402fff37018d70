//! A machine that goes away, or never boots: the build (or `kiln test`)
//! fails with what happened, not with an SSH timeout. Every case here sets
//! an `ssh_timeout` of half an hour: a regression hangs the test instead of
//! passing it.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::util::{Run, Scratch, assert_nothing_left, fixture_builder, path_str};

/// The pid of the QEMU started from this test's directory.
fn qemu_pid(scratch: &Scratch) -> Option<i32> {
    let marker = scratch.path().display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("qemu-system") && cmdline.contains(&marker)).then_some(pid)
        })
}

#[test]
fn qemu_killed_during_a_provisioner_fails_the_build_with_qemus_exit() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "ssh_timeout": "30m",
            }))],
            "provisioners": [{
                "type": "shell",
                "max_retries": 3,
                "inline": [
                    "echo provisioner-is-waiting",
                    "while [ ! -e /tmp/never ]; do sleep 1; done",
                ],
            }]
        }),
    );
    let mut child = scratch
        .kiln(&["build", path_str(&template)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read") > 0 {
        seen.push_str(&line);
        let waiting = line.contains("provisioner-is-waiting");
        line.clear();
        if waiting {
            break;
        }
    }
    assert!(
        seen.contains("provisioner-is-waiting"),
        "the provisioner never ran:\n{seen}"
    );
    let pid = qemu_pid(&scratch).expect("QEMU runs while the provisioner waits");
    // SAFETY: a signal to the QEMU this test's kiln started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    stdout.read_to_string(&mut seen).expect("read");
    let status = child.wait().expect("wait");
    let all = format!("{seen}\n{}", stderr.join().expect("stderr"));
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(
        all.contains("QEMU exited on signal 9 (SIGKILL) while the provisioners ran"),
        "{all}"
    );
    assert!(
        all.contains("last lines of the serial console"),
        "no console tail:\n{all}"
    );
    assert!(!all.contains("timed out"), "{all}");
    assert!(
        !all.contains("retrying"),
        "a dead machine was retried:\n{all}"
    );
    assert!(!scratch.path().join("out").exists(), "output left behind");
    assert_nothing_left(&scratch);
}

/// The disks that cannot boot, each as a file next to the test.
enum Unbootable {
    /// A raw disk of zeros.
    Zeros,
    /// A text file, taken as a raw disk.
    Text,
    /// A well-formed disk with no boot loader: an ext4 file system.
    Filesystem,
    /// A well-formed, empty qcow2 image.
    EmptyQcow2,
}

impl Unbootable {
    fn make(&self, scratch: &Scratch) -> PathBuf {
        match self {
            Unbootable::Zeros => {
                let path = scratch.path().join("zeros.raw");
                let file = std::fs::File::create(&path).expect("create");
                file.set_len(64 << 20).expect("size");
                path
            }
            // Whole sectors of text: only a disk when told it is one.
            Unbootable::Text => scratch.write(
                "notes.txt",
                &"These are my notes, not a disk. Line of notes.\n".repeat(1024),
            ),
            Unbootable::Filesystem => {
                let path = scratch.path().join("data.ext4");
                let file = std::fs::File::create(&path).expect("create");
                file.set_len(64 << 20).expect("size");
                run_tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&path));
                path
            }
            Unbootable::EmptyQcow2 => {
                let path = scratch.path().join("empty.qcow2");
                run_tool(
                    Command::new("qemu-img")
                        .args(["create", "-q", "-f", "qcow2"])
                        .arg(&path)
                        .arg("64M"),
                );
                path
            }
        }
    }

    fn format(&self) -> &'static str {
        match self {
            Unbootable::EmptyQcow2 => "qcow2",
            _ => "raw",
        }
    }
}

fn run_tool(command: &mut Command) {
    let status = command.status().expect("run a disk tool");
    assert!(status.success(), "{command:?} failed");
}

#[track_caller]
fn assert_not_bootable(run: &Run) {
    let all = run.all();
    assert!(all.contains("the disk is not bootable"), "{all}");
    assert!(
        all.contains("No bootable device") || all.contains("BdsDxe"),
        "the firmware's own words are missing:\n{all}"
    );
    assert!(!all.contains("waiting for SSH"), "{all}");
    assert!(!all.contains("timed out"), "{all}");
}

fn build_from(kind: Unbootable) {
    let scratch = Scratch::new();
    let disk = kind.make(&scratch);
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "iso_url": path_str(&disk),
                "output_directory": "out",
                "format": kind.format(),
                "disk_size": "64M",
                "memory": 256,
                "ssh_timeout": "30m",
            }))],
            "provisioners": [{"type": "shell", "inline": ["echo never-runs"]}]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    assert_not_bootable(&run);
    assert!(!run.all().contains("never-runs"));
    assert!(!scratch.path().join("out").exists(), "output left behind");
    assert_nothing_left(&scratch);
}

#[test]
fn a_build_from_a_disk_of_zeros_fails_as_not_bootable() {
    build_from(Unbootable::Zeros);
}

/// Under UEFI the firmware's words come on the serial console (OVMF).
#[test]
fn a_uefi_build_from_a_disk_of_zeros_fails_as_not_bootable() {
    assert!(
        std::path::Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file(),
        "no OVMF: scripts/setup.sh installs the package ovmf"
    );
    let scratch = Scratch::new();
    let disk = Unbootable::Zeros.make(&scratch);
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "iso_url": path_str(&disk),
                "output_directory": "out",
                "format": "raw",
                "disk_size": "64M",
                "memory": 256,
                "efi_boot": true,
                "ssh_timeout": "30m",
            }))]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    assert_not_bootable(&run);
    assert!(
        run.all().contains("BdsDxe: failed to load"),
        "{}",
        run.all()
    );
    assert!(!scratch.path().join("out").exists(), "output left behind");
    assert_nothing_left(&scratch);
}

/// A build reads its source's format from the header: a text file is
/// refused as one before QEMU starts (`kiln test --format raw` boots it).
#[test]
fn a_build_from_a_text_file_is_refused_as_not_a_disk() {
    let scratch = Scratch::new();
    let disk = Unbootable::Text.make(&scratch);
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "iso_url": path_str(&disk),
                "output_directory": "out",
                "format": "raw",
                "disk_size": "64M",
                "ssh_timeout": "30m",
            }))]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    assert!(
        run.all()
            .contains("looks like a text file, not a disk image"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("Starting QEMU"), "{}", run.all());
    assert!(!scratch.path().join("out").exists(), "output left behind");
    assert_nothing_left(&scratch);
}

#[test]
fn a_build_from_a_disk_without_a_boot_loader_fails_as_not_bootable() {
    build_from(Unbootable::Filesystem);
}

fn kiln_test_on(kind: Unbootable) {
    let scratch = Scratch::new();
    let image = kind.make(&scratch);
    let before = std::fs::read(&image).expect("image");
    let checks = scratch.write_json(
        "checks.json",
        &json!({"tests": [{"name": "never runs", "command": "true"}]}),
    );
    let run = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--accelerator",
        "tcg",
        "--memory",
        "256",
        "--ssh-timeout",
        "30m",
        // Told, not guessed: a text file is only a disk when asked to be.
        "--format",
        kind.format(),
        path_str(&image),
    ]);
    // "The image could not be booted": no check ran.
    assert_eq!(run.code, Some(3), "{}", run.all());
    assert_not_bootable(&run);
    assert_eq!(
        std::fs::read(&image).expect("image"),
        before,
        "the image was written to"
    );
    assert_nothing_left(&scratch);
}

#[test]
fn kiln_test_on_a_disk_of_zeros_fails_as_not_bootable() {
    kiln_test_on(Unbootable::Zeros);
}

#[test]
fn kiln_test_on_a_text_file_fails_as_not_bootable() {
    kiln_test_on(Unbootable::Text);
}

#[test]
fn kiln_test_on_an_empty_qcow2_fails_as_not_bootable() {
    kiln_test_on(Unbootable::EmptyQcow2);
}

#[test]
fn kiln_test_on_a_disk_without_a_boot_loader_fails_as_not_bootable() {
    kiln_test_on(Unbootable::Filesystem);
}

/// A reboot the template asked for is not a machine going away: the build
/// reconnects and goes on.
#[test]
fn a_guest_reboot_in_a_provisioner_is_not_a_dead_machine() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "vm_name": "disk.qcow2",
                "ssh_timeout": "30m",
            }))],
            "provisioners": [
                {
                    "type": "shell",
                    "expect_disconnect": true,
                    "inline": [
                        "cat /proc/sys/kernel/random/boot_id > /root/first-boot-id",
                        "reboot",
                        "sleep 60",
                    ]
                },
                {"type": "shell", "inline": [
                    "test \"$(cat /proc/sys/kernel/random/boot_id)\" != \"$(cat /root/first-boot-id)\"",
                    "echo after-the-reboot > /root/rebooted",
                ]}
            ]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    let disk = scratch.path().join("out/disk.qcow2");
    assert_eq!(
        crate::util::GuestRoot::open(&disk)
            .read("/root/rebooted")
            .as_deref(),
        Some("after-the-reboot\n")
    );
    assert_nothing_left(&scratch);
}

/// A guest that powers itself off during a provisioner ends the build with
/// QEMU's (clean) exit, at once.
#[test]
fn a_guest_powering_off_in_a_provisioner_ends_the_build_at_once() {
    let all = failed_build_with(json!([
        {"type": "shell", "expect_disconnect": true, "inline": ["poweroff", "sleep 60"]},
        {"type": "shell", "inline": ["echo never-runs"]}
    ]));
    assert!(
        all.contains("QEMU exited with status 0 while the provisioners ran"),
        "{all}"
    );
    assert!(!all.contains("never-runs"), "{all}");
    assert!(!all.contains("timed out"), "{all}");
}

/// The guest's SSH server goes away with the connection: the script's own
/// error is reported at once. (Removing the script used to reconnect for
/// the whole `ssh_timeout` first, then report that timeout instead.)
#[test]
fn a_lost_connection_is_reported_without_reconnecting_to_clean_up() {
    let all = failed_build_with(json!([{"type": "shell", "inline": [
        "echo stopping-the-ssh-server",
        "killall dropbear",
        "sleep 60",
    ]}]));
    assert!(all.contains("stopping-the-ssh-server"), "{all}");
    assert!(
        all.contains("the guest closed the connection while the script ran"),
        "{all}"
    );
    assert!(!all.contains("timed out"), "{all}");
    assert!(!all.contains("QEMU exited"), "{all}");
}

/// A kernel panic in the guest during a provisioner ends the build with
/// the panic, not with a lost connection or an SSH timeout (the fixture
/// reboots 10 s after a panic, and would look alive again).
#[test]
fn a_guest_kernel_panic_during_a_provisioner_fails_the_build() {
    let all = failed_build_with(json!([{"type": "shell", "max_retries": 3, "inline": [
        "echo c > /proc/sysrq-trigger",
        "sleep 60",
    ]}]));
    assert!(all.contains("the guest failed: guest-panicked"), "{all}");
    assert!(all.contains("Kernel panic - not syncing"), "{all}");
    assert!(!all.contains("retrying"), "{all}");
    assert!(!all.contains("timed out"), "{all}");
}

/// Builds the fixture with `provisioners` and a 30-minute `ssh_timeout`
/// (a test that waited it out would hang, not pass); the build must fail
/// and leave neither its output nor anything else behind. Returns all
/// kiln printed.
fn failed_build_with(provisioners: serde_json::Value) -> String {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "ssh_timeout": "30m",
            }))],
            "provisioners": provisioners
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    assert!(!scratch.path().join("out").exists(), "output left behind");
    assert_nothing_left(&scratch);
    run.all()
}
