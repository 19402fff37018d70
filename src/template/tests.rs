//! Tests of [`super::load`] and [`crate::plan::render_late`] on whole
//! templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::plan::*;

const SHA: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn write(dir: &Path, name: &str, value: &serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    path
}

fn load_in(
    dir: &Path,
    value: serde_json::Value,
    overrides: &Overrides,
) -> Result<Plan, TemplateError> {
    let path = write(dir, "template.json", &value);
    load(&path, overrides)
}

/// `-var-file`s first, then `-var`s.
fn var_overrides(vars: Vec<(String, String)>, var_files: Vec<PathBuf>) -> Overrides {
    let files = var_files.into_iter().map(Override::File);
    let vars = vars.into_iter().map(|(k, v)| Override::Var(k, v));
    Overrides {
        entries: files.chain(vars).collect(),
        ..Default::default()
    }
}

fn load_json(value: serde_json::Value) -> Result<Plan, TemplateError> {
    let dir = tempfile::tempdir().unwrap();
    load_in(dir.path(), value, &Overrides::default())
}

fn problems(value: serde_json::Value) -> Vec<(String, String)> {
    match load_json(value) {
        Err(TemplateError::Invalid { problems, .. }) => {
            problems.into_iter().map(|p| (p.path, p.message)).collect()
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("template was accepted"),
    }
}

fn paths_of(value: serde_json::Value) -> Vec<String> {
    problems(value).into_iter().map(|(p, _)| p).collect()
}

fn qemu(extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({
        "type": "qemu",
        "iso_url": "/images/base.qcow2",
        "iso_checksum": SHA,
        "ssh_username": "root",
    });
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    b
}

fn one_builder(extra: serde_json::Value) -> QemuConfig {
    let plan = load_json(json!({ "builders": [qemu(extra)] })).unwrap();
    plan.builds[0].qemu.clone()
}

#[test]
fn minimal_builder_gets_packer_defaults() {
    let plan = load_json(json!({ "builders": [qemu(json!({}))] })).unwrap();
    assert_eq!(plan.builds.len(), 1);
    let b = &plan.builds[0];
    assert_eq!(b.name, "qemu");
    assert_eq!(b.builder_type, "qemu");
    let q = &b.qemu;
    assert_eq!(
        q.iso_urls,
        vec![Location::Path(PathBuf::from("/images/base.qcow2"))]
    );
    assert_eq!(q.iso_checksum, Checksum::Sha256(SHA[7..].to_string()));
    assert_eq!(q.disk_size_mib, 40960);
    assert_eq!(q.format, DiskFormat::Qcow2);
    assert_eq!(q.disk_interface, "virtio");
    assert_eq!(q.disk_cache, "writeback");
    // Unset: the build disk's own default applies (QemuConfig::discard).
    assert_eq!(q.disk_discard, None);
    assert_eq!(q.disk_detect_zeroes, None);
    assert_eq!(q.accelerator, None);
    assert_eq!(q.cpus, 1);
    assert_eq!(q.memory_mib, 512);
    assert_eq!(q.machine_type, "pc");
    assert_eq!(q.net_device, "virtio-net");
    assert_eq!(q.qemu_binary, "qemu-system-x86_64");
    assert!(q.qemuargs.is_empty());
    assert!(!q.headless && !q.disk_image && !q.use_backing_file && !q.efi_boot);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(q.output_directory, cwd.join("output-qemu"));
    // Shown as Packer shows it: relative, as the default is written.
    assert_eq!(q.output_directory_shown, PathBuf::from("output-qemu"));
    assert_eq!(q.vm_name, "packer-qemu");
    assert_eq!(q.shutdown_timeout, Duration::from_secs(300));
    assert_eq!(q.boot_wait, Duration::from_secs(10));
    assert_eq!((q.host_port_min, q.host_port_max), (2222, 4444));
    let Communicator::Ssh(ssh) = &q.communicator else {
        panic!("expected ssh");
    };
    assert_eq!(ssh.username, "root");
    assert_eq!(ssh.password, None);
    assert_eq!(ssh.timeout, Duration::from_secs(300));
    assert_eq!(ssh.port, 22);
    assert_eq!(ssh.handshake_attempts, 10);
    assert!(!ssh.pty);
    assert_eq!(ssh.temporary_key_pair_type, KeyPairType::Ed25519);
    assert!(b.provisioners.is_empty() && b.post_processors.is_empty());
    assert_eq!(plan.description, None);
}

#[test]
fn weak_typing_of_numbers_and_bools() {
    let plan = load_json(json!({
        "variables": { "mem": "1024", "cpus": "2" },
        "builders": [qemu(json!({
            "memory": "{{user `mem`}}",
            "cpus": "{{ user `cpus` }}",
            "headless": "true",
            "disk_image": "1",
            "skip_compaction": 1,
            "use_backing_file": true,
            "ssh_port": "2200",
            "ssh_pty": "0",
        }))]
    }))
    .unwrap();
    let q = &plan.builds[0].qemu;
    assert_eq!(q.memory_mib, 1024);
    assert_eq!(q.cpus, 2);
    assert!(q.headless && q.disk_image && q.skip_compaction && q.use_backing_file);
    let Communicator::Ssh(ssh) = &q.communicator else {
        panic!("expected ssh");
    };
    assert_eq!(ssh.port, 2200);
    assert!(!ssh.pty);
}

#[test]
fn wrong_types_are_reported_with_paths() {
    let got = problems(json!({
        "builders": [qemu(json!({
            "memory": "lots",
            "headless": "yes",
            "cpus": [2],
            "qemuargs": [["-m", 5, {}]],
        }))]
    }));
    assert_eq!(
        got,
        vec![
            (
                "builders[0].cpus".to_string(),
                "expected an integer, got an array".to_string()
            ),
            (
                "builders[0].memory".to_string(),
                "expected an integer, got \"lots\"".to_string()
            ),
            (
                "builders[0].qemuargs[0][2]".to_string(),
                "expected a string, got an object".to_string()
            ),
            (
                "builders[0].headless".to_string(),
                "expected a bool (true, false, \"true\", \"false\", \"1\" or \"0\"), got \"yes\""
                    .to_string()
            ),
        ]
    );
}

#[test]
fn disk_size_forms() {
    assert_eq!(
        one_builder(json!({"disk_size": "10G"})).disk_size_mib,
        10240
    );
    assert_eq!(
        one_builder(json!({"disk_size": "10240M"})).disk_size_mib,
        10240
    );
    assert_eq!(one_builder(json!({"disk_size": 2048})).disk_size_mib, 2048);
    assert_eq!(
        one_builder(json!({"disk_size": "1T"})).disk_size_mib,
        1_048_576
    );
    assert_eq!(
        problems(json!({"builders": [qemu(json!({"disk_size": "ten"}))]})),
        vec![(
            "builders[0].disk_size".to_string(),
            "expected a size such as \"10G\", \"10240M\" or a number of MiB, got \"ten\""
                .to_string()
        )]
    );
}

#[test]
fn options_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "k").unwrap();
    let cd = dir.path().join("user-data");
    std::fs::write(&cd, "u").unwrap();
    let plan = load_in(
        dir.path(),
        json!({
            "description": "d",
            "min_packer_version": "1.6.0",
            "_comment": "ignored",
            "builders": [qemu(json!({
                "name": "web",
                "iso_url": null,
                "iso_urls": ["file:///img/a.img", "rel/b.img"],
                "iso_checksum": "none",
                "format": "raw",
                "disk_compression": true,
                "accelerator": "kvm",
                "qemuargs": [["-netdev", "user,hostfwd=tcp::{{ .SSHHostPort }}-:22,id=n{{build_name}}"]],
                "cd_files": [cd.to_str().unwrap()],
                "cd_content": {"meta-data": "id: {{build_name}}"},
                "cd_label": "cidata",
                "output_directory": "/out/{{build_name}}",
                "vm_name": "disk.img",
                "shutdown_command": "poweroff",
                "shutdown_timeout": "1h30m",
                "boot_wait": "300ms",
                "boot_command": [],
                "host_port_min": 3000,
                "host_port_max": "3000",
                "ssh_password": "pw",
                "ssh_private_key_file": key.to_str().unwrap(),
                "ssh_wait_timeout": "20m",
                "ssh_handshake_attempts": 3,
                "temporary_key_pair_type": "rsa",
                "vnc_port_min": 5900,
            }))]
        }),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(plan.description.as_deref(), Some("d"));
    let b = &plan.builds[0];
    assert_eq!(b.name, "web");
    let q = &b.qemu;
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        q.iso_urls,
        vec![
            Location::Path(PathBuf::from("/img/a.img")),
            Location::Path(cwd.join("rel/b.img"))
        ]
    );
    assert_eq!(q.iso_checksum, Checksum::None);
    assert_eq!(q.format, DiskFormat::Raw);
    // Packer: compaction and compression only apply to qcow2.
    assert!(q.skip_compaction && !q.disk_compression);
    assert_eq!(q.accelerator, Some(Accelerator::Kvm));
    assert_eq!(
        q.qemuargs,
        vec![vec![
            "-netdev".to_string(),
            "user,hostfwd=tcp::{{ .SSHHostPort }}-:22,id=nweb".to_string()
        ]]
    );
    assert_eq!(q.cd_files, vec![cd]);
    assert_eq!(
        q.cd_content.get("meta-data").map(String::as_str),
        Some("id: web")
    );
    assert_eq!(q.cd_label.as_deref(), Some("cidata"));
    assert_eq!(q.output_directory, PathBuf::from("/out/web"));
    assert_eq!(q.vm_name, "disk.img");
    assert_eq!(q.shutdown_command.as_deref(), Some("poweroff"));
    assert_eq!(q.shutdown_timeout, Duration::from_secs(5400));
    assert_eq!(q.boot_wait, Duration::from_millis(300));
    assert_eq!((q.host_port_min, q.host_port_max), (3000, 3000));
    let Communicator::Ssh(ssh) = &q.communicator else {
        panic!("expected ssh");
    };
    assert_eq!(ssh.password.as_deref(), Some("pw"));
    assert_eq!(ssh.private_key_file.as_deref(), Some(key.as_path()));
    assert_eq!(ssh.timeout, Duration::from_secs(1200));
    assert_eq!(ssh.handshake_attempts, 3);
    assert_eq!(ssh.temporary_key_pair_type, KeyPairType::Rsa);
}

