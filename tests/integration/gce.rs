//! GCE export: the tarball on disk, and publishing through real Cloud
//! Storage emulators and the Compute API fake.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln::gcp::{StorageClient, TokenSource};
use kiln_test_support::compute_fake::ComputeFake;
use kiln_test_support::emulators::StorageEmulator;
use kiln_test_support::fault_proxy::{Fault, FaultProxy};
use serde_json::json;

use crate::util::{Run, Scratch, fixture, fixture_builder, path_str};

const BUCKET: &str = "images";

/// Runs kiln off the async runtime, which keeps serving the fakes meanwhile.
async fn kiln(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = scratch.kiln(args);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || Run::from(command.output().expect("run kiln")))
        .await
        .expect("join")
}

fn storage(base_url: &str) -> StorageClient {
    StorageClient::new(base_url, Arc::new(TokenSource::none().expect("tokens"))).expect("client")
}

async fn download(base_url: &str, object: &str) -> Vec<u8> {
    let mut data = Vec::new();
    storage(base_url)
        .download_to(BUCKET, object, &mut data)
        .await
        .expect("download");
    data
}

/// A copy of the fixture, so tests can compare exports of the same file.
fn disk_copy(scratch: &Scratch) -> PathBuf {
    let disk = scratch.path().join("disk.qcow2");
    std::fs::copy(fixture(), &disk).expect("copy fixture");
    disk
}

#[test]
fn export_to_a_file_gives_back_the_disk_byte_for_byte() {
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let run = scratch.run(&["export", "--output", "image.tar.gz", path_str(&disk)]);
    run.assert_success();
    let tarball = scratch.path().join("image.tar.gz");
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(&tarball)
            .status()
            .expect("gzip")
            .success()
    );
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&tarball)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(
        listing.contains(" 1073741824 "),
        "not a whole GiB: {listing}"
    );
    assert!(listing.trim_end().ends_with("disk.raw"), "{listing}");

    let extracted = scratch.path().join("x");
    std::fs::create_dir(&extracted).expect("mkdir");
    let status = Command::new("tar")
        .arg("-xzSf")
        .arg(&tarball)
        .arg("-C")
        .arg(&extracted)
        .status()
        .expect("tar x");
    assert!(status.success());
    let raw = scratch.path().join("expected.raw");
    let status = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            crate::util::disk_format(&disk),
            "-O",
            "raw",
        ])
        .arg(&disk)
        .arg(&raw)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    let same = Command::new("cmp")
        .arg(&raw)
        .arg(extracted.join("disk.raw"))
        .status()
        .expect("cmp");
    assert!(same.success(), "the extracted disk differs from the source");
    assert!(scratch.leftover_temp_files().is_empty());
    // Without a terminal no bar is drawn, and an export this short
    // needs no progress lines.
    let all = run.all();
    assert!(!all.contains('\x1b'), "{all:?}");
    assert!(!all.contains("Packaging: "), "{all}");
}

#[test]
fn export_refuses_a_level_out_of_range_before_writing() {
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    for level in ["0", "12"] {
        let run = scratch.run(&[
            "export",
            "--output",
            "image.tar.gz",
            "--level",
            level,
            path_str(&disk),
        ]);
        run.assert_usage_error();
        let expected = format!("--level {level}: expected 1 to 9");
        run.assert_error_on_stderr(&expected);
        assert!(!scratch.path().join("image.tar.gz").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_creates_the_image_and_removes_the_object() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let env = [
        ("STORAGE_EMULATOR_HOST", emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.as_str()),
    ];
    let args = [
        "export",
        "--bucket",
        BUCKET,
        "--image-name",
        "golden-base-1",
        "--project",
        "demo-project",
        "--family",
        "golden-base",
        "--label",
        "team=infra",
        "--object-name",
        "upload.tar.gz",
        path_str(&disk),
    ];
    let run = kiln(&scratch, &args, &env).await;
    run.assert_success();
    let image = compute
        .image("demo-project", "golden-base-1")
        .expect("image registered");
    assert_eq!(image["family"], "golden-base");
    assert_eq!(image["labels"]["team"], "infra");
    assert_eq!(
        image["rawDisk"]["source"],
        "https://storage.googleapis.com/images/upload.tar.gz"
    );
    assert!(
        !storage(&emulator.base_url)
            .object_exists(BUCKET, "upload.tar.gz")
            .await
            .expect("lookup"),
        "the uploaded object was not deleted"
    );

    // Again: the image exists, and the error says how to replace it.
    let run = kiln(&scratch, &args, &env).await;
    run.assert_failure();
    run.assert_error_on_stderr("already exists");
    assert!(run.all().contains("-force"), "{}", run.all());
    let mut forced = args.to_vec();
    forced.insert(1, "--force");
    kiln(&scratch, &forced, &env).await.assert_success();
    assert!(compute.image("demo-project", "golden-base-1").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_image_names_are_refused_before_any_upload() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET)
        .await
        .expect("emulator");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let env = [
        ("STORAGE_EMULATOR_HOST", emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.as_str()),
    ];
    let run = kiln(
        &scratch,
        &[
            "export",
            "--bucket",
            BUCKET,
            "--image-name",
            "Golden_Image",
            "--project",
            "p",
            "--label",
            "Team=x",
            "--object-name",
            "never.tar.gz",
            path_str(&disk),
        ],
        &env,
    )
    .await;
    run.assert_usage_error();
    run.assert_error_on_stderr("Golden_Image");
    let all = run.all();
    assert!(all.contains("Team"), "{all}");
    assert!(
        !storage(&emulator.base_url)
            .object_exists(BUCKET, "never.tar.gz")
            .await
            .expect("lookup")
    );
}

/// Dropped connections and 503s on the way: the upload resumes, and the
/// object is the same, byte for byte, as a local export of the disk.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_through_faults_matches_a_local_export() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET)
        .await
        .expect("emulator");
    let upstream = emulator.base_url.trim_start_matches("http://").to_string();
    let chunks = Arc::new(AtomicUsize::new(0));
    let seen = chunks.clone();
    let proxy = FaultProxy::start(&upstream, move |request| {
        // Spare the session start and the first chunk (the emulator
        // misreports an empty session). Then, of every six PUTs (chunks and
        // status queries), drop the second mid-body and answer the fourth
        // (the resent chunk, after the status query) with a 503: the disk
        // fits in a few chunks, so faults must come early.
        if request.content_range.is_none() || request.method != "PUT" {
            return Fault::Pass;
        }
        match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Fault::Pass,
            n if n % 6 == 1 => Fault::DropMidBody,
            n if n % 6 == 3 => Fault::Respond(503),
            _ => Fault::Pass,
        }
    })
    .await
    .expect("proxy");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let env = [
        ("STORAGE_EMULATOR_HOST", proxy.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.as_str()),
    ];
    let run = kiln(
        &scratch,
        &[
            "export",
            "--bucket",
            BUCKET,
            "--image-name",
            "through-faults",
            "--project",
            "p",
            "--object-name",
            "faulty.tar.gz",
            "--skip-clean",
            path_str(&disk),
        ],
        &env,
    )
    .await;
    run.assert_success();
    assert!(proxy.faults_injected() >= 2, "no faults were injected");
    assert!(compute.image("p", "through-faults").is_some());

    let uploaded = download(&emulator.base_url, "faulty.tar.gz").await;
    kiln(
        &scratch,
        &["export", "--output", "local.tar.gz", path_str(&disk)],
        &[],
    )
    .await
    .assert_success();
    let local = std::fs::read(scratch.path().join("local.tar.gz")).expect("local export");
    assert!(
        uploaded == local,
        "the uploaded object differs from a local export"
    );
}

