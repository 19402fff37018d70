//! Secrets, permissions and what a guest may send back: a build under
//! umask 000, a multi-line secret echoed by the guest and logged, a hostile
//! tree downloaded, and a secret that reaches QEMU's command line.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use serde_json::json;

use crate::util::{Run, Scratch, assert_nothing_left, fixture_builder, path_str};

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[track_caller]
fn assert_absent(texts: &[(&str, &str)], secrets: &[&str]) {
    for (name, text) in texts {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret:?} leaked in {name}:\n{text}"
            );
        }
    }
}

/// A secret with a quote, a backslash and a newline goes into QEMU's
/// arguments (logged with `?argv`) and QEMU's own error (quoted, split
/// across lines): masked in the build's output and in the debug log.
#[test]
fn a_secret_on_qemus_command_line_is_masked_in_output_and_log() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"pw": "qe\"mu-s3\\cret\nsecond-s3cret-line"},
            "sensitive-variables": ["pw"],
            "builders": [fixture_builder(json!({
                "output_directory": "out",
                "qemuargs": [
                    ["-fw_cfg", "name=opt/kiln/secret,string={{user `pw`}}"],
                    // A stray argument: QEMU takes it for a disk and quotes
                    // it in its error.
                    ["{{user `pw`}}"]
                ]
            }))]
        }),
    );
    let log = scratch.path().join("debug.log");
    for mode in [&[][..], &["-machine-readable"][..]] {
        let mut args = vec!["build"];
        args.extend_from_slice(mode);
        args.push(path_str(&template));
        let run = Run::from(
            scratch
                .kiln(&args)
                .env("KILN_LOG", "debug")
                .env("KILN_LOG_PATH", &log)
                .output()
                .expect("run kiln"),
        );
        assert_eq!(run.code, Some(1), "{}", run.all());
        let logged = std::fs::read_to_string(&log).expect("log");
        assert!(logged.contains("launching QEMU"), "{logged}");
        assert!(run.all().contains("Could not open"), "{}", run.all());
        assert_absent(
            &[
                ("stdout", &run.stdout),
                ("stderr", &run.stderr),
                ("log", &logged),
            ],
            &["mu-s3", "s3\\cret", "s3\\\\cret", "second-s3cret-line"],
        );
        assert!(logged.contains("string=<sensitive>"), "{logged}");
        assert!(run.all().contains("<sensitive>"), "{}", run.all());
    }
    assert_nothing_left(&scratch);
}

