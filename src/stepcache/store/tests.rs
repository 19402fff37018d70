use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::sync::mpsc;

use super::*;
use crate::stepcache::key::{BootInputs, boot_key, final_key, step_key};

/// A qcow2 header (all a lookup reads) backed by `backing`, padded to `len`.
pub(crate) fn fake_qcow2(path: &Path, backing: Option<&Path>, len: usize) {
    let mut data = vec![0u8; len.max(1024)];
    data[..4].copy_from_slice(b"QFI\xfb");
    data[4..8].copy_from_slice(&3u32.to_be_bytes());
    data[20..24].copy_from_slice(&16u32.to_be_bytes());
    if let Some(backing) = backing {
        let name = backing.as_os_str().as_bytes();
        data[8..16].copy_from_slice(&512u64.to_be_bytes());
        data[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        data[512..512 + name.len()].copy_from_slice(name);
    }
    std::fs::write(path, data).unwrap();
}

/// A cache in a temporary directory, with a source image in it.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) cache: Cache,
    pub(crate) store: StepStore,
    pub(crate) source: PathBuf,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path().join("cache"));
    let store = StepStore::open(&cache).unwrap();
    let source = dir.path().join("source.img");
    std::fs::write(&source, "a source image").unwrap();
    Fixture {
        _dir: dir,
        cache,
        store,
        source,
    }
}

/// A key of its own for each `n`.
pub(crate) fn key(n: u8) -> StepKey {
    final_key(&"00".repeat(32).parse().unwrap(), &n.to_string())
}

fn boot_info(source: &Path) -> EntryInfo {
    EntryInfo {
        kind: EntryKind::Boot,
        parent: None,
        base: Some(source.to_path_buf()),
        label: "boot".into(),
    }
}

fn step_info(parent: StepKey) -> EntryInfo {
    EntryInfo {
        kind: EntryKind::Step,
        parent: Some(parent),
        base: None,
        label: "provisioner 1 (shell)".into(),
    }
}

fn new(began: Began) -> PendingEntry {
    match began {
        Began::New(pending) => pending,
        Began::Exists(used) => panic!("{} exists", used.key()),
    }
}

/// Writes what a build would: overlay, state, key.
fn fill(pending: &PendingEntry, backing: Option<&Path>, state: &str) {
    fake_qcow2(&pending.disk_path(), backing, 4096);
    std::fs::write(pending.state_path(), state).unwrap();
    std::fs::write(pending.ssh_key_path(), "PRIVATE KEY").unwrap();
    std::fs::set_permissions(
        pending.ssh_key_path(),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A committed boot entry and a step entry on it; both released.
fn chain(f: &Fixture) -> (StepKey, StepKey) {
    let boot = key(0);
    let pending = new(f.store.begin(&boot, boot_info(&f.source)).unwrap());
    fill(&pending, Some(&f.source), "boot state");
    drop(pending.commit(CommitInfo::default()).unwrap());
    let step = key(1);
    let pending = new(f.store.begin(&step, step_info(boot)).unwrap());
    fill(&pending, Some(&f.store.disk_path(&boot)), "step state");
    drop(pending.commit(CommitInfo::default()).unwrap());
    (boot, step)
}

#[test]
fn committed_entries_are_found_and_name_their_files() {
    let f = fixture();
    assert!(f.store.lookup(&key(0)).unwrap().is_none());
    let (boot, step) = chain(&f);
    let used = f.store.lookup(&step).unwrap().expect("a hit");
    assert_eq!(used.key(), &step);
    assert_eq!(used.disk_path(), f.store.disk_path(&step));
    assert_eq!(
        std::fs::read_to_string(used.state_path()).unwrap(),
        "step state"
    );
    let meta = used.meta();
    assert_eq!(meta.kind, EntryKind::Step);
    assert_eq!(meta.parent, Some(boot));
    assert_eq!(meta.base, Some(f.store.disk_path(&boot)));
    let names: Vec<_> = meta.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["disk.qcow2", "ssh_key", "state"]);
    let boot_used = f.store.lookup(&boot).unwrap().expect("a hit");
    assert_eq!(boot_used.meta().base.as_deref(), Some(f.source.as_path()));
    // Listed as step entries with their labels.
    let listed = f.cache.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|e| e.kind == crate::cache::Kind::Step));
    assert!(
        listed
            .iter()
            .any(|e| e.origin.as_deref() == Some("provisioner 1 (shell)"))
    );
}

/// Waits until some process waits for a lock on `path` (/proc/locks marks
/// blocked requests with `->`).
fn wait_for_blocked_lock(path: &Path) {
    let inode = std::fs::metadata(path).unwrap().ino();
    let needle = format!(":{inode} ");
    for _ in 0..10_000 {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&needle))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("nobody waited for {}", path.display());
}

