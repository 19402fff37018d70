//! Support for the integration tests: the fixture image, a scratch
//! directory per test, running `kiln`, and reading files back out of a
//! built disk without booting it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The fixture image, built once (and cached outside the repository) by
/// `vm-fixtures/build.sh`, which prints its path last.
pub fn fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // An image built elsewhere (by a newer build.sh, say) can stand in.
        if let Some(path) = std::env::var_os("KILN_TEST_FIXTURE") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-fixtures/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run vm-fixtures/build.sh");
        assert!(output.status.success(), "vm-fixtures/build.sh failed");
        let stdout = String::from_utf8(output.stdout).expect("utf-8 path");
        let path = PathBuf::from(stdout.lines().last().expect("a path").trim());
        assert!(
            path.is_absolute() && path.exists(),
            "bad fixture path {path:?}"
        );
        path
    })
}

/// The cloud-style fixture (`vm-fixtures/build.sh cloud`): default user
/// `ubuntu` made by the fixture's cloud-init, root refused with
/// cloud-init's "Please login as the user" command.
pub fn cloud_fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        if let Some(path) = std::env::var_os("KILN_TEST_CLOUD_FIXTURE") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-fixtures/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("cloud")
            .stderr(Stdio::inherit())
            .output()
            .expect("run vm-fixtures/build.sh cloud");
        assert!(output.status.success(), "vm-fixtures/build.sh cloud failed");
        let stdout = String::from_utf8(output.stdout).expect("utf-8 path");
        let path = PathBuf::from(stdout.lines().last().expect("a path").trim());
        assert!(
            path.is_absolute() && path.exists(),
            "bad fixture path {path:?}"
        );
        path
    })
}

/// The installer-style fixture (`vm-fixtures/build.sh installer`): the
/// default image, but syslinux waits at a `boot:` prompt for a minute,
/// and the guest fetches `kiln.fetch=URL` from its kernel command line
/// into /var/lib/kiln-fetched.
pub fn installer_fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        if let Some(path) = std::env::var_os("KILN_TEST_INSTALLER_FIXTURE") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-fixtures/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("installer")
            .stderr(Stdio::inherit())
            .output()
            .expect("run vm-fixtures/build.sh installer");
        assert!(
            output.status.success(),
            "vm-fixtures/build.sh installer failed"
        );
        let stdout = String::from_utf8(output.stdout).expect("utf-8 path");
        let path = PathBuf::from(stdout.lines().last().expect("a path").trim());
        assert!(
            path.is_absolute() && path.exists(),
            "bad fixture path {path:?}"
        );
        path
    })
}

/// The realistic fixture (`vm-fixtures/build-realistic.sh`): Debian 12
/// with systemd, real cloud-init (NoCloud and GCE datasources) and
/// OpenSSH, set up like an Ubuntu cloud image (default user `ubuntu` with
/// password-less sudo, root refused, the root partition grown to the disk).
/// Slow to boot under TCG (minutes on a busy machine).
pub fn realistic_fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        if let Some(path) = std::env::var_os("KILN_TEST_REALISTIC_FIXTURE") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-fixtures/build-realistic.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run vm-fixtures/build-realistic.sh");
        assert!(
            output.status.success(),
            "vm-fixtures/build-realistic.sh failed"
        );
        let stdout = String::from_utf8(output.stdout).expect("utf-8 path");
        let path = PathBuf::from(stdout.lines().last().expect("a path").trim());
        assert!(
            path.is_absolute() && path.exists(),
            "bad fixture path {path:?}"
        );
        path
    })
}

