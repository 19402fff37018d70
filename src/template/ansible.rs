//! The `ansible` and `ansible-local` provisioners, with Packer 1.6's keys.
//!
//! Packer's `ansible` talks to the guest through an SSH proxy it serves on
//! 127.0.0.1; kiln lets Ansible log in to the guest's forwarded port
//! directly, with the build's own credentials (Packer's `use_proxy:
//! false`). The proxy's settings (`local_port`, `ssh_host_key_file`,
//! `ssh_authorized_key_file`, `sftp_command`, `use_proxy`,
//! `skip_version_check`) are accepted and have nothing to configure.

use std::path::{Path, PathBuf};

use super::decode::Obj;
use super::paths;
use crate::plan::{
    ANSIBLE_COMMAND, ANSIBLE_LOCAL_COMMAND, ANSIBLE_LOCAL_STAGING, AnsibleConfig,
    AnsibleLocalConfig, AnsibleLocalPlaybooks, GALAXY_COMMAND, HOST_ALIAS,
};

/// Keys of Packer's SSH proxy, which kiln does not run.
const PROXY_KEYS: &[&str] = &[
    "local_port",
    "ssh_host_key_file",
    "ssh_authorized_key_file",
    "sftp_command",
    "use_proxy",
    "skip_version_check",
];

/// What a path key must name.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    File,
    Dir,
}

/// A local path, resolved against the working directory, that must exist
/// as `kind`.
fn existing(o: &mut Obj<'_>, key: &'static str, kind: Kind, cwd: &Path) -> Option<PathBuf> {
    let s = o.non_empty_string(key)?;
    check(o, o.key_path(key), &s, kind, cwd)
}

fn check(o: &Obj<'_>, at: String, s: &str, kind: Kind, cwd: &Path) -> Option<PathBuf> {
    let path = paths::resolve(cwd, s);
    let problem = match std::fs::metadata(&path) {
        Err(_) if kind == Kind::File => format!("file not found: {}", path.display()),
        Err(_) => format!("directory not found: {}", path.display()),
        Ok(m) if kind == Kind::File && m.is_dir() => {
            format!("must be a file, got the directory {}", path.display())
        }
        Ok(m) if kind == Kind::Dir && !m.is_dir() => {
            format!("must be a directory, got {}", path.display())
        }
        Ok(_) => return Some(path),
    };
    o.cx().problem(at, problem);
    None
}

fn existing_list(o: &mut Obj<'_>, key: &'static str, kind: Kind, cwd: &Path) -> Vec<PathBuf> {
    let list = o.string_list(key).unwrap_or_default();
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| check(o, format!("{}[{i}]", o.key_path(key)), s, kind, cwd))
        .collect()
}

/// `K=V` entries.
fn env_vars(o: &mut Obj<'_>, key: &'static str) -> Vec<(String, String)> {
    let list = o.string_list(key).unwrap_or_default();
    let mut out = Vec::new();
    for (i, kv) in list.iter().enumerate() {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => o.cx().problem(
                format!("{}[{i}]", o.key_path(key)),
                format!("expected KEY=VALUE, got {kv:?}"),
            ),
        }
    }
    out
}

