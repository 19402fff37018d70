//! The command-line grammar. Packer spells long flags with one dash
//! (`-var`, `-only`); [`normalize`] turns those into clap's `--` form so
//! both spellings work.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::pipeline::OnError;

/// What every command reads from the environment.
macro_rules! common_env {
    () => {
        "  KILN_LOG        diagnostic log filter (`1` or `debug`; PACKER_LOG=1 works too)\n  \
         KILN_LOG_PATH   write that log to a file (PACKER_LOG_PATH too)\n  \
         NO_COLOR        no colours (as -color=false)\n  \
         TMPDIR          where temporary files go"
    };
}

const VALIDATE_HELP: &str = concat!(
    "Examples:\n  \
     kiln validate template.json\n  \
     kiln validate -var size=20G -only=base template.json\n  \
     kiln validate -syntax-only template.json\n\n\
     Environment:\n",
    common_env!()
);

const FIX_HELP: &str = concat!(
    "Examples:\n  \
     kiln fix old.json > new.json\n  \
     kiln fix template.json 2>&1 >/dev/null   (only list what would change)\n\n\
     Environment:\n",
    common_env!()
);

const BUILD_HELP: &str = concat!(
    "Examples:\n  \
     kiln build template.json\n  \
     kiln build -var-file=prod.json -only=base -on-error=abort template.json\n  \
     kiln build -machine-readable -test-report=report.xml template.json\n  \
     kiln build -on-error=ask template.json   (clean up, abort, or retry a failed provisioner)\n  \
     kiln build -debug template.json          (pause after each step)\n  \
     kiln build -gce-bucket=staging gce.json  (build a googlecompute template, publish the image)\n  \
     kiln build -publish=false gce.json       (build and test it, keep the disk locally)\n  \
     kiln build -cache template.json          (rerun only what changed since the last build)\n\n\
     Environment:\n",
    common_env!(),
    "\n  \
     KILN_GCE_BUCKET         the staging bucket of googlecompute builds (as -gce-bucket)\n  \
     SOURCE_DATE_EPOCH       the dates written into seed and CD images\n  \
     KILN_CACHE_DIR          where downloaded sources and -cache's steps are kept (see `kiln cache --help`)\n  \
     GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST, KILN_COMPUTE_ENDPOINT\n                          \
     for publishing (googlecompute builds, googlecompute-import; see `kiln export --help`)"
);

const CACHE_HELP: &str = concat!(
    "Examples:\n  \
     kiln cache list\n  \
     kiln cache prune -older-than 30d\n  \
     kiln cache prune -max-size 20G\n  \
     kiln cache prune -all\n\n\
     Environment:\n",
    common_env!(),
    "\n  \
     KILN_CACHE_DIR  the cache directory (default $XDG_CACHE_HOME/kiln, or ~/.cache/kiln)"
);

const TEST_HELP: &str = concat!(
    "Examples:\n  \
     kiln test output/base/base.qcow2 --tests checks.json\n  \
     kiln test disk.raw.tar.gz --tests checks.json --ssh-username ubuntu --test-report report.xml\n\n\
     Environment:\n",
    common_env!()
);

