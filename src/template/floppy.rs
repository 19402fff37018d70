//! The qemu builder's floppy options: `floppy_files`, `floppy_dirs`,
//! `floppy_content` and `floppy_label`.

use std::path::{Path, PathBuf};

use super::decode::Obj;
use super::paths;
use crate::plan::FloppyConfig;

/// The longest FAT volume label, in bytes.
const MAX_LABEL: usize = 11;

/// Reads the floppy options. As in Packer, a path without glob characters
/// must exist now; globs are expanded when the floppy is made.
pub(super) fn decode(o: &mut Obj<'_>, cwd: &Path) -> FloppyConfig {
    let files = paths_of(o, "floppy_files", cwd);
    let dirs = paths_of(o, "floppy_dirs", cwd);
    let content = o.string_map("floppy_content").unwrap_or_default();
    let label = o.non_empty_string("floppy_label");
    if let Some(label) = &label
        && let Err(reason) = check_label(label)
    {
        o.cx().problem(o.key_path("floppy_label"), reason);
    }
    FloppyConfig {
        files,
        dirs,
        content,
        label,
    }
}

fn paths_of(o: &mut Obj<'_>, key: &'static str, cwd: &Path) -> Vec<PathBuf> {
    let Some(list) = o.string_list(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let path = paths::resolve(cwd, entry);
        if !entry.contains(['*', '?', '[']) && !path.exists() {
            o.cx().problem(
                format!("{}[{i}]", o.key_path(key)),
                format!("file not found: {}", path.display()),
            );
        }
        out.push(path);
    }
    out
}

/// A FAT label is at most 11 bytes of printable ASCII.
fn check_label(label: &str) -> Result<(), String> {
    if label.len() > MAX_LABEL {
        return Err(format!(
            "a FAT volume label is at most {MAX_LABEL} characters, got {label:?}"
        ));
    }
    if !label.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(format!(
            "a FAT volume label is printable ASCII, got {label:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::Plan;
    use crate::template::{Overrides, TemplateError, load};

    fn load_builder(
        dir: &std::path::Path,
        extra: serde_json::Value,
    ) -> Result<Plan, TemplateError> {
        let mut builder = json!({
            "type": "qemu",
            "iso_url": "/images/base.qcow2",
            "iso_checksum": "none",
            "ssh_username": "root",
        });
        for (key, value) in extra.as_object().unwrap() {
            builder[key] = value.clone();
        }
        let path = dir.join("template.json");
        std::fs::write(&path, json!({"builders": [builder]}).to_string()).unwrap();
        load(&path, &Overrides::default())
    }

    #[test]
    fn floppy_options_are_read_with_packers_label() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Autounattend.xml");
        std::fs::write(&file, "<unattend/>").unwrap();
        let plan = load_builder(
            dir.path(),
            json!({
                "floppy_files": [file, format!("{}/*.ps1", dir.path().display())],
                "floppy_dirs": [dir.path()],
                "floppy_content": {"meta/a.txt": "a"},
            }),
        )
        .unwrap();
        let floppy = &plan.builds[0].qemu.floppy;
        assert_eq!(floppy.files[0], file);
        assert_eq!(floppy.dirs, [dir.path()]);
        assert_eq!(floppy.content["meta/a.txt"], "a");
        assert_eq!(floppy.label, None);
    }

    #[test]
    fn missing_floppy_files_and_bad_labels_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.xml");
        let Err(TemplateError::Invalid { problems, .. }) = load_builder(
            dir.path(),
            json!({
                "floppy_files": [missing],
                "floppy_dirs": [dir.path().join("gone")],
                "floppy_label": "MUCH-TOO-LONG",
            }),
        ) else {
            panic!("accepted");
        };
        let found: Vec<(String, String)> =
            problems.into_iter().map(|p| (p.path, p.message)).collect();
        assert_eq!(
            found,
            [
                (
                    "builders[0].floppy_files[0]".to_string(),
                    format!("file not found: {}", missing.display())
                ),
                (
                    "builders[0].floppy_dirs[0]".to_string(),
                    format!("file not found: {}", dir.path().join("gone").display())
                ),
                (
                    "builders[0].floppy_label".to_string(),
                    "a FAT volume label is at most 11 characters, got \"MUCH-TOO-LONG\""
                        .to_string()
                ),
            ]
        );
    }
}