#[test]
fn communicator_none_needs_no_username() {
    let q = one_builder(json!({"communicator": "none", "ssh_username": null}));
    assert!(matches!(q.communicator, Communicator::None));
    assert_eq!(
        problems(json!({"builders": [qemu(json!({"ssh_username": null}))]})),
        vec![(
            "builders[0].ssh_username".to_string(),
            "is required: the user to connect as over SSH".to_string()
        )]
    );
    assert_eq!(
        paths_of(json!({"builders": [qemu(json!({"communicator": "winrm"}))]})),
        vec!["builders[0].communicator"]
    );
}

#[test]
fn unsupported_source_schemes_and_bad_boot_keys_rejected() {
    let got = problems(json!({"builders": [qemu(json!({
        "iso_url": "s3::https://bucket/img.qcow2",
        "boot_command": ["<entre>"],
    }))]}));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "builders[0].iso_url");
    assert!(got[0].1.starts_with("unsupported source"), "{}", got[0].1);
    assert_eq!(got[1].0, "builders[0].boot_command[0]");
    assert!(got[1].1.starts_with("unknown key <entre>"));
}

#[test]
fn remote_sources_and_target_path() {
    let q = one_builder(json!({
        "iso_url": "https://cloud.example/img.qcow2",
        "iso_checksum": "file:https://cloud.example/SHA256SUMS",
        "iso_target_path": "/cache/img.qcow2",
    }));
    assert_eq!(
        q.iso_urls,
        vec![Location::Url(
            url::Url::parse("https://cloud.example/img.qcow2").unwrap()
        )]
    );
    assert_eq!(
        q.iso_checksum,
        Checksum::File(Location::Url(
            url::Url::parse("https://cloud.example/SHA256SUMS").unwrap()
        ))
    );
    assert_eq!(q.iso_target_path, Some(PathBuf::from("/cache/img.qcow2")));
}

