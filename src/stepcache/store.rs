//! Step entries on disk: creating them under an exclusive lock, validating
//! and using them under a shared one.
//!
//! An entry's files are written in place in `<key>/`; the entry exists for
//! readers only once `meta.json` is renamed into place, after every file is
//! synced and hashed. A directory without `meta.json` is half-written (a
//! build was killed): the next builder of that key, or `kiln cache prune`
//! an hour later, removes it.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::StepCacheError;
use super::key::{Fingerprint, StepKey, sha256_of, source_digest};
use super::lock::{EntryLock, Mode};
use crate::cache::Cache;
use crate::error::FileError;

/// The version of `meta.json`'s format.
pub const META_VERSION: u32 = 1;
/// The record that makes an entry complete.
pub const META: &str = "meta.json";
/// The overlay (or, for a final entry in qcow2, the standalone disk).
pub const DISK: &str = "disk.qcow2";
/// A final entry's disk in raw format.
pub const RAW_DISK: &str = "disk.raw";
/// The VM's saved memory and device state.
pub const STATE: &str = "state";
/// The private key the machine was booted with.
pub const SSH_KEY: &str = "ssh_key";

/// How far in the past committed files' modification times are set. Any
/// later write moves the time to "now", so a fingerprint that still
/// matches means an unwritten file, even when the write came within the
/// same timestamp tick as the commit.
const SETTLED: Duration = Duration::from_secs(2);

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The machine right after its first boot (SSH answered).
    Boot,
    /// The machine right after a provisioner.
    Step,
    /// The finished, shut-down, standalone disk.
    Final,
}

impl EntryKind {
    fn needs_state(self) -> bool {
        matches!(self, EntryKind::Boot | EntryKind::Step)
    }
}

/// What an entry is, given when it is begun.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// Its kind.
    pub kind: EntryKind,
    /// The entry it follows: required for `Step` (its disk is the backing
    /// file) and `Final`; `None` for `Boot`.
    pub parent: Option<StepKey>,
    /// For `Boot`: the backing file of `disk.qcow2` (the source image,
    /// absolute), `None` for a standalone disk. Ignored for `Step` (the
    /// parent's disk) and `Final` (standalone).
    pub base: Option<PathBuf>,
    /// For people (`kiln cache list`): "provisioner 2 (shell)". Never a
    /// secret.
    pub label: String,
}

/// What is recorded when an entry is committed.
#[derive(Debug, Clone, Default)]
pub struct CommitInfo {
    /// Free-form data for the pipeline (virtual size, SSH user, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One file of an entry as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its name in the entry's directory.
    pub name: String,
    /// Its sha256, hex.
    pub sha256: String,
    /// Size, times and inode when committed.
    pub fingerprint: Fingerprint,
}

/// `meta.json`: an entry's record, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`META_VERSION`].
    pub version: u32,
    /// The entry's key (its directory's name).
    pub key: StepKey,
    /// Its kind.
    pub kind: EntryKind,
    /// The entry it follows.
    pub parent: Option<StepKey>,
    /// The backing file of its disk, absolute.
    pub base: Option<PathBuf>,
    /// The sha256 the backing file had when this entry was made: the
    /// parent's recorded disk digest, or the source image's.
    pub base_sha256: Option<String>,
    /// For people.
    pub label: String,
    /// When it was committed, seconds since the epoch.
    pub created: u64,
    /// Its files.
    pub files: Vec<FileRecord>,
    /// The pipeline's own data.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Meta {
    /// The record of file `name`.
    pub fn file(&self, name: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The entry's disk file name (`disk.qcow2` or `disk.raw`).
    pub fn disk_name(&self) -> &'static str {
        if self.file(DISK).is_none() && self.file(RAW_DISK).is_some() {
            RAW_DISK
        } else {
            DISK
        }
    }
}

/// The step entries of a cache.
#[derive(Debug, Clone)]
pub struct StepStore {
    cache: Cache,
    steps: PathBuf,
}

/// What [`StepStore::find`] found.
#[derive(Debug)]
pub enum Found {
    /// A complete, valid entry, now in use.
    Entry(Box<UsedEntry>),
    /// No complete entry.
    Missing,
    /// An entry that must not be used, and why; removed unless another
    /// build holds it.
    Corrupt(String),
}

/// What [`StepStore::begin`] found once it held the entry's lock.
#[derive(Debug)]
pub enum Began {
    /// The entry was missing: build it into this.
    New(PendingEntry),
    /// Another build made it while this one waited: use it.
    Exists(UsedEntry),
}

