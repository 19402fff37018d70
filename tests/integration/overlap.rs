//! The stages after the build's shutdown run side by side: the smoke-test
//! boot beside the upload (and compaction, checksums); the image only once
//! the tests passed; a failed test deletes the upload; a failed upload stops
//! the test boot. Proved by what the processes observe: the staging object
//! in the Cloud Storage emulator while the test boot's QEMU runs.
//! Also: fstrim before the shutdown makes a provisioner's deleted file cost
//! nothing in the output.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::gce_publish::{BUCKET, FAMILY, PROJECT, gcp, image_map, kiln, object_exists};
use crate::util::{Scratch, assert_nothing_left, fixture_builder, path_str, qemu_processes_with};

/// A googlecompute build named `name` publishing `image`, with `tests`.
fn template(scratch: &Scratch, name: &str, image: &str, tests: Value) -> PathBuf {
    scratch.write_json(
        "t.json",
        &json!({
            "builders": [{
                "type": "googlecompute",
                "name": name,
                "project_id": PROJECT,
                "zone": "europe-west1-b",
                "source_image_family": FAMILY,
                "disk_size": 1,
                "ssh_username": "root",
                "image_name": image
            }],
            "provisioners": [{"type": "shell", "inline": ["echo published > /etc/published"]}],
            "tests": tests
        }),
    )
}

/// Watches, until `done`, for an instant when the staging object is in the
/// bucket while the test boot's QEMU (found by its serial log beside the
/// output directory) runs; returns whether it saw one, and whether it saw
/// the object at all.
async fn watch(
    gcp: &crate::gce_publish::Gcp,
    object: &str,
    test_boot_marker: &str,
    done: Arc<AtomicBool>,
) -> (bool, bool) {
    let (mut together, mut object_seen) = (false, false);
    while !done.load(Ordering::SeqCst) {
        let booting = !qemu_processes_with(test_boot_marker).is_empty();
        let uploaded = object_exists(&gcp.emulator, object).await;
        // The test boot must still be running after the object was seen.
        let still_booting = !qemu_processes_with(test_boot_marker).is_empty();
        object_seen |= uploaded;
        together |= booting && uploaded && still_booting;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (together, object_seen)
}

async fn build_watched(
    scratch: &Scratch,
    gcp: &crate::gce_publish::Gcp,
    template: &std::path::Path,
    build: &str,
    object: &str,
    bucket: &str,
    sequential: bool,
) -> (crate::util::Run, bool, bool) {
    let map = image_map(scratch);
    let env = [
        (
            "KILN_SEQUENTIAL_STAGES",
            if sequential { "1" } else { "" }.to_string(),
        ),
        ("STORAGE_EMULATOR_HOST", gcp.emulator.base_url.clone()),
        ("KILN_COMPUTE_ENDPOINT", gcp.compute.base_url.clone()),
        ("KILN_IMAGE_MAP", path_str(&map).to_string()),
        ("KILN_GCE_BUCKET", bucket.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = Arc::new(AtomicBool::new(false));
    let marker = format!("output-{build}.test.serial.log");
    let watching = watch(gcp, object, &marker, done.clone());
    let building = async {
        let run = kiln(scratch, &["build", path_str(template)], &env).await;
        done.store(true, Ordering::SeqCst);
        run
    };
    let (run, (together, seen)) = tokio::join!(building, watching);
    assert!(
        qemu_processes_with(&marker).is_empty(),
        "the test boot outlived the build"
    );
    (run, together, seen)
}

/// A passing build: its disk is in the bucket while its test boot runs,
/// and the image is made once, after the checks passed.
#[tokio::test(flavor = "multi_thread")]
async fn the_upload_runs_beside_the_test_boot_and_the_image_waits_for_the_checks() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let tests = json!([{"name": "provisioned", "file": "/etc/published", "contains": "published"}]);
    let template = template(&scratch, "overlap-pass", "kiln-overlap-pass", tests);
    let object = "kiln-kiln-overlap-pass.tar.gz";
    let (run, together, _) = build_watched(
        &scratch,
        &gcp,
        &template,
        "overlap-pass",
        object,
        BUCKET,
        false,
    )
    .await;
    run.assert_success();
    assert!(
        together,
        "never saw the upload while the test boot ran: {}",
        run.all()
    );
    assert!(gcp.compute.image(PROJECT, "kiln-overlap-pass").is_some());
    assert_eq!(gcp.compute.insert_request_ids().len(), 1, "{}", run.all());
    let out = &run.stdout;
    let passed = out.find("1 check(s), 1 passed").expect("checks passed");
    let created = out
        .find("Creating image kiln-overlap-pass")
        .expect("image created");
    assert!(
        passed < created,
        "the image was made before the checks passed: {out}"
    );
    assert!(!object_exists(&gcp.emulator, object).await);
    assert_nothing_left(&scratch);
}

/// A failing check: the disk uploaded beside the test boot is deleted, no
/// image is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_check_deletes_the_upload_made_beside_it() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let tests = json!([{"name": "never there", "file": "/etc/never-there"}]);
    let template = template(&scratch, "overlap-fail", "kiln-overlap-fail", tests);
    let object = "kiln-kiln-overlap-fail.tar.gz";
    let (run, _, seen) = build_watched(
        &scratch,
        &gcp,
        &template,
        "overlap-fail",
        object,
        BUCKET,
        false,
    )
    .await;
    run.assert_failure();
    run.assert_error_on_stderr("check(s) failed");
    assert!(seen, "the object was never uploaded: {}", run.all());
    assert!(
        run.stdout
            .contains(&format!("Deleted gs://{BUCKET}/{object} (not published)")),
        "{}",
        run.all()
    );
    assert!(
        !object_exists(&gcp.emulator, object).await,
        "left in the bucket"
    );
    assert!(gcp.compute.image(PROJECT, "kiln-overlap-fail").is_none());
    assert!(gcp.compute.insert_request_ids().is_empty());
    assert_nothing_left(&scratch);
}

/// A failed upload fails the build at once: the test boot is stopped
/// before its checks ran, its QEMU gone with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_stops_the_test_boot() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let tests = json!([{"name": "provisioned", "file": "/etc/published", "contains": "published"}]);
    let template = template(&scratch, "overlap-noup", "kiln-overlap-noup", tests);
    let object = "kiln-kiln-overlap-noup.tar.gz";
    let (run, _, _) = build_watched(
        &scratch,
        &gcp,
        &template,
        "overlap-noup",
        object,
        "no-such-bucket",
        false,
    )
    .await;
    run.assert_failure();
    run.assert_error_on_stderr("Cloud Storage upload");
    let out = &run.stdout;
    assert!(out.contains("Booting a fresh instance"), "{}", run.all());
    assert!(
        !out.contains("check provisioned"),
        "the checks ran: {}",
        run.all()
    );
    assert!(gcp.compute.insert_request_ids().is_empty());
    assert_nothing_left(&scratch);
}

