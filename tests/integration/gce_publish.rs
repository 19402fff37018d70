//! googlecompute templates built under QEMU, tested, then published to
//! Compute Engine: through a Cloud Storage emulator and the Compute API
//! fake, on the tiny fixture mapped in as the source image family.

use std::path::PathBuf;
use std::sync::Arc;

use kiln::gcp::{StorageClient, TokenSource};
use kiln_test_support::compute_fake::ComputeFake;
use kiln_test_support::emulators::StorageEmulator;
use serde_json::{Value, json};

use crate::util::{Run, Scratch, assert_nothing_left, fixture, path_str};

pub(crate) const BUCKET: &str = "staging";
pub(crate) const PROJECT: &str = "demo-project";
pub(crate) const FAMILY: &str = "kiln-fixture";
const LICENSE: &str = "projects/demo-project/global/licenses/kiln-test";

/// Runs kiln off the async runtime, which keeps serving the fakes meanwhile.
pub(crate) async fn kiln(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = scratch.kiln(args);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || Run::from(command.output().expect("run kiln")))
        .await
        .expect("join")
}

/// The image map that makes the fixture the source image family.
pub(crate) fn image_map(scratch: &Scratch) -> PathBuf {
    scratch.write_json(
        "images.json",
        &json!({FAMILY: {"url": path_str(fixture()), "checksum": "none"}}),
    )
}

/// A googlecompute template as Packer takes it, on the fixture (whose
/// default user is root), with `extra` keys on the builder and the
/// template's `tests` and post-processors.
fn template(scratch: &Scratch, image_name: &str, tests: Value) -> PathBuf {
    scratch.write_json(
        "t.json",
        &json!({
            "builders": [{
                "type": "googlecompute",
                "name": "gce-base",
                "project_id": PROJECT,
                "zone": "europe-west1-b",
                "source_image_family": FAMILY,
                "machine_type": "g1-small",
                "disk_size": 1,
                "ssh_username": "root",
                "image_name": image_name,
                "image_family": "kiln-base",
                "image_description": "Base image built by kiln",
                "image_labels": {"team": "infra", "built-by": "kiln"},
                "image_licenses": [LICENSE],
                "image_storage_locations": ["eu"]
            }],
            "provisioners": [{"type": "shell", "inline": ["echo published > /etc/published"]}],
            "tests": tests,
            "post-processors": [{"type": "manifest", "output": "manifest.json", "strip_time": true}]
        }),
    )
}

fn passing_tests() -> Value {
    json!([{"name": "provisioned", "file": "/etc/published", "contains": "published"}])
}

pub(crate) async fn object_exists(emulator: &StorageEmulator, object: &str) -> bool {
    StorageClient::new(&emulator.base_url, Arc::new(TokenSource::none()))
        .expect("client")
        .object_exists(BUCKET, object)
        .await
        .expect("lookup")
}

pub(crate) struct Gcp {
    pub emulator: StorageEmulator,
    pub compute: ComputeFake,
}

pub(crate) async fn gcp() -> Gcp {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    Gcp { emulator, compute }
}

