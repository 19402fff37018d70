//! `kiln build -cache`: the step cache and warm boots, on the tiny
//! fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::util::{GuestRoot, Run, Scratch, fixture, fixture_builder, path_str};

const SCRIPT: &str = "#!/bin/sh\necho RAN-THREE $GREETING\necho \"$GREETING\" > /etc/greeting\n";

/// Three provisioners of three kinds: inline commands, an uploaded file, a
/// script reading a user variable.
fn template(scratch: &Scratch, source: &Path) -> PathBuf {
    scratch.write("files/data.txt", "first data\n");
    scratch.write("script.sh", SCRIPT);
    scratch.write_json(
        "t.json",
        &json!({
            "variables": {"greeting": "hello"},
            "builders": [fixture_builder(json!({
                "iso_url": path_str(source),
                "output_directory": "out",
                "vm_name": "disk.qcow2",
            }))],
            "provisioners": [
                {"type": "shell", "inline": ["echo RAN-ONE", "echo one > /etc/one"]},
                {"type": "file", "source": "files/data.txt", "destination": "/etc/data.txt"},
                {"type": "shell", "script": "script.sh",
                 "environment_vars": ["GREETING={{user `greeting`}}"]},
            ]
        }),
    )
}

fn cache_dir(scratch: &Scratch) -> PathBuf {
    scratch.path().join("cache")
}

fn build(scratch: &Scratch, extra: &[&str]) -> Run {
    let mut args = vec!["build", "-cache", "-force"];
    args.extend_from_slice(extra);
    args.push("t.json");
    let output = scratch
        .kiln(&args)
        .env("KILN_CACHE_DIR", cache_dir(scratch))
        .output()
        .expect("run kiln");
    Run::from(output)
}

