//! A small ISO 9660 writer: a primary tree with Rock Ridge (exact POSIX
//! names and modes for Linux) and a Joliet tree (Unicode names for
//! everything else), both pointing at the same file extents.
//!
//! Layout, in 2048-byte sectors: 16 empty system sectors, the primary and
//! Joliet descriptors and the terminator, the four path tables, the primary
//! directories, the Joliet directories, then the file data. Everything is
//! sized before anything is written, so the image is written front to back
//! and file contents are streamed straight from their sources.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::SeedError;
use crate::error::FileError;

/// The ISO 9660 logical sector (and block) size in bytes.
pub const SECTOR: u64 = 2048;
const SYSTEM_SECTORS: u32 = 16;
/// Zero sectors after the last file, as genisoimage and xorriso write by
/// default: Linux's CD-ROM driver reads ahead past the data, and busybox's
/// label probe (which the fixture and small distributions use to find the
/// `cidata` seed) gives up on a device too short for its probes.
const TRAILING_PAD_SECTORS: u64 = 150;
/// The largest sector-aligned extent whose length fits the 32-bit size
/// field; bigger files are split into several extents (ISO 9660 level 3).
const MAX_EXTENT: u64 = 0xFFFF_F800;
const MAX_RECORD: usize = 255;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE";

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// Read at write time; `size` was taken when the file was added.
    Disk(PathBuf),
    /// Held in memory.
    Bytes(Vec<u8>),
}

/// A file of the image.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Where its bytes come from.
    pub content: Content,
    /// Its length in bytes.
    pub size: u64,
    /// Permission bits shown through Rock Ridge.
    pub mode: u32,
}

impl FileEntry {
    /// A file with these bytes, mode 0644.
    pub fn bytes(data: impl Into<Vec<u8>>) -> FileEntry {
        let data = data.into();
        FileEntry {
            size: data.len() as u64,
            content: Content::Bytes(data),
            mode: 0o644,
        }
    }
}

/// An entry of a directory.
#[derive(Debug, Clone)]
pub enum Node {
    /// A subdirectory.
    Dir(Dir),
    /// A file.
    File(FileEntry),
}

/// A directory of the image; children are kept sorted so that the output
/// depends only on the names, not on the order they were added in.
#[derive(Debug, Clone, Default)]
pub struct Dir {
    /// The entries, by name.
    pub children: BTreeMap<String, Node>,
}

impl Dir {
    /// The directory at `path`, created (replacing files in the way) when
    /// missing, the way `mkdir -p` over a copied tree behaves.
    pub fn dir_mut(&mut self, path: &[&str]) -> &mut Dir {
        let mut dir = self;
        for part in path {
            let node = dir
                .children
                .entry((*part).to_string())
                .or_insert_with(|| Node::Dir(Dir::default()));
            if let Node::File(_) = node {
                *node = Node::Dir(Dir::default());
            }
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => unreachable!("replaced by a directory above"),
            };
        }
        dir
    }

    /// Adds (or replaces) the file at `path`; a later file with the same
    /// path wins, as when files are copied one after another.
    pub fn add_file(&mut self, path: &[&str], file: FileEntry) {
        if let Some((name, parents)) = path.split_last() {
            self.dir_mut(parents)
                .children
                .insert((*name).to_string(), Node::File(file));
        }
    }
}

/// The image-wide settings.
pub struct Options<'a> {
    /// The label; upper-cased for the primary descriptor, kept for Joliet.
    pub volume_id: &'a str,
    /// Seconds since the epoch, used for every date in the image.
    pub timestamp: i64,
}

/// Writes the image for `root` to `out`.
pub fn write(root: &Dir, options: &Options<'_>, out: &Path) -> Result<(), SeedError> {
    let image = Image::plan(root, options)?;
    let write_err = FileError::write(out);
    let file = File::create(out).map_err(write_err)?;
    let mut w = BufWriter::new(file);
    image.write(&mut w, out)?;
    let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The flattened tree.

#[derive(Clone, Copy)]
enum Child {
    Dir(usize),
    File(usize),
}

struct FlatDir<'a> {
    parent: usize,
    children: Vec<(&'a str, Child)>,
    subdirs: u32,
}

fn flatten<'a>(root: &'a Dir) -> (Vec<FlatDir<'a>>, Vec<&'a FileEntry>) {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    flatten_into(root, 0, &mut dirs, &mut files);
    (dirs, files)
}

