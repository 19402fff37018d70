//! kiln's cache directory: entries kept between builds, one subdirectory
//! per kind: `sources/` for downloaded source images, each entry a file
//! named by its key with a `.json` record beside it, and `steps/` for the
//! step cache ([`crate::stepcache`], which lists and removes its own).
//!
//! An entry is only ever created by renaming a complete, verified file into
//! place while holding the entry's lock (`<key>.lock`), so readers never
//! see a partial one. Its modification time is its last use: pruning keeps
//! what was used most recently.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::FileError;

/// The environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "KILN_CACHE_DIR";

/// What the cache could not do.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No cache directory could be found: no `KILN_CACHE_DIR`,
    /// `XDG_CACHE_HOME` or `HOME`.
    #[error("no cache directory: set KILN_CACHE_DIR (or XDG_CACHE_HOME, or HOME)")]
    NoDirectory,
    /// Reading or writing the cache failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Locking or removing a step entry failed.
    #[error(transparent)]
    Step(Box<crate::stepcache::StepCacheError>),
}

/// The kinds of entries, each in its own subdirectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Downloaded source images (`iso_url`).
    Source,
    /// Step cache entries (`kiln build -cache`): a directory each.
    Step,
}

impl Kind {
    /// Every kind, in listing order.
    pub const ALL: &'static [Kind] = &[Kind::Source, Kind::Step];

    /// The kind's name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Step => "step",
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Step => "steps",
        }
    }
}

/// The record kept beside an entry: where it came from and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// What the entry is, for people: the URL it was downloaded from.
    pub origin: String,
    /// The entry's digest as `algorithm:hex`, checked on every use.
    pub digest: String,
    /// When it was stored, in seconds since the Unix epoch.
    pub stored: u64,
}

/// The files of one entry.
#[derive(Debug, Clone)]
pub struct EntryPaths {
    /// The entry itself.
    pub data: PathBuf,
    /// Its record, when it has one (entries outside the cache have none).
    pub meta: Option<PathBuf>,
    /// The lock held while the entry is checked, fetched or removed.
    pub lock: PathBuf,
    /// Where a download goes before it is verified and renamed into place.
    pub part: PathBuf,
}

impl EntryPaths {
    /// The files of an entry at `data`, a path of the user's choosing
    /// (`iso_target_path`): lock and partial file beside it, no record.
    pub fn beside(data: PathBuf) -> EntryPaths {
        EntryPaths {
            meta: None,
            lock: with_suffix(&data, ".lock"),
            part: with_suffix(&data, ".part"),
            data,
        }
    }

    /// Takes the entry's lock, waiting for whoever holds it (another build
    /// fetching the same source). Released when the guard is dropped.
    pub fn lock(&self) -> Result<EntryLock, CacheError> {
        if let Some(parent) = self.lock.parent() {
            std::fs::create_dir_all(parent).map_err(FileError::write(parent))?;
        }
        loop {
            let file = File::create(&self.lock).map_err(FileError::write(&self.lock))?;
            file.lock().map_err(FileError::write(&self.lock))?;
            if same_file(&file, &self.lock) {
                return Ok(EntryLock {
                    file,
                    path: self.lock.clone(),
                });
            }
            // The holder removed the lock file as it let go: the lock now
            // lives in a new file.
        }
    }

    /// The entry's record, if it has a readable one.
    pub fn read_meta(&self) -> Option<Meta> {
        let text = std::fs::read(self.meta.as_ref()?).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the record (through a temporary file, so it is whole or absent).
    pub fn write_meta(&self, meta: &Meta) -> Result<(), CacheError> {
        let Some(path) = &self.meta else {
            return Ok(());
        };
        let tmp = with_suffix(path, ".tmp");
        let text = serde_json::to_vec_pretty(meta).map_err(io::Error::other);
        text.and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(FileError::write(path))?;
        Ok(())
    }

    /// Removes the entry and its record (the lock must be held).
    pub fn remove(&self) -> Result<(), CacheError> {
        for path in [Some(&self.data), self.meta.as_ref()].into_iter().flatten() {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FileError::write(path)(e).into()),
            }
        }
        Ok(())
    }

    /// Marks the entry as just used, so pruning keeps it longest.
    pub fn touch(&self) {
        if let Ok(file) = File::options().append(true).open(&self.data) {
            let _ = file.set_modified(SystemTime::now());
        }
    }
}

/// A held entry lock.
#[derive(Debug)]
pub struct EntryLock {
    file: File,
    path: PathBuf,
}

