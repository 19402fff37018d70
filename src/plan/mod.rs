//! What to build: the plain data a template turns into, one typed config per
//! stage.
//!
//! `template` produces a [`Plan`]; `pipeline` and the stages consume it and
//! never see the template. Everything here is plain data: durations are
//! parsed, sizes are in MiB, paths are resolved against the working
//! directory, and every `{{ }}` expression is evaluated, except the "late"
//! references Packer only knows at run time (`{{ .Vars }}`, `{{ .Path }}`,
//! `{{ .SSHHostPort }}`, ...), which stay in the string for [`render_late`].

mod ansible;
pub mod boot;
mod compression;
pub mod defaults;
mod gce;
pub(crate) mod render;

pub use ansible::{
    ANSIBLE_COMMAND, ANSIBLE_LOCAL_COMMAND, ANSIBLE_LOCAL_STAGING, AnsibleConfig,
    AnsibleLocalConfig, AnsibleLocalPlaybooks, GALAXY_COMMAND, HOST_ALIAS,
};
pub use boot::{BootConfig, HttpConfig, VncConfig};
pub use compression::{CompressionLevel, InvalidCompressionLevel};
pub use gce::{GceBuild, GceImage, GceInstance};
pub use render::render_late;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A whole template after parsing, variable resolution and validation: one
/// [`BuildSpec`] per builder, in template order.
#[derive(Clone)]
pub struct Plan {
    /// The template's `description`.
    pub description: Option<String>,
    /// One build per builder, in template order.
    pub builds: Vec<BuildSpec>,
    /// Values of `sensitive-variables`, to be replaced by `<sensitive>` in
    /// every output.
    pub sensitive_values: Vec<String>,
    /// The variables as finally resolved (for `kiln inspect`), with sensitive
    /// ones flagged.
    pub variables: Vec<VariableInfo>,
    /// What is worth telling about a template that loads: the deprecated
    /// keys it carries (read as their modern form, which `kiln fix`
    /// writes), one line each, with its place (`builders[0]: ...`).
    pub warnings: Vec<String>,
    /// The builds of builder types kiln does not run, in template order.
    pub skipped: Vec<SkippedBuild>,
}

/// A build of a builder type kiln recognises but does not run: it is
/// named (`-only`, `only`/`except` may refer to it) and never built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBuild {
    /// Its name.
    pub name: String,
    /// Its builder type (`virtualbox-iso`).
    pub builder_type: String,
    /// Why it is skipped (`builder type virtualbox-iso is not supported by
    /// kiln (it builds qemu and googlecompute)`).
    pub reason: String,
}

/// One variable of the template, as `kiln inspect` shows it.
#[derive(Clone, PartialEq)]
pub struct VariableInfo {
    /// The variable's name.
    pub name: String,
    /// Its value after `-var`, `-var-file` and the defaults.
    pub value: String,
    /// Listed in `sensitive-variables`: shown masked.
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
            "Plan {{ description: {:?}, builds: {:?}, sensitive_values: [{} hidden], variables: {:?}, warnings: {:?}, skipped: {:?} }}",
            self.description,
            self.builds,
            self.sensitive_values.len(),
            self.variables,
            self.warnings,
            self.skipped
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
    /// `qemu` or `googlecompute`.
    pub builder_type: String,
    /// The builder's settings: a `googlecompute` builder's too, mapped
    /// onto the QEMU machine that emulates its instance.
    pub qemu: QemuConfig,
    /// A `googlecompute` builder's instance and image; `None` for `qemu`.
    pub gce: Option<GceBuild>,
    /// The provisioners, in template order.
    pub provisioners: Vec<ProvisionerSpec>,
    /// Post-processor sequences: each inner list runs as one chain, each chain
    /// getting the build's artifact.
    pub post_processors: Vec<Vec<PostProcessorSpec>>,
    /// Smoke-test checks run on a fresh boot of the result (kiln's `tests`).
    pub tests: Vec<CheckSpec>,
}

/// The format of the disk a build writes (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// QEMU's copy-on-write format, the default.
    Qcow2,
    /// A raw disk image.
    Raw,
}

impl DiskFormat {
    /// The name `qemu-img` uses for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// The QEMU accelerator a template names (`accelerator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// The Linux kernel's virtual machine.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
    /// `accelerator: none`: QEMU's own default, no `-accel`/`-machine accel=`.
    None,
}

