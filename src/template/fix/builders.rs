//! Fixers of the `builders` section.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::{
    Fix, builders, deprecated, put_at, rename, replace_key, restyled, string_at, type_of, written,
};

/// `iso_md5` → `iso_checksum: "md5:…"`.
pub(super) fn iso_md5(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        let Some(md5) = string_at(b, "iso_md5").map(str::to_string) else {
            continue;
        };
        let value = Json::String(format!("md5:{md5}"));
        let message = format!(
            "iso_md5 is deprecated: write {}",
            written("iso_checksum", &value)
        );
        // Packer sets the type to md5, whatever it was.
        b.shift_remove("iso_checksum_type");
        put_at(b, "iso_md5", "iso_checksum", value);
        fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
    }
}

/// `{{.CreateTime}}` in the names Amazon builders derive from it →
/// `{{timestamp}}`.
pub(super) fn create_time(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    static CREATE_TIME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{\{\s*\.CreateTime\s*\}\}").expect("a valid pattern"));
    for (i, b) in builders(root) {
        for key in ["ami_name", "bundle_prefix", "snapshot_name"] {
            let Some(Json::String(text)) = b.get_mut(key) else {
                continue;
            };
            if CREATE_TIME.is_match(text) {
                *text = CREATE_TIME.replace_all(text, "{{timestamp}}").into_owned();
                fixes.push(deprecated(
                    format!("builders[{i}].{key}"),
                    Some(i),
                    "{{.CreateTime}} is deprecated: write {{timestamp}}".into(),
                ));
            }
        }
    }
}