fn flatten_into<'a>(
    dir: &'a Dir,
    parent: usize,
    dirs: &mut Vec<FlatDir<'a>>,
    files: &mut Vec<&'a FileEntry>,
) -> usize {
    let index = dirs.len();
    dirs.push(FlatDir {
        parent,
        children: Vec::new(),
        subdirs: 0,
    });
    let mut children = Vec::new();
    let mut subdirs = 0;
    for (name, node) in &dir.children {
        match node {
            Node::Dir(sub) => {
                subdirs += 1;
                let sub_index = flatten_into(sub, index, dirs, files);
                children.push((name.as_str(), Child::Dir(sub_index)));
            }
            Node::File(file) => {
                files.push(file);
                children.push((name.as_str(), Child::File(files.len() - 1)));
            }
        }
    }
    dirs[index].children = children;
    dirs[index].subdirs = subdirs;
    index
}

// ---------------------------------------------------------------------------
// Names.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Primary,
    Joliet,
}

fn d_chars(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(max)
        .collect()
}

/// 8.3 identifiers, unique within the directory: the real names travel in
/// Rock Ridge and Joliet, so these only need to be valid and distinct.
fn primary_id(name: &str, is_dir: bool, used: &mut HashSet<(String, String)>) -> Vec<u8> {
    let (base, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && !is_dir => (&name[..dot], &name[dot + 1..]),
        _ => (name, ""),
    };
    let mut base = d_chars(base, 8);
    if base.is_empty() {
        base.push('_');
    }
    let ext = d_chars(ext, 3);
    let mut candidate = base.clone();
    let mut n = 1u32;
    while used.contains(&(candidate.clone(), ext.clone())) {
        let suffix = n.to_string();
        let keep = 8usize.saturating_sub(suffix.len()).min(base.len());
        candidate = format!("{}{suffix}", &base[..keep]);
        n += 1;
    }
    used.insert((candidate.clone(), ext.clone()));
    if is_dir {
        candidate.into_bytes()
    } else {
        format!("{candidate}.{ext};1").into_bytes()
    }
}

const JOLIET_MAX: usize = 64;

fn joliet_units(name: &str) -> Vec<u16> {
    name.chars()
        .map(|c| match c {
            '*' | '/' | ':' | ';' | '?' | '\\' => '_' as u16,
            c if (c as u32) < 0x20 || (c as u32) > 0xFFFF => '_' as u16,
            c => c as u16,
        })
        .collect()
}

fn joliet_id(name: &str, used: &mut HashSet<Vec<u16>>) -> Vec<u8> {
    let units = joliet_units(name);
    let mut candidate: Vec<u16> = units.iter().copied().take(JOLIET_MAX).collect();
    let mut n = 1u32;
    while used.contains(&candidate) {
        let suffix: Vec<u16> = format!("~{n}").encode_utf16().collect();
        let keep = JOLIET_MAX.saturating_sub(suffix.len()).min(units.len());
        candidate = units[..keep].iter().chain(&suffix).copied().collect();
        n += 1;
    }
    used.insert(candidate.clone());
    candidate.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// One child of a directory as one tree sees it.
struct Entry<'a> {
    id: Vec<u8>,
    name: &'a str,
    child: Child,
}

