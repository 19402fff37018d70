//! The template's floppy (`floppy_files`, `floppy_dirs`, `floppy_content`,
//! `floppy_label`): a 1.44 MB FAT12 image written in-process, laid out as
//! Packer lays it out. A `floppy_files` entry lands at the root under its
//! own name, and a directory given there has all its files put at the root,
//! flat; a `floppy_dirs` entry lands at the root with its tree; a
//! `floppy_content` key is a path on the floppy. Later entries replace
//! earlier ones of the same name (FAT names ignore case).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::FileError;
use crate::plan::FloppyConfig;

/// Packer's label when the template sets none.
pub const DEFAULT_LABEL: &str = "packer";
/// A 1.44 MB floppy: 80 tracks, 2 heads, 18 sectors of 512 bytes.
pub const SIZE: u64 = 2880 * SECTOR;
const SECTOR: u64 = 512;
const TOTAL_SECTORS: u32 = 2880;
/// The root directory of a 1.44 MB floppy holds this many entries (a long
/// name takes several).
const ROOT_ENTRIES: u16 = 224;
/// Directory entries are this long; the volume label is one of them.
const DIR_ENTRY: usize = 32;
/// The attribute byte of a volume label entry.
const ATTR_VOLUME_ID: u8 = 0x08;
/// Symlinked directories are followed, so a link loop must end somewhere.
const MAX_DEPTH: usize = 64;

/// Why the floppy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FloppyError {
    /// A file could not be read, or the image written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A path the template names does not exist.
    #[error("{key}: {} does not exist", path.display())]
    Missing {
        /// The option naming it.
        key: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A glob is malformed.
    #[error("{key}: bad pattern")]
    Pattern {
        /// The option holding it.
        key: &'static str,
        /// What is wrong with it.
        #[source]
        source: super::SeedError,
    },
    /// A `floppy_content` key climbs out of the floppy or names nothing.
    #[error("floppy_content: {path:?} is not a file path inside the floppy")]
    ContentPath {
        /// The key.
        path: String,
    },
    /// A directory nests too deep (a symlink loop).
    #[error("too many nested directories under {}", path.display())]
    TooDeep {
        /// The directory the template names.
        path: PathBuf,
    },
    /// The files do not fit on a 1.44 MB floppy.
    #[error(
        "the floppy's files need {needed} bytes but a 1.44 MB floppy holds {capacity}; \
         put large files on a CD (cd_files) or serve them with http_directory"
    )]
    TooLarge {
        /// Bytes the files take, in whole sectors.
        needed: u64,
        /// Bytes the floppy's data area holds.
        capacity: u64,
    },
    /// The FAT file system refused an entry: the root directory is full,
    /// the name is not allowed, or the space ran out.
    #[error("could not add {name} to the floppy")]
    Add {
        /// The path on the floppy.
        name: String,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Disk(PathBuf),
    Bytes(Vec<u8>),
}

/// What goes on the floppy: files by path (case-folded key, as FAT
/// compares names), each with its path as given.
#[derive(Debug, Default)]
struct Layout {
    files: BTreeMap<Vec<String>, (Vec<String>, Source)>,
}

impl Layout {
    fn add(&mut self, parts: Vec<String>, source: Source) {
        let key = parts.iter().map(|p| p.to_lowercase()).collect();
        self.files.insert(key, (parts, source));
    }
}

/// Writes the floppy `config` asks for to `out` (created or replaced).
pub fn write(config: &FloppyConfig, out: &Path) -> Result<(), FloppyError> {
    let layout = layout(config)?;
    check_fits(&layout)?;
    let label = config
        .label
        .as_deref()
        .filter(|l| !l.is_empty())
        .unwrap_or(DEFAULT_LABEL);
    let write_err = FileError::write(out);
    let mut image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(write_err)?;
    image.set_len(SIZE).map_err(write_err)?;
    let label = label_bytes(label);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat12)
            .bytes_per_sector(SECTOR as u16)
            .bytes_per_cluster(SECTOR as u32)
            .total_sectors(TOTAL_SECTORS)
            .max_root_dir_entries(ROOT_ENTRIES)
            .fats(2)
            .media(0xF0)
            .sectors_per_track(18)
            .heads(2)
            .drive_num(0)
            .volume_label(label),
    )
    .map_err(write_err)?;
    write_label_entry(&mut image, &label).map_err(write_err)?;
    image.seek(SeekFrom::Start(0)).map_err(write_err)?;
    let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new()).map_err(write_err)?;
    for (parts, source) in layout.files.values() {
        add_file(&fs, parts, source)?;
    }
    fs.unmount().map_err(write_err)?;
    image.sync_all().map_err(write_err)?;
    Ok(())
}