/// One boot of the fixture, under umask 000:
/// - kiln's temp directories are 0700 and its key 0600 (seen from a
///   shell-local provisioner, while the build runs);
/// - a multi-line secret the guest prints line by line is masked in the
///   output, the log and the test report;
/// - a tree with setuid, setgid and sticky modes and links out of it comes
///   back without the special bits and without following the directory
///   link.
#[test]
fn a_build_under_umask_000_keeps_temp_dirs_private_and_secrets_and_downloads_contained() {
    let scratch = Scratch::new();
    let token = "first-t0ken-line\nsecond-t0ken-line";
    let template = scratch.write_json(
        "t.json",
        &json!({
            "variables": {"token": null},
            "sensitive-variables": ["token"],
            "builders": [fixture_builder(json!({"output_directory": "out"}))],
            // The check's output is the guest's, and goes to the report.
            "tests": [{"name": "echo", "inline": ["echo 'check: {{user `token`}}'"]}],
            "provisioners": [
                {
                    "type": "shell",
                    "environment_vars": ["TOKEN={{user `token`}}"],
                    "inline": [
                        "printf '%s\\n' \"$TOKEN\"",
                        "echo \"inline: $TOKEN\"",
                        "mkdir -p /root/tree/sgid /root/tree/sticky",
                        "printf 'x\\n' > /root/tree/suid",
                        "printf 'y\\n' > /root/tree/sgid/file",
                        "chmod 4755 /root/tree/suid",
                        "chmod 2755 /root/tree/sgid",
                        "chmod 1777 /root/tree/sticky",
                        "ln -s /etc /root/tree/etc-link",
                        "ln -s /etc/hostname /root/tree/hostname-link"
                    ]
                },
                {"type": "file", "direction": "download", "source": "/root/tree/", "destination": "got"},
                {"type": "file", "direction": "download", "source": "/root/tree/suid", "destination": "suid-single"},
                {
                    "type": "shell-local",
                    "inline": ["find \"$TMPDIR\" -mindepth 1 -printf '%m %y %p\\n' > modes.txt"]
                }
            ]
        }),
    );
    let log = scratch.path().join("debug.log");
    let mut command = scratch.kiln(&[
        "build",
        "-test-report",
        "report.json",
        "-var",
        &format!("token={token}"),
        path_str(&template),
    ]);
    command.env("KILN_LOG", "debug").env("KILN_LOG_PATH", &log);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let run = Run::from(command.output().expect("run kiln"));
    run.assert_success();

    // Temp dirs and key, as they were during the build.
    let modes = std::fs::read_to_string(scratch.path().join("modes.txt")).expect("modes.txt");
    assert_private_temp_files(&modes, &scratch.tmp());

    // The secret, in no output and no log; the guest's lines were masked.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let report = std::fs::read_to_string(scratch.path().join("report.json")).expect("report");
    assert_absent(
        &[
            ("stdout", &run.stdout),
            ("stderr", &run.stderr),
            ("log", &logged),
            ("test report", &report),
        ],
        &["t0ken-line"],
    );
    assert!(report.contains("check: <sensitive>"), "{report}");
    assert!(run.stdout.contains("inline: <sensitive>"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .filter(|l| l.ends_with(": <sensitive>"))
            .count()
            >= 2,
        "{}",
        run.stdout
    );

    // The download: no special bits, no link to a directory followed.
    assert_download_contained(scratch.path());
    assert_nothing_left(&scratch);
}

/// Every directory the build made in TMPDIR (`find`'s `%m %y %p` lines)
/// was 0700, its key 0600, and nothing directly in `tmp` open to others.
fn assert_private_temp_files(modes: &str, tmp: &Path) {
    let mut dirs = 0;
    let mut keys = 0;
    for line in modes.lines() {
        let mut parts = line.splitn(3, ' ');
        let (mode, kind, path) = (
            parts.next().expect("mode"),
            parts.next().expect("type"),
            parts.next().expect("path"),
        );
        if kind == "d" {
            dirs += 1;
            assert_eq!(mode, "700", "{path} is not private:\n{modes}");
        }
        if path.contains("kiln_ed25519") || path.contains("kiln_rsa") {
            keys += 1;
            assert_eq!(mode, "600", "{path}:\n{modes}");
        }
        // What sits in TMPDIR itself is the owner's alone; what is inside
        // a private directory is out of others' reach anyway.
        if Path::new(path).parent() == Some(tmp) {
            let bits = u32::from_str_radix(mode, 8).expect("octal");
            assert_eq!(bits & 0o077, 0, "{path} is open to others:\n{modes}");
        }
    }
    assert!(
        dirs >= 1 && keys == 1,
        "no kiln temp dir or key seen:\n{modes}"
    );
}

/// What the build downloaded into `dir` (`got/`, `suid-single`) came back
/// without special mode bits and without following the link to a directory.
fn assert_download_contained(dir: &Path) {
    let got = dir.join("got");
    assert_eq!(mode_of(&got.join("suid")), 0o755);
    assert_eq!(mode_of(&got.join("sgid")), 0o755);
    assert_eq!(mode_of(&got.join("sticky")), 0o777);
    assert_eq!(mode_of(&dir.join("suid-single")), 0o755);
    assert_eq!(
        std::fs::read_to_string(got.join("sgid/file")).expect("nested file"),
        "y\n"
    );
    assert!(
        std::fs::symlink_metadata(got.join("etc-link")).is_err(),
        "the link to /etc was followed"
    );
    let copied = std::fs::symlink_metadata(got.join("hostname-link")).expect("file link");
    assert!(copied.file_type().is_file(), "{copied:?}");
    let mut names: Vec<String> = std::fs::read_dir(&got)
        .expect("got")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["hostname-link", "sgid", "sticky", "suid"]);
}
