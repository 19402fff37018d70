//! `kiln validate` on the public Packer templates in
//! tests/data/packer-templates: each one copied into a scratch directory with
//! every file it references stubbed, validated with the var files and values
//! expected.json gives it, and its outcome compared with the one recorded
//! there. bench/compat.py stubs the same files the same way and compares
//! with Packer.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::util::Scratch;

/// Keys whose string value names one file the template reads.
const FILE_KEYS: &[&str] = &[
    "script",
    "playbook_file",
    "galaxy_file",
    "vagrantfile_template",
    "ssh_private_key_file",
    "config_template",
    "vars_file",
    "inventory_file",
    "ansible_cfg",
];
/// Keys whose list names files the template reads.
const FILE_LIST_KEYS: &[&str] = &[
    "scripts",
    "floppy_files",
    "cd_files",
    "include",
    "tests",
    "sources",
];
/// Keys naming a directory.
const DIR_KEYS: &[&str] = &[
    "http_directory",
    "playbook_dir",
    "data_bags_path",
    "roles_path",
    "environments_path",
];
/// Keys whose list names directories.
const DIR_LIST_KEYS: &[&str] = &["floppy_dirs", "cookbook_paths", "role_paths"];

static USER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\{\{\s*user\s+[`"]([^`"]+)[`"]\s*\}\}"#).expect("regex"));
static DIR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*(template_dir|pwd)\s*\}\}").expect("regex"));
static ENV: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\{\{\s*env\s+[`"][^`"]*[`"]\s*\}\}"#).expect("regex"));

#[derive(Deserialize)]
struct Expectations {
    templates: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    var_files: Vec<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    kiln: Outcome,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Valid,
    Invalid(String),
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/packer-templates")
}

/// The user variables as Packer resolves them: defaults, then var files,
/// then -var values; values that use other variables are expanded.
fn variables(
    template: &Value,
    var_files: &[PathBuf],
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let as_string = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut values = BTreeMap::new();
    if let Some(declared) = template.get("variables").and_then(Value::as_object) {
        for (name, default) in declared {
            let default = default.as_str().unwrap_or_default().to_owned();
            values.insert(name.clone(), default);
        }
    }
    for path in var_files {
        let text = std::fs::read_to_string(path).expect("read var file");
        let file: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("var file");
        for (name, value) in &file {
            values.insert(name.clone(), as_string(value));
        }
    }
    values.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    for _ in 0..5 {
        let snapshot = values.clone();
        for value in values.values_mut() {
            if let Some(expanded) = resolve(value, &snapshot) {
                *value = expanded;
            }
        }
    }
    values
}

/// The path a template string names, or None when it still holds a template
/// expression that cannot be evaluated offline.
fn resolve(raw: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let out = USER.replace_all(raw, |caps: &regex::Captures| {
        values.get(&caps[1]).cloned().unwrap_or_default()
    });
    let out = DIR.replace_all(&out, ".");
    let out = ENV.replace_all(&out, "");
    (!out.contains("{{")).then(|| out.into_owned())
}

/// A stub to create: the key that names it, its path relative to the
/// template, and whether it is a directory.
#[derive(Debug, PartialEq)]
struct Reference {
    key: String,
    path: PathBuf,
    dir: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Builder,
    Provisioner,
    PostProcessor,
}

/// Every local file or directory the template refers to.
fn references(template: &Value, values: &BTreeMap<String, String>) -> Vec<Reference> {
    let mut found = Vec::new();
    for (name, section) in [
        ("builders", Section::Builder),
        ("provisioners", Section::Provisioner),
        ("post-processors", Section::PostProcessor),
    ] {
        if let Some(node) = template.get(name) {
            walk(node, section, values, &mut found);
        }
    }
    found
}