/// The label as FAT stores it: 11 bytes, padded with spaces (the template
/// check keeps it to 11 ASCII characters).
fn label_bytes(label: &str) -> [u8; 11] {
    let mut bytes = [b' '; 11];
    for (slot, byte) in bytes.iter_mut().zip(label.bytes()) {
        *slot = byte;
    }
    bytes
}

/// Puts the label in the root directory's first entry too, as Packer's
/// floppies have it: that is where Linux (blkid, mtools) reads it.
fn write_label_entry(image: &mut fs::File, label: &[u8; 11]) -> io::Result<()> {
    let mut boot = [0u8; SECTOR as usize];
    image.seek(SeekFrom::Start(0))?;
    image.read_exact(&mut boot)?;
    let reserved = u64::from(u16::from_le_bytes([boot[14], boot[15]]));
    let fats = u64::from(boot[16]);
    let sectors_per_fat = u64::from(u16::from_le_bytes([boot[22], boot[23]]));
    let root = (reserved + fats * sectors_per_fat) * SECTOR;
    let mut entry = [0u8; DIR_ENTRY];
    entry[..11].copy_from_slice(label);
    entry[11] = ATTR_VOLUME_ID;
    image.seek(SeekFrom::Start(root))?;
    image.write_all(&entry)
}

fn add_file<T: fatfs::ReadWriteSeek>(
    fs: &fatfs::FileSystem<T>,
    parts: &[String],
    source: &Source,
) -> Result<(), FloppyError> {
    let name = parts.join("/");
    let refused = |source: io::Error| FloppyError::Add {
        name: name.clone(),
        source,
    };
    let Some((file_name, dirs)) = parts.split_last() else {
        return Ok(());
    };
    let mut dir = fs.root_dir();
    for part in dirs {
        dir = match dir.open_dir(part) {
            Ok(existing) => existing,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                dir.create_dir(part).map_err(refused)?
            }
            Err(err) => return Err(refused(err)),
        };
    }
    let mut file = dir.create_file(file_name).map_err(refused)?;
    file.truncate().map_err(refused)?;
    match source {
        Source::Bytes(bytes) => file.write_all(bytes).map_err(refused)?,
        Source::Disk(path) => {
            let mut input = fs::File::open(path).map_err(FileError::read(path))?;
            copy(&mut input, &mut file, path).map_err(|err| match err {
                CopyError::Read(err) => FloppyError::from(err),
                CopyError::Write(err) => refused(err),
            })?;
        }
    }
    file.flush().map_err(refused)?;
    Ok(())
}

enum CopyError {
    Read(FileError),
    Write(io::Error),
}

/// `io::copy`, telling a failed read of the host file from a refused write.
fn copy(input: &mut fs::File, out: &mut impl Write, path: &Path) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(FileError::read(path)(err))),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

/// The bytes the files take in the data area (whole clusters of one
/// sector, plus one per directory) against what the floppy has, so too
/// much content fails before anything is written, with the sizes.
fn check_fits(layout: &Layout) -> Result<(), FloppyError> {
    let mut needed = 0u64;
    let mut dirs = std::collections::BTreeSet::new();
    for (key, (_, source)) in &layout.files {
        let size = match source {
            Source::Bytes(bytes) => bytes.len() as u64,
            Source::Disk(path) => fs::metadata(path).map_err(FileError::read(path))?.len(),
        };
        needed += size.next_multiple_of(SECTOR);
        for depth in 1..key.len() {
            dirs.insert(key[..depth].to_vec());
        }
    }
    needed += dirs.len() as u64 * SECTOR;
    let capacity = data_sectors() * SECTOR;
    if needed > capacity {
        return Err(FloppyError::TooLarge { needed, capacity });
    }
    Ok(())
}

/// Sectors left for data: all but the boot sector, two 9-sector FATs and
/// the root directory.
fn data_sectors() -> u64 {
    let root = (u64::from(ROOT_ENTRIES) * DIR_ENTRY as u64).div_ceil(SECTOR);
    u64::from(TOTAL_SECTORS) - 1 - 2 * 9 - root
}

