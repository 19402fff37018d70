//! Images checked with tools that share no code with the writer: isoinfo
//! (genisoimage), xorriso, bsdtar (libarchive) and blkid (util-linux).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::iso9660::{self, Dir, FileEntry};
use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiLnKiLnKiLnKiLnKiLnKiLnKiLnKiLnKiLnKiLn kiln";
const WHEN: i64 = 1_700_000_000;

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program} is needed (apt-get install genisoimage xorriso libarchive-tools): {e}"
            )
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn text(program: &str, args: &[&str]) -> String {
    String::from_utf8(run(program, args)).expect("tool output is UTF-8")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn sorted_lines(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Every path in the image as isoinfo lists it with Joliet (`-J`), Rock
/// Ridge (`-R`) or plain ISO 9660 (`""`) names.
fn isoinfo_paths(img: &Path, mode: &str) -> Vec<String> {
    let mut args = vec!["-f", "-i", s(img)];
    if !mode.is_empty() {
        args.insert(0, mode);
    }
    sorted_lines(&text("isoinfo", &args))
}

fn xorriso_paths(img: &Path) -> Vec<String> {
    let out = text("xorriso", &["-indev", s(img), "-find", "/"]);
    sorted_lines(
        &out.lines()
            .map(|l| l.trim_matches('\'').to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn extract_joliet(img: &Path, path: &str) -> Vec<u8> {
    run("isoinfo", &["-J", "-x", path, "-i", s(img)])
}

fn extract_rock(img: &Path, path: &str) -> Vec<u8> {
    run("isoinfo", &["-R", "-x", path, "-i", s(img)])
}

fn extract_bsdtar(img: &Path, path: &str) -> Vec<u8> {
    run("bsdtar", &["-xOf", s(img), path])
}

fn seed() -> NoCloud<'static> {
    NoCloud {
        instance_id: "kiln-0001",
        hostname: "web-1",
        public_key: KEY,
        key_user: None,
    }
}

/// Bytes that do not repeat with the sector size, so misplaced sectors show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn nocloud_seed_reads_back_with_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("seed.iso");
    nocloud_seed(&img, &seed()).unwrap();

    let info = text("isoinfo", &["-d", "-i", s(&img)]);
    assert!(info.contains("Volume id: CIDATA\n"), "{info}");
    assert!(info.contains("Joliet with UCS level 3 found"), "{info}");
    assert!(
        info.contains("Rock Ridge signatures version 1 found"),
        "{info}"
    );
    // blkid prefers the Joliet label, which keeps its case.
    let label = text("blkid", &["-o", "value", "-s", "LABEL", s(&img)]);
    assert_eq!(label.trim(), "cidata");
    // Padded like genisoimage's images: small guests' label probes need it.
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(size % 2048, 0);
    assert!(size >= 170 * 2048, "seed of {size} bytes is not padded");
    assert!(
        info.contains(&format!("Volume size is: {}\n", size / 2048)),
        "{info}"
    );

    let names = vec!["/meta-data".to_string(), "/user-data".to_string()];
    assert_eq!(isoinfo_paths(&img, "-J"), names);
    assert_eq!(isoinfo_paths(&img, "-R"), names);
    assert_eq!(xorriso_paths(&img), ["/", "/meta-data", "/user-data"]);

    let user = user_data(&seed());
    let meta = meta_data(&seed());
    assert_eq!(extract_joliet(&img, "/user-data"), user.as_bytes());
    assert_eq!(extract_rock(&img, "/user-data"), user.as_bytes());
    assert_eq!(extract_bsdtar(&img, "user-data"), user.as_bytes());
    assert_eq!(extract_joliet(&img, "/meta-data"), meta.as_bytes());
    assert_eq!(extract_bsdtar(&img, "meta-data"), meta.as_bytes());

    let listing = text("isoinfo", &["-R", "-l", "-i", s(&img)]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-r--r--") && l.ends_with("user-data ")),
        "{listing}"
    );
}

#[test]
fn nocloud_user_data_keeps_the_key_on_its_own_line() {
    let text = user_data(&seed());
    assert!(text.starts_with("#cloud-config\n"));
    assert!(text.contains(&format!("\n  - {KEY}\n")), "{text}");
    // Nothing that would stay in the image: no user, no root policy.
    assert!(!text.contains("users:"), "{text}");
    assert!(!text.contains("disable_root"), "{text}");
    assert!(!text.contains("sudo"), "{text}");
}

#[test]
fn output_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.iso"),
        dir.path().join("b.iso"),
        dir.path().join("c.iso"),
    );
    nocloud::write(&a, &seed(), WHEN).unwrap();
    nocloud::write(&b, &seed(), WHEN).unwrap();
    nocloud::write(&c, &seed(), WHEN + 1).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
}

/// A source tree with nested directories, an empty file, a file just over
/// one sector, one over 64 KiB and an executable.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("a.txt"), "hello\n").unwrap();
    fs::write(root.join("sub/sector.bin"), pattern(2049)).unwrap();
    fs::write(root.join("sub/deeper/big.bin"), pattern(200_000)).unwrap();
    fs::write(root.join("sub/deeper/deepest/empty"), "").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn cd_files_and_content_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    fs::write(dir.path().join("Loose-File.CFG"), "loose").unwrap();
    let img = dir.path().join("cd.iso");
    let mut content = BTreeMap::new();
    content.insert("meta-data".to_string(), "instance-id: x\n".to_string());
    content.insert(
        "/nested/dir/user-data".to_string(),
        "#cloud-config\n".to_string(),
    );
    // cd_content wins over a file of the same path, as in Packer.
    content.insert("src/a.txt".to_string(), "replaced\n".to_string());
    cd_image(
        &[src.clone(), dir.path().join("Loose-File.CFG")],
        &content,
        Some("Extra Files"),
        &img,
    )
    .unwrap();

    let info = text("isoinfo", &["-d", "-i", s(&img)]);
    assert!(info.contains("Volume id: EXTRA_FILES\n"), "{info}");
    let label = text("blkid", &["-o", "value", "-s", "LABEL", s(&img)]);
    assert_eq!(label.trim(), "Extra Files");

    let expected: Vec<String> = [
        "/Loose-File.CFG",
        "/meta-data",
        "/nested",
        "/nested/dir",
        "/nested/dir/user-data",
        "/src",
        "/src/a.txt",
        "/src/empty-dir",
        "/src/run.sh",
        "/src/sub",
        "/src/sub/deeper",
        "/src/sub/deeper/big.bin",
        "/src/sub/deeper/deepest",
        "/src/sub/deeper/deepest/empty",
        "/src/sub/sector.bin",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    assert_eq!(isoinfo_paths(&img, "-J"), expected);
    assert_eq!(isoinfo_paths(&img, "-R"), expected);
    let mut with_root = expected.clone();
    with_root.insert(0, "/".to_string());
    assert_eq!(xorriso_paths(&img), with_root);

    for (path, want) in [
        ("src/a.txt", b"replaced\n".to_vec()),
        ("src/sub/sector.bin", pattern(2049)),
        ("src/sub/deeper/big.bin", pattern(200_000)),
        ("src/sub/deeper/deepest/empty", Vec::new()),
        ("nested/dir/user-data", b"#cloud-config\n".to_vec()),
        ("Loose-File.CFG", b"loose".to_vec()),
    ] {
        assert_eq!(extract_joliet(&img, &format!("/{path}")), want, "{path}");
        assert_eq!(extract_rock(&img, &format!("/{path}")), want, "{path}");
        assert_eq!(extract_bsdtar(&img, path), want, "{path}");
    }

    let listing = text("isoinfo", &["-R", "-l", "-i", s(&img)]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("run.sh ")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with("deeper ")),
        "{listing}"
    );
}