impl StepStore {
    /// The step entries of `cache` (its `steps/` directory, made if needed).
    pub fn open(cache: &Cache) -> Result<StepStore, StepCacheError> {
        let steps = cache.root().join("steps");
        std::fs::create_dir_all(&steps).map_err(FileError::write(&steps))?;
        Ok(StepStore {
            cache: cache.clone(),
            steps,
        })
    }

    /// The `steps/` directory.
    pub fn root(&self) -> &Path {
        &self.steps
    }

    /// The directory of entry `key`.
    pub fn dir(&self, key: &StepKey) -> PathBuf {
        self.steps.join(key.to_string())
    }

    /// The overlay of entry `key`: what a child's disk is backed by.
    pub fn disk_path(&self, key: &StepKey) -> PathBuf {
        self.dir(key).join(DISK)
    }

    fn lock_path(&self, key: &StepKey) -> PathBuf {
        self.steps.join(format!("{key}.lock"))
    }

    /// The memoised sha256 of a source image ([`source_digest`]).
    pub fn source_digest(&self, path: &Path) -> Result<String, StepCacheError> {
        Ok(source_digest(&self.cache, path)?)
    }

    /// The complete, valid entry `key`, held with a shared lock until the
    /// returned value is dropped (keep it for the whole build: prune skips
    /// held entries). A corrupt entry is logged, removed if nobody uses it,
    /// and reported as missing. Must not be called for a key this process
    /// is building ([`StepStore::begin`]): the locks would wait on each
    /// other.
    pub fn lookup(&self, key: &StepKey) -> Result<Option<UsedEntry>, StepCacheError> {
        Ok(match self.find(key)? {
            Found::Entry(entry) => Some(*entry),
            Found::Missing | Found::Corrupt(_) => None,
        })
    }

    /// [`StepStore::lookup`], saying why an entry that is there cannot be
    /// used.
    pub fn find(&self, key: &StepKey) -> Result<Found, StepCacheError> {
        let dir = self.dir(key);
        if !dir.join(META).exists() {
            return Ok(Found::Missing);
        }
        let Some(lock) = EntryLock::take(&self.lock_path(key), Mode::Shared, true)? else {
            return Ok(Found::Missing);
        };
        if !dir.join(META).exists() {
            // Removed while this waited for the lock.
            return Ok(Found::Missing);
        }
        match self.validate(key) {
            Ok(meta) => Ok(Found::Entry(Box::new(self.used(key, meta, lock)))),
            Err(why) => {
                tracing::warn!("step cache: entry {key} is corrupt ({why}); building it again");
                drop(lock);
                self.remove_if_invalid(key)?;
                Ok(Found::Corrupt(why))
            }
        }
    }