fn walk(
    node: &Value,
    section: Section,
    values: &BTreeMap<String, String>,
    found: &mut Vec<Reference>,
) {
    match node {
        Value::Array(items) => items
            .iter()
            .for_each(|item| walk(item, section, values, found)),
        Value::Object(map) => {
            let mut add = |key: &str, raw: &Value, dir: bool| {
                let Some(raw) = raw.as_str() else { return };
                let Some(path) = resolve(raw, values) else {
                    return;
                };
                let path = path.strip_prefix("file:").unwrap_or(&path);
                if path.is_empty()
                    || path.contains("://")
                    || path.starts_with('/')
                    || path.contains(['*', '?', '['])
                {
                    return;
                }
                found.push(Reference {
                    key: key.to_owned(),
                    path: PathBuf::from(path),
                    dir: dir || raw.ends_with('/'),
                });
            };
            let local_source = |v: &Value| {
                v.as_str()
                    .is_some_and(|s| s.starts_with("file:") || !s.contains("://"))
            };
            for (key, value) in map {
                let key = key.as_str();
                let list = || value.as_array().into_iter().flatten();
                // A provisioner's upload source, and a builder's local image.
                let read_file = match key {
                    "source" => {
                        section == Section::Provisioner
                            && map.get("direction").and_then(Value::as_str) != Some("download")
                    }
                    "iso_url" => section == Section::Builder && local_source(value),
                    _ => FILE_KEYS.contains(&key),
                };
                if read_file {
                    add(key, value, false);
                } else if DIR_KEYS.contains(&key) {
                    add(key, value, true);
                } else if FILE_LIST_KEYS.contains(&key) {
                    list().for_each(|item| add(key, item, false));
                } else if DIR_LIST_KEYS.contains(&key) {
                    list().for_each(|item| add(key, item, true));
                } else if key == "iso_urls" && section == Section::Builder {
                    list()
                        .filter(|item| local_source(item))
                        .for_each(|item| add(key, item, false));
                }
            }
        }
        _ => {}
    }
}

/// `path` without `.` and `..` (resolved lexically, as Packer joins them).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn stub_content(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("sh") => "#!/bin/sh\n",
        Some("yml" | "yaml") => "---\n- hosts: all\n  tasks: []\n",
        Some("json") => "{}\n",
        _ => "stub\n",
    }
}

/// Copies the template three levels into the scratch directory (so `../..`
/// stays inside), stubs what it references, returns its directory and the
/// arguments it is validated with.
fn stage(scratch: &Scratch, name: &str, entry: &Entry) -> (PathBuf, Vec<String>) {
    let work = scratch.path().join("a/b/c");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::copy(corpus().join(name), work.join(name)).expect("copy template");
    let var_files: Vec<PathBuf> = entry.var_files.iter().map(|v| corpus().join(v)).collect();
    let text = std::fs::read_to_string(corpus().join(name)).expect("read template");
    let template: Value = serde_json::from_str(&text).expect("template is JSON");
    let values = variables(&template, &var_files, &entry.vars);
    for reference in references(&template, &values) {
        let full = normalise(&work.join(&reference.path));
        if !full.starts_with(scratch.path()) {
            continue;
        }
        // A path named both as a file and as a directory keeps its first kind.
        if reference.dir {
            let _ = std::fs::create_dir_all(&full);
        } else if !full.exists() {
            let parent = full.parent().expect("a parent");
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
            if reference.key == "ssh_private_key_file" && ssh_keygen(&full) {
                continue;
            }
            let _ = std::fs::write(&full, stub_content(&full));
        }
    }
    let mut args: Vec<String> = var_files
        .iter()
        .map(|v| format!("-var-file={}", v.display()))
        .collect();
    for (name, value) in &entry.vars {
        args.extend(["-var".to_owned(), format!("{name}={value}")]);
    }
    (work, args)
}

