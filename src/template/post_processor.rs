//! The `post-processors` section: a list whose entries are a type name, an
//! object, or an array of those (a chain).

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::decode::{Cx, Obj, json_type};
use super::paths;
use crate::plan::defaults;
use crate::plan::{
    ChecksumPostConfig, ChecksumType, CompressConfig, CompressionLevel, GceImportConfig,
    ManifestConfig, PostProcessorSpec,
};

/// One post-processor as written, before it is decoded for a build.
pub struct RawPp<'a> {
    /// Its place in the template (`post-processors[0]`).
    pub path: String,
    /// Its `type`.
    pub type_name: String,
    /// `None` when written as a bare type name.
    pub map: Option<&'a Map<String, Json>>,
}

/// Splits the section into chains, reporting malformed entries.
pub fn chains<'a>(cx: &Cx, section: &'a Json) -> Vec<Vec<RawPp<'a>>> {
    let Json::Array(entries) = section else {
        cx.problem(
            "post-processors",
            format!("expected an array, got {}", json_type(section)),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("post-processors[{i}]");
        match entry {
            Json::Array(items) => {
                let chain: Vec<RawPp<'a>> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(j, item)| single(cx, format!("{path}[{j}]"), item))
                    .collect();
                out.push(chain);
            }
            other => out.extend(single(cx, path, other).map(|pp| vec![pp])),
        }
    }
    out
}

fn single<'a>(cx: &Cx, path: String, v: &'a Json) -> Option<RawPp<'a>> {
    match v {
        Json::String(t) => Some(RawPp {
            path,
            type_name: t.clone(),
            map: None,
        }),
        Json::Object(map) => match map.get("type") {
            Some(Json::String(t)) => Some(RawPp {
                path,
                type_name: t.clone(),
                map: Some(map),
            }),
            Some(other) => {
                cx.problem(
                    format!("{path}.type"),
                    format!("expected a string, got {}", json_type(other)),
                );
                None
            }
            None => {
                cx.problem(format!("{path}.type"), "is required");
                None
            }
        },
        other => {
            cx.problem(
                path,
                format!(
                    "expected a post-processor type name, an object, or an array of those, got {}",
                    json_type(other)
                ),
            );
            None
        }
    }
}

/// Decodes one post-processor (`only`/`except` marked known by the caller).
pub fn decode(mut o: Obj<'_>, type_name: &str, cwd: &Path) -> Option<PostProcessorSpec> {
    o.allow(&["type"]);
    let spec = match type_name {
        "checksum" => checksum(&mut o).map(PostProcessorSpec::Checksum),
        "manifest" => manifest(&mut o, cwd).map(PostProcessorSpec::Manifest),
        "compress" => compress(&mut o).map(PostProcessorSpec::Compress),
        "googlecompute-import" => {
            gce_import(&mut o, cwd).map(|c| PostProcessorSpec::GceImport(Box::new(c)))
        }
        "vagrant" => super::vagrant::decode(&mut o, cwd).map(PostProcessorSpec::Vagrant),
        "shell-local" => {
            // Packer's shell-local keeps its input whatever the template
            // says: the key is accepted and has no effect.
            let _ = o.bool("keep_input_artifact");
            super::provisioner::shell_local(&mut o, cwd).map(PostProcessorSpec::ShellLocal)
        }
        other => {
            o.cx().problem(
                o.key_path("type"),
                super::unsupported::post_processor(other),
            );
            return None;
        }
    };
    o.finish();
    spec
}

fn checksum(o: &mut Obj<'_>) -> Option<ChecksumPostConfig> {
    let mut types = Vec::new();
    let mut ok = true;
    match o.string_list("checksum_types") {
        None => types.push(ChecksumType::Md5),
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                let ty = match t.as_str() {
                    "md5" => ChecksumType::Md5,
                    "sha1" => ChecksumType::Sha1,
                    "sha224" => ChecksumType::Sha224,
                    "sha256" => ChecksumType::Sha256,
                    "sha384" => ChecksumType::Sha384,
                    "sha512" => ChecksumType::Sha512,
                    other => {
                        o.cx().problem(
                            format!("{}[{i}]", o.key_path("checksum_types")),
                            format!(
                                "expected md5, sha1, sha224, sha256, sha384 or sha512, got {other:?}"
                            ),
                        );
                        ok = false;
                        continue;
                    }
                };
                if !types.contains(&ty) {
                    types.push(ty);
                }
            }
            if types.is_empty() && ok {
                types.push(ChecksumType::Md5);
            }
        }
    }
    let output = o
        .non_empty_string("output")
        .unwrap_or_else(|| defaults::CHECKSUM_OUTPUT.into());
    let keep_input_artifact = o.bool("keep_input_artifact").unwrap_or(false);
    ok.then_some(ChecksumPostConfig {
        checksum_types: types,
        output,
        keep_input_artifact,
    })
}

