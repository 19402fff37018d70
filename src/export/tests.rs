//! End-to-end checks against the real tools: GNU tar, gzip, qemu-img,
//! qemu-io, qemu-nbd, cmp.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

pub(super) fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{program} is needed for this test: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(super) fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A qcow2 overlay `top` on `base`, whose format is `base_format`.
pub(super) fn overlay(base: &Path, base_format: &str, top: &Path) {
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            base_format,
            "-b",
            s(base),
            s(top),
        ],
    );
}

/// Random-looking bytes at `offset`, `len` long, written with dd so the
/// filesystem allocates exactly those blocks.
fn write_at(disk: &Path, offset_kib: u64, len_kib: u64, source: &str) {
    run(
        "dd",
        &[
            &format!("if={source}"),
            &format!("of={}", s(disk)),
            "bs=1024",
            &format!("seek={offset_kib}"),
            &format!("count={len_kib}"),
            "conv=notrunc",
            "status=none",
        ],
    );
}

fn sparse_raw(dir: &Path, size: &str) -> PathBuf {
    let disk = dir.join("disk.raw");
    run("truncate", &["-s", size, s(&disk)]);
    disk
}

fn qcow2(dir: &Path, size: &str, writes: &[&str]) -> PathBuf {
    let disk = dir.join("disk.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", s(&disk), size]);
    for write in writes {
        run("qemu-io", &["-c", write, s(&disk)]);
    }
    disk
}

fn options() -> PackageOptions<'static> {
    PackageOptions {
        mtime: Some(1_700_000_000),
        threads: 2,
        ..PackageOptions::default()
    }
}

/// Packages `disk`, then checks the tarball the way a user (and GCE) would:
/// gzip -t, one `disk.raw` of the rounded size, and extraction giving the
/// disk's raw view, zero-extended, byte for byte.
fn package_and_check(disk: &Path, dir: &Path) -> PackageSummary {
    package_and_check_as(disk, dir, FormatPolicy::Detect)
}

fn package_and_check_as(disk: &Path, dir: &Path, format: FormatPolicy) -> PackageSummary {
    let tarball = dir.join("disk.tar.gz");
    let options = PackageOptions {
        format,
        ..options()
    };
    let summary = package_to_file(disk, &tarball, false, &options).unwrap();
    assert_eq!(summary.raw_size % GIB, 0);
    assert!(summary.raw_size >= summary.virtual_size);
    assert!(summary.raw_size < summary.virtual_size + GIB);
    assert_eq!(
        std::fs::metadata(&tarball).unwrap().len(),
        summary.compressed_bytes
    );

    run("gzip", &["-t", s(&tarball)]);
    let listing = run("tar", &["-tvzf", s(&tarball)]);
    let listing = String::from_utf8(listing.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    assert!(lines[0].starts_with("-rw-r--r-- root/root"), "{listing}");
    assert!(lines[0].ends_with(" disk.raw"), "{listing}");
    assert!(
        lines[0].contains(&format!(" {} ", summary.raw_size)),
        "{listing}"
    );

    let expected = dir.join("expected.raw");
    let format = if disk.extension().is_some_and(|ext| ext == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    run(
        "qemu-img",
        &["convert", "-f", format, "-O", "raw", s(disk), s(&expected)],
    );
    run(
        "truncate",
        &["-s", &summary.raw_size.to_string(), s(&expected)],
    );
    let unpacked = dir.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run("tar", &["-xzSf", s(&tarball), "-C", s(&unpacked)]);
    run("cmp", &[s(&expected), s(&unpacked.join("disk.raw"))]);
    summary
}

#[test]
fn gnu_tar_writes_the_same_archive() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_raw(dir.path(), "64M");
    write_at(&disk, 1024, 12, "/dev/urandom");
    // Enough separate chunks to need two extension blocks.
    for i in 0..30 {
        write_at(&disk, 4000 + i * 40, 4, "/dev/urandom");
    }
    write_at(&disk, 65536 - 8, 8, "/dev/urandom");
    run("chmod", &["0644", s(&disk)]);
    let reference = dir.path().join("ref.tar");
    run(
        "tar",
        &[
            "--format=oldgnu",
            "-S",
            "--owner=root:0",
            "--group=root:0",
            "--mtime=@1700000000",
            "-C",
            s(dir.path()),
            "-cf",
            s(&reference),
            "disk.raw",
        ],
    );

    let opened = open(&disk, FormatPolicy::Detect, None).unwrap();
    let mut reader = opened.reader;
    let map = extents::drop_zero_blocks(reader.as_mut(), &opened.extents, ZERO_BLOCK).unwrap();
    let entry = tar::SparseEntry {
        name: ENTRY_NAME,
        real_size: opened.virtual_size,
        mtime: 1_700_000_000,
        map: &map,
    };
    let mut ours = Vec::new();
    let len = tar::write_archive(&entry, reader.as_mut(), &mut ours, &mut |_| {}).unwrap();
    assert_eq!(len, ours.len() as u64);
    let theirs = std::fs::read(&reference).unwrap();
    // Headers first, field by field readable on failure.
    let blocks = 3 * tar::BLOCK;
    assert_eq!(
        String::from_utf8_lossy(&ours[..blocks]),
        String::from_utf8_lossy(&theirs[..blocks])
    );
    assert_eq!(ours.len(), theirs.len());
    assert!(ours == theirs, "archives differ after the headers");
}

#[test]
fn sparse_raw_disk_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_raw(dir.path(), "100M");
    write_at(&disk, 0, 64, "/dev/urandom");
    write_at(&disk, 5000, 300, "/dev/urandom");
    write_at(&disk, 100 * 1024 - 4, 4, "/dev/urandom");
    let summary = package_and_check(&disk, dir.path());
    assert_eq!(summary.format, "raw");
    assert_eq!(summary.raw_size, GIB);
    assert!(summary.data_bytes >= 368 << 10 && summary.data_bytes < 2 << 20);
}