#[test]
fn iso_checksum_forms() {
    let md5 = "d41d8cd98f00b204e9800998ecf8427e";
    // A rendered `iso_checksum_type` of "none" leaves its digest behind.
    let plan = load_json(json!({
        "variables": {"sum_type": "none"},
        "builders": [qemu(json!({"iso_checksum_type": "{{user `sum_type`}}", "iso_checksum": md5}))]
    }))
    .unwrap();
    assert_eq!(plan.builds[0].qemu.iso_checksum, Checksum::None);
    assert_eq!(
        one_builder(json!({"iso_checksum": md5})).iso_checksum,
        Checksum::Md5(md5.into())
    );
    assert_eq!(
        one_builder(json!({"iso_checksum": format!("sha1:{}", "a".repeat(40))})).iso_checksum,
        Checksum::Sha1("a".repeat(40))
    );
    let got = problems(json!({"builders": [qemu(json!({"iso_checksum": "file:ftp://h/SUMS"}))]}));
    assert_eq!(got[0].0, "builders[0].iso_checksum");
    assert!(got[0].1.contains("unsupported source"));
    assert_eq!(
        problems(json!({"builders": [qemu(json!({"iso_urls": ["/b.img"]}))]})),
        vec![(
            "builders[0].iso_urls".to_string(),
            "only one of iso_url or iso_urls may be set".to_string()
        )]
    );
    assert_eq!(
        paths_of(json!({"builders": [qemu(json!({"iso_checksum": null, "iso_url": null}))]})),
        vec!["builders[0].iso_url", "builders[0].iso_checksum"]
    );
}

#[test]
fn unknown_keys_and_several_problems_at_once() {
    let got = problems(json!({
        "builderz": [],
        "tests": {},
        "_comment": "fine",
        "builders": [
            qemu(json!({"disk_sise": "10G", "accelerator": "hvf", "disk_interface": "nvme"})),
            {"type": "virtualboxx-iso"},
        ],
        "provisioners": [{"type": "shell", "inline": ["true"], "inlin": []}],
    }));
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "builderz",
            "builders[1].type",
            "tests",
            "builders[0].disk_interface",
            "builders[0].accelerator",
            "builders[0].disk_sise",
            "provisioners[0].inlin",
        ]
    );
    assert_eq!(got[0].1, "unknown top-level key (did you mean builders?)");
    assert_eq!(
        got[1].1,
        "unknown builder type \"virtualboxx-iso\" (did you mean virtualbox-iso?)"
    );
    assert!(
        got[2].1.starts_with("expected an array of checks"),
        "{}",
        got[2].1
    );
    assert!(got[4].1.contains("not supported by kiln on Linux"));
    assert_eq!(got[5].1, "unknown key (did you mean disk_size?)");
    assert_eq!(got[6].1, "unknown key (did you mean inline?)");
}

#[test]
fn bad_json_has_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(&path, "{\n  \"builders\": [\n    ,\n}").unwrap();
    match load(&path, &Overrides::default()) {
        Err(TemplateError::Json { line, column, .. }) => assert_eq!((line, column), (3, 5)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        load(&dir.path().join("missing.json"), &Overrides::default()),
        Err(TemplateError::Read { .. })
    ));
}

#[test]
fn duplicate_builder_names() {
    assert_eq!(
        problems(json!({"builders": [qemu(json!({})), qemu(json!({}))]})),
        vec![(
            "builders[1].name".to_string(),
            "duplicate build name \"qemu\": give each builder a distinct name".to_string()
        )]
    );
}

#[test]
fn var_and_var_file_apply_in_command_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "v.json", &json!({"a": "file"}));
    let template = json!({
        "variables": {"a": "default"},
        "builders": [qemu(json!({"vm_name": "{{user `a`}}"}))]
    });
    let var = |v: &str| Override::Var("a".into(), v.into());
    let vm_name = |entries: Vec<Override>| {
        load_in(
            dir.path(),
            template.clone(),
            &Overrides {
                entries,
                ..Default::default()
            },
        )
        .unwrap()
        .builds[0]
            .qemu
            .vm_name
            .clone()
    };
    assert_eq!(
        vm_name(vec![var("cli"), Override::File(file.clone())]),
        "file"
    );
    assert_eq!(
        vm_name(vec![Override::File(file.clone()), var("cli")]),
        "cli"
    );
}

#[test]
fn variable_precedence_and_sensitive_values() {
    let dir = tempfile::tempdir().unwrap();
    let f1 = write(
        dir.path(),
        "a.json",
        &json!({"a": "file1", "b": "file1", "c": "file1"}),
    );
    let f2 = write(dir.path(), "b.json", &json!({"b": "file2", "c": "file2"}));
    let cli_vars: Vec<(String, String)> =
        vec![("c".into(), "cli1".into()), ("c".into(), "cli2".into())];
    let plan = load_in(
        dir.path(),
        json!({
            "variables": {
                "a": "default", "b": "default", "c": "default", "d": "default",
                "pw": null, "derived": "{{user `a`}}-{{ user `later` }}", "later": "L",
                "empty": ""
            },
            "sensitive-variables": ["pw", "empty"],
            "builders": [qemu(json!({"ssh_password": "{{user `pw`}}", "vm_name": "{{user `derived`}}"}))]
        }),
        &var_overrides(
            [cli_vars, vec![("pw".into(), "s3cret".into())]].concat(),
            vec![f1.clone(), f2.clone()],
        ),
    )
    .unwrap();
    let value = |n: &str| {
        plan.variables
            .iter()
            .find(|v| v.name == n)
            .map(|v| v.value.clone())
            .unwrap()
    };
    assert_eq!(value("a"), "file1");
    assert_eq!(value("b"), "file2");
    assert_eq!(value("c"), "cli2");
    assert_eq!(value("d"), "default");
    assert_eq!(value("derived"), "file1-L");
    assert_eq!(plan.builds[0].qemu.vm_name, "file1-L");
    assert_eq!(plan.sensitive_values, vec!["s3cret".to_string()]);
    let pw = plan.variables.iter().find(|v| v.name == "pw").unwrap();
    assert_eq!(
        pw,
        &VariableInfo {
            name: "pw".into(),
            value: "s3cret".into(),
            sensitive: true,
            required: true
        }
    );
}

#[test]
fn required_variable_missing() {
    assert_eq!(
        problems(json!({
            "variables": {"pw": null, "derived": "x{{user `pw`}}"},
            "builders": [qemu(json!({"iso_url": "{{user `derived`}}", "ssh_password": "{{user `pw`}}"}))]
        })),
        vec![(
            "variables.pw".to_string(),
            "required variable not set: give it with -var or -var-file".to_string()
        )]
    );
}

