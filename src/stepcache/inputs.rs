//! The host files a provisioner reads, whose content goes into its key.

use std::path::{Path, PathBuf};

use crate::plan::{
    AnsibleLocalPlaybooks, Direction, FileSource, ProvisionerKind, ProvisionerSpec,
    ShellLocalSource, ShellSource,
};

/// Directories Ansible reads beside a playbook without the playbook naming
/// them, and its configuration file there.
const BESIDE_PLAYBOOK: &[&str] = &[
    "roles",
    "group_vars",
    "host_vars",
    "library",
    "module_utils",
    "filter_plugins",
    "lookup_plugins",
    "collections",
    "ansible.cfg",
];

/// Every host file or directory `p` reads (directories are hashed whole).
/// A `file` download reads nothing on the host; inline commands are in the
/// provisioner's description already.
pub fn provisioner_files(p: &ProvisionerSpec) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match &p.kind {
        ProvisionerKind::Shell(shell) => {
            if let ShellSource::Scripts(scripts) = &shell.source {
                files.extend(scripts.iter().cloned());
            }
        }
        ProvisionerKind::File(file) => {
            if let (FileSource::Paths(sources), Direction::Upload) = (&file.source, file.direction)
            {
                // `dir/` and `dir` read the same files; the slash is in the
                // description.
                files.extend(
                    sources
                        .iter()
                        .map(|s| PathBuf::from(s.trim_end_matches('/'))),
                );
            }
        }
        ProvisionerKind::ShellLocal(local) => {
            if let ShellLocalSource::Scripts(scripts) = &local.source {
                files.extend(scripts.iter().cloned());
            }
        }
        ProvisionerKind::Ansible(ansible) => {
            files.push(ansible.playbook_file.clone());
            beside_playbook(&ansible.playbook_file, &mut files);
            files.extend(ansible.galaxy_file.iter().cloned());
            files.extend(ansible.inventory_file.iter().cloned());
        }
        ProvisionerKind::AnsibleLocal(local) => {
            match &local.playbooks {
                AnsibleLocalPlaybooks::File(file) => files.push(file.clone()),
                AnsibleLocalPlaybooks::Files(list) => files.extend(list.iter().cloned()),
            }
            files.extend(local.playbook_dir.iter().cloned());
            files.extend(local.playbook_paths.iter().cloned());
            files.extend(local.role_paths.iter().cloned());
            files.extend(local.group_vars.iter().cloned());
            files.extend(local.host_vars.iter().cloned());
            files.extend(local.inventory_file.iter().cloned());
            files.extend(local.galaxy_file.iter().cloned());
        }
    }
    files
}

