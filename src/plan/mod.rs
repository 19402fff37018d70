//! What to build: the plain data a template turns into, one typed config per
//! stage.
//!
//! `template` produces a [`Plan`]; `pipeline` and the stages consume it and
//! never see the template. Everything here is plain data: durations are
//! parsed, sizes are in MiB, paths are resolved against the working
//! directory, and every `{{ }}` expression is evaluated, except the "late"
//! references Packer only knows at run time (`{{ .Vars }}`, `{{ .Path }}`,
//! `{{ .SSHHostPort }}`, ...), which stay in the string for [`render_late`].

pub mod compression;
pub mod defaults;
pub mod render;

pub use compression::{CompressionLevel, InvalidCompressionLevel};
pub use render::render_late;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A whole template after parsing, variable resolution and validation: one
/// [`BuildSpec`] per builder, in template order.
#[derive(Clone)]
pub struct Plan {
    pub description: Option<String>,
    pub builds: Vec<BuildSpec>,
    /// Values of `sensitive-variables`, to be replaced by `<sensitive>` in
    /// every output.
    pub sensitive_values: Vec<String>,
    /// The variables as finally resolved (for `kiln inspect`), with sensitive
    /// ones flagged.
    pub variables: Vec<VariableInfo>,
}

#[derive(Clone, PartialEq)]
pub struct VariableInfo {
    pub name: String,
    pub value: String,
    pub sensitive: bool,
    /// A variable declared with `null` has no default and must be set.
    pub required: bool,
}

const MASK: &str = "<sensitive>";

/// Values derived from a secret (a URL holding a password, a command
/// line) may be anywhere in the builds: the whole rendering is masked.
impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = format!(
            "Plan {{ description: {:?}, builds: {:?}, sensitive_values: [{} hidden], variables: {:?} }}",
            self.description,
            self.builds,
            self.sensitive_values.len(),
            self.variables
        );
        let mut masked = inner;
        for value in &self.sensitive_values {
            let debug = format!("{value:?}");
            for form in [value.as_str(), &debug[1..debug.len() - 1]] {
                if !form.is_empty() {
                    masked = masked.replace(form, MASK);
                }
            }
        }
        f.write_str(&masked)
    }
}

impl fmt::Debug for VariableInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value: &dyn fmt::Debug = if self.sensitive { &MASK } else { &self.value };
        f.debug_struct("VariableInfo")
            .field("name", &self.name)
            .field("value", value)
            .field("sensitive", &self.sensitive)
            .field("required", &self.required)
            .finish()
    }
}

/// One build: a builder with the provisioners and post-processors that apply
/// to it (`only`/`except` already applied, `override` already merged).
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The builder's `name`, or its `type` when it has none.
    pub name: String,
    /// Always `qemu` for now.
    pub builder_type: String,
    pub qemu: QemuConfig,
    pub provisioners: Vec<ProvisionerSpec>,
    /// Post-processor sequences: each inner list runs as one chain, each chain
    /// getting the build's artifact.
    pub post_processors: Vec<Vec<PostProcessorSpec>>,
    /// Smoke-test checks run on a fresh boot of the result (kiln's `tests`).
    pub tests: Vec<CheckSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Kvm,
    Tcg,
    /// `accelerator: none`: QEMU's own default, no `-accel`/`-machine accel=`.
    None,
}

/// `iso_checksum`: a digest to check the source image against, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    None,
    Sha256(String),
    Sha512(String),
    Sha1(String),
    Md5(String),
}