    /// [`StepStore::find`] off the async runtime (it may hash files).
    pub async fn find_async(&self, key: StepKey) -> Result<Found, StepCacheError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.find(&key))
            .await
            .map_err(StepCacheError::Task)?
    }

    /// [`StepStore::lookup`] off the async runtime (it may hash files).
    pub async fn lookup_async(&self, key: StepKey) -> Result<Option<UsedEntry>, StepCacheError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.lookup(&key))
            .await
            .map_err(StepCacheError::Task)?
    }

    /// Takes entry `key` to build it, waiting while another build holds it.
    /// If that build completed it, this is a hit ([`Began::Exists`]);
    /// otherwise whatever was left of it is removed and an empty directory
    /// is ready ([`Began::New`]).
    pub fn begin(&self, key: &StepKey, info: EntryInfo) -> Result<Began, StepCacheError> {
        let lock_path = self.lock_path(key);
        let Some(mut lock) = EntryLock::take(&lock_path, Mode::Exclusive, true)? else {
            // A waiting take always gets the lock.
            return Err(StepCacheError::Lock {
                path: lock_path,
                source: io::Error::from(io::ErrorKind::WouldBlock),
            });
        };
        let dir = self.dir(key);
        if dir.join(META).exists() {
            match self.validate(key) {
                Ok(meta) => {
                    lock.downgrade()?;
                    return Ok(Began::Exists(self.used(key, meta, lock)));
                }
                Err(why) => {
                    tracing::warn!("step cache: entry {key} is corrupt ({why}); building it again");
                }
            }
        } else if dir.exists() {
            tracing::info!("step cache: entry {key} was left half-written; building it again");
        }
        remove_dir(&dir)?;
        std::fs::create_dir_all(&dir).map_err(FileError::write(&dir))?;
        Ok(Began::New(PendingEntry {
            store: self.clone(),
            key: *key,
            dir,
            info,
            lock: Some(lock),
        }))
    }

    /// [`StepStore::begin`] off the async runtime (it may wait for another
    /// build for as long as that build runs the step).
    pub async fn begin_async(
        &self,
        key: StepKey,
        info: EntryInfo,
    ) -> Result<Began, StepCacheError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.begin(&key, info))
            .await
            .map_err(StepCacheError::Task)?
    }

    fn used(&self, key: &StepKey, meta: Meta, lock: EntryLock) -> UsedEntry {
        let dir = self.dir(key);
        // The entry's last use, for pruning.
        if let Ok(file) = File::options().append(true).open(dir.join(META)) {
            let _ = file.set_modified(SystemTime::now());
        }
        UsedEntry {
            key: *key,
            dir,
            meta,
            lock,
        }
    }

    /// Removes entry `key` if it is still invalid and nobody uses it.
    fn remove_if_invalid(&self, key: &StepKey) -> Result<(), StepCacheError> {
        let Some(lock) = EntryLock::take(&self.lock_path(key), Mode::Exclusive, false)? else {
            return Ok(());
        };
        // Another build may have rebuilt it between the two locks.
        if self.dir(key).join(META).exists() && self.validate(key).is_ok() {
            return Ok(());
        }
        remove_dir(&self.dir(key))?;
        lock.remove();
        Ok(())
    }

    /// Checks entry `key` against its record; why it is invalid otherwise.
    ///
    /// The trade-off: hashing every file on every use would cost seconds
    /// per GB, on every entry of the chain. A file whose size, times and
    /// inode are those recorded at commit has not been written since
    /// (commit sets its mtime into the past, and ctime cannot be set back),
    /// so only files whose fingerprint moved are hashed. What this misses
    /// is damage that bypasses the file system (bit rot, a raw write to the
    /// block device); the qcow2 header, which every use depends on, is
    /// read and checked each time anyway.
    pub(crate) fn validate(&self, key: &StepKey) -> Result<Meta, String> {
        let dir = self.dir(key);
        let meta = read_meta(&dir.join(META))?;
        if meta.version != META_VERSION {
            return Err(format!(
                "meta.json has version {}, expected {META_VERSION}",
                meta.version
            ));
        }
        if meta.key != *key {
            return Err(format!("meta.json names entry {}", meta.key));
        }
        for record in &meta.files {
            check_file(&dir.join(&record.name), record)?;
        }
        if meta.file(DISK).is_none() && meta.file(RAW_DISK).is_none() {
            return Err("it has no disk".into());
        }
        if meta.kind.needs_state() && meta.file(STATE).is_none() {
            return Err("it has no state".into());
        }
        if meta.file(DISK).is_some() {
            let backing = qcow2_backing(&dir.join(DISK))?;
            match (&backing, &meta.base) {
                (None, None) => {}
                (Some(found), Some(base)) if found.as_path() == base => {}
                (found, base) => {
                    return Err(format!(
                        "disk.qcow2 is backed by {}, recorded {}",
                        shown(found.as_deref()),
                        shown(base.as_deref())
                    ));
                }
            }
        }
        if let Some(base) = &meta.base
            && !base.exists()
        {
            return Err(format!("its backing file {} is gone", base.display()));
        }
        match meta.kind {
            EntryKind::Step => {
                let Some(parent) = meta.parent else {
                    return Err("it names no parent".into());
                };
                if meta.base.as_deref() != Some(self.disk_path(&parent).as_path()) {
                    return Err(format!("it is not backed by its parent entry {parent}"));
                }
                let parent_meta = read_meta(&self.dir(&parent).join(META))
                    .map_err(|why| format!("its parent entry {parent} is gone ({why})"))?;
                let parent_disk = parent_meta.file(DISK).map(|f| f.sha256.as_str());
                if parent_disk.is_none() || parent_disk != meta.base_sha256.as_deref() {
                    return Err(format!("its parent entry {parent} was rebuilt differently"));
                }
            }
            EntryKind::Boot => {
                if let (Some(base), Some(recorded)) = (&meta.base, &meta.base_sha256) {
                    let now = source_digest(&self.cache, base)
                        .map_err(|e| crate::error::error_chain(&e))?;
                    if &now != recorded {
                        return Err(format!("its source image {} changed", base.display()));
                    }
                }
            }
            EntryKind::Final => {
                if meta.parent.is_none() {
                    return Err("it names no parent".into());
                }
            }
        }
        Ok(meta)
    }
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(|| "nothing".to_string(), |p| p.display().to_string())
}

fn read_meta(path: &Path) -> Result<Meta, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} does not parse: {e}", path.display()))
}

