//! The command line without booting anything: validation errors, flags,
//! refusals that must happen before QEMU starts.

use serde_json::json;

use crate::util::Scratch;

/// A minimal valid qemu builder on a local (empty) image file.
fn builder(scratch: &Scratch, extra: serde_json::Value) -> serde_json::Value {
    let image = scratch.write("base.qcow2", "");
    let mut builder = json!({
        "type": "qemu",
        "iso_url": image.display().to_string(),
        "iso_checksum": "none",
        "disk_image": true,
        "ssh_username": "root",
    });
    for (key, value) in extra.as_object().expect("object") {
        builder[key] = value.clone();
    }
    builder
}

#[test]
fn validate_accepts_the_demo_template() {
    let scratch = Scratch::new();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/demo.json");
    let image = scratch.write("fixture.qcow2", "");
    let run = scratch.run(&[
        "validate",
        "-var",
        &format!("fixture_image={}", image.display()),
        demo.to_str().expect("utf-8"),
    ]);
    run.assert_success();
    assert!(
        run.stdout.contains("The configuration is valid."),
        "{}",
        run.all()
    );
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [builder(&scratch, json!({
                "disk_size": "ten gigabytes",
                "memroy": 1024,
                "cpus": "two",
                "ssh_timeout": "5 minutes",
            }))],
            "provisioners": [
                {"type": "shell", "inline": {"echo": "not a list"}},
                {"type": "file", "source": "missing.txt", "destination": "/tmp/x"}
            ]
        }),
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    run.assert_usage_error();
    let err = &run.stderr;
    for path in [
        "builders[0].disk_size",
        "builders[0].memroy",
        "builders[0].cpus",
        "builders[0].ssh_timeout",
        "provisioners[0].inline",
        "provisioners[1].source",
    ] {
        assert!(err.contains(path), "no error names {path}:\n{err}");
        assert!(
            !run.stdout.contains(path),
            "an error on stdout:\n{}",
            run.stdout
        );
    }
    assert!(err.contains("memory"), "no suggestion for memroy:\n{err}");
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn validate_rejects_what_is_not_supported_yet_by_name() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [
                builder(&scratch, json!({"name": "disks", "disk_additional_size": ["10G"]})),
                builder(&scratch, json!({"name": "typing", "boot_command": ["<entre>"]})),
            ],
            "provisioners": [{"type": "puppet-masterless"}],
            "post-processors": [{"type": "docker-push"}]
        }),
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    run.assert_usage_error();
    let err = &run.stderr;
    // kiln's gaps name the feature and the way round it...
    assert!(
        err.contains("builders[0].disk_additional_size: extra disks (disk_additional_size) is not supported by kiln yet: "),
        "{err}"
    );
    assert!(
        err.contains(
            "provisioners[0].type: the puppet-masterless provisioner is not supported by kiln yet: "
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "post-processors[0].type: the docker-push post-processor is not supported by kiln yet: "
        ),
        "{err}"
    );
    // ...and the user's own mistake is worded as one.
    assert!(
        err.contains("builders[1].boot_command[0]: unknown key <entre>"),
        "{err}"
    );
}

#[test]
fn validate_names_a_required_variable_that_is_not_set() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"image": null},
            "builders": [builder(&scratch, json!({"iso_url": "{{user `image`}}"}))]
        }),
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    run.assert_usage_error();
    assert!(run.stderr.contains("image"), "{}", run.all());
}