#[test]
fn env_only_in_variables() {
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("KILN_TEMPLATE_TEST_HOME", "/home/k") };
    let plan = load_json(json!({
        "variables": {"home": "{{env `KILN_TEMPLATE_TEST_HOME`}}"},
        "builders": [qemu(json!({"vm_name": "{{user `home`}}"}))]
    }))
    .unwrap();
    assert_eq!(plan.builds[0].qemu.vm_name, "/home/k");
    assert_eq!(
        problems(json!({"builders": [qemu(json!({"vm_name": "{{env `HOME`}}"}))]})),
        vec![(
            "builders[0].vm_name".to_string(),
            "env is only allowed in the default values of the variables section".to_string()
        )]
    );
    assert_eq!(
        problems(json!({"builders": [qemu(json!({"vm_name": "{{ nope }}"}))]})),
        vec![(
            "builders[0].vm_name".to_string(),
            "function \"nope\" is not defined".to_string()
        )]
    );
}

#[test]
fn template_functions_in_a_template() {
    let dir = tempfile::tempdir().unwrap();
    let plan = load_in(
        dir.path(),
        json!({"builders": [qemu(json!({
            "name": "Web Server",
            "vm_name": "{{ build_name | clean_resource_name }}-{{build_type}}-{{ split `a-b-c` `-` 1 }}",
            "shutdown_command": "{{template_dir}}",
            "cd_label": "{{ timestamp }}/{{ timestamp }}",
        }))]}),
        &Overrides::default(),
    )
    .unwrap();
    let q = &plan.builds[0].qemu;
    assert_eq!(q.vm_name, "web-server-qemu-b");
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        canonical(Path::new(q.shutdown_command.as_deref().unwrap())),
        canonical(dir.path())
    );
    let label = q.cd_label.clone().unwrap();
    let (a, b) = label.split_once('/').unwrap();
    assert_eq!(a, b);
}

fn script(dir: &Path) -> PathBuf {
    let p = dir.join("setup.sh");
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    p
}

/// The provisioners of a one-build template whose provisioners are
/// `provisioners`, loaded in `dir`.
fn provisioners_in(dir: &Path, provisioners: serde_json::Value) -> Vec<ProvisionerSpec> {
    let plan = load_in(
        dir,
        json!({"builders": [qemu(json!({}))], "provisioners": provisioners}),
        &Overrides::default(),
    )
    .unwrap();
    plan.builds.into_iter().next().unwrap().provisioners
}

#[test]
fn shell_provisioners_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path());
    let provs = provisioners_in(
        dir.path(),
        json!([
            {"type": "shell", "inline": ["echo {{build_name}}", "echo {{ .Path }}"],
             "environment_vars": ["A=1", "B=x=y"], "env": {"Z": "z", "C": "c"},
             "max_retries": "3", "pause_before": "10s", "timeout": "5m"},
            {"type": "shell", "scripts": [s.to_str().unwrap()], "remote_path": "/var/tmp/run.sh",
             "valid_exit_codes": [0, "2"], "expect_disconnect": "true"},
        ]),
    );
    assert_eq!(provs.len(), 2);
    let ProvisionerKind::Shell(sh) = &provs[0].kind else {
        panic!("shell");
    };
    assert_eq!(
        sh.source,
        ShellSource::Inline(vec!["echo qemu".into(), "echo {{ .Path }}".into()])
    );
    assert_eq!(
        sh.environment,
        vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x=y".to_string()),
            ("C".to_string(), "c".to_string()),
            ("Z".to_string(), "z".to_string()),
        ]
    );
    assert_eq!(
        sh.execute_command,
        "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}"
    );
    assert_eq!(sh.inline_shebang, "/bin/sh -e");
    assert_eq!(sh.valid_exit_codes, vec![0]);
    assert_eq!(sh.remote_folder, "/tmp");
    assert_eq!(sh.remote_file, None);
    assert_eq!(sh.start_retry_timeout, Duration::from_secs(300));
    assert_eq!(provs[0].common.max_retries, 3);
    assert_eq!(provs[0].common.pause_before, Duration::from_secs(10));
    assert_eq!(provs[0].common.timeout, Duration::from_secs(300));
    assert_eq!((provs[0].type_name.as_str(), provs[0].index), ("shell", 0));

    let ProvisionerKind::Shell(sh) = &provs[1].kind else {
        panic!("shell");
    };
    assert_eq!(sh.source, ShellSource::Scripts(vec![s.clone()]));
    assert_eq!(sh.remote_folder, "/var/tmp");
    assert_eq!(sh.remote_file.as_deref(), Some("run.sh"));
    assert_eq!(sh.valid_exit_codes, vec![0, 2]);
    assert!(sh.expect_disconnect);
    assert_eq!(provs[1].index, 1);
}

#[test]
fn file_provisioners_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let provs = provisioners_in(
        dir.path(),
        json!([
            {"type": "file", "content": "hi", "destination": "/etc/motd"},
            {"type": "file", "source": format!("{}/", dir.path().display()), "destination": "/srv"},
            {"type": "file", "sources": ["/remote/a"], "destination": "out/", "direction": "download"},
            {"type": "file", "source": "/not/there", "destination": "/x", "generated": true},
        ]),
    );
    assert_eq!(provs.len(), 4);
    let ProvisionerKind::File(f) = &provs[0].kind else {
        panic!("file");
    };
    assert_eq!(f.source, FileSource::Content("hi".into()));
    assert_eq!(f.direction, Direction::Upload);
    let ProvisionerKind::File(f) = &provs[1].kind else {
        panic!("file");
    };
    assert_eq!(
        f.source,
        FileSource::Paths(vec![format!("{}/", dir.path().display())])
    );
    let ProvisionerKind::File(f) = &provs[2].kind else {
        panic!("file");
    };
    assert_eq!(f.source, FileSource::Paths(vec!["/remote/a".into()]));
    assert_eq!(
        (f.direction, f.destination.as_str()),
        (Direction::Download, "out/")
    );
    let ProvisionerKind::File(f) = &provs[3].kind else {
        panic!("file");
    };
    assert!(f.generated);
}