#[test]
fn a_second_builder_of_a_key_waits_then_uses_the_first_ones_entry() {
    let f = fixture();
    let k = key(0);
    let first = new(f.store.begin(&k, boot_info(&f.source)).unwrap());
    let (tx, rx) = mpsc::channel();
    let store = f.store.clone();
    let source = f.source.clone();
    let second = std::thread::spawn(move || {
        let began = store.begin(&k, boot_info(&source)).unwrap();
        tx.send(()).unwrap();
        began
    });
    wait_for_blocked_lock(&f.store.lock_path(&k));
    assert!(rx.try_recv().is_err(), "the second builder did not wait");
    fill(&first, Some(&f.source), "state");
    let committed = first.commit(CommitInfo::default()).unwrap();
    match second.join().unwrap() {
        // While the first build still uses the entry.
        Began::Exists(used) => assert_eq!(used.meta(), committed.meta()),
        Began::New(_) => panic!("the second builder rebuilt the entry"),
    }
}

#[test]
fn a_half_written_entry_is_rebuilt() {
    let f = fixture();
    let k = key(0);
    // A killed build leaves its files and no record.
    let dir = f.store.dir(&k);
    std::fs::create_dir_all(&dir).unwrap();
    fake_qcow2(&dir.join(DISK), Some(&f.source), 4096);
    std::fs::write(dir.join(STATE), "half").unwrap();
    assert!(f.store.lookup(&k).unwrap().is_none());
    let pending = new(f.store.begin(&k, boot_info(&f.source)).unwrap());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    fill(&pending, Some(&f.source), "state");
    pending.commit(CommitInfo::default()).unwrap();
    assert!(f.store.lookup(&k).unwrap().is_some());
}

#[test]
fn a_builder_that_gives_up_leaves_the_key_to_the_next() {
    let f = fixture();
    let k = key(0);
    let first = new(f.store.begin(&k, boot_info(&f.source)).unwrap());
    let store = f.store.clone();
    let source = f.source.clone();
    let second = std::thread::spawn(move || store.begin(&k, boot_info(&source)).unwrap());
    wait_for_blocked_lock(&f.store.lock_path(&k));
    drop(first);
    let pending = new(second.join().unwrap());
    fill(&pending, Some(&f.source), "state");
    pending.commit(CommitInfo::default()).unwrap();
}

#[test]
fn a_dropped_pending_entry_leaves_nothing() {
    let f = fixture();
    let pending = new(f.store.begin(&key(0), boot_info(&f.source)).unwrap());
    fill(&pending, Some(&f.source), "state");
    let dir = pending.dir().to_path_buf();
    drop(pending);
    assert!(!dir.exists());
    assert!(f.store.lookup(&key(0)).unwrap().is_none());
}

fn assert_corrupt(f: &Fixture, k: &StepKey) {
    assert!(f.store.lookup(k).unwrap().is_none());
    // Removed, as nobody held it.
    assert!(!f.store.dir(k).exists());
}

#[test]
fn a_changed_byte_in_the_state_is_detected() {
    let f = fixture();
    let (_, step) = chain(&f);
    let state = f.store.dir(&step).join(STATE);
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&state, bytes).unwrap();
    assert_corrupt(&f, &step);
}

#[test]
fn a_changed_byte_is_detected_even_with_the_time_set_back() {
    let f = fixture();
    let (_, step) = chain(&f);
    let state = f.store.dir(&step).join(STATE);
    let before = std::fs::metadata(&state).unwrap().modified().unwrap();
    std::fs::write(&state, "step statf").unwrap();
    File::options()
        .append(true)
        .open(&state)
        .unwrap()
        .set_modified(before)
        .unwrap();
    assert_corrupt(&f, &step);
}

#[test]
fn a_truncated_disk_is_detected() {
    let f = fixture();
    let (_, step) = chain(&f);
    let disk = f.store.disk_path(&step);
    File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_corrupt(&f, &step);
}

#[test]
fn a_disk_backed_by_something_else_is_detected() {
    let f = fixture();
    let (_, step) = chain(&f);
    // Same size and digest recorded anew would not help: the header is
    // read on every lookup.
    let dir = f.store.dir(&step);
    let mut meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META)).unwrap()).unwrap();
    fake_qcow2(&dir.join(DISK), Some(&f.source), 4096);
    let mut file = File::open(dir.join(DISK)).unwrap();
    let digest = sha256_of(&mut file).unwrap();
    let record = meta.files.iter_mut().find(|r| r.name == DISK).unwrap();
    record.sha256 = hex::encode(digest);
    record.fingerprint = Fingerprint::of(&file.metadata().unwrap());
    write_meta(&dir, &meta).unwrap();
    assert_corrupt(&f, &step);
}

#[test]
fn a_missing_parent_is_detected() {
    let f = fixture();
    let (boot, step) = chain(&f);
    std::fs::remove_dir_all(f.store.dir(&boot)).unwrap();
    assert_corrupt(&f, &step);
}