/// `(hits, misses)` from the build's summary line.
fn counts(run: &Run) -> (usize, usize) {
    let all = run.all();
    let line = all
        .lines()
        .find(|line| line.contains("step cache: ") && line.contains(" hit(s), "))
        .unwrap_or_else(|| panic!("no step cache summary:\n{all}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect();
    let n = numbers.len();
    assert!(n >= 2, "{line}");
    (numbers[n - 2], numbers[n - 1])
}

fn restored_after(run: &Run) -> Option<String> {
    run.all().lines().find_map(|line| {
        line.split("restoring the machine saved after ")
            .nth(1)
            .map(|rest| rest.trim().to_string())
    })
}

fn output_file(scratch: &Scratch, path: &str) -> Option<String> {
    GuestRoot::open(&scratch.path().join("out/disk.qcow2")).read(path)
}

/// The complete entries of the step cache: directory → meta.json.
fn entries(scratch: &Scratch) -> Vec<(PathBuf, serde_json::Value)> {
    let steps = cache_dir(scratch).join("steps");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&steps).expect("steps dir").flatten() {
        let meta = entry.path().join("meta.json");
        if let Ok(text) = std::fs::read_to_string(&meta) {
            found.push((
                entry.path(),
                serde_json::from_str(&text).expect("meta json"),
            ));
        }
    }
    found
}

fn entry_labelled(scratch: &Scratch, label: &str) -> PathBuf {
    entries(scratch)
        .into_iter()
        .find(|(_, meta)| meta["label"].as_str().is_some_and(|l| l.ends_with(label)))
        .map(|(dir, _)| dir)
        .unwrap_or_else(|| panic!("no entry labelled {label}: {:?}", entries(scratch)))
}

#[test]
fn a_rebuild_runs_from_the_first_changed_step_and_an_unchanged_one_boots_nothing() {
    let scratch = Scratch::new();
    template(&scratch, fixture());

    let first = build(&scratch, &[]);
    first.assert_success();
    assert_eq!(counts(&first), (0, 5), "{}", first.all());
    assert!(first.all().contains("RAN-ONE"), "{}", first.all());
    assert_eq!(entries(&scratch).len(), 5);

    // Nothing changed: the finished disk comes from the cache, no QEMU.
    let unchanged = build(&scratch, &[]);
    unchanged.assert_success();
    assert_eq!(counts(&unchanged), (5, 0), "{}", unchanged.all());
    assert!(
        !unchanged.all().contains("Starting QEMU"),
        "{}",
        unchanged.all()
    );
    assert_eq!(
        output_file(&scratch, "/etc/greeting").as_deref(),
        Some("hello\n")
    );

    // The script's content: only the last provisioner runs again.
    scratch.write(
        "script.sh",
        &SCRIPT.replace("RAN-THREE", "RAN-THREE-EDITED"),
    );
    let edited = build(&scratch, &[]);
    edited.assert_success();
    assert_eq!(
        restored_after(&edited).as_deref(),
        Some("provisioner 2"),
        "{}",
        edited.all()
    );
    assert_eq!(counts(&edited), (3, 2), "{}", edited.all());
    assert!(!edited.all().contains("RAN-ONE"), "{}", edited.all());
    assert!(
        edited.all().contains("RAN-THREE-EDITED hello"),
        "{}",
        edited.all()
    );

    // The uploaded file's content: from the file provisioner on.
    scratch.write("files/data.txt", "second data\n");
    let uploaded = build(&scratch, &[]);
    uploaded.assert_success();
    assert_eq!(
        restored_after(&uploaded).as_deref(),
        Some("provisioner 1"),
        "{}",
        uploaded.all()
    );
    assert_eq!(counts(&uploaded), (2, 3), "{}", uploaded.all());
    assert_eq!(
        output_file(&scratch, "/etc/data.txt").as_deref(),
        Some("second data\n")
    );
    assert_eq!(output_file(&scratch, "/etc/one").as_deref(), Some("one\n"));

    // A variable the last script reads.
    let variable = build(&scratch, &["-var", "greeting=bye"]);
    variable.assert_success();
    assert_eq!(
        restored_after(&variable).as_deref(),
        Some("provisioner 2"),
        "{}",
        variable.all()
    );
    assert_eq!(counts(&variable), (3, 2), "{}", variable.all());
    assert_eq!(
        output_file(&scratch, "/etc/greeting").as_deref(),
        Some("bye\n")
    );

    // Another source image (the same system, other bytes): nothing reused.
    let other_source = scratch.path().join("other-source.qcow2");
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2"])
        .arg(fixture())
        .arg(&other_source)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    template(&scratch, &other_source);
    let source = build(&scratch, &[]);
    source.assert_success();
    assert_eq!(restored_after(&source), None, "{}", source.all());
    assert_eq!(counts(&source), (0, 5), "{}", source.all());
    assert!(source.all().contains("RAN-ONE"), "{}", source.all());

    // `kiln cache` lists the steps by build and step, and prunes them all.
    let cache = |args: &[&str]| {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        Run::from(
            scratch
                .kiln(&all)
                .env("KILN_CACHE_DIR", cache_dir(&scratch))
                .output()
                .expect("kiln cache"),
        )
    };
    let list = cache(&["list"]);
    list.assert_success();
    for label in ["qemu: boot", "provisioner 3 (shell)", "qemu: finished disk"] {
        assert!(
            list.stdout.contains(label),
            "{label} not listed:\n{}",
            list.all()
        );
    }
    cache(&["prune", "-all"]).assert_success();
    assert!(entries(&scratch).is_empty(), "{:?}", entries(&scratch));
}

/// Rewrites `meta.json` of the entry in `dir` so that `name` as it is now
/// passes the entry's checks: what a snapshot that is intact but cannot be
/// loaded (another QEMU, another host) looks like.
fn vouch_for(dir: &Path, name: &str) {
    use std::os::unix::fs::MetadataExt;
    let meta_path = dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).expect("meta")).expect("json");
    let file = dir.join(name);
    let digest = Command::new("sha256sum")
        .arg(&file)
        .output()
        .expect("sha256sum");
    let digest = String::from_utf8_lossy(&digest.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string();
    let stat = std::fs::metadata(&file).expect("stat");
    for record in meta["files"].as_array_mut().expect("files") {
        if record["name"] == name {
            record["sha256"] = json!(digest);
            record["fingerprint"] = json!({
                "size": stat.len(),
                "mtime_ns": stat.mtime() * 1_000_000_000 + stat.mtime_nsec(),
                "ctime_ns": stat.ctime() * 1_000_000_000 + stat.ctime_nsec(),
                "inode": stat.ino(),
                "dev": stat.dev(),
            });
        }
    }
    std::fs::write(
        &meta_path,
        serde_json::to_string_pretty(&meta).expect("json"),
    )
    .expect("write");
}

fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&[byte[0] ^ 0xff]).expect("write");
}

/// A scratch directory whose cache holds every step of [`template`].
fn built_once() -> Scratch {
    let scratch = Scratch::new();
    template(&scratch, fixture());
    build(&scratch, &[]).assert_success();
    scratch
}

#[test]
fn corrupt_and_half_written_entries_are_built_again_never_used() {
    let scratch = built_once();

    // A flipped byte in the saved machine after the file provisioner, and
    // a finished disk whose record never got written.
    let step_two = entry_labelled(&scratch, "provisioner 2 (file)");
    let state = step_two.join("state");
    let size = std::fs::metadata(&state).expect("state").len();
    flip_byte(&state, size / 2);
    let finished = entry_labelled(&scratch, "finished disk");
    std::fs::remove_file(finished.join("meta.json")).expect("remove meta");

    let rebuilt = build(&scratch, &[]);
    rebuilt.assert_success();
    assert!(
        rebuilt.all().contains("is corrupt"),
        "the corrupt entry was not reported:\n{}",
        rebuilt.all()
    );
    assert_eq!(
        restored_after(&rebuilt).as_deref(),
        Some("provisioner 1"),
        "{}",
        rebuilt.all()
    );
    assert_eq!(counts(&rebuilt), (2, 3), "{}", rebuilt.all());
    assert_eq!(entries(&scratch).len(), 5);

    // Both were made again, whole.
    let again = build(&scratch, &[]);
    again.assert_success();
    assert_eq!(counts(&again), (5, 0), "{}", again.all());
}