#[test]
fn bad_json_names_line_and_column() {
    let scratch = Scratch::new();
    let template = scratch.write(
        "t.json",
        "{\n  \"builders\": [\n    {\"type\": \"qemu\",}\n  ]\n}\n",
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    run.assert_usage_error();
    assert!(run.stderr.contains("line 3"), "{}", run.all());
}

#[test]
fn single_and_double_dash_flags_both_work() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"size": "1G"},
            "builders": [builder(&scratch, json!({"name": "a", "disk_size": "{{user `size`}}"}))]
        }),
    );
    let path = template.to_str().expect("utf-8");
    scratch
        .run(&["validate", "-var", "size=2G", "-only=a", path])
        .assert_success();
    scratch
        .run(&["validate", "--var", "size=2G", "--only", "a", path])
        .assert_success();
    let run = scratch.run(&["validate", "-var", "size=huge", path]);
    run.assert_usage_error();
    run.assert_error_on_stderr("builders[0].disk_size");
}

#[test]
fn only_naming_an_unknown_build_is_an_error() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({"name": "base"}))]}),
    );
    let run = scratch.run(&["build", "-only=bsae", template.to_str().expect("utf-8")]);
    run.assert_usage_error();
    run.assert_error_on_stderr("bsae");
    assert!(run.stderr.contains("base"), "{}", run.all());
}

#[test]
fn existing_output_directory_needs_force() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path().join("out")).expect("mkdir");
    scratch.write("out/keep.txt", "precious");
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({"output_directory": "out"}))]}),
    );
    let run = scratch.run(&["build", template.to_str().expect("utf-8")]);
    run.assert_failure();
    run.assert_error_on_stderr("-force");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("out/keep.txt")).expect("kept"),
        "precious",
        "a refused build must not touch the existing output"
    );
    assert!(scratch.leftover_temp_files().is_empty());
}

#[test]
fn a_missing_source_image_is_named() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({"iso_url": "nowhere/base.qcow2"}))]}),
    );
    let run = scratch.run(&["build", template.to_str().expect("utf-8")]);
    run.assert_failure();
    run.assert_error_on_stderr("nowhere/base.qcow2");
    assert!(!scratch.path().join("output-qemu").exists());
    assert!(scratch.leftover_temp_files().is_empty());
}

#[test]
fn a_wrong_checksum_stops_the_build_before_qemu() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({
            "iso_checksum": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        }))]}),
    );
    let run = scratch.run(&["build", template.to_str().expect("utf-8")]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("checksum"), "{all}");
    // The empty file's sha256, as computed.
    assert!(
        all.contains("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "{all}"
    );
    assert!(!scratch.path().join("output-qemu").exists());
}

#[test]
fn inspect_lists_variables_with_sensitive_ones_masked() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"region": "eu", "token": "hunter2"},
            "sensitive-variables": ["token"],
            "builders": [builder(&scratch, json!({"name": "base"}))],
            "provisioners": [{"type": "shell", "inline": ["true"]}]
        }),
    );
    let run = scratch.run(&["inspect", template.to_str().expect("utf-8")]);
    run.assert_success();
    assert!(run.stdout.contains("region"), "{}", run.stdout);
    assert!(run.stdout.contains("base"), "{}", run.stdout);
    assert!(run.stdout.contains("shell"), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    assert!(run.stdout.contains("<sensitive>"), "{}", run.stdout);
}

/// Exit statuses: 2 when the command line, the template or the checks are
/// wrong (nothing started), 1 when the work started and failed; the error
/// text on stderr and never on stdout, in every command and output mode.
#[test]
fn argument_errors_exit_2_on_stderr() {
    let scratch = Scratch::new();
    for args in [
        &["build", "--no-such-flag", "t.json"][..],
        &["frobnicate"][..],
        &["validate"][..],
        &["test", "image.qcow2"][..],
        &["export", "--level", "many", "disk.qcow2"][..],
    ] {
        let run = scratch.run(args);
        run.assert_usage_error();
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
    }
    // Help is no error: stdout, status 0.
    let run = scratch.run(&["--help"]);
    run.assert_success();
    assert!(run.stdout.contains("Usage"), "{}", run.all());
}

