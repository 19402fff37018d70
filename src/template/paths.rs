//! Local paths as Packer resolves them: relative to the working directory.

use std::path::{Path, PathBuf};

use crate::plan::Location;

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

/// Where `s` (an `iso_url`, or a checksum list after `file:`) points: a
/// local file (a path, relative to `cwd`, or a `file:` URL) or an http(s)
/// URL; an error names any other scheme.
pub fn source_location(cwd: &Path, s: &str) -> Result<Location, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return url::Url::parse(s)
            .map(Location::Url)
            .map_err(|e| format!("not a valid URL ({e}): {s:?}"));
    }
    if let Some(rest) = strip_prefix_ignore_case(s, "file:") {
        // `file:///abs`, `file://./rel` (as go-getter reads it) and `file:rel`.
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let rest = if rest.starts_with("/./") || rest.starts_with("/../") {
            &rest[1..]
        } else {
            rest
        };
        if rest.is_empty() {
            return Err("must name a file after file:".into());
        }
        return Ok(Location::Path(resolve(cwd, rest)));
    }
    if lower.contains("://") || lower.contains("::") {
        return Err(format!(
            "unsupported source {s:?}: expected a local path, a file: URL, or an http(s) URL"
        ));
    }
    Ok(Location::Path(resolve(cwd, s)))
}

/// An image map `url` (or a `-source-image` one): what
/// [`source_location`] takes, or `gs://bucket/object`, an exported Compute
/// Engine image.
pub fn image_location(cwd: &Path, s: &str) -> Result<Location, String> {
    let Some(rest) = strip_prefix_ignore_case(s, "gs://") else {
        return source_location(cwd, s).map_err(|e| {
            if e.starts_with("unsupported source") {
                format!("{e}, or gs://bucket/object")
            } else {
                e
            }
        });
    };
    match rest.split_once('/') {
        Some((bucket, object)) if !bucket.is_empty() && !object.is_empty() => Ok(Location::Gcs {
            bucket: bucket.to_string(),
            object: object.to_string(),
        }),
        _ => Err(format!(
            "expected gs://bucket/object (an exported image tarball), got {s:?}"
        )),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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
    }

    #[test]
    fn source_locations() {
        let cwd = Path::new("/work/dir");
        let path = |p: &str| Ok(Location::Path(PathBuf::from(p)));
        assert_eq!(source_location(cwd, "file:///x/y.img"), path("/x/y.img"));
        assert_eq!(
            source_location(cwd, "file://./y.img"),
            path("/work/dir/./y.img")
        );
        assert_eq!(source_location(cwd, "file:y.img"), path("/work/dir/y.img"));
        assert_eq!(source_location(cwd, "y.img"), path("/work/dir/y.img"));
        assert_eq!(
            source_location(cwd, "https://example.com/x.img"),
            Ok(Location::Url(
                url::Url::parse("https://example.com/x.img").unwrap()
            ))
        );
        assert!(
            source_location(cwd, "ftp://example.com/x.img")
                .unwrap_err()
                .contains("unsupported source")
        );
        assert!(source_location(cwd, "git::https://x/y").is_err());
        assert!(source_location(cwd, "").is_err());
        assert!(source_location(cwd, "https://exa mple.com/").is_err());
    }

    #[test]
    fn image_locations() {
        let cwd = Path::new("/work/dir");
        assert_eq!(
            image_location(cwd, "gs://images/golden/v3.tar.gz"),
            Ok(Location::Gcs {
                bucket: "images".into(),
                object: "golden/v3.tar.gz".into()
            })
        );
        assert_eq!(
            image_location(cwd, "g.qcow2"),
            Ok(Location::Path("/work/dir/g.qcow2".into()))
        );
        assert!(image_location(cwd, "gs://bucket").is_err());
        assert!(image_location(cwd, "gs:///object").is_err());
        assert_eq!(
            image_location(cwd, "ftp://x/y"),
            Err(
                "unsupported source \"ftp://x/y\": expected a local path, a file: URL, or an \
                 http(s) URL, or gs://bucket/object"
                    .into()
            )
        );
    }
}
