//! `shell`, `file` and `shell-local` provisioners (`ansible` and
//! `ansible-local` in [`super::ansible`]).
//!
//! `binary` (shell) is accepted and ignored: kiln uploads scripts byte for
//! byte, which is what it asks for. `remote_path` (shell) is split into
//! `remote_folder` and `remote_file`, which is what Packer derives it from.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::decode::{Obj, int_value};
use super::paths;
use crate::plan::defaults;
use crate::plan::{
    Direction, FileConfig, FileSource, ProvisionerCommon, ProvisionerKind, ProvisionerSpec,
    ShellConfig, ShellLocalConfig, ShellLocalSource, ShellSource,
};

/// Decodes one provisioner object as it applies to one build (`override`
/// already merged; `only`/`except`/`override` marked known by the caller).
pub fn decode(
    mut o: Obj<'_>,
    type_name: &str,
    index: usize,
    cwd: &Path,
) -> Option<ProvisionerSpec> {
    o.allow(&["type"]);
    let unset = ProvisionerCommon::default();
    let common = ProvisionerCommon {
        pause_before: o.duration("pause_before").unwrap_or(unset.pause_before),
        max_retries: o
            .int("max_retries", 0, i64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(unset.max_retries),
        timeout: o.duration("timeout").unwrap_or(unset.timeout),
    };
    let kind = match type_name {
        "shell" => shell(&mut o, cwd).map(ProvisionerKind::Shell),
        "file" => file(&mut o, cwd).map(ProvisionerKind::File),
        "shell-local" => shell_local(&mut o, cwd).map(ProvisionerKind::ShellLocal),
        "ansible" => super::ansible::ansible(&mut o, cwd)
            .map(|config| ProvisionerKind::Ansible(Box::new(config))),
        "ansible-local" => super::ansible::ansible_local(&mut o, cwd)
            .map(|config| ProvisionerKind::AnsibleLocal(Box::new(config))),
        other => {
            o.cx()
                .problem(o.key_path("type"), super::unsupported::provisioner(other));
            return None;
        }
    };
    o.finish();
    Some(ProvisionerSpec {
        type_name: type_name.to_string(),
        index,
        common,
        kind: kind?,
    })
}

/// Local scripts: absolute, and they must exist.
fn scripts(o: &mut Obj<'_>, which: &'static str, cwd: &Path) -> Option<Vec<PathBuf>> {
    let entries: Vec<(String, String)> = if which == "script" {
        let s = o.string("script")?;
        vec![(o.key_path("script"), s)]
    } else {
        let list = o.string_list("scripts")?;
        if list.is_empty() {
            o.cx().problem(o.key_path("scripts"), "must not be empty");
            return None;
        }
        list.into_iter()
            .enumerate()
            .map(|(i, s)| (format!("{}[{i}]", o.key_path("scripts")), s))
            .collect()
    };
    let mut ok = true;
    let mut out = Vec::new();
    for (path, s) in entries {
        let p = paths::resolve(cwd, &s);
        if !p.is_file() {
            o.cx()
                .problem(path, format!("script not found: {}", p.display()));
            ok = false;
        }
        out.push(p);
    }
    ok.then_some(out)
}

/// `environment_vars` (`K=V`) followed by `env` sorted by key.
fn environment(o: &mut Obj<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(list) = o.string_list("environment_vars") {
        for (i, kv) in list.iter().enumerate() {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
                _ => o.cx().problem(
                    format!("{}[{i}]", o.key_path("environment_vars")),
                    format!("expected KEY=VALUE, got {kv:?}"),
                ),
            }
        }
    }
    if let Some(map) = o.string_map("env") {
        out.extend(map);
    }
    out
}

fn exit_codes(o: &mut Obj<'_>) -> Vec<i64> {
    let Some(v) = o.raw("valid_exit_codes") else {
        return defaults::VALID_EXIT_CODES.to_vec();
    };
    let cx = o.cx();
    let path = o.key_path("valid_exit_codes");
    let Json::Array(items) = v else {
        cx.problem(path, "expected an array of integers");
        return defaults::VALID_EXIT_CODES.to_vec();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| int_value(cx, &format!("{path}[{i}]"), item, 0, 255))
        .collect()
}

fn inline(o: &mut Obj<'_>) -> Option<Vec<String>> {
    o.string_list("inline")
}