/// What Ansible picks up beside `playbook` when it exists. Not the whole
/// directory: it is often the template's own, where the build writes its
/// output. Files a playbook includes from elsewhere are not seen (README).
fn beside_playbook(playbook: &Path, files: &mut Vec<PathBuf>) {
    let Some(dir) = playbook.parent() else {
        return;
    };
    for name in BESIDE_PLAYBOOK {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{
        AnsibleConfig, AnsibleLocalConfig, FileConfig, ProvisionerCommon, ShellConfig,
        ShellLocalConfig,
    };

    fn spec(kind: ProvisionerKind) -> ProvisionerSpec {
        ProvisionerSpec {
            type_name: "test".into(),
            index: 0,
            common: ProvisionerCommon::default(),
            kind,
        }
    }

    fn shell(source: ShellSource) -> ProvisionerKind {
        ProvisionerKind::Shell(ShellConfig {
            source,
            environment: vec![],
            execute_command: String::new(),
            inline_shebang: String::new(),
            valid_exit_codes: vec![0],
            expect_disconnect: false,
            remote_folder: "/tmp".into(),
            remote_file: None,
            skip_clean: false,
            start_retry_timeout: std::time::Duration::ZERO,
        })
    }

    fn file(source: FileSource, direction: Direction) -> ProvisionerKind {
        ProvisionerKind::File(FileConfig {
            source,
            destination: "/x".into(),
            direction,
            generated: false,
        })
    }

    fn shell_local(source: ShellLocalSource) -> ProvisionerKind {
        ProvisionerKind::ShellLocal(ShellLocalConfig {
            source,
            environment: vec![],
            execute_command: vec![],
            inline_shebang: String::new(),
            valid_exit_codes: vec![0],
            only_on: vec![],
        })
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn shell_reads_its_scripts_not_inline_commands() {
        let scripts = shell(ShellSource::Scripts(vec![p("/t/a.sh"), p("/t/b.sh")]));
        assert_eq!(
            provisioner_files(&spec(scripts)),
            [p("/t/a.sh"), p("/t/b.sh")]
        );
        let inline = shell(ShellSource::Inline(vec!["echo hi".into()]));
        assert!(provisioner_files(&spec(inline)).is_empty());
    }

    #[test]
    fn file_uploads_read_their_sources_downloads_nothing() {
        let up = file(
            FileSource::Paths(vec!["/t/dir/".into(), "/t/f".into()]),
            Direction::Upload,
        );
        assert_eq!(provisioner_files(&spec(up)), [p("/t/dir"), p("/t/f")]);
        let down = file(
            FileSource::Paths(vec!["/etc/os-release".into()]),
            Direction::Download,
        );
        assert!(provisioner_files(&spec(down)).is_empty());
        let content = file(FileSource::Content("x".into()), Direction::Upload);
        assert!(provisioner_files(&spec(content)).is_empty());
    }

    #[test]
    fn shell_local_reads_its_scripts() {
        let scripts = shell_local(ShellLocalSource::Scripts(vec![p("/t/l.sh")]));
        assert_eq!(provisioner_files(&spec(scripts)), [p("/t/l.sh")]);
        let command = shell_local(ShellLocalSource::Command("make".into()));
        assert!(provisioner_files(&spec(command)).is_empty());
        let inline = shell_local(ShellLocalSource::Inline(vec!["true".into()]));
        assert!(provisioner_files(&spec(inline)).is_empty());
    }

    #[test]
    fn ansible_reads_the_playbook_what_lies_beside_it_and_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("roles/web")).unwrap();
        std::fs::create_dir_all(d.join("group_vars")).unwrap();
        std::fs::create_dir_all(d.join("output-build")).unwrap();
        let playbook = d.join("site.yml");
        let config = AnsibleConfig {
            command: "ansible-playbook".into(),
            playbook_file: playbook.clone(),
            extra_arguments: vec![],
            env_vars: vec![],
            ssh_extra_args: vec![],
            groups: vec![],
            empty_groups: vec![],
            host_alias: "default".into(),
            user: None,
            inventory_file: Some(p("/t/inventory")),
            inventory_directory: None,
            inventory_file_template: None,
            keep_inventory_file: false,
            galaxy_file: Some(p("/t/requirements.yml")),
            galaxy_command: "ansible-galaxy".into(),
            galaxy_force_install: false,
            roles_path: Some("/t/installed-roles".into()),
            collections_path: None,
            use_sftp: false,
        };
        let files = provisioner_files(&spec(ProvisionerKind::Ansible(Box::new(config))));
        assert_eq!(
            files,
            [
                playbook,
                d.join("roles"),
                d.join("group_vars"),
                p("/t/requirements.yml"),
                p("/t/inventory"),
            ]
        );
    }

    #[test]
    fn ansible_local_reads_everything_it_uploads() {
        let config = AnsibleLocalConfig {
            command: String::new(),
            extra_arguments: vec![],
            playbooks: AnsibleLocalPlaybooks::Files(vec![p("/t/a.yml"), p("/t/b.yml")]),
            playbook_dir: Some(p("/t/pb")),
            playbook_paths: vec![p("/t/pp")],
            role_paths: vec![p("/t/roles")],
            group_vars: Some(p("/t/gv")),
            host_vars: Some(p("/t/hv")),
            staging_directory: "/tmp/x".into(),
            clean_staging_directory: true,
            inventory_file: Some(p("/t/inv")),
            inventory_groups: vec![],
            galaxy_file: Some(p("/t/galaxy.yml")),
            galaxy_command: String::new(),
        };
        let files = provisioner_files(&spec(ProvisionerKind::AnsibleLocal(Box::new(
            config.clone(),
        ))));
        assert_eq!(
            files,
            [
                p("/t/a.yml"),
                p("/t/b.yml"),
                p("/t/pb"),
                p("/t/pp"),
                p("/t/roles"),
                p("/t/gv"),
                p("/t/hv"),
                p("/t/inv"),
                p("/t/galaxy.yml"),
            ]
        );
        let single = AnsibleLocalConfig {
            playbooks: AnsibleLocalPlaybooks::File(p("/t/site.yml")),
            playbook_dir: None,
            playbook_paths: vec![],
            role_paths: vec![],
            group_vars: None,
            host_vars: None,
            inventory_file: None,
            galaxy_file: None,
            ..config
        };
        let files = provisioner_files(&spec(ProvisionerKind::AnsibleLocal(Box::new(single))));
        assert_eq!(files, [p("/t/site.yml")]);
    }
}
