use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use kiln::gcp::{
    ComputeClient, ComputeError, DEFAULT_WAIT_TIMEOUT, ImageRequest, RetryPolicy, StorageClient,
    TokenSource, UploadOptions,
};
use kiln_test_support::compute_fake::ComputeFake;
use kiln_test_support::emulators::StorageEmulator;
use kiln_test_support::tarball::make_test_tarball;

const BUCKET: &str = "kiln-images";
const PROJECT: &str = "kiln-test-project";
const TARBALL: &str = "builds/disk.tar.gz";

struct World {
    _storage: StorageEmulator,
    fake: ComputeFake,
    compute: ComputeClient,
}

/// A storage emulator holding a valid tarball (and a bad one), and a
/// Compute fake reading from it.
async fn world() -> World {
    let storage = StorageEmulator::fake_gcs_server(BUCKET).await.unwrap();
    let tokens = Arc::new(TokenSource::none());
    let client = StorageClient::new(&storage.base_url, tokens.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tarball = std::fs::read(make_test_tarball(dir.path()).unwrap()).unwrap();
    let opts = UploadOptions::default();
    client
        .upload(BUCKET, TARBALL, tarball.as_slice(), &opts, &mut |_| {})
        .await
        .unwrap();
    client
        .upload(
            BUCKET,
            "builds/not-a-tarball",
            &b"plain bytes"[..],
            &opts,
            &mut |_| {},
        )
        .await
        .unwrap();
    let fake = ComputeFake::start(&storage.base_url).await.unwrap();
    let compute = ComputeClient::new(Some(&fake.base_url), tokens)
        .unwrap()
        .with_retry(RetryPolicy::fast(4))
        .with_poll_interval(Duration::from_millis(1));
    World {
        _storage: storage,
        fake,
        compute,
    }
}

fn request(name: &str) -> ImageRequest {
    let mut req = ImageRequest::new(PROJECT, name, BUCKET, TARBALL);
    req.family = Some("kiln-base".into());
    req.description = Some("built by kiln".into());
    req.labels.insert("built-by".into(), "kiln".into());
    req.guest_os_features = vec!["UEFI_COMPATIBLE".into()];
    req.architecture = Some("X86_64".into());
    req
}

#[tokio::test]
async fn insert_polls_until_done() {
    let w = world().await;
    let cancel = CancellationToken::new();
    let op = w
        .compute
        .create_image(&request("kiln-image-1"), DEFAULT_WAIT_TIMEOUT, &cancel)
        .await
        .unwrap();
    assert!(op.is_done());
    assert_eq!(op.operation_type, "insert");
    let image = w.fake.image(PROJECT, "kiln-image-1").expect("image made");
    assert_eq!(image["family"], "kiln-base");
    assert_eq!(image["labels"]["built-by"], "kiln");
    assert_eq!(image["guestOsFeatures"][0]["type"], "UEFI_COMPATIBLE");
    assert_eq!(
        image["rawDisk"]["source"],
        "https://storage.googleapis.com/kiln-images/builds/disk.tar.gz"
    );
    assert!(
        w.compute
            .image_exists(PROJECT, "kiln-image-1")
            .await
            .unwrap()
    );
}

/// As GCE: the image's numeric id as a string of digits, and its URL.
#[tokio::test]
async fn get_image_reads_the_id_and_self_link() {
    let w = world().await;
    let cancel = CancellationToken::new();
    w.compute
        .create_image(&request("kiln-image-2"), DEFAULT_WAIT_TIMEOUT, &cancel)
        .await
        .unwrap();
    let image = w.compute.get_image(PROJECT, "kiln-image-2").await.unwrap();
    assert_eq!(image.name, "kiln-image-2");
    assert!(
        !image.id.is_empty() && image.id.bytes().all(|b| b.is_ascii_digit()),
        "{image:?}"
    );
    assert_eq!(
        image.self_link,
        format!(
            "{}/projects/{PROJECT}/global/images/kiln-image-2",
            w.fake.base_url
        )
    );
    assert_eq!(image.family.as_deref(), Some("kiln-base"));
    assert_eq!(image.status, "READY");
    assert_eq!(
        image.labels.get("built-by").map(String::as_str),
        Some("kiln")
    );
    // Another image, another id.
    w.fake.add_image(PROJECT, "kiln-image-3");
    let other = w.compute.get_image(PROJECT, "kiln-image-3").await.unwrap();
    assert_ne!(other.id, image.id);
}

#[tokio::test]
async fn get_image_of_a_missing_image_says_so() {
    let w = world().await;
    let err = w
        .compute
        .get_image(PROJECT, "no-such-image")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ComputeError::ImageNotFound { project, name }
            if project == PROJECT && name == "no-such-image"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("image \"no-such-image\" not found in project {PROJECT}")
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_before_any_call() {
    let w = world().await;
    let mut req = request("Kiln_Image");
    req.labels.insert("Owner".into(), "x".into());
    let err = w.compute.insert_image(&req).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ComputeError::Invalid(_)), "{text}");
    assert!(
        text.contains("\"Kiln_Image\"") && text.contains("\"Owner\""),
        "{text}"
    );
    assert!(w.fake.insert_request_ids().is_empty());
}

