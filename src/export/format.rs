//! What a disk image is, decided once and then told to every tool: kiln
//! never lets qemu-img or QEMU probe a format. Probing a raw disk is unsafe
//! (QEMU's documentation says so): a guest that writes a qcow2 header naming
//! a backing file at the start of its raw disk would make the host read
//! that file into the export.
//!
//! A format is either given (`--disk-format`, a build's own `format`) or
//! detected from the first bytes: the qcow2 magic means qcow2, any other
//! image format's header is refused, and no header means raw. A detected
//! qcow2 that names a backing file is refused too: only an explicit
//! `--disk-format qcow2` may follow one. Backing chains are walked here, header
//! by header, so a loop or a backing file without a recorded format is an
//! error before any tool runs.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::FileError;

/// The formats kiln reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// QEMU's copy-on-write format.
    Qcow2,
    /// A plain disk, byte for byte.
    Raw,
}

impl ImageFormat {
    /// The name qemu-img and templates use: `qcow2`, `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }

    /// The format `text` names, if kiln reads it.
    pub fn parse(text: &str) -> Option<ImageFormat> {
        match text {
            "qcow2" => Some(ImageFormat::Qcow2),
            "raw" => Some(ImageFormat::Raw),
            _ => None,
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How deep a backing chain may go; real ones are a few levels.
const MAX_CHAIN: usize = 16;
/// The smallest disk: one sector.
const SECTOR: u64 = 512;
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// qcow2 incompatible feature bit 2: the data lives in another file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// QEMU refuses longer backing file names.
const MAX_BACKING_NAME: u32 = 1023;
/// Header extensions live in the first cluster; this much is plenty.
const MAX_HEADER_READ: u64 = 1 << 20;

/// Why a disk cannot be read as it stands; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The disk (or a backing file) could not be opened or read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a regular file or a block device.
    #[error("{} is {what}, not a disk image", path.display())]
    NotAFile {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// What it is instead (a directory, say).
        what: &'static str,
    },
    /// Smaller than one sector.
    #[error("{} is {size} byte(s): too small to be a disk image (at least {SECTOR})", path.display())]
    TooSmall {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A raw disk whose size is not a whole number of sectors.
    #[error(
        "{} is {size} bytes, not a whole number of {SECTOR}-byte sectors: not a raw disk image",
        path.display()
    )]
    NotSectors {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// Looks like text, not a disk.
    #[error("{} looks like a text file, not a disk image", path.display())]
    Text {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
    },
    /// A format kiln does not read (vmdk, vdi, ...).
    #[error(
        "{} starts with a {format} header; kiln reads qcow2 and raw only: convert it with qemu-img, or give --disk-format raw if it is a raw disk that merely holds those bytes",
        path.display()
    )]
    OtherFormat {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The format its header shows.
        format: &'static str,
    },
    /// A detected qcow2 header names a backing file: refused unless the format was given.
    #[error(
        "{} starts with a qcow2 header naming the backing file {backing:?}; a raw disk whose guest wrote that header would export a host file: give --disk-format raw for a raw disk, or --disk-format qcow2 to follow the backing file",
        path.display()
    )]
    DetectedBacking {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The backing file name as recorded.
        backing: String,
    },
    /// A qcow2 header kiln cannot make sense of.
    #[error("{} is not a valid qcow2 image: {detail}", path.display())]
    BadQcow2 {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A backing file without a recorded format.
    #[error(
        "{} names the backing file {backing:?} without recording its format; record it with `qemu-img rebase -u -F <qcow2|raw> -b <file> {}`",
        path.display(), path.display()
    )]
    BackingWithoutFormat {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The backing file name as recorded.
        backing: String,
    },
    /// A backing file in a format kiln does not follow.
    #[error("{} has a backing file of format {format:?}; kiln follows only qcow2 and raw", path.display())]
    BackingFormat {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The recorded backing format.
        format: String,
    },
    /// A backing file that is not a plain path (`nbd:`, `http:`, ...).
    #[error("{} names the backing file {backing:?}, which is not a plain file path", path.display())]
    BackingProtocol {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The backing file name as recorded.
        backing: String,
    },
    /// A qcow2 whose data lives in an external data file.
    #[error("{} keeps its data in an external file; kiln does not follow external data files", path.display())]
    ExternalData {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
    },
    /// The backing chain comes back to a file already in it.
    #[error("the backing chain loops: {}", chain_text(chain))]
    BackingLoop {
        /// The chain, ending with the repeated file.
        chain: Vec<PathBuf>,
    },
    /// The backing chain is deeper than kiln follows.
    #[error("the backing chain of {} is deeper than {MAX_CHAIN} images", path.display())]
    ChainTooLong {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
    },
    /// A backing file could not be opened.
    #[error("cannot open the backing file {} of {}", backing.display(), path.display())]
    BackingMissing {
        /// The image: the disk, or a file of its backing chain.
        path: PathBuf,
        /// The backing file.
        backing: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },
}