#[test]
fn shell_local_provisioners_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let provs = provisioners_in(
        dir.path(),
        json!([
            {"type": "shell-local", "command": "echo hi"},
            {"type": "shell-local", "inline": ["a"], "execute_command": ["bash", "-c", "{{.Script}}"]},
        ]),
    );
    assert_eq!(provs.len(), 2);
    let ProvisionerKind::ShellLocal(l) = &provs[0].kind else {
        panic!("shell-local");
    };
    assert_eq!(l.source, ShellLocalSource::Command("echo hi".into()));
    assert_eq!(
        l.execute_command,
        vec!["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]
    );
    assert_eq!(l.inline_shebang, "/bin/sh -e");
    assert_eq!(l.valid_exit_codes, vec![0]);
    let ProvisionerKind::ShellLocal(l) = &provs[1].kind else {
        panic!("shell-local");
    };
    assert_eq!(l.execute_command, vec!["bash", "-c", "{{.Script}}"]);
}

#[test]
fn shell_local_post_processor_takes_packers_keys() {
    let plan = load_json(json!({
        "builders": [qemu(json!({}))],
        "post-processors": [{
            "type": "shell-local",
            "inline": ["echo $PACKER_BUILD_NAME"],
            "execute_command": "{{.Vars}} bash {{.Script}}",
            "environment_vars": ["A=1"],
            "only_on": ["linux"],
            "keep_input_artifact": false
        }]
    }))
    .unwrap();
    let PostProcessorSpec::ShellLocal(l) = &plan.builds[0].post_processors[0][0] else {
        panic!("shell-local");
    };
    // One string is a command line for sh, as Packer takes it.
    assert_eq!(
        l.execute_command,
        vec!["sh", "-c", "{{.Vars}} bash {{.Script}}"]
    );
    assert_eq!(l.environment, vec![("A".to_string(), "1".to_string())]);
    assert_eq!(l.only_on, vec!["linux"]);
}

#[test]
fn ansible_provisioners_take_packers_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.yml"), "- hosts: all\n").unwrap();
    std::fs::create_dir(dir.path().join("roles")).unwrap();
    let provs = provisioners_in(
        dir.path(),
        json!([
            {
                "type": "ansible",
                "playbook_file": dir.path().join("site.yml"),
                "user": "deploy",
                "groups": ["web"],
                "ansible_env_vars": ["ANSIBLE_NOCOLOR=1"],
                "extra_arguments": ["-v"],
                "use_sftp": true,
                "local_port": 2200,
                "sftp_command": "/usr/lib/sftp-server -e"
            },
            {"type": "ansible-local", "playbook_file": dir.path().join("site.yml"), "role_paths": [dir.path().join("roles")]},
        ]),
    );
    let ProvisionerKind::Ansible(a) = &provs[0].kind else {
        panic!("ansible");
    };
    assert_eq!(a.playbook_file, dir.path().join("site.yml"));
    assert_eq!(a.command, "ansible-playbook");
    assert_eq!(a.host_alias, "default");
    assert_eq!(a.user.as_deref(), Some("deploy"));
    assert_eq!(
        a.env_vars,
        vec![("ANSIBLE_NOCOLOR".to_string(), "1".to_string())]
    );
    assert!(a.use_sftp);
    let ProvisionerKind::AnsibleLocal(l) = &provs[1].kind else {
        panic!("ansible-local");
    };
    assert_eq!(
        l.playbooks,
        AnsibleLocalPlaybooks::File(dir.path().join("site.yml"))
    );
    assert_eq!(l.role_paths, vec![dir.path().join("roles")]);
    assert!(
        l.staging_directory
            .starts_with("/tmp/packer-provisioner-ansible-local/"),
        "{}",
        l.staging_directory
    );
    assert_eq!(
        l.command,
        "ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook"
    );
}

#[test]
fn provisioner_problems() {
    let got = problems(json!({
        "builders": [qemu(json!({}))],
        "provisioners": [
            {"type": "shell", "inline": ["a"], "script": "x.sh"},
            {"type": "shell"},
            {"type": "shell", "scripts": ["/nope/a.sh"]},
            {"type": "file", "source": "/nope/file"},
            {"type": "shell", "inline": ["a", {}], "environment_vars": ["NOEQ"]},
            {"type": "ansible"},
            {"type": "ansible", "playbook_file": "/nope/site.yml", "galaxy_file": "/nope"},
            {"type": "ansible-local", "playbook_file": "/nope/site.yml", "role_paths": ["/nope/r"]},
            {"type": "puppet-masterless"},
        ]
    }));
    assert_eq!(
        got,
        vec![
            (
                "provisioners[0]".to_string(),
                "only one of inline, script, scripts may be set, got inline and script".to_string()
            ),
            (
                "provisioners[1]".to_string(),
                "one of inline, script, scripts is required".to_string()
            ),
            (
                "provisioners[2].scripts[0]".to_string(),
                "script not found: /nope/a.sh".to_string()
            ),
            (
                "provisioners[3].destination".to_string(),
                "is required: where to put the file".to_string()
            ),
            (
                "provisioners[3].source".to_string(),
                "file not found: /nope/file".to_string()
            ),
            (
                "provisioners[4].inline[1]".to_string(),
                "expected a string, got an object".to_string()
            ),
            (
                "provisioners[4].environment_vars[0]".to_string(),
                "expected KEY=VALUE, got \"NOEQ\"".to_string()
            ),
            (
                "provisioners[5].playbook_file".to_string(),
                "is required: the playbook to run".to_string()
            ),
            (
                "provisioners[6].playbook_file".to_string(),
                "file not found: /nope/site.yml".to_string()
            ),
            (
                "provisioners[6].galaxy_file".to_string(),
                "file not found: /nope".to_string()
            ),
            (
                "provisioners[7].playbook_file".to_string(),
                "file not found: /nope/site.yml".to_string()
            ),
            (
                "provisioners[7].role_paths[0]".to_string(),
                "directory not found: /nope/r".to_string()
            ),
            (
                "provisioners[8].type".to_string(),
                "the puppet-masterless provisioner is not supported by kiln yet: install and run \
                 the tool from a shell provisioner (upload its files with a file provisioner)"
                    .to_string()
            ),
        ]
    );
}