/// A directory of its own for one test, with its own TMPDIR inside so the
/// test can check that kiln left no temporary files behind.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir()
            .expect("scratch dir");
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        path
    }

    pub fn write_json(&self, name: &str, value: &serde_json::Value) -> PathBuf {
        self.write(name, &serde_json::to_string_pretty(value).expect("json"))
    }

    /// A `kiln` command run from this directory with TMPDIR inside it.
    pub fn kiln(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(args)
            .current_dir(self.path())
            .env("TMPDIR", self.tmp())
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.kiln(args).output().expect("run kiln"))
    }

    /// What kiln left in its TMPDIR.
    pub fn leftover_temp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.tmp())
            .expect("read tmp")
            .map(|e| e.expect("entry").path())
            .collect()
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "kiln failed:\n{}", self.all());
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "kiln did not exit with {code}:\n{}",
            self.all()
        );
        self
    }

    /// Exit status 1: the work started and failed.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        self.assert_code(1)
    }

    /// Exit status 2: the arguments, the template or the checks are wrong,
    /// and nothing was started.
    #[track_caller]
    pub fn assert_usage_error(&self) -> &Self {
        self.assert_code(2)
    }

    /// `text` is in the error output, and not on stdout.
    #[track_caller]
    pub fn assert_error_on_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "{text:?} is not on stderr:\n{}",
            self.all()
        );
        assert!(
            !self.stdout.contains(text),
            "{text:?} is on stdout:\n{}",
            self.stdout
        );
        self
    }

    /// In -machine-readable mode: stdout holds records and nothing else.
    #[track_caller]
    pub fn assert_only_records_on_stdout(&self) -> &Self {
        for line in self.stdout.lines() {
            let mut fields = line.split(',');
            let stamp = fields.next().unwrap_or_default();
            assert!(
                !stamp.is_empty()
                    && stamp.bytes().all(|b| b.is_ascii_digit())
                    && fields.count() >= 2,
                "not a machine-readable record on stdout: {line:?}\n{}",
                self.stdout
            );
        }
        self
    }
}

/// A qemu builder on the fixture with the given extra keys.
pub fn fixture_builder(extra: serde_json::Value) -> serde_json::Value {
    let mut builder = serde_json::json!({
        "type": "qemu",
        "iso_url": fixture().display().to_string(),
        "iso_checksum": "none",
        "disk_image": true,
        "disk_size": "1G",
        "accelerator": "tcg",
        "ssh_username": "root",
        "ssh_timeout": "3m",
        "shutdown_command": "poweroff",
        "shutdown_timeout": "1m",
    });
    if let (Some(builder), Some(extra)) = (builder.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            builder.insert(key.clone(), value.clone());
        }
    }
    builder
}

/// QEMU processes still running whose command line mentions `marker`.
pub fn qemu_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-system") && cmdline.contains(marker) {
            found.push(cmdline);
        }
    }
    found
}

/// The root filesystem (the ext4 partition) of a built disk, read without
/// booting it: qemu-img to raw, the partition table from sfdisk, files
/// from debugfs.
pub struct GuestRoot {
    _dir: tempfile::TempDir,
    partitions: Vec<PathBuf>,
}