/// A provisioner writes 200 MiB of random data and deletes it: fstrim
/// before the shutdown turns it into holes, so the output stays near the
/// fixture's size (without the trim it carries the 200 MiB).
#[test]
fn fstrim_keeps_a_deleted_file_out_of_the_output() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({"output_directory": "out", "vm_name": "disk.qcow2"}))],
            "provisioners": [{"type": "shell", "inline": [
                "dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null",
                "sync", "rm /big", "sync"
            ]}]
        }),
    );
    let run = scratch.run(&["build", path_str(&template)]);
    run.assert_success();
    assert!(run.stdout.contains("fstrim: trimmed"), "{}", run.all());
    let size = std::fs::metadata(scratch.path().join("out/disk.qcow2"))
        .expect("disk")
        .len();
    let fixture_size = std::fs::metadata(crate::util::fixture())
        .expect("fixture")
        .len();
    assert!(
        size < fixture_size + (100 << 20),
        "{size} bytes: the deleted file is still in the image ({})",
        run.all()
    );
    assert_nothing_left(&scratch);
}

/// `-parallel-builds 1`: the second build fetches its source while the
/// first one's machine runs, not after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_build_downloads_its_source_while_the_first_runs() {
    use kiln_test_support::file_server::FileServer;
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let server = FileServer::start().await.expect("file server");
    let url = server.add(
        "/images/second.qcow2",
        std::fs::read(crate::util::fixture()).expect("fixture"),
    );
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [
                fixture_builder(json!({
                    "name": "first",
                    "output_directory": "out-first",
                    "vm_name": "kiln-prefetch-first.qcow2",
                })),
                fixture_builder(json!({
                    "name": "second",
                    "output_directory": "out-second",
                    "vm_name": "kiln-prefetch-second.qcow2",
                    "iso_url": url,
                }))
            ]
        }),
    );
    let mut command = scratch.kiln(&["build", "-parallel-builds", "1", path_str(&template)]);
    command.env("KILN_CACHE_DIR", &cache);
    let done = Arc::new(AtomicBool::new(false));
    let building = {
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let run = crate::util::Run::from(command.output().expect("run kiln"));
            done.store(true, Ordering::SeqCst);
            run
        })
    };
    // The first build's QEMU running, the second's not yet, and the
    // second's image already asked for.
    let (first_marker, second_marker) = ("kiln-prefetch-first.qcow2", "kiln-prefetch-second.qcow2");
    let mut seen = false;
    while !done.load(Ordering::SeqCst) {
        let first_running = !qemu_processes_with(first_marker).is_empty();
        let fetched = !server.requests_for("/images/second.qcow2").is_empty();
        let second_running = !qemu_processes_with(second_marker).is_empty();
        let first_still = !qemu_processes_with(first_marker).is_empty();
        seen |= first_running && fetched && !second_running && first_still;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let run = building.await.expect("join");
    run.assert_success();
    assert!(
        seen,
        "the second build's source was not fetched while the first ran: {}",
        run.all()
    );
    assert_eq!(server.requests_for("/images/second.qcow2").len(), 1);
}

/// `KILN_SEQUENTIAL_STAGES=1` (the benchmark's switch): the upload waits
/// for the test boot to end, and the image is still made once.
#[tokio::test(flavor = "multi_thread")]
async fn the_sequential_switch_uploads_after_the_test_boot() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let tests = json!([{"name": "provisioned", "file": "/etc/published", "contains": "published"}]);
    let template = template(&scratch, "overlap-seq", "kiln-overlap-seq", tests);
    let object = "kiln-kiln-overlap-seq.tar.gz";
    let (run, together, seen) = build_watched(
        &scratch,
        &gcp,
        &template,
        "overlap-seq",
        object,
        BUCKET,
        true,
    )
    .await;
    run.assert_success();
    assert!(seen, "the object was never uploaded: {}", run.all());
    assert!(
        !together,
        "the upload ran beside the test boot: {}",
        run.all()
    );
    assert_eq!(gcp.compute.insert_request_ids().len(), 1, "{}", run.all());
    assert_nothing_left(&scratch);
}