/// `ssh_key_path` → `ssh_private_key_file`.
pub(super) fn ssh_key_path(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if let Some(message) = rename(b, "ssh_key_path", "ssh_private_key_file", Json::is_string) {
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}

/// `ssh_disable_agent` → `ssh_disable_agent_forwarding`.
pub(super) fn ssh_disable_agent(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if let Some(message) = rename(
            b,
            "ssh_disable_agent",
            "ssh_disable_agent_forwarding",
            Json::is_boolean,
        ) {
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}

/// `scaleway` builders: `access_key` → `organization_id`.
pub(super) fn scaleway_access_key(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if type_of(b) != Some("scaleway") {
            continue;
        }
        if let Some(message) = rename(b, "access_key", "organization_id", Json::is_string) {
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}

/// `clean_image_name` and `clean_ami_name` → `clean_resource_name`, in the
/// builders' strings and the strings of their objects (`image_labels`).
pub(super) fn clean_image_name(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    static OLD_NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"clean_(image|ami)_name").expect("a valid pattern"));
    let mut fix = |text: &mut String, path: String, i: usize| {
        if let Some(found) = OLD_NAME.find(text) {
            let message = format!(
                "{} is deprecated: write clean_resource_name",
                found.as_str()
            );
            *text = OLD_NAME
                .replace_all(text, "clean_resource_name")
                .into_owned();
            fixes.push(deprecated(path, Some(i), message));
        }
    };
    for (i, b) in builders(root) {
        for (key, value) in b.iter_mut() {
            match value {
                Json::String(text) => fix(text, format!("builders[{i}].{key}"), i),
                Json::Object(inner) => {
                    for (k, v) in inner.iter_mut() {
                        if let Json::String(text) = v {
                            fix(text, format!("builders[{i}].{key}.{k}"), i);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// `qemu` builders: a number `disk_size` (MiB) → `"<n>M"`.
pub(super) fn qemu_disk_size(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if type_of(b) != Some("qemu") {
            continue;
        }
        let Some(Json::Number(n)) = b.get("disk_size") else {
            continue;
        };
        // Packer truncates as Go's int() does.
        let mib = n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or_default();
        let value = Json::String(format!("{mib}M"));
        let message = format!(
            "a number disk_size is the older form: write {}",
            written("disk_size", &value)
        );
        b.insert("disk_size".into(), value);
        fixes.push(restyled(format!("builders[{i}]"), Some(i), message));
    }
}

/// `qemu` builders: `disk_image` written as a string (`"true"`) → the bool.
/// Packer reads both; the bool is what its documentation writes.
pub(super) fn disk_image_bool(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if type_of(b) != Some("qemu") {
            continue;
        }
        let Some(text) = string_at(b, "disk_image") else {
            continue;
        };
        // strconv.ParseBool's spellings: anything else (a `{{user}}`) is left.
        let value = match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => continue,
        };
        let message = format!(
            "disk_image written as a string: write {}",
            written("disk_image", &Json::Bool(value))
        );
        b.insert("disk_image".into(), Json::Bool(value));
        fixes.push(restyled(format!("builders[{i}]"), Some(i), message));
    }
}

/// `ssh_wait_timeout` → `ssh_timeout` (which wins when both are set).
pub(super) fn ssh_wait_timeout(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if let Some(message) = rename(b, "ssh_wait_timeout", "ssh_timeout", Json::is_string) {
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}

/// `iso_checksum_type` and `iso_checksum_url` folded into `iso_checksum`:
/// `"<type>:<digest>"`, `"none"`, or `"file:<url>"`.
pub(super) fn iso_checksum_type_and_url(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        let has_type = b.contains_key("iso_checksum_type");
        let has_url = b.contains_key("iso_checksum_url");
        if !has_type && !has_url {
            continue;
        }
        let kind = string_at(b, "iso_checksum_type").unwrap_or_default();
        let url = string_at(b, "iso_checksum_url").unwrap_or_default();
        let digest = string_at(b, "iso_checksum").unwrap_or_default();
        let checksum = if !url.is_empty() {
            Some(format!("file:{url}"))
        } else if kind.eq_ignore_ascii_case("none") {
            Some("none".to_string())
        } else if digest.is_empty() {
            None
        } else if kind.is_empty() || already_typed(digest, kind) {
            Some(digest.to_string())
        } else {
            Some(format!("{kind}:{digest}"))
        };
        let old = match (has_type, has_url) {
            (true, true) => "iso_checksum_type and iso_checksum_url are deprecated",
            (true, false) => "iso_checksum_type is deprecated",
            _ => "iso_checksum_url is deprecated",
        };
        let message = match &checksum {
            Some(c) => format!(
                "{old}: write {}",
                written("iso_checksum", &Json::String(c.clone()))
            ),
            None => format!(
                "{old} and there is no iso_checksum to go with it: it was dropped \
                 (write \"iso_checksum\": \"<type>:<digest>\")"
            ),
        };
        let at = if b.contains_key("iso_checksum") {
            "iso_checksum"
        } else if has_type {
            "iso_checksum_type"
        } else {
            "iso_checksum_url"
        };
        if let Some(c) = checksum {
            put_at(b, at, "iso_checksum", Json::String(c));
        }
        b.shift_remove("iso_checksum_type");
        b.shift_remove("iso_checksum_url");
        fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
    }
}

/// Whether `digest` already says its type (`sha256:…`, `file:…`, `none`):
/// prefixing it again would break it.
fn already_typed(digest: &str, kind: &str) -> bool {
    digest.eq_ignore_ascii_case("none")
        || digest
            .split_once(':')
            .is_some_and(|(prefix, _)| prefix.eq_ignore_ascii_case(kind) || prefix == "file")
}

/// `qemu` builders: `ssh_host_port_min`/`max` → `host_port_min`/`max`.
pub(super) fn qemu_host_port(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    for (i, b) in builders(root) {
        if type_of(b) != Some("qemu") {
            continue;
        }
        for (old, new) in [
            ("ssh_host_port_min", "host_port_min"),
            ("ssh_host_port_max", "host_port_max"),
        ] {
            // As Packer's fixer: the old key's value wins.
            let Some(message) = replace_key(b, old, new) else {
                continue;
            };
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}
