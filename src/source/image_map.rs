//! The image map: which local disk stands in for a Compute Engine image
//! (`source_image`) or image family (`source_image_family`) when a
//! `googlecompute` build runs under QEMU.
//!
//! Three layers, the first that knows the image wins: `-source-image
//! NAME=URL` on the command line, the JSON file named by `KILN_IMAGE_MAP`,
//! and the built-in entries for the public Ubuntu and Debian images (their
//! upstream cloud images). A key is an image name, a family, or either
//! behind its project (`ubuntu-os-cloud/ubuntu-2204-lts`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::{Checksum, Location};

/// The disk an image maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Where the disk (or, for `gs://`, the exported image tarball) is.
    pub location: Location,
    /// Its checksum.
    pub checksum: Checksum,
    /// The project the image belongs to, as GCE would name it.
    pub project: Option<String>,
    /// Which layer mapped it: `-source-image`, the map file, or built-in.
    pub origin: Origin,
}

/// Where a mapping came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `-source-image NAME=URL`.
    CommandLine,
    /// The `KILN_IMAGE_MAP` file.
    File(PathBuf),
    /// kiln's own entries.
    BuiltIn,
}

/// What a `googlecompute` builder asks for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// `source_image`: wins over the family, as in Packer.
    pub image: Option<&'a str>,
    /// `source_image_family`.
    pub family: Option<&'a str>,
    /// `source_image_project_id`: the projects searched, in order.
    pub projects: &'a [String],
}

impl Wanted<'_> {
    /// The image name, else the family, and which it is.
    fn key(&self) -> Option<(&str, &'static str)> {
        match (self.image, self.family) {
            (Some(i), _) => Some((i, "image")),
            (None, Some(f)) => Some((f, "image family")),
            (None, None) => None,
        }
    }
}

/// Why a map file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageMapError {
    /// The file could not be read.
    #[error("image map {}: cannot read it", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or not an object of entries.
    #[error("image map {}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One entry is wrong.
    #[error("image map {}: entry {entry:?}: {message}", path.display())]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's key.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// A `-source-image` argument is wrong.
    #[error("-source-image {arg:?}: {message}")]
    Argument {
        /// The argument.
        arg: String,
        /// What is wrong.
        message: String,
    },
}

/// One user-given entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    location: Location,
    checksum: Checksum,
}

/// The user's layers; the built-ins are always behind them.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    command_line: BTreeMap<String, Entry>,
    file: Option<(PathBuf, BTreeMap<String, Entry>)>,
}

/// Parses a location (`url` of an entry) against a directory.
pub type LocationParser<'p> = &'p dyn Fn(&Path, &str) -> Result<Location, String>;
/// Parses a checksum (`checksum` of an entry) against a directory.
pub type ChecksumParser<'p> = &'p dyn Fn(&Path, &str) -> Result<Checksum, String>;

impl ImageMap {
    /// The map of `-source-image NAME=URL` arguments (no checksum: the
    /// user names the file) and the map file, if any. Locations are parsed
    /// by the caller's rules, relative paths against `cwd` for arguments
    /// and against the file's directory for file entries.
    pub fn load(
        args: &[(String, String)],
        file: Option<&Path>,
        cwd: &Path,
        location: LocationParser<'_>,
        checksum: ChecksumParser<'_>,
    ) -> Result<ImageMap, ImageMapError> {
        let mut command_line = BTreeMap::new();
        for (name, url) in args {
            let arg = format!("{name}={url}");
            if name.is_empty() {
                return Err(ImageMapError::Argument {
                    arg,
                    message: "expected NAME=URL, with an image or family name".into(),
                });
            }
            let location = location(cwd, url).map_err(|message| ImageMapError::Argument {
                arg: arg.clone(),
                message,
            })?;
            command_line.insert(
                name.clone(),
                Entry {
                    location,
                    checksum: Checksum::None,
                },
            );
        }
        let file = match file {
            Some(path) => Some((path.to_path_buf(), read_file(path, location, checksum)?)),
            None => None,
        };
        Ok(ImageMap { command_line, file })
    }