#[test]
fn only_except_override() {
    let plan = load_json(json!({
        "builders": [qemu(json!({"name": "a"})), qemu(json!({"name": "b"}))],
        "provisioners": [
            {"type": "shell", "inline": ["only-a"], "only": ["a"]},
            {"type": "shell", "inline": ["not-a"], "except": ["a"]},
            {"type": "shell", "inline": ["base"], "override": {"b": {"inline": ["for-b"], "max_retries": 2}}},
        ],
        "post-processors": [
            {"type": "manifest", "only": ["b"]},
            [{"type": "checksum", "except": ["b"]}, "manifest"],
        ]
    }))
    .unwrap();
    let inline = |b: usize| -> Vec<Vec<String>> {
        plan.builds[b]
            .provisioners
            .iter()
            .map(|p| match &p.kind {
                ProvisionerKind::Shell(ShellConfig {
                    source: ShellSource::Inline(l),
                    ..
                }) => l.clone(),
                _ => panic!("inline"),
            })
            .collect()
    };
    assert_eq!(inline(0), vec![vec!["only-a"], vec!["base"]]);
    assert_eq!(inline(1), vec![vec!["not-a"], vec!["for-b"]]);
    assert_eq!(plan.builds[1].provisioners[1].common.max_retries, 2);
    assert_eq!(plan.builds[1].provisioners[1].index, 2);
    let kinds = |b: usize| -> Vec<Vec<&'static str>> {
        plan.builds[b]
            .post_processors
            .iter()
            .map(|chain| chain.iter().map(PostProcessorSpec::type_name).collect())
            .collect()
    };
    assert_eq!(kinds(0), vec![vec!["checksum", "manifest"]]);
    assert_eq!(kinds(1), vec![vec!["manifest"], vec!["manifest"]]);

    assert_eq!(
        problems(json!({
            "builders": [qemu(json!({"name": "a"}))],
            "provisioners": [
                {"type": "shell", "inline": ["x"], "only": ["zz"]},
                {"type": "shell", "inline": ["x"], "override": {"qq": {}}},
            ],
            "post-processors": [{"type": "checksum", "except": ["b"]}],
        })),
        vec![
            (
                "provisioners[0].only[0]".to_string(),
                "no build is named \"zz\" (builds: a)".to_string()
            ),
            (
                "provisioners[1].override.qq".to_string(),
                "no build is named \"qq\" (builds: a)".to_string()
            ),
            (
                "post-processors[0].except[0]".to_string(),
                "no build is named \"b\" (builds: a)".to_string()
            ),
        ]
    );
}

#[test]
fn post_processor_chains_and_defaults() {
    let plan = load_json(json!({
        "builders": [qemu(json!({}))],
        "post-processors": [
            "checksum",
            [
                {"type": "checksum", "checksum_types": ["sha256", "sha512"], "output": "{{build_name}}.{{.ChecksumType}}", "keep_input_artifact": "true"},
                {"type": "manifest", "output": "/m.json", "strip_path": true, "custom_data": {"k": "{{build_type}}"}}
            ]
        ]
    }))
    .unwrap();
    let chains = &plan.builds[0].post_processors;
    assert_eq!(chains.len(), 2);
    let PostProcessorSpec::Checksum(c) = &chains[0][0] else {
        panic!("checksum");
    };
    assert_eq!(c.checksum_types, vec![ChecksumType::Md5]);
    assert_eq!(
        c.output,
        "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum"
    );
    assert!(!c.keep_input_artifact);
    let PostProcessorSpec::Checksum(c) = &chains[1][0] else {
        panic!("checksum");
    };
    assert_eq!(
        c.checksum_types,
        vec![ChecksumType::Sha256, ChecksumType::Sha512]
    );
    assert_eq!(c.output, "qemu.{{.ChecksumType}}");
    assert!(c.keep_input_artifact);
    let PostProcessorSpec::Manifest(m) = &chains[1][1] else {
        panic!("manifest");
    };
    assert_eq!(m.output, PathBuf::from("/m.json"));
    assert!(m.strip_path && !m.strip_time && !m.keep_input_artifact);
    assert_eq!(m.custom_data.get("k").map(String::as_str), Some("qemu"));

    let default_manifest =
        load_json(json!({"builders": [qemu(json!({}))], "post-processors": ["manifest"]})).unwrap();
    let PostProcessorSpec::Manifest(m) = &default_manifest.builds[0].post_processors[0][0] else {
        panic!("manifest");
    };
    assert_eq!(
        m.output,
        std::env::current_dir()
            .unwrap()
            .join("packer-manifest.json")
    );

    assert_eq!(
        problems(json!({
            "builders": [qemu(json!({}))],
            "post-processors": [["checksum", "compress"], {"type": "docker-push"}, 5, {"type": "checksum", "outptu": "x"}]
        })),
        vec![
            ("post-processors[2]".to_string(), "expected a post-processor type name, an object, or an array of those, got a number".to_string()),
            ("post-processors[1].type".to_string(), "the docker-push post-processor is not supported by kiln yet: it post-processes docker builds, which kiln skips; limit it to them with \"only\", or remove it".to_string()),
            ("post-processors[3].outptu".to_string(), "unknown key (did you mean output?)".to_string()),
        ]
    );
}

#[test]
fn render_late_fills_known_references() {
    let values = [("Path", "/tmp/script.sh"), ("Vars", "A=1")];
    assert_eq!(
        render_late("chmod +x {{ .Path }}; {{ .Vars }} {{.Path}}", &values),
        "chmod +x /tmp/script.sh; A=1 /tmp/script.sh"
    );
    assert_eq!(
        render_late("{{.Path}} {{ .SSHHostPort }}", &values),
        "/tmp/script.sh {{ .SSHHostPort }}"
    );
    assert_eq!(
        render_late("{{ .Path | upper }}", &values),
        "/TMP/SCRIPT.SH"
    );
    assert_eq!(render_late("no refs", &values), "no refs");
    assert_eq!(render_late("broken {{ .Path", &values), "broken {{ .Path");
    assert_eq!(
        render_late("{{ env `X` }} {{.Path}}", &values),
        "{{ env `X` }} {{.Path}}"
    );
}