impl GuestRoot {
    pub fn open(disk: &Path) -> GuestRoot {
        let dir = tempfile::tempdir().expect("tmp");
        let raw = dir.path().join("disk.raw");
        let status = Command::new("qemu-img")
            .args(["convert", "-f", disk_format(disk), "-O", "raw"])
            .arg(disk)
            .arg(&raw)
            .status()
            .expect("qemu-img");
        assert!(status.success(), "qemu-img convert failed");
        let table = Command::new("sfdisk")
            .arg("-J")
            .arg(&raw)
            .output()
            .expect("sfdisk");
        let table: serde_json::Value = serde_json::from_slice(&table.stdout).expect("sfdisk json");
        let mut partitions = Vec::new();
        for (index, partition) in table["partitiontable"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .enumerate()
        {
            let start = partition["start"].as_u64().expect("start") * 512;
            let size = partition["size"].as_u64().expect("size") * 512;
            let part = dir.path().join(format!("part{index}.img"));
            let status = Command::new("dd")
                .arg(format!("if={}", raw.display()))
                .arg(format!("of={}", part.display()))
                .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
                .arg(format!("skip={start}"))
                .arg(format!("count={size}"))
                .status()
                .expect("dd");
            assert!(status.success());
            partitions.push(part);
        }
        std::fs::remove_file(&raw).expect("remove raw copy");
        GuestRoot {
            _dir: dir,
            partitions,
        }
    }

    /// The file's content, from whichever partition holds it.
    pub fn read(&self, guest_path: &str) -> Option<String> {
        for part in &self.partitions {
            let out = Command::new("debugfs")
                .args(["-R", &format!("cat {guest_path}")])
                .arg(part)
                .output()
                .expect("debugfs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success()
                && !stderr.contains("File not found")
                && !stderr.contains("Bad magic")
            {
                return Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        }
        None
    }
}

impl GuestRoot {
    /// The names in a directory (without `.` and `..`), from whichever
    /// partition has it.
    pub fn list(&self, guest_dir: &str) -> Option<Vec<String>> {
        for part in &self.partitions {
            let out = Command::new("debugfs")
                .args(["-R", &format!("ls -p {guest_dir}")])
                .arg(part)
                .output()
                .expect("debugfs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success()
                || stderr.contains("File not found")
                || stderr.contains("Bad magic")
            {
                continue;
            }
            // `ls -p`: /inode/mode/uid/gid/name/size/ per entry.
            let names = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| line.split('/').nth(5).map(str::to_string))
                .filter(|name| !name.is_empty() && name != "." && name != "..")
                .collect();
            return Some(names);
        }
        None
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Nothing of a finished run may stay behind: no QEMU started from this
/// test's directory, no temporary files.
#[track_caller]
pub fn assert_nothing_left(scratch: &Scratch) {
    let marker = scratch.path().display().to_string();
    let running = qemu_processes_with(&marker);
    assert!(running.is_empty(), "QEMU still running: {running:?}");
    assert!(
        scratch.leftover_temp_files().is_empty(),
        "temporary files left: {:?}",
        scratch.leftover_temp_files()
    );
}

/// The test disks are named for their format; qemu-img is never left to
/// probe one.
pub fn disk_format(disk: &Path) -> &'static str {
    match disk.extension().and_then(|ext| ext.to_str()) {
        Some("qcow2") => "qcow2",
        _ => "raw",
    }
}

impl GuestRoot {
    /// Every file of the ext4 root partition: path → type, mode and a
    /// digest of the content (or the link's target), read with debugfs'
    /// `rdump`; for comparing two built disks file by file.
    pub fn files(&self) -> std::collections::BTreeMap<String, String> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut found = std::collections::BTreeMap::new();
        for part in &self.partitions {
            let out = tempfile::tempdir().expect("tmp");
            let status = Command::new("debugfs")
                .args(["-R", &format!("rdump / {}", out.path().display())])
                .arg(part)
                .output()
                .expect("debugfs");
            if !status.status.success()
                || String::from_utf8_lossy(&status.stderr).contains("Bad magic")
            {
                continue;
            }
            let mut stack = vec![out.path().to_path_buf()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let rel = path
                        .strip_prefix(out.path())
                        .expect("inside")
                        .display()
                        .to_string();
                    let meta = std::fs::symlink_metadata(&path).expect("stat");
                    let mode = meta.permissions().mode() & 0o7777;
                    let what = if meta.file_type().is_symlink() {
                        format!(
                            "link {}",
                            std::fs::read_link(&path).expect("link").display()
                        )
                    } else if meta.is_dir() {
                        stack.push(path.clone());
                        "dir".to_string()
                    } else if meta.is_file() {
                        let data = std::fs::read(&path).expect("read");
                        format!("file {} {:x}", meta.size(), md5_like(&data))
                    } else {
                        "special".to_string()
                    };
                    found.insert(format!("/{rel}"), format!("{what} {mode:o}"));
                }
            }
        }
        found
    }
}

/// A content fingerprint good enough to tell files apart in a test.
fn md5_like(data: &[u8]) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    data.len().hash(&mut b);
    data.iter().rev().take(4096).for_each(|x| x.hash(&mut b));
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}
