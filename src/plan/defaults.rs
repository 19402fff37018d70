//! The value each setting takes when a template leaves it out, and the
//! `Default` of the configs that have a natural one.
//!
//! Unless said otherwise, a value is the default of the current Packer
//! plugin for that stage (packer-plugin-qemu, Packer's shell, shell-local,
//! checksum, manifest and compress, packer-plugin-googlecompute), so a
//! template behaves as it does under Packer.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    CheckKind, CheckSpec, Checksum, Communicator, DiskFormat, KeyPairType, QemuConfig, ShellConfig,
    ShellSource, SshOptions,
};

/// packer-plugin-qemu's `disk_size`: 40 GiB.
pub const DISK_SIZE_MIB: u64 = 40960;
/// packer-plugin-qemu's `cpus`.
pub const CPUS: u32 = 1;
/// packer-plugin-qemu's `memory`, in MiB.
pub const MEMORY_MIB: u64 = 512;
/// packer-plugin-qemu replaces a `memory` below this many MiB by
/// [`MEMORY_MIB`].
pub const MEMORY_FLOOR_MIB: u64 = 10;
/// packer-plugin-qemu's `disk_interface`.
pub const DISK_INTERFACE: &str = "virtio";
/// packer-plugin-qemu's `disk_cache`.
pub const DISK_CACHE: &str = "writeback";
/// packer-plugin-qemu's `disk_discard` is `ignore`; kiln's build disk
/// takes `unmap` when the template does not say, so what the guest frees
/// (fstrim before shutdown) becomes holes in the image instead of data
/// that compaction and the tarball carry.
pub const DISK_DISCARD: &str = "unmap";
/// packer-plugin-qemu's `disk_detect_zeroes` is `off`; kiln's build disk
/// takes `unmap` when the template sets no discard mode either: zeroes a
/// provisioner writes (the "fill the disk with zeroes" trick) become holes,
/// so the image's allocation tells what compaction would save.
pub const DISK_DETECT_ZEROES: &str = "unmap";
/// packer-plugin-qemu's `machine_type`.
pub const MACHINE_TYPE: &str = "pc";
/// packer-plugin-qemu's `net_device`.
pub const NET_DEVICE: &str = "virtio-net";
/// packer-plugin-qemu's `qemu_binary`.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// packer-plugin-qemu's `shutdown_timeout`.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// packer-plugin-qemu's `boot_wait`.
pub const BOOT_WAIT: Duration = Duration::from_secs(10);
/// packer-plugin-qemu's `host_port_min` (formerly `ssh_host_port_min`).
pub const HOST_PORT_MIN: u16 = 2222;
/// packer-plugin-qemu's `host_port_max` (formerly `ssh_host_port_max`).
pub const HOST_PORT_MAX: u16 = 4444;

/// Packer's SSH communicator `ssh_timeout`.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Packer's SSH communicator `ssh_port`: the guest's sshd.
pub const SSH_PORT: u16 = 22;
/// Packer's SSH communicator `ssh_handshake_attempts`.
pub const SSH_HANDSHAKE_ATTEMPTS: u32 = 10;

/// Packer's shell provisioner `execute_command`.
pub const SHELL_EXECUTE: &str = "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}";
/// Packer's shell and shell-local `inline_shebang`.
pub const SHEBANG: &str = "/bin/sh -e";
/// Packer's shell provisioner `remote_folder`.
pub const REMOTE_FOLDER: &str = "/tmp";
/// Packer's shell provisioner `start_retry_timeout`.
pub const START_RETRY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Packer's shell and shell-local `valid_exit_codes`.
pub const VALID_EXIT_CODES: &[i64] = &[0];
/// Packer's shell-local `execute_command` (on Unix).
pub const SHELL_LOCAL_EXECUTE: &[&str] = &["/bin/sh", "-c", "{{.Vars}} {{.Script}}"];

/// Packer's checksum post-processor `output`.
pub const CHECKSUM_OUTPUT: &str =
    "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum";
/// Packer's manifest post-processor `output`.
pub const MANIFEST_OUTPUT: &str = "packer-manifest.json";
/// kiln's compress `output`: Packer's default name, ending in the `.tar.gz`
/// kiln writes.
pub const COMPRESS_OUTPUT: &str = "packer_{{.BuildName}}_{{.BuilderType}}.tar.gz";
/// kiln's `image_create_timeout` for `googlecompute-import`: an import of a
/// large disk takes minutes, and Compute Engine gives no progress.
pub const IMAGE_CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// kiln's per-attempt `timeout` of a smoke-test check: long enough for a
/// package query on a slow TCG guest.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// packer-plugin-qemu's `output_directory` for a build.
pub fn output_directory(build_name: &str) -> String {
    format!("output-{build_name}")
}

