//! The container image (`packaging/Containerfile`): built with podman from
//! this build's binary and run offline on the demo template.
//!
//! No registry is reachable on the test machines, so the base image is a
//! Debian 12 root made with debootstrap from Debian's mirror and imported
//! once (`localhost/kiln-base:bookworm`); the Containerfile's `BASE`
//! argument points there. The container runs with `runc` and lowered
//! rlimits: that is what works on hosts that forbid raising them, and it
//! changes nothing for kiln.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{Scratch, fixture};

const BASE_IMAGE: &str = "localhost/kiln-base:bookworm";

/// `podman ARGS`, through sudo when not root (rootful podman, as in CI).
fn podman(args: &[&str]) -> Command {
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        Command::new("podman")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("podman");
        sudo
    };
    command.args(args);
    command
}

#[track_caller]
fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?} ({e}); scripts/setup.sh installs podman, runc and debootstrap"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The Debian mirror apt uses on this host, so the base and the image's
/// packages come from the same place.
fn debian_mirror() -> String {
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|sources| {
            sources
                .lines()
                .find_map(|line| line.strip_prefix("URIs:").map(|uri| uri.trim().to_string()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

fn ensure_base_image(scratch: &Scratch) {
    if podman(&["image", "exists", BASE_IMAGE])
        .status()
        .is_ok_and(|status| status.success())
    {
        return;
    }
    let root = scratch.path().join("base-root");
    let mut debootstrap = if unsafe { libc::geteuid() } == 0 {
        Command::new("debootstrap")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("debootstrap");
        sudo
    };
    debootstrap
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg(debian_mirror());
    run(debootstrap, "debootstrap of the base image");
    let tarball = scratch.path().join("base-root.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&root).arg("-cf").arg(&tarball).arg(".");
    run(tar, "packing the base root");
    let mut import = podman(&["import"]);
    import.arg(&tarball).arg(BASE_IMAGE);
    run(import, "podman import of the base root");
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_container_image_builds_the_demo_template_with_no_network() {
    let scratch = Scratch::new();
    ensure_base_image(&scratch);

    // The build context: the Containerfile and the binary under test.
    let context = scratch.path().join("context");
    std::fs::create_dir_all(&context).expect("context dir");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), context.join("kiln")).expect("copy kiln");
    let tag = format!("localhost/kiln-test:{}", std::process::id());
    let mirror = debian_mirror();
    let mut build = podman(&["build", "--runtime", "runc", "--network", "host"]);
    build
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg("--build-arg")
        .arg(format!("BASE={BASE_IMAGE}"))
        .arg("--build-arg")
        .arg(format!("MIRROR={mirror}"))
        .args(["--build-arg", "KILN=kiln", "-t", &tag, "-f"])
        .arg(repository().join("packaging/Containerfile"))
        .arg(&context);
    run(build, "podman build of packaging/Containerfile");
    let _image = RemoveImage(tag.clone());

    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let fixture = fixture();
    let fixture_dir = fixture.parent().expect("fixture dir");
    let fixture_name = fixture.file_name().expect("fixture name").to_string_lossy();
    let mut container = podman(&["run", "--rm", "--runtime", "runc", "--network", "none"]);
    container
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg("-v")
        .arg(format!("{}:/fixture:ro", fixture_dir.display()))
        .arg("-v")
        .arg(format!(
            "{}:/templates:ro",
            repository().join("templates").display()
        ))
        .arg("-v")
        .arg(format!("{}:/out", out.display()))
        .args(["-w", "/out", &tag, "build", "-var"])
        .arg(format!("fixture_image=/fixture/{fixture_name}"))
        .arg("/templates/demo.json");
    let output = run(container, "kiln build inside the container");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for check in ["motd", "app config", "kernel", "fresh instance"] {
        assert!(
            stdout.contains(&format!("check {check}: pass")),
            "smoke check {check:?} did not pass in the container:\n{stdout}"
        );
    }

    let disk = out.join("output-demo/demo.qcow2");
    let tarball = out.join("output-demo/demo.disk.raw.tar.gz");
    for artifact in [&disk, &tarball] {
        let size = std::fs::metadata(artifact)
            .unwrap_or_else(|e| {
                panic!(
                    "{} is missing after the container build: {e}",
                    artifact.display()
                )
            })
            .len();
        assert!(size > 0, "{} is empty", artifact.display());
    }
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .expect("tar -t");
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), "disk.raw");
}

/// Removes the test's image however the test ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.0]).output();
    }
}