fn chain_text(chain: &[PathBuf]) -> String {
    chain
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A disk checked and ready to hand to qemu-img or qemu-nbd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedImage {
    /// Symlinks resolved, absolute: qemu reads neither a leading `-` as an
    /// option nor a colon as a protocol prefix.
    pub path: PathBuf,
    /// The format it is read as.
    pub format: ImageFormat,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    /// The backing files, nearest first (empty for raw and standalone
    /// qcow2).
    pub backing_chain: Vec<PathBuf>,
}

/// What kiln may assume about a disk's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatPolicy {
    /// The user said so (`--disk-format`) or kiln made the disk: the bytes are
    /// that format, whatever they look like.
    Known(ImageFormat),
    /// Detected from the header; a qcow2 header naming a backing file is
    /// refused, since a raw disk can carry one.
    Detect,
    /// Detected, following a qcow2's backing chain: for a build's source
    /// image, which the user picked as a base image.
    DetectTrusted,
}

impl FormatPolicy {
    /// `--disk-format` given: that format; absent: detect it.
    pub fn from_flag(format: Option<ImageFormat>) -> FormatPolicy {
        format.map_or(FormatPolicy::Detect, FormatPolicy::Known)
    }
}

/// Checks `disk` (a regular file or a block device, of a size a disk can
/// have, in a format kiln reads, with a sound backing chain) and says what
/// it is.
pub fn check_image(disk: &Path, policy: FormatPolicy) -> Result<CheckedImage, ImageError> {
    let read_err = FileError::read(disk);
    let path = std::fs::canonicalize(disk).map_err(read_err)?;
    let (mut file, size) = open_disk(disk, &path)?;
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(4096)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let format = match policy {
        FormatPolicy::Known(format) => format,
        FormatPolicy::Detect | FormatPolicy::DetectTrusted => detect(disk, &head)?,
    };
    match format {
        ImageFormat::Raw => {
            if size < SECTOR {
                return Err(ImageError::TooSmall {
                    path: disk.to_path_buf(),
                    size,
                });
            }
            // Told it is raw, the user knows better than any heuristic.
            if policy != FormatPolicy::Known(ImageFormat::Raw) {
                check_raw_size(disk, size)?;
            }
            if policy != FormatPolicy::Known(ImageFormat::Raw) && looks_like_text(&head) {
                return Err(ImageError::Text {
                    path: disk.to_path_buf(),
                });
            }
            Ok(CheckedImage {
                path,
                format,
                virtual_size: size,
                backing_chain: Vec::new(),
            })
        }
        ImageFormat::Qcow2 => {
            let header = read_qcow2(disk, &mut file)?;
            if policy == FormatPolicy::Detect
                && let Some(backing) = &header.backing
            {
                return Err(ImageError::DetectedBacking {
                    path: disk.to_path_buf(),
                    backing: backing.clone(),
                });
            }
            let backing_chain = walk_chain(&path, header.clone())?;
            Ok(CheckedImage {
                path,
                format,
                virtual_size: header.size,
                backing_chain,
            })
        }
    }
}

/// Opens a regular file or a block device and tells its size; anything
/// else is named for what it is.
fn open_disk(shown: &Path, path: &Path) -> Result<(File, u64), ImageError> {
    let read_err = FileError::read(shown);
    let metadata = std::fs::metadata(path).map_err(read_err)?;
    let kind = metadata.file_type();
    let not_a_file = |what| ImageError::NotAFile {
        path: shown.to_path_buf(),
        what,
    };
    if kind.is_dir() {
        return Err(not_a_file("a directory"));
    }
    if kind.is_char_device() {
        return Err(not_a_file("a character device"));
    }
    if kind.is_fifo() {
        return Err(not_a_file("a named pipe"));
    }
    if kind.is_socket() {
        return Err(not_a_file("a socket"));
    }
    let mut file = File::open(path).map_err(read_err)?;
    let size = if kind.is_block_device() {
        file.seek(SeekFrom::End(0)).map_err(read_err)?
    } else {
        metadata.len()
    };
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    Ok((file, size))
}

