//! Fixers of builders kiln skips: the simple renames of Packer 1.6's
//! fixers, so that `kiln fix` rewrites a multi-builder template as
//! `packer fix` does. Loading says nothing about them.

use serde_json::{Map, Value as Json};

use super::{Fix, builders, deprecated, replace_key, type_of};

/// Runs `fix` on each builder whose type is one of `types`.
fn each(
    root: &mut Map<String, Json>,
    fixes: &mut Vec<Fix>,
    types: &[&str],
    fix: impl Fn(&mut Map<String, Json>) -> Vec<String>,
) {
    for (i, b) in builders(root) {
        if !type_of(b).is_some_and(|t| types.contains(&t)) {
            continue;
        }
        for message in fix(b) {
            fixes.push(deprecated(format!("builders[{i}]"), Some(i), message));
        }
    }
}

const PARALLELS: &[&str] = &["parallels-iso", "parallels-pvm"];

/// Parallels builders: `headless` is gone (they always are).
pub(super) fn parallels_headless(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    each(root, fixes, PARALLELS, |b| {
        b.shift_remove("headless")
            .map(|_| "headless is deprecated for Parallels builders: it was dropped".to_string())
            .into_iter()
            .collect()
    });
}

/// Parallels builders: `parallels_tools_host_path` is gone,
/// `guest_os_distribution` → `guest_os_type`.
pub(super) fn parallels_deprecations(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    each(root, fixes, PARALLELS, |b| {
        let mut out = Vec::new();
        if b.shift_remove("parallels_tools_host_path").is_some() {
            out.push("parallels_tools_host_path is deprecated: it was dropped".to_string());
        }
        out.extend(replace_key(b, "guest_os_distribution", "guest_os_type"));
        out
    });
}

/// `hyperv-vmcx`: `clone_from_vmxc_path` → `clone_from_vmcx_path`.
pub(super) fn hyperv_vmxc_typo(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    each(root, fixes, &["hyperv-vmcx"], |b| {
        replace_key(b, "clone_from_vmxc_path", "clone_from_vmcx_path")
            .into_iter()
            .collect()
    });
}

/// Hyper-V builders: `cpu` → `cpus`, `ram_size` → `memory`.
pub(super) fn hyperv_cpu_and_ram(root: &mut Map<String, Json>, fixes: &mut Vec<Fix>) {
    each(root, fixes, &["hyperv-iso", "hyperv-vmcx"], |b| {
        let mut out = Vec::new();
        out.extend(replace_key(b, "cpu", "cpus"));
        out.extend(replace_key(b, "ram_size", "memory"));
        out
    });
}