/// The build, its test boot, the upload, the image with every setting of
/// the template, the staging object gone, the manifest's record, and no
/// local disk left behind (the bucket here comes from KILN_GCE_BUCKET).
#[tokio::test(flavor = "multi_thread")]
async fn a_googlecompute_build_is_tested_then_published_as_its_image() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let map = image_map(&scratch);
    let template = template(&scratch, "kiln-published-1", passing_tests());
    let env = [
        ("STORAGE_EMULATOR_HOST", gcp.emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", gcp.compute.base_url.as_str()),
        ("KILN_IMAGE_MAP", path_str(&map)),
        ("KILN_GCE_BUCKET", BUCKET),
    ];
    let run = kiln(&scratch, &["build", path_str(&template)], &env).await;
    run.assert_success();

    let image = gcp
        .compute
        .image(PROJECT, "kiln-published-1")
        .expect("image created");
    assert_eq!(image["family"], "kiln-base");
    assert_eq!(image["description"], "Base image built by kiln");
    assert_eq!(image["labels"]["team"], "infra");
    assert_eq!(image["labels"]["built-by"], "kiln");
    assert_eq!(image["licenses"], json!([LICENSE]));
    assert_eq!(image["storageLocations"], json!(["eu"]));
    assert_eq!(
        image["rawDisk"]["source"],
        format!("https://storage.googleapis.com/{BUCKET}/kiln-kiln-published-1.tar.gz")
    );
    assert!(
        !object_exists(&gcp.emulator, "kiln-kiln-published-1.tar.gz").await,
        "the staging object was not deleted"
    );

    let out = &run.stdout;
    assert!(out.contains("1 check(s), 1 passed, 0 failed"), "{out}");
    assert!(
        out.contains("A disk image was created: kiln-published-1"),
        "{out}"
    );
    let self_link = image["selfLink"].as_str().expect("self link");
    assert!(out.contains(self_link), "{out}");

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(scratch.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let entry = &manifest["builds"][0];
    assert_eq!(entry["artifact_id"], "kiln-published-1");
    assert_eq!(entry["builder_type"], "googlecompute");
    assert_eq!(entry["name"], "gce-base");

    // The disk was working data: nothing stays to block the next build.
    assert!(!scratch.path().join("output-gce-base").exists());
    assert_nothing_left(&scratch);
}

/// A failed check publishes nothing: no object, no image, no disk kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_whose_tests_fail_publishes_nothing() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let map = image_map(&scratch);
    let tests = json!([{"name": "never there", "file": "/etc/never-there"}]);
    let template = template(&scratch, "kiln-failed-1", tests);
    let env = [
        ("STORAGE_EMULATOR_HOST", gcp.emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", gcp.compute.base_url.as_str()),
        ("KILN_IMAGE_MAP", path_str(&map)),
    ];
    let run = kiln(
        &scratch,
        &["build", "-gce-bucket", BUCKET, path_str(&template)],
        &env,
    )
    .await;
    run.assert_failure();
    run.assert_error_on_stderr("check(s) failed");
    assert!(gcp.compute.image(PROJECT, "kiln-failed-1").is_none());
    assert!(gcp.compute.insert_request_ids().is_empty());
    assert!(!object_exists(&gcp.emulator, "kiln-kiln-failed-1.tar.gz").await);
    assert!(!scratch.path().join("output-gce-base").exists());
    assert_nothing_left(&scratch);
}

/// `-publish=false`: the tested disk stays in `output-<build>/`, the
/// artifact is that disk, and no Google API is called.
#[tokio::test(flavor = "multi_thread")]
async fn publish_false_keeps_the_disk_and_calls_no_api() {
    let gcp = gcp().await;
    let scratch = Scratch::new();
    let map = image_map(&scratch);
    let template = template(&scratch, "kiln-local-1", passing_tests());
    let env = [
        ("STORAGE_EMULATOR_HOST", gcp.emulator.base_url.as_str()),
        ("KILN_COMPUTE_ENDPOINT", gcp.compute.base_url.as_str()),
        ("KILN_IMAGE_MAP", path_str(&map)),
    ];
    let run = kiln(
        &scratch,
        &["build", "-publish=false", path_str(&template)],
        &env,
    )
    .await;
    run.assert_success();
    let disk = scratch.path().join("output-gce-base/kiln-local-1.qcow2");
    assert!(disk.exists(), "{}", run.all());
    assert!(
        run.stdout
            .contains("VM files in directory: output-gce-base"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("-publish=false"), "{}", run.stdout);
    assert!(gcp.compute.insert_request_ids().is_empty());
    assert!(gcp.compute.image(PROJECT, "kiln-local-1").is_none());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(scratch.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(manifest["builds"][0]["artifact_id"], "VM");
    assert_nothing_left(&scratch);
}

/// No bucket: refused before anything boots, with every way out named.
#[test]
fn publishing_without_a_bucket_fails_before_the_build() {
    let scratch = Scratch::new();
    let map = image_map(&scratch);
    let template = template(&scratch, "kiln-nobucket-1", passing_tests());
    let mut command = scratch.kiln(&["build", path_str(&template)]);
    command
        .env("KILN_IMAGE_MAP", &map)
        .env_remove("KILN_GCE_BUCKET");
    let run = Run::from(command.output().expect("run kiln"));
    run.assert_usage_error();
    let all = run.all();
    for part in [
        "\"gce-base\"",
        PROJECT,
        "-gce-bucket",
        "KILN_GCE_BUCKET",
        "-publish=false",
    ] {
        assert!(all.contains(part), "{part:?} missing: {all}");
    }
    assert!(!scratch.path().join("output-gce-base").exists());
    assert!(!all.contains("Starting"), "something started: {all}");
    assert_nothing_left(&scratch);
}