/// `iso_checksum`: a digest to check the source image against, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// `none`: the source is not checked.
    None,
    /// A SHA-256 digest, as lowercase hex.
    Sha256(String),
    /// A SHA-512 digest, as lowercase hex.
    Sha512(String),
    /// A SHA-1 digest, as lowercase hex.
    Sha1(String),
    /// An MD5 digest, as lowercase hex.
    Md5(String),
    /// `file:URL` or `file:PATH`: a checksum list (`SHA256SUMS` style) that
    /// names the source's digest beside its file name.
    File(Location),
}

/// Where a source image or a checksum list is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file (a path or a `file:` URL), absolute; used in place.
    Path(PathBuf),
    /// An `http` or `https` URL, downloaded into the cache.
    Url(url::Url),
    /// `gs://bucket/object`: a Compute Engine image exported to Cloud
    /// Storage (a tar.gz holding `disk.raw`), downloaded into the cache and
    /// unpacked there; the disk is raw.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The object's name.
        object: String,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Path(path) => write!(f, "{}", path.display()),
            Location::Url(url) => write!(f, "{url}"),
            Location::Gcs { bucket, object } => write!(f, "gs://{bucket}/{object}"),
        }
    }
}

/// The qemu builder's options, with Packer's defaults applied.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `iso_url` or `iso_urls`: the places to get the source from, tried
    /// in order.
    pub iso_urls: Vec<Location>,
    /// The digest the source must have.
    pub iso_checksum: Checksum,
    /// `iso_target_path`: where a downloaded source is kept instead of the
    /// cache (a directory when it has no extension), absolute.
    pub iso_target_path: Option<PathBuf>,
    /// `disk_image`: the source is a bootable disk (cloud image), not an ISO.
    pub disk_image: bool,
    /// `use_backing_file`: the disk is a qcow2 overlay on the source
    /// instead of a copy.
    pub use_backing_file: bool,
    /// `skip_resize_disk`: the source disk keeps its size.
    pub skip_resize_disk: bool,
    /// The disk's size in MiB. Default 40960.
    pub disk_size_mib: u64,
    /// The format the disk is written in.
    pub format: DiskFormat,
    /// How the disk is attached: virtio (default), ide, scsi, virtio-scsi,
    /// ...
    pub disk_interface: String,
    /// The disk's cache mode: writeback (default), writethrough, none, ...
    pub disk_cache: String,
    /// Whether the guest's discards free space: ignore or unmap; `None`
    /// when the template does not say (Packer's default is ignore; kiln's
    /// build disk takes unmap, see [`QemuConfig::discard`]).
    pub disk_discard: Option<String>,
    /// Whether written zeroes are detected: off, on or unmap; `None` when
    /// the template does not say (see [`QemuConfig::detect_zeroes`]).
    pub disk_detect_zeroes: Option<String>,
    /// `skip_compaction`: the qcow2 disk is not rewritten after the build.
    pub skip_compaction: bool,
    /// `disk_compression`: the compacted qcow2 disk is compressed.
    pub disk_compression: bool,
    /// `None`: pick automatically (KVM when usable, else TCG).
    pub accelerator: Option<Accelerator>,
    /// Virtual CPUs. Default 1.
    pub cpus: u32,
    /// Guest memory in MiB. Default 512.
    pub memory_mib: u64,
    /// QEMU's machine type: pc (default), q35, ...
    pub machine_type: String,
    /// The network card: virtio-net (default), e1000, ...
    pub net_device: String,
    /// The QEMU program: qemu-system-x86_64 (default).
    pub qemu_binary: String,
    /// Extra argument groups; may hold late references such as
    /// `{{ .SSHHostPort }}`, `{{ .Name }}`, `{{ .OutputDir }}`.
    pub qemuargs: Vec<Vec<String>>,
    /// `headless`: no display window.
    pub headless: bool,
    /// `firmware`: a firmware image (OVMF, ...) given to QEMU.
    pub firmware: Option<PathBuf>,
    /// `efi_boot`: boot with UEFI firmware.
    pub efi_boot: bool,
    /// Files and directories (globs allowed) put on an extra CD.
    pub cd_files: Vec<PathBuf>,
    /// File name on the CD → content.
    pub cd_content: BTreeMap<String, String>,
    /// The extra CD's volume label (Packer's `packer` when `None`).
    pub cd_label: Option<String>,
    /// `floppy_files`, `floppy_dirs`, `floppy_content`, `floppy_label`: a
    /// FAT12 floppy attached as the first floppy drive when not empty.
    pub floppy: FloppyConfig,
    /// Where the disk is written, absolute. Default `output-<build name>`.
    pub output_directory: PathBuf,
    /// `output_directory` as the template wrote it (relative to the working
    /// directory, or absolute): what messages, the artifact and the
    /// manifest show, as Packer shows it.
    pub output_directory_shown: PathBuf,
    /// The disk's file name. Default `packer-<build name>`.
    pub vm_name: String,
    /// The command that shuts the guest down over SSH; `None` powers it
    /// off through ACPI.
    pub shutdown_command: Option<String>,
    /// How long shutting down may take. Default 5m.
    pub shutdown_timeout: Duration,
    /// How long to wait after starting the VM before typing the boot
    /// command. Default 10s.
    pub boot_wait: Duration,
    /// `boot_command` and its timing.
    pub boot: BootConfig,
    /// The HTTP server (`http_directory`, `http_content`).
    pub http: HttpConfig,
    /// VNC and the display.
    pub vnc: VncConfig,
    /// The lowest host port forwarded to the guest's SSH port. Default 2222.
    pub host_port_min: u16,
    /// The highest host port forwarded to the guest's SSH port. Default 4444.
    pub host_port_max: u16,
    /// How kiln reaches the guest.
    pub communicator: Communicator,
}

