//! The template's extra CD, with Packer's `cd_files`/`cd_content`/`cd_label`
//! meaning: a file lands at the CD root under its own name; a directory
//! lands at the root with its tree, or only its contents when written with
//! a trailing slash (or when a glob like `dir/*` picks them); `cd_content`
//! keys are paths on the CD and win over files of the same path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::SeedError;
use super::iso9660::{self, Content, Dir, FileEntry};
use crate::error::FileError;

/// Packer's label when the template sets none.
pub const DEFAULT_LABEL: &str = "packer";
/// Symlinked directories are followed (Packer copies link targets), so a
/// link loop must end somewhere.
const MAX_DEPTH: usize = 64;

/// Writes the template's CD to `out`, labelled `label` or Packer's
/// default, dated `timestamp`.
pub fn write(
    files: &[PathBuf],
    content: &BTreeMap<String, String>,
    label: Option<&str>,
    out: &Path,
    timestamp: i64,
) -> Result<(), SeedError> {
    let root = tree(files, content)?;
    let label = label.filter(|l| !l.is_empty()).unwrap_or(DEFAULT_LABEL);
    iso9660::write(
        &root,
        &iso9660::Options {
            volume_id: label,
            timestamp,
        },
        out,
    )
}

/// The CD's tree, before anything is written.
pub fn tree(files: &[PathBuf], content: &BTreeMap<String, String>) -> Result<Dir, SeedError> {
    let mut root = Dir::default();
    for path in files {
        let text = path.to_string_lossy();
        if text.contains(['*', '?', '[']) {
            let matches = glob(&text)?;
            if matches.is_empty() {
                tracing::warn!(pattern = %text, "cd_files pattern matches nothing");
            }
            for found in matches {
                add_path(&mut root, &found, false)?;
            }
        } else {
            let contents_only = text.ends_with('/')
                || matches!(
                    path.components().next_back(),
                    None | Some(Component::CurDir | Component::ParentDir | Component::RootDir)
                );
            add_path(&mut root, path, contents_only)?;
        }
    }
    for (key, text) in content {
        let parts = content_path(key)?;
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        root.add_file(&parts, FileEntry::bytes(text.as_bytes()));
    }
    Ok(root)
}

fn add_path(root: &mut Dir, path: &Path, contents_only: bool) -> Result<(), SeedError> {
    let meta = fs::metadata(path).map_err(|source| missing_or_read(path, source))?;
    if meta.is_dir() {
        let dir = if contents_only {
            root
        } else {
            root.dir_mut(&[&file_name(path)])
        };
        add_dir(dir, path, 0)
    } else {
        root.add_file(&[&file_name(path)], disk_file(path, &meta));
        Ok(())
    }
}

fn add_dir(dir: &mut Dir, path: &Path, depth: usize) -> Result<(), SeedError> {
    if depth > MAX_DEPTH {
        return Err(SeedError::TooDeep {
            path: path.to_path_buf(),
        });
    }
    let read_err = FileError::read(path);
    for entry in fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let child = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = fs::metadata(&child).map_err(FileError::read(&child))?;
        if meta.is_dir() {
            add_dir(dir.dir_mut(&[&name]), &child, depth + 1)?;
        } else {
            dir.add_file(&[&name], disk_file(&child, &meta));
        }
    }
    Ok(())
}

fn disk_file(path: &Path, meta: &fs::Metadata) -> FileEntry {
    FileEntry {
        content: Content::Disk(path.to_path_buf()),
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
    }
}

fn file_name(path: &Path) -> String {
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        // `..`-like paths have no name of their own: use the real one.
        None => fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "_".to_string()),
    }
}

fn missing_or_read(path: &Path, source: std::io::Error) -> SeedError {
    if source.kind() == std::io::ErrorKind::NotFound {
        SeedError::Missing {
            path: path.to_path_buf(),
        }
    } else {
        FileError::read(path)(source).into()
    }
}

