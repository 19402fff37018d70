//! The stage runner: one pipeline per build, run in parallel up to
//! `-parallel-builds`, each with an undo stack that runs on failure or
//! Ctrl-C.
//!
//! The library's typed entry points, one per command that does work:
//! [`build`] a plan, [`test_image`], [`package_disk`] into a file,
//! [`publish_disk`] as a Compute Engine image. The post-processors call
//! the same code as `kiln export`.

mod cached;
mod disk;
mod finish;
mod gce;
mod gce_guest;
mod interactive;
mod machine;
mod package;
mod post;
mod post_shell_local;
mod publish;
pub mod report;
mod step_keys;
mod test_boot;
mod test_image;
mod traces;
mod trim;
mod undo;
mod vagrant;
#[doc(hidden)]
pub mod warm_probe;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::plan::{BuildSpec, Communicator, Plan, QemuConfig, SkippedBuild};
use report::{Artifact, Reporter, Stage};
use undo::{Created, UndoStack};

pub use gce::{GceError, PublishRequest, PublishedImage, publish_disk};
pub use machine::{KeptKey, MachineError};
pub use package::{PackageRequest, PackagedFile, package_disk};
pub use post::PostError;
pub use publish::{BUCKET_ENV, PublishSetupError, check_publishing};
pub use test_image::{TestRequest, test_image};

/// `-on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Remove everything the build made (the default).
    Cleanup,
    /// Stop and leave everything as it is, for inspection.
    Abort,
    /// Ask on the terminal: clean up, abort, or (a failed provisioner)
    /// run it again.
    Ask,
}

/// `-only` / `-except`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    only: Vec<String>,
    except: Vec<String>,
}

/// Why `-only`/`-except` select nothing kiln can build.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A build named in `-only`/`-except` that the template does not have.
    #[error("{flag} names {name:?}, but the template's builds are: {known}")]
    UnknownBuild {
        /// `-only` or `-except`.
        flag: &'static str,
        /// The name given.
        name: String,
        /// The template's build names.
        known: String,
    },
    /// Every build selected is of a builder type kiln does not run.
    #[error("nothing to build: {}", list_skipped(.0))]
    NothingBuildable(Vec<SkippedBuild>),
}

fn list_skipped(skipped: &[SkippedBuild]) -> String {
    skipped
        .iter()
        .map(|s| format!("build {:?} is skipped: {}", s.name, s.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Selection {
    /// The builds `-only` names (all when empty), less those `-except` names.
    pub fn new(only: &[String], except: &[String]) -> Self {
        Selection {
            only: only.to_vec(),
            except: except.to_vec(),
        }
    }

    /// A name in `-only`/`-except` that matches no build is a typo; a
    /// selection of builds kiln skips and none it builds is an error. The
    /// skipped builds selected are returned, for the caller to say so.
    pub fn check<'p>(&self, plan: &'p Plan) -> Result<Vec<&'p SkippedBuild>, SelectionError> {
        let names: Vec<&str> = plan
            .builds
            .iter()
            .map(|b| b.name.as_str())
            .chain(plan.skipped.iter().map(|s| s.name.as_str()))
            .collect();
        for (flag, list) in [("-only", &self.only), ("-except", &self.except)] {
            if let Some(name) = list.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(SelectionError::UnknownBuild {
                    flag,
                    name: name.clone(),
                    known: names.join(", "),
                });
            }
        }
        let skipped: Vec<&SkippedBuild> = plan
            .skipped
            .iter()
            .filter(|s| self.includes(&s.name))
            .collect();
        let buildable = plan.builds.iter().any(|b| self.includes(&b.name));
        if !buildable && !skipped.is_empty() {
            return Err(SelectionError::NothingBuildable(
                skipped.into_iter().cloned().collect(),
            ));
        }
        Ok(skipped)
    }

    fn includes(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|n| n == name))
            && !self.except.iter().any(|n| n == name)
    }
}