#[tokio::test]
async fn the_fake_validates_names_like_gce() {
    let w = world().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/projects/{PROJECT}/global/images",
            w.fake.base_url
        ))
        .json(&serde_json::json!({ "name": "Bad", "rawDisk": { "source": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resource.name")
    );
}

#[tokio::test]
async fn a_bad_tarball_fails_the_operation_with_its_errors() {
    let w = world().await;
    let mut req = request("kiln-bad-tarball");
    req.object = "builds/not-a-tarball".into();
    let err = w
        .compute
        .create_image(&req, DEFAULT_WAIT_TIMEOUT, &CancellationToken::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    match &err {
        ComputeError::OperationFailed { errors, kind, .. } => {
            assert_eq!(kind, "insert");
            assert_eq!(errors[0].code, "INVALID_IMAGE_FILE");
        }
        other => panic!("expected an operation failure, got {other}"),
    }
    assert!(
        text.contains("INVALID_IMAGE_FILE: Invalid image file"),
        "{text}"
    );
    assert!(w.fake.image(PROJECT, "kiln-bad-tarball").is_none());
}

#[tokio::test]
async fn a_missing_source_fails_the_operation() {
    let w = world().await;
    let mut req = request("kiln-no-source");
    req.object = "builds/missing.tar.gz".into();
    let err = w
        .compute
        .create_image(&req, DEFAULT_WAIT_TIMEOUT, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RESOURCE_NOT_FOUND"), "{err}");
}

#[tokio::test]
async fn an_existing_image_is_a_clear_error_naming_force() {
    let w = world().await;
    w.fake.add_image(PROJECT, "kiln-taken");
    let err = w
        .compute
        .insert_image(&request("kiln-taken"))
        .await
        .unwrap_err();
    assert!(matches!(err, ComputeError::ImageExists { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "image \"kiln-taken\" already exists in project kiln-test-project; use -force to replace it"
    );
}

#[tokio::test]
async fn delete_then_create_replaces_an_image() {
    let w = world().await;
    let cancel = CancellationToken::new();
    w.fake.add_image(PROJECT, "kiln-forced");
    assert!(
        w.compute
            .delete_image(PROJECT, "kiln-forced", DEFAULT_WAIT_TIMEOUT, &cancel)
            .await
            .unwrap()
    );
    assert!(w.fake.image(PROJECT, "kiln-forced").is_none());
    assert!(
        !w.compute
            .delete_image(PROJECT, "kiln-forced", DEFAULT_WAIT_TIMEOUT, &cancel)
            .await
            .unwrap()
    );
    w.compute
        .create_image(&request("kiln-forced"), DEFAULT_WAIT_TIMEOUT, &cancel)
        .await
        .unwrap();
    assert!(w.fake.image(PROJECT, "kiln-forced").is_some());
}

#[tokio::test]
async fn retried_inserts_reuse_the_request_id() {
    let w = world().await;
    // The first two inserts are carried out but their answers are lost.
    w.fake.lose_insert_responses(2);
    w.compute
        .create_image(
            &request("kiln-retried"),
            DEFAULT_WAIT_TIMEOUT,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let ids = w.fake.insert_request_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids[0].is_some());
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(w.fake.image(PROJECT, "kiln-retried").is_some());
}

#[tokio::test]
async fn waiting_gives_up_at_the_timeout() {
    let w = world().await;
    w.fake.hold_operations(true);
    let op = w.compute.insert_image(&request("kiln-slow")).await.unwrap();
    let err = w
        .compute
        .wait_operation(
            PROJECT,
            &op,
            Duration::from_millis(50),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ComputeError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&op.name), "{err}");
}

#[tokio::test]
async fn waiting_can_be_cancelled() {
    let w = world().await;
    w.fake.hold_operations(true);
    let op = w
        .compute
        .insert_image(&request("kiln-cancelled"))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        trigger.cancel();
    });
    let err = w
        .compute
        .wait_operation(PROJECT, &op, DEFAULT_WAIT_TIMEOUT, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, ComputeError::Cancelled { .. }), "{err}");
}