#[test]
fn a_template_that_does_not_validate_exits_2_in_every_command() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({"disk_size": "ten gigabytes"}))]}),
    );
    let path = template.to_str().expect("utf-8");
    for args in [
        &["validate", path][..],
        &["inspect", path][..],
        &["build", path][..],
        &["build", "-timestamp-ui", path][..],
    ] {
        let run = scratch.run(args);
        run.assert_usage_error();
        run.assert_error_on_stderr("builders[0].disk_size");
    }
    // Machine-readable: the records on stdout (the error's among them, as
    // Packer writes it), the error for people on stderr.
    let run = scratch.run(&["build", "-machine-readable", path]);
    run.assert_usage_error();
    run.assert_only_records_on_stdout();
    assert!(
        run.stderr.contains("builders[0].disk_size"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains(",ui,error,"), "{}", run.stdout);
    assert!(run.stdout.contains(",error-count,1"), "{}", run.stdout);
    assert!(scratch.leftover_temp_files().is_empty());
}

#[test]
fn a_build_that_fails_exits_1_with_its_error_on_stderr() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({"iso_url": "nowhere/base.qcow2"}))]}),
    );
    let path = template.to_str().expect("utf-8");
    let run = scratch.run(&["build", "-machine-readable", path]);
    run.assert_failure();
    run.assert_only_records_on_stdout();
    assert!(run.stderr.contains("nowhere/base.qcow2"), "{}", run.all());
    assert!(
        run.stderr
            .contains("Some builds didn't complete successfully"),
        "{}",
        run.all()
    );
    let run = scratch.run(&["build", path]);
    run.assert_failure();
    run.assert_error_on_stderr("Some builds didn't complete successfully");
    run.assert_error_on_stderr("errored after");
}

#[test]
fn export_errors_are_on_stderr_with_their_exit_status() {
    let scratch = Scratch::new();
    // Wrong arguments: 2, before anything is written.
    let run = scratch.run(&["export", "--output", "x.tar.gz", "missing.qcow2"]);
    run.assert_usage_error();
    run.assert_error_on_stderr("missing.qcow2");
    let disk = scratch.path().join("disk.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    let disk = disk.to_str().expect("utf-8");
    let run = scratch.run(&["export", disk]);
    run.assert_usage_error();
    run.assert_error_on_stderr("--bucket and --image-name");
    let run = scratch.run(&[
        "export",
        "--bucket",
        "b",
        "--image-name",
        "Bad_Name",
        "--project",
        "p",
        disk,
    ]);
    run.assert_usage_error();
    run.assert_error_on_stderr("Bad_Name");
    // A failure on the way: 1.
    let run = scratch.run(&["export", "--output", "no-such-dir/x.tar.gz", disk]);
    run.assert_failure();
    run.assert_error_on_stderr("Error: ");
    assert!(run.stderr.contains("no-such-dir"), "{}", run.all());
    // The progress on the way stays on stdout.
    assert!(run.stdout.contains("Packaging"), "{}", run.all());
    assert!(scratch.leftover_temp_files().is_empty());
}

#[test]
fn kiln_test_with_bad_checks_exits_2_before_booting() {
    let scratch = Scratch::new();
    let image = scratch.write("image.qcow2", "");
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [{"name": "c", "comand": "x"}]}"#,
    );
    let run = scratch.run(&[
        "test",
        image.to_str().expect("utf-8"),
        "--tests",
        checks.to_str().expect("utf-8"),
    ]);
    run.assert_usage_error();
    run.assert_error_on_stderr("tests[0].comand");
    let checks = scratch.write(
        "good-checks.json",
        r#"{"tests": [{"name": "c", "command": "true"}]}"#,
    );
    let run = scratch.run(&[
        "test",
        "missing.qcow2",
        "--tests",
        checks.to_str().expect("utf-8"),
    ]);
    run.assert_usage_error();
    run.assert_error_on_stderr("missing.qcow2");
}