const EXPORT_HELP: &str = concat!(
    "Examples:\n  \
     kiln export output/base/base.qcow2 --output disk.raw.tar.gz\n  \
     kiln export base.qcow2 --bucket my-bucket --image-name base-v1 --family base --project acme\n  \
     kiln export base.qcow2 --bucket my-bucket --image-name base-v2 --project acme \\\n      \
     --labels=team=infra,env=prod --guest-os-features=UEFI_COMPATIBLE,GVNIC --format=json\n\n\
     Environment:\n",
    common_env!(),
    "\n  \
     GOOGLE_APPLICATION_CREDENTIALS  a service account key or other credentials file\n  \
     GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT\n                                  the project when --project is not given\n  \
     CLOUDSDK_CONFIG                 gcloud's directory (credentials, configured project)\n  \
     STORAGE_EMULATOR_HOST           a Cloud Storage emulator (http://127.0.0.1:9023)\n  \
     KILN_COMPUTE_ENDPOINT           a Compute API endpoint in place of Google's"
);

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build, test and publish machine images locally from Packer templates"
)]
pub struct Cli {
    /// Colours in the output (`-color=false`, or `NO_COLOR` set, turns them off).
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub color: bool,
    /// Print Packer's machine-readable format (`timestamp,target,type,data...`).
    #[arg(long = "machine-readable", global = true)]
    pub machine_readable: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that a template is valid.
    #[command(after_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Show the variables, builders, provisioners and post-processors of a template.
    Inspect(TemplateArgs),
    /// Print a template with its deprecated keys rewritten to the form
    /// Packer 1.6 and kiln read (as `packer fix`); what changed goes to stderr.
    #[command(after_help = FIX_HELP)]
    Fix(FixArgs),
    /// Build the images a template describes.
    #[command(after_help = BUILD_HELP)]
    Build(BuildArgs),
    /// Boot an image (qcow2, raw or a GCE disk.raw.tar.gz) as a fresh
    /// instance and run smoke-test checks on it; the image is not written.
    #[command(after_help = TEST_HELP)]
    Test(TestArgs),
    /// Package a qcow2 or raw disk as GCE's disk.raw.tar.gz: to a local file
    /// (--output), or streamed to Cloud Storage and registered as a Compute
    /// Engine image (--bucket, --image-name).
    #[command(after_help = EXPORT_HELP)]
    Export(ExportArgs),
    /// List or prune kiln's cache of downloaded source images
    /// (`KILN_CACHE_DIR`, default `~/.cache/kiln`).
    #[command(after_help = CACHE_HELP)]
    Cache(CacheArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  kiln completions bash > /etc/bash_completion.d/kiln\n  kiln completions zsh > \"${fpath[1]}/_kiln\""
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print kiln's man page (roff), for `man -l -` or a package.
    #[command(after_help = "Example:\n  kiln man > /usr/share/man/man1/kiln.1")]
    Man,
}

#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Set a template variable (NAME=VALUE); may be repeated.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub var: Vec<String>,
    /// Read variables from a JSON file; may be repeated.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_file: Vec<PathBuf>,
    /// The local disk for a googlecompute build's source image or family
    /// (NAME=URL: a path, file:, https: or gs:// URL); may be repeated.
    /// Wins over the KILN_IMAGE_MAP file and the built-in map.
    #[arg(long = "source-image", value_name = "NAME=URL")]
    pub source_image: Vec<String>,
    /// Only the builds with these names (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Every build except these (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub except: Vec<String>,
    /// The template (Packer's JSON format).
    pub template: PathBuf,
    /// Where each `-var` and `-var-file` stood on the command line (filled
    /// in after parsing), so they apply in that order, as in Packer.
    #[arg(skip)]
    pub positions: OverridePositions,
}

#[derive(Debug, Clone, Default)]
pub(super) struct OverridePositions {
    pub var: Vec<usize>,
    pub var_file: Vec<usize>,
}