/// Children of every directory with their identifiers, in the order the
/// tree's directory records must appear.
fn named_children<'a>(dirs: &[FlatDir<'a>], tree: Tree) -> Vec<Vec<Entry<'a>>> {
    dirs.iter()
        .map(|dir| {
            let mut used_primary = HashSet::new();
            let mut used_joliet = HashSet::new();
            let mut entries: Vec<Entry<'a>> = dir
                .children
                .iter()
                .map(|&(name, child)| {
                    let id = match tree {
                        Tree::Primary => {
                            primary_id(name, matches!(child, Child::Dir(_)), &mut used_primary)
                        }
                        Tree::Joliet => joliet_id(name, &mut used_joliet),
                    };
                    Entry { id, name, child }
                })
                .collect();
            match tree {
                // Sorted by name then extension, as ISO 9660 9.3 asks.
                Tree::Primary => {
                    entries.sort_by(|a, b| primary_key(&a.id).cmp(&primary_key(&b.id)))
                }
                Tree::Joliet => entries.sort_by(|a, b| a.id.cmp(&b.id)),
            }
            entries
        })
        .collect()
}

fn primary_key(id: &[u8]) -> (&[u8], &[u8]) {
    let id = id.split(|&b| b == b';').next().unwrap_or(id);
    match id.iter().position(|&b| b == b'.') {
        Some(dot) => (&id[..dot], &id[dot + 1..]),
        None => (id, &[]),
    }
}

/// Directory numbers in path-table order: by level, then by parent number,
/// then by identifier, which is what a breadth-first walk over sorted
/// children gives.
fn path_table_order(children: &[Vec<Entry<'_>>]) -> Vec<usize> {
    let mut order = vec![0usize];
    let mut next = 0;
    while next < order.len() {
        let dir = order[next];
        for entry in &children[dir] {
            if let Child::Dir(sub) = entry.child {
                order.push(sub);
            }
        }
        next += 1;
    }
    order
}

// ---------------------------------------------------------------------------
// Encoding helpers.

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn utc(timestamp: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or_default()
}

/// The 7-byte date of a directory record.
fn record_date(timestamp: i64) -> [u8; 7] {
    use chrono::{Datelike, Timelike};
    let t = utc(timestamp);
    let years = (t.year() - 1900).clamp(0, 255) as u8;
    [
        years,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        0,
    ]
}

/// The 17-byte date of a volume descriptor.
fn volume_date(timestamp: Option<i64>) -> [u8; 17] {
    let mut b = [b'0'; 17];
    b[16] = 0;
    if let Some(ts) = timestamp {
        let text = utc(ts).format("%Y%m%d%H%M%S00").to_string();
        if text.len() == 16 {
            b[..16].copy_from_slice(text.as_bytes());
        }
    }
    b
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

fn susp_px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both32(mode));
    e.extend_from_slice(&both32(links));
    e.extend_from_slice(&both32(0)); // uid
    e.extend_from_slice(&both32(0)); // gid
    e
}

/// RRIP 1.09's `RR` entry, still read by some tools to find the others.
fn susp_rr(with_name: bool) -> Vec<u8> {
    // PX = bit 0, NM = bit 3.
    vec![b'R', b'R', 5, 1, if with_name { 0x09 } else { 0x01 }]
}

fn susp_nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', 0, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e[2] = e.len().min(255) as u8;
    e
}

fn susp_sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

fn susp_er() -> Vec<u8> {
    let mut e = vec![
        b'E',
        b'R',
        (8 + ER_ID.len() + ER_DESCRIPTOR.len() + ER_SOURCE.len()) as u8,
        1,
        ER_ID.len() as u8,
        ER_DESCRIPTOR.len() as u8,
        ER_SOURCE.len() as u8,
        1,
    ];
    e.extend_from_slice(ER_ID);
    e.extend_from_slice(ER_DESCRIPTOR);
    e.extend_from_slice(ER_SOURCE);
    e
}

const FLAG_DIR: u8 = 0x02;
const FLAG_MORE: u8 = 0x80;

fn dir_record(id: &[u8], extent: u32, size: u32, flags: u8, date: &[u8; 7], su: &[u8]) -> Vec<u8> {
    let pad = usize::from(id.len().is_multiple_of(2));
    let mut r = Vec::with_capacity(33 + id.len() + pad + su.len() + 1);
    r.push(0);
    r.push(0);
    r.extend_from_slice(&both32(extent));
    r.extend_from_slice(&both32(size));
    r.extend_from_slice(date);
    r.push(flags);
    r.push(0);
    r.push(0);
    r.extend_from_slice(&both16(1));
    r.push(id.len() as u8);
    r.extend_from_slice(id);
    r.resize(r.len() + pad, 0);
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len().min(255) as u8;
    r
}

