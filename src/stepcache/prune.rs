//! Step entries for `kiln cache`: listing them beside the sources, removing
//! them (never one in use), and sweeping what killed builds left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::key::{StepKey, prune_digests};
use super::lock::{EntryLock, Mode};
use super::store::{META, Meta};
use crate::cache::{Cache, CacheError, Entry, Kind};
use crate::error::FileError;

/// How old a half-written entry must be before prune takes it for the
/// leftover of a killed build rather than one being written (its builder
/// holds the lock anyway; this spares a slow one that lost it).
const HALF_WRITTEN_AGE: Duration = Duration::from_secs(3600);

fn steps_dir(cache: &Cache) -> PathBuf {
    cache.root().join("steps")
}

/// One complete step entry as found on disk (not validated: listing must
/// stay cheap).
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// How `kiln cache` shows it.
    pub entry: Entry,
    /// The backing file of its disk.
    pub base: Option<PathBuf>,
    /// Its directory.
    pub dir: PathBuf,
}

/// Every complete step entry: size = its files' sizes, last use = the
/// record's modification time, origin = its label.
pub(crate) fn list(cache: &Cache) -> Result<Vec<Found>, CacheError> {
    let steps = steps_dir(cache);
    let read = match std::fs::read_dir(&steps) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::read(&steps)(e).into()),
    };
    let mut found = Vec::new();
    for item in read {
        let item = item.map_err(FileError::read(&steps))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.parse::<StepKey>().is_err() {
            continue;
        }
        let dir = item.path();
        let Ok(record) = std::fs::metadata(dir.join(META)) else {
            continue;
        };
        let meta: Option<Meta> = std::fs::read(dir.join(META))
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        let size = std::fs::read_dir(&dir)
            .map(|files| {
                files
                    .flatten()
                    .filter_map(|f| f.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        found.push(Found {
            entry: Entry {
                kind: Kind::Step,
                key: name,
                size,
                used: record.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                origin: meta.as_ref().map(|m| m.label.clone()),
            },
            base: meta.and_then(|m| m.base),
            dir,
        });
    }
    Ok(found)
}

/// Removes step entry `key` unless a build holds it; whether it did.
pub(crate) fn remove(cache: &Cache, key: &str) -> Result<bool, CacheError> {
    let steps = steps_dir(cache);
    let lock_path = steps.join(format!("{key}.lock"));
    let lock = match EntryLock::take(&lock_path, Mode::Exclusive, false) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::info!(entry = %key, "step cache entry in use; kept");
            return Ok(false);
        }
        Err(e) => return Err(CacheError::Step(Box::new(e))),
    };
    let dir = steps.join(key);
    // The record first: from then on nobody takes the rest for an entry.
    for result in [
        remove_file(&dir.join(META)),
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FileError::write(&dir)(e)),
            _ => Ok(()),
        },
    ] {
        result?;
    }
    lock.remove();
    Ok(true)
}

fn remove_file(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FileError::write(path)(e)),
        _ => Ok(()),
    }
}

/// Removes the step entries built on `removed` (a source image or an
/// entry's disk), and theirs in turn: they cannot be used without it.
/// Returns what it removed.
pub(crate) fn remove_dependents(cache: &Cache, removed: &Path) -> Result<Vec<Entry>, CacheError> {
    let mut gone = vec![removed.to_path_buf()];
    let mut out = Vec::new();
    while let Some(path) = gone.pop() {
        for found in list(cache)? {
            if found.base.as_deref() == Some(path.as_path()) && remove(cache, &found.entry.key)? {
                gone.push(found.dir.join(super::store::DISK));
                out.push(found.entry);
            }
        }
    }
    Ok(out)
}

