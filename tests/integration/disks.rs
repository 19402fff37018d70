//! Issue 10, disks and interrupts: formats are never probed, an output never
//! replaces its input, backing loops and non-disks are refused, and a signal
//! during an export or an upload leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use kiln::gcp::{StorageClient, TokenSource};
use kiln_test_support::compute_fake::ComputeFake;
use kiln_test_support::emulators::StorageEmulator;

use crate::util::{Scratch, path_str};

const BUCKET: &str = "images";

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes other than this test whose command line mentions `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if entry.file_name() == me.as_str() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(cmdline);
        }
    }
    found
}

/// Files in `dir` whose names say they are kiln's temporaries.
fn temp_outputs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.ends_with(".tmp") || n.starts_with(".kiln-"))
        })
        .collect()
}

#[track_caller]
fn assert_nothing_left(scratch: &Scratch) {
    assert!(
        scratch.leftover_temp_files().is_empty(),
        "TMPDIR not empty: {:?}",
        scratch.leftover_temp_files()
    );
    assert!(
        temp_outputs(scratch.path()).is_empty(),
        "{:?}",
        temp_outputs(scratch.path())
    );
    let marker = path_str(scratch.path()).to_string();
    let running = processes_with(&marker);
    assert!(running.is_empty(), "still running: {running:?}");
}

/// Raw data that does not compress and is not all zeros: an export of it
/// takes long enough to be interrupted.
fn random_disk(scratch: &Scratch, name: &str, mib: usize) -> PathBuf {
    use std::io::Write;
    let path = scratch.path().join(name);
    let mut file = std::fs::File::create(&path).expect("create");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in block.chunks_mut(8) {
            // xorshift: cheap bytes gzip cannot shrink.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).expect("write");
    }
    path
}

fn sha(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn backing_chain_loops_are_refused_and_named() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    let (a, b, s) = (
        dir.join("a.qcow2"),
        dir.join("b.qcow2"),
        dir.join("s.qcow2"),
    );
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&b), "64M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "b.qcow2",
        path_str(&a),
    ]);
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "a.qcow2",
        path_str(&b),
    ]);
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&s), "64M"]);
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "s.qcow2",
        path_str(&s),
    ]);
    for (disk, expected) in [
        (&a, "a.qcow2 -> ".to_string() + path_str(&b) + " -> "),
        (&s, "s.qcow2 -> ".to_string() + path_str(&s)),
    ] {
        let run = scratch.run(&[
            "export",
            "--disk-format",
            "qcow2",
            "--output",
            "out.tar.gz",
            path_str(disk),
        ]);
        run.assert_usage_error();
        assert!(
            run.all().contains("the backing chain loops"),
            "{}",
            run.all()
        );
        assert!(run.all().contains(&expected), "{}", run.all());
        // Detected rather than told, the backing file is refused sooner.
        let run = scratch.run(&["export", "--output", "out.tar.gz", path_str(disk)]);
        run.assert_usage_error();
        assert!(run.all().contains("--disk-format qcow2"), "{}", run.all());
        assert!(!dir.join("out.tar.gz").exists());
        assert_nothing_left(&scratch);
    }
}

#[test]
fn an_output_that_is_the_input_is_refused() {
    let scratch = Scratch::new();
    let disk = random_disk(&scratch, "disk.raw", 2);
    let before = sha(&disk);
    std::os::unix::fs::symlink("disk.raw", scratch.path().join("link.tar.gz")).expect("symlink");
    std::fs::hard_link(&disk, scratch.path().join("hard.tar.gz")).expect("hard link");
    let linked = scratch.path().join("via-link.raw");
    std::os::unix::fs::symlink("disk.raw", &linked).expect("symlink");
    for (input, output) in [
        ("disk.raw", "disk.raw"),
        ("disk.raw", "./disk.raw"),
        ("disk.raw", "link.tar.gz"),
        ("disk.raw", "hard.tar.gz"),
        ("via-link.raw", "disk.raw"),
    ] {
        // --force replaces an output, never the input.
        for force in [false, true] {
            let mut args = vec!["export", "--output", output, input];
            if force {
                args.insert(1, "--force");
            }
            let run = scratch.run(&args);
            run.assert_usage_error();
            assert!(
                run.all().contains("is the disk being read"),
                "{input} -> {output}: {}",
                run.all()
            );
            assert_eq!(sha(&disk), before, "{input} -> {output} changed the input");
        }
    }
    // A qcow2's backing file is an input too.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "disk.raw",
        path_str(&scratch.path().join("top.qcow2")),
    ]);
    let run = scratch.run(&[
        "export",
        "--force",
        "--disk-format",
        "qcow2",
        "--output",
        "disk.raw",
        "top.qcow2",
    ]);
    run.assert_usage_error();
    assert!(
        run.all().contains("is the disk being read"),
        "{}",
        run.all()
    );
    assert_eq!(sha(&disk), before);
    assert_nothing_left(&scratch);
}

#[test]
fn an_existing_output_needs_force() {
    let scratch = Scratch::new();
    let disk = random_disk(&scratch, "disk.raw", 1);
    let out = scratch.write("out.tar.gz", "keep me");
    let run = scratch.run(&["export", "--output", "out.tar.gz", path_str(&disk)]);
    run.assert_usage_error();
    assert!(run.all().contains("exists; give --force"), "{}", run.all());
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "keep me");
    let dir_out = scratch.path().join("somedir");
    std::fs::create_dir(&dir_out).expect("mkdir");
    let run = scratch.run(&["export", "--force", "--output", "somedir", path_str(&disk)]);
    run.assert_usage_error();
    assert!(run.all().contains("is a directory"), "{}", run.all());

    scratch
        .run(&[
            "export",
            "--force",
            "--output",
            "out.tar.gz",
            path_str(&disk),
        ])
        .assert_success();
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&out)
        .output()
        .expect("tar");
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), "disk.raw");
    assert_nothing_left(&scratch);
}

/// A raw disk whose guest wrote a qcow2 header naming a host file: probed,
/// the host file would be exported. kiln refuses to guess, and told it is
/// raw, exports the disk's own bytes.
#[test]
fn a_raw_disk_carrying_a_qcow2_header_is_not_followed() {
    let scratch = Scratch::new();
    let marker = "HOST-SECRET-8c1f0e2a-do-not-export";
    let secret = scratch.write("host-secret", &marker.repeat(2048));
    let secret_len = std::fs::metadata(&secret).expect("stat").len();
    let header = scratch.path().join("header.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        path_str(&secret),
        path_str(&header),
        &secret_len.to_string(),
    ]);
    let disk = scratch.path().join("guest.raw");
    let mut bytes = std::fs::read(&header).expect("read header");
    bytes.resize(4 << 20, 0);
    std::fs::write(&disk, &bytes).expect("write disk");

    let run = scratch.run(&["export", "--output", "out.tar.gz", path_str(&disk)]);
    run.assert_usage_error();
    assert!(
        run.all().contains("naming the backing file"),
        "{}",
        run.all()
    );
    assert!(run.all().contains("--disk-format raw"), "{}", run.all());
    assert!(!scratch.path().join("out.tar.gz").exists());
    // kiln test would hand it to QEMU: refused the same way, before a boot.
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [{"name": "t", "command": "true"}]}"#,
    );
    let run = scratch.run(&["test", "--tests", path_str(&checks), path_str(&disk)]);
    assert_ne!(run.code, Some(0), "{}", run.all());
    assert!(
        run.all().contains("naming the backing file"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("Booting"), "{}", run.all());

    scratch
        .run(&[
            "export",
            "--disk-format",
            "raw",
            "--output",
            "out.tar.gz",
            path_str(&disk),
        ])
        .assert_success();
    let extracted = scratch.path().join("x");
    std::fs::create_dir(&extracted).expect("mkdir");
    let status = Command::new("tar")
        .arg("-xzSf")
        .arg(scratch.path().join("out.tar.gz"))
        .arg("-C")
        .arg(&extracted)
        .status()
        .expect("tar");
    assert!(status.success());
    let raw = extracted.join("disk.raw");
    let found = Command::new("grep")
        .args(["-q", "-a", "-F", marker])
        .arg(&raw)
        .status()
        .expect("grep");
    assert_eq!(
        found.code(),
        Some(1),
        "the host file's content is in the tarball"
    );
    // The disk's own bytes, zero-extended to the GiB.
    let same = Command::new("cmp")
        .arg("-n")
        .arg(bytes.len().to_string())
        .arg(&raw)
        .arg(&disk)
        .status()
        .expect("cmp");
    assert!(same.success(), "not the disk's own bytes");
    assert_nothing_left(&scratch);
}

#[test]
fn non_disk_inputs_are_refused_before_anything_runs() {
    let scratch = Scratch::new();
    let text = scratch.write("notes.txt", &"just some notes\n".repeat(64));
    let one = scratch.write("one-byte", "x");
    let dir = scratch.path().join("a-directory");
    std::fs::create_dir(&dir).expect("mkdir");
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [{"name": "t", "command": "true"}]}"#,
    );
    let cases = [
        (path_str(&text), "looks like a text file"),
        (path_str(&one), "is 1 byte(s): too small to be a disk image"),
        (path_str(&dir), "is a directory, not a disk image"),
        ("/dev/zero", "is a character device, not a disk image"),
    ];
    for (input, expected) in cases {
        let run = scratch.run(&["export", "--output", "out.tar.gz", input]);
        run.assert_usage_error();
        assert!(
            run.all().contains(expected),
            "export {input}: {}",
            run.all()
        );
        let run = scratch.run(&["test", "--tests", path_str(&checks), input]);
        assert_ne!(run.code, Some(0), "test {input}: {}", run.all());
        assert!(run.all().contains(expected), "test {input}: {}", run.all());
        assert!(
            !run.all().contains("Booting"),
            "test {input}: {}",
            run.all()
        );
    }
    assert!(!scratch.path().join("out.tar.gz").exists());
    assert_nothing_left(&scratch);
}

/// Starts kiln with its output lines arriving on a channel.
fn spawn_kiln(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> (Child, Receiver<String>) {
    let mut command = scratch.kiln(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn kiln");
    let (tx, rx) = channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// Reads lines until one matches; everything read is kept in `seen`.
fn wait_for_line(rx: &Receiver<String>, seen: &mut Vec<String>, wanted: &str) {
    loop {
        match rx.recv() {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!(
                "kiln ended before printing {wanted:?}:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill takes no pointers.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill failed");
}

/// Waits until the tarball being written beside `output` holds data: the
/// packaging is under way.
fn wait_for_partial_output(dir: &Path, child: &mut Child) {
    loop {
        let growing = temp_outputs(dir)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if growing {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kiln ended ({status}) before writing any of the tarball");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_signal_during_export_leaves_nothing_behind() {
    let scratch = Scratch::new();
    let raw = random_disk(&scratch, "big.raw", 256);
    let qcow = scratch.path().join("big.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path_str(&raw),
        path_str(&qcow),
    ]);
    for (disk, sig, status) in [
        (&raw, libc::SIGINT, 130),
        (&raw, libc::SIGTERM, 143),
        // Read through qemu-nbd, which must go too.
        (&qcow, libc::SIGINT, 130),
        (&qcow, libc::SIGTERM, 143),
    ] {
        let (mut child, rx) = spawn_kiln(
            &scratch,
            &[
                "export",
                "--level",
                "9",
                "--output",
                "out.tar.gz",
                path_str(disk),
            ],
            &[],
        );
        let mut seen = Vec::new();
        wait_for_line(&rx, &mut seen, "Packaging ");
        wait_for_partial_output(scratch.path(), &mut child);
        signal(&child, sig);
        let exit = child.wait().expect("wait");
        seen.extend(rx.iter());
        assert_eq!(exit.code(), Some(status), "{disk:?}:\n{}", seen.join("\n"));
        assert!(!scratch.path().join("out.tar.gz").exists());
        assert_nothing_left(&scratch);
    }
}

fn storage(base_url: &str) -> StorageClient {
    StorageClient::new(base_url, Arc::new(TokenSource::none())).expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_an_upload_leaves_no_object() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Arc::new(Scratch::new());
    let raw = random_disk(&scratch, "big.raw", 384);
    let qcow = scratch.path().join("big.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path_str(&raw),
        path_str(&qcow),
    ]);
    let env = [
        ("STORAGE_EMULATOR_HOST", emulator.base_url.clone()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.clone()),
    ];
    for (sig, status, object) in [
        (libc::SIGINT, 130, "int.tar.gz"),
        (libc::SIGTERM, 143, "term.tar.gz"),
    ] {
        let (shared, env, qcow) = (scratch.clone(), env.clone(), qcow.clone());
        let (code, seen) = tokio::task::spawn_blocking(move || {
            let scratch = shared;
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (mut child, rx) = spawn_kiln(
                &scratch,
                &[
                    "export",
                    "--level",
                    "9",
                    "--bucket",
                    BUCKET,
                    "--image-name",
                    "cut-short",
                    "--project",
                    "demo-project",
                    "--object-name",
                    object,
                    path_str(&qcow),
                ],
                &env,
            );
            let mut seen = Vec::new();
            // A progress line comes once chunks have reached the bucket.
            wait_for_line(&rx, &mut seen, "Uploading: ");
            signal(&child, sig);
            let exit = child.wait().expect("wait");
            seen.extend(rx.iter());
            (exit.code(), seen)
        })
        .await
        .expect("join");
        assert_eq!(code, Some(status), "{}", seen.join("\n"));
        assert!(
            !storage(&emulator.base_url)
                .object_exists(BUCKET, object)
                .await
                .expect("lookup"),
            "a half-made object is left:\n{}",
            seen.join("\n")
        );
        assert!(compute.image("demo-project", "cut-short").is_none());
        assert_nothing_left(&scratch);
    }
}

/// Interrupted while the image is being created, the whole object that
/// only carried the disk goes too.
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_image_creation_removes_the_object() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    compute.hold_operations(true);
    let scratch = Arc::new(Scratch::new());
    let disk = random_disk(&scratch, "small.raw", 4);
    let env = [
        ("STORAGE_EMULATOR_HOST", emulator.base_url.clone()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.clone()),
    ];
    let (code, seen) = {
        let scratch = scratch.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (mut child, rx) = spawn_kiln(
                &scratch,
                &[
                    "export",
                    "--bucket",
                    BUCKET,
                    "--image-name",
                    "held",
                    "--project",
                    "demo-project",
                    "--object-name",
                    "held.tar.gz",
                    path_str(&disk),
                ],
                &env,
            );
            let mut seen = Vec::new();
            wait_for_line(&rx, &mut seen, "Creating image held");
            signal(&child, libc::SIGINT);
            let exit = child.wait().expect("wait");
            seen.extend(rx.iter());
            (exit.code(), seen)
        })
        .await
        .expect("join")
    };
    assert_eq!(code, Some(130), "{}", seen.join("\n"));
    assert!(
        !storage(&emulator.base_url)
            .object_exists(BUCKET, "held.tar.gz")
            .await
            .expect("lookup"),
        "the object was left:\n{}",
        seen.join("\n")
    );
    assert_nothing_left(&scratch);
}

/// The compress post-processor packages on a blocking thread: a signal
/// while it runs still ends the build with its status, and leaves neither
/// the partial tarball nor qemu-nbd nor the output directory.
#[test]
fn a_signal_during_a_builds_compress_leaves_nothing_behind() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &serde_json::json!({
            "builders": [crate::util::fixture_builder(serde_json::json!({
                "output_directory": "out",
                "skip_compaction": true,
            }))],
            "provisioners": [{"type": "shell", "inline": [
                "dd if=/dev/urandom of=/root/noise bs=1048576 count=160 2>/dev/null",
                "sync",
            ]}],
            "post-processors": [{
                "type": "compress",
                "output": "image.tar.gz",
                "compression_level": 9,
            }],
        }),
    );
    let (mut child, rx) = spawn_kiln(&scratch, &["build", path_str(&template)], &[]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "Running post-processor: compress");
    wait_for_partial_output(scratch.path(), &mut child);
    signal(&child, libc::SIGTERM);
    let exit = child.wait().expect("wait");
    seen.extend(rx.iter());
    assert_eq!(exit.code(), Some(143), "{}", seen.join("\n"));
    assert!(!scratch.path().join("image.tar.gz").exists());
    assert!(!scratch.path().join("out").exists(), "{}", seen.join("\n"));
    assert_nothing_left(&scratch);
}