/// Whether the file matches its record: same fingerprint, or else same
/// size and sha256.
fn check_file(path: &Path, record: &FileRecord) -> Result<(), String> {
    let name = &record.name;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name} is not a file"));
    }
    let now = Fingerprint::of(&meta);
    if now.size != record.fingerprint.size {
        return Err(format!(
            "{name} has {} bytes, {} recorded",
            now.size, record.fingerprint.size
        ));
    }
    if now == record.fingerprint {
        return Ok(());
    }
    let mut file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let digest = sha256_of(&mut file).map_err(|e| format!("reading {name}: {e}"))?;
    if hex::encode(digest) != record.sha256 {
        return Err(format!("{name} does not match its recorded sha256"));
    }
    Ok(())
}

/// The backing file a qcow2 header names, read from its first cluster.
pub(crate) fn qcow2_backing(path: &Path) -> Result<Option<PathBuf>, String> {
    const MAGIC: &[u8; 4] = b"QFI\xfb";
    let mut file = File::open(path).map_err(|e| format!("disk.qcow2: {e}"))?;
    let mut header = [0u8; 72];
    file.read_exact(&mut header)
        .map_err(|_| "disk.qcow2 is shorter than a qcow2 header".to_string())?;
    if &header[..4] != MAGIC {
        return Err("disk.qcow2 is not a qcow2 image".into());
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
    let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = be32(4);
    if !(2..=3).contains(&version) {
        return Err(format!("disk.qcow2 has qcow2 version {version}"));
    }
    let offset = be64(8);
    let size = u64::from(be32(16));
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("disk.qcow2 has cluster_bits {cluster_bits}"));
    }
    if offset == 0 {
        return Ok(None);
    }
    // QEMU keeps the name in the first cluster and under 1024 bytes.
    if size == 0 || size > 1023 || offset + size > 1u64 << cluster_bits {
        return Err("disk.qcow2 has a bad backing file name field".into());
    }
    let mut name = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut name))
        .map_err(|_| "disk.qcow2 is cut short in its header".to_string())?;
    Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(&name))))
}

/// Removes a directory tree, if there.
fn remove_dir(dir: &Path) -> Result<(), StepCacheError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::write(dir)(e).into()),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StepCacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::write(dir))?;
    Ok(())
}