#[test]
fn a_saved_machine_that_does_not_load_falls_back_to_a_cold_boot() {
    let scratch = built_once();

    // Intact as far as the cache can tell, but not a machine QEMU can load.
    let step_two = entry_labelled(&scratch, "provisioner 2 (file)");
    let state = step_two.join("state");
    let size = std::fs::metadata(&state).expect("state").len();
    std::fs::write(&state, vec![0x5a; size as usize]).expect("write state");
    vouch_for(&step_two, "state");

    scratch.write("script.sh", &SCRIPT.replace("RAN-THREE", "RAN-THREE-COLD"));
    let rebuilt = build(&scratch, &[]);
    rebuilt.assert_success();
    let all = rebuilt.all();
    assert!(all.contains("warm boot failed ("), "{all}");
    assert!(all.contains("; booting cold"), "{all}");
    assert!(
        all.contains("RAN-ONE"),
        "the cold boot must run every provisioner:\n{all}"
    );
    assert!(all.contains("RAN-THREE-COLD hello"), "{all}");
    assert_eq!(
        output_file(&scratch, "/etc/data.txt").as_deref(),
        Some("first data\n")
    );
    assert!(
        crate::util::qemu_processes_with(path_str(scratch.path())).is_empty(),
        "a QEMU was left running"
    );
}

#[test]
fn concurrent_builds_sharing_the_cache_each_get_a_whole_disk() {
    let scratch = Scratch::new();
    template(&scratch, fixture());
    let other = scratch.write_json("t2.json", &{
        let mut value: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(scratch.path().join("t.json")).expect("t.json"),
        )
        .expect("json");
        value["builders"][0]["output_directory"] = json!("out2");
        value
    });
    let spawn = |template: &str| {
        scratch
            .kiln(&["build", "-cache", template])
            .env("KILN_CACHE_DIR", cache_dir(&scratch))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kiln")
    };
    let first = spawn("t.json");
    let second = spawn(path_str(&other));
    let first = Run::from(first.wait_with_output().expect("first"));
    let second = Run::from(second.wait_with_output().expect("second"));
    first.assert_success();
    second.assert_success();
    // Each entry was made once, by one of them, and is whole.
    assert_eq!(entries(&scratch).len(), 5, "{:?}", entries(&scratch));
    let (hits_first, misses_first) = counts(&first);
    let (hits_second, misses_second) = counts(&second);
    assert!(
        misses_first + misses_second >= 5,
        "{}\n{}",
        first.all(),
        second.all()
    );
    // The one that waited used what the other saved instead of booting.
    assert!(
        hits_first + hits_second >= 1,
        "{}\n{}",
        first.all(),
        second.all()
    );
    for out in ["out/disk.qcow2", "out2/disk.qcow2"] {
        let root = GuestRoot::open(&scratch.path().join(out));
        assert_eq!(
            root.read("/etc/greeting").as_deref(),
            Some("hello\n"),
            "{out}"
        );
        assert_eq!(
            root.read("/etc/data.txt").as_deref(),
            Some("first data\n"),
            "{out}"
        );
    }
    let again = build(&scratch, &[]);
    again.assert_success();
    assert_eq!(counts(&again), (5, 0), "{}", again.all());
}

/// Files that differ between any two builds of the same template, cached
/// or not: the boot's own records.
fn volatile(path: &str) -> bool {
    const VOLATILE: &[&str] = &[
        "/var/log",
        "/var/lib/fixture",
        "/etc/dropbear",
        "/root/.ash_history",
        "/tmp",
        "/var/run",
        "/run",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/hosts",
        "/lost+found",
    ];
    VOLATILE
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

#[test]
fn a_cached_output_holds_the_same_files_as_an_uncached_one() {
    let scratch = Scratch::new();
    template(&scratch, fixture());
    // Fill the cache, then rebuild from a saved machine with another value.
    build(&scratch, &[]).assert_success();
    let warm = build(&scratch, &["-var", "greeting=compare"]);
    warm.assert_success();
    assert_eq!(
        restored_after(&warm).as_deref(),
        Some("provisioner 2"),
        "{}",
        warm.all()
    );
    let cached = GuestRoot::open(&scratch.path().join("out/disk.qcow2")).files();

    let plain = scratch.run(&["build", "-force", "-var", "greeting=compare", "t.json"]);
    plain.assert_success();
    let uncached = GuestRoot::open(&scratch.path().join("out/disk.qcow2")).files();

    let differing: Vec<String> = cached
        .keys()
        .chain(uncached.keys())
        .filter(|path| !volatile(path))
        .filter(|path| cached.get(*path) != uncached.get(*path))
        .map(|path| {
            format!(
                "{path}: cached {:?}, uncached {:?}",
                cached.get(path),
                uncached.get(path)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "files differ:\n{}",
        differing.join("\n")
    );
    assert!(cached.len() > 50, "too few files read: {}", cached.len());
    assert_eq!(
        cached
            .get("/etc/greeting")
            .map(|s| s.starts_with("file 8 ")),
        Some(true)
    );
}
