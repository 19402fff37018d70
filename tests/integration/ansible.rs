//! The `ansible` provisioner (Debian's Ansible on this machine, against the
//! fixture's dropbear; the fixture has no Python, so the playbooks use
//! `raw`) and `ansible-local` (the fixture has no Ansible: a recording
//! script stands in for `ansible-playbook` in the guest).

use serde_json::json;

use crate::util::{GuestRoot, Scratch, assert_nothing_left, fixture_builder, path_str};

const PLAYBOOK: &str = "\
- hosts: web
  gather_facts: false
  tasks:
    - raw: echo \"from ansible for {{ packer_build_name }}\" > /root/ansible.txt
";

/// Stands in for ansible-playbook in the guest: records how it was run.
const RECORDER: &str =
    "#!/bin/sh\npwd > /root/ansible-local.cwd\necho \"$@\" > /root/ansible-local.args\n";

#[test]
fn ansible_runs_the_playbook_on_the_guest_and_ansible_local_stages_it() {
    let scratch = Scratch::new();
    scratch.write("site.yml", PLAYBOOK);
    scratch.write("pb/local.yml", "- hosts: all\n");
    scratch.write("pb/extra/more.yml", "- hosts: all\n");
    scratch.write("gv/all.yml", "answer: 42\n");
    scratch.write("roles/web/tasks/main.yml", "- debug: msg=hi\n");
    scratch.write("record.sh", RECORDER);
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"name": "fixture", "output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [
                {"type": "ansible", "playbook_file": "site.yml", "groups": ["web"]},
                {"type": "file", "source": "record.sh", "destination": "/root/record.sh"},
                {
                    "type": "ansible-local",
                    "command": "sh /root/record.sh",
                    "playbook_file": "pb/local.yml",
                    "playbook_dir": "pb",
                    "group_vars": "gv",
                    "role_paths": ["roles/web"],
                    "inventory_groups": ["db"],
                    "extra_arguments": ["-v"],
                    "staging_directory": "/root/staging"
                }
            ]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();

    // Ansible's output is streamed line by line as the build's.
    assert!(
        run.stdout.contains("Executing Ansible: ansible-playbook"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("    fixture: PLAY RECAP")),
        "{}",
        run.stdout
    );

    let root = GuestRoot::open(&scratch.path().join("out/disk.qcow2"));
    assert_eq!(
        root.read("/root/ansible.txt").as_deref(),
        Some("from ansible for fixture\n")
    );
    // ansible-local staged the playbook directory, the vars and the role,
    // and ran the command from the staging directory.
    for (path, expected) in [
        ("/root/staging/local.yml", "- hosts: all\n"),
        ("/root/staging/extra/more.yml", "- hosts: all\n"),
        ("/root/staging/group_vars/all.yml", "answer: 42\n"),
        (
            "/root/staging/roles/web/tasks/main.yml",
            "- debug: msg=hi\n",
        ),
        ("/root/ansible-local.cwd", "/root/staging\n"),
    ] {
        assert_eq!(root.read(path).as_deref(), Some(expected), "{path}");
    }
    let args = root
        .read("/root/ansible-local.args")
        .expect("the command ran");
    let inventory = args
        .trim_end()
        .rsplit(' ')
        .next()
        .expect("an inventory")
        .to_string();
    assert_eq!(
        args,
        format!(
            "/root/staging/local.yml --extra-vars packer_build_name=fixture packer_builder_type=qemu -v -c local -i {inventory}\n"
        )
    );
    assert!(inventory.starts_with("/root/staging/packer-provisioner-ansible-local"));
    assert_eq!(root.read(&inventory).as_deref(), Some("[db]\n127.0.0.1\n"));
    assert_nothing_left(&scratch);
}

#[test]
fn a_failing_task_or_a_missing_ansible_fails_the_build() {
    let scratch = Scratch::new();
    scratch.write(
        "fail.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - raw: echo before-the-failure; exit 3\n",
    );
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [
                fixture_builder(json!({"name": "remote", "output_directory": "out-remote"})),
                fixture_builder(json!({"name": "local", "output_directory": "out-local"}))
            ],
            "provisioners": [
                {"type": "ansible", "playbook_file": "fail.yml", "only": ["remote"]},
                {"type": "ansible-local", "playbook_file": "fail.yml", "only": ["local"]},
                {"type": "shell", "inline": ["echo never-runs"]}
            ]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_failure();
    // ansible-playbook's own status (2: a task failed); provisioners are
    // numbered from 1 by their place in the template, as Packer does.
    run.assert_error_on_stderr(
        "remote: provisioner 1 (ansible): ansible-playbook exited with code 2",
    );
    run.assert_error_on_stderr(
        "local: provisioner 2 (ansible-local): ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook was not found in the guest",
    );
    assert!(run.stdout.contains("before-the-failure"), "{}", run.stdout);
    assert!(!run.all().contains("never-runs"), "{}", run.all());
    assert!(!scratch.path().join("out-remote").exists());
    assert!(!scratch.path().join("out-local").exists());
    assert_nothing_left(&scratch);
}
