//! Step keys: sha256 over everything that can change what a step leaves on
//! the disk, framed so that no two different inputs hash alike.
//!
//! Descriptions may hold secrets (a provisioner's rendered environment):
//! they are only ever fed to the hasher, never stored or logged.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::cache::Cache;

/// The first field of every key: bumped when the framing or the meaning
/// of a key changes, so old entries simply stop matching.
const SCHEME: &str = "kiln-step-v1";

/// A step's key: a sha256, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey([u8; 32]);

impl StepKey {
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepKey({self})")
    }
}

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a step key (64 lowercase hex digits)")]
pub struct BadKey(String);

impl FromStr for StepKey {
    type Err = BadKey;

    fn from_str(text: &str) -> Result<StepKey, BadKey> {
        let bad = || BadKey(text.to_string());
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| bad())?;
        Ok(StepKey(out))
    }
}

impl Serialize for StepKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StepKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepKey, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A host input that could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file or directory a step reads is missing or unreadable: that step
    /// and every later one are built without the cache.
    #[error("cannot read {} to compute the step key", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

fn unreadable(path: &Path) -> impl Fn(io::Error) -> KeyError + '_ {
    move |source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// What decides the boot entry: the lead fills it from the build.
#[derive(Debug, Clone)]
pub struct BootInputs<'a> {
    /// kiln's version: a new kiln may boot differently.
    pub kiln_version: &'a str,
    /// The source image's sha256, hex ([`source_digest`]).
    pub source_digest: String,
    /// Canonical lines describing the launch: the QEMU argv with paths and
    /// ports replaced by placeholders, disk size, boot command, ...
    pub launch: Vec<String>,
    /// Host files and directories whose content reaches the guest at boot
    /// (`http_directory`, CD and floppy files, ...).
    pub files: Vec<PathBuf>,
}

/// The key of the machine right after its first boot.
pub fn boot_key(inputs: &BootInputs<'_>) -> Result<StepKey, KeyError> {
    let mut h = Framer::new("boot");
    h.field(inputs.kiln_version.as_bytes());
    h.field(inputs.source_digest.as_bytes());
    h.count(inputs.launch.len());
    for line in &inputs.launch {
        h.field(line.as_bytes());
    }
    h.files(&inputs.files)?;
    Ok(h.finish())
}

/// The key of the machine after a provisioner: its parent's key, the
/// provisioner's whole configuration rendered (`description`, only hashed:
/// it may hold secrets) and the content of the host files it reads.
pub fn step_key(
    parent: &StepKey,
    description: &str,
    files: &[PathBuf],
) -> Result<StepKey, KeyError> {
    let mut h = Framer::new("step");
    h.field(&parent.0);
    h.field(description.as_bytes());
    h.files(files)?;
    Ok(h.finish())
}

/// The key of the finished disk: the last step's key and everything done
/// after provisioning (shutdown, format, compaction, name).
pub fn final_key(parent: &StepKey, description: &str) -> StepKey {
    let mut h = Framer::new("final");
    h.field(&parent.0);
    h.field(description.as_bytes());
    h.finish()
}

/// A hasher fed length-prefixed fields, so `("ab", "c")` and `("a", "bc")`
/// differ.
struct Framer(sha2::Sha256);

impl Framer {
    fn new(kind: &str) -> Framer {
        let mut h = Framer(sha2::Sha256::new());
        h.field(SCHEME.as_bytes());
        h.field(kind.as_bytes());
        h
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }

    fn files(&mut self, files: &[PathBuf]) -> Result<(), KeyError> {
        self.count(files.len());
        for path in files {
            self.field(path.as_os_str().as_bytes());
            // The input itself is followed if it is a link: the step reads
            // what it points to. Links inside a directory are kept as links.
            let meta = std::fs::metadata(path).map_err(unreadable(path))?;
            self.node(path, &meta)?;
        }
        Ok(())
    }