fn sectors(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR)
}

// ---------------------------------------------------------------------------
// The plan.

struct TreePlan<'a> {
    tree: Tree,
    children: Vec<Vec<Entry<'a>>>,
    order: Vec<usize>,
    /// Per directory (flat index): first sector and size in bytes.
    extent: Vec<u32>,
    size: Vec<u32>,
    path_table_size: u32,
    l_table: u32,
    m_table: u32,
}

struct Image<'a> {
    volume_id: &'a str,
    timestamp: i64,
    date: [u8; 7],
    dirs: Vec<FlatDir<'a>>,
    files: Vec<&'a FileEntry>,
    /// Per file: its extents (first sector, length in bytes).
    file_extents: Vec<Vec<(u32, u32)>>,
    trees: [TreePlan<'a>; 2],
    total_sectors: u32,
    /// Where the last file ends, before the trailing padding.
    data_end: u64,
}

fn too_large() -> SeedError {
    SeedError::TooLarge
}

fn to_u32(v: u64) -> Result<u32, SeedError> {
    u32::try_from(v).map_err(|_| too_large())
}

impl<'a> Image<'a> {
    fn plan(root: &'a Dir, options: &Options<'a>) -> Result<Image<'a>, SeedError> {
        let (dirs, files) = flatten(root);
        let date = record_date(options.timestamp);
        let trees = [Tree::Primary, Tree::Joliet].map(|tree| {
            let children = named_children(&dirs, tree);
            let order = path_table_order(&children);
            TreePlan {
                tree,
                extent: vec![0; dirs.len()],
                size: vec![0; dirs.len()],
                children,
                order,
                path_table_size: 0,
                l_table: 0,
                m_table: 0,
            }
        });
        let mut image = Image {
            volume_id: options.volume_id,
            timestamp: options.timestamp,
            date,
            file_extents: files.iter().map(|f| extent_lengths(f.size)).collect(),
            dirs,
            files,
            trees,
            total_sectors: 0,
            data_end: 0,
        };

