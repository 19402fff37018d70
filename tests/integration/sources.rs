//! Remote sources: downloads from a local HTTP server into the cache,
//! resumed, retried and verified; the cache reused, repaired and pruned.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln::cache::Cache;
use kiln::plan::{Checksum, Location};
use kiln::source::{self, Events, SourceError};
use kiln_test_support::file_server::{Fault, FileServer};
use serde_json::json;
use sha2::Digest as _;

use crate::util::{GuestRoot, Run, Scratch, fixture, fixture_builder, path_str};

/// Runs kiln off the async runtime, which keeps serving files meanwhile.
async fn kiln(scratch: &Scratch, cache: &Path, args: &[&str]) -> Run {
    let mut command = scratch.kiln(args);
    command.env("KILN_CACHE_DIR", cache);
    tokio::task::spawn_blocking(move || Run::from(command.output().expect("run kiln")))
        .await
        .expect("join")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Bytes that differ everywhere, so a misplaced resume shows in the digest.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// What a fetch told the person watching.
#[derive(Default)]
struct Recorded {
    said: Mutex<Vec<String>>,
}

impl Events for Recorded {
    fn say(&self, message: &str) {
        self.said.lock().unwrap().push(message.to_string());
    }
    fn progress(&self, _progress: Option<(u64, Option<u64>)>) {}
}

impl Recorded {
    fn said(&self) -> Vec<String> {
        self.said.lock().unwrap().clone()
    }
}

async fn fetch(
    url: &str,
    checksum: Checksum,
    cache: &Cache,
    events: &dyn Events,
) -> Result<PathBuf, SourceError> {
    let candidates = [Location::Url(url::Url::parse(url).unwrap())];
    let request = source::Request {
        candidates: &candidates,
        checksum: &checksum,
        target_path: None,
    };
    source::resolve(request, cache, events).await
}

/// Every file under the cache directory, relative to it.
fn files_in(cache: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![cache.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(cache).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_from_an_http_url_boots_and_a_second_build_downloads_nothing() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let server = FileServer::start().await.unwrap();
    let image = std::fs::read(fixture()).unwrap();
    let url = server.add("/images/fixture.qcow2", image.clone());
    let template = scratch.write_json(
        "t.json",
        &json!({
            "builders": [fixture_builder(json!({
                "iso_url": url,
                "iso_checksum": format!("sha256:{}", sha256(&image)),
                "output_directory": "out",
                "vm_name": "disk.qcow2",
            }))],
            "provisioners": [{"type": "shell", "inline": ["echo fetched > /root/marker"]}]
        }),
    );
    let run = kiln(&scratch, &cache, &["build", path_str(&template)]).await;
    run.assert_success();
    assert!(
        run.all().contains(&format!("Downloading {url}")),
        "{}",
        run.all()
    );
    assert_eq!(server.requests_for("/images/fixture.qcow2").len(), 1);
    let disk = scratch.path().join("out/disk.qcow2");
    assert_eq!(
        GuestRoot::open(&disk).read("/root/marker").as_deref(),
        Some("fetched\n")
    );
    let entry = format!("sources/sha256-{}", sha256(&image));
    assert_eq!(files_in(&cache), [entry.clone(), format!("{entry}.json")]);

    let again = kiln(&scratch, &cache, &["build", "-force", path_str(&template)]).await;
    again.assert_success();
    assert!(
        again.all().contains(&format!("Using the cached {url}")),
        "{}",
        again.all()
    );
    assert_eq!(
        server.requests_for("/images/fixture.qcow2").len(),
        1,
        "the second build asked for the image again"
    );

    let list = kiln(&scratch, &cache, &["cache", "list"]).await;
    list.assert_success();
    assert!(list.stdout.contains("source"), "{}", list.stdout);
    assert!(list.stdout.contains(&url), "{}", list.stdout);
    assert!(list.stdout.contains("1 entry"), "{}", list.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_is_resumed_with_a_range_request_and_verified() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let data = content(3 << 20);
    let cut_at = 1 << 20;
    let server = FileServer::with_faults(move |r| {
        if r.index == 0 {
            Fault::CutAfter(cut_at)
        } else {
            Fault::Pass
        }
    })
    .await
    .unwrap();
    let url = server.add("/disk.img", data.clone());
    let path = fetch(
        &url,
        Checksum::Sha256(sha256(&data)),
        &cache,
        &Recorded::default(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let requests = server.requests_for("/disk.img");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(requests[1].range.as_deref(), Some("bytes=1048576-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_and_a_refused_connection_is_not() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let data = content(100_000);
    let server = FileServer::with_faults(|r| match r.index {
        0 => Fault::Status(503),
        1 => Fault::Status(429),
        _ => Fault::Pass,
    })
    .await
    .unwrap();
    let url = server.add("/disk.img", data.clone());
    let path = fetch(&url, Checksum::None, &cache, &Recorded::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(server.requests().len(), 3);

    // A 404 is final.
    let missing = format!("{}/missing.img", server.base_url);
    let err = fetch(&missing, Checksum::None, &cache, &Recorded::default())
        .await
        .unwrap_err();
    let message = kiln::error::error_chain(&err);
    assert!(message.contains("404"), "{message}");
    assert_eq!(server.requests_for("/missing.img").len(), 1);

    // Once the server is gone, the cached copy still serves.
    let base_url = server.base_url.clone();
    drop(server);
    let cached = fetch(&url, Checksum::None, &cache, &Recorded::default())
        .await
        .unwrap();
    assert_eq!(cached, path);
    let uncached = format!("{base_url}/other.img");
    let err = fetch(&uncached, Checksum::None, &cache, &Recorded::default())
        .await
        .unwrap_err();
    let message = kiln::error::error_chain(&err);
    assert!(
        message.starts_with(&format!("downloading {uncached}: cannot connect")),
        "{message}"
    );
    assert!(!message.contains("gave up"), "{message}");
    assert_eq!(
        files_in(cache.root()).len(),
        2,
        "{:?}",
        files_in(cache.root())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_checksum_fails_naming_both_digests_and_caches_nothing() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let server = FileServer::start().await.unwrap();
    let data = content(200_000);
    let url = server.add("/disk.img", data.clone());
    let wrong = "0".repeat(64);
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [fixture_builder(json!({
            "iso_url": url,
            "iso_checksum": format!("sha256:{wrong}"),
            "output_directory": "out",
        }))]}),
    );
    let run = kiln(&scratch, &cache, &["build", path_str(&template)]).await;
    run.assert_failure();
    let expected = format!(
        "{url} does not match its sha256 checksum: expected {wrong}, got {}",
        sha256(&data)
    );
    assert!(run.stderr.contains(&expected), "{}", run.all());
    assert_eq!(files_in(&cache), Vec::<String>::new());
    assert!(!scratch.path().join("out").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncached_source_with_the_server_down_fails_at_once_naming_the_url() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let port = kiln_test_support::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/images/disk.qcow2");
    let template = scratch.write_json(
        "t.json",
        &json!({"builders": [fixture_builder(json!({
            "iso_url": url,
            "iso_checksum": format!("sha256:{}", "a".repeat(64)),
            "output_directory": "out",
        }))]}),
    );
    let run = kiln(&scratch, &cache, &["build", path_str(&template)]).await;
    run.assert_failure();
    assert!(
        run.stderr
            .contains(&format!("downloading {url}: cannot connect")),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("Connection refused"), "{}", run.all());
    assert!(!run.all().contains("retrying"), "{}", run.all());
    assert_eq!(files_in(&cache), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn checksum_lists_by_url_and_by_path_name_the_digest() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let server = FileServer::start().await.unwrap();
    let data = content(50_000);
    let url = server.add("/releases/disk.img", data.clone());
    let list = format!(
        "{}  other.img\n{} *disk.img\n",
        "b".repeat(64),
        sha256(&data)
    );
    let list_url = server.add("/releases/SHA256SUMS", list.clone().into_bytes());
    let by_url = Checksum::File(Location::Url(url::Url::parse(&list_url).unwrap()));
    let path = fetch(&url, by_url, &cache, &Recorded::default())
        .await
        .unwrap();
    assert_eq!(
        path,
        cache
            .root()
            .join(format!("sources/sha256-{}", sha256(&data)))
    );

    // A BSD-style list on disk, and a line for another file only.
    let local = scratch.write("SUMS", &format!("SHA256 (disk.img) = {}\n", sha256(&data)));
    let by_path = Checksum::File(Location::Path(local));
    assert_eq!(
        fetch(&url, by_path, &cache, &Recorded::default())
            .await
            .unwrap(),
        path
    );
    let other = scratch.write("OTHER", &format!("{}  other.img\n", "c".repeat(64)));
    let err = fetch(
        &url,
        Checksum::File(Location::Path(other.clone())),
        &cache,
        &Recorded::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the checksum list {} has no checksum for disk.img",
            other.display()
        )
    );
    // The image was downloaded once: the other fetches used the cache.
    assert_eq!(server.requests_for("/releases/disk.img").len(), 1);

    // Offline, the cached copy is checked against the digest the list gave.
    let base_url = server.base_url.clone();
    drop(server);
    let by_url = Checksum::File(Location::Url(url::Url::parse(&list_url).unwrap()));
    let events = Recorded::default();
    assert_eq!(
        fetch(&url, by_url.clone(), &cache, &events).await.unwrap(),
        path
    );
    assert!(
        events
            .said()
            .iter()
            .any(|m| m.starts_with("The checksum list cannot be read")),
        "{:?}",
        events.said()
    );
    std::fs::write(&path, b"damaged").unwrap();
    let err = fetch(&url, by_url.clone(), &cache, &Recorded::default())
        .await
        .unwrap_err();
    assert!(
        kiln::error::error_chain(&err).starts_with(&format!("downloading {url}: cannot connect")),
        "{err}"
    );
    let uncached = format!("{base_url}/releases/other.img");
    let err = fetch(&uncached, by_url, &cache, &Recorded::default())
        .await
        .unwrap_err();
    assert!(
        kiln::error::error_chain(&err)
            .starts_with(&format!("downloading {list_url}: cannot connect")),
        "{err}"
    );
}

#[test]
fn two_fetches_of_one_url_at_once_make_one_good_entry() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let data = content(4 << 20);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FileServer::start()).unwrap();
    let url = server.add("/disk.img", data.clone());
    let digest = sha256(&data);
    let barrier = std::sync::Barrier::new(2);
    let paths: Vec<PathBuf> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let own = tokio::runtime::Runtime::new().unwrap();
                    barrier.wait();
                    own.block_on(fetch(
                        &url,
                        Checksum::Sha256(digest.clone()),
                        &cache,
                        &Recorded::default(),
                    ))
                    .unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(paths[0], paths[1]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), data);
    assert_eq!(server.requests_for("/disk.img").len(), 1);
    assert_eq!(
        files_in(cache.root()),
        [
            format!("sources/sha256-{digest}"),
            format!("sources/sha256-{digest}.json")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_cache_entry_is_detected_and_fetched_again() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let server = FileServer::start().await.unwrap();
    let data = content(300_000);
    let url = server.add("/disk.img", data.clone());
    for checksum in [Checksum::Sha256(sha256(&data)), Checksum::None] {
        let path = fetch(&url, checksum.clone(), &cache, &Recorded::default())
            .await
            .unwrap();
        let before = server.requests().len();
        // A flipped byte, as a bad disk or an interrupted copy leaves.
        let mut damaged = data.clone();
        damaged[1000] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let events = Recorded::default();
        let again = fetch(&url, checksum, &cache, &events).await.unwrap();
        assert_eq!(again, path);
        assert_eq!(std::fs::read(&again).unwrap(), data);
        assert_eq!(server.requests().len(), before + 1);
        let said = events.said();
        assert!(
            said.iter()
                .any(|m| m.starts_with(&format!("The cached {url} is damaged (expected "))),
            "{said:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kiln_cache_lists_and_prunes_entries() {
    let scratch = Scratch::new();
    let root = scratch.path().join("cache");
    let cache = Cache::at(&root);
    let empty = kiln(&scratch, &root, &["cache", "list"]).await;
    empty.assert_success();
    assert!(empty.stdout.contains("is empty"), "{}", empty.stdout);

    let server = FileServer::start().await.unwrap();
    let small = server.add("/small.img", content(10_000));
    let large = server.add("/large.img", content(2 << 20));
    for url in [&large, &small] {
        fetch(url, Checksum::None, &cache, &Recorded::default())
            .await
            .unwrap();
    }
    let list = kiln(&scratch, &root, &["cache", "list"]).await;
    list.assert_success();
    assert!(list.stdout.starts_with("KIND"), "{}", list.stdout);
    assert!(
        list.stdout.contains(&small) && list.stdout.contains(&large),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("2 entries"), "{}", list.stdout);

    let bare = kiln(&scratch, &root, &["cache", "prune"]).await;
    bare.assert_usage_error();
    assert!(bare.stderr.contains("-older-than"), "{}", bare.stderr);
    let bad = kiln(&scratch, &root, &["cache", "prune", "-max-size", "lots"]).await;
    bad.assert_usage_error();
    assert!(bad.stderr.contains("-max-size"), "{}", bad.stderr);

    // Nothing is a week old yet.
    let kept = kiln(&scratch, &root, &["cache", "prune", "-older-than", "7d"]).await;
    kept.assert_success();
    assert!(kept.stdout.contains("Removed 0 entries"), "{}", kept.stdout);
    // The large one was fetched first: it goes, so the rest fit in 1 MiB.
    let fitted = kiln(&scratch, &root, &["cache", "prune", "-max-size=1M"]).await;
    fitted.assert_success();
    assert!(
        fitted.stdout.contains(&format!("Removed source {large}")),
        "{}",
        fitted.stdout
    );
    assert_eq!(cache.list().unwrap().len(), 1);
    let all = kiln(&scratch, &root, &["cache", "prune", "-all"]).await;
    all.assert_success();
    assert!(all.stdout.contains("Removed 1 entry"), "{}", all.stdout);
    assert_eq!(files_in(&root), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn iso_target_path_keeps_the_download_there_instead_of_the_cache() {
    let scratch = Scratch::new();
    let cache = Cache::at(scratch.path().join("cache"));
    let server = FileServer::start().await.unwrap();
    let data = content(70_000);
    let url = server.add("/dl/disk.img", data.clone());
    let candidates = [Location::Url(url::Url::parse(&url).unwrap())];
    let checksum = Checksum::Sha256(sha256(&data));
    // No extension: a directory, with the URL's file name in it.
    let target = scratch.path().join("images");
    let request = source::Request {
        candidates: &candidates,
        checksum: &checksum,
        target_path: Some(&target),
    };
    let path = source::resolve(request, &cache, &Recorded::default())
        .await
        .unwrap();
    assert_eq!(path, target.join("disk.img"));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(files_in(&target), ["disk.img"]);
    assert_eq!(files_in(cache.root()), Vec::<String>::new());
    // Checked and used again, not downloaded.
    let again = source::resolve(request, &cache, &Recorded::default())
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests_for("/dl/disk.img").len(), 1);
}