fn check_raw_size(path: &Path, size: u64) -> Result<(), ImageError> {
    if size < SECTOR {
        return Err(ImageError::TooSmall {
            path: path.to_path_buf(),
            size,
        });
    }
    if !size.is_multiple_of(SECTOR) {
        return Err(ImageError::NotSectors {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(())
}

/// qcow2 by its magic, another format by its header (refused), else raw.
fn detect(path: &Path, head: &[u8]) -> Result<ImageFormat, ImageError> {
    if head.starts_with(QCOW2_MAGIC) {
        return match head.get(4..8).map(be32) {
            Some(2 | 3) => Ok(ImageFormat::Qcow2),
            _ => Err(ImageError::OtherFormat {
                path: path.to_path_buf(),
                format: "qcow (version 1 or unknown)",
            }),
        };
    }
    match other_format(head) {
        Some(format) => Err(ImageError::OtherFormat {
            path: path.to_path_buf(),
            format,
        }),
        None => Ok(ImageFormat::Raw),
    }
}

/// The image formats QEMU would recognise, by their headers.
fn other_format(head: &[u8]) -> Option<&'static str> {
    const AT_START: &[(&[u8], &str)] = &[
        (b"KDMV", "vmdk"),
        (b"COWD", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"QED\0", "qed"),
        (b"conectix", "vpc (vhd)"),
        (b"LUKS\xba\xbe", "luks"),
        (b"WithoutFreeSpace", "parallels"),
        (b"WithouFreSpacExt", "parallels"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
        (b"<<< Sun VirtualBox Disk Image >>>", "vdi"),
        (b"Bochs Virtual HD Image", "bochs"),
        (b"#!/bin/sh\n#V2.0 Format", "cloop"),
    ];
    if let Some((_, name)) = AT_START.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(name);
    }
    // VDI keeps its signature at 0x40, whatever the text before it says.
    if head.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Some("vdi");
    }
    None
}

/// Text all the way through its first block: no NUL, valid UTF-8, and
/// printable. A disk's first sector (a boot sector, a partition table, or
/// zeros) always has NULs.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // Cut in the middle of a character at the end of the block.
        Err(err) if err.error_len().is_none() => {
            match std::str::from_utf8(&head[..err.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[derive(Debug, Clone)]
struct Qcow2Header {
    size: u64,
    backing: Option<String>,
    backing_format: Option<String>,
}

fn be32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

fn be64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

/// The parts of a qcow2 header that say where its data comes from.
fn read_qcow2(path: &Path, file: &mut File) -> Result<Qcow2Header, ImageError> {
    let bad = |detail: &str| ImageError::BadQcow2 {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let read_err = FileError::read(path);
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut head = Vec::new();
    file.take(MAX_HEADER_READ)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.len() < 72 || !head.starts_with(QCOW2_MAGIC) {
        return Err(bad("no qcow2 header"));
    }
    let version = be32(&head[4..]);
    if version != 2 && version != 3 {
        return Err(bad(&format!("version {version}")));
    }
    let backing_offset = be64(&head[8..]);
    let backing_len = be32(&head[16..]);
    let size = be64(&head[24..]);
    let (header_len, incompatible) = if version == 3 {
        if head.len() < 104 {
            return Err(bad("truncated version 3 header"));
        }
        (u64::from(be32(&head[100..])), be64(&head[72..]))
    } else {
        (72, 0)
    };
    if incompatible & INCOMPAT_DATA_FILE != 0 {
        return Err(ImageError::ExternalData {
            path: path.to_path_buf(),
        });
    }
    let backing = if backing_offset == 0 || backing_len == 0 {
        None
    } else {
        if backing_len > MAX_BACKING_NAME {
            return Err(bad("backing file name too long"));
        }
        let mut name = vec![0u8; backing_len as usize];
        file.seek(SeekFrom::Start(backing_offset))
            .map_err(read_err)?;
        file.read_exact(&mut name).map_err(read_err)?;
        Some(String::from_utf8_lossy(&name).into_owned())
    };
    let mut backing_format = None;
    let mut at = usize::try_from(header_len).map_err(|_| bad("header length"))?;
    loop {
        let Some(ext) = head.get(at..at + 8) else {
            return Err(bad("header extensions run past the first cluster"));
        };
        let (kind, len) = (be32(ext), be32(&ext[4..]) as usize);
        if kind == EXT_END {
            break;
        }
        let Some(data) = head.get(at + 8..at + 8 + len) else {
            return Err(bad("a header extension runs past the first cluster"));
        };
        match kind {
            EXT_BACKING_FORMAT => {
                backing_format = Some(String::from_utf8_lossy(data).into_owned());
            }
            EXT_DATA_FILE => {
                return Err(ImageError::ExternalData {
                    path: path.to_path_buf(),
                });
            }
            _ => {}
        }
        at += 8 + len.next_multiple_of(8);
    }
    Ok(Qcow2Header {
        size,
        backing,
        backing_format,
    })
}

/// Follows the backing files from `top` to the end, refusing loops, deep
/// chains, protocols, missing formats and formats kiln does not read.
fn walk_chain(top: &Path, header: Qcow2Header) -> Result<Vec<PathBuf>, ImageError> {
    let mut seen = vec![top.to_path_buf()];
    let mut chain = Vec::new();
    let mut current = top.to_path_buf();
    let mut header = header;
    while let Some(name) = header.backing.clone() {
        if name.starts_with("json:") || has_protocol(&name) {
            return Err(ImageError::BackingProtocol {
                path: current,
                backing: name,
            });
        }
        let Some(format) = header.backing_format.clone() else {
            return Err(ImageError::BackingWithoutFormat {
                path: current,
                backing: name,
            });
        };
        let format = ImageFormat::parse(&format).ok_or_else(|| ImageError::BackingFormat {
            path: current.clone(),
            format: format.clone(),
        })?;
        // QEMU resolves a relative name against the image's directory.
        let named = match current.parent() {
            Some(dir) if Path::new(&name).is_relative() => dir.join(&name),
            _ => PathBuf::from(&name),
        };
        let backing =
            std::fs::canonicalize(&named).map_err(|source| ImageError::BackingMissing {
                path: current.clone(),
                backing: named.clone(),
                source,
            })?;
        if seen.contains(&backing) {
            seen.push(backing);
            return Err(ImageError::BackingLoop { chain: seen });
        }
        if seen.len() > MAX_CHAIN {
            return Err(ImageError::ChainTooLong {
                path: top.to_path_buf(),
            });
        }
        seen.push(backing.clone());
        chain.push(backing.clone());
        let (mut file, size) = open_disk(&backing, &backing)?;
        header = match format {
            ImageFormat::Raw => {
                check_raw_size(&backing, size)?;
                break;
            }
            ImageFormat::Qcow2 => read_qcow2(&backing, &mut file)?,
        };
        current = backing;
    }
    Ok(chain)
}

/// QEMU's rule: a colon before any slash makes `proto:...` a protocol.
fn has_protocol(name: &str) -> bool {
    match (name.find(':'), name.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::export::tests::{overlay, s as p};

    fn qemu_img(args: &[&str]) {
        crate::export::tests::run("qemu-img", args);
    }

    #[test]
    fn raw_and_qcow2_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        let qcow = dir.path().join("d.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", p(&qcow), "8M"]);
        let checked = check_image(&raw, FormatPolicy::Detect).unwrap();
        assert_eq!(
            (checked.format, checked.virtual_size),
            (ImageFormat::Raw, 4096)
        );
        let checked = check_image(&qcow, FormatPolicy::Detect).unwrap();
        assert_eq!(
            (checked.format, checked.virtual_size),
            (ImageFormat::Qcow2, 8 << 20)
        );
        // Explicitly raw, the qcow2 file is just bytes.
        let checked = check_image(&qcow, FormatPolicy::Known(ImageFormat::Raw)).unwrap();
        assert_eq!(checked.format, ImageFormat::Raw);
    }

    #[test]
    fn non_disks_are_named_for_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello\n".repeat(512)).unwrap();
        let one = dir.path().join("one");
        std::fs::write(&one, b"x").unwrap();
        let odd = dir.path().join("odd");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let vmdk = dir.path().join("d.vmdk");
        qemu_img(&["create", "-q", "-f", "vmdk", p(&vmdk), "8M"]);
        let cases: Vec<(&Path, &str)> = vec![
            (&text, "looks like a text file"),
            (&one, "is 1 byte(s): too small"),
            (&odd, "not a whole number of 512-byte sectors"),
            (dir.path(), "is a directory"),
            (Path::new("/dev/zero"), "is a character device"),
            (&vmdk, "starts with a vmdk header"),
        ];
        for (path, expected) in cases {
            let err = check_image(path, FormatPolicy::Detect).unwrap_err();
            assert!(err.to_string().contains(expected), "{path:?}: {err}");
        }
        let err = check_image(&dir.path().join("absent"), FormatPolicy::Detect).unwrap_err();
        assert!(
            matches!(err, ImageError::File(FileError::Read { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_detected_backing_file_needs_an_explicit_format() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let top = dir.path().join("top.qcow2");
        overlay(&base, "raw", &top);
        let err = check_image(&top, FormatPolicy::Detect).unwrap_err();
        assert!(matches!(err, ImageError::DetectedBacking { .. }), "{err}");
        let checked = check_image(&top, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap();
        assert_eq!(checked.backing_chain, vec![base.canonicalize().unwrap()]);
        let trusted = check_image(&top, FormatPolicy::DetectTrusted).unwrap();
        assert_eq!(trusted, checked);
    }

    #[test]
    fn a_backing_file_without_a_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let top = dir.path().join("top.qcow2");
        overlay(&base, "raw", &top);
        // Forget the backing format, as old images and hand-made ones do:
        // its header extension becomes one of an unknown type.
        let mut bytes = std::fs::read(&top).unwrap();
        let at = bytes
            .windows(4)
            .position(|w| w == EXT_BACKING_FORMAT.to_be_bytes())
            .unwrap();
        bytes[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        std::fs::write(&top, bytes).unwrap();
        let err = check_image(&top, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap_err();
        assert!(
            matches!(err, ImageError::BackingWithoutFormat { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("qemu-img rebase -u -F"), "{err}");
    }

    #[test]
    fn backing_loops_are_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.qcow2");
        let b = dir.path().join("b.qcow2");
        let base = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", p(&base), "8M"]);
        overlay(&base, "qcow2", &a);
        overlay(&a, "qcow2", &b);
        // a -> b -> a, and s -> s.
        let rebase = |top: &Path, backing: &str| {
            qemu_img(&[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                backing,
                p(top),
            ]);
        };
        rebase(&a, p(&b));
        let err = check_image(&a, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap_err();
        let ImageError::BackingLoop { chain } = &err else {
            panic!("{err}");
        };
        assert_eq!(chain.len(), 3, "{err}");
        assert!(err.to_string().contains("a.qcow2 -> "), "{err}");
        let s = dir.path().join("s.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", p(&s), "8M"]);
        rebase(&s, "s.qcow2");
        let err = check_image(&s, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap_err();
        assert!(matches!(err, ImageError::BackingLoop { .. }), "{err}");
    }

    #[test]
    fn protocols_and_external_data_are_not_followed() {
        assert!(has_protocol("nbd:localhost:10809"));
        assert!(has_protocol("http://example.com/x"));
        assert!(!has_protocol("/srv/img:1.qcow2"));
        assert!(!has_protocol("base.qcow2"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.raw");
        let top = dir.path().join("ext.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", p(&data)),
            p(&top),
            "8M",
        ]);
        let err = check_image(&top, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap_err();
        assert!(matches!(err, ImageError::ExternalData { .. }), "{err}");
    }

    #[test]
    fn a_deep_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut below = dir.path().join("l0.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", p(&below), "1M"]);
        for level in 1..=MAX_CHAIN + 1 {
            let top = dir.path().join(format!("l{level}.qcow2"));
            overlay(&below, "qcow2", &top);
            below = top;
        }
        let err = check_image(&below, FormatPolicy::Known(ImageFormat::Qcow2)).unwrap_err();
        assert!(matches!(err, ImageError::ChainTooLong { .. }), "{err}");
    }
}