impl QemuConfig {
    /// The build disk's `discard=`: the template's, else
    /// [`defaults::DISK_DISCARD`].
    pub fn discard(&self) -> &str {
        self.disk_discard
            .as_deref()
            .unwrap_or(defaults::DISK_DISCARD)
    }

    /// The build disk's `detect-zeroes=`: the template's; else unmap when
    /// discards reach the image (QEMU allows it only then), off otherwise.
    pub fn detect_zeroes(&self) -> &str {
        match &self.disk_detect_zeroes {
            Some(mode) => mode,
            None if self.discard() == "unmap" => defaults::DISK_DETECT_ZEROES,
            None => "off",
        }
    }

    /// Whether every block the guest freed or zeroed became a hole in the
    /// image, so the image's allocation is its data.
    pub fn frees_what_the_guest_frees(&self) -> bool {
        self.discard() == "unmap" && self.detect_zeroes() == "unmap"
    }
}

/// The floppy a build attaches, with Packer's meaning: `files` land flat
/// at the root (a directory's files too, without its tree), `dirs` keep
/// their tree under their own name, `content` keys are paths on the floppy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FloppyConfig {
    /// `floppy_files`: files and directories (globs allowed), absolute.
    pub files: Vec<PathBuf>,
    /// `floppy_dirs`: files and directories (globs allowed), absolute.
    pub dirs: Vec<PathBuf>,
    /// `floppy_content`: path on the floppy → content.
    pub content: BTreeMap<String, String>,
    /// `floppy_label`: the volume label (Packer's `packer` when `None`).
    pub label: Option<String>,
}

impl FloppyConfig {
    /// Whether the template asks for a floppy at all (Packer makes none
    /// without files).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty() && self.content.is_empty()
    }
}

/// How kiln reaches the guest (`communicator`).
#[derive(Debug, Clone)]
pub enum Communicator {
    /// `none`: no connection; no provisioners run.
    None,
    /// SSH, the default.
    Ssh(SshOptions),
}

/// The type of the temporary key pair made when no password or key is
/// given (`temporary_key_pair_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPairType {
    /// Ed25519, the default.
    Ed25519,
    /// RSA.
    Rsa,
}

/// The SSH communicator's settings.
#[derive(Clone)]
pub struct SshOptions {
    /// `ssh_username`: the user to connect as.
    pub username: String,
    /// `ssh_password`, when the guest takes one.
    pub password: Option<String>,
    /// `ssh_private_key_file`: a key to log in with instead of a temporary
    /// one.
    pub private_key_file: Option<PathBuf>,
    /// `ssh_host`: the address to connect to instead of 127.0.0.1, where
    /// QEMU forwards the guest's SSH port.
    pub host: Option<String>,
    /// How long to keep trying to connect. Default 5m.
    pub timeout: Duration,
    /// `pause_before_connecting`: a wait after boot before the first
    /// connection attempt. Default none.
    pub pause_before_connecting: Duration,
    /// The guest's port. Default 22.
    pub port: u16,
    /// SSH handshakes tried before giving up. Default 10.
    pub handshake_attempts: u32,
    /// `ssh_pty`: ask for a pseudo-terminal for commands.
    pub pty: bool,
    /// The type of the temporary key pair.
    pub temporary_key_pair_type: KeyPairType,
    /// Packer SSH options the template sets that kiln accepts but does not
    /// apply (bastions, proxies, agents, ...), said once per build.
    pub not_applied: Vec<String>,
}