impl EntryLock {
    /// Lets go of the lock and removes its file, so a finished entry leaves
    /// nothing beside it. Whoever was waiting on the removed file sees that
    /// and takes the lock afresh (see [`EntryPaths::lock`]).
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Whether the open `file` is still the one at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One entry, as `kiln cache list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its kind.
    pub kind: Kind,
    /// Its key (its file name).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last used (or stored).
    pub used: SystemTime,
    /// Where it came from, when its record says.
    pub origin: Option<String>,
}

/// What `kiln cache prune` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneRule {
    /// Everything.
    pub all: bool,
    /// Entries not used for longer than this.
    pub older_than: Option<Duration>,
    /// Then the least recently used entries, until the rest fit in this
    /// many bytes.
    pub max_size: Option<u64>,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache the environment names: `KILN_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
    pub fn from_env() -> Result<Cache, CacheError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var(CACHE_DIR_ENV) {
            return Ok(Cache::at(dir));
        }
        if let Some(dir) = var("XDG_CACHE_HOME").map(PathBuf::from)
            && dir.is_absolute()
        {
            return Ok(Cache::at(dir.join("kiln")));
        }
        var("HOME")
            .map(|home| Cache::at(PathBuf::from(home).join(".cache").join("kiln")))
            .ok_or(CacheError::NoDirectory)
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files of the entry `key` of `kind`.
    pub fn entry(&self, kind: Kind, key: &str) -> EntryPaths {
        let data = self.root.join(kind.dir_name()).join(key);
        EntryPaths {
            meta: Some(with_suffix(&data, ".json")),
            ..EntryPaths::beside(data)
        }
    }