    /// The disk for `wanted`; the error says what was asked and how to map
    /// it.
    pub fn resolve(&self, wanted: &Wanted<'_>) -> Result<Mapped, String> {
        let Some((key, what)) = wanted.key() else {
            return Err("no source_image or source_image_family to map".into());
        };
        let keys: Vec<String> = wanted
            .projects
            .iter()
            .map(|p| format!("{p}/{key}"))
            .chain(std::iter::once(key.to_string()))
            .collect();
        let user = |map: &BTreeMap<String, Entry>, origin: Origin| {
            keys.iter().find_map(|k| {
                map.get(k).map(|e| Mapped {
                    location: e.location.clone(),
                    checksum: e.checksum.clone(),
                    project: k.split_once('/').map(|(p, _)| p.to_string()),
                    origin: origin.clone(),
                })
            })
        };
        if let Some(m) = user(&self.command_line, Origin::CommandLine) {
            return Ok(m);
        }
        if let Some((path, map)) = &self.file
            && let Some(m) = user(map, Origin::File(path.clone()))
        {
            return Ok(m);
        }
        if let Some(m) = built_in(key, wanted.projects) {
            return Ok(m);
        }
        Err(format!(
            "no local disk is mapped for the {what} {key:?}: map it with -source-image \
             {key}=<path or URL>, or with an entry {{\"{key}\": {{\"url\": \"...\", \
             \"checksum\": \"sha256:...\"}}}} in the JSON file named by KILN_IMAGE_MAP{}",
            if self.file.is_some() {
                ""
            } else {
                " (not set)"
            }
        ))
    }
}

/// Reads a map file: `{"<image or family>": {"url": ..., "checksum": ...}}`.
fn read_file(
    path: &Path,
    location: LocationParser<'_>,
    checksum: ChecksumParser<'_>,
) -> Result<BTreeMap<String, Entry>, ImageMapError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImageMapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text, location, checksum)
}

fn parse_file(
    path: &Path,
    text: &str,
    location: LocationParser<'_>,
    checksum: ChecksumParser<'_>,
) -> Result<BTreeMap<String, Entry>, ImageMapError> {
    let format = |message: String| ImageMapError::Format {
        path: path.to_path_buf(),
        message,
    };
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(entries) = root else {
        return Err(format(
            "expected a JSON object of {\"<image or family>\": {\"url\": ..., \"checksum\": ...}}"
                .into(),
        ));
    };
    // Relative paths in the file are relative to the file, wherever kiln
    // runs from.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let bad = |message: String| ImageMapError::Entry {
            path: path.to_path_buf(),
            entry: key.clone(),
            message,
        };
        if key.is_empty() {
            return Err(bad("the image or family name must not be empty".into()));
        }
        let serde_json::Value::Object(fields) = value else {
            return Err(bad(
                "expected an object {\"url\": ..., \"checksum\": ...}".into()
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "url" && *k != "checksum") {
            return Err(bad(format!(
                "unknown key {unknown:?}: an entry has url and checksum"
            )));
        }
        let string = |name: &str| match fields.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(bad(format!("{name} must be a non-empty string"))),
            None => Err(bad(format!(
                "{name} is required{}",
                if name == "checksum" {
                    " (\"sha256:<hex>\", \"file:<SHA256SUMS>\" or \"none\")"
                } else {
                    ""
                }
            ))),
        };
        let url = string("url")?;
        let sum = string("checksum")?;
        let entry = Entry {
            location: location(&dir, &url).map_err(|m| bad(format!("url: {m}")))?,
            checksum: checksum(&dir, &sum).map_err(|m| bad(format!("checksum: {m}")))?,
        };
        out.insert(key, entry);
    }
    Ok(out)
}

/// Ubuntu's releases kiln maps: GCE's version digits and the codename.
const UBUNTU: &[(&str, &str)] = &[
    ("1604", "xenial"),
    ("1804", "bionic"),
    ("2004", "focal"),
    ("2204", "jammy"),
    ("2404", "noble"),
];

/// Debian's releases kiln maps: the version and the codename.
const DEBIAN: &[(&str, &str)] = &[("10", "buster"), ("11", "bullseye"), ("12", "bookworm")];

const UBUNTU_PROJECT: &str = "ubuntu-os-cloud";
const DEBIAN_PROJECT: &str = "debian-cloud";