fn manifest(o: &mut Obj<'_>, cwd: &Path) -> Option<ManifestConfig> {
    let output = o
        .non_empty_string("output")
        .unwrap_or_else(|| defaults::MANIFEST_OUTPUT.into());
    Some(ManifestConfig {
        output: paths::resolve(cwd, &output),
        strip_path: o.bool("strip_path").unwrap_or(false),
        strip_time: o.bool("strip_time").unwrap_or(false),
        custom_data: o.string_map("custom_data").unwrap_or_default(),
        keep_input_artifact: o.bool("keep_input_artifact").unwrap_or(false),
    })
}

/// A level out of range is a problem reported by `int`; the build goes on
/// being checked with the default.
fn level(o: &mut Obj<'_>, key: &'static str) -> CompressionLevel {
    o.int(
        key,
        i64::from(CompressionLevel::MIN),
        i64::from(CompressionLevel::MAX),
    )
    .and_then(|n| u32::try_from(n).ok())
    .and_then(|n| CompressionLevel::try_from(n).ok())
    .unwrap_or_default()
}

/// kiln's compress writes the tarball GCE imports: one sparse `disk.raw`
/// in a gzip'd GNU tar, whatever the disk's format.
fn compress(o: &mut Obj<'_>) -> Option<CompressConfig> {
    let output = o
        .non_empty_string("output")
        .unwrap_or_else(|| defaults::COMPRESS_OUTPUT.into());
    let format = o.string("format");
    let level = level(o, "compression_level");
    let keep_input_artifact = o.bool("keep_input_artifact").unwrap_or(false);
    let tar_gz = match format.as_deref() {
        Some("tar.gz" | "tgz") => true,
        Some(other) => {
            o.cx().problem(
                o.key_path("format"),
                format!("expected tar.gz (the archive GCE imports), got {other:?}"),
            );
            return None;
        }
        None => output.ends_with(".tar.gz") || output.ends_with(".tgz"),
    };
    if !tar_gz {
        o.cx().problem(
            o.key_path("output"),
            format!("kiln writes tar.gz archives (GCE's disk.raw tarball): name it .tar.gz, got {output:?}"),
        );
        return None;
    }
    Some(CompressConfig {
        output,
        level,
        keep_input_artifact,
    })
}

fn gce_import(o: &mut Obj<'_>, cwd: &Path) -> Option<GceImportConfig> {
    let project_id = o.non_empty_string("project_id");
    let bucket = o.non_empty_string("bucket");
    let image_name = o.non_empty_string("image_name");
    for (key, value, what) in [
        (
            "project_id",
            &project_id,
            "the Google Cloud project to create the image in",
        ),
        (
            "bucket",
            &bucket,
            "the Cloud Storage bucket to upload the disk to",
        ),
        ("image_name", &image_name, "the name of the new image"),
    ] {
        if value.is_none() {
            o.missing(key, what);
        }
    }
    let account_file = o
        .non_empty_string("account_file")
        .map(|p| paths::resolve(cwd, &p));
    if let Some(path) = &account_file
        && !path.is_file()
    {
        o.cx().problem(
            o.key_path("account_file"),
            format!("file not found: {}", path.display()),
        );
    }
    let impersonate_service_account = o.non_empty_string("impersonate_service_account");
    let gcs_object_name = o
        .non_empty_string("gcs_object_name")
        .unwrap_or_else(|| format!("packer-import-{}.tar.gz", chrono::Utc::now().timestamp()));
    let image_family = o.non_empty_string("image_family");
    let image_description = o.non_empty_string("image_description");
    let image_labels = o.string_map("image_labels").unwrap_or_default();
    let image_guest_os_features = o.string_list("image_guest_os_features").unwrap_or_default();
    let image_storage_locations = o.string_list("image_storage_locations").unwrap_or_default();
    let image_architecture = o.non_empty_string("image_architecture");
    let keep_input_artifact = o.bool("keep_input_artifact").unwrap_or(false);
    let skip_clean = o.bool("skip_clean").unwrap_or(false);
    let image_create_timeout = o
        .duration("image_create_timeout")
        .unwrap_or(defaults::IMAGE_CREATE_TIMEOUT);
    let compression_level = level(o, "compression_level");
    let config = GceImportConfig {
        project_id: project_id?,
        account_file,
        impersonate_service_account,
        bucket: bucket?,
        gcs_object_name,
        image_name: image_name?,
        image_family,
        image_description,
        image_labels,
        image_guest_os_features,
        image_storage_locations,
        image_architecture,
        keep_input_artifact,
        skip_clean,
        image_create_timeout,
        compression_level,
    };
    // GCE's name and label rules, checked now rather than after an upload.
    if let Err(err) = crate::gcp::validate_image_request(&crate::gcp::ImageRequest::from(&config)) {
        for problem in err.problems {
            o.cx().problem(o.path.clone(), problem);
        }
    }
    Some(config)
}