    /// Every complete entry, most recently used first.
    pub fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let mut entries = Vec::new();
        // Step entries are directories: the step cache lists its own.
        for kind in [Kind::Source] {
            let dir = self.root.join(kind.dir_name());
            let read = match std::fs::read_dir(&dir) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FileError::read(&dir)(e).into()),
            };
            for item in read {
                let item = item.map_err(FileError::read(&dir))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if !is_entry_name(&name) {
                    continue;
                }
                let Ok(metadata) = item.metadata() else {
                    continue;
                };
                if !metadata.is_file() {
                    continue;
                }
                let paths = self.entry(kind, &name);
                entries.push(Entry {
                    kind,
                    size: metadata.len(),
                    used: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    origin: paths.read_meta().map(|m| m.origin),
                    key: name,
                });
            }
        }
        entries.extend(
            crate::stepcache::prune::list(self)?
                .into_iter()
                .map(|f| f.entry),
        );
        entries.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.key.cmp(&b.key)));
        Ok(entries)
    }

    /// Removes what `rule` says, skipping entries in use (locked), and
    /// returns what was removed. Step entries built on a removed entry go
    /// with it (they cannot be used without it). Partial downloads and
    /// half-written step entries nobody is writing go too.
    pub fn prune(&self, rule: &PruneRule, now: SystemTime) -> Result<Vec<Entry>, CacheError> {
        let entries = self.list()?;
        let mut removed: Vec<Entry> = Vec::new();
        let mut kept_size: u64 = entries.iter().map(|e| e.size).sum();
        // Oldest first, so a size limit removes the least recently used.
        for entry in entries.iter().rev() {
            if removed
                .iter()
                .any(|r| r.kind == entry.kind && r.key == entry.key)
            {
                continue;
            }
            let too_old = rule.older_than.is_some_and(|age| {
                now.duration_since(entry.used)
                    .is_ok_and(|elapsed| elapsed > age)
            });
            let too_big = rule.max_size.is_some_and(|max| kept_size > max);
            if !(rule.all || too_old || too_big) {
                continue;
            }
            let paths = self.entry(entry.kind, &entry.key);
            let (gone, data) = match entry.kind {
                Kind::Source => (self.remove_unlocked(&paths)?, paths.data.clone()),
                Kind::Step => (
                    crate::stepcache::prune::remove(self, &entry.key)?,
                    paths.data.join(crate::stepcache::store::DISK),
                ),
            };
            if gone {
                kept_size = kept_size.saturating_sub(entry.size);
                removed.push(entry.clone());
                for dependent in crate::stepcache::prune::remove_dependents(self, &data)? {
                    kept_size = kept_size.saturating_sub(dependent.size);
                    removed.push(dependent);
                }
            }
        }
        self.remove_stale_parts()?;
        removed.extend(crate::stepcache::prune::sweep(self, now)?);
        Ok(removed)
    }

    /// Removes the entry unless someone holds its lock; whether it did.
    fn remove_unlocked(&self, paths: &EntryPaths) -> Result<bool, CacheError> {
        let file = File::create(&paths.lock).map_err(FileError::write(&paths.lock))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(entry = %paths.data.display(), "cache entry in use; kept");
                return Ok(false);
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(FileError::write(&paths.lock)(e).into());
            }
        }
        if !same_file(&file, &paths.lock) {
            // Taken and released by a fetch in between: in use, keep it.
            return Ok(false);
        }
        let lock = EntryLock {
            file,
            path: paths.lock.clone(),
        };
        paths.remove()?;
        let _ = std::fs::remove_file(&paths.part);
        lock.release();
        Ok(true)
    }

    /// Partial downloads left by builds that were killed, when nobody is
    /// resuming them.
    fn remove_stale_parts(&self) -> Result<(), CacheError> {
        // Step entries are directories: the step cache lists its own.
        for kind in [Kind::Source] {
            let dir = self.root.join(kind.dir_name());
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for item in read.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                if let Some(key) = name.strip_suffix(".part") {
                    let paths = self.entry(kind, key);
                    if !paths.data.exists() {
                        self.remove_unlocked(&paths)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Entry files are the ones without the suffixes of the files beside them.
fn is_entry_name(name: &str) -> bool {
    ![".json", ".lock", ".part", ".tmp"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(cache: &Cache, key: &str, size: usize, age: Duration, now: SystemTime) -> EntryPaths {
        let paths = cache.entry(Kind::Source, key);
        std::fs::create_dir_all(paths.data.parent().unwrap()).unwrap();
        std::fs::write(&paths.data, vec![0u8; size]).unwrap();
        paths
            .write_meta(&Meta {
                origin: format!("https://example.com/{key}.img"),
                digest: "sha256:00".into(),
                stored: 0,
            })
            .unwrap();
        let file = File::options().append(true).open(&paths.data).unwrap();
        file.set_modified(now - age).unwrap();
        paths
    }

    fn keys(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.key.as_str()).collect()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn lists_entries_newest_first_with_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        assert!(cache.list().unwrap().is_empty());
        let now = SystemTime::now();
        let old = store(&cache, "old", 10, 3 * HOUR, now);
        store(&cache, "new", 20, HOUR, now);
        std::fs::write(&old.part, "x").unwrap();
        std::fs::write(&old.lock, "").unwrap();
        let entries = cache.list().unwrap();
        assert_eq!(keys(&entries), ["new", "old"]);
        assert_eq!(entries[0].kind, Kind::Source);
        assert_eq!(entries[0].size, 20);
        assert_eq!(
            entries[1].origin.as_deref(),
            Some("https://example.com/old.img")
        );
    }

    #[test]
    fn prunes_by_age_then_by_size_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let now = SystemTime::now();
        for (key, hours) in [("a", 1), ("b", 2), ("c", 3), ("d", 48)] {
            store(&cache, key, 100, hours * HOUR, now);
        }
        let rule = PruneRule {
            older_than: Some(24 * HOUR),
            ..PruneRule::default()
        };
        assert_eq!(keys(&cache.prune(&rule, now).unwrap()), ["d"]);
        let rule = PruneRule {
            max_size: Some(150),
            ..PruneRule::default()
        };
        assert_eq!(keys(&cache.prune(&rule, now).unwrap()), ["c", "b"]);
        assert_eq!(keys(&cache.list().unwrap()), ["a"]);
        assert!(!cache.entry(Kind::Source, "b").meta.unwrap().exists());
        let all = PruneRule {
            all: true,
            ..PruneRule::default()
        };
        assert_eq!(keys(&cache.prune(&all, now).unwrap()), ["a"]);
        assert!(cache.list().unwrap().is_empty());
    }

    #[test]
    fn an_entry_being_fetched_is_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let now = SystemTime::now();
        let busy = store(&cache, "busy", 1, HOUR, now);
        let guard = busy.lock().unwrap();
        let all = PruneRule {
            all: true,
            ..PruneRule::default()
        };
        assert!(cache.prune(&all, now).unwrap().is_empty());
        assert!(busy.data.exists());
        drop(guard);
        assert_eq!(keys(&cache.prune(&all, now).unwrap()), ["busy"]);
    }

    #[test]
    fn stale_partial_downloads_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let paths = cache.entry(Kind::Source, "half");
        std::fs::create_dir_all(paths.data.parent().unwrap()).unwrap();
        std::fs::write(&paths.part, "half").unwrap();
        cache
            .prune(&PruneRule::default(), SystemTime::now())
            .unwrap();
        assert!(!paths.part.exists());
    }
}