/// What killed builds and removals leave: half-written entries older than
/// an hour, entries whose backing file is gone (their parent was pruned),
/// lock files of vanished entries, memos of changed source images.
/// Returns the complete entries it removed.
pub(crate) fn sweep(cache: &Cache, now: SystemTime) -> Result<Vec<Entry>, CacheError> {
    let steps = steps_dir(cache);
    let mut removed = Vec::new();
    for found in list(cache)? {
        if let Some(base) = &found.base
            && !base.exists()
            && remove(cache, &found.entry.key)?
        {
            removed.push(found.entry);
        }
    }
    let Ok(read) = std::fs::read_dir(&steps) else {
        return Ok(removed);
    };
    for item in read.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        if name.parse::<StepKey>().is_ok() {
            if !path.join(META).exists()
                && newest_change(&path).is_some_and(|t| age(now, t) > HALF_WRITTEN_AGE)
            {
                remove(cache, &name)?;
            }
        } else if let Some(key) = name.strip_suffix(".lock")
            && key.parse::<StepKey>().is_ok()
            && !steps.join(key).exists()
        {
            // Taken without waiting, so a build about to begin that entry
            // keeps its lock file.
            if let Ok(Some(lock)) = EntryLock::take(&path, Mode::Exclusive, false)
                && !steps.join(key).exists()
            {
                lock.remove();
            }
        }
    }
    prune_digests(cache);
    Ok(removed)
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// When a directory or any file in it last changed.
fn newest_change(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    for item in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(time) = item.metadata().and_then(|m| m.modified()) {
            newest = newest.max(time);
        }
    }
    Some(newest)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::cache::PruneRule;
    use crate::stepcache::store::tests::{Fixture, fake_qcow2, fixture, key};
    use crate::stepcache::{Began, CommitInfo, EntryInfo, EntryKind};

    const HOUR: Duration = Duration::from_secs(3600);

    /// Commits entry `n` (a boot entry on the source, or a step on
    /// `parent`) of `size` bytes of state, last used `age` ago.
    fn entry(f: &Fixture, n: u8, parent: Option<StepKey>, size: usize, age: Duration) -> StepKey {
        let k = key(n);
        let info = EntryInfo {
            kind: if parent.is_some() {
                EntryKind::Step
            } else {
                EntryKind::Boot
            },
            parent,
            base: Some(f.source.clone()),
            label: format!("entry {n}"),
        };
        let Began::New(pending) = f.store.begin(&k, info).unwrap() else {
            panic!("exists");
        };
        let backing = parent.map_or_else(|| f.source.clone(), |p| f.store.disk_path(&p));
        fake_qcow2(&pending.disk_path(), Some(&backing), 1024);
        std::fs::write(pending.state_path(), vec![1u8; size]).unwrap();
        drop(pending.commit(CommitInfo::default()).unwrap());
        set_used(f, &k, age);
        k
    }

    fn set_used(f: &Fixture, k: &StepKey, age: Duration) {
        let meta = File::options()
            .append(true)
            .open(f.store.dir(k).join(META))
            .unwrap();
        meta.set_modified(SystemTime::now() - age).unwrap();
    }

    fn keys(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|e| e.key.clone()).collect()
    }

    fn rule(older_than: Option<Duration>, max_size: Option<u64>, all: bool) -> PruneRule {
        PruneRule {
            all,
            older_than,
            max_size,
        }
    }

    #[test]
    fn step_entries_are_listed_with_size_age_and_label() {
        let f = fixture();
        let a = entry(&f, 0, None, 100, 2 * HOUR);
        let listed = f.cache.list().unwrap();
        assert_eq!(keys(&listed), [a.to_string()]);
        let e = &listed[0];
        assert_eq!(e.kind, Kind::Step);
        let record = std::fs::metadata(f.store.dir(&a).join(META)).unwrap().len();
        assert_eq!(e.size, 1024 + 100 + record);
        assert_eq!(e.origin.as_deref(), Some("entry 0"));
        let age = SystemTime::now().duration_since(e.used).unwrap();
        assert!(age >= 2 * HOUR, "{age:?}");
        // Using it makes it young again.
        drop(f.store.lookup(&a).unwrap().unwrap());
        let age = SystemTime::now()
            .duration_since(f.cache.list().unwrap()[0].used)
            .unwrap();
        assert!(age < HOUR, "{age:?}");
    }

    #[test]
    fn prunes_step_entries_by_age() {
        let f = fixture();
        let old = entry(&f, 0, None, 10, 48 * HOUR);
        let new = entry(&f, 1, None, 10, HOUR);
        let removed = f
            .cache
            .prune(&rule(Some(24 * HOUR), None, false), SystemTime::now())
            .unwrap();
        assert_eq!(keys(&removed), [old.to_string()]);
        assert!(!f.store.dir(&old).exists());
        assert!(!f.store.root().join(format!("{old}.lock")).exists());
        assert!(f.store.lookup(&new).unwrap().is_some());
    }

    #[test]
    fn prunes_least_recently_used_step_entries_by_size() {
        let f = fixture();
        let a = entry(&f, 0, None, 1000, 3 * HOUR);
        let b = entry(&f, 1, None, 1000, 2 * HOUR);
        let c = entry(&f, 2, None, 1000, HOUR);
        // Room for all but the least recently used one.
        let sizes: Vec<u64> = f.cache.list().unwrap().iter().map(|e| e.size).collect();
        let room = sizes[0] + sizes[1];
        let removed = f
            .cache
            .prune(&rule(None, Some(room), false), SystemTime::now())
            .unwrap();
        assert_eq!(keys(&removed), [a.to_string()]);
        assert_eq!(
            keys(&f.cache.list().unwrap()),
            [c.to_string(), b.to_string()]
        );
        let removed = f
            .cache
            .prune(&rule(None, None, true), SystemTime::now())
            .unwrap();
        assert_eq!(removed.len(), 2);
        assert!(f.cache.list().unwrap().is_empty());
    }

    #[test]
    fn an_entry_in_use_is_kept() {
        let f = fixture();
        let a = entry(&f, 0, None, 10, 48 * HOUR);
        let held = f.store.lookup(&a).unwrap().unwrap();
        assert!(
            f.cache
                .prune(&rule(None, None, true), SystemTime::now())
                .unwrap()
                .is_empty()
        );
        assert!(f.store.dir(&a).exists());
        drop(held);
        assert_eq!(
            f.cache
                .prune(&rule(None, None, true), SystemTime::now())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn children_go_with_their_parent() {
        let f = fixture();
        let boot = entry(&f, 0, None, 10, 48 * HOUR);
        let step = entry(&f, 1, Some(boot), 10, HOUR);
        let next = entry(&f, 2, Some(step), 10, HOUR);
        let other = entry(&f, 3, None, 10, HOUR);
        let removed = f
            .cache
            .prune(&rule(Some(24 * HOUR), None, false), SystemTime::now())
            .unwrap();
        let mut got = keys(&removed);
        got.sort();
        let mut want = vec![boot.to_string(), step.to_string(), next.to_string()];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(keys(&f.cache.list().unwrap()), [other.to_string()]);
    }

    #[test]
    fn entries_on_a_removed_source_go_too() {
        let f = fixture();
        let boot = entry(&f, 0, None, 10, HOUR);
        std::fs::remove_file(&f.source).unwrap();
        let removed = f
            .cache
            .prune(&rule(Some(24 * HOUR), None, false), SystemTime::now())
            .unwrap();
        assert_eq!(keys(&removed), [boot.to_string()]);
    }

    #[test]
    fn old_half_written_entries_lock_files_and_stale_digests_are_swept() {
        let f = fixture();
        let steps = f.store.root().to_path_buf();
        let young = steps.join(key(0).to_string());
        let old = steps.join(key(1).to_string());
        for dir in [&young, &old] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("state"), "half").unwrap();
        }
        let now = SystemTime::now();
        for path in [old.join("state"), old.clone()] {
            File::open(&path)
                .unwrap()
                .set_modified(now - 2 * HOUR)
                .unwrap();
        }
        let orphan_lock = steps.join(format!("{}.lock", key(2)));
        std::fs::write(&orphan_lock, "").unwrap();
        f.store.source_digest(&f.source).unwrap();
        let gone = f.cache.root().parent().unwrap().join("gone.img");
        std::fs::write(&gone, "x").unwrap();
        File::options()
            .append(true)
            .open(&gone)
            .unwrap()
            .set_modified(now - HOUR)
            .unwrap();
        File::options()
            .append(true)
            .open(&f.source)
            .unwrap()
            .set_modified(now - HOUR)
            .unwrap();
        f.store.source_digest(&f.source).unwrap();
        f.store.source_digest(&gone).unwrap();
        let digests = crate::stepcache::key::digests_dir(&f.cache);
        assert_eq!(std::fs::read_dir(&digests).unwrap().count(), 2);
        std::fs::remove_file(&gone).unwrap();

        let removed = f
            .cache
            .prune(&rule(Some(24 * HOUR), None, false), now)
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(young.exists());
        assert!(!old.exists());
        assert!(!orphan_lock.exists());
        assert_eq!(std::fs::read_dir(&digests).unwrap().count(), 1);
        // A half-written entry whose builder still runs is kept, however old.
        let Began::New(pending) = f
            .store
            .begin(
                &key(4),
                EntryInfo {
                    kind: EntryKind::Boot,
                    parent: None,
                    base: None,
                    label: String::new(),
                },
            )
            .unwrap()
        else {
            panic!("exists");
        };
        File::open(pending.dir())
            .unwrap()
            .set_modified(now - 2 * HOUR)
            .unwrap();
        f.cache
            .prune(&rule(Some(24 * HOUR), None, false), now)
            .unwrap();
        assert!(pending.dir().exists());
    }
}