/// Writes `meta` as `dir/meta.json` durably: temporary file, fsync,
/// rename, fsync of the directory.
fn write_meta(dir: &Path, meta: &Meta) -> Result<(), StepCacheError> {
    let path = dir.join(META);
    let tmp = dir.join("meta.json.tmp");
    let text = serde_json::to_vec_pretty(meta).map_err(|source| StepCacheError::Encode {
        path: path.clone(),
        source,
    })?;
    let mut file = File::create(&tmp).map_err(FileError::write(&tmp))?;
    std::io::Write::write_all(&mut file, &text)
        .and_then(|()| file.sync_all())
        .map_err(FileError::write(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(FileError::write(&path))?;
    fsync_dir(dir)
}

/// An entry in use: valid when taken, kept from pruning and rebuilding
/// (shared lock) until dropped.
#[derive(Debug)]
pub struct UsedEntry {
    key: StepKey,
    dir: PathBuf,
    meta: Meta,
    lock: EntryLock,
}

impl UsedEntry {
    /// Its key.
    pub fn key(&self) -> &StepKey {
        &self.key
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its record.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Its disk: `disk.qcow2` (or a final entry's `disk.raw`).
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(self.meta.disk_name())
    }

    /// Its saved VM state (boot and step entries).
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The private key its machine accepts.
    pub fn ssh_key_path(&self) -> PathBuf {
        self.dir.join(SSH_KEY)
    }

    /// Adds `extra` to the record's `extra` (the smoke tests that passed on
    /// a final entry, say). Only done when no other build uses the entry
    /// (it needs the exclusive lock, and waiting for it while holding the
    /// shared one could deadlock two builds): whether it was recorded.
    pub fn record_extra(
        &mut self,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, StepCacheError> {
        if !self.lock.try_upgrade()? {
            return Ok(false);
        }
        let mut meta = self.meta.clone();
        meta.extra.extend(extra);
        let written = write_meta(&self.dir, &meta);
        let downgraded = self.lock.downgrade();
        written?;
        downgraded?;
        self.meta = meta;
        Ok(true)
    }
}

/// An entry being built, held with an exclusive lock. Its files are
/// written in place at the paths below; it becomes visible with
/// [`PendingEntry::commit`]. Dropped without a commit, it is removed.
#[derive(Debug)]
pub struct PendingEntry {
    store: StepStore,
    key: StepKey,
    dir: PathBuf,
    info: EntryInfo,
    lock: Option<EntryLock>,
}

impl PendingEntry {
    /// Its key.
    pub fn key(&self) -> &StepKey {
        &self.key
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where its overlay goes.
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(DISK)
    }

    /// Where a final entry's disk goes when the output format is raw.
    pub fn raw_disk_path(&self) -> PathBuf {
        self.dir.join(RAW_DISK)
    }

    /// Where the VM's state goes.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// Where the SSH private key goes (mode 0600).
    pub fn ssh_key_path(&self) -> PathBuf {
        self.dir.join(SSH_KEY)
    }

    /// Makes the entry complete: syncs and hashes its files, writes
    /// `meta.json` last, and keeps it in use (shared lock) as the returned
    /// entry. On error the entry is removed.
    pub fn commit(mut self, info: CommitInfo) -> Result<UsedEntry, StepCacheError> {
        let meta = self.record(info)?;
        write_meta(&self.dir, &meta)?;
        fsync_dir(self.store.root())?;
        let mut lock = self.lock.take().ok_or_else(|| StepCacheError::Lock {
            path: self.store.lock_path(&self.key),
            source: io::Error::other("the entry's lock was already released"),
        })?;
        lock.downgrade()?;
        Ok(UsedEntry {
            key: self.key,
            dir: self.dir.clone(),
            meta,
            lock,
        })
    }

    /// [`PendingEntry::commit`] off the async runtime (it hashes the files).
    pub async fn commit_async(self, info: CommitInfo) -> Result<UsedEntry, StepCacheError> {
        tokio::task::spawn_blocking(move || self.commit(info))
            .await
            .map_err(StepCacheError::Task)?
    }

    /// The record of the entry as it stands.
    fn record(&self, info: CommitInfo) -> Result<Meta, StepCacheError> {
        let kind = self.info.kind;
        let has = |name: &str| self.dir.join(name).is_file();
        if !(has(DISK) || kind == EntryKind::Final && has(RAW_DISK)) {
            return Err(StepCacheError::Missing {
                path: self.dir.join(DISK),
            });
        }
        if kind.needs_state() && !has(STATE) {
            return Err(StepCacheError::Missing {
                path: self.dir.join(STATE),
            });
        }
        let key_path = self.dir.join(SSH_KEY);
        if let Ok(meta) = std::fs::symlink_metadata(&key_path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode != 0o600 || !meta.is_file() {
                return Err(StepCacheError::KeyMode {
                    path: key_path,
                    mode,
                });
            }
        }
        let (base, base_sha256) = match kind {
            EntryKind::Boot => match &self.info.base {
                Some(base) => (Some(base.clone()), Some(self.store.source_digest(base)?)),
                None => (None, None),
            },
            EntryKind::Step | EntryKind::Final => {
                let parent = self
                    .info
                    .parent
                    .ok_or_else(|| StepCacheError::ParentNotGiven {
                        dir: self.dir.clone(),
                    })?;
                let parent_meta = read_meta(&self.store.dir(&parent).join(META));
                let no_parent = || StepCacheError::NoParent {
                    dir: self.dir.clone(),
                    parent,
                };
                if kind == EntryKind::Step {
                    let digest = parent_meta
                        .ok()
                        .and_then(|m| m.file(DISK).map(|f| f.sha256.clone()))
                        .ok_or_else(no_parent)?;
                    (Some(self.store.disk_path(&parent)), Some(digest))
                } else {
                    (None, None)
                }
            }
        };
        let settled = SystemTime::now() - SETTLED;
        let mut files = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .map_err(FileError::read(&self.dir))?
            .filter_map(|item| item.ok())
            .filter(|item| item.file_type().is_ok_and(|t| t.is_file()))
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|name| name != META && !name.ends_with(".tmp"))
            .collect();
        names.sort();
        for name in names {
            let path = self.dir.join(&name);
            let mut file = File::open(&path).map_err(FileError::read(&path))?;
            file.sync_all().map_err(FileError::write(&path))?;
            let digest = sha256_of(&mut file).map_err(FileError::read(&path))?;
            file.set_modified(settled)
                .map_err(FileError::write(&path))?;
            let meta = file.metadata().map_err(FileError::read(&path))?;
            files.push(FileRecord {
                name,
                sha256: hex::encode(digest),
                fingerprint: Fingerprint::of(&meta),
            });
        }
        Ok(Meta {
            version: META_VERSION,
            key: self.key,
            kind,
            parent: self.info.parent,
            base,
            base_sha256,
            label: self.info.label.clone(),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            files,
            extra: info.extra,
        })
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            // Not committed: nothing of it may be used. Best effort; what
            // stays is half-written and removed by the next builder.
            let _ = std::fs::remove_dir_all(&self.dir);
            drop(lock);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