/// A content key as path components, or the error naming the key.
fn content_path(key: &str) -> Result<Vec<String>, SeedError> {
    super::content_path(key).ok_or_else(|| SeedError::ContentPath {
        path: key.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Globs, as Go's filepath.Glob reads them: `*`, `?`, `[...]` (with `^`
// negation and ranges) and `\` escapes, within one path component; results
// sorted per directory.

/// The paths that match `pattern`.
pub fn glob(pattern: &str) -> Result<Vec<PathBuf>, SeedError> {
    let bad = |reason: &str| SeedError::Pattern {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    };
    let mut current: Vec<PathBuf> = vec![if pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let chars: Vec<char> = part.chars().collect();
        // Checked up front so a bad pattern fails even without candidates.
        matches(&chars, &[]).map_err(bad)?;
        let mut next = Vec::new();
        if !part.contains(['*', '?', '[', '\\']) {
            for base in &current {
                let joined = base.join(part);
                if fs::symlink_metadata(&joined).is_ok() {
                    next.push(joined);
                }
            }
        } else {
            for base in &current {
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                };
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let name_chars: Vec<char> = name.chars().collect();
                    if matches(&chars, &name_chars).map_err(bad)? {
                        next.push(base.join(name));
                    }
                }
            }
        }
        current = next;
    }
    Ok(current)
}

fn matches(pattern: &[char], name: &[char]) -> Result<bool, &'static str> {
    match pattern.split_first() {
        None => Ok(name.is_empty()),
        Some(('*', rest)) => {
            // Validate the rest of the pattern even when no name is left.
            let mut any = false;
            for skip in 0..=name.len() {
                if matches(rest, &name[skip..])? {
                    any = true;
                    break;
                }
            }
            Ok(any)
        }
        Some(('?', rest)) => match name.split_first() {
            Some((_, name_rest)) => matches(rest, name_rest),
            None => matches(rest, &[]).map(|_| false),
        },
        Some(('[', rest)) => {
            let (set, after) = class(rest)?;
            match name.split_first() {
                Some((&c, name_rest)) if set.contains(c) => matches(after, name_rest),
                _ => matches(after, &[]).map(|_| false),
            }
        }
        Some(('\\', rest)) => {
            let (&literal, rest) = rest.split_first().ok_or("trailing backslash")?;
            match name.split_first() {
                Some((&c, name_rest)) if c == literal => matches(rest, name_rest),
                _ => matches(rest, &[]).map(|_| false),
            }
        }
        Some((&p, rest)) => match name.split_first() {
            Some((&c, name_rest)) if c == p => matches(rest, name_rest),
            _ => matches(rest, &[]).map(|_| false),
        },
    }
}

struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parses a `[...]` class (after the `[`); returns it and the rest.
fn class(p: &[char]) -> Result<(Class, &[char]), &'static str> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = p.get(i) else {
            return Err("unterminated [");
        };
        if c == ']' && !first {
            return Ok((Class { negated, ranges }, &p[i + 1..]));
        }
        first = false;
        let one = |i: &mut usize| -> Result<char, &'static str> {
            let c = *p.get(*i).ok_or("unterminated [")?;
            *i += 1;
            if c == '\\' {
                let e = *p.get(*i).ok_or("unterminated [")?;
                *i += 1;
                return Ok(e);
            }
            Ok(c)
        };
        let lo = one(&mut i)?;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
            i += 1;
            one(&mut i)?
        } else {
            lo
        };
        if lo > hi {
            return Err("bad range in [");
        }
        ranges.push((lo, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        matches(&p, &n).unwrap()
    }

    #[test]
    fn glob_matching_is_go_like() {
        assert!(m("*", "user-data"));
        assert!(m("*", ".hidden"));
        assert!(m("user-*", "user-data"));
        assert!(!m("user-*", "meta-data"));
        assert!(m("?eta-data", "meta-data"));
        assert!(!m("?", ""));
        assert!(m("[mu]*", "meta-data"));
        assert!(m("[a-z]x", "qx"));
        assert!(!m("[^a-z]x", "qx"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(matches(&['['], &['a']).is_err());
    }

    #[test]
    fn content_keys_are_cd_paths() {
        assert_eq!(content_path("/a/./b").unwrap(), ["a", "b"]);
        assert_eq!(content_path("a/../b").unwrap(), ["b"]);
        assert!(content_path("../b").is_err());
        assert!(content_path("/").is_err());
    }
}