    /// One file, link or directory (recursively: names relative to it,
    /// sorted, with type, mode, content or link target).
    fn node(&mut self, path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
        let kind = meta.file_type();
        self.count((meta.permissions().mode() & 0o7777) as usize);
        if kind.is_file() {
            self.field(b"file");
            self.field(&file_sha256(path)?);
        } else if kind.is_symlink() {
            self.field(b"link");
            let target = std::fs::read_link(path).map_err(unreadable(path))?;
            self.field(target.as_os_str().as_bytes());
        } else if kind.is_dir() {
            self.field(b"dir");
            let mut names = Vec::new();
            for item in std::fs::read_dir(path).map_err(unreadable(path))? {
                names.push(item.map_err(unreadable(path))?.file_name());
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            self.count(names.len());
            for name in names {
                let child = path.join(&name);
                let meta = std::fs::symlink_metadata(&child).map_err(unreadable(&child))?;
                self.field(name.as_bytes());
                self.node(&child, &meta)?;
            }
        } else {
            // A socket, FIFO or device: nothing a step could copy.
            self.field(b"other");
        }
        Ok(())
    }

    fn finish(self) -> StepKey {
        StepKey(self.0.finalize().into())
    }
}

/// The sha256 of a file's content.
pub(crate) fn file_sha256(path: &Path) -> Result<[u8; 32], KeyError> {
    let mut file = File::open(path).map_err(unreadable(path))?;
    sha256_of(&mut file).map_err(unreadable(path))
}

pub(crate) fn sha256_of(file: &mut File) -> io::Result<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Its status change time: any write or `touch` moves it, and it cannot
    /// be set back.
    pub ctime_ns: i64,
    /// Its inode number.
    pub inode: u64,
    /// Its device.
    pub dev: u64,
}

impl Fingerprint {
    /// The fingerprint of what `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The memo of one source image's digest.
#[derive(Debug, Serialize, Deserialize)]
struct DigestRecord {
    path: PathBuf,
    fingerprint: Fingerprint,
    sha256: String,
}

/// How recent a modification must be for a file's fingerprint not to be
/// trusted: a write within the same timestamp tick as the hashing would
/// leave the fingerprint unchanged (the "racy" case git knows too).
const RACY: Duration = Duration::from_secs(2);

/// The directory of digest memos.
pub(crate) fn digests_dir(cache: &Cache) -> PathBuf {
    cache.root().join("steps").join("digests")
}

/// The memo file of the file at canonical path `path`.
fn digest_record_path(cache: &Cache, path: &Path) -> PathBuf {
    let name = hex::encode(sha2::Sha256::digest(path.as_os_str().as_bytes()));
    digests_dir(cache).join(format!("{name}.json"))
}

/// The sha256 (hex) of the file at `path` (a source image), memoised in
/// the cache by canonical path, size, times and inode, so an unchanged
/// image of hundreds of MB is hashed once, not on every build.
pub fn source_digest(cache: &Cache, path: &Path) -> Result<String, KeyError> {
    let canonical = std::fs::canonicalize(path).map_err(unreadable(path))?;
    let record_path = digest_record_path(cache, &canonical);
    let mut file = File::open(&canonical).map_err(unreadable(path))?;
    let before = Fingerprint::of(&file.metadata().map_err(unreadable(path))?);
    if let Some(record) = std::fs::read(&record_path)
        .ok()
        .and_then(|text| serde_json::from_slice::<DigestRecord>(&text).ok())
        && record.path == canonical
        && record.fingerprint == before
    {
        return Ok(record.sha256);
    }
    let digest = hex::encode(sha256_of(&mut file).map_err(unreadable(path))?);
    let after = Fingerprint::of(&file.metadata().map_err(unreadable(path))?);
    let settled = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|now| now.as_nanos() as i64 - after.mtime_ns > RACY.as_nanos() as i64)
        .unwrap_or(false);
    if before == after && settled {
        let record = DigestRecord {
            path: canonical,
            fingerprint: after,
            sha256: digest.clone(),
        };
        // A memo that cannot be written only costs a hash next time.
        if let Err(e) = write_atomic(&record_path, &record) {
            tracing::debug!(path = %record_path.display(), error = %e, "step cache: digest not memoised");
        }
    }
    Ok(digest)
}

