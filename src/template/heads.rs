//! The first pass over `builders` and `provisioners`: names, types,
//! `only`/`except` and `override`, which every build's decoding needs.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value as Json};

use super::builder_types::{self, Kind};
use super::decode::{Cx, json_type};

/// The most builders one template may have. Every provisioner and
/// post-processor is decoded once per build, so the work grows with their
/// product; real templates have a handful of builders.
const MAX_BUILDERS: usize = 100;

/// One builder's name and type, and its object when kiln builds its type.
pub struct BuilderHead<'a> {
    /// Its place in the template (`builders[0]`).
    pub path: String,
    /// Its `name`, or its `type` when it has none.
    pub name: String,
    /// Its `type` (empty when that is wrong, already reported).
    pub builder_type: String,
    /// Its object when kiln builds its type. `None` when the type is
    /// wrong (already reported) or skipped: the build is named, so steps
    /// may refer to it, but not decoded.
    pub map: Option<&'a Map<String, Json>>,
    /// Why kiln skips it, for a Packer builder type kiln does not run.
    pub skipped: Option<String>,
}

/// Reads the `builders` section: names, types, duplicates; at least one
/// builder is required.
pub fn builder_heads<'a>(cx: &Cx, section: Option<&'a Json>) -> Vec<BuilderHead<'a>> {
    let items = match section {
        Some(Json::Array(items)) if !items.is_empty() => items,
        Some(Json::Array(_)) | None | Some(Json::Null) => {
            cx.problem("builders", "at least one builder is required");
            return Vec::new();
        }
        Some(other) => {
            cx.problem(
                "builders",
                format!("expected an array, got {}", json_type(other)),
            );
            return Vec::new();
        }
    };
    if items.len() > MAX_BUILDERS {
        cx.problem(
            "builders",
            format!(
                "{} builders: kiln builds at most {MAX_BUILDERS} from one template \
                 (only the first {MAX_BUILDERS} are checked)",
                items.len()
            ),
        );
    }
    let mut out: Vec<BuilderHead<'a>> = Vec::new();
    let mut names = HashSet::new();
    for (i, item) in items.iter().enumerate().take(MAX_BUILDERS) {
        let path = format!("builders[{i}]");
        let Json::Object(map) = item else {
            cx.problem(path, format!("expected an object, got {}", json_type(item)));
            continue;
        };
        let mut skipped = None;
        let builder_type = match map.get("type") {
            Some(Json::String(t)) => {
                match builder_types::kind(t) {
                    Kind::Buildable => {}
                    Kind::Skipped(reason) => skipped = Some(reason),
                    Kind::Unknown(suggestion) => {
                        let mut message = format!("unknown builder type {t:?}");
                        if let Some(best) = suggestion {
                            message.push_str(&format!(" (did you mean {best}?)"));
                        }
                        cx.problem(format!("{path}.type"), message);
                    }
                }
                t.as_str()
            }
            Some(other) => {
                cx.problem(
                    format!("{path}.type"),
                    format!("expected a string, got {}", json_type(other)),
                );
                ""
            }
            None => {
                cx.problem(format!("{path}.type"), "is required");
                ""
            }
        };
        let built = builder_types::kind(builder_type) == Kind::Buildable;
        let name = match map.get("name") {
            // Packer names a build after its builder type by default.
            None | Some(Json::Null) => map
                .get("type")
                .and_then(Json::as_str)
                .unwrap_or("qemu")
                .to_string(),
            Some(Json::String(n)) if !n.is_empty() => cx
                .render(&format!("{path}.name"), n)
                .unwrap_or_else(|| n.clone()),
            Some(other) => {
                cx.problem(
                    format!("{path}.name"),
                    format!("expected a non-empty string, got {}", json_type(other)),
                );
                continue;
            }
        };
        if !names.insert(name.clone()) {
            cx.problem(
                format!("{path}.name"),
                format!("duplicate build name {name:?}: give each builder a distinct name"),
            );
            continue;
        }
        out.push(BuilderHead {
            path,
            name,
            builder_type: builder_type.to_string(),
            map: built.then_some(map),
            skipped,
        });
    }
    out
}

/// The build names for a message: the first few of many.
fn list(builds: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = builds
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if builds.len() > SHOWN {
        out.push_str(&format!(" and {} more", builds.len() - SHOWN));
    }
    out
}