/// kiln's answer to every command that reads a template, in each output
/// mode, with the given extra arguments before the template.
fn every_template_command(
    scratch: &Scratch,
    extra: &[&str],
    template: &str,
) -> Vec<crate::util::Run> {
    let commands: [&[&str]; 4] = [
        &["validate"],
        &["inspect"],
        &["build"],
        &["build", "-machine-readable"],
    ];
    commands
        .iter()
        .map(|command| {
            let mut args: Vec<&str> = command.to_vec();
            args.extend_from_slice(extra);
            args.push(template);
            scratch.run(&args)
        })
        .collect()
}

#[track_caller]
fn assert_masked(run: &crate::util::Run, secrets: &[&str], what: &str) {
    assert_ne!(run.code, Some(0), "{what} should fail:\n{}", run.all());
    for secret in secrets {
        assert!(
            !run.stdout.contains(secret),
            "{what}: {secret:?} in stdout:\n{}",
            run.all()
        );
        assert!(
            !run.stderr.contains(secret),
            "{what}: {secret:?} in stderr:\n{}",
            run.all()
        );
    }
    assert!(
        run.all().contains("<sensitive>"),
        "{what}: no mask:\n{}",
        run.all()
    );
    // The error still says what is wrong, and where.
    assert!(
        run.all().contains("builders[0].memory"),
        "{what}:\n{}",
        run.all()
    );
}

#[test]
fn a_secret_quoted_by_a_template_error_is_masked_in_every_command_and_mode() {
    let scratch = Scratch::new();
    // A multi-line secret with a quote and a backslash: the error quotes it
    // escaped, and splits nothing.
    let default = "first-s3cret-line \"q\\b\"\nsecond-s3cret-line";
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"mem": default, "pw": null},
            "sensitive-variables": ["mem", "pw"],
            "builders": [builder(&scratch, json!({
                "memory": "{{user `mem`}}",
                "cpus": "{{user `pw`}}",
            }))]
        }),
    );
    let template = template.to_str().expect("utf-8");
    // The default, and a value given with -var.
    let secrets = ["s3cret-line", "cli-s3cret", "q\\b", "q\\\\b"];
    let runs = every_template_command(&scratch, &["-var", "pw=cli-s3cret"], template);
    for (run, what) in runs
        .iter()
        .zip(["validate", "inspect", "build", "build -machine-readable"])
    {
        assert_masked(run, &secrets, what);
        assert!(
            run.all().contains("builders[0].cpus"),
            "{what}:\n{}",
            run.all()
        );
    }
    // From a -var-file too.
    let file = scratch.write_json("vars.json", &json!({"mem": "file-s3cret-value", "pw": "2"}));
    let runs = every_template_command(
        &scratch,
        &["-var-file", file.to_str().expect("utf-8")],
        template,
    );
    for (run, what) in runs
        .iter()
        .zip(["validate", "inspect", "build", "build -machine-readable"])
    {
        assert_masked(run, &["file-s3cret-value"], what);
    }
    assert!(scratch.leftover_temp_files().is_empty());
}

#[test]
fn inspect_masks_values_derived_from_a_secret() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {
                "password": "derived-s3cret",
                "url": "https://user:{{user `password`}}@example.com/repo"
            },
            "sensitive-variables": ["password"],
            "builders": [builder(&scratch, json!({"name": "base"}))]
        }),
    );
    let run = scratch.run(&["inspect", template.to_str().expect("utf-8")]);
    run.assert_success();
    assert!(!run.all().contains("derived-s3cret"), "{}", run.all());
    assert!(
        run.stdout
            .contains("url = https://user:<sensitive>@example.com/repo"),
        "{}",
        run.stdout
    );
}

/// Refused the way a bad template is: an exit status (not a signal such as a
/// stack overflow's abort) that is not success, and the reason on stderr.
#[track_caller]
fn assert_refused(run: &crate::util::Run, needles: &[&str]) {
    assert!(
        matches!(run.code, Some(code) if code != 0),
        "expected a failing exit status, got {:?}:\n{}",
        run.code,
        run.all()
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr does not say {needle:?}:\n{}",
            run.stderr
        );
    }
}