/// The qemu builder's options, with Packer's defaults applied.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `iso_url` followed by `iso_urls`: local paths (absolute) to try in order.
    pub iso_urls: Vec<PathBuf>,
    pub iso_checksum: Checksum,
    /// `disk_image`: the source is a bootable disk (cloud image), not an ISO.
    pub disk_image: bool,
    pub use_backing_file: bool,
    pub skip_resize_disk: bool,
    /// Default 40960.
    pub disk_size_mib: u64,
    pub format: DiskFormat,
    /// virtio (default), ide, scsi, virtio-scsi, ...
    pub disk_interface: String,
    /// writeback (default)
    pub disk_cache: String,
    /// ignore (default) | unmap
    pub disk_discard: String,
    /// off (default) | on | unmap
    pub disk_detect_zeroes: String,
    pub skip_compaction: bool,
    pub disk_compression: bool,
    /// `None`: pick automatically (KVM when usable, else TCG).
    pub accelerator: Option<Accelerator>,
    pub cpus: u32,
    pub memory_mib: u64,
    /// pc (default)
    pub machine_type: String,
    /// virtio-net (default)
    pub net_device: String,
    /// qemu-system-x86_64 (default)
    pub qemu_binary: String,
    /// Extra argument groups; may hold late references such as
    /// `{{ .SSHHostPort }}`, `{{ .Name }}`, `{{ .OutputDir }}`.
    pub qemuargs: Vec<Vec<String>>,
    pub headless: bool,
    pub firmware: Option<PathBuf>,
    pub efi_boot: bool,
    pub cd_files: Vec<PathBuf>,
    /// File name on the CD → content.
    pub cd_content: BTreeMap<String, String>,
    pub cd_label: Option<String>,
    pub output_directory: PathBuf,
    pub vm_name: String,
    pub shutdown_command: Option<String>,
    pub shutdown_timeout: Duration,
    pub boot_wait: Duration,
    pub host_port_min: u16,
    pub host_port_max: u16,
    pub communicator: Communicator,
}

#[derive(Debug, Clone)]
pub enum Communicator {
    None,
    Ssh(SshOptions),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPairType {
    Ed25519,
    Rsa,
}

#[derive(Clone)]
pub struct SshOptions {
    pub username: String,
    pub password: Option<String>,
    pub private_key_file: Option<PathBuf>,
    /// Default 5m.
    pub timeout: Duration,
    /// The guest's port. Default 22.
    pub port: u16,
    /// Default 10.
    pub handshake_attempts: u32,
    pub pty: bool,
    pub temporary_key_pair_type: KeyPairType,
}

/// Without the password.
impl fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("private_key_file", &self.private_key_file)
            .field("timeout", &self.timeout)
            .field("port", &self.port)
            .field("handshake_attempts", &self.handshake_attempts)
            .field("pty", &self.pty)
            .field("temporary_key_pair_type", &self.temporary_key_pair_type)
            .finish()
    }
}

/// Settings every provisioner has.
#[derive(Debug, Clone, Default)]
pub struct ProvisionerCommon {
    pub pause_before: Duration,
    pub max_retries: u32,
    /// Zero means no timeout.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ProvisionerKind {
    Shell(ShellConfig),
    File(FileConfig),
    ShellLocal(ShellLocalConfig),
}

#[derive(Debug, Clone)]
pub struct ProvisionerSpec {
    /// `shell`, `file`, `shell-local`: for messages.
    pub type_name: String,
    /// Position in the template's `provisioners` array: for messages.
    pub index: usize,
    pub common: ProvisionerCommon,
    pub kind: ProvisionerKind,
}

