//! The `ansible` and `ansible-local` provisioners' settings.

use std::path::PathBuf;

/// Packer's `ansible` command.
pub const ANSIBLE_COMMAND: &str = "ansible-playbook";
/// Packer's `galaxy_command`.
pub const GALAXY_COMMAND: &str = "ansible-galaxy";
/// Packer's `host_alias`.
pub const HOST_ALIAS: &str = "default";
/// Packer's `ansible-local` `command`: a shell prefix and the program.
pub const ANSIBLE_LOCAL_COMMAND: &str = "ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook";
/// Packer's `ansible-local` staging directory, under which each run gets a
/// directory of its own.
pub const ANSIBLE_LOCAL_STAGING: &str = "/tmp/packer-provisioner-ansible-local";

/// The `ansible` provisioner: `ansible-playbook` on this machine, logging
/// in to the guest over the build's SSH port.
#[derive(Debug, Clone)]
pub struct AnsibleConfig {
    /// `command`. Default `ansible-playbook`.
    pub command: String,
    /// `playbook_file`, absolute.
    pub playbook_file: PathBuf,
    /// `extra_arguments`, given to the command before the inventory.
    pub extra_arguments: Vec<String>,
    /// `ansible_env_vars` (`K=V`), set for the command.
    pub env_vars: Vec<(String, String)>,
    /// `ansible_ssh_extra_args`, instead of kiln's `-o IdentitiesOnly=yes
    /// -o UserKnownHostsFile=/dev/null`.
    pub ssh_extra_args: Vec<String>,
    /// `groups`: the host is put in each.
    pub groups: Vec<String>,
    /// `empty_groups`: listed with no host.
    pub empty_groups: Vec<String>,
    /// `host_alias`: the host's name in the inventory. Default `default`.
    pub host_alias: String,
    /// `user`: who Ansible logs in as. Default: the build's `ssh_username`.
    pub user: Option<String>,
    /// `inventory_file`: used as it is instead of a generated one.
    pub inventory_file: Option<PathBuf>,
    /// `inventory_directory`: where the generated inventory is written.
    pub inventory_directory: Option<PathBuf>,
    /// `inventory_file_template`: the host line, with `{{ .HostAlias }}`,
    /// `{{ .Host }}`, `{{ .Port }}` and `{{ .User }}`.
    pub inventory_file_template: Option<String>,
    /// `keep_inventory_file`: the generated inventory is not removed.
    pub keep_inventory_file: bool,
    /// `galaxy_file`, absolute: roles (and collections) installed first.
    pub galaxy_file: Option<PathBuf>,
    /// `galaxy_command`. Default `ansible-galaxy`.
    pub galaxy_command: String,
    /// `galaxy_force_install`: `-f` to the galaxy command.
    pub galaxy_force_install: bool,
    /// `roles_path`: where galaxy installs roles.
    pub roles_path: Option<String>,
    /// `collections_path`: where galaxy installs collections.
    pub collections_path: Option<String>,
    /// `use_sftp`: without it Ansible copies with scp
    /// (`ANSIBLE_SCP_IF_SSH=True`), as Packer has it.
    pub use_sftp: bool,
}

/// What `ansible-local` runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AnsibleLocalPlaybooks {
    /// `playbook_file`: uploaded into the staging directory.
    File(PathBuf),
    /// `playbook_files`, absolute: each run in turn; those inside
    /// `playbook_dir` are run from its upload.
    Files(Vec<PathBuf>),
}

/// The `ansible-local` provisioner: the playbook uploaded to the guest and
/// run there.
#[derive(Debug, Clone)]
pub struct AnsibleLocalConfig {
    /// `command`: a shell command line prefix. Default
    /// `ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook`.
    pub command: String,
    /// `extra_arguments`, appended to the command line as written.
    pub extra_arguments: Vec<String>,
    /// The playbook or playbooks.
    pub playbooks: AnsibleLocalPlaybooks,
    /// `playbook_dir`: uploaded as the staging directory's content.
    pub playbook_dir: Option<PathBuf>,
    /// `playbook_paths`: directories uploaded under `playbooks/`.
    pub playbook_paths: Vec<PathBuf>,
    /// `role_paths`: directories uploaded under `roles/`.
    pub role_paths: Vec<PathBuf>,
    /// `group_vars`: uploaded as `group_vars/`.
    pub group_vars: Option<PathBuf>,
    /// `host_vars`: uploaded as `host_vars/`.
    pub host_vars: Option<PathBuf>,
    /// `staging_directory` in the guest. Default
    /// `/tmp/packer-provisioner-ansible-local/<unique>`.
    pub staging_directory: String,
    /// `clean_staging_directory`: removed after the run.
    pub clean_staging_directory: bool,
    /// `inventory_file`: uploaded instead of the generated one.
    pub inventory_file: Option<PathBuf>,
    /// `inventory_groups`: the generated inventory puts 127.0.0.1 in each.
    pub inventory_groups: Vec<String>,
    /// `galaxy_file`: uploaded, and `galaxy_command install` run with it.
    pub galaxy_file: Option<PathBuf>,
    /// `galaxy_command`. Default `ansible-galaxy`.
    pub galaxy_command: String,
}