fn shell(o: &mut Obj<'_>, cwd: &Path) -> Option<ShellConfig> {
    let which = o.exactly_one(&["inline", "script", "scripts"]);
    let source = match which {
        Some(0) => inline(o).map(ShellSource::Inline),
        Some(1) => scripts(o, "script", cwd).map(ShellSource::Scripts),
        Some(_) => scripts(o, "scripts", cwd).map(ShellSource::Scripts),
        None => None,
    };
    o.allow(&["inline", "script", "scripts"]);
    let environment = environment(o);
    let execute_command = o
        .non_empty_string("execute_command")
        .unwrap_or_else(|| defaults::SHELL_EXECUTE.into());
    let inline_shebang = o
        .non_empty_string("inline_shebang")
        .unwrap_or_else(|| defaults::SHEBANG.into());
    let valid_exit_codes = exit_codes(o);
    let expect_disconnect = o.bool("expect_disconnect").unwrap_or(false);
    let mut remote_folder = o
        .non_empty_string("remote_folder")
        .unwrap_or_else(|| defaults::REMOTE_FOLDER.into());
    let mut remote_file = o.non_empty_string("remote_file");
    if let Some(rp) = o.non_empty_string("remote_path") {
        match rp.rsplit_once('/') {
            Some((dir, file)) if !file.is_empty() => {
                remote_folder = if dir.is_empty() {
                    "/".into()
                } else {
                    dir.into()
                };
                remote_file = Some(file.into());
            }
            _ => o.cx().problem(
                o.key_path("remote_path"),
                format!("expected a path to a file such as \"/tmp/script.sh\", got {rp:?}"),
            ),
        }
    }
    let skip_clean = o.bool("skip_clean").unwrap_or(false);
    let start_retry_timeout = o
        .duration("start_retry_timeout")
        .unwrap_or(defaults::START_RETRY_TIMEOUT);
    let _ = o.bool("binary");
    Some(ShellConfig {
        source: source?,
        environment,
        execute_command,
        inline_shebang,
        valid_exit_codes,
        expect_disconnect,
        remote_folder,
        remote_file,
        skip_clean,
        start_retry_timeout,
    })
}

fn file(o: &mut Obj<'_>, cwd: &Path) -> Option<FileConfig> {
    let direction = match o.string("direction").as_deref() {
        None | Some("") | Some("upload") => Some(Direction::Upload),
        Some("download") => Some(Direction::Download),
        Some(other) => {
            o.cx().problem(
                o.key_path("direction"),
                format!("expected upload or download, got {other:?}"),
            );
            None
        }
    };
    let generated = o.bool("generated").unwrap_or(false);
    let destination = o.non_empty_string("destination");
    if destination.is_none() {
        o.missing("destination", "where to put the file");
    }
    let which = o.exactly_one(&["source", "sources", "content"]);
    let source = match which {
        Some(0) => o.string("source").map(|s| vec![(o.key_path("source"), s)]),
        Some(1) => o.string_list("sources").map(|list| {
            list.into_iter()
                .enumerate()
                .map(|(i, s)| (format!("{}[{i}]", o.key_path("sources")), s))
                .collect()
        }),
        Some(_) => {
            let content = o.string("content");
            if direction == Some(Direction::Download) {
                o.cx().problem(
                    o.key_path("content"),
                    "cannot be used with direction download",
                );
            }
            return Some(FileConfig {
                source: FileSource::Content(content?),
                destination: destination?,
                direction: direction?,
                generated,
            });
        }
        None => None,
    };
    o.allow(&["source", "sources", "content"]);
    let entries = source?;
    if entries.is_empty() {
        o.cx().problem(o.key_path("sources"), "must not be empty");
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (path, s) in entries {
        if direction == Some(Direction::Upload) {
            let p = paths::resolve(cwd, &s);
            if !generated && !p.exists() {
                o.cx()
                    .problem(path, format!("file not found: {}", p.display()));
                ok = false;
            }
            out.push(p.to_string_lossy().into_owned());
        } else {
            out.push(s);
        }
    }
    if !ok {
        return None;
    }
    Some(FileConfig {
        source: FileSource::Paths(out),
        destination: destination?,
        direction: direction?,
        generated,
    })
}

/// `execute_command` of shell-local: an array, or one string (Packer's
/// weak decoding makes it a one-element array).
fn execute_list(o: &mut Obj<'_>) -> Option<Vec<String>> {
    match o.raw("execute_command")? {
        Json::String(_) => o.string("execute_command").map(|s| vec![s]),
        _ => o.string_list("execute_command"),
    }
}

/// `shell-local`, the provisioner's or the post-processor's (Packer's
/// shared configuration).
pub(super) fn shell_local(o: &mut Obj<'_>, cwd: &Path) -> Option<ShellLocalConfig> {
    let which = o.exactly_one(&["inline", "command", "script", "scripts"]);
    let source = match which {
        Some(0) => inline(o).map(ShellLocalSource::Inline),
        Some(1) => o.string("command").map(ShellLocalSource::Command),
        Some(2) => scripts(o, "script", cwd).map(ShellLocalSource::Scripts),
        Some(_) => scripts(o, "scripts", cwd).map(ShellLocalSource::Scripts),
        None => None,
    };
    o.allow(&["inline", "command", "script", "scripts"]);
    let environment = environment(o);
    let execute_command = match execute_list(o) {
        // One string is a command line for sh, as Packer takes it.
        Some(list) if list.len() == 1 => ["sh".to_string(), "-c".to_string()]
            .into_iter()
            .chain(list)
            .collect(),
        Some(list) if !list.is_empty() => list,
        _ => defaults::SHELL_LOCAL_EXECUTE
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let inline_shebang = o
        .non_empty_string("inline_shebang")
        .unwrap_or_else(|| defaults::SHEBANG.into());
    let valid_exit_codes = exit_codes(o);
    let only_on = o.string_list("only_on").unwrap_or_default();
    // Windows path translation: nothing to translate on Linux.
    let _ = o.bool("use_linux_pathing");
    Some(ShellLocalConfig {
        source: source?,
        environment,
        execute_command,
        inline_shebang,
        valid_exit_codes,
        only_on,
    })
}