impl Cli {
    /// Parses like `try_parse_from`, and records where `-var` and
    /// `-var-file` stood.
    pub fn parse_with_positions(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let positions = |sub: &clap::ArgMatches| OverridePositions {
            var: sub
                .indices_of("var")
                .map(|i| i.collect())
                .unwrap_or_default(),
            var_file: sub
                .indices_of("var_file")
                .map(|i| i.collect())
                .unwrap_or_default(),
        };
        match (&mut cli.command, matches.subcommand()) {
            (Command::Validate(args), Some((_, sub))) => args.template.positions = positions(sub),
            (Command::Inspect(args), Some((_, sub))) => args.positions = positions(sub),
            (Command::Build(args), Some((_, sub))) => args.template.positions = positions(sub),
            _ => {}
        }
        Ok(cli)
    }
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the entries: kind, size, time since last use, origin.
    List,
    /// Remove entries not used for a while, or the least recently used
    /// beyond a size, or all of them.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove entries not used for this long (`30d`, `12h`, `1w`).
    #[arg(long = "older-than", value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Then remove the least recently used until the rest fit (`10G`).
    #[arg(long = "max-size", value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Remove every entry.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct FixArgs {
    /// The template (Packer's JSON format).
    pub template: PathBuf,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Only check that the file is well-formed JSON; do not check its meaning.
    #[arg(long = "syntax-only")]
    pub syntax_only: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Replace existing output directories.
    #[arg(long)]
    pub force: bool,
    /// What to do when a build fails: clean up everything, leave it as it
    /// is, or ask on the terminal (and offer to run a failed provisioner
    /// again); with no terminal to ask, `ask` cleans up.
    #[arg(long = "on-error", value_enum, default_value = "cleanup")]
    pub on_error: OnError,
    /// Pause after each step until enter is pressed on the terminal; builds
    /// run one at a time.
    #[arg(long)]
    pub debug: bool,
    /// Prefix each line of output with a timestamp.
    #[arg(long = "timestamp-ui")]
    pub timestamp_ui: bool,
    /// How many builds run at once (0: all).
    #[arg(long = "parallel-builds", default_value_t = 0, value_name = "N")]
    pub parallel_builds: usize,
    /// Write the smoke-test report here (.xml: JUnit, .json).
    #[arg(long = "test-report", value_name = "FILE")]
    pub test_report: Option<PathBuf>,
    /// Publish googlecompute builds as Compute Engine images once their
    /// tests pass; `-publish=false` keeps the disk in the build's output
    /// directory and calls no Google API.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub publish: bool,
    /// The Cloud Storage bucket a googlecompute build's disk is uploaded to
    /// on its way to Compute Engine (default: KILN_GCE_BUCKET).
    #[arg(long = "gce-bucket", value_name = "BUCKET")]
    pub gce_bucket: Option<String>,
    /// Keep the machine after the boot and after each provisioner in the
    /// step cache, and start from the last unchanged one: a rebuild runs
    /// only what changed (see `kiln cache --help`).
    #[arg(long)]
    pub cache: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write the tarball here instead of uploading it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["bucket", "image_name"])]
    pub output: Option<PathBuf>,
    /// The Cloud Storage bucket to upload to.
    #[arg(long, value_name = "BUCKET", requires = "image_name")]
    pub bucket: Option<String>,
    /// The name of the new Compute Engine image.
    #[arg(long = "image-name", value_name = "NAME", requires = "bucket")]
    pub image_name: Option<String>,
    /// The project (default: GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT,
    /// the credentials file's project, then gcloud's configured project).
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// The image family.
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Image labels, comma-separated (KEY=VALUE,KEY2=VALUE2); may be repeated.
    #[arg(
        long = "labels",
        alias = "label",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub labels: Vec<String>,
    /// Guest OS features, comma-separated (UEFI_COMPATIBLE,GVNIC,...); may be repeated.
    #[arg(
        long = "guest-os-features",
        alias = "guest-os-feature",
        value_delimiter = ',',
        value_name = "FEATURE"
    )]
    pub guest_os_features: Vec<String>,
    /// A storage location (us, eu, ...); may be repeated.
    #[arg(long = "storage-location", value_name = "LOCATION")]
    pub storage_locations: Vec<String>,
    /// X86_64 or ARM64.
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,
    /// The object name in the bucket (default: kiln-import-<time>.tar.gz).
    #[arg(long = "object-name", value_name = "NAME")]
    pub object_name: Option<String>,
    /// A credentials file: a service account key, or any kind gcloud
    /// writes (default: Application Default Credentials).
    #[arg(long = "account-file", value_name = "FILE")]
    pub account_file: Option<PathBuf>,
    /// Act as this service account: its tokens come from IAM with the
    /// credentials found.
    #[arg(long = "impersonate-service-account", value_name = "EMAIL")]
    pub impersonate_service_account: Option<String>,
    /// gzip level, 1 to 9.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub level: u32,
    /// Replace an existing --output file; when publishing, delete an
    /// existing image of the same name first.
    #[arg(long)]
    pub force: bool,
    /// The disk's format, qcow2 or raw (default: detected from its header;
    /// a raw disk that holds an image header needs --disk-format raw).
    #[arg(long = "disk-format", value_name = "FORMAT", value_parser = parse_format)]
    pub disk_format: Option<crate::export::ImageFormat>,
    /// What to print when done: text, or one JSON object (the image's name,
    /// id and self link; the file's path, size and SHA-256).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub format: OutputFormat,
    /// Keep the uploaded object after the import.
    #[arg(long = "skip-clean")]
    pub skip_clean: bool,
    /// How long to wait for the image to be created.
    #[arg(
        long = "image-create-timeout",
        default_value = "30m",
        value_name = "DURATION"
    )]
    pub image_create_timeout: String,
    /// The Compute API endpoint (default: KILN_COMPUTE_ENDPOINT, else Google's).
    #[arg(long = "compute-endpoint", value_name = "URL")]
    pub compute_endpoint: Option<String>,
    /// The disk (qcow2 or raw).
    pub disk: PathBuf,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The checks: a JSON file `{"tests": [...]}`, each check as in a
    /// template's `tests`.
    #[arg(long, value_name = "FILE")]
    pub tests: PathBuf,
    /// The user to log in as (its key comes with the seed).
    #[arg(long = "ssh-username", default_value = "root", value_name = "USER")]
    pub ssh_username: String,
    /// Log in with this private key instead of a generated one.
    #[arg(long = "ssh-private-key-file", value_name = "FILE")]
    pub ssh_private_key_file: Option<PathBuf>,
    /// How long to wait for SSH.
    #[arg(long = "ssh-timeout", default_value = "5m", value_name = "DURATION")]
    pub ssh_timeout: String,
    /// kvm, tcg or none (default: KVM when usable, else TCG).
    #[arg(long, value_name = "ACCEL")]
    pub accelerator: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub memory: u64,
    /// Guest CPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u32,
    /// Write the report here (.xml: JUnit, .json).
    #[arg(long = "test-report", value_name = "FILE")]
    pub test_report: Option<PathBuf>,
    /// The image's format, qcow2 or raw (default: detected from its header;
    /// a raw disk that holds an image header needs --disk-format raw).
    #[arg(long = "disk-format", alias = "format", value_name = "FORMAT", value_parser = parse_format)]
    pub disk_format: Option<crate::export::ImageFormat>,
    /// Prefix each line of output with a timestamp.
    #[arg(long = "timestamp-ui")]
    pub timestamp_ui: bool,
    /// The image to test.
    pub image: PathBuf,
}