#[test]
fn a_parent_rebuilt_differently_invalidates_its_children() {
    let f = fixture();
    let (boot, step) = chain(&f);
    std::fs::remove_dir_all(f.store.dir(&boot)).unwrap();
    let pending = new(f.store.begin(&boot, boot_info(&f.source)).unwrap());
    fake_qcow2(&pending.disk_path(), Some(&f.source), 8192);
    std::fs::write(pending.state_path(), "other boot").unwrap();
    drop(pending.commit(CommitInfo::default()).unwrap());
    assert!(f.store.lookup(&boot).unwrap().is_some());
    assert_corrupt(&f, &step);
}

#[test]
fn a_changed_source_invalidates_the_boot_entry() {
    let f = fixture();
    let (boot, _) = chain(&f);
    std::fs::write(&f.source, "another image!").unwrap();
    assert_corrupt(&f, &boot);
}

#[test]
fn a_corrupt_entry_in_use_is_not_removed() {
    let f = fixture();
    let (_, step) = chain(&f);
    let held = f.store.lookup(&step).unwrap().expect("a hit");
    std::fs::write(held.state_path(), "damaged!!!").unwrap();
    assert!(f.store.lookup(&step).unwrap().is_none());
    assert!(f.store.dir(&step).exists());
    drop(held);
    assert_corrupt(&f, &step);
}

#[test]
fn commit_refuses_an_ssh_key_others_can_read() {
    let f = fixture();
    let pending = new(f.store.begin(&key(0), boot_info(&f.source)).unwrap());
    fill(&pending, Some(&f.source), "state");
    std::fs::set_permissions(
        pending.ssh_key_path(),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let dir = pending.dir().to_path_buf();
    let err = pending.commit(CommitInfo::default()).unwrap_err();
    assert!(
        matches!(err, StepCacheError::KeyMode { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ssh_key"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn commit_needs_the_disk_and_the_state() {
    let f = fixture();
    let pending = new(f.store.begin(&key(0), boot_info(&f.source)).unwrap());
    fake_qcow2(&pending.disk_path(), Some(&f.source), 4096);
    let err = pending.commit(CommitInfo::default()).unwrap_err();
    assert!(err.to_string().ends_with("state: it is missing"), "{err}");
    let pending = new(f.store.begin(&key(1), step_info(key(7))).unwrap());
    fill(&pending, None, "state");
    let err = pending.commit(CommitInfo::default()).unwrap_err();
    assert!(matches!(err, StepCacheError::NoParent { .. }), "{err}");
}

#[test]
fn a_final_entry_is_a_standalone_disk() {
    let f = fixture();
    let (_, step) = chain(&f);
    let fin = final_key(&step, "shutdown");
    let pending = new(f
        .store
        .begin(
            &fin,
            EntryInfo {
                kind: EntryKind::Final,
                parent: Some(step),
                base: None,
                label: "final".into(),
            },
        )
        .unwrap());
    std::fs::write(pending.raw_disk_path(), vec![0u8; 4096]).unwrap();
    let mut used = pending.commit(CommitInfo::default()).unwrap();
    assert_eq!(used.disk_path(), f.store.dir(&fin).join(RAW_DISK));
    let mut extra = serde_json::Map::new();
    extra.insert("tests".into(), "abc".into());
    assert!(used.record_extra(extra.clone()).unwrap());
    let other = f.store.lookup(&fin).unwrap().expect("a hit");
    assert_eq!(other.meta().extra.get("tests"), Some(&"abc".into()));
    // Another build holds it too: not recorded, and no waiting.
    extra.insert("tests".into(), "def".into());
    assert!(!used.record_extra(extra).unwrap());
    assert_eq!(used.meta().extra.get("tests"), Some(&"abc".into()));
}

#[test]
fn a_secret_in_a_description_is_written_nowhere() {
    let f = fixture();
    let secret = "hunter2-s3cr3t";
    let scripts = f.cache.root().parent().unwrap().join("script.sh");
    std::fs::write(&scripts, "echo hi").unwrap();
    let digest = f.store.source_digest(&f.source).unwrap();
    let boot = boot_key(&BootInputs {
        kiln_version: "0",
        source_digest: digest,
        launch: vec![format!("-append password={secret}")],
        files: vec![],
    })
    .unwrap();
    let step = step_key(
        &boot,
        &format!("Shell {{ environment: [(\"TOKEN\", \"{secret}\")] }}"),
        &[scripts],
    )
    .unwrap();
    for (k, info) in [(boot, boot_info(&f.source)), (step, step_info(boot))] {
        let pending = new(f.store.begin(&k, info).unwrap());
        let backing = if k == boot {
            f.source.clone()
        } else {
            f.store.disk_path(&boot)
        };
        fill(&pending, Some(&backing), "state");
        pending.commit(CommitInfo::default()).unwrap();
    }
    let mut dirs = vec![f.cache.root().to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(dir).unwrap().flatten() {
            let path = item.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                seen += 1;
                let text = std::fs::read(&path).unwrap();
                assert!(
                    !text.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
    assert!(seen >= 8, "{seen} files");
}