/// Issue 10, section 8: each of these crashed or hung `validate` and
/// `inspect`; now each is an error naming the place and the limit.
#[test]
fn pathological_templates_are_refused_at_their_place() {
    let scratch = Scratch::new();
    let base = builder(&scratch, json!({}));
    let deep = format!("{{{{ {}`a`{} }}}}", "(".repeat(30_000), ")".repeat(30_000));
    let mut doubling = serde_json::Map::new();
    doubling.insert("e0".into(), json!("aaaaaaaaaaaaaaaa"));
    for i in 1..30 {
        doubling.insert(
            format!("e{i}"),
            json!(format!("{{{{user `e{0}`}}}}{{{{user `e{0}`}}}}", i - 1)),
        );
    }
    let mut replace = "`aaaaaaaaaa`".to_string();
    for _ in 0..40 {
        replace = format!("(replace_all `a` `aa` {replace})");
    }
    let cases = [
        (
            json!({"variables": {"x": deep}, "builders": [base.clone()]}),
            vec!["variables.x", "nested more than 64 deep"],
        ),
        (
            json!({"variables": doubling, "builders": [base.clone()]}),
            vec!["variables.e17", "more than 1 MiB"],
        ),
        (
            json!({"builders": [builder(&scratch, json!({
                "shutdown_command": format!("{{{{ {replace} }}}}")
            }))]}),
            vec!["builders[0].shutdown_command", "more than 1 MiB"],
        ),
    ];
    for (index, (template, needles)) in cases.iter().enumerate() {
        let path = scratch.write_json(&format!("t{index}.json"), template);
        for command in ["validate", "inspect"] {
            let run = scratch.run(&[command, path.to_str().expect("utf-8")]);
            assert_refused(&run, needles);
        }
    }
}

#[test]
fn a_chain_of_a_thousand_variables_validates() {
    let scratch = Scratch::new();
    let mut vars = serde_json::Map::new();
    for i in 0..1000 {
        vars.insert(format!("v{i}"), json!(format!("{{{{user `v{}`}}}}", i + 1)));
    }
    vars.insert("v1000".into(), json!("eu-west"));
    let template = scratch.write_json(
        "t.json",
        &json!({"variables": vars, "builders": [builder(&scratch, json!({"vm_name": "{{user `v0`}}"}))]}),
    );
    let run = scratch.run(&["inspect", template.to_str().expect("utf-8")]);
    run.assert_success();
    assert!(run.stdout.contains("v0 = eu-west"), "{}", run.stdout);
}

#[test]
fn encoding_errors_name_a_position_and_the_fix() {
    let scratch = Scratch::new();
    let valid =
        serde_json::to_string(&json!({"builders": [builder(&scratch, json!({}))]})).expect("json");
    let bom = scratch.path().join("bom.json");
    std::fs::write(
        &bom,
        [b"\xEF\xBB\xBF".as_slice(), valid.as_bytes()].concat(),
    )
    .expect("write");
    let run = scratch.run(&["validate", bom.to_str().expect("utf-8")]);
    assert_refused(
        &run,
        &["line 1, column 1", "byte-order mark", "without a BOM"],
    );

    let latin1 = scratch.path().join("latin1.json");
    std::fs::write(&latin1, b"{\n  \"variables\": {\"name\": \"caf\xE9\"}}").expect("write");
    let run = scratch.run(&["validate", latin1.to_str().expect("utf-8")]);
    assert_refused(
        &run,
        &[
            "line 2, column 29 (byte 30)",
            "not UTF-8",
            "save it as UTF-8",
        ],
    );

    let deep = scratch.write(
        "deep.json",
        &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    );
    let run = scratch.run(&["validate", deep.to_str().expect("utf-8")]);
    assert_refused(&run, &["line 1, column 65", "nest more than 64 levels"]);
}

