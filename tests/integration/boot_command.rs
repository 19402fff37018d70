//! `boot_command` and the HTTP server: typed into the installer fixture's
//! boot prompt, the kernel command line makes the guest fetch a file from
//! kiln's HTTP server and keep it on its disk.

use serde_json::json;

use crate::util::{
    GuestRoot, Scratch, assert_nothing_left, fixture_builder, installer_fixture, path_str,
};

#[test]
fn a_typed_boot_command_fetches_from_the_http_server() {
    let scratch = Scratch::new();
    scratch.write("http/payload.txt", "served by kiln\n");
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "iso_url": installer_fixture().display().to_string(),
                "output_directory": "out",
                "vm_name": "disk.qcow2",
                // The fixture's syslinux shows its boot: prompt after a
                // couple of seconds under TCG; Packer's default boot_wait
                // (10s) leaves room for a slow host.
                "boot_command": [
                    "fixture kiln.fetch=http://{{ .HTTPIP }}:{{ .HTTPPort }}/payload.txt",
                    "<enter>"
                ],
                "boot_key_interval": "20ms",
                "http_directory": "http",
                "http_port_min": 18100,
                "http_port_max": 18900,
                "vnc_use_password": true,
            }))],
            "provisioners": [
                {"type": "shell", "inline": ["cat /var/lib/kiln-fetched"]}
            ]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    let out = run.all();
    // The server said where it listens, and logged the guest's request.
    assert!(out.contains("Starting HTTP server on 127.0.0.1:"), "{out}");
    assert!(
        out.contains("HTTP GET /payload.txt -> 200 (15 bytes)"),
        "{out}"
    );
    assert!(out.contains("Typing the boot command..."), "{out}");
    assert!(out.contains("vnc://127.0.0.1:"), "{out}");
    let request = out
        .find("HTTP GET /payload.txt")
        .expect("the request was logged");
    let typing = out.find("Typing the boot command").expect("typed");
    assert!(
        typing < request,
        "the guest asked before anything was typed:\n{out}"
    );

    let disk = scratch.path().join("out/disk.qcow2");
    let root = GuestRoot::open(&disk);
    assert_eq!(
        root.read("/var/lib/kiln-fetched").as_deref(),
        Some("served by kiln\n")
    );
    assert_nothing_left(&scratch);
}

#[test]
fn a_bad_key_is_a_validation_error_naming_it() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "boot_command": ["<esc><wait>", "linux<entre>"],
            }))]
        }),
    );
    let run = scratch.run(&["validate", path_str(&template)]);
    run.assert_usage_error();
    assert!(
        run.stderr.contains("builders[0].boot_command[1]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("unknown key <entre>"), "{}", run.stderr);
}

#[test]
fn no_free_http_port_fails_the_build_clearly_and_leaves_nothing() {
    let scratch = Scratch::new();
    scratch.write("http/payload.txt", "x\n");
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "http_directory": "http",
                "http_port_min": port,
                "http_port_max": port,
            }))]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let expected =
        format!("no free port between {port} and {port} on 127.0.0.1 for the HTTP server");
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(!run.all().contains("Starting QEMU"), "{}", run.all());
    assert!(!scratch.path().join("out").exists());
    assert_nothing_left(&scratch);
    drop(taken);
}