/// Everything the options put on the floppy, in Packer's order:
/// `floppy_files`, then `floppy_dirs`, then `floppy_content`.
fn layout(config: &FloppyConfig) -> Result<Layout, FloppyError> {
    let mut layout = Layout::default();
    for path in expand("floppy_files", &config.files)? {
        let meta = metadata("floppy_files", &path)?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(&path, &mut Vec::new(), &mut found, 0, &path)?;
            for (parts, file) in found {
                if let Some(name) = parts.last() {
                    layout.add(vec![name.clone()], Source::Disk(file));
                }
            }
        } else {
            layout.add(vec![file_name(&path)], Source::Disk(path));
        }
    }
    for path in expand("floppy_dirs", &config.dirs)? {
        let meta = metadata("floppy_dirs", &path)?;
        let name = file_name(&path);
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(&path, &mut vec![name], &mut found, 0, &path)?;
            for (parts, file) in found {
                layout.add(parts, Source::Disk(file));
            }
        } else {
            layout.add(vec![name], Source::Disk(path));
        }
    }
    for (key, text) in &config.content {
        layout.add(content_path(key)?, Source::Bytes(text.as_bytes().to_vec()));
    }
    Ok(layout)
}

/// Globs expanded (a glob matching nothing adds nothing, as in Packer);
/// other paths kept as they are.
fn expand(key: &'static str, paths: &[PathBuf]) -> Result<Vec<PathBuf>, FloppyError> {
    let mut out = Vec::new();
    for path in paths {
        let text = path.to_string_lossy();
        if text.contains(['*', '?', '[']) {
            let matches =
                super::cd::glob(&text).map_err(|source| FloppyError::Pattern { key, source })?;
            if matches.is_empty() {
                tracing::warn!(pattern = %text, "{key} pattern matches nothing");
            }
            out.extend(matches);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn metadata(key: &'static str, path: &Path) -> Result<fs::Metadata, FloppyError> {
    fs::metadata(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            FloppyError::Missing {
                key,
                path: path.to_path_buf(),
            }
        } else {
            FileError::read(path)(source).into()
        }
    })
}

/// The files under `dir` (links followed), each with its path on the
/// floppy: `prefix` then the names below `dir`.
fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, PathBuf)>,
    depth: usize,
    top: &Path,
) -> Result<(), FloppyError> {
    if depth > MAX_DEPTH {
        return Err(FloppyError::TooDeep {
            path: top.to_path_buf(),
        });
    }
    let read_err = FileError::read(dir);
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = fs::metadata(&child).map_err(FileError::read(&child))?;
        prefix.push(name);
        if meta.is_dir() {
            walk(&child, prefix, found, depth + 1, top)?;
        } else {
            found.push((prefix.clone(), child));
        }
        prefix.pop();
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        // `.` and `..` have no name of their own: use the real one.
        None => fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "_".to_string()),
    }
}

