//! Post-processors that work on local files: `checksum`, `manifest` and
//! `compress`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::BuildContext;
use super::report::Artifact;
use crate::error::FileError;
use crate::export::{FormatPolicy, ImageFormat};
use crate::plan::render_late;
use crate::plan::{ChecksumPostConfig, ChecksumType, CompressConfig, ManifestConfig};

/// A post-processor's failure.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// An input or output file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The input artifact has no disk image.
    #[error("{post} needs a disk image as its input, got: {files}")]
    NotADisk {
        /// The post-processor.
        post: &'static str,
        /// The input's files.
        files: String,
    },
    /// Packaging the disk (`compress`) failed.
    #[error("packaging the disk")]
    Export(#[from] crate::export::ExportError),
    /// Making the Vagrant box failed.
    #[error("vagrant")]
    Vagrant(#[from] super::vagrant::VagrantError),
    /// The manifest file to append to is not a manifest.
    #[error("{} exists but is not a manifest", path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Digests already computed, by file and checksum type name: the disk's,
/// hashed while its smoke tests ran.
pub type Digests = std::collections::BTreeMap<(PathBuf, &'static str), String>;

/// The name Packer gives a checksum type (`{{.ChecksumType}}`).
pub fn type_name(kind: ChecksumType) -> &'static str {
    match kind {
        ChecksumType::Md5 => "md5",
        ChecksumType::Sha1 => "sha1",
        ChecksumType::Sha224 => "sha224",
        ChecksumType::Sha256 => "sha256",
        ChecksumType::Sha384 => "sha384",
        ChecksumType::Sha512 => "sha512",
    }
}

/// `path`'s digest of `kind`, lowercase hex.
pub fn hash_file(path: &Path, kind: ChecksumType) -> Result<String, PostError> {
    Ok(crate::source::hash_file(path, type_name(kind)).map_err(FileError::read(path))?)
}

/// Writes one checksum file per type (`<digest>\t<file name>` lines, as
/// Packer does, appended when the file exists) and returns an artifact made
/// of those files. A digest found in `known` is not computed again.
pub fn checksum(
    config: &ChecksumPostConfig,
    input: &Artifact,
    known: &Digests,
) -> Result<Artifact, PostError> {
    let mut outputs = Vec::new();
    for &kind in &config.checksum_types {
        let output = PathBuf::from(render_late(
            &config.output,
            &[
                ("BuildName", &input.build_name),
                ("BuilderType", &input.builder_type),
                ("ChecksumType", type_name(kind)),
            ],
        ));
        let write_err = FileError::write(&output);
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let mut lines = String::new();
        for file in &input.files {
            let digest = match known.get(&(file.clone(), type_name(kind))) {
                Some(digest) => digest.clone(),
                None => hash_file(file, kind)?,
            };
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            lines.push_str(&format!("{digest}\t{name}\n"));
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output)
            .map_err(write_err)?;
        out.write_all(lines.as_bytes()).map_err(write_err)?;
        outputs.push(output);
    }
    Ok(Artifact {
        build_name: input.build_name.clone(),
        builder_type: input.builder_type.clone(),
        builder_id: "packer.post-processor.checksum".to_string(),
        id: None,
        description: format!(
            "Created artifact from files: {}",
            outputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        files: outputs,
    })
}

/// Parallel builds append to the same manifest: one at a time.
static MANIFEST_LOCK: Mutex<()> = Mutex::new(());

/// Appends this build to the manifest file (Packer's layout), returning the
/// input artifact unchanged.
pub fn manifest(
    config: &ManifestConfig,
    input: &Artifact,
    run_uuid: &str,
) -> Result<Artifact, PostError> {
    let _guard = MANIFEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let path = &config.output;
    let mut document = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|source| {
            PostError::BadManifest {
                path: path.clone(),
                source,
            }
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => serde_json::json!({"builds": []}),
        Err(source) => return Err(FileError::read(path)(source).into()),
    };
    let files: Vec<serde_json::Value> = input
        .files
        .iter()
        .map(|file| {
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            let name = if config.strip_path {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                file.display().to_string()
            };
            serde_json::json!({"name": name, "size": size})
        })
        .collect();
    let build_time = if config.strip_time {
        0
    } else {
        chrono::Utc::now().timestamp()
    };
    // An artifact of no files (a published image) has `null` files, as
    // Packer's manifest writes its empty list.
    let files = if files.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(files)
    };
    let mut entry = serde_json::json!({
        "name": input.build_name,
        "builder_type": input.builder_type,
        "build_time": build_time,
        "files": files,
        "artifact_id": input.id.as_deref().unwrap_or("VM"),
        "packer_run_uuid": run_uuid,
    });
    if !config.custom_data.is_empty() {
        entry["custom_data"] = serde_json::to_value(&config.custom_data).unwrap_or_default();
    }
    if !document.get("builds").is_some_and(|b| b.is_array()) {
        document["builds"] = serde_json::json!([]);
    }
    if let Some(builds) = document["builds"].as_array_mut() {
        builds.push(entry);
    }
    document["last_run_uuid"] = serde_json::Value::String(run_uuid.to_string());
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    let write_err = FileError::write(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    std::fs::write(path, text).map_err(write_err)?;
    Ok(input.clone())
}

/// The disk an artifact carries: the builder's own artifact, not what an
/// earlier post-processor (checksum files, a tarball) made of it.
pub fn disk_of(post: &'static str, artifact: &Artifact) -> Result<PathBuf, PostError> {
    // An artifact of no files (a published image) is told by what it is.
    let not_a_disk = || PostError::NotADisk {
        post,
        files: if artifact.files.is_empty() {
            artifact.description.clone()
        } else {
            artifact
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    };
    if artifact.builder_id != super::report::QEMU_BUILDER_ID {
        return Err(not_a_disk());
    }
    artifact.files.first().cloned().ok_or_else(not_a_disk)
}

/// Where `compress` writes the tarball of `input` (relative to the
/// working directory).
pub fn compress_output(config: &CompressConfig, input: &Artifact) -> PathBuf {
    PathBuf::from(render_late(
        &config.output,
        &[
            ("BuildName", input.build_name.as_str()),
            ("BuilderType", input.builder_type.as_str()),
        ],
    ))
}

/// Packages the artifact's disk into `output` (its directory made first).
pub async fn package_disk_to(
    ctx: &BuildContext,
    config: &CompressConfig,
    input: &Artifact,
    format: ImageFormat,
    output: &Path,
) -> Result<(), PostError> {
    let disk = disk_of("compress", input)?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(FileError::write(parent))?;
    }
    // Packer's compress replaces an earlier output; the disk itself it
    // must not.
    super::package::package(
        ctx,
        &super::package::PackageRequest {
            disk,
            format: FormatPolicy::Known(format),
            output: output.to_path_buf(),
            level: config.level,
            force: true,
            sha256: false,
        },
    )
    .await?;
    Ok(())
}

/// `compress`: GCE's `disk.raw` tarball of the artifact's disk, written to
/// `output` (relative to the working directory). `packaged`: the tarball
/// made already (beside the smoke tests), moved into place.
pub async fn compress(
    ctx: &BuildContext,
    config: &CompressConfig,
    input: &Artifact,
    format: ImageFormat,
    packaged: Option<&Path>,
) -> Result<Artifact, PostError> {
    let output = compress_output(config, input);
    match packaged {
        Some(packaged) => {
            std::fs::rename(packaged, &output).map_err(FileError::write(&output))?;
        }
        None => package_disk_to(ctx, config, input, format, &output).await?,
    }
    Ok(Artifact {
        build_name: input.build_name.clone(),
        builder_type: input.builder_type.clone(),
        builder_id: "packer.post-processor.compress".to_string(),
        id: None,
        description: format!("compressed artifacts in: {}", output.display()),
        files: vec![output],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::ExportError;
    use crate::pipeline::package::{PackageRequest, package};
    use crate::plan::CompressionLevel;

    fn artifact(files: Vec<PathBuf>) -> Artifact {
        Artifact {
            build_name: "demo".into(),
            builder_type: "qemu".into(),
            builder_id: crate::pipeline::report::QEMU_BUILDER_ID.into(),
            id: None,
            files,
            description: String::new(),
        }
    }

    #[test]
    fn checksum_files_match_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::write(&disk, b"abc").unwrap();
        let config = ChecksumPostConfig {
            checksum_types: vec![ChecksumType::Md5, ChecksumType::Sha256],
            output: format!(
                "{}/{{{{.BuildName}}}}_{{{{.ChecksumType}}}}.sum",
                dir.path().display()
            ),
            keep_input_artifact: true,
        };
        let out = checksum(&config, &artifact(vec![disk]), &Digests::new()).unwrap();
        assert_eq!(out.files.len(), 2);
        let md5 = std::fs::read_to_string(dir.path().join("demo_md5.sum")).unwrap();
        assert_eq!(md5, "900150983cd24fb0d6963f7d28e17f72\tdisk.img\n");
        let sha = std::fs::read_to_string(dir.path().join("demo_sha256.sum")).unwrap();
        assert!(
            sha.starts_with("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\t")
        );
    }

    #[test]
    fn manifest_appends_builds() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::write(&disk, b"12345").unwrap();
        let config = ManifestConfig {
            output: dir.path().join("manifest.json"),
            strip_path: true,
            strip_time: false,
            custom_data: [("team".to_string(), "infra".to_string())].into(),
            keep_input_artifact: true,
        };
        manifest(&config, &artifact(vec![disk.clone()]), "run-1").unwrap();
        manifest(&config, &artifact(vec![disk]), "run-2").unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config.output).unwrap()).unwrap();
        assert_eq!(doc["builds"].as_array().unwrap().len(), 2);
        assert_eq!(doc["last_run_uuid"], "run-2");
        assert_eq!(doc["builds"][0]["files"][0]["name"], "disk.img");
        assert_eq!(doc["builds"][0]["files"][0]["size"], 5);
        assert_eq!(doc["builds"][1]["custom_data"]["team"], "infra");
    }

    /// A published image is recorded as Packer records its googlecompute
    /// artifact: the image's name as the id, no files.
    #[test]
    fn manifest_records_a_published_image_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = ManifestConfig {
            output: dir.path().join("manifest.json"),
            strip_path: false,
            strip_time: true,
            custom_data: Default::default(),
            keep_input_artifact: true,
        };
        let image = Artifact {
            build_name: "base".into(),
            builder_type: "googlecompute".into(),
            builder_id: crate::pipeline::report::GCE_BUILDER_ID.into(),
            id: Some("base-20260101".into()),
            files: Vec::new(),
            description: "A disk image was created: base-20260101".into(),
        };
        let out = manifest(&config, &image, "run-1").unwrap();
        assert_eq!(out.id(), "base-20260101");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config.output).unwrap()).unwrap();
        let build = &doc["builds"][0];
        assert_eq!(build["artifact_id"], "base-20260101");
        assert_eq!(build["builder_type"], "googlecompute");
        assert_eq!(build["files"], serde_json::Value::Null);
        // A disk-needing post-processor after it says what it got.
        let err = disk_of("compress", &image).unwrap_err().to_string();
        assert!(err.contains("compress needs a disk image"), "{err}");
        assert!(
            err.contains("A disk image was created: base-20260101"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_manifest_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        std::fs::write(&path, "not json").unwrap();
        let config = ManifestConfig {
            output: path.clone(),
            strip_path: false,
            strip_time: false,
            custom_data: Default::default(),
            keep_input_artifact: true,
        };
        assert!(matches!(
            manifest(&config, &artifact(vec![]), "r"),
            Err(PostError::BadManifest { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json");
    }

    struct Quiet;

    impl crate::pipeline::report::Reporter for Quiet {
        fn stage(&self, _: &str, _: crate::pipeline::report::Stage) {}
        fn say(&self, _: &str, _: &str) {}
        fn output(&self, _: &str, _: &str) {}
        fn error(&self, _: &str, _: &str) {}
        fn artifacts(&self, _: &str, _: &[Artifact]) {}
        fn progress(&self, _: &str, _: Option<&crate::pipeline::report::Progress>) {}
    }

    /// A qcow2 of incompressible data, read through qemu-nbd: long enough
    /// to be caught mid-way.
    fn busy_disk(dir: &Path) -> PathBuf {
        let raw = dir.join("busy.raw");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..(96usize << 20) / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::fs::write(&raw, data).unwrap();
        let disk = dir.join("busy.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&disk)
            .status()
            .expect("qemu-img is needed for this test");
        assert!(ok.success());
        disk
    }

    fn partial_tarball(dir: &Path) -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".tmp"))
    }

    /// Cancelled, or dropped as a cancelled build drops its stages, the
    /// packaging stops, and its temp file and qemu-nbd are gone once the
    /// cleanup kiln waits for at exit is over.
    #[tokio::test(flavor = "multi_thread")]
    async fn packaging_stops_and_cleans_up_when_cancelled_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = busy_disk(dir.path());
        let out = dir.path().join("out.tar.gz");
        for drop_it in [false, true] {
            let ctx = BuildContext {
                name: "t".into(),
                builder_type: "qemu".into(),
                reporter: std::sync::Arc::new(Quiet),
                cancel: tokio_util::sync::CancellationToken::new(),
            };
            let request = PackageRequest {
                disk: disk.clone(),
                format: FormatPolicy::Known(ImageFormat::Qcow2),
                output: out.clone(),
                level: CompressionLevel::try_from(9).unwrap(),
                force: false,
                sha256: false,
            };
            let mut packaging = Box::pin(package(&ctx, &request));
            // Until the tarball holds data: the packaging is under way.
            let started = async {
                loop {
                    if partial_tarball(dir.path())
                        .is_some_and(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
                    {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            };
            tokio::select! {
                result = &mut packaging => panic!("finished before the cancel: {result:?}"),
                () = started => {}
            }
            if drop_it {
                drop(packaging);
            } else {
                ctx.cancel.cancel();
                let err = packaging.await.unwrap_err();
                assert!(
                    matches!(err, PostError::Export(ExportError::Cancelled { .. })),
                    "{err:?}"
                );
            }
            assert!(crate::cleanup::wait(std::time::Duration::from_secs(600)));
            assert_eq!(partial_tarball(dir.path()), None);
            assert!(!out.exists());
            let marker = disk.to_string_lossy().into_owned();
            let running: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains("qemu-nbd") && c.contains(&marker))
                .collect();
            assert!(running.is_empty(), "{running:?}");
        }
    }

    #[test]
    fn only_the_builders_artifact_carries_a_disk() {
        let built = artifact(vec![PathBuf::from("out/disk.qcow2")]);
        assert_eq!(
            disk_of("compress", &built).unwrap(),
            PathBuf::from("out/disk.qcow2")
        );
        let sums = Artifact {
            builder_id: "packer.post-processor.checksum".into(),
            id: None,
            ..artifact(vec![PathBuf::from("out/disk.sha256")])
        };
        let err = disk_of("compress", &sums).unwrap_err();
        assert!(err.to_string().contains("out/disk.sha256"), "{err}");
    }
}