        let mut next: u64 = u64::from(SYSTEM_SECTORS) + 3;
        for t in 0..2 {
            let size = path_table(&image.trees[t], &image.trees[t].children, false).len() as u64;
            let plan = &mut image.trees[t];
            plan.path_table_size = to_u32(size)?;
            plan.l_table = to_u32(next)?;
            next += sectors(size).max(1);
            plan.m_table = to_u32(next)?;
            next += sectors(size).max(1);
        }
        // Record lengths do not depend on extents, so sizes come first.
        for t in 0..2 {
            for d in 0..image.dirs.len() {
                let size = layout(&image.dir_records(t, d)?).len() as u64;
                image.trees[t].size[d] = to_u32(size)?;
            }
            for i in 0..image.trees[t].order.len() {
                let d = image.trees[t].order[i];
                image.trees[t].extent[d] = to_u32(next)?;
                next += sectors(u64::from(image.trees[t].size[d]));
            }
        }
        for extents in &mut image.file_extents {
            for (start, len) in extents.iter_mut() {
                *start = to_u32(next)?;
                next += sectors(u64::from(*len));
            }
        }
        image.data_end = next;
        image.total_sectors = to_u32(next + TRAILING_PAD_SECTORS)?;
        Ok(image)
    }

    /// The directory records of directory `d` in tree `t`.
    fn dir_records(&self, t: usize, d: usize) -> Result<Vec<Vec<u8>>, SeedError> {
        let plan = &self.trees[t];
        let rock = plan.tree == Tree::Primary;
        let dir_mode = S_IFDIR | 0o755;
        let links = |d: usize| 2 + self.dirs[d].subdirs;
        let parent = self.dirs[d].parent;
        let mut records = Vec::new();

        let mut su = Vec::new();
        if rock {
            if d == 0 {
                su.extend(susp_sp());
            }
            su.extend(susp_rr(false));
            su.extend(susp_px(dir_mode, links(d)));
            if d == 0 {
                su.extend(susp_er());
            }
        }
        records.push(dir_record(
            &[0],
            plan.extent[d],
            plan.size[d],
            FLAG_DIR,
            &self.date,
            &su,
        ));
        let mut su = Vec::new();
        if rock {
            su.extend(susp_rr(false));
            su.extend(susp_px(dir_mode, links(parent)));
        }
        records.push(dir_record(
            &[1],
            plan.extent[parent],
            plan.size[parent],
            FLAG_DIR,
            &self.date,
            &su,
        ));

        for entry in &plan.children[d] {
            let (mode, nlink) = match entry.child {
                Child::Dir(sub) => (dir_mode, links(sub)),
                Child::File(f) => (S_IFREG | (self.files[f].mode & 0o7777), 1),
            };
            let mut su = Vec::new();
            if rock {
                su.extend(susp_rr(true));
                su.extend(susp_px(mode, nlink));
                su.extend(susp_nm(entry.name));
            }
            let extents: Vec<(u32, u32, u8)> = match entry.child {
                Child::Dir(sub) => vec![(plan.extent[sub], plan.size[sub], FLAG_DIR)],
                Child::File(f) => {
                    let all = &self.file_extents[f];
                    all.iter()
                        .enumerate()
                        .map(|(i, &(start, len))| {
                            let flag = if i + 1 < all.len() { FLAG_MORE } else { 0 };
                            (start, len, flag)
                        })
                        .collect()
                }
            };
            for (start, len, flags) in extents {
                let record = dir_record(&entry.id, start, len, flags, &self.date, &su);
                if record.len() > MAX_RECORD {
                    return Err(SeedError::NameTooLong {
                        name: entry.name.to_string(),
                    });
                }
                records.push(record);
            }
        }
        Ok(records)
    }

    fn write(&self, w: &mut impl Write, out: &Path) -> Result<(), SeedError> {
        let write_err = FileError::write(out);
        let mut pos: u64 = 0;
        let put = |w: &mut dyn Write, bytes: &[u8], pos: &mut u64| -> Result<(), SeedError> {
            w.write_all(bytes).map_err(write_err)?;
            *pos += bytes.len() as u64;
            Ok(())
        };
        let pad = |w: &mut dyn Write, pos: &mut u64| -> Result<(), SeedError> {
            let rest = (SECTOR - *pos % SECTOR) % SECTOR;
            io::copy(&mut io::repeat(0).take(rest), w).map_err(write_err)?;
            *pos += rest;
            Ok(())
        };

        put(
            w,
            &vec![0u8; (u64::from(SYSTEM_SECTORS) * SECTOR) as usize],
            &mut pos,
        )?;
        put(w, &self.descriptor(0), &mut pos)?;
        put(w, &self.descriptor(1), &mut pos)?;
        let mut terminator = vec![0u8; SECTOR as usize];
        terminator[0] = 255;
        terminator[1..6].copy_from_slice(b"CD001");
        terminator[6] = 1;
        put(w, &terminator, &mut pos)?;

        for plan in &self.trees {
            for big_endian in [false, true] {
                let table = path_table(plan, &plan.children, big_endian);
                put(w, &table, &mut pos)?;
                if table.is_empty() {
                    put(w, &[0], &mut pos)?;
                }
                pad(w, &mut pos)?;
            }
        }
        for t in 0..2 {
            for &d in &self.trees[t].order {
                debug_assert_eq!(pos, u64::from(self.trees[t].extent[d]) * SECTOR);
                put(w, &layout(&self.dir_records(t, d)?), &mut pos)?;
            }
        }
        for (f, file) in self.files.iter().enumerate() {
            if let Some(&(start, _)) = self.file_extents[f].first() {
                debug_assert!(file.size == 0 || pos == u64::from(start) * SECTOR);
            }
            let written = match &file.content {
                Content::Bytes(data) => {
                    w.write_all(data).map_err(write_err)?;
                    data.len() as u64
                }
                Content::Disk(path) => copy_exact(path, file.size, w, out)?,
            };
            pos += written;
            pad(w, &mut pos)?;
        }
        debug_assert_eq!(pos, self.data_end * SECTOR);
        let zeros = [0u8; SECTOR as usize];
        for _ in 0..TRAILING_PAD_SECTORS {
            put(w, &zeros, &mut pos)?;
        }
        debug_assert_eq!(pos, u64::from(self.total_sectors) * SECTOR);
        w.flush().map_err(write_err)?;
        Ok(())
    }

    /// The primary (`t == 0`) or Joliet (`t == 1`) volume descriptor.
    fn descriptor(&self, t: usize) -> Vec<u8> {
        let plan = &self.trees[t];
        let joliet = plan.tree == Tree::Joliet;
        let mut b = vec![0u8; SECTOR as usize];
        b[0] = if joliet { 2 } else { 1 };
        b[1..6].copy_from_slice(b"CD001");
        b[6] = 1;
        let text = |b: &mut [u8], s: &str| {
            if joliet {
                fill_ucs2(b, s)
            } else {
                fill_ascii(b, &s.to_ascii_uppercase())
            }
        };
        text(&mut b[8..40], "");
        let volume = if joliet {
            self.volume_id.to_string()
        } else {
            d_chars(self.volume_id, 32)
        };
        text(&mut b[40..72], &volume);
        b[80..88].copy_from_slice(&both32(self.total_sectors));
        if joliet {
            // UCS-2 level 3.
            b[88..91].copy_from_slice(b"%/E");
        }
        b[120..124].copy_from_slice(&both16(1));
        b[124..128].copy_from_slice(&both16(1));
        b[128..132].copy_from_slice(&both16(SECTOR as u16));
        b[132..140].copy_from_slice(&both32(plan.path_table_size));
        b[140..144].copy_from_slice(&plan.l_table.to_le_bytes());
        b[148..152].copy_from_slice(&plan.m_table.to_be_bytes());
        let root = dir_record(
            &[0],
            plan.extent[0],
            plan.size[0],
            FLAG_DIR,
            &self.date,
            &[],
        );
        b[156..190].copy_from_slice(&root);
        text(&mut b[190..318], "");
        text(&mut b[318..446], "");
        text(&mut b[446..574], "");
        text(&mut b[574..702], "KILN");
        text(&mut b[702..739], "");
        text(&mut b[739..776], "");
        text(&mut b[776..813], "");
        let made = volume_date(Some(self.timestamp));
        b[813..830].copy_from_slice(&made);
        b[830..847].copy_from_slice(&made);
        b[847..864].copy_from_slice(&volume_date(None));
        b[864..881].copy_from_slice(&volume_date(None));
        b[881] = 1;
        b
    }
}