/// What a `shell` provisioner runs: inline commands become one script.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellSource {
    Inline(Vec<String>),
    /// `script` / `scripts`, absolute local paths, in order.
    Scripts(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct ShellConfig {
    pub source: ShellSource,
    /// `environment_vars` entries (`K=V`) followed by `env` (sorted by key),
    /// as Packer does.
    pub environment: Vec<(String, String)>,
    /// Late references: `{{ .Vars }}`, `{{ .Path }}`.
    /// Default: `chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}`.
    pub execute_command: String,
    /// Default `/bin/sh -e`.
    pub inline_shebang: String,
    /// Default `[0]`.
    pub valid_exit_codes: Vec<i64>,
    pub expect_disconnect: bool,
    /// Default `/tmp`.
    pub remote_folder: String,
    /// Default `script_<nnnn>.sh` (Packer's `remote_file`).
    pub remote_file: Option<String>,
    pub skip_clean: bool,
    /// Packer's `start_retry_timeout`, default 5m.
    pub start_retry_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileSource {
    /// `source` / `sources`: paths as written (a trailing `/` matters), local
    /// for uploads (resolved to absolute, trailing slash kept), remote for
    /// downloads.
    Paths(Vec<String>),
    /// `content`: written to `destination` as a file.
    Content(String),
}

#[derive(Debug, Clone)]
pub struct FileConfig {
    pub source: FileSource,
    pub destination: String,
    pub direction: Direction,
    /// Packer's `generated`: the source may not exist at validation time.
    pub generated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShellLocalSource {
    Inline(Vec<String>),
    /// `command`: one command line.
    Command(String),
    Scripts(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct ShellLocalConfig {
    pub source: ShellLocalSource,
    pub environment: Vec<(String, String)>,
    /// Default `["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]`.
    pub execute_command: Vec<String>,
    /// Default `/bin/sh -e`.
    pub inline_shebang: String,
    pub valid_exit_codes: Vec<i64>,
}

#[derive(Debug, Clone)]
pub enum PostProcessorSpec {
    Checksum(ChecksumPostConfig),
    Manifest(ManifestConfig),
    Compress(CompressConfig),
    GceImport(Box<GceImportConfig>),
}

impl PostProcessorSpec {
    /// The post-processor's `type` in a template.
    pub fn type_name(&self) -> &'static str {
        match self {
            PostProcessorSpec::Checksum(_) => "checksum",
            PostProcessorSpec::Manifest(_) => "manifest",
            PostProcessorSpec::Compress(_) => "compress",
            PostProcessorSpec::GceImport(_) => "googlecompute-import",
        }
    }
}

/// `compress`: the disk as GCE's `disk.raw` tarball, written to a local file.
#[derive(Debug, Clone)]
pub struct CompressConfig {
    /// Late references `{{ .BuildName }}`, `{{ .BuilderType }}`. Default
    /// `packer_{{.BuildName}}_{{.BuilderType}}.tar.gz`.
    pub output: String,
    /// gzip level 1-9, default 6.
    pub level: CompressionLevel,
    pub keep_input_artifact: bool,
}

/// `googlecompute-import`: upload the disk (as a GCE tarball, streamed) to
/// Cloud Storage and register it as a Compute Engine image.
#[derive(Debug, Clone)]
pub struct GceImportConfig {
    pub project_id: String,
    pub account_file: Option<PathBuf>,
    /// A service account to act as: its tokens come from IAM
    /// (`generateAccessToken`) with the credentials found.
    pub impersonate_service_account: Option<String>,
    pub bucket: String,
    /// Default `packer-import-{{timestamp}}.tar.gz`.
    pub gcs_object_name: String,
    pub image_name: String,
    pub image_family: Option<String>,
    pub image_description: Option<String>,
    pub image_labels: BTreeMap<String, String>,
    pub image_guest_os_features: Vec<String>,
    pub image_storage_locations: Vec<String>,
    pub image_architecture: Option<String>,
    pub keep_input_artifact: bool,
    /// Keep the uploaded object after the import.
    pub skip_clean: bool,
    /// kiln extension: how long to wait for the image to be created.
    /// Default 30m.
    pub image_create_timeout: Duration,
    /// kiln extension: gzip level for the streamed tarball, default 6.
    pub compression_level: CompressionLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone)]
pub struct ChecksumPostConfig {
    /// Default `[md5]`.
    pub checksum_types: Vec<ChecksumType>,
    /// Late references `{{ .BuildName }}`, `{{ .BuilderType }}`,
    /// `{{ .ChecksumType }}`. Default
    /// `packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum`.
    pub output: String,
    pub keep_input_artifact: bool,
}

#[derive(Debug, Clone)]
pub struct ManifestConfig {
    /// Default `packer-manifest.json`.
    pub output: PathBuf,
    pub strip_path: bool,
    pub strip_time: bool,
    pub custom_data: BTreeMap<String, String>,
    pub keep_input_artifact: bool,
}

/// One smoke-test check (a kiln extension: the template's top-level
/// `tests`, or the file given to `kiln test`).
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    /// Default 0.
    pub expect_exit: i64,
    /// Regular expressions (already validated).
    pub expect_stdout: Option<String>,
    pub expect_stderr: Option<String>,
    /// Per attempt. Default 1m.
    pub timeout: Duration,
    /// Keep trying until it passes or this much time has gone by (services
    /// that start late). Zero: one attempt.
    pub retry_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

/// What a check runs in the guest. The declarative kinds expand to shell.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `inline`: commands run by `/bin/sh -e`.
    Inline(Vec<String>),
    /// `script`: a local script, uploaded and run.
    Script(PathBuf),
    /// `command`: one command line, its exit code and output checked.
    Command(String),
    File {
        path: String,
        exists: bool,
        /// Octal, as `stat -c %a` prints it (`644`, `4755`).
        mode: Option<String>,
        owner: Option<String>,
        group: Option<String>,
        contains: Option<String>,
    },
    Service {
        name: String,
        active: Option<bool>,
        enabled: Option<bool>,
    },
    Port {
        port: u16,
        protocol: PortProtocol,
        listening: bool,
    },
    Package {
        name: String,
        installed: bool,
    },
}
