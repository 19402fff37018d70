//! What a build leaves in the image, on the cloud-style fixture: a default
//! user `ubuntu` (made by the fixture's cloud-init), root refused with
//! cloud-init's forced command. The output disk is read back without
//! booting it.

use serde_json::json;

use crate::util::{GuestRoot, Scratch, assert_nothing_left, cloud_fixture, path_str};

/// A qemu builder on the cloud-style fixture.
fn cloud_builder(extra: serde_json::Value) -> serde_json::Value {
    let mut builder = json!({
        "type": "qemu",
        "name": "cloud",
        "iso_url": cloud_fixture().display().to_string(),
        "iso_checksum": "none",
        "disk_image": true,
        "disk_size": "1G",
        "accelerator": "tcg",
        "ssh_username": "ubuntu",
        "ssh_timeout": "3m",
        "shutdown_command": "sudo -n poweroff",
        "shutdown_timeout": "1m",
        "output_directory": "out",
        "vm_name": "disk.qcow2",
    });
    if let (Some(builder), Some(extra)) = (builder.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            builder.insert(key.clone(), value.clone());
        }
    }
    builder
}

fn names(passwd: &str) -> Vec<&str> {
    passwd
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| !name.is_empty())
        .collect()
}

fn key_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.contains("ssh-ed25519") || line.contains("ssh-rsa"))
        .collect()
}

#[test]
fn a_build_as_the_default_user_leaves_no_key_no_user_and_no_root_policy() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [cloud_builder(json!({}))],
            "provisioners": [{
                "type": "shell",
                "inline": [
                    "echo made by the provisioner > /home/ubuntu/provisioned.txt",
                    "sudo -n sh -c 'echo made as root > /etc/provisioned.conf'",
                    // The key reached both files while the build ran.
                    "grep -c kiln /home/ubuntu/.ssh/authorized_keys",
                    "sudo -n grep -c 'Please login as the user' /root/.ssh/authorized_keys"
                ]
            }]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    let all = run.all();
    for file in [
        "/home/ubuntu/.ssh/authorized_keys",
        "/root/.ssh/authorized_keys",
    ] {
        assert!(
            all.contains(&format!("Removed the build key from {file}")),
            "{all}"
        );
    }

    let image = GuestRoot::open(&scratch.path().join("out/disk.qcow2"));
    let pristine = GuestRoot::open(cloud_fixture());

    // What the provisioner made is there.
    assert_eq!(
        image.read("/home/ubuntu/provisioned.txt").as_deref(),
        Some("made by the provisioner\n")
    );
    assert_eq!(
        image.read("/etc/provisioned.conf").as_deref(),
        Some("made as root\n")
    );

    // No key in any authorized_keys: the files cloud-init makes for every
    // instance stay, empty.
    for file in [
        "/home/ubuntu/.ssh/authorized_keys",
        "/root/.ssh/authorized_keys",
    ] {
        let text = image.read(file).unwrap_or_else(|| panic!("{file} is gone"));
        assert!(key_lines(&text).is_empty(), "{file} keeps a key:\n{text}");
    }

    // No user but the image's own and the default user cloud-init makes
    // on every first boot; no sudo rule; the root policy unchanged.
    let passwd = image.read("/etc/passwd").expect("/etc/passwd");
    assert_eq!(names(&passwd), ["root", "nobody", "ubuntu"], "{passwd}");
    assert!(passwd.contains("ubuntu:x:1000:1000:"), "{passwd}");
    assert_eq!(image.list("/etc/sudoers.d"), None);
    assert_eq!(
        image.read("/etc/cloud/cloud.cfg"),
        pristine.read("/etc/cloud/cloud.cfg")
    );
    assert_eq!(
        image.read("/etc/group"),
        Some(
            "root:x:0:\ntty:x:5:\nsudo:x:27:ubuntu\nnogroup:x:65534:\nubuntu:x:1000:\n".to_string()
        )
    );

    // cloud-init's copy of the seed (with the key) is gone too.
    let instances = image
        .list("/var/lib/cloud/instances")
        .expect("/var/lib/cloud/instances");
    assert!(instances.is_empty(), "{instances:?}");
    assert!(
        !image
            .list("/var/lib/cloud")
            .unwrap_or_default()
            .contains(&"instance".to_string())
    );
    assert_nothing_left(&scratch);
}

#[test]
fn a_wrong_ssh_username_fails_naming_the_user_and_the_default_user() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [cloud_builder(json!({
                "ssh_username": "ubuntuu",
                "ssh_handshake_attempts": 3
            }))],
            "provisioners": [{"type": "shell", "inline": ["echo never"]}]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("authentication as ubuntuu was rejected"),
        "{all}"
    );
    assert!(
        all.contains("the image's default user is ubuntu (from the guest's console): set ssh_username to ubuntu"),
        "{all}"
    );
    assert!(!scratch.path().join("out").exists());
    assert_nothing_left(&scratch);
}

#[test]
fn root_on_an_image_that_refuses_root_fails_with_the_guests_answer() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [cloud_builder(json!({"ssh_username": "root", "shutdown_command": "poweroff"}))],
            "provisioners": [{"type": "shell", "inline": ["echo never"]}]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("Please login as the user"), "{all}");
    assert!(all.contains("rather than the user"), "{all}");
    assert!(all.contains("set ssh_username to ubuntu"), "{all}");
    assert!(!all.contains("never"), "a provisioner ran:\n{all}");
    assert!(!scratch.path().join("out").exists());
    assert_nothing_left(&scratch);
}

#[test]
fn kiln_test_on_a_cloud_image_suggests_ssh_username() {
    let scratch = Scratch::new();
    let checks = scratch.write_json(
        "checks.json",
        &json!({"tests": [{"name": "uname", "command": "uname -s", "expect_stdout": "Linux"}]}),
    );
    let run = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--accelerator",
        "tcg",
        "--memory",
        "512",
        path_str(cloud_fixture()),
    ]);
    assert_ne!(run.code, Some(0), "{}", run.all());
    let all = run.all();
    assert!(all.contains("Please login as the user"), "{all}");
    assert!(all.contains("try --ssh-username ubuntu"), "{all}");
    assert_nothing_left(&scratch);

    // With the user it names, the same image passes.
    let run = scratch.run(&[
        "test",
        "--tests",
        path_str(&checks),
        "--accelerator",
        "tcg",
        "--memory",
        "512",
        "--ssh-username",
        "ubuntu",
        path_str(cloud_fixture()),
    ]);
    run.assert_success();
}

/// A user that cannot become root cannot take the key out of root's
/// `authorized_keys`: the build fails rather than ship it.
#[test]
fn a_key_that_cannot_be_removed_fails_the_build() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [cloud_builder(json!({"shutdown_command": "echo no poweroff without sudo"}))],
            "provisioners": [{
                "type": "shell",
                "inline": ["sudo -n sed -i 's/^sudo:x:27:ubuntu$/sudo:x:27:/' /etc/group"]
            }]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(
        all.contains("/root: not readable without root, and `sudo -n` was refused"),
        "{all}"
    );
    // Nor can it remove cloud-init's copy of the seed.
    assert!(
        all.contains("the build key may stay in the image (/var/lib/cloud/instances/kiln-"),
        "{all}"
    );
    assert!(
        all.contains("Removed the build key from /home/ubuntu/.ssh/authorized_keys"),
        "{all}"
    );
    assert!(!scratch.path().join("out").exists());
    assert_nothing_left(&scratch);
}
