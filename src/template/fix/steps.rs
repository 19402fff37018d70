//! Fixers of the `provisioners` and `post-processors` sections.

use serde_json::{Map, Value as Json};

use super::{Fix, deprecated, put_at, rename, type_of, written};

/// Each post-processor object with its place: entries of the section and
/// of its chains (bare type names have nothing to fix).
fn post_processors(
    root: &mut Map<String, Json>,
) -> impl Iterator<Item = (String, &mut Map<String, Json>)> {
    root.get_mut("post-processors")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, entry)| -> Vec<(String, &mut Map<String, Json>)> {
            match entry {
                Json::Object(map) => vec![(format!("post-processors[{i}]"), map)],
                Json::Array(chain) => chain
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(j, pp)| {
                        pp.as_object_mut()
                            .map(|map| (format!("post-processors[{i}][{j}]"), map))
                    })
                    .collect(),
                _ => Vec::new(),
            }
        })
}

/// `manifest` post-processors: `filename` → `output`.
pub(super) fn manifest_filename(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (path, pp) in post_processors(root) {
        if type_of(pp) != Some("manifest") {
            continue;
        }
        let Some(value) = pp.get("filename").filter(|v| v.is_string()).cloned() else {
            continue;
        };
        // As Packer's fixer: `filename` wins over an `output` also set.
        let message = format!(
            "filename is deprecated: write {}",
            written("output", &value)
        );
        put_at(pp, "filename", "output", value);
        fixes.push(deprecated(path, None, message));
    }
}

/// `vagrant` post-processors: provider options at the top level (Packer
/// before 0.5) → under `override`.
pub(super) fn vagrant_override(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    const PROVIDERS: &[&str] = &["aws", "digitalocean", "virtualbox", "vmware"];
    for (path, pp) in post_processors(root) {
        if type_of(pp) != Some("vagrant") {
            continue;
        }
        let moved: Vec<&str> = PROVIDERS
            .iter()
            .copied()
            .filter(|p| pp.contains_key(*p))
            .collect();
        let Some(first) = moved.first() else {
            continue;
        };
        // Merged into an `override` already there (Packer replaces it).
        let mut overrides = match pp.get("override") {
            Some(Json::Object(existing)) => existing.clone(),
            _ => Map::new(),
        };
        for provider in &moved {
            if let Some(options) = pp.get(*provider) {
                overrides.insert((*provider).to_string(), options.clone());
            }
        }
        let at = if pp.contains_key("override") {
            "override"
        } else {
            first
        };
        put_at(pp, at, "override", Json::Object(overrides));
        for provider in &moved {
            pp.shift_remove(*provider);
        }
        fixes.push(deprecated(
            path,
            None,
            format!(
                "provider options at the top level ({}) are deprecated: write them under \"override\"",
                moved.join(", ")
            ),
        ));
    }
}

/// `ansible-local` provisioners: `galaxycommand` → `galaxy_command`.
pub(super) fn galaxy_command(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    let provisioners = root
        .get_mut("provisioners")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| p.as_object_mut().map(|m| (i, m)));
    for (i, p) in provisioners {
        if type_of(p) != Some("ansible-local") {
            continue;
        }
        if let Some(message) = rename(p, "galaxycommand", "galaxy_command", Json::is_string) {
            fixes.push(deprecated(format!("provisioners[{i}]"), None, message));
        }
    }
}