fn fill_ascii(b: &mut [u8], s: &str) {
    b.fill(b' ');
    for (dst, src) in b.iter_mut().zip(s.bytes()) {
        *dst = src;
    }
}

fn fill_ucs2(b: &mut [u8], s: &str) {
    for pair in b.chunks_mut(2) {
        pair[0] = 0;
        if pair.len() == 2 {
            pair[1] = b' ';
        }
    }
    let units = joliet_units(s);
    for (pair, unit) in b.chunks_exact_mut(2).zip(units) {
        pair.copy_from_slice(&unit.to_be_bytes());
    }
}

/// Splits a file into extents no longer than the 32-bit size field allows;
/// an empty file still has one (empty) extent for its directory record.
fn extent_lengths(size: u64) -> Vec<(u32, u32)> {
    let mut extents = Vec::new();
    let mut rest = size;
    while rest > MAX_EXTENT {
        extents.push((0, MAX_EXTENT as u32));
        rest -= MAX_EXTENT;
    }
    extents.push((0, rest as u32));
    extents
}

/// Packs records into sectors; a record never straddles a sector boundary.
fn layout(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for r in records {
        let used = out.len() % SECTOR as usize;
        if used + r.len() > SECTOR as usize {
            out.resize(out.len() + SECTOR as usize - used, 0);
        }
        out.extend_from_slice(r);
    }
    let total = (sectors(out.len() as u64).max(1) * SECTOR) as usize;
    out.resize(total, 0);
    out
}

