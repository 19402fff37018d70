//! `-on-error=ask` and `-debug` with a terminal on stdin: kiln's stdin is
//! a pseudo-terminal the test types the answers into; stdout and stderr
//! are pipes, so the output is plain lines.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::util::{Scratch, fixture_builder, path_str, qemu_processes_with};

/// kiln running with a terminal on stdin.
struct Interactive {
    child: Child,
    /// The terminal's other end: what is written here, kiln reads.
    keyboard: File,
    output: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr: they end when kiln closes
    /// both, so joining them gives all of its output.
    readers: Vec<JoinHandle<()>>,
}

impl Interactive {
    fn start(scratch: &Scratch, args: &[&str]) -> Self {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors into the given ints and
        // reads nothing from the null pointers.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (keyboard, terminal) =
            unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut child = scratch
            .kiln(args)
            .stdin(Stdio::from(terminal))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln");
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        let mut readers = Vec::new();
        for mut stream in streams {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Interactive {
            child,
            keyboard,
            output,
            readers,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until `text` has been printed `times` times; fails when kiln
    /// ends first. (Every step of kiln's has its own timeout, so a kiln
    /// that waits for nothing ends.)
    fn wait_for(&mut self, text: &str, times: usize) {
        while self.output().matches(text).count() < times {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                panic!(
                    "kiln ended ({status}) before printing {text:?} {times} time(s):\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.keyboard
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the terminal");
    }

    /// Answers every pause with enter until kiln ends; returns its exit
    /// code and how many pauses there were.
    fn press_enter_until_done(&mut self, pause: &str) -> (Option<i32>, usize) {
        let mut answered = 0;
        loop {
            let paused = self.output().matches(pause).count();
            if paused > answered {
                self.type_line("");
                answered = paused;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                return (status.code(), answered);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().expect("wait for kiln");
        self.join_readers();
        status.code()
    }

    /// Takes in the last of kiln's output, once it has ended.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
    }
}

const RETRY_QUESTION: &str = "[c] Clean up and exit, [a] abort without cleanup, or [r] retry step";

#[test]
fn on_error_ask_retries_a_failed_provisioner_and_the_build_goes_on() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            // Fails the first time, passes the second.
            "provisioners": [{"type": "shell", "inline": [
                "if [ -e /root/tried ]; then echo second-run; else touch /root/tried; echo first-run; exit 3; fi"
            ]}]
        }),
    );
    let mut kiln = Interactive::start(&scratch, &["build", "-on-error=ask", path_str(&template)]);
    kiln.wait_for(RETRY_QUESTION, 1);
    let asked = kiln.output();
    assert!(asked.contains("first-run"), "{asked}");
    assert!(asked.contains("Step \"provision\" failed"), "{asked}");
    kiln.type_line("r");
    let code = kiln.wait();
    let all = kiln.output();
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("second-run"), "{all}");
    assert_eq!(all.matches(RETRY_QUESTION).count(), 1, "{all}");
    assert!(scratch.path().join("out/disk.qcow2").exists(), "{all}");
}

#[test]
fn on_error_ask_answered_abort_leaves_the_output() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [{"type": "shell", "inline": ["exit 3"]}]
        }),
    );
    let mut kiln = Interactive::start(&scratch, &["build", "-on-error=ask", path_str(&template)]);
    kiln.wait_for(RETRY_QUESTION, 1);
    kiln.type_line("what");
    kiln.wait_for(RETRY_QUESTION, 2);
    kiln.type_line("a");
    let code = kiln.wait();
    let all = kiln.output();
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("Incorrect input: \"what\""), "{all}");
    assert!(scratch.path().join("out/disk.qcow2").exists(), "{all}");
    let marker = scratch.path().display().to_string();
    assert!(qemu_processes_with(&marker).is_empty(), "QEMU left running");
}

#[test]
fn on_error_ask_without_a_terminal_cleans_up_and_says_so() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out"}))],
            "provisioners": [{"type": "shell", "inline": ["exit 3"]}]
        }),
    );
    let run = scratch.run(&["build", "-on-error=ask", path_str(&template)]);
    run.assert_failure();
    let all = run.all();
    assert!(all.contains("nobody to answer"), "{all}");
    assert!(!scratch.path().join("out").exists(), "{all}");
}

#[test]
fn debug_pauses_after_each_step_until_enter() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [
                {"type": "shell", "inline": ["echo provisioned"]},
                {"type": "shell", "inline": ["echo again"]}
            ]
        }),
    );
    let mut kiln = Interactive::start(&scratch, &["build", "-debug", path_str(&template)]);
    let (code, pauses) = kiln.press_enter_until_done("Press enter to continue.");
    let all = kiln.output();
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.starts_with("Debug mode enabled. Builds will not be parallelized.")
            || all.contains(" Debug mode enabled. Builds will not be parallelized.\n"),
        "{all}"
    );
    let steps = [
        "source",
        "disk",
        "launch",
        "connect",
        "provision",
        "shutdown",
        "finalize",
    ];
    for step in steps {
        let pause = format!("Pausing after run of step '{step}'. Press enter to continue.");
        assert_eq!(all.matches(&pause).count(), 1, "{pause}:\n{all}");
    }
    // Packer's pause before each provisioner, two here.
    let before = "Pausing before the next provisioner. Press enter to continue.";
    assert_eq!(all.matches(before).count(), 2, "{all}");
    assert_eq!(pauses, steps.len() + 2, "{all}");
    let first = all.find(before).expect("first provisioner pause");
    let second = all.rfind(before).expect("second provisioner pause");
    let again = all.find("again").expect("second provisioner output");
    assert!(
        first < all.find("provisioned").expect("output") && second < again,
        "{all}"
    );
    // Each pause waited for its enter: the next step began after it.
    let provisioned = all.find("provisioned").expect("provisioner output");
    let after_connect = all
        .find("Pausing after run of step 'connect'")
        .expect("pause after connect");
    assert!(after_connect < provisioned, "{all}");
}