/// How `kiln build` runs the plan's builds: its flags.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `-force`: replace an existing output directory.
    pub force: bool,
    /// `-on-error`: what a failed build leaves behind.
    pub on_error: OnError,
    /// `-debug`: pause after each step until the person at the terminal
    /// presses enter.
    pub debug: bool,
    /// `-parallel-builds`; 0: no limit.
    pub parallel: usize,
    /// `-only` / `-except`.
    pub selection: Selection,
    /// `-test-report`: where the smoke-test report goes (`.xml` or `.json`).
    pub test_report: Option<PathBuf>,
    /// Set by [`build`]: several builds write one report each.
    pub many_builds: bool,
    /// Set by [`build`] from the plan: masked in the files the build
    /// writes from guest output (the test reports).
    pub redactor: crate::redact::Redactor,
    /// `-publish`: a googlecompute build publishes its image once its
    /// tests pass; `false` keeps the disk in its output directory.
    pub publish: bool,
    /// `-gce-bucket` (or `KILN_GCE_BUCKET`): where a googlecompute build's
    /// disk is staged on its way to Compute Engine.
    pub gce_bucket: Option<String>,
    /// `-cache`: the machine is kept after the boot and each provisioner,
    /// and a rebuild starts from the last unchanged one.
    pub cache: bool,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The output directory exists and `-force` was not given.
    #[error(
        "output directory {} already exists: remove it or build with -force",
        .0.display()
    )]
    OutputExists(PathBuf),
    /// A file or directory for the build could not be made.
    #[error("cannot prepare {}", path.display())]
    Io {
        /// What could not be made.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The source image could not be found or checked.
    #[error("source image")]
    Source(#[source] crate::source::SourceError),
    /// The output disk could not be created or compacted.
    #[error("disk")]
    Disk(#[from] disk::DiskError),
    /// The VM failed: launch, SSH, shutdown.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The build's HTTP server could not start.
    #[error("HTTP server")]
    Http(#[source] crate::httpd::HttpdError),
    /// The `googlecompute` startup script failed.
    #[error(transparent)]
    StartupScript(gce_guest::GceGuestError),
    /// A provisioner failed.
    #[error("provisioner {} ({kind})", index + 1)]
    Provision {
        /// Its position in the template, from 0 (shown from 1, as Packer
        /// numbers provisioners).
        index: usize,
        /// Its type.
        kind: String,
        /// What went wrong.
        #[source]
        source: crate::provision::ProvisionError,
    },
    /// A post-processor failed.
    #[error("post-processor")]
    Post(#[from] post::PostError),
    /// The `shell-local` post-processor's command failed.
    #[error("post-processor shell-local")]
    PostShellLocal(#[source] crate::provision::ProvisionError),
    /// A file whose content reaches the guest at boot could not be read
    /// for the step cache's key.
    #[error("step cache")]
    StepKey(#[source] crate::stepcache::KeyError),
    /// The step cache (`-cache`) could not be read or written.
    #[error("step cache")]
    StepCache(#[source] crate::stepcache::StepCacheError),
    /// Some smoke-test checks failed.
    #[error("{failed} of {total} check(s) failed{}", .report.as_ref().map(|p| format!(" (report: {})", p.display())).unwrap_or_default())]
    TestsFailed {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The report written, if one was asked for.
        report: Option<PathBuf>,
    },
    /// Checks were asked for without an SSH communicator.
    #[error("tests need the ssh communicator (communicator is none)")]
    TestsNeedSsh,
    /// The test report could not be written.
    #[error("test report")]
    Report(#[from] crate::smoke::report::ReportError),
    /// `kiln test` could not read a GCE tarball.
    #[error("cannot read the image tarball")]
    Tarball(#[from] crate::export::unpack::TarballError),
    /// The `googlecompute-import` post-processor failed.
    #[error("googlecompute-import")]
    Gce(#[source] Box<gce::GceError>),
    /// A googlecompute build cannot publish as asked.
    #[error(transparent)]
    PublishSetup(#[from] PublishSetupError),
    /// Publishing a googlecompute build's image failed.
    #[error("publishing the image")]
    Publish(#[source] Box<gce::GceError>),
    /// A disk kiln may not read as it stands.
    #[error(transparent)]
    Image(#[from] crate::export::ImageError),
    /// Cancelled (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

impl BuildError {
    /// The user tried and the image's default user (when known), when the
    /// login failed because of the user name.
    pub fn wrong_user(&self) -> Option<(&str, Option<&str>)> {
        match self {
            BuildError::Machine(err) => err.wrong_user(),
            _ => None,
        }
    }
}

/// How one build ended.
#[derive(Debug)]
pub struct Outcome {
    /// The build's name.
    pub name: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its artifacts (the builder's, when kept, then the last of each
    /// post-processor chain, as Packer lists them), or why it failed.
    pub result: Result<Vec<Artifact>, BuildError>,
}

/// `kiln build`: runs every selected build of the plan; never fails as a
/// whole, each build reports its own outcome.
pub async fn build(
    plan: &Plan,
    options: &BuildOptions,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> Vec<Outcome> {
    let builds: Vec<BuildSpec> = plan
        .builds
        .iter()
        .filter(|b| options.selection.includes(&b.name))
        .cloned()
        .collect();
    let permits = if options.parallel == 0 {
        builds.len().max(1)
    } else {
        options.parallel
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(permits));
    // A build waiting for its turn fetches its source meanwhile, one such
    // download at a time (two fetches of one URL are safe: the source
    // cache locks). Not under -debug, which pauses before each stage.
    let prefetch = (!options.debug).then(|| Arc::new(tokio::sync::Semaphore::new(1)));
    let options = &BuildOptions {
        many_builds: builds.len() > 1,
        redactor: crate::redact::Redactor::new(&plan.sensitive_values),
        ..options.clone()
    };
    let run_uuid = uuid::Uuid::new_v4().to_string();
    let mut tasks = Vec::new();
    for spec in builds {
        let name = spec.name.clone();
        let limit = limit.clone();
        let reporter = reporter.clone();
        let cancel = cancel.clone();
        let options = options.clone();
        let run_uuid = run_uuid.clone();
        let prefetch = prefetch.clone();
        tasks.push((
            name,
            tokio::spawn(async move {
                let (_permit, source) = tokio::select! {
                    biased;
                    permit = limit.clone().acquire_owned() => (permit, None),
                    turn = acquire(prefetch) => {
                        let source = prefetch_source(&spec, &reporter, &cancel).await;
                        drop(turn);
                        (limit.acquire_owned().await, Some(source))
                    }
                };
                run_one(spec, &options, reporter, cancel, &run_uuid, source).await
            }),
        ));
    }
    let mut outcomes = Vec::new();
    for (name, task) in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => outcomes.push(Outcome {
                name,
                elapsed: Duration::ZERO,
                result: Err(BuildError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(err.to_string()),
                }),
            }),
        }
    }
    outcomes
}

/// A permit of `semaphore`; never, without one.
async fn acquire(
    semaphore: Option<Arc<tokio::sync::Semaphore>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match semaphore {
        Some(semaphore) => semaphore.acquire_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The source of a build that waits for its turn.
async fn prefetch_source(
    spec: &BuildSpec,
    reporter: &Arc<dyn Reporter>,
    cancel: &CancellationToken,
) -> Result<PathBuf, BuildError> {
    let ctx = BuildContext {
        name: spec.name.clone(),
        builder_type: spec.builder_type.clone(),
        reporter: reporter.clone(),
        cancel: cancel.clone(),
    };
    tracing::debug!(build = %spec.name, "fetching the source while waiting for a turn");
    tokio::select! {
        source = resolve_source(&spec.qemu, &ctx) => source,
        () = cancel.cancelled() => Err(BuildError::Cancelled),
    }
}

/// What one build's stages share.
pub(crate) struct BuildContext {
    pub name: String,
    pub builder_type: String,
    pub reporter: Arc<dyn Reporter>,
    pub cancel: CancellationToken,
}

impl BuildContext {
    /// The context of work that is no build of a template (`kiln test`,
    /// `kiln export`): `name` prefixes what it reports.
    pub fn standalone(
        name: &str,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> BuildContext {
        BuildContext {
            name: name.to_string(),
            builder_type: "qemu".to_string(),
            reporter,
            cancel,
        }
    }

    /// The build entered `stage`.
    pub fn stage(&self, stage: Stage) {
        tracing::debug!(build = %self.name, stage = stage.as_str(), "stage");
        self.reporter.stage(&self.name, stage);
    }

    /// A message for the person watching the build.
    pub fn say(&self, message: &str) {
        self.reporter.say(&self.name, message);
    }

    /// How far a transfer has come; `None` when it is over.
    pub fn progress(&self, progress: Option<&report::Progress>) {
        self.reporter.progress(&self.name, progress);
    }
}

async fn run_one(
    spec: BuildSpec,
    options: &BuildOptions,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
    run_uuid: &str,
    source: Option<Result<PathBuf, BuildError>>,
) -> Outcome {
    let started = Instant::now();
    let ctx = BuildContext {
        name: spec.name.clone(),
        builder_type: spec.builder_type.clone(),
        reporter: reporter.clone(),
        cancel: cancel.clone(),
    };
    let mut undo = UndoStack::default();
    let steps = interactive::Interactive::new(options.on_error, options.debug);
    let result = tokio::select! {
        result = pipeline(&spec, options, &ctx, &mut undo, run_uuid, &steps, source) => result,
        () = cancel.cancelled() => Err(BuildError::Cancelled),
    };
    // The pipeline future is gone by now, and with it the QEMU process.
    ctx.stage(Stage::Cleanup);
    match &result {
        Ok(artifacts) => {
            for (path, err) in undo.succeed() {
                ctx.reporter.error(
                    &ctx.name,
                    &format!("could not remove {}: {err}", path.display()),
                );
            }
            reporter.artifacts(&ctx.name, artifacts);
        }
        Err(err) => match steps.ending(&ctx, options.on_error, err).await {
            interactive::Ending::CleanUp => {
                for (path, err) in undo.unwind() {
                    ctx.reporter.error(
                        &ctx.name,
                        &format!("could not remove {}: {err}", path.display()),
                    );
                }
            }
            interactive::Ending::Leave => {
                for path in undo.abandon() {
                    ctx.say(&format!(
                        "-on-error=abort: left {} in place",
                        path.display()
                    ));
                }
            }
        },
    }
    reporter.finished(&ctx.name);
    Outcome {
        name: spec.name,
        elapsed: started.elapsed(),
        result,
    }
}

async fn pipeline(
    spec: &BuildSpec,
    options: &BuildOptions,
    ctx: &BuildContext,
    undo: &mut UndoStack,
    run_uuid: &str,
    steps: &interactive::Interactive,
    source: Option<Result<PathBuf, BuildError>>,
) -> Result<Vec<Artifact>, BuildError> {
    let config = &spec.qemu;
    // Known before anything starts: a build that cannot publish boots
    // nothing.
    let publishing = publish::target(spec, options)?;

    steps.begin(ctx, Stage::Source).await;
    // Fetched already when the build waited for its turn.
    let source = match source {
        Some(source) => source?,
        None => resolve_source(config, ctx).await?,
    };

    steps.begin(ctx, Stage::Disk).await;
    let scratch = scratch_dir("kiln-")?.keep();
    undo.push(Created::TempDir(scratch.clone()));
    // A disk on its way to Compute Engine is working data, as the
    // instance's disk is to Packer's googlecompute: it lives with the
    // build's scratch files and goes with them, so the next build needs
    // no -force.
    let disk_path = match publishing {
        Some(_) => scratch.join(&config.vm_name),
        None => prepare_output(config, options.force, undo)?,
    };
    let mut cached = match (options.cache, cached::not_cacheable(spec)) {
        (false, _) => None,
        (true, Some(why)) => {
            ctx.say(&format!("step cache: not used: {why}"));
            None
        }
        (true, None) => Some(cached::Cached::open(spec, ctx, &source).await?),
    };
    match cached.as_mut() {
        Some(cached) => {
            let http_server = start_http_server(config, spec.gce.is_some(), ctx).await?;
            let run = cached::Run {
                spec,
                ctx,
                steps,
                source: &source,
                scratch: &scratch,
                serial_log: &serial_log_path(config),
                http_port: http_server.as_ref().map(|server| server.port()),
            };
            cached::build_disk(cached, &run, &disk_path).await?;
        }
        None => build_disk(spec, ctx, steps, &source, &scratch, &disk_path).await?,
    }

    finish::Finish {
        spec,
        options,
        ctx,
        run_uuid,
        steps,
        disk: &disk_path,
        publishing,
        cached: cached.as_mut(),
    }
    .run(undo)
    .await
}

/// The build's disk without the step cache: made from the source, booted,
/// provisioned and shut down.
async fn build_disk(
    spec: &BuildSpec,
    ctx: &BuildContext,
    steps: &interactive::Interactive,
    source: &Path,
    scratch: &Path,
    disk_path: &Path,
) -> Result<(), BuildError> {
    let config = &spec.qemu;
    make_disk(config, source, disk_path).await?;

    let serial_log = serial_log_path(config);
    let mut vm = machine::Machine::prepare(
        ctx,
        config,
        source,
        disk_path,
        scratch,
        &serial_log,
        &machine::Identity {
            hostname: spec
                .gce
                .as_ref()
                .map_or(config.vm_name.as_str(), |gce| gce.instance.name.as_str()),
            gce: spec.gce.as_ref().map(|gce| &gce.instance),
        },
    )
    .await?;
    // Stopped when dropped: at the end of this function, on success or
    // failure, after the guest is off.
    let http_server = start_http_server(config, spec.gce.is_some(), ctx).await?;
    if let Some(server) = &http_server {
        vm.set_http_port(server.port());
    }
    steps.begin(ctx, Stage::Launch).await;
    vm.launch(ctx).await?;
    vm.type_boot_command(ctx).await?;

    let mut guest = match &config.communicator {
        Communicator::Ssh(_) => {
            steps.begin(ctx, Stage::Connect).await;
            Some(vm.connect(ctx).await?)
        }
        Communicator::None => None,
    };
    if let (Some(gce), Some(guest)) = (&spec.gce, guest.as_mut()) {
        vm.resolve_metadata_name(ctx, guest).await?;
        if let Some(script) = &gce.startup_script {
            let running = async {
                gce_guest::run_startup_script(ctx, guest, script, gce.state_timeout)
                    .await
                    .map_err(BuildError::StartupScript)
            };
            against_machine(&mut vm, machine::DURING_STARTUP_SCRIPT, running).await?;
        }
    }

    steps.begin(ctx, Stage::Provision).await;
    let provisioning = provision(spec, ctx, guest.as_mut(), steps);
    against_machine(&mut vm, machine::DURING_PROVISIONING, provisioning).await?;

    steps.begin(ctx, Stage::Shutdown).await;
    if let Some(guest) = guest.as_mut() {
        trim::run(ctx, config, guest).await;
        vm.remove_build_key(ctx, guest).await?;
    }
    vm.shutdown(ctx, guest).await?;
    drop(vm);
    drop(http_server);

    Ok(())
}

/// Starts the HTTP server when the template serves something
/// (`http_directory`, `http_content`); every request becomes a message of
/// the build.
async fn start_http_server(
    config: &QemuConfig,
    gce: bool,
    ctx: &BuildContext,
) -> Result<Option<crate::httpd::HttpServer>, BuildError> {
    use crate::httpd::{Content, HttpServer, Logger, RequestLog};
    let http = &config.http;
    let content = match &http.directory {
        Some(dir) => Content::Directory(dir.clone()),
        None if !http.content.is_empty() => Content::Files(http.content.clone()),
        None => return Ok(None),
    };
    let (reporter, name) = (ctx.reporter.clone(), ctx.name.clone());
    let logger: Logger = Arc::new(move |log: &RequestLog| reporter.say(&name, &log.to_string()));
    let server = HttpServer::start(
        http.bind_address,
        http.port_min,
        http.port_max,
        content,
        logger,
    )
    .await
    .map_err(BuildError::Http)?;
    ctx.say(&format!(
        "Starting HTTP server on {}; the guest reaches it at http://{}:{}/",
        server.address(),
        // A googlecompute guest's network is GCE's link-local range.
        if gce {
            crate::gcp::metadata::GATEWAY_IP
        } else {
            crate::plan::boot::HTTP_IP
        },
        server.port()
    ));
    Ok(Some(server))
}

/// Runs the provisioners in order on the guest (none with communicator
/// `none`); under `-on-error=ask` a failed one may run again.
async fn provision(
    spec: &BuildSpec,
    ctx: &BuildContext,
    mut guest: Option<&mut crate::ssh::Guest>,
    steps: &interactive::Interactive,
) -> Result<(), BuildError> {
    for provisioner in &spec.provisioners {
        provision_one(spec, provisioner, ctx, guest.as_deref_mut(), steps).await?;
    }
    Ok(())
}

/// Runs one provisioner; under `-on-error=ask` a failed one may run
/// again.
async fn provision_one(
    _spec: &BuildSpec,
    provisioner: &crate::plan::ProvisionerSpec,
    ctx: &BuildContext,
    mut guest: Option<&mut crate::ssh::Guest>,
    steps: &interactive::Interactive,
) -> Result<(), BuildError> {
    steps.before_provisioner(ctx).await;
    loop {
        let output = |line: &str| ctx.reporter.output(&ctx.name, line);
        let say = |line: &str| ctx.reporter.say(&ctx.name, line);
        let mut pctx = crate::provision::Context {
            build_name: &ctx.name,
            builder_type: &ctx.builder_type,
            guest: guest.as_deref_mut(),
            output: &output,
            say: &say,
            cancel: ctx.cancel.clone(),
        };
        let result = crate::provision::run(provisioner, &mut pctx)
            .await
            .map_err(|source| BuildError::Provision {
                index: provisioner.index,
                kind: provisioner.type_name.clone(),
                source,
            });
        match result {
            // -on-error=ask: the person may have it run again.
            Err(err) if steps.retry(ctx, &err).await => continue,
            result => break result,
        }
    }
}

/// Runs a stage's work while watching the machine: a machine that dies
/// ends the work at once with its own error (no reconnecting to a guest
/// that is gone), and a failure of the work just as the machine dies is
/// reported as the machine's end, its cause.
pub(crate) async fn against_machine<T>(
    vm: &mut machine::Machine,
    during: &'static str,
    work: impl std::future::Future<Output = Result<T, BuildError>>,
) -> Result<T, BuildError> {
    let result = tokio::select! {
        result = work => result,
        lost = vm.lost(during) => return Err(lost.into()),
    };
    match result {
        Err(err) => match vm.lost_within(during, machine::LOST_GRACE).await {
            Some(lost) => {
                tracing::debug!(error = %crate::error::error_chain(&err), "failed as the machine went away");
                Err(lost.into())
            }
            None => Err(err),
        },
        ok => ok,
    }
}

async fn resolve_source(config: &QemuConfig, ctx: &BuildContext) -> Result<PathBuf, BuildError> {
    let cache = crate::cache::Cache::from_env()
        .map_err(|err| BuildError::Source(crate::source::SourceError::Cache(err)))?;
    let request = crate::source::Request {
        candidates: &config.iso_urls,
        checksum: &config.iso_checksum,
        target_path: config.iso_target_path.as_deref(),
    };
    let events = SourceEvents {
        ctx,
        meter: report::ProgressMeter::new("Downloading"),
    };
    crate::source::resolve(request, &cache, &events)
        .await
        .map_err(BuildError::Source)
}

/// A download's messages and progress on the build's status line.
struct SourceEvents<'a> {
    ctx: &'a BuildContext,
    meter: report::ProgressMeter,
}

impl crate::source::Events for SourceEvents<'_> {
    fn say(&self, message: &str) {
        self.ctx.say(message);
    }

    fn progress(&self, progress: Option<(u64, Option<u64>)>) {
        match progress {
            Some((bytes, total)) => {
                let total = total.unwrap_or(0);
                self.ctx
                    .progress(Some(&self.meter.progress(bytes, bytes, total)));
            }
            None => self.ctx.progress(None),
        }
    }
}

/// Creates the output directory (or replaces it with `-force`) and returns
/// where the disk goes.
fn prepare_output(
    config: &QemuConfig,
    force: bool,
    undo: &mut UndoStack,
) -> Result<PathBuf, BuildError> {
    let dir = &config.output_directory;
    let io = |source| BuildError::Io {
        path: dir.clone(),
        source,
    };
    if dir.exists() {
        if !force {
            return Err(BuildError::OutputExists(dir.clone()));
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    undo.push(Created::OutputDir(dir.clone()));
    Ok(dir.join(&config.vm_name))
}

async fn make_disk(config: &QemuConfig, source: &Path, disk_path: &Path) -> Result<(), BuildError> {
    if config.disk_image {
        disk::from_image(&disk::DiskPlan {
            source,
            target: disk_path,
            format: config.format,
            size_mib: config.disk_size_mib,
            use_backing_file: config.use_backing_file,
            skip_resize: config.skip_resize_disk,
            source_format: crate::source::known_format(&config.iso_urls),
        })
        .await?;
    } else {
        disk::blank(disk_path, config.format, config.disk_size_mib).await?;
    }
    Ok(())
}

/// A private (0700) temporary directory, removed when dropped.
fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, BuildError> {
    crate::tmp::private_dir(prefix).map_err(|source| BuildError::Io {
        path: std::env::temp_dir(),
        source,
    })
}

/// The serial console log lives beside the output directory, so it outlives
/// a failed build whose output is removed.
fn serial_log_path(config: &QemuConfig) -> PathBuf {
    log_beside(config, "serial.log")
}

/// `<output_directory>.<suffix>`.
fn log_beside(config: &QemuConfig, suffix: &str) -> PathBuf {
    let mut name = config
        .output_directory
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "output".into());
    name.push(".");
    name.push(suffix);
    config.output_directory.with_file_name(name)
}

/// The format the build wrote its disk in: told to every tool that reads
/// it, never probed (the guest could have written any header into a raw
/// disk).
fn disk_format(spec: &BuildSpec) -> crate::export::ImageFormat {
    match spec.qemu.format {
        crate::plan::DiskFormat::Qcow2 => crate::export::ImageFormat::Qcow2,
        crate::plan::DiskFormat::Raw => crate::export::ImageFormat::Raw,
    }
}

impl From<gce::GceError> for BuildError {
    fn from(err: gce::GceError) -> Self {
        BuildError::Gce(Box::new(err))
    }
}