#[test]
fn command_line_values_are_rendered_and_undeclared_ones_accepted() {
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("KILN_TEMPLATE_TEST_CLI", "from-env") };
    let dir = tempfile::tempdir().unwrap();
    let plan = load_in(
        dir.path(),
        json!({
            "variables": {"a": "x"},
            "builders": [qemu(json!({"vm_name": "{{user `a`}}-{{user `extra`}}"}))]
        }),
        &var_overrides(
            vec![
                ("a".into(), "{{env `KILN_TEMPLATE_TEST_CLI`}}".into()),
                ("extra".into(), "e".into()),
            ],
            vec![],
        ),
    )
    .unwrap();
    assert_eq!(plan.builds[0].qemu.vm_name, "from-env-e");
    assert_eq!(plan.variables.len(), 1);
    assert_eq!(plan.variables[0].value, "from-env");
}

#[test]
fn variable_cycles_and_unknown_references() {
    assert_eq!(
        problems(json!({
            "variables": {"a": "{{user `b`}}", "b": "{{user `a`}}", "c": "{{user `zz`}}"},
            "builders": [qemu(json!({}))]
        })),
        vec![
            (
                "variables.a".to_string(),
                "is part of a cycle of variables: a -> b -> a".to_string()
            ),
            (
                "variables.c".to_string(),
                "refers to variable \"zz\", which is not declared or not set".to_string()
            ),
        ]
    );
    // A variable that waits on a cycle fails with it, without a message of
    // its own; one that refers to itself is a cycle of one; a name computed
    // at render time is followed too.
    assert_eq!(
        problems(json!({
            "variables": {
                "d": "{{user `e`}}", "e": "x{{user `f`}}", "f": "{{user `e`}}",
                "s": "{{user `s`}}",
                "g": "{{user (lower `H`)}}", "h": "{{user `g`}}"
            },
            "builders": [qemu(json!({}))]
        })),
        vec![
            (
                "variables.e".to_string(),
                "is part of a cycle of variables: e -> f -> e".to_string()
            ),
            (
                "variables.g".to_string(),
                "is part of a cycle of variables: g -> h -> g".to_string()
            ),
            (
                "variables.s".to_string(),
                "is part of a cycle of variables: s -> s".to_string()
            ),
        ]
    );
    // Outside the variables section, Packer renders an unknown variable as
    // the empty string.
    let plan =
        load_json(json!({"builders": [qemu(json!({"vm_name": "a{{user `nope`}}b"}))]})).unwrap();
    assert_eq!(plan.builds[0].qemu.vm_name, "ab");
}