fn path_table(plan: &TreePlan<'_>, children: &[Vec<Entry<'_>>], big_endian: bool) -> Vec<u8> {
    // Path-table number (1-based) of every directory, and its identifier.
    let mut number = vec![0u16; children.len()];
    for (i, &d) in plan.order.iter().enumerate() {
        number[d] = (i + 1).min(u16::MAX as usize) as u16;
    }
    let mut ids: Vec<&[u8]> = vec![&[0]; children.len()];
    let mut parents = vec![0usize; children.len()];
    for (d, entries) in children.iter().enumerate() {
        for e in entries {
            if let Child::Dir(sub) = e.child {
                ids[sub] = &e.id;
                parents[sub] = d;
            }
        }
    }
    let mut t = Vec::new();
    for &d in &plan.order {
        let id = ids[d];
        let extent = plan.extent.get(d).copied().unwrap_or(0);
        let parent = number[parents[d]];
        t.push(id.len() as u8);
        t.push(0);
        if big_endian {
            t.extend_from_slice(&extent.to_be_bytes());
            t.extend_from_slice(&parent.to_be_bytes());
        } else {
            t.extend_from_slice(&extent.to_le_bytes());
            t.extend_from_slice(&parent.to_le_bytes());
        }
        t.extend_from_slice(id);
        if id.len() % 2 == 1 {
            t.push(0);
        }
    }
    t
}

/// Streams exactly `size` bytes of `path` into `w`.
fn copy_exact(path: &Path, size: u64, w: &mut impl Write, out: &Path) -> Result<u64, SeedError> {
    let read_err = FileError::read(path);
    let file = File::open(path).map_err(read_err)?;
    let mut reader = file.take(size);
    let mut buf = vec![0u8; 1 << 16];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e).into()),
        };
        w.write_all(&buf[..n]).map_err(FileError::write(out))?;
        copied += n as u64;
    }
    if copied != size {
        // The layout is already fixed: a shrunk file cannot be written.
        return Err(SeedError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_files_are_split_into_extents() {
        assert_eq!(extent_lengths(0), [(0, 0)]);
        assert_eq!(extent_lengths(MAX_EXTENT), [(0, MAX_EXTENT as u32)]);
        assert_eq!(
            extent_lengths(MAX_EXTENT * 2 + 5),
            [(0, MAX_EXTENT as u32), (0, MAX_EXTENT as u32), (0, 5)]
        );
    }

    #[test]
    fn multi_extent_records_are_flagged() {
        let mut root = Dir::default();
        root.add_file(
            &["huge.img"],
            FileEntry {
                content: Content::Bytes(Vec::new()),
                size: MAX_EXTENT + 10,
                mode: 0o644,
            },
        );
        let options = Options {
            volume_id: "x",
            timestamp: 0,
        };
        let image = Image::plan(&root, &options).unwrap();
        for t in 0..2 {
            let records = image.dir_records(t, 0).unwrap();
            assert_eq!(records.len(), 4, "., .. and two extents");
            assert_eq!(records[2][25], FLAG_MORE);
            assert_eq!(records[3][25], 0);
            let size = |r: &[u8]| u32::from_le_bytes([r[10], r[11], r[12], r[13]]);
            let start = |r: &[u8]| u32::from_le_bytes([r[2], r[3], r[4], r[5]]);
            assert_eq!(size(&records[2]), MAX_EXTENT as u32);
            assert_eq!(size(&records[3]), 10);
            assert_eq!(
                u64::from(start(&records[3]) - start(&records[2])) * SECTOR,
                MAX_EXTENT
            );
        }
    }

    #[test]
    fn primary_ids_are_unique_d_characters() {
        let mut used = HashSet::new();
        assert_eq!(primary_id("user-data", false, &mut used), b"USER_DAT.;1");
        assert_eq!(primary_id("user-date", false, &mut used), b"USER_DA1.;1");
        assert_eq!(primary_id("x.tar.gz", false, &mut used), b"X_TAR.GZ;1");
        assert_eq!(primary_id("my.dir", true, &mut used), b"MY_DIR");
    }
}