#[test]
fn control_bytes_from_a_template_are_escaped_in_errors() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [builder(&scratch, json!({
            "\u{1b}]0;owned\u{7}": 1,
            "memory": "\u{1b}[2J",
            "memory2\n  * builders[0].fake": 1,
        }))]}),
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    assert_refused(
        &run,
        &[
            "builders[0].\\u{1b}]0;owned\\u{7}: unknown key",
            "builders[0].memory: expected an integer, got \"\\u{1b}[2J\"",
            "builders[0].memory2\\u{a}  * builders[0].fake: unknown key",
        ],
    );
    assert!(
        !run.stderr.contains(['\u{1b}', '\u{7}']),
        "a raw control character reached stderr: {:?}",
        run.stderr
    );
}

#[test]
fn a_duplicate_key_is_named() {
    let scratch = Scratch::new();
    let image = scratch.write("base.qcow2", "");
    let template = scratch.write(
        "t.json",
        &format!(
            r#"{{"builders": [{{"type": "qemu", "iso_url": {:?}, "iso_checksum": "none",
                "disk_image": true, "ssh_username": "root", "memory": 1024, "memory": 2048}}]}}"#,
            image.display().to_string()
        ),
    );
    let run = scratch.run(&["validate", template.to_str().expect("utf-8")]);
    assert_refused(&run, &["builders[0].memory", "appears more than once"]);
}

