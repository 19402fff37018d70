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
    StorageClient::new(base_url, Arc::new(TokenSource::none())).expect("client")
}

async fn download(base_url: &str, object: &str) -> Vec<u8> {
    let mut data = Vec::new();
    storage(base_url)
        .download_to(BUCKET, object, &mut data)
        .await
        .expect("download");
    data
}

/// What a publishing test starts from: the Compute fake in front of
/// `emulator`, a scratch directory and a copy of the fixture's disk in it.
async fn publishing_setup(emulator: &StorageEmulator) -> (ComputeFake, Scratch, PathBuf) {
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    (compute, scratch, disk)
}

/// The environment that sends kiln's uploads to `storage` and its Compute
/// calls to `compute`.
fn endpoints<'a>(storage: &'a str, compute: &'a ComputeFake) -> [(&'static str, &'a str); 2] {
    [
        ("STORAGE_EMULATOR_HOST", storage),
        ("KILN_COMPUTE_ENDPOINT", compute.base_url.as_str()),
    ]
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

/// `--format=json`: stdout is one object describing the file, whose size
/// and SHA-256 are the file's; the progress went to stderr.
#[test]
fn export_to_a_file_as_json_describes_the_file() {
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let run = scratch.run(&[
        "export",
        "--output",
        "image.tar.gz",
        "--format=json",
        path_str(&disk),
    ]);
    run.assert_success();
    let json: serde_json::Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.all()));
    let tarball = scratch.path().join("image.tar.gz");
    assert_eq!(json["kind"], "file");
    assert_eq!(json["path"], "image.tar.gz");
    assert_eq!(
        json["sizeBytes"],
        std::fs::metadata(&tarball).expect("stat").len()
    );
    assert_eq!(json["diskSizeBytes"], 1u64 << 30);
    let sha = Command::new("sha256sum")
        .arg(&tarball)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        json["sha256"],
        sha.split_whitespace().next().expect("digest")
    );
    assert!(run.stderr.contains("Wrote image.tar.gz"), "{}", run.all());
}