#[test]
fn directory_placement_follows_packer() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let img = dir.path().join("cd.iso");
    let paths = |files: &[PathBuf]| {
        cd_image(files, &BTreeMap::new(), None, &img).unwrap();
        isoinfo_paths(&img, "-R")
    };
    // Without a trailing slash the directory itself is at the root...
    assert!(paths(std::slice::from_ref(&src)).contains(&"/src/a.txt".to_string()));
    // ...with one, or through a glob, its contents are.
    let slash = PathBuf::from(format!("{}/", s(&src)));
    let contents = paths(&[slash]);
    assert!(contents.contains(&"/a.txt".to_string()), "{contents:?}");
    assert!(contents.contains(&"/sub/deeper/big.bin".to_string()));
    assert!(!contents.iter().any(|p| p.starts_with("/src")));
    let globbed = paths(&[src.join("*")]);
    assert_eq!(globbed, contents);
    let only_bins = paths(&[src.join("s?b/*.bin")]);
    assert_eq!(only_bins, ["/sector.bin"]);
    let info = text("isoinfo", &["-d", "-i", s(&img)]);
    assert!(info.contains("Volume id: PACKER\n"), "{info}");
}

#[test]
fn many_files_span_several_directory_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many");
    fs::create_dir(&src).unwrap();
    let mut expected = Vec::new();
    for i in 0..300 {
        // Same 8.3 stem for all: the primary names must still be unique.
        let name = format!("configuration-file-{i:03}.yaml");
        fs::write(src.join(&name), format!("file {i}\n")).unwrap();
        expected.push(format!("/many/{name}"));
    }
    expected.push("/many".to_string());
    expected.sort();
    let img = dir.path().join("cd.iso");
    cd_image(&[src], &BTreeMap::new(), Some("many"), &img).unwrap();
    assert_eq!(isoinfo_paths(&img, "-J"), expected);
    assert_eq!(isoinfo_paths(&img, "-R"), expected);
    let plain = isoinfo_paths(&img, "");
    assert_eq!(plain.len(), expected.len(), "primary names collide");
    let listing = text("isoinfo", &["-R", "-l", "-i", s(&img)]);
    assert!(listing.contains("configuration-file-299.yaml"));
    for i in [0, 150, 299] {
        let path = format!("many/configuration-file-{i:03}.yaml");
        let want = format!("file {i}\n").into_bytes();
        assert_eq!(extract_joliet(&img, &format!("/{path}")), want);
        assert_eq!(extract_bsdtar(&img, &path), want);
    }
}

