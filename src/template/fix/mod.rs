//! The fix pass: deprecated and renamed keys that Packer 1.6 rejects but
//! real templates still carry, rewritten in the raw JSON to the form kiln
//! (and Packer) decodes. `kiln fix` prints the result, as `packer fix`
//! does; the loader runs the same pass before decoding and turns each
//! deprecation it rewrote into a warning.
//!
//! One small function per fixer, run in the order of Packer 1.6's
//! `fix.FixerOrder` (only the fixers that concern templates kiln reads:
//! the builders' common keys, qemu, and the provisioners and
//! post-processors kiln runs, and the simple renames of builders kiln
//! skips, so `kiln fix` writes what `packer fix` writes), plus kiln's own
//! `disk-image-bool`.

mod builders;
mod others;
mod steps;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value as Json};

use super::show;

/// One rewrite the pass made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The fixer, by Packer's name for it (`iso-checksum-type-and-url`).
    pub fixer: &'static str,
    /// Where: `builders[0]`, `post-processors[1][0]`, `builders[2].ami_name`.
    pub path: String,
    /// What was deprecated and what it became (`iso_checksum_type is
    /// deprecated: write "iso_checksum": "sha256:…"`).
    pub message: String,
    /// Set when the old form is deprecated (Packer 1.6 rejects it), not a
    /// form Packer still reads (an integer `disk_size`): only those are
    /// worth a warning when a template is loaded.
    pub deprecated: bool,
    /// The builder the fix is in, by index: a builder kiln skips gets no
    /// warning for options it never reads.
    pub builder: Option<usize>,
}

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A fixer: rewrites what it knows in the template, recording each fix.
type Fixer = fn(&mut Map<String, Json>, &mut Vec<Fix>);

/// The fixers, in the order Packer 1.6 runs them.
const FIXERS: &[(&str, Fixer)] = &[
    ("iso-md5", builders::iso_md5),
    ("createtime", builders::create_time),
    ("pp-vagrant-override", steps::vagrant_override),
    ("parallels-headless", others::parallels_headless),
    ("parallels-deprecations", others::parallels_deprecations),
    ("sshkeypath", builders::ssh_key_path),
    ("sshdisableagent", builders::ssh_disable_agent),
    ("scaleway-access-key", builders::scaleway_access_key),
    ("manifest-filename", steps::manifest_filename),
    ("hyperv-vmxc-typo", others::hyperv_vmxc_typo),
    ("hyperv-cpu-and-ram", others::hyperv_cpu_and_ram),
    ("clean-image-name", builders::clean_image_name),
    ("qemu-disk-size", builders::qemu_disk_size),
    ("disk-image-bool", builders::disk_image_bool),
    ("galaxy-command", steps::galaxy_command),
    ("ssh-wait-timeout", builders::ssh_wait_timeout),
    (
        "iso-checksum-type-and-url",
        builders::iso_checksum_type_and_url,
    ),
    ("qemu-host-port", builders::qemu_host_port),
];

/// Rewrites `root` in place (a template that is not an object is left as
/// it is) and says what changed, in the order the fixers ran.
pub fn apply(root: &mut Json) -> Vec<Fix> {
    let mut fixes = Vec::new();
    if let Json::Object(map) = root {
        for (name, fixer) in FIXERS {
            let start = fixes.len();
            fixer(map, &mut fixes);
            for fix in &mut fixes[start..] {
                fix.fixer = name;
            }
        }
    }
    fixes
}

/// How much of a value a message quotes.
const SHOWN_VALUE_BYTES: usize = 200;

/// `"key": value` as the template would spell it, cut when long.
fn written(key: &str, value: &Json) -> String {
    let value = serde_json::to_string(value).unwrap_or_default();
    format!("{key:?}: {}", show::clip(&value, SHOWN_VALUE_BYTES))
}

/// A deprecation fix at `path` (the fixer's name is filled in by [`apply`]).
fn deprecated(path: String, builder: Option<usize>, message: String) -> Fix {
    Fix {
        fixer: "",
        path,
        message,
        deprecated: true,
        builder,
    }
}

/// A rewrite of a form Packer still reads: `kiln fix` makes it, loading
/// says nothing.
fn restyled(path: String, builder: Option<usize>, message: String) -> Fix {
    Fix {
        deprecated: false,
        ..deprecated(path, builder, message)
    }
}

/// The builder objects, with their index.
fn builders(root: &mut Map<String, Json>) -> impl Iterator<Item = (usize, &mut Map<String, Json>)> {
    root.get_mut("builders")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, b)| b.as_object_mut().map(|m| (i, m)))
}

/// A builder's `type`, when it is a string.
fn type_of(map: &Map<String, Json>) -> Option<&str> {
    map.get("type").and_then(Json::as_str)
}

/// The string at `key`, if there is one.
fn string_at<'m>(map: &'m Map<String, Json>, key: &str) -> Option<&'m str> {
    map.get(key).and_then(Json::as_str)
}

/// Puts `key: value` where `at` is, in place of `at`; any other `key` in
/// the object goes. Key order is kept, so the rewritten template reads as
/// the old one did. Without `at`, `key` is set where it is, or at the end.
fn put_at(map: &mut Map<String, Json>, at: &str, key: &str, value: Json) {
    let Some(mut index) = map.keys().position(|k| k == at) else {
        map.insert(key.to_string(), value);
        return;
    };
    if at != key {
        map.shift_remove(at);
        if let Some(existing) = map.keys().position(|k| k == key) {
            map.shift_remove(key);
            if existing < index {
                index -= 1;
            }
        }
    }
    map.shift_insert(index, key.to_string(), value);
}

/// Renames `old` to `new` where `old` stands, unless `new` is already set,
/// in which case `old` just goes. Returns the message for the fix, or
/// `None` when there is no `old` (or `keep` says its value is not one the
/// fixer moves, as Packer's type checks do).
fn rename(
    map: &mut Map<String, Json>,
    old: &str,
    new: &str,
    keep: impl Fn(&Json) -> bool,
) -> Option<String> {
    let value = map.get(old)?.clone();
    if map.contains_key(new) {
        map.shift_remove(old);
        return Some(format!(
            "{old} is deprecated and {new} is set: {old} was dropped"
        ));
    }
    if !keep(&value) {
        return None;
    }
    let message = format!("{old} is deprecated: write {}", written(new, &value));
    put_at(map, old, new, value);
    Some(message)
}

/// Moves `old`'s value to `new` where `old` stands, replacing any `new`
/// (Packer's fixers let the old key win). The message, or `None` without
/// `old`.
fn replace_key(map: &mut Map<String, Json>, old: &str, new: &str) -> Option<String> {
    let value = map.get(old)?.clone();
    let message = format!("{old} is deprecated: write {}", written(new, &value));
    put_at(map, old, new, value);
    Some(message)
}