/// packer-plugin-qemu's `vm_name` for a build.
pub fn vm_name(build_name: &str) -> String {
    format!("packer-{build_name}")
}

impl QemuConfig {
    /// Packer's defaults for the build `build_name`, which names the output
    /// directory and the VM. No source (`iso_urls` empty, no checksum) and
    /// no communicator: a template must give its source and its SSH user.
    pub fn for_build(build_name: &str) -> QemuConfig {
        QemuConfig {
            iso_urls: Vec::new(),
            iso_checksum: Checksum::None,
            iso_target_path: None,
            disk_image: false,
            use_backing_file: false,
            skip_resize_disk: false,
            disk_size_mib: DISK_SIZE_MIB,
            format: DiskFormat::Qcow2,
            disk_interface: DISK_INTERFACE.into(),
            disk_cache: DISK_CACHE.into(),
            disk_discard: None,
            disk_detect_zeroes: None,
            skip_compaction: false,
            disk_compression: false,
            accelerator: None,
            cpus: CPUS,
            memory_mib: MEMORY_MIB,
            machine_type: MACHINE_TYPE.into(),
            net_device: NET_DEVICE.into(),
            qemu_binary: QEMU_BINARY.into(),
            qemuargs: Vec::new(),
            headless: false,
            firmware: None,
            efi_boot: false,
            cd_files: Vec::new(),
            cd_content: Default::default(),
            cd_label: None,
            floppy: Default::default(),
            output_directory: PathBuf::from(output_directory(build_name)),
            output_directory_shown: PathBuf::from(output_directory(build_name)),
            vm_name: vm_name(build_name),
            shutdown_command: None,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            boot_wait: BOOT_WAIT,
            boot: Default::default(),
            http: Default::default(),
            vnc: Default::default(),
            host_port_min: HOST_PORT_MIN,
            host_port_max: HOST_PORT_MAX,
            communicator: Communicator::None,
        }
    }
}

/// A builder without a `name` is named after its type, `qemu`.
impl Default for QemuConfig {
    fn default() -> QemuConfig {
        QemuConfig::for_build("qemu")
    }
}

/// No user: Packer has no default `ssh_username`, a template must give one.
impl Default for SshOptions {
    fn default() -> SshOptions {
        SshOptions {
            username: String::new(),
            password: None,
            private_key_file: None,
            host: None,
            timeout: SSH_TIMEOUT,
            pause_before_connecting: Duration::ZERO,
            port: SSH_PORT,
            handshake_attempts: SSH_HANDSHAKE_ATTEMPTS,
            pty: false,
            temporary_key_pair_type: KeyPairType::Ed25519,
            not_applied: Vec::new(),
        }
    }
}

/// No commands: a template gives `inline`, `script` or `scripts`.
impl Default for ShellConfig {
    fn default() -> ShellConfig {
        ShellConfig {
            source: ShellSource::Inline(Vec::new()),
            environment: Vec::new(),
            execute_command: SHELL_EXECUTE.into(),
            inline_shebang: SHEBANG.into(),
            valid_exit_codes: VALID_EXIT_CODES.to_vec(),
            expect_disconnect: false,
            remote_folder: REMOTE_FOLDER.into(),
            remote_file: None,
            skip_clean: false,
            start_retry_timeout: START_RETRY_TIMEOUT,
        }
    }
}

/// Unnamed, with nothing to run: a checks file gives both.
impl Default for CheckSpec {
    fn default() -> CheckSpec {
        CheckSpec {
            name: String::new(),
            kind: CheckKind::Inline(Vec::new()),
            expect_exit: 0,
            expect_stdout: None,
            expect_stderr: None,
            timeout: CHECK_TIMEOUT,
            retry_for: Duration::ZERO,
        }
    }
}

/// The `vagrant` post-processor's box when `output` is not set.
pub const VAGRANT_OUTPUT: &str = "packer_{{ .BuildName }}_{{.Provider}}.box";
/// The `vagrant` post-processor's gzip level when `compression_level` is
/// not set, or -1: Go's default compression.
pub const VAGRANT_COMPRESSION_LEVEL: u32 = 6;