#[test]
fn validate_syntax_only_checks_the_json_and_nothing_else() {
    let scratch = Scratch::new();
    // Well-formed, though no builder of it could run.
    let meaningless = scratch.write(
        "meaningless.json",
        r#"{"builders": [{"type": "no-such-builder", "disk_size": "huge"}]}"#,
    );
    let path = meaningless.to_str().expect("utf-8");
    let run = scratch.run(&["validate", "-syntax-only", path]);
    run.assert_success();
    assert!(
        run.stdout.contains("Syntax-only check passed"),
        "{}",
        run.stdout
    );
    // The full check still refuses it.
    scratch.run(&["validate", path]).assert_usage_error();

    let broken = scratch.write(
        "broken.json",
        "{\n  \"builders\": [\n    {\"type\": \"qemu\",}\n  ]\n}\n",
    );
    let run = scratch.run(&["validate", "-syntax-only", broken.to_str().expect("utf-8")]);
    run.assert_usage_error();
    assert!(run.stderr.contains("broken.json"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);

    let list = scratch.write("list.json", "[1, 2]");
    let run = scratch.run(&["validate", "--syntax-only", list.to_str().expect("utf-8")]);
    run.assert_usage_error();
    assert!(
        run.stderr.contains("expected a JSON object"),
        "{}",
        run.stderr
    );
}

#[test]
fn color_can_be_turned_off_on_every_command() {
    let scratch = Scratch::new();
    let template = scratch.write("t.json", r#"{"builders": [{"type": "no-such-builder"}]}"#);
    let path = template.to_str().expect("utf-8");
    for args in [
        &["-color=false", "validate", "-syntax-only", path][..],
        &["validate", "-color=false", "-syntax-only", path][..],
        &["validate", "--color", "false", "--syntax-only", path][..],
    ] {
        scratch.run(args).assert_success();
    }
    let run = scratch.run(&["validate", "-color=maybe", path]);
    run.assert_usage_error();
    assert!(run.stderr.contains("maybe"), "{}", run.stderr);
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let scratch = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = scratch.run(&["completions", shell]);
        run.assert_success();
        for command in ["validate", "build", "test", "export", "cache"] {
            assert!(
                run.stdout.contains(command),
                "{shell}: no {command}:\n{}",
                run.stdout
            );
        }
    }
    let run = scratch.run(&["completions", "tcsh"]);
    run.assert_usage_error();
    assert!(run.stderr.contains("tcsh"), "{}", run.stderr);

    let run = scratch.run(&["man"]);
    run.assert_success();
    assert!(
        run.stdout.starts_with(".ie") || run.stdout.contains(".TH kiln"),
        "{}",
        run.stdout
    );
    for command in ["validate", "build", "export"] {
        assert!(run.stdout.contains(command), "no {command} in the man page");
    }
}

#[test]
fn help_shows_examples_and_the_environment_each_command_reads() {
    let scratch = Scratch::new();
    let run = scratch.run(&["build", "--help"]);
    run.assert_success();
    for text in [
        "Examples:",
        "kiln build template.json",
        "KILN_LOG",
        "PACKER_LOG",
        "NO_COLOR",
    ] {
        assert!(run.stdout.contains(text), "no {text:?} in:\n{}", run.stdout);
    }
    let run = scratch.run(&["export", "-help"]);
    run.assert_success();
    for text in [
        "STORAGE_EMULATOR_HOST",
        "KILN_COMPUTE_ENDPOINT",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ] {
        assert!(run.stdout.contains(text), "no {text:?} in:\n{}", run.stdout);
    }
}

#[test]
fn an_unknown_flag_is_named() {
    let scratch = Scratch::new();
    let run = scratch.run(&["build", "-no-such-flag", "t.json"]);
    run.assert_usage_error();
    assert!(run.stderr.contains("no-such-flag"), "{}", run.stderr);
}

/// `-machine-readable` is global: every command takes it, before or after
/// its name, and then writes records and nothing else on stdout (errors
/// for people still on stderr).
#[test]
fn machine_readable_works_on_every_command() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"secret": "hunter2"},
            "sensitive-variables": ["secret"],
            "builders": [builder(&scratch, json!({"name": "base"}))],
            "provisioners": [{"type": "shell", "inline": ["echo {{user `secret`}}"]}]
        }),
    );
    let path = template.to_str().expect("utf-8");

    for args in [
        &["validate", "-machine-readable", path][..],
        &["-machine-readable", "validate", path][..],
    ] {
        let run = scratch.run(args);
        run.assert_success();
        run.assert_only_records_on_stdout();
        assert!(
            run.stdout.contains(",ui,say,The configuration is valid."),
            "{}",
            run.stdout
        );
    }

    let run = scratch.run(&["inspect", "-machine-readable", path]);
    run.assert_success();
    run.assert_only_records_on_stdout();
    for record in [
        ",,template-variable,secret,<sensitive>,0",
        ",,template-builder,base,qemu",
        ",base,template-provisioner,shell",
    ] {
        assert!(
            run.stdout.contains(record),
            "no {record:?}:\n{}",
            run.stdout
        );
    }
    assert!(!run.all().contains("hunter2"), "{}", run.all());

    let run = scratch.run(&["version", "-machine-readable"]);
    run.assert_success();
    run.assert_only_records_on_stdout();
    assert!(
        run.stdout
            .contains(&format!(",,version,{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        run.stdout
    );

    // Errors: the records and the error count on stdout, the text on stderr.
    let bad = scratch.write_json(
        "bad.json",
        &json!({"builders": [builder(&scratch, json!({"disk_size": "huge"}))]}),
    );
    for args in [
        &[
            "validate",
            "-machine-readable",
            bad.to_str().expect("utf-8"),
        ][..],
        &["inspect", "-machine-readable", "missing.json"][..],
        &[
            "export",
            "-machine-readable",
            "--output",
            "x.tar.gz",
            "missing.qcow2",
        ][..],
    ] {
        let run = scratch.run(args);
        run.assert_usage_error();
        run.assert_only_records_on_stdout();
        assert!(
            run.stdout.contains(",,error-count,1"),
            "{args:?}: {}",
            run.stdout
        );
        assert!(run.stderr.contains("Error: "), "{args:?}: {}", run.all());
    }
}