/// Without the password.
impl fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .field("private_key_file", &self.private_key_file)
            .field("host", &self.host)
            .field("timeout", &self.timeout)
            .field("pause_before_connecting", &self.pause_before_connecting)
            .field("port", &self.port)
            .field("handshake_attempts", &self.handshake_attempts)
            .field("pty", &self.pty)
            .field("temporary_key_pair_type", &self.temporary_key_pair_type)
            .field("not_applied", &self.not_applied)
            .finish()
    }
}

/// Settings every provisioner has.
#[derive(Debug, Clone, Default)]
pub struct ProvisionerCommon {
    /// `pause_before`: waited before the provisioner runs.
    pub pause_before: Duration,
    /// `max_retries`: how many times a failed run is retried.
    pub max_retries: u32,
    /// Zero means no timeout.
    pub timeout: Duration,
}

/// What a provisioner does, by type.
#[derive(Debug, Clone)]
pub enum ProvisionerKind {
    /// `shell`: a script run in the guest.
    Shell(ShellConfig),
    /// `file`: files copied to or from the guest.
    File(FileConfig),
    /// `shell-local`: a command run on the host.
    ShellLocal(ShellLocalConfig),
    /// `ansible`: a playbook run from the host against the guest.
    Ansible(Box<AnsibleConfig>),
    /// `ansible-local`: a playbook uploaded to and run in the guest.
    AnsibleLocal(Box<AnsibleLocalConfig>),
}

/// One provisioner of a build.
#[derive(Debug, Clone)]
pub struct ProvisionerSpec {
    /// `shell`, `file`, `shell-local`: for messages.
    pub type_name: String,
    /// Position in the template's `provisioners` array: for messages.
    pub index: usize,
    /// The settings every provisioner has.
    pub common: ProvisionerCommon,
    /// The provisioner's own settings.
    pub kind: ProvisionerKind,
}

/// What a `shell` provisioner runs: inline commands become one script.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellSource {
    /// `inline`: commands, one per line of the script.
    Inline(Vec<String>),
    /// `script` / `scripts`, absolute local paths, in order.
    Scripts(Vec<PathBuf>),
}

/// The `shell` provisioner's settings.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// What runs.
    pub source: ShellSource,
    /// `environment_vars` entries (`K=V`) followed by `env` (sorted by key),
    /// as Packer does.
    pub environment: Vec<(String, String)>,
    /// The command line that runs the script, with the late references
    /// `{{ .Vars }}` and `{{ .Path }}`. Default: `chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}`.
    pub execute_command: String,
    /// The interpreter of `inline` commands. Default `/bin/sh -e`.
    pub inline_shebang: String,
    /// Exit codes that count as success. Default `[0]`.
    pub valid_exit_codes: Vec<i64>,
    /// `expect_disconnect`: the connection may drop while it runs (a reboot).
    pub expect_disconnect: bool,
    /// The guest directory the script is uploaded to. Default `/tmp`.
    pub remote_folder: String,
    /// The script's name in the guest. Default `script_<nnnn>.sh` (Packer's
    /// `remote_file`).
    pub remote_file: Option<String>,
    /// `skip_clean`: the uploaded script is left in the guest.
    pub skip_clean: bool,
    /// Packer's `start_retry_timeout`, default 5m.
    pub start_retry_timeout: Duration,
}

/// Which way a `file` provisioner copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the host to the guest, the default.
    Upload,
    /// From the guest to the host.
    Download,
}

/// What a `file` provisioner copies.
#[derive(Debug, Clone, PartialEq)]
pub enum FileSource {
    /// `source` / `sources`: paths as written (a trailing `/` matters), local
    /// for uploads (resolved to absolute, trailing slash kept), remote for
    /// downloads.
    Paths(Vec<String>),
    /// `content`: written to `destination` as a file.
    Content(String),
}

/// The `file` provisioner's settings.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// What is copied.
    pub source: FileSource,
    /// Where it goes: a guest path for uploads, a local one for downloads.
    pub destination: String,
    /// Which way it is copied.
    pub direction: Direction,
    /// Packer's `generated`: the source may not exist at validation time.
    pub generated: bool,
}