/// A content key as path components, or the error naming the key.
fn content_path(key: &str) -> Result<Vec<String>, FloppyError> {
    super::content_path(key).ok_or_else(|| FloppyError::ContentPath {
        path: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file on the floppy image at `path`: path → content.
    fn read_back(path: &Path) -> (String, Option<String>, BTreeMap<String, Vec<u8>>) {
        let image = fs::File::open(path).unwrap();
        let fs = fatfs::FileSystem::new(image, fatfs::FsOptions::new()).unwrap();
        let mut out = BTreeMap::new();
        let mut stack = vec![(String::new(), fs.root_dir())];
        while let Some((prefix, dir)) = stack.pop() {
            for entry in dir.iter() {
                let entry = entry.unwrap();
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let full = format!("{prefix}{name}");
                if entry.is_dir() {
                    stack.push((format!("{full}/"), entry.to_dir()));
                } else {
                    let mut bytes = Vec::new();
                    entry.to_file().read_to_end(&mut bytes).unwrap();
                    out.insert(full, bytes);
                }
            }
        }
        let label = fs.volume_label();
        let root_label = fs.read_volume_label_from_root_dir().unwrap();
        (label, root_label, out)
    }

    fn names(files: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
        files.keys().map(String::as_str).collect()
    }

    #[test]
    fn files_land_flat_and_dirs_keep_their_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("Autounattend.xml"), "<unattend/>").unwrap();
        fs::create_dir_all(d.join("scripts/sub")).unwrap();
        fs::write(d.join("scripts/a.ps1"), "a").unwrap();
        fs::write(d.join("scripts/sub/b.ps1"), "b").unwrap();
        fs::create_dir_all(d.join("drivers/net")).unwrap();
        fs::write(d.join("drivers/net/e1000.inf"), "inf").unwrap();
        fs::write(d.join("one.cfg"), "1").unwrap();
        fs::write(d.join("two.cfg"), "2").unwrap();
        let config = FloppyConfig {
            files: vec![
                d.join("Autounattend.xml"),
                d.join("scripts"),
                d.join("*.cfg"),
            ],
            dirs: vec![d.join("drivers")],
            content: [("meta/data.txt".to_string(), "from content".to_string())].into(),
            label: None,
        };
        let out = d.join("floppy.img");
        write(&config, &out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().len(), 1_474_560);
        let (label, root_label, files) = read_back(&out);
        assert_eq!(label.trim_end(), "packer");
        assert_eq!(root_label.as_deref().map(str::trim_end), Some("packer"));
        assert_eq!(
            names(&files),
            [
                "Autounattend.xml",
                "a.ps1",
                "b.ps1",
                "drivers/net/e1000.inf",
                "meta/data.txt",
                "one.cfg",
                "two.cfg"
            ]
        );
        assert_eq!(files["Autounattend.xml"], b"<unattend/>");
        assert_eq!(files["b.ps1"], b"b");
        assert_eq!(files["drivers/net/e1000.inf"], b"inf");
        assert_eq!(files["meta/data.txt"], b"from content");
    }

    #[test]
    fn the_label_is_the_templates_and_content_wins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("ks.cfg"), "from disk").unwrap();
        let config = FloppyConfig {
            files: vec![d.join("ks.cfg")],
            dirs: vec![],
            content: [("KS.CFG".to_string(), "from content".to_string())].into(),
            label: Some("OEMDRV".into()),
        };
        let out = d.join("floppy.img");
        write(&config, &out).unwrap();
        let (label, root_label, files) = read_back(&out);
        assert_eq!(label.trim_end(), "OEMDRV");
        assert_eq!(root_label.as_deref().map(str::trim_end), Some("OEMDRV"));
        assert_eq!(names(&files), ["KS.CFG"]);
        assert_eq!(files["KS.CFG"], b"from content");
    }

    #[test]
    fn a_file_filling_the_floppy_fits_and_one_byte_more_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let capacity = data_sectors() * SECTOR;
        fs::write(d.join("big.bin"), vec![0xA5u8; capacity as usize]).unwrap();
        let config = FloppyConfig {
            files: vec![d.join("big.bin")],
            ..FloppyConfig::default()
        };
        write(&config, &d.join("full.img")).unwrap();
        let (_, _, files) = read_back(&d.join("full.img"));
        assert_eq!(files["big.bin"].len() as u64, capacity);

        fs::write(d.join("big.bin"), vec![0xA5u8; capacity as usize + 1]).unwrap();
        let err = write(&config, &d.join("over.img")).unwrap_err();
        assert!(
            matches!(err, FloppyError::TooLarge { needed, capacity: c } if needed == capacity + SECTOR && c == capacity),
            "{err:?}"
        );
        assert!(err.to_string().contains("1.44 MB floppy"), "{err}");
    }

    #[test]
    fn missing_paths_and_escaping_content_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.xml");
        let err = write(
            &FloppyConfig {
                dirs: vec![missing.clone()],
                ..FloppyConfig::default()
            },
            &dir.path().join("f.img"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("floppy_dirs: {} does not exist", missing.display())
        );
        let err = write(
            &FloppyConfig {
                content: [("../x".to_string(), String::new())].into(),
                ..FloppyConfig::default()
            },
            &dir.path().join("f.img"),
        )
        .unwrap_err();
        assert!(matches!(err, FloppyError::ContentPath { .. }), "{err:?}");
    }

    #[test]
    fn a_glob_matching_nothing_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = FloppyConfig {
            files: vec![dir.path().join("*.none")],
            content: [("a.txt".to_string(), "a".to_string())].into(),
            ..FloppyConfig::default()
        };
        write(&config, &dir.path().join("f.img")).unwrap();
        let (_, _, files) = read_back(&dir.path().join("f.img"));
        assert_eq!(names(&files), ["a.txt"]);
    }
}