/// The built-in entry for `key`, if it is a public Ubuntu or Debian image
/// or family and `projects` (when given) include its project.
fn built_in(key: &str, projects: &[String]) -> Option<Mapped> {
    let (project, location, checksum) =
        ubuntu(key)
            .or_else(|| debian(key))
            .and_then(|(p, image, sums)| {
                let image = url::Url::parse(&image).ok()?;
                let sums = url::Url::parse(&sums).ok()?;
                Some((p, Location::Url(image), Checksum::File(Location::Url(sums))))
            })?;
    if !projects.is_empty() && !projects.iter().any(|p| p == project) {
        return None;
    }
    Some(Mapped {
        location,
        checksum,
        project: Some(project.to_string()),
        origin: Origin::BuiltIn,
    })
}

/// `ubuntu-2204-lts`, `ubuntu-minimal-2204-lts`, `ubuntu-2204-jammy-v20240319`
/// (optionally with `-amd64` before the date or after `lts`): the image
/// URL and its SHA256SUMS.
fn ubuntu(key: &str) -> Option<(&'static str, String, String)> {
    let (minimal, rest) = match key.strip_prefix("ubuntu-minimal-") {
        Some(rest) => (true, rest),
        None => (false, key.strip_prefix("ubuntu-")?),
    };
    let (digits, rest) = rest.split_once('-')?;
    let &(_, codename) = UBUNTU.iter().find(|(d, _)| *d == digits)?;
    let release = if rest == "lts" || rest == "lts-amd64" {
        "release".to_string()
    } else {
        let rest = rest.strip_prefix(codename)?.strip_prefix('-')?;
        let rest = rest.strip_prefix("amd64-").unwrap_or(rest);
        let date = rest.strip_prefix('v')?;
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("release-{date}")
    };
    let version = format!("{}.{}", &digits[..2], &digits[2..]);
    let (base, file) = if minimal {
        (
            format!("https://cloud-images.ubuntu.com/minimal/releases/{codename}/{release}"),
            format!("ubuntu-{version}-minimal-cloudimg-amd64.img"),
        )
    } else if digits == "1604" {
        (
            format!("https://cloud-images.ubuntu.com/releases/{codename}/{release}"),
            format!("ubuntu-{version}-server-cloudimg-amd64-disk1.img"),
        )
    } else {
        (
            format!("https://cloud-images.ubuntu.com/releases/{codename}/{release}"),
            format!("ubuntu-{version}-server-cloudimg-amd64.img"),
        )
    };
    Some((
        UBUNTU_PROJECT,
        format!("{base}/{file}"),
        format!("{base}/SHA256SUMS"),
    ))
}