/// What a `shell-local` provisioner runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellLocalSource {
    /// `inline`: commands, one per line of the script.
    Inline(Vec<String>),
    /// `command`: one command line.
    Command(String),
    /// `script` / `scripts`: local scripts, absolute, in order.
    Scripts(Vec<PathBuf>),
}

/// The `shell-local` provisioner's settings.
#[derive(Debug, Clone)]
pub struct ShellLocalConfig {
    /// What runs.
    pub source: ShellLocalSource,
    /// `environment_vars` entries (`K=V`) followed by `env`.
    pub environment: Vec<(String, String)>,
    /// The command that runs each script, with the late references
    /// `{{.Vars}}` and `{{.Script}}`. Default
    /// `["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]`.
    pub execute_command: Vec<String>,
    /// The interpreter of `inline` commands. Default `/bin/sh -e`.
    pub inline_shebang: String,
    /// Exit codes that count as success. Default `[0]`.
    pub valid_exit_codes: Vec<i64>,
    /// `only_on`: the operating systems (Go's names: `linux`, `darwin`,
    /// ...) it runs on; empty: all.
    pub only_on: Vec<String>,
}

/// One post-processor of a build.
#[derive(Debug, Clone)]
pub enum PostProcessorSpec {
    /// `checksum`: checksum files of the artifact.
    Checksum(ChecksumPostConfig),
    /// `manifest`: a JSON record of the build.
    Manifest(ManifestConfig),
    /// `compress`: the disk as a GCE tarball.
    Compress(CompressConfig),
    /// `googlecompute-import`: the disk uploaded and registered as a GCE
    /// image.
    GceImport(Box<GceImportConfig>),
    /// `vagrant`: the disk as a libvirt Vagrant box.
    Vagrant(VagrantConfig),
    /// `shell-local`: commands run on this machine; the artifact passes
    /// through, kept.
    ShellLocal(ShellLocalConfig),
}

impl PostProcessorSpec {
    /// The post-processor's `type` in a template.
    pub fn type_name(&self) -> &'static str {
        match self {
            PostProcessorSpec::Checksum(_) => "checksum",
            PostProcessorSpec::Manifest(_) => "manifest",
            PostProcessorSpec::Compress(_) => "compress",
            PostProcessorSpec::GceImport(_) => "googlecompute-import",
            PostProcessorSpec::Vagrant(_) => "vagrant",
            PostProcessorSpec::ShellLocal(_) => "shell-local",
        }
    }
}

/// `vagrant`: a libvirt box (`box.img`, `metadata.json`, `Vagrantfile`
/// and the `include` files in a tar, gzip'd unless the level is 0), with
/// `override.libvirt` already applied.
#[derive(Debug, Clone)]
pub struct VagrantConfig {
    /// The box's path, with the late references `{{ .BuildName }}`,
    /// `{{ .Provider }}` and `{{ .ArtifactId }}`. Default
    /// `packer_{{ .BuildName }}_{{.Provider}}.box`.
    pub output: String,
    /// gzip level 1-9, or 0 for a plain tar. Default 6 (Go's default
    /// compression, which Packer uses).
    pub compression_level: u32,
    /// Files put at the box's root under their own names, absolute.
    pub include: Vec<PathBuf>,
    /// A file whose content (with the same late references as `output`) is
    /// appended to the box's Vagrantfile, absolute.
    pub vagrantfile_template: Option<PathBuf>,
    /// Keep the disk after making the box.
    pub keep_input_artifact: bool,
}

/// `compress`: the disk as GCE's `disk.raw` tarball, written to a local file.
#[derive(Debug, Clone)]
pub struct CompressConfig {
    /// The tarball's path, with the late references `{{ .BuildName }}` and
    /// `{{ .BuilderType }}`. Default
    /// `packer_{{.BuildName}}_{{.BuilderType}}.tar.gz`.
    pub output: String,
    /// gzip level 1-9, default 6.
    pub level: CompressionLevel,
    /// Keep the disk after making the tarball.
    pub keep_input_artifact: bool,
}

