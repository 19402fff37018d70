//! SIGINT and SIGTERM during `kiln build` and `kiln test`: the exit status
//! says which signal it was, and nothing is left behind: no output of the
//! cancelled build, no temporary file or directory, no process.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::util::{Scratch, fixture, fixture_builder, path_str};

/// A kiln run in the background, its output read as it comes.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(scratch: &Scratch, args: &[&str]) -> Running {
        let mut child = scratch
            .kiln(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            seen: String::new(),
            stderr,
        }
    }

    /// Reads output until a line contains `text`. Not a time limit on kiln:
    /// the bound only keeps a broken run from hanging the suite.
    #[track_caller]
    fn wait_for(&mut self, text: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(600)) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(text) {
                        return;
                    }
                }
                Err(_) => panic!("never saw {text:?}; kiln said:\n{}", self.seen),
            }
        }
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: a signal to the kiln process this test started.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits for kiln to end: its exit code and everything it printed.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait");
        while let Ok(line) = self.lines.recv() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let stderr = self.stderr.join().expect("stderr");
        (status.code(), format!("{}\n{stderr}", self.seen))
    }
}

/// Processes (any, not only QEMU) whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        // A zombie has an empty command line: it holds nothing.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Nothing of the interrupted run is left: its TMPDIR is empty, no process
/// mentions the test's directory, the output directory is gone.
#[track_caller]
fn assert_no_leftovers(scratch: &Scratch, output: &str) {
    let marker = scratch.path().display().to_string();
    let running = processes_mentioning(&marker);
    assert!(running.is_empty(), "still running: {running:?}");
    let temp = scratch.leftover_temp_files();
    assert!(temp.is_empty(), "left in TMPDIR: {temp:?}");
    assert!(
        !scratch.path().join("out").exists(),
        "the cancelled build's output is still there"
    );
    let stray: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("read scratch")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp") || name.starts_with("kiln-"))
        .collect();
    assert!(stray.is_empty(), "partial files: {stray:?}\n{output}");
}

fn waiting_provisioner_template(scratch: &Scratch, extra: serde_json::Value) -> String {
    let mut builder = fixture_builder(json!({"output_directory": "out", "ssh_timeout": "30m"}));
    if let (Some(builder), Some(extra)) = (builder.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            builder.insert(key.clone(), value.clone());
        }
    }
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [builder],
            "provisioners": [{"type": "shell", "inline": [
                "echo provisioner-is-waiting",
                "while [ ! -e /tmp/never ]; do sleep 1; done",
            ]}],
            "post-processors": [{"type": "checksum", "output": "out/disk.sha256"}]
        }),
    );
    path_str(&template).to_string()
}

#[test]
fn sigterm_during_a_provisioner_exits_143_and_leaves_nothing() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({}));
    let mut kiln = Running::start(&scratch, &["build", &template]);
    kiln.wait_for("provisioner-is-waiting");
    kiln.signal(libc::SIGTERM);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(143), "{output}");
    assert!(!output.contains("checksum"), "{output}");
    assert_no_leftovers(&scratch, &output);
}

#[test]
fn sigint_during_a_provisioner_exits_130_and_leaves_nothing() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({}));
    let mut kiln = Running::start(&scratch, &["build", &template]);
    kiln.wait_for("provisioner-is-waiting");
    kiln.signal(libc::SIGINT);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(130), "{output}");
    assert_no_leftovers(&scratch, &output);
}

#[test]
fn sigint_while_waiting_for_ssh_exits_130_and_leaves_nothing() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({}));
    let mut kiln = Running::start(&scratch, &["build", &template]);
    kiln.wait_for("Waiting for SSH");
    kiln.signal(libc::SIGINT);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(130), "{output}");
    assert!(!output.contains("provisioner-is-waiting"), "{output}");
    assert_no_leftovers(&scratch, &output);
}

#[test]
fn sigterm_while_qemu_starts_exits_143_and_leaves_nothing() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({}));
    let mut kiln = Running::start(&scratch, &["build", &template]);
    kiln.wait_for("Starting QEMU");
    kiln.signal(libc::SIGTERM);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(143), "{output}");
    assert_no_leftovers(&scratch, &output);
}

#[test]
fn sigint_with_on_error_abort_keeps_the_output_but_no_process() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({"vm_name": "disk.qcow2"}));
    let mut kiln = Running::start(&scratch, &["build", "-on-error=abort", &template]);
    kiln.wait_for("provisioner-is-waiting");
    kiln.signal(libc::SIGINT);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(130), "{output}");
    assert!(
        scratch.path().join("out/disk.qcow2").exists(),
        "-on-error=abort keeps the disk:\n{output}"
    );
    let marker = scratch.path().display().to_string();
    let running = processes_mentioning(&marker);
    assert!(running.is_empty(), "still running: {running:?}");
}

#[test]
fn a_second_sigint_quits_at_once_and_qemu_dies_with_kiln() {
    let scratch = Scratch::new();
    let template = waiting_provisioner_template(&scratch, json!({}));
    let mut kiln = Running::start(&scratch, &["build", &template]);
    kiln.wait_for("provisioner-is-waiting");
    kiln.signal(libc::SIGINT);
    kiln.signal(libc::SIGINT);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(130), "{output}");
    // However kiln ended, QEMU went with it (PR_SET_PDEATHSIG). Its exit
    // is the kernel's doing and follows kiln's: look until it is gone.
    let marker = scratch.path().display().to_string();
    let mut running = processes_mentioning(&marker);
    for _ in 0..500 {
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        running = processes_mentioning(&marker);
    }
    assert!(running.is_empty(), "outlived kiln: {running:?}");
}

fn kiln_test_args<'a>(checks: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "test",
        "--tests",
        checks,
        "--accelerator",
        "tcg",
        "--ssh-timeout",
        "30m",
        image,
    ]
}

#[test]
fn sigint_while_kiln_test_waits_for_ssh_exits_130_and_leaves_nothing() {
    let scratch = Scratch::new();
    let checks = scratch.write_json(
        "checks.json",
        &json!({"tests": [{"name": "never runs", "command": "true"}]}),
    );
    let image = fixture().display().to_string();
    let mut kiln = Running::start(&scratch, &kiln_test_args(path_str(&checks), &image));
    kiln.wait_for("Waiting for SSH");
    kiln.signal(libc::SIGINT);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(130), "{output}");
    assert_no_leftovers(&scratch, &output);
}

#[test]
fn sigterm_while_kiln_test_runs_a_check_exits_143_and_leaves_nothing() {
    let scratch = Scratch::new();
    let checks = scratch.write_json(
        "checks.json",
        &json!({"tests": [{"name": "slow", "command": "sleep 3600", "timeout": "2h"}]}),
    );
    let image = fixture().display().to_string();
    let mut kiln = Running::start(&scratch, &kiln_test_args(path_str(&checks), &image));
    kiln.wait_for("Connected to SSH");
    kiln.signal(libc::SIGTERM);
    let (code, output) = kiln.finish();
    assert_eq!(code, Some(143), "{output}");
    assert!(!output.contains("passed"), "{output}");
    assert_no_leftovers(&scratch, &output);
}