/// `kiln export --format`, as gcloud's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON object on stdout; the progress goes to stderr.
    Json,
}

fn parse_format(text: &str) -> Result<crate::export::ImageFormat, String> {
    crate::export::ImageFormat::parse(text)
        .ok_or_else(|| format!("{text:?}: expected qcow2 or raw"))
}

/// Flags that Packer writes with a single dash.
const LONG_FLAGS: &[&str] = &[
    "var",
    "var-file",
    "source-image",
    "only",
    "except",
    "force",
    "debug",
    "on-error",
    "timestamp-ui",
    "machine-readable",
    "parallel-builds",
    "test-report",
    "publish",
    "gce-bucket",
    "cache",
    "tests",
    "ssh-username",
    "ssh-private-key-file",
    "ssh-timeout",
    "accelerator",
    "output",
    "bucket",
    "image-name",
    "project",
    "family",
    "description",
    "label",
    "labels",
    "guest-os-feature",
    "guest-os-features",
    "storage-location",
    "architecture",
    "object-name",
    "account-file",
    "level",
    "skip-clean",
    "image-create-timeout",
    "compute-endpoint",
    "format",
    "disk-format",
    "memory",
    "cpus",
    "help",
    "version",
    "color",
    "syntax-only",
    "older-than",
    "max-size",
    "all",
];