/// Build, publish through the emulators, then download the object and boot
/// the disk inside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_built_image_published_to_gce_boots_from_the_uploaded_tarball() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [{"type": "shell", "inline": ["echo published > /etc/published"]}],
            "post-processors": [
              {"type": "compress", "output": "image.tar.gz", "keep_input_artifact": true},
              {
                "type": "googlecompute-import",
                "project_id": "demo",
                "bucket": BUCKET,
                "gcs_object_name": "built.tar.gz",
                "image_name": "built-{{timestamp}}",
                "image_labels": {"built-by": "kiln"},
                "skip_clean": true,
                "keep_input_artifact": true
            }]
        }),
    );
    let env = [
        ("STORAGE_EMULATOR_HOST", emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.as_str()),
    ];
    let run = kiln(&scratch, &["build", path_str(&template)], &env).await;
    run.assert_success();
    assert!(run.stdout.contains("Image created"), "{}", run.stdout);
    assert!(
        scratch.path().join("out/disk.qcow2").exists(),
        "keep_input_artifact"
    );
    let compressed = scratch.path().join("image.tar.gz");
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(&compressed)
            .status()
            .expect("gzip")
            .success()
    );

    let tarball = scratch.path().join("downloaded.tar.gz");
    std::fs::write(&tarball, download(&emulator.base_url, "built.tar.gz").await).expect("write");
    let checks = scratch.write(
        "checks.json",
        r#"{"tests": [{"name": "provisioned", "file": "/etc/published", "contains": "published"}]}"#,
    );
    let run = kiln(
        &scratch,
        &[
            "test",
            "--tests",
            path_str(&checks),
            "--accelerator",
            "tcg",
            "--memory",
            "512",
            path_str(&tarball),
        ],
        &[],
    )
    .await;
    run.assert_success();
    assert!(
        run.stdout.contains("All 1 check(s) passed"),
        "{}",
        run.stdout
    );
}

#[test]
fn gce_post_processor_settings_are_validated_with_the_template() {
    let scratch = Scratch::new();
    let image = scratch.write("base.qcow2", "");
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [{"type": "qemu", "iso_url": path_str(&image), "iso_checksum": "none",
                          "disk_image": true, "ssh_username": "root"}],
            "post-processors": [
                {"type": "googlecompute-import", "bucket": "b", "image_name": "Bad_Name", "project_id": "p"},
                {"type": "googlecompute-import", "image_name": "ok"},
                {"type": "compress", "output": "disk.zip"}
            ]
        }),
    );
    let run = scratch.run(&["validate", path_str(&template)]);
    run.assert_usage_error();
    let all = run.all();
    assert!(all.contains("post-processors[0]"), "{all}");
    assert!(all.contains("Bad_Name"), "{all}");
    assert!(all.contains("post-processors[1].project_id"), "{all}");
    assert!(all.contains("post-processors[1].bucket"), "{all}");
    assert!(all.contains("post-processors[2].output"), "{all}");
}