/// gcloud's list forms, refused by name when a part is empty or GCE would
/// refuse it; nothing is packaged or sent.
#[test]
fn bad_label_and_feature_lists_are_usage_errors() {
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    for (flag, expected) in [
        ("--labels=", "--labels \"\""),
        ("--labels=team=infra,=x", "--labels \"=x\""),
        ("--labels=team=infra,nokey", "--labels \"nokey\""),
        ("--labels=team=infra,Team=x", "label key \"Team\""),
        ("--guest-os-features=GVNIC,", "--guest-os-features"),
    ] {
        let run = scratch.run(&[
            "export",
            "--bucket",
            BUCKET,
            "--image-name",
            "never",
            "--project",
            "p",
            flag,
            path_str(&disk),
        ]);
        run.assert_usage_error();
        run.assert_error_on_stderr(expected);
        assert!(!run.all().contains("Uploading"), "{}", run.all());
    }
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
    let (compute, scratch, disk) = publishing_setup(&emulator).await;
    let env = endpoints(&emulator.base_url, &compute);
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

/// `--format=json` prints the image as GCE made it: name, numeric id and
/// self link, and nothing else on stdout. The list forms of `--labels` and
/// `--guest-os-features` reach the image; without `--format=json` the
/// same three are `key: value` lines.
#[tokio::test(flavor = "multi_thread")]
async fn publish_prints_the_images_name_id_and_self_link() {
    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let (compute, scratch, disk) = publishing_setup(&emulator).await;
    let env = endpoints(&emulator.base_url, &compute);
    let run = kiln(
        &scratch,
        &[
            "export",
            "--bucket",
            BUCKET,
            "--image-name",
            "listed-1",
            "--project",
            "demo-project",
            "--labels=team=infra,env=prod",
            "--labels",
            "tier=gold",
            "--guest-os-features=UEFI_COMPATIBLE,GVNIC",
            "--format=json",
            path_str(&disk),
        ],
        &env,
    )
    .await;
    run.assert_success();
    let printed: serde_json::Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.all()));
    let image = compute
        .image("demo-project", "listed-1")
        .expect("image registered");
    assert_eq!(printed["name"], "listed-1");
    assert_eq!(printed["id"], image["id"]);
    assert_eq!(printed["selfLink"], image["selfLink"]);
    let id = printed["id"].as_str().expect("id is a string");
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert_eq!(
        image["labels"],
        json!({"team": "infra", "env": "prod", "tier": "gold"})
    );
    assert_eq!(
        image["guestOsFeatures"],
        json!([{"type": "UEFI_COMPATIBLE"}, {"type": "GVNIC"}])
    );
    assert!(run.stderr.contains("Image created"), "{}", run.all());

    let run = kiln(
        &scratch,
        &[
            "export",
            "--bucket",
            BUCKET,
            "--image-name",
            "listed-2",
            "--project",
            "demo-project",
            path_str(&disk),
        ],
        &env,
    )
    .await;
    run.assert_success();
    let image = compute
        .image("demo-project", "listed-2")
        .expect("image registered");
    let id = image["id"].as_str().expect("id");
    let link = image["selfLink"].as_str().expect("selfLink");
    assert!(run.stdout.contains("name: listed-2\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("id: {id}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("selfLink: {link}\n")),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_as_an_impersonated_account_in_the_key_files_project() {
    use kiln_test_support::TEST_PRIVATE_KEY_PEM;
    use kiln_test_support::token_server::{Call, TokenServer};

    let emulator = StorageEmulator::fake_gcs_server(BUCKET)
        .await
        .expect("fake-gcs-server");
    let compute = ComputeFake::start(&emulator.base_url)
        .await
        .expect("compute fake");
    let tokens = TokenServer::start(3600).await.expect("token server");
    let scratch = Scratch::new();
    let disk = disk_copy(&scratch);
    let key = scratch.write_json(
        "key.json",
        &json!({
            "type": "service_account",
            "project_id": "key-project",
            "private_key_id": "key-1",
            "private_key": TEST_PRIVATE_KEY_PEM,
            "client_email": "builder@key-project.iam.gserviceaccount.com",
        }),
    );
    // No project anywhere but in the key file.
    let mut command = scratch.kiln(&[
        "export",
        "--bucket",
        BUCKET,
        "--image-name",
        "impersonated-1",
        "--account-file",
        path_str(&key),
        "--impersonate-service-account",
        "publisher@key-project.iam.gserviceaccount.com",
        path_str(&disk),
    ]);
    for var in [
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "CLOUDSDK_CONFIG",
        "CLOUDSDK_ACTIVE_CONFIG_NAME",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ] {
        command.env_remove(var);
    }
    command
        .env("HOME", scratch.path())
        .env("STORAGE_EMULATOR_HOST", &emulator.base_url)
        .env("KILN_COMPUTE_ENDPOINT", &compute.base_url)
        .env(
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
            &tokens.base_url,
        );
    let run = tokio::task::spawn_blocking(move || Run::from(command.output().expect("run kiln")))
        .await
        .expect("join");
    run.assert_success();
    assert!(compute.image("key-project", "impersonated-1").is_some());
    assert_eq!(
        tokens.calls(),
        vec![Call::Impersonate {
            account: "publisher@key-project.iam.gserviceaccount.com".into(),
            caller: "builder@key-project.iam.gserviceaccount.com".into(),
            scope: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        }]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_image_names_are_refused_before_any_upload() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET)
        .await
        .expect("emulator");
    let (compute, scratch, disk) = publishing_setup(&emulator).await;
    let env = endpoints(&emulator.base_url, &compute);
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
    let (compute, scratch, disk) = publishing_setup(&emulator).await;
    let env = endpoints(&proxy.base_url, &compute);
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
    let env = endpoints(&emulator.base_url, &compute);
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