/// `googlecompute-import`: upload the disk (as a GCE tarball, streamed) to
/// Cloud Storage and register it as a Compute Engine image.
#[derive(Debug, Clone)]
pub struct GceImportConfig {
    /// The Google Cloud project the image is created in.
    pub project_id: String,
    /// A service account key file; `None` uses the default credentials.
    pub account_file: Option<PathBuf>,
    /// A service account to act as: its tokens come from IAM
    /// (`generateAccessToken`) with the credentials found.
    pub impersonate_service_account: Option<String>,
    /// The Cloud Storage bucket the tarball is uploaded to.
    pub bucket: String,
    /// The uploaded object's name. Default
    /// `packer-import-{{timestamp}}.tar.gz`.
    pub gcs_object_name: String,
    /// The image's name.
    pub image_name: String,
    /// The image family it joins.
    pub image_family: Option<String>,
    /// The image's description.
    pub image_description: Option<String>,
    /// Labels put on the image.
    pub image_labels: BTreeMap<String, String>,
    /// Guest OS features (`UEFI_COMPATIBLE`, `GVNIC`, ...) of the image.
    pub image_guest_os_features: Vec<String>,
    /// Where the image is stored (regions or multi-regions).
    pub image_storage_locations: Vec<String>,
    /// The image's architecture (`X86_64`, `ARM64`).
    pub image_architecture: Option<String>,
    /// Keep the disk after the import.
    pub keep_input_artifact: bool,
    /// Keep the uploaded object after the import.
    pub skip_clean: bool,
    /// kiln extension: how long to wait for the image to be created.
    /// Default 30m.
    pub image_create_timeout: Duration,
    /// kiln extension: gzip level for the streamed tarball, default 6.
    pub compression_level: CompressionLevel,
}

/// A hash the `checksum` post-processor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// The `checksum` post-processor's settings.
#[derive(Debug, Clone)]
pub struct ChecksumPostConfig {
    /// The hashes written, one file each. Default `[md5]`.
    pub checksum_types: Vec<ChecksumType>,
    /// The checksum file's path, with the late references `{{ .BuildName }}`,
    /// `{{ .BuilderType }}` and `{{ .ChecksumType }}`. Default
    /// `packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum`.
    pub output: String,
    /// Keep the disk after the checksums are written.
    pub keep_input_artifact: bool,
}

/// The `manifest` post-processor's settings.
#[derive(Debug, Clone)]
pub struct ManifestConfig {
    /// The manifest file. Default `packer-manifest.json`.
    pub output: PathBuf,
    /// `strip_path`: artifact files listed by name only.
    pub strip_path: bool,
    /// `strip_time`: no build time in the manifest.
    pub strip_time: bool,
    /// `custom_data`: extra keys recorded with the build.
    pub custom_data: BTreeMap<String, String>,
    /// Keep the disk after the manifest is written.
    pub keep_input_artifact: bool,
}

/// One smoke-test check (a kiln extension: the template's top-level
/// `tests`, or the file given to `kiln test`).
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Shown in the report.
    pub name: String,
    /// What runs in the guest.
    pub kind: CheckKind,
    /// The exit code the check must end with. Default 0.
    pub expect_exit: i64,
    /// A regular expression the standard output must match (already
    /// validated).
    pub expect_stdout: Option<String>,
    /// A regular expression the standard error must match (already
    /// validated).
    pub expect_stderr: Option<String>,
    /// Per attempt. Default 1m.
    pub timeout: Duration,
    /// Keep trying until it passes or this much time has gone by (services
    /// that start late). Zero: one attempt.
    pub retry_for: Duration,
}

/// The protocol of a `port` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// TCP, the default.
    Tcp,
    /// UDP.
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
    /// `file`: a file's existence, mode, owner, group and content.
    File {
        /// The guest path.
        path: String,
        /// Whether it must exist (`false`: must not).
        exists: bool,
        /// Octal, as `stat -c %a` prints it (`644`, `4755`).
        mode: Option<String>,
        /// The user that must own it.
        owner: Option<String>,
        /// The group that must own it.
        group: Option<String>,
        /// Text it must contain (a fixed string).
        contains: Option<String>,
    },
    /// `service`: a systemd unit's state; `None` leaves a state unchecked.
    Service {
        /// The unit.
        name: String,
        /// Whether it must be running.
        active: Option<bool>,
        /// Whether it must start at boot.
        enabled: Option<bool>,
    },
    /// `port`: something listens (or not) on a port in the guest.
    Port {
        /// The port.
        port: u16,
        /// TCP or UDP.
        protocol: PortProtocol,
        /// Whether something must listen on it.
        listening: bool,
    },
    /// `package`: a package is installed (or not).
    Package {
        /// The package name.
        name: String,
        /// Whether it must be installed.
        installed: bool,
    },
}
