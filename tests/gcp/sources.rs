//! A `gs://` source (an exported Compute Engine image) resolved through
//! the source cache against the storage emulator: downloaded once, its
//! `disk.raw` unpacked once, then served from the cache.

use kiln::cache::Cache;
use kiln::plan::{Checksum, Location};
use kiln::source::{Quiet, Request, SourceError, resolve};
use kiln_test_support::emulators::StorageEmulator;
use kiln_test_support::tarball::make_test_tarball;

const BUCKET: &str = "kiln-sources";

#[tokio::test]
async fn an_exported_image_is_downloaded_unpacked_and_cached() {
    let emulator = StorageEmulator::gcp_storage_emulator(BUCKET)
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().unwrap();
    let tarball = make_test_tarball(dir.path()).unwrap();
    let bytes = std::fs::read(&tarball).unwrap();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let storage = kiln::gcp::StorageClient::new(
        &emulator.base_url,
        std::sync::Arc::new(kiln::gcp::TokenSource::none()),
    )
    .unwrap();
    storage
        .upload(
            BUCKET,
            "golden/disk.tar.gz",
            bytes.as_slice(),
            &kiln::gcp::UploadOptions::default(),
            &mut |_| {},
        )
        .await
        .expect("upload");
    // SAFETY: no other test of this binary reads or sets the variable (the
    // others give the emulator's URL to their clients directly).
    unsafe { std::env::set_var("STORAGE_EMULATOR_HOST", &emulator.base_url) };

    let cache = Cache::at(dir.path().join("cache"));
    let candidates = [Location::Gcs {
        bucket: BUCKET.into(),
        object: "golden/disk.tar.gz".into(),
    }];
    let checksum = Checksum::Sha256(digest);
    let request = Request {
        candidates: &candidates,
        checksum: &checksum,
        target_path: None,
    };
    let disk = resolve(request, &cache, &Quiet).await.expect("resolve");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1 << 30);
    assert_eq!(
        kiln::source::known_format(&candidates),
        Some(kiln::export::ImageFormat::Raw)
    );

    // Served from the cache: the object may go.
    storage
        .delete_object(BUCKET, "golden/disk.tar.gz")
        .await
        .unwrap();
    let again = resolve(request, &cache, &Quiet).await.expect("cached");
    assert_eq!(again, disk);

    // A wrong digest is refused, and nothing is unpacked for it.
    let wrong = Checksum::Sha256("0".repeat(64));
    let missing = [Location::Gcs {
        bucket: BUCKET.into(),
        object: "nothing-here.tar.gz".into(),
    }];
    let err = resolve(
        Request {
            candidates: &missing,
            checksum: &wrong,
            target_path: None,
        },
        &cache,
        &Quiet,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SourceError::Gcs { url, .. } if url == "gs://kiln-sources/nothing-here.tar.gz"),
        "{err:?}"
    );
    // SAFETY: as above.
    unsafe { std::env::remove_var("STORAGE_EMULATOR_HOST") };
}
