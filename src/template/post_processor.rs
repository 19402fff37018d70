//! The `post-processors` section: a list whose entries are a type name, an
//! object, or an array of those (a chain).

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::decode::{Cx, Obj, json_type};
use super::model::{ChecksumPostConfig, ChecksumType, ManifestConfig, PostProcessorSpec};
use super::paths;

pub const DEFAULT_CHECKSUM_OUTPUT: &str =
    "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum";

/// One post-processor as written, before it is decoded for a build.
pub struct RawPp<'a> {
    pub path: String,
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
        "compress" | "googlecompute-import" => {
            o.cx().problem(
                o.key_path("type"),
                format!("post-processor {type_name} is not supported yet"),
            );
            return None;
        }
        other => {
            o.cx().problem(
                o.key_path("type"),
                format!(
                    "post-processor {other} is not supported yet: kiln has checksum and manifest"
                ),
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
        .unwrap_or_else(|| DEFAULT_CHECKSUM_OUTPUT.into());
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
        .unwrap_or_else(|| "packer-manifest.json".into());
    Some(ManifestConfig {
        output: paths::resolve(cwd, &output),
        strip_path: o.bool("strip_path").unwrap_or(false),
        strip_time: o.bool("strip_time").unwrap_or(false),
        custom_data: o.string_map("custom_data").unwrap_or_default(),
        keep_input_artifact: o.bool("keep_input_artifact").unwrap_or(false),
    })
}