/// Decodes an `ansible` provisioner.
pub fn ansible(o: &mut Obj<'_>, cwd: &Path) -> Option<AnsibleConfig> {
    o.allow(PROXY_KEYS);
    let playbook_file = if o.has("playbook_file") {
        existing(o, "playbook_file", Kind::File, cwd)
    } else {
        o.missing("playbook_file", "the playbook to run");
        None
    };
    let inventory_directory = existing(o, "inventory_directory", Kind::Dir, cwd);
    let inventory_file = existing(o, "inventory_file", Kind::File, cwd);
    let galaxy_file = existing(o, "galaxy_file", Kind::File, cwd);
    // Every key is read before a missing playbook ends the decoding, so
    // none is reported as unknown.
    let config = AnsibleConfig {
        command: o
            .non_empty_string("command")
            .unwrap_or_else(|| ANSIBLE_COMMAND.into()),
        playbook_file: PathBuf::new(),
        extra_arguments: o.string_list("extra_arguments").unwrap_or_default(),
        env_vars: env_vars(o, "ansible_env_vars"),
        ssh_extra_args: o.string_list("ansible_ssh_extra_args").unwrap_or_default(),
        groups: o.string_list("groups").unwrap_or_default(),
        empty_groups: o.string_list("empty_groups").unwrap_or_default(),
        host_alias: o
            .non_empty_string("host_alias")
            .unwrap_or_else(|| HOST_ALIAS.into()),
        user: o.non_empty_string("user"),
        inventory_file,
        inventory_directory,
        inventory_file_template: o.non_empty_string("inventory_file_template"),
        keep_inventory_file: o.bool("keep_inventory_file").unwrap_or(false),
        galaxy_file,
        galaxy_command: o
            .non_empty_string("galaxy_command")
            .unwrap_or_else(|| GALAXY_COMMAND.into()),
        galaxy_force_install: o.bool("galaxy_force_install").unwrap_or(false),
        roles_path: o.non_empty_string("roles_path"),
        collections_path: o.non_empty_string("collections_path"),
        use_sftp: o.bool("use_sftp").unwrap_or(false),
    };
    Some(AnsibleConfig {
        playbook_file: playbook_file?,
        ..config
    })
}

/// Decodes an `ansible-local` provisioner.
pub fn ansible_local(o: &mut Obj<'_>, cwd: &Path) -> Option<AnsibleLocalConfig> {
    let playbooks = match o.exactly_one(&["playbook_file", "playbook_files"]) {
        Some(0) => existing(o, "playbook_file", Kind::File, cwd).map(AnsibleLocalPlaybooks::File),
        Some(_) => {
            let given = o.string_list("playbook_files").unwrap_or_default();
            let files = existing_list(o, "playbook_files", Kind::File, cwd);
            if given.is_empty() {
                o.cx()
                    .problem(o.key_path("playbook_files"), "must not be empty");
            }
            (files.len() == given.len() && !given.is_empty())
                .then_some(AnsibleLocalPlaybooks::Files(files))
        }
        None => None,
    };
    o.allow(&["playbook_file", "playbook_files"]);
    let staging_directory = o
        .non_empty_string("staging_directory")
        .unwrap_or_else(|| format!("{ANSIBLE_LOCAL_STAGING}/{}", uuid::Uuid::new_v4().simple()));
    let config = AnsibleLocalConfig {
        command: o
            .non_empty_string("command")
            .unwrap_or_else(|| ANSIBLE_LOCAL_COMMAND.into()),
        extra_arguments: o.string_list("extra_arguments").unwrap_or_default(),
        playbook_dir: existing(o, "playbook_dir", Kind::Dir, cwd),
        playbook_paths: existing_list(o, "playbook_paths", Kind::Dir, cwd),
        role_paths: existing_list(o, "role_paths", Kind::Dir, cwd),
        group_vars: existing(o, "group_vars", Kind::Dir, cwd),
        host_vars: existing(o, "host_vars", Kind::Dir, cwd),
        staging_directory,
        clean_staging_directory: o.bool("clean_staging_directory").unwrap_or(false),
        inventory_file: existing(o, "inventory_file", Kind::File, cwd),
        inventory_groups: o.string_list("inventory_groups").unwrap_or_default(),
        galaxy_file: existing(o, "galaxy_file", Kind::File, cwd),
        galaxy_command: o
            .non_empty_string("galaxy_command")
            .unwrap_or_else(|| GALAXY_COMMAND.into()),
        playbooks: AnsibleLocalPlaybooks::Files(Vec::new()),
    };
    Some(AnsibleLocalConfig {
        playbooks: playbooks?,
        ..config
    })
}
