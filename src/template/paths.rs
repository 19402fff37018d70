//! Local paths as Packer resolves them: relative to the working directory.

use std::path::{Path, PathBuf};

/// Resolves `s` against `cwd` unless it is absolute. A trailing `/` is kept
/// because the file provisioner gives it meaning.
pub fn resolve(cwd: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        let mut joined = cwd.join(p).into_os_string();
        if s.ends_with('/') && !joined.to_string_lossy().ends_with('/') {
            joined.push("/");
        }
        PathBuf::from(joined)
    }
}

/// Why `s` is not a local source, if it is a URL kiln cannot fetch; otherwise
/// the local path it names (a `file://` prefix removed).
pub fn local_source(s: &str) -> Result<&str, String> {
    if let Some(rest) = s.strip_prefix("file://") {
        return Ok(rest);
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("://") || lower.contains("::") {
        return Err(format!(
            "remote sources are not supported yet; download the image and use a local path (got {s:?})"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving() {
        let cwd = Path::new("/work/dir");
        assert_eq!(resolve(cwd, "a/b.img"), PathBuf::from("/work/dir/a/b.img"));
        assert_eq!(resolve(cwd, "/abs"), PathBuf::from("/abs"));
        assert_eq!(resolve(cwd, "files/"), PathBuf::from("/work/dir/files/"));
        assert_eq!(local_source("file:///x/y.img"), Ok("/x/y.img"));
        assert_eq!(local_source("y.img"), Ok("y.img"));
        assert!(local_source("https://example.com/x.img").is_err());
    }
}