#[test]
fn unusual_names_survive() {
    let mut root = Dir::default();
    for name in ["données.txt", "UPPER.lower", ".hidden", "a b;c", "x.tar.gz"] {
        root.add_file(&[name], FileEntry::bytes(name.as_bytes()));
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("n.iso");
    let options = iso9660::Options {
        volume_id: "names",
        timestamp: WHEN,
    };
    iso9660::write(&root, &options, &img).unwrap();
    assert_eq!(
        isoinfo_paths(&img, "-R"),
        [
            "/.hidden",
            "/UPPER.lower",
            "/a b;c",
            "/données.txt",
            "/x.tar.gz"
        ]
    );
    assert_eq!(
        extract_bsdtar(&img, "données.txt"),
        "données.txt".as_bytes()
    );
    assert_eq!(extract_rock(&img, "/a b;c"), b"a b;c");
}

#[test]
fn missing_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/user-data");
    let err = cd_image(
        std::slice::from_ref(&missing),
        &BTreeMap::new(),
        None,
        &dir.path().join("cd.iso"),
    )
    .unwrap_err();
    assert!(matches!(&err, SeedError::Missing { path } if *path == missing));
    assert!(err.to_string().contains(s(&missing)), "{err}");
}

#[test]
fn bad_content_path_and_glob_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cd.iso");
    let mut content = BTreeMap::new();
    content.insert("../escape".to_string(), String::new());
    let err = cd_image(&[], &content, None, &out).unwrap_err();
    assert!(matches!(err, SeedError::ContentPath { .. }), "{err}");
    let err = cd_image(&[PathBuf::from("[abc")], &BTreeMap::new(), None, &out).unwrap_err();
    assert!(matches!(err, SeedError::Pattern { .. }), "{err}");
}

#[test]
fn overlong_name_is_an_error() {
    let mut root = Dir::default();
    root.add_file(&[&"n".repeat(240)], FileEntry::bytes("x"));
    let dir = tempfile::tempdir().unwrap();
    let options = iso9660::Options {
        volume_id: "x",
        timestamp: WHEN,
    };
    let err = iso9660::write(&root, &options, &dir.path().join("x.iso")).unwrap_err();
    assert!(matches!(err, SeedError::NameTooLong { .. }), "{err}");
}

/// Writes a 4 GiB+ image; run with `cargo test -- --ignored` when needed.
#[test]
#[ignore = "writes a 4 GiB image"]
fn file_over_4_gib_uses_several_extents() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("huge.img");
    let tail = pattern(123);
    let size: u64 = 0xFFFF_F800 + 4096 + tail.len() as u64;
    let mut f = fs::File::create(&big).unwrap();
    f.seek(SeekFrom::Start(size - tail.len() as u64)).unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let img = dir.path().join("cd.iso");
    cd_image(&[big], &BTreeMap::new(), None, &img).unwrap();
    let listing = text(
        "xorriso",
        &["-indev", s(&img), "-find", "/", "-exec", "lsdl"],
    );
    assert!(listing.contains(&format!(" {size} ")), "{listing}");
    let script = format!("bsdtar -xOf '{}' huge.img | tail -c 123", s(&img));
    assert_eq!(run("sh", &["-c", &script]), tail);
    // isoinfo reads only the last extent of a multi-extent file; xorriso
    // reads them all.
    let copy = dir.path().join("copy.img");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            s(&img),
            "-extract",
            "/huge.img",
            s(&copy),
        ],
    );
    assert_eq!(fs::metadata(&copy).unwrap().len(), size);
}