/// `debian-12` (or `debian-12-bookworm`): the latest genericcloud image
/// and its SHA512SUMS.
fn debian(key: &str) -> Option<(&'static str, String, String)> {
    let rest = key.strip_prefix("debian-")?;
    let (version, codename) = DEBIAN.iter().find(|(v, c)| {
        rest == *v || rest.strip_prefix(v).and_then(|r| r.strip_prefix('-')) == Some(c)
    })?;
    let base = format!("https://cloud.debian.org/images/cloud/{codename}/latest");
    Some((
        DEBIAN_PROJECT,
        format!("{base}/debian-{version}-genericcloud-amd64.qcow2"),
        format!("{base}/SHA512SUMS"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(cwd: &Path, s: &str) -> Result<Location, String> {
        if s.starts_with("https://") {
            url::Url::parse(s)
                .map(Location::Url)
                .map_err(|e| e.to_string())
        } else if s.contains("://") {
            Err(format!("unsupported source {s:?}"))
        } else {
            Ok(Location::Path(cwd.join(s)))
        }
    }

    fn sum(_: &Path, s: &str) -> Result<Checksum, String> {
        match s {
            "none" => Ok(Checksum::None),
            _ => s
                .strip_prefix("sha256:")
                .map(|h| Checksum::Sha256(h.into()))
                .ok_or_else(|| format!("bad checksum {s:?}")),
        }
    }

    fn wanted<'a>(image: Option<&'a str>, family: Option<&'a str>) -> Wanted<'a> {
        Wanted {
            image,
            family,
            projects: &[],
        }
    }

    fn url_of(m: &Mapped) -> String {
        m.location.to_string()
    }

    fn sums_of(m: &Mapped) -> String {
        match &m.checksum {
            Checksum::File(l) => l.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn ubuntu_families_and_pinned_images() {
        let map = ImageMap::default();
        let m = map.resolve(&wanted(None, Some("ubuntu-2204-lts"))).unwrap();
        assert_eq!(
            url_of(&m),
            "https://cloud-images.ubuntu.com/releases/jammy/release/ubuntu-22.04-server-cloudimg-amd64.img"
        );
        assert_eq!(
            sums_of(&m),
            "https://cloud-images.ubuntu.com/releases/jammy/release/SHA256SUMS"
        );
        assert_eq!(m.project.as_deref(), Some("ubuntu-os-cloud"));
        assert_eq!(m.origin, Origin::BuiltIn);
        let m = map
            .resolve(&wanted(Some("ubuntu-2204-jammy-v20240319"), None))
            .unwrap();
        assert_eq!(
            url_of(&m),
            "https://cloud-images.ubuntu.com/releases/jammy/release-20240319/ubuntu-22.04-server-cloudimg-amd64.img"
        );
        let m = map
            .resolve(&wanted(Some("ubuntu-2404-noble-amd64-v20240423"), None))
            .unwrap();
        assert_eq!(
            url_of(&m),
            "https://cloud-images.ubuntu.com/releases/noble/release-20240423/ubuntu-24.04-server-cloudimg-amd64.img"
        );
        let m = map.resolve(&wanted(None, Some("ubuntu-1604-lts"))).unwrap();
        assert!(
            url_of(&m).ends_with("xenial/release/ubuntu-16.04-server-cloudimg-amd64-disk1.img")
        );
        let m = map
            .resolve(&wanted(None, Some("ubuntu-minimal-2004-lts")))
            .unwrap();
        assert_eq!(
            url_of(&m),
            "https://cloud-images.ubuntu.com/minimal/releases/focal/release/ubuntu-20.04-minimal-cloudimg-amd64.img"
        );
        for family in [
            "ubuntu-1804-lts",
            "ubuntu-2404-lts-amd64",
            "ubuntu-minimal-2404-lts-amd64",
        ] {
            assert!(map.resolve(&wanted(None, Some(family))).is_ok(), "{family}");
        }
        for unknown in [
            "ubuntu-2210-kinetic-v20230101",
            "ubuntu-2204-focal-v20240319",
            "ubuntu-2204-jammy-v2024",
            "ubuntu-2204",
        ] {
            assert!(
                map.resolve(&wanted(Some(unknown), None)).is_err(),
                "{unknown}"
            );
        }
    }

    #[test]
    fn debian_families() {
        let map = ImageMap::default();
        let m = map.resolve(&wanted(None, Some("debian-12"))).unwrap();
        assert_eq!(
            url_of(&m),
            "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
        );
        assert_eq!(
            sums_of(&m),
            "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
        );
        assert_eq!(m.project.as_deref(), Some("debian-cloud"));
        assert!(map.resolve(&wanted(None, Some("debian-10"))).is_ok());
        assert!(
            map.resolve(&wanted(None, Some("debian-11-bullseye")))
                .is_ok()
        );
        assert!(map.resolve(&wanted(None, Some("debian-9"))).is_err());
        assert!(
            map.resolve(&wanted(None, Some("debian-11-buster")))
                .is_err()
        );
    }

    #[test]
    fn built_ins_only_answer_for_their_project() {
        let map = ImageMap::default();
        let mine = ["my-project".to_string()];
        let w = Wanted {
            image: None,
            family: Some("debian-12"),
            projects: &mine,
        };
        assert!(map.resolve(&w).is_err());
        let theirs = ["my-project".to_string(), "debian-cloud".to_string()];
        let w = Wanted {
            projects: &theirs,
            ..w
        };
        assert!(map.resolve(&w).is_ok());
    }

    #[test]
    fn the_image_wins_over_the_family() {
        let args = [("fam".to_string(), "f.img".to_string())];
        let map = ImageMap::load(&args, None, Path::new("/cwd"), &loc, &sum).unwrap();
        assert!(map.resolve(&wanted(Some("img"), Some("fam"))).is_err());
        assert!(map.resolve(&wanted(None, Some("fam"))).is_ok());
    }

    #[test]
    fn command_line_wins_over_file_wins_over_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("map.json");
        std::fs::write(
            &file,
            r#"{
                "debian-12": {"url": "disks/deb.qcow2", "checksum": "sha256:ab"},
                "ubuntu-2204-lts": {"url": "https://mirror/u.img", "checksum": "none"},
                "corp/golden": {"url": "golden.qcow2", "checksum": "none"}
            }"#,
        )
        .unwrap();
        let args = [("ubuntu-2204-lts".to_string(), "local/u.img".to_string())];
        let map = ImageMap::load(&args, Some(&file), Path::new("/cwd"), &loc, &sum).unwrap();
        let m = map.resolve(&wanted(None, Some("ubuntu-2204-lts"))).unwrap();
        assert_eq!(m.location, Location::Path("/cwd/local/u.img".into()));
        assert_eq!(m.origin, Origin::CommandLine);
        assert_eq!(m.checksum, Checksum::None);
        let m = map.resolve(&wanted(None, Some("debian-12"))).unwrap();
        // Relative to the file, not to the working directory.
        assert_eq!(
            m.location,
            Location::Path(dir.path().join("disks/deb.qcow2"))
        );
        assert_eq!(m.checksum, Checksum::Sha256("ab".into()));
        assert_eq!(m.origin, Origin::File(file.clone()));
        let m = map.resolve(&wanted(None, Some("debian-11"))).unwrap();
        assert_eq!(m.origin, Origin::BuiltIn);
        // A project-qualified key answers for that project only.
        assert!(map.resolve(&wanted(Some("golden"), None)).is_err());
        let corp = ["corp".to_string()];
        let m = map
            .resolve(&Wanted {
                image: Some("golden"),
                family: None,
                projects: &corp,
            })
            .unwrap();
        assert_eq!(m.project.as_deref(), Some("corp"));
    }

    #[test]
    fn unmapped_images_say_how_to_map_them() {
        let e = ImageMap::default()
            .resolve(&wanted(Some("my-golden-v3"), None))
            .unwrap_err();
        assert_eq!(
            e,
            "no local disk is mapped for the image \"my-golden-v3\": map it with -source-image \
             my-golden-v3=<path or URL>, or with an entry {\"my-golden-v3\": {\"url\": \"...\", \
             \"checksum\": \"sha256:...\"}} in the JSON file named by KILN_IMAGE_MAP (not set)"
        );
        let e = ImageMap::default()
            .resolve(&wanted(None, Some("centos-7")))
            .unwrap_err();
        assert!(e.starts_with("no local disk is mapped for the image family \"centos-7\""));
    }

    #[test]
    fn bad_files_name_the_file_and_the_entry() {
        let p = Path::new("/maps/m.json");
        let parse = |text: &str| parse_file(p, text, &loc, &sum).unwrap_err().to_string();
        assert!(parse("{").starts_with("image map /maps/m.json: not valid JSON"));
        assert_eq!(
            parse("[]"),
            "image map /maps/m.json: expected a JSON object of {\"<image or family>\": \
             {\"url\": ..., \"checksum\": ...}}"
        );
        assert_eq!(
            parse(r#"{"a": {"url": "x"}}"#),
            "image map /maps/m.json: entry \"a\": checksum is required (\"sha256:<hex>\", \
             \"file:<SHA256SUMS>\" or \"none\")"
        );
        assert_eq!(
            parse(r#"{"a": {"checksum": "none"}}"#),
            "image map /maps/m.json: entry \"a\": url is required"
        );
        assert_eq!(
            parse(r#"{"a": {"url": "ftp://x", "checksum": "none"}}"#),
            "image map /maps/m.json: entry \"a\": url: unsupported source \"ftp://x\""
        );
        assert_eq!(
            parse(r#"{"a": {"url": "x", "checksum": "md4:1"}}"#),
            "image map /maps/m.json: entry \"a\": checksum: bad checksum \"md4:1\""
        );
        assert_eq!(
            parse(r#"{"a": {"url": "x", "checksum": "none", "sha": 1}}"#),
            "image map /maps/m.json: entry \"a\": unknown key \"sha\": an entry has url and checksum"
        );
        assert_eq!(
            parse(r#"{"a": "x"}"#),
            "image map /maps/m.json: entry \"a\": expected an object {\"url\": ..., \"checksum\": ...}"
        );
        let missing =
            ImageMap::load(&[], Some(Path::new("/nonexistent/m.json")), p, &loc, &sum).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "image map /nonexistent/m.json: cannot read it"
        );
        let arg = ImageMap::load(&[("".into(), "x".into())], None, Path::new("/"), &loc, &sum)
            .unwrap_err();
        assert_eq!(
            arg.to_string(),
            "-source-image \"=x\": expected NAME=URL, with an image or family name"
        );
    }
}