/// Rewrites `-flag` and `-flag=value` to `--flag...` for the flags above;
/// everything else (values, `--` and after) is left alone.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest_literal = false;
    for arg in args {
        if rest_literal {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest_literal = true;
            out.push(arg);
            continue;
        }
        let single_dash = text.starts_with('-') && !text.starts_with("--");
        let name = text
            .trim_start_matches('-')
            .split('=')
            .next()
            .unwrap_or_default();
        // Every kiln flag is long: `-no-such-flag` is reported by its whole
        // name, not as a cluster of short flags starting with `-n`.
        let unknown_long = name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic());
        if single_dash && (LONG_FLAGS.contains(&name) || unknown_long) {
            out.push(OsString::from(format!("-{text}")));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let argv = normalize(args.iter().map(OsString::from));
        Cli::parse_with_positions(argv).expect("parses")
    }

    #[test]
    fn var_and_var_file_positions_are_recorded() {
        let cli = parse(&[
            "kiln",
            "build",
            "-var-file",
            "a.json",
            "-var",
            "x=1",
            "-var-file=b.json",
            "t.json",
        ]);
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        let p = &b.template.positions;
        assert_eq!(p.var.len(), 1);
        assert_eq!(p.var_file.len(), 2);
        assert!(
            p.var_file[0] < p.var[0] && p.var[0] < p.var_file[1],
            "{p:?}"
        );
    }

    #[test]
    fn packer_single_dash_flags() {
        let cli = parse(&[
            "kiln",
            "build",
            "-var",
            "a=1",
            "-var=b=2",
            "-var-file",
            "v.json",
            "-only",
            "x,y",
            "-except=z",
            "-force",
            "-on-error=abort",
            "-timestamp-ui",
            "-machine-readable",
            "-parallel-builds",
            "3",
            "t.json",
        ]);
        let Command::Build(b) = &cli.command else {
            panic!("not a build")
        };
        assert_eq!(b.template.var, vec!["a=1", "b=2"]);
        assert_eq!(b.template.var_file, vec![PathBuf::from("v.json")]);
        assert_eq!(b.template.only, vec!["x", "y"]);
        assert_eq!(b.template.except, vec!["z"]);
        assert!(cli.machine_readable);
        assert!(b.force && b.timestamp_ui);
        assert_eq!(b.on_error, OnError::Abort);
        assert_eq!(b.parallel_builds, 3);
        assert_eq!(b.template.template, PathBuf::from("t.json"));
    }

    #[test]
    fn gnu_spellings_work_too() {
        let cli = parse(&["kiln", "build", "--var", "a=1", "--force", "t.json"]);
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        assert_eq!(b.template.var, vec!["a=1"]);
        assert!(b.force);
        assert_eq!(b.on_error, OnError::Cleanup);
    }

    #[test]
    fn values_that_look_like_flags_are_kept() {
        let argv = normalize(["kiln", "build", "-var", "x=-force", "t.json"].map(OsString::from));
        assert_eq!(argv[3], OsString::from("x=-force"));
    }

    #[test]
    fn machine_readable_is_global() {
        for args in [
            &["kiln", "build", "-machine-readable", "t.json"][..],
            &["kiln", "-machine-readable", "build", "t.json"][..],
            &["kiln", "validate", "-machine-readable", "t.json"][..],
            &["kiln", "inspect", "--machine-readable", "t.json"][..],
            &[
                "kiln",
                "test",
                "-machine-readable",
                "--tests",
                "c.json",
                "i.qcow2",
            ][..],
            &[
                "kiln",
                "export",
                "-machine-readable",
                "--output",
                "o.tar.gz",
                "d.qcow2",
            ][..],
            &["kiln", "version", "-machine-readable"][..],
        ] {
            assert!(parse(args).machine_readable, "{args:?}");
        }
        assert!(!parse(&["kiln", "build", "t.json"]).machine_readable);
    }

    fn export(args: &[&str]) -> ExportArgs {
        let mut argv = vec!["kiln", "export"];
        argv.extend_from_slice(args);
        argv.push("d.qcow2");
        match parse(&argv).command {
            Command::Export(export) => export,
            other => panic!("not an export: {other:?}"),
        }
    }

    #[test]
    fn export_takes_gclouds_list_forms() {
        let e = export(&[
            "--labels=team=infra,env=prod",
            "--labels",
            "tier=gold",
            "--label",
            "old=form",
            "--guest-os-features=UEFI_COMPATIBLE,GVNIC",
            "--guest-os-feature",
            "SEV_CAPABLE",
        ]);
        assert_eq!(
            e.labels,
            vec!["team=infra", "env=prod", "tier=gold", "old=form"]
        );
        assert_eq!(
            e.guest_os_features,
            vec!["UEFI_COMPATIBLE", "GVNIC", "SEV_CAPABLE"]
        );
        // An empty value stays visible, to be refused by name.
        assert_eq!(export(&["--labels="]).labels, vec![""]);
    }

    #[test]
    fn export_format_is_the_output_and_disk_format_the_disk() {
        let e = export(&["--format=json", "--disk-format", "raw"]);
        assert_eq!(e.format, OutputFormat::Json);
        assert_eq!(e.disk_format, Some(crate::export::ImageFormat::Raw));
        let e = export(&[]);
        assert_eq!(e.format, OutputFormat::Text);
        assert_eq!(e.disk_format, None);
        // `--format qcow2` was the disk's format: now a clear error.
        let argv =
            normalize(["kiln", "export", "--format", "qcow2", "d.qcow2"].map(OsString::from));
        let err = Cli::parse_with_positions(argv).unwrap_err().to_string();
        assert!(err.contains("qcow2"), "{err}");
    }

    #[test]
    fn test_takes_disk_format_and_the_old_spelling() {
        for flag in ["--disk-format", "-format"] {
            let cli = parse(&["kiln", "test", flag, "raw", "--tests", "c.json", "i.img"]);
            let Command::Test(t) = cli.command else {
                panic!("not a test")
            };
            assert_eq!(t.disk_format, Some(crate::export::ImageFormat::Raw));
        }
    }

    fn build(args: &[&str]) -> BuildArgs {
        let mut argv = vec!["kiln", "build"];
        argv.extend_from_slice(args);
        argv.push("t.json");
        match parse(&argv).command {
            Command::Build(build) => build,
            other => panic!("not a build: {other:?}"),
        }
    }

    #[test]
    fn publish_is_on_unless_turned_off_as_packer_spells_bools() {
        assert!(build(&[]).publish);
        assert!(build(&["-publish"]).publish);
        assert!(build(&["-publish=true"]).publish);
        assert!(!build(&["-publish=false"]).publish);
        assert!(!build(&["--publish=false"]).publish);
        // Go's flag package reads `-publish false` as `-publish` and a
        // positional `false`: not silently a value here either.
        let argv = normalize(["kiln", "build", "-publish", "false", "t.json"].map(OsString::from));
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = normalize(["kiln", "build", "-publish=maybe", "t.json"].map(OsString::from));
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn gce_bucket_takes_both_spellings() {
        assert_eq!(build(&[]).gce_bucket, None);
        assert_eq!(
            build(&["-gce-bucket", "staging"]).gce_bucket.as_deref(),
            Some("staging")
        );
        assert_eq!(
            build(&["-gce-bucket=staging"]).gce_bucket.as_deref(),
            Some("staging")
        );
    }

    #[test]
    fn unknown_on_error_value_is_rejected() {
        let argv = normalize(["kiln", "build", "-on-error=maybe", "t.json"].map(OsString::from));
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn on_error_ask_is_packers() {
        let cli = parse(&["kiln", "build", "-on-error=ask", "t.json"]);
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        assert_eq!(b.on_error, OnError::Ask);
        assert!(!b.debug);
        let cli = parse(&["kiln", "build", "-debug", "t.json"]);
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        assert!(b.debug);
    }
}