#[test]
fn var_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ nope").unwrap();
    let tpl = write(
        dir.path(),
        "t.json",
        &json!({"builders": [qemu(json!({}))]}),
    );
    let overrides = var_overrides(vec![], vec![bad.clone()]);
    match load(&tpl, &overrides) {
        Err(TemplateError::Json { path, line, .. }) => {
            assert_eq!((path, line), (bad, 1));
        }
        other => panic!("unexpected {other:?}"),
    }
    let list = write(dir.path(), "list.json", &json!({"a": ["x"]}));
    let overrides = var_overrides(vec![], vec![list.clone()]);
    match load(&tpl, &overrides) {
        Err(TemplateError::Invalid { problems, .. }) => assert_eq!(
            problems,
            vec![Problem {
                path: format!("-var-file {}: a", list.display()),
                message: "expected a string, got an array".into()
            }]
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn var_file_null_sets_the_empty_string() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = write(
        dir.path(),
        "t.json",
        &json!({
            "variables": {"required": null, "d": "default"},
            "builders": [qemu(json!({"vm_name": "x{{user `required`}}{{user `d`}}y"}))]
        }),
    );
    let nulls = write(
        dir.path(),
        "nulls.json",
        &json!({"required": null, "d": null, "undeclared": null}),
    );
    let plan = load(&tpl, &var_overrides(vec![], vec![nulls])).unwrap();
    assert_eq!(plan.builds[0].qemu.vm_name, "xy");
}

#[test]
fn gce_import_impersonates_as_packer_does() {
    let plan = load_json(json!({
        "builders": [qemu(json!({}))],
        "post-processors": [
            {"type": "googlecompute-import", "project_id": "p", "bucket": "b", "image_name": "img-1",
             "impersonate_service_account": "deployer@p.iam.gserviceaccount.com"},
            {"type": "googlecompute-import", "project_id": "p", "bucket": "b", "image_name": "img-2"}
        ]
    }))
    .unwrap();
    let chains = &plan.builds[0].post_processors;
    let accounts: Vec<_> = chains
        .iter()
        .map(|chain| match &chain[0] {
            PostProcessorSpec::GceImport(gce) => gce.impersonate_service_account.clone(),
            _ => panic!("googlecompute-import"),
        })
        .collect();
    assert_eq!(
        accounts,
        [Some("deployer@p.iam.gserviceaccount.com".to_string()), None]
    );
}

#[test]
fn gce_import_and_compress_defaults() {
    let plan = load_json(json!({
        "builders": [qemu(json!({}))],
        "post-processors": [
            {"type": "googlecompute-import", "project_id": "p", "bucket": "b", "image_name": "img-1",
             "image_labels": {"team": "infra"}},
            "compress"
        ]
    }))
    .unwrap();
    let chains = &plan.builds[0].post_processors;
    let PostProcessorSpec::GceImport(gce) = &chains[0][0] else {
        panic!("googlecompute-import");
    };
    assert_eq!(gce.project_id, "p");
    assert!(
        gce.gcs_object_name.starts_with("packer-import-"),
        "{}",
        gce.gcs_object_name
    );
    assert!(gce.gcs_object_name.ends_with(".tar.gz"));
    assert_eq!(
        gce.image_create_timeout,
        std::time::Duration::from_secs(1800)
    );
    assert_eq!(gce.compression_level.get(), 6);
    assert!(!gce.keep_input_artifact && !gce.skip_clean);
    let PostProcessorSpec::Compress(compress) = &chains[1][0] else {
        panic!("compress");
    };
    assert_eq!(
        compress.output,
        "packer_{{.BuildName}}_{{.BuilderType}}.tar.gz"
    );
    assert_eq!(compress.level.get(), 6);
}

/// The secrets a failed load knows, for whoever prints its error.
fn sensitive_of_failure(value: serde_json::Value, overrides: &Overrides) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    match load_in(dir.path(), value, overrides) {
        Err(err @ TemplateError::Invalid { .. }) => err.sensitive_values().to_vec(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("template was accepted"),
    }
}

#[test]
fn a_failed_load_still_names_its_secrets() {
    // The secret is quoted by the error of a later part of the template.
    let value = json!({
        "variables": {"mem": "not-a-number-s3cret"},
        "sensitive-variables": ["mem"],
        "builders": [qemu(json!({"memory": "{{user `mem`}}"}))]
    });
    let dir = tempfile::tempdir().unwrap();
    let err =
        load_in(dir.path(), value, &Overrides::default()).expect_err("memory is not a number");
    assert!(err.to_string().contains("not-a-number-s3cret"), "{err}");
    assert_eq!(err.sensitive_values(), ["not-a-number-s3cret".to_string()]);
}

#[test]
fn secrets_given_on_the_command_line_are_known_when_the_load_fails() {
    let overrides = var_overrides(
        vec![
            ("pw".into(), "from-the-command-line".into()),
            ("undeclared".into(), "set-but-not-declared".into()),
        ],
        Vec::new(),
    );
    let values = sensitive_of_failure(
        json!({
            "variables": {"pw": null},
            "sensitive-variables": ["pw", "undeclared"],
            "builders": [qemu(json!({"cpus": "{{user `pw`}}"}))]
        }),
        &overrides,
    );
    assert_eq!(
        values,
        vec![
            "from-the-command-line".to_string(),
            "set-but-not-declared".to_string()
        ]
    );
}

#[test]
fn a_secret_that_fails_to_render_is_known_as_given() {
    let values = sensitive_of_failure(
        json!({
            "variables": {"pw": "{{ no_such_function }}-tail"},
            "sensitive-variables": ["pw"],
            "builders": [qemu(json!({}))]
        }),
        &Overrides::default(),
    );
    assert_eq!(values, vec!["{{ no_such_function }}-tail".to_string()]);
}

#[test]
fn debug_never_shows_a_secret() {
    let plan = load_json(json!({
        "variables": {"pw": "debug-s3cret"},
        "sensitive-variables": ["pw"],
        "builders": [qemu(json!({"ssh_password": "{{user `pw`}}"}))]
    }))
    .unwrap();
    // Each part on its own too: the SSH options, the variables.
    let shown = format!(
        "{plan:?} {:#?} {:?}",
        plan.variables, plan.builds[0].qemu.communicator
    );
    assert!(!shown.contains("debug-s3cret"), "{shown}");
    let given = Override::Var("pw".into(), "given-s3cret".into());
    assert_eq!(format!("{given:?}"), r#"Var("pw", "<hidden>")"#);
    assert!(shown.contains("pw"), "{shown}");
}

#[test]
fn go_blocks_and_builtins_render_at_load_and_late() {
    let plan = load_json(json!({
        "variables": {
            "name": "{{ printf \"web-%03d\" 7 }}",
            "debug": "",
            "tag": "{{ if eq packer_version `1.6.6` }}compat{{ end }}"
        },
        "builders": [qemu(json!({
            "vm_name": "{{ user `name` }}{{ if user `debug` }}-debug{{ end }}-{{ user `tag` }}.img",
            "shutdown_command": "{{ if eq build_type `qemu` -}} poweroff {{- else -}} halt {{- end }}",
            "qemuargs": [["-name", "{{ if .Name }}{{ .Name }}{{ else }}{{ user `name` }}{{ end }}"]]
        }))]
    }))
    .unwrap();
    let q = &plan.builds[0].qemu;
    assert_eq!(q.vm_name, "web-007-compat.img");
    assert_eq!(q.shutdown_command.as_deref(), Some("poweroff"));
    // A block on a late field is kept, with what is known filled in.
    let late = &q.qemuargs[0][1];
    assert_eq!(late, "{{ if .Name }}{{ .Name }}{{ else }}web-007{{ end }}");
    assert_eq!(render_late(late, &[("Name", "vm1")]), "vm1");
    assert_eq!(render_late(late, &[("Name", "")]), "web-007");

    let values = [("HTTPIP", "10.0.2.2"), ("HTTPPort", "8123")];
    assert_eq!(
        render_late(
            "{{ if .HTTPIP }}{{ printf \"http://%s:%d/ks.cfg\" .HTTPIP .HTTPPort }}{{ end }}",
            &values
        ),
        "http://10.0.2.2:8123/ks.cfg"
    );
    assert_eq!(
        render_late("{{ if gt .HTTPPort 8000 }}hi{{ end }}", &values),
        "hi"
    );
}

#[test]
fn go_template_mistakes_and_offline_functions_name_their_place() {
    let found = problems(json!({
        "variables": {"pw": "{{ consul_key `db/pw` }}"},
        "builders": [qemu(json!({
            "vm_name": "{{ if true }}x",
            "shutdown_command": "{{ printf }}"
        }))]
    }));
    let has = |place: &str, text: &str| {
        assert!(
            found.iter().any(|(p, m)| p == place && m.contains(text)),
            "no {place}: {text:?} in {found:?}"
        )
    };
    has(
        "variables.pw",
        "consul_key \"db/pw\" is not available offline",
    );
    has("variables.pw", "set the value with -var");
    has(
        "builders[0].vm_name",
        "{{if}} is not closed: missing {{end}}",
    );
    has(
        "builders[0].shutdown_command",
        "wrong number of args for printf: want at least 1 got 0",
    );
}

#[test]
fn options_packer_reads_loosely_are_read_the_same_way() {
    // A single string where Packer wants a list is a one-item list, as
    // mapstructure's weak typing makes it.
    let plan = load_json(json!({
        "builders": [qemu(json!({
            "boot_command": "<enter>",
            "cpu_model": "qemu64",
            "iso_skip_cache": true,
            "iso_target_extension": "iso",
        }))],
        "post-processors": [{"type": "checksum", "name": "sums"}]
    }))
    .unwrap();
    let q = &plan.builds[0].qemu;
    assert_eq!(
        q.qemuargs,
        vec![vec!["-cpu".to_string(), "qemu64".to_string()]]
    );
    // qemuargs that choose a CPU win over cpu_model.
    let q = one_builder(json!({"cpu_model": "qemu64", "qemuargs": [["-cpu", "max"]]}));
    assert_eq!(
        q.qemuargs,
        vec![vec!["-cpu".to_string(), "max".to_string()]]
    );
    let got = problems(json!({"builders": [qemu(json!({"boot_command": {}}))]}));
    assert_eq!(got[0].0, "builders[0].boot_command");
    assert!(
        got[0].1.contains("expected an array of strings"),
        "{}",
        got[0].1
    );
}