#[test]
fn qcow2_disk_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let disk = qcow2(
        dir.path(),
        "1500M",
        &["write -P 0xab 1M 3M", "write -P 0x11 1400M 64k"],
    );
    let summary = package_and_check(&disk, dir.path());
    assert_eq!(summary.format, "qcow2");
    assert_eq!(summary.raw_size, 2 * GIB);
    assert_eq!(summary.data_bytes, (3 << 20) + (64 << 10));
    // 3 MiB of one byte value compresses to almost nothing.
    assert!(summary.compressed_bytes < 64 << 10);
}

#[test]
fn qcow2_overlay_reads_through_its_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = qcow2(dir.path(), "64M", &["write -P 0x22 0 1M"]);
    let top = dir.path().join("overlay.qcow2");
    overlay(&base, "qcow2", &top);
    run("qemu-io", &["-c", "write -P 0x33 512k 1M", s(&top)]);
    // Following a backing file takes an explicit qcow2.
    let err = package(&top, &mut std::io::sink(), &options()).unwrap_err();
    assert!(
        matches!(err, ExportError::Image(ImageError::DetectedBacking { .. })),
        "{err:?}"
    );
    let summary = package_and_check_as(&top, dir.path(), FormatPolicy::Known(ImageFormat::Qcow2));
    assert_eq!(summary.data_bytes, 3 << 19);
}

#[test]
fn zero_blocks_inside_data_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_raw(dir.path(), "32M");
    // Allocated, but zeros: 2 MiB of it must not be stored.
    write_at(&disk, 1024, 2048, "/dev/zero");
    write_at(&disk, 1024 + 512, 64, "/dev/urandom");
    let summary = package_and_check(&disk, dir.path());
    assert_eq!(summary.data_bytes, 64 << 10);

    let dir = tempfile::tempdir().unwrap();
    let disk = qcow2(
        dir.path(),
        "32M",
        &["write -P 0 0 4M", "write -P 0x5a 2M 4k"],
    );
    let summary = package_and_check(&disk, dir.path());
    // The qcow2 cluster holding the data is mapped whole; it is not zero.
    assert_eq!(summary.data_bytes, 64 << 10);
}

#[test]
fn disk_of_a_whole_gib_keeps_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_raw(dir.path(), "1G");
    write_at(&disk, 1024 * 1024 - 64, 64, "/dev/urandom");
    let summary = package_and_check(&disk, dir.path());
    assert_eq!(summary.raw_size, GIB);
    assert_eq!(summary.data_bytes, 64 << 10);
}

#[test]
fn empty_disk_is_all_hole() {
    let dir = tempfile::tempdir().unwrap();
    let disk = qcow2(dir.path(), "10M", &[]);
    let summary = package_and_check(&disk, dir.path());
    assert_eq!(summary.data_bytes, 0);
    assert_eq!(summary.raw_size, GIB);
    assert_eq!(summary.tar_bytes, tar::RECORD);
}

#[test]
fn output_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let disk = qcow2(dir.path(), "16M", &["write -P 0x42 1M 2M"]);
    let mut first = Vec::new();
    let mut second = Vec::new();
    package(&disk, &mut first, &options()).unwrap();
    let one_thread = PackageOptions {
        threads: 1,
        ..options()
    };
    package(&disk, &mut second, &one_thread).unwrap();
    assert!(first == second);
}

#[test]
fn progress_reaches_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let disk = qcow2(dir.path(), "16M", &["write -P 0x42 1M 9M"]);
    let last = std::sync::Mutex::new((0u64, 0u64));
    let report = |done: u64, total: u64| {
        let mut last = last.lock().unwrap();
        assert!(done >= last.0);
        *last = (done, total);
    };
    let options = PackageOptions {
        progress: Some(&report),
        ..options()
    };
    let summary = package(&disk, &mut std::io::sink(), &options).unwrap();
    let last = *last.lock().unwrap();
    assert_eq!(last, (9 << 20, 9 << 20));
    assert_eq!(summary.data_bytes, 9 << 20);
}

#[test]
fn missing_disk_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("nope.qcow2");
    let out = dir.path().join("out.tar.gz");
    let err = package_to_file(&disk, &out, false, &options()).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Image(ImageError::File(crate::error::FileError::Read { .. }))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.qcow2"));
    assert!(!out.exists());
}

#[test]
fn not_a_disk_image_is_refused_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    // A qcow2 magic with garbage after it.
    let disk = dir.path().join("broken.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend_from_slice(&[0xff; 1020]);
    std::fs::write(&disk, bytes).unwrap();
    let out = dir.path().join("out.tar.gz");
    let err = package_to_file(&disk, &out, false, &options()).unwrap_err();
    assert!(
        matches!(err, ExportError::Image(ImageError::OtherFormat { .. })),
        "{err:?}"
    );
    let text = crate::error::error_chain(&err);
    assert!(
        text.contains("broken.qcow2") && text.contains("kiln reads qcow2 and raw only"),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "the temporary file must be gone");

    let err = package(dir.path(), &mut std::io::sink(), &options()).unwrap_err();
    assert!(
        matches!(err, ExportError::Image(ImageError::NotAFile { .. })),
        "{err:?}"
    );

    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let err = package(&empty, &mut std::io::sink(), &options()).unwrap_err();
    assert!(
        matches!(err, ExportError::Image(ImageError::TooSmall { .. })),
        "{err:?}"
    );
}