/// Writes `value` as JSON through a temporary file renamed into place, so
/// concurrent writers and readers see a whole record or none.
fn write_atomic(path: &Path, value: &impl Serialize) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let tmp = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(tmp.path(), text)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes memos of files that are gone or changed (`kiln cache prune`).
pub(crate) fn prune_digests(cache: &Cache) {
    let Ok(read) = std::fs::read_dir(digests_dir(cache)) else {
        return;
    };
    for item in read.flatten() {
        let path = item.path();
        let stale = match std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<DigestRecord>(&text).ok())
        {
            Some(record) => std::fs::metadata(&record.path)
                .map(|meta| Fingerprint::of(&meta) != record.fingerprint)
                .unwrap_or(true),
            // A temporary file of a writer, or garbage: only old ones go.
            None => item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600)),
        };
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> StepKey {
        final_key(&StepKey([7; 32]), "parent")
    }

    fn tree(dir: &Path) -> PathBuf {
        let root = dir.join("files");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.sh"), "echo a\n").unwrap();
        std::fs::write(root.join("sub/b.conf"), "b=1\n").unwrap();
        std::os::unix::fs::symlink("a.sh", root.join("link")).unwrap();
        root
    }

    #[test]
    fn keys_show_as_hex_and_parse_back() {
        let key = parent();
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<StepKey>().unwrap(), key);
        assert!("xyz".parse::<StepKey>().is_err());
        assert!(text.to_uppercase().parse::<StepKey>().is_err());
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<StepKey>(&json).unwrap(), key);
    }

    #[test]
    fn same_inputs_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let a = step_key(&parent(), "shell", std::slice::from_ref(&root)).unwrap();
        let b = step_key(&parent(), "shell", &[root]).unwrap();
        assert_eq!(a, b);
        assert_eq!(final_key(&a, "x"), final_key(&b, "x"));
    }

    #[test]
    fn every_change_changes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let files = [root.clone()];
        let key = || step_key(&parent(), "shell", &files).unwrap();
        let mut seen = vec![key()];
        let mut changed = |what: &str, new: StepKey| {
            assert!(!seen.contains(&new), "{what} did not change the key");
            seen.push(new);
        };
        changed(
            "description",
            step_key(&parent(), "shell ", &files).unwrap(),
        );
        changed(
            "parent",
            step_key(&StepKey([1; 32]), "shell", &files).unwrap(),
        );
        changed("no files", step_key(&parent(), "shell", &[]).unwrap());
        std::fs::write(root.join("sub/b.conf"), "b=2\n").unwrap();
        changed("content", key());
        let script = root.join("a.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        changed("mode", key());
        std::fs::write(root.join("sub/new"), "").unwrap();
        changed("an added file", key());
        std::fs::rename(root.join("sub/new"), root.join("sub/new2")).unwrap();
        changed("a renamed file", key());
        std::fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("link")).unwrap();
        changed("a link target", key());
        // The framing keeps description and files apart.
        assert_ne!(
            final_key(&parent(), "ab"),
            step_key(&parent(), "ab", &[]).unwrap()
        );
    }

    #[test]
    fn boot_keys_change_with_each_input() {
        let dir = tempfile::tempdir().unwrap();
        let http = tree(dir.path());
        let inputs = BootInputs {
            kiln_version: "0.1.0",
            source_digest: "ab".repeat(32),
            launch: vec!["-m 512".into(), "disk_size=40960".into()],
            files: vec![http.clone()],
        };
        let base = boot_key(&inputs).unwrap();
        assert_eq!(base, boot_key(&inputs.clone()).unwrap());
        let variants = [
            BootInputs {
                kiln_version: "0.2.0",
                ..inputs.clone()
            },
            BootInputs {
                source_digest: "cd".repeat(32),
                ..inputs.clone()
            },
            BootInputs {
                launch: vec!["-m 512 disk_size=40960".into()],
                ..inputs.clone()
            },
            BootInputs {
                files: vec![],
                ..inputs.clone()
            },
        ];
        for v in &variants {
            assert_ne!(boot_key(v).unwrap(), base, "{v:?}");
        }
        std::fs::write(http.join("preseed.cfg"), "d-i").unwrap();
        assert_ne!(boot_key(&inputs).unwrap(), base);
    }

    #[test]
    fn a_missing_input_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.sh");
        let err = step_key(&parent(), "shell", std::slice::from_ref(&gone)).unwrap_err();
        let KeyError::Unreadable { path, .. } = &err;
        assert_eq!(path, &gone);
        assert!(err.to_string().contains("gone.sh"), "{err}");
    }

    #[test]
    fn source_digests_are_memoised_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().join("cache"));
        let image = dir.path().join("source.img");
        std::fs::write(&image, "disk one").unwrap();
        // Old enough that its fingerprint is trusted.
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .append(true)
            .open(&image)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let first = source_digest(&cache, &image).unwrap();
        assert_eq!(first, hex::encode(sha2::Sha256::digest(b"disk one")));
        let records: Vec<_> = std::fs::read_dir(digests_dir(&cache)).unwrap().collect();
        assert_eq!(records.len(), 1);
        // The memo answers (proved by a forged one being believed).
        let record_path = digest_record_path(&cache, &std::fs::canonicalize(&image).unwrap());
        let mut record: DigestRecord =
            serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
        record.sha256 = "memo".into();
        write_atomic(&record_path, &record).unwrap();
        assert_eq!(source_digest(&cache, &image).unwrap(), "memo");
        // A change (same size, time set back) is seen: its ctime moved. The
        // pause puts the write in a later timestamp tick.
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&image, "disk two").unwrap();
        File::options()
            .append(true)
            .open(&image)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            source_digest(&cache, &image).unwrap(),
            hex::encode(sha2::Sha256::digest(b"disk two"))
        );
        // Memos of vanished files are pruned.
        std::fs::remove_file(&image).unwrap();
        prune_digests(&cache);
        assert_eq!(std::fs::read_dir(digests_dir(&cache)).unwrap().count(), 0);
        assert!(source_digest(&cache, &image).is_err());
    }
}