/// A real key where the template names one, as bench/compat.py makes for
/// Packer (which reads it while validating).
fn ssh_keygen(path: &Path) -> bool {
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What happened with one template when it differs from its expectation.
fn check(name: &str, entry: &Entry) -> Option<String> {
    let scratch = Scratch::new();
    let (work, args) = stage(&scratch, name, entry);
    let output = scratch
        .kiln(&["validate"])
        .args(&args)
        .arg(name)
        .current_dir(&work)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let code = output.status.code();
    let matches = match &entry.kiln {
        Outcome::Valid => code == Some(0),
        Outcome::Invalid(fragment) => code == Some(2) && all.contains(fragment.as_str()),
    };
    assert!(
        scratch.leftover_temp_files().is_empty(),
        "{name}: validate left temporary files"
    );
    (!matches).then(|| format!("{name}: expected {:?}, exit {code:?}:\n{all}", entry.kiln))
}

fn expectations() -> Expectations {
    let text = std::fs::read_to_string(corpus().join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("expected.json")
}

#[test]
fn every_public_template_validates_as_recorded() {
    let expectations = expectations();
    assert!(
        expectations.templates.len() >= 30,
        "the corpus lost templates: {}",
        expectations.templates.len()
    );
    let mismatches: Vec<String> = expectations
        .templates
        .iter()
        .filter_map(|(name, entry)| check(name, entry))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} templates differ from expected.json (bench/compat.py --record updates it):\n\n{}",
        mismatches.len(),
        expectations.templates.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_template_file_is_listed_with_its_source() {
    let expectations = expectations();
    let sources = std::fs::read_to_string(corpus().join("SOURCES.md")).expect("read SOURCES.md");
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(corpus()).expect("read corpus") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if name.ends_with(".json") && name != "expected.json" {
            on_disk.push(name);
        }
    }
    on_disk.sort();
    let listed: Vec<&String> = expectations.templates.keys().collect();
    assert_eq!(
        on_disk.iter().collect::<Vec<_>>(),
        listed,
        "expected.json and the files differ"
    );
    for name in &on_disk {
        assert!(
            sources.contains(&format!("`{name}`")),
            "{name} has no row in SOURCES.md"
        );
    }
    for entry in expectations.templates.values() {
        for var_file in &entry.var_files {
            assert!(
                corpus().join(var_file).is_file(),
                "missing var file {var_file}"
            );
        }
    }
}

#[test]
fn stubs_follow_user_variables_and_template_dir() {
    let template = serde_json::json!({
        "variables": {"dir": "{{template_dir}}/http", "iso": "iso/x.iso", "env": "{{env `HOME`}}"},
        "builders": [{
            "type": "qemu",
            "http_directory": "{{user `dir`}}",
            "iso_urls": ["{{ user `iso` }}", "https://example.com/x.iso"],
            "floppy_files": ["answer/*.xml", "answer/Autounattend.xml", "drivers/"],
            "boot_command": ["{{ .HTTPIP }}"]
        }],
        "provisioners": [
            {"type": "file", "source": "out.txt", "destination": "/tmp/x", "direction": "download"},
            {"type": "shell", "scripts": ["../common/a.sh", "/abs/b.sh", "{{ .Unknown }}/c.sh"]}
        ]
    });
    let values = variables(&template, &[], &BTreeMap::new());
    let found: Vec<(String, bool)> = references(&template, &values)
        .into_iter()
        .map(|r| (r.path.display().to_string(), r.dir))
        .collect();
    let want = [
        ("./http", true),
        ("iso/x.iso", false),
        ("answer/Autounattend.xml", false),
        ("drivers/", true),
        ("../common/a.sh", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(p, d)| (p.to_string(), *d)).collect();
    let mut found = found;
    found.sort();
    let mut want = want;
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn an_outcome_other_than_the_recorded_one_is_reported() {
    let name = "chef-bento__packer-templates--ubuntu--ubuntu-22.04-amd64.json";
    let mut entry = expectations()
        .templates
        .remove(name)
        .expect("a listed template");
    entry.kiln = Outcome::Invalid("no error says this".to_owned());
    let report = check(name, &entry).expect("a mismatch");
    assert!(report.starts_with(name), "{report}");
    assert!(
        report.contains("error"),
        "kiln's output is in the report: {report}"
    );
}

#[test]
fn the_stubs_stand_in_for_every_script_a_template_runs() {
    // Without stubs this template fails on its missing scripts; with them,
    // no "not found" error is left, whatever else kiln rejects.
    let name = "kaorimatz-packer-templates__ubuntu-16.04-amd64.json";
    let entry = &expectations().templates[name];
    let scratch = Scratch::new();
    let (work, args) = stage(&scratch, name, entry);
    let output = scratch
        .kiln(&["validate"])
        .args(&args)
        .arg(name)
        .current_dir(&work)
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("not found"), "{stderr}");

    let bare = Scratch::new();
    std::fs::copy(corpus().join(name), bare.path().join(name)).expect("copy");
    let run = bare.run(&["validate", name]);
    run.assert_usage_error();
    assert!(run.stderr.contains("script not found"), "{}", run.all());
}