/// `only` / `except`.
#[derive(Debug, Default)]
pub struct Filter {
    only: Option<BTreeSet<String>>,
    except: BTreeSet<String>,
}

impl Filter {
    /// Whether the step applies to the build named `build`.
    pub fn applies(&self, build: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(build)) && !self.except.contains(build)
    }
}

/// Reads `only`/`except`, reporting bad types and unknown build names.
pub fn filter(cx: &Cx, path: &str, map: &Map<String, Json>, builds: &[String]) -> Filter {
    let names = |key: &str| -> Option<BTreeSet<String>> {
        let v = map.get(key).filter(|v| !v.is_null())?;
        let kpath = format!("{path}.{key}");
        let Json::Array(items) = v else {
            cx.problem(
                kpath,
                format!("expected an array of build names, got {}", json_type(v)),
            );
            return Some(BTreeSet::new());
        };
        let mut set = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Json::String(n) if builds.contains(n) => {
                    set.insert(n.clone());
                }
                Json::String(n) => cx.problem(
                    format!("{kpath}[{i}]"),
                    format!("no build is named {n:?} (builds: {})", list(builds)),
                ),
                other => cx.problem(
                    format!("{kpath}[{i}]"),
                    format!("expected a build name, got {}", json_type(other)),
                ),
            }
        }
        Some(set)
    };
    let only = names("only");
    let except = names("except").unwrap_or_default();
    if only.is_some() && !except.is_empty() {
        cx.problem(path.to_string(), "only one of only and except may be set");
    }
    Filter { only, except }
}

/// The same filter, problems already reported.
pub fn filter_quiet(map: &Map<String, Json>) -> Filter {
    let names = |key: &str| -> Option<BTreeSet<String>> {
        let Some(Json::Array(items)) = map.get(key) else {
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        )
    };
    Filter {
        only: names("only"),
        except: names("except").unwrap_or_default(),
    }
}

/// One provisioner as written, before it is decoded for each build.
pub struct ProvisionerHead<'a> {
    /// Its place in the template (`provisioners[0]`).
    pub path: String,
    /// Its position in the `provisioners` array.
    pub index: usize,
    /// Its `type`.
    pub type_name: String,
    /// Its object, without the per-build `override`.
    pub map: Map<String, Json>,
    /// Its `only` / `except`.
    pub filter: Filter,
    /// Its `override` objects, by build name.
    pub overrides: Vec<(String, &'a Map<String, Json>)>,
}

/// Reads the `provisioners` section: types, `only`/`except` and
/// `override`, checked against the build names.
pub fn provisioner_heads<'a>(
    cx: &Cx,
    section: Option<&'a Json>,
    builds: &[String],
) -> Vec<ProvisionerHead<'a>> {
    let items = match section {
        None | Some(Json::Null) => return Vec::new(),
        Some(Json::Array(items)) => items,
        Some(other) => {
            cx.problem(
                "provisioners",
                format!("expected an array, got {}", json_type(other)),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("provisioners[{i}]");
        let Json::Object(map) = item else {
            cx.problem(path, format!("expected an object, got {}", json_type(item)));
            continue;
        };
        let type_name = match map.get("type") {
            Some(Json::String(t)) => t.clone(),
            Some(other) => {
                cx.problem(
                    format!("{path}.type"),
                    format!("expected a string, got {}", json_type(other)),
                );
                continue;
            }
            None => {
                cx.problem(format!("{path}.type"), "is required");
                continue;
            }
        };
        let filter = filter(cx, &path, map, builds);
        let mut overrides = Vec::new();
        match map.get("override") {
            None | Some(Json::Null) => {}
            Some(Json::Object(over)) => {
                for (name, v) in over {
                    let opath = format!("{path}.override.{name}");
                    if !builds.contains(name) {
                        cx.problem(
                            opath,
                            format!("no build is named {name:?} (builds: {})", list(builds)),
                        );
                        continue;
                    }
                    match v {
                        Json::Object(m) => overrides.push((name.clone(), m)),
                        other => cx.problem(
                            opath,
                            format!("expected an object, got {}", json_type(other)),
                        ),
                    }
                }
            }
            Some(other) => cx.problem(
                format!("{path}.override"),
                format!(
                    "expected an object keyed by build name, got {}",
                    json_type(other)
                ),
            ),
        }
        out.push(ProvisionerHead {
            path,
            index: i,
            type_name,
            map: map.clone(),
            filter,
            overrides,
        });
    }
    out
}
