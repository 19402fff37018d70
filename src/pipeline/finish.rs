//! After the build's machine is off: the smoke-test boot, compaction, and
//! the packaging that only reads the finished disk (the GCE tarball and its
//! upload, the disk's checksums, a `compress` tarball) run side by side.
//! What makes the result visible (the image's creation, the tarball moved
//! to its name, the checksum files, the manifest entry, every other
//! post-processor) waits for the tests to pass. A failed test (or test
//! boot) stops the packaging and deletes whatever reached the bucket; a
//! failed packaging stops the test boot.
//!
//! Compaction rewrites the disk, so the test boot reads a snapshot of it: a
//! hard link to the disk as it was, which keeps the old file alive while
//! the compacted copy is renamed over the disk's name. The output is the
//! same file the sequential order makes: the test boot writes only to its
//! own overlay, never to the disk.
//!
//! `KILN_SEQUENTIAL_STAGES=1` (see bench/) runs the same stages one after
//! the other, tests first, as kiln did before: the benchmark compares the
//! two. `-debug` does too, as it pauses between stages.

use std::path::{Path, PathBuf};

use super::gce::Publisher;
use super::interactive::Interactive;
use super::post::{self, Digests};
use super::report::{self, Artifact, Stage};
use super::undo::{Created, UndoStack};
use super::{
    BuildContext, BuildError, BuildOptions, cached, disk, disk_format, gce, post_shell_local,
    publish, vagrant,
};
use crate::plan::{BuildSpec, PostProcessorSpec, QemuConfig};

/// The environment variable that runs the stages after shutdown one after
/// the other (for the benchmark): `1`.
pub const SEQUENTIAL_ENV: &str = "KILN_SEQUENTIAL_STAGES";

/// A rewrite of the disk pays when it saves at least this much...
const COMPACTION_MIN_BYTES: u64 = 64 << 20;
/// ...or this share of the file (in percent).
const COMPACTION_MIN_PERCENT: u64 = 10;

/// The build after its machine is off.
pub(super) struct Finish<'a> {
    pub spec: &'a BuildSpec,
    pub options: &'a BuildOptions,
    pub ctx: &'a BuildContext,
    pub run_uuid: &'a str,
    pub steps: &'a Interactive,
    /// The finished disk.
    pub disk: &'a Path,
    /// Where the image goes, for a publishing googlecompute build.
    pub publishing: Option<publish::Target<'a>>,
    /// With `-cache`: the build's step cache, which keeps the finished disk
    /// once its tests passed (and wrote it compacted already).
    pub cached: Option<&'a mut cached::Cached>,
}

impl Finish<'_> {
    /// Tests, packaging and publishing; returns the build's artifacts.
    pub async fn run(mut self, undo: &mut UndoStack) -> Result<Vec<Artifact>, BuildError> {
        // With no smoke tests there is nothing to run beside the
        // packaging: the post-processors run as they always have.
        let overlap = !self.options.debug && !sequential_from_env() && !self.spec.tests.is_empty();
        tracing::debug!(build = %self.ctx.name, overlap, "finishing");
        match self.publishing {
            Some(target) => self.publish(target, overlap, undo).await,
            None => self.keep(overlap, undo).await,
        }
    }

    /// A googlecompute build: the upload beside the tests, the image after.
    async fn publish(
        &mut self,
        target: publish::Target<'_>,
        overlap: bool,
        undo: &mut UndoStack,
    ) -> Result<Vec<Artifact>, BuildError> {
        let (spec, ctx) = (self.spec, self.ctx);
        let publisher = publish::publisher(
            ctx,
            target,
            self.disk,
            disk_format(spec),
            self.options.force,
        )?;
        // A build stopped any other way (Ctrl-C) leaves nothing in the
        // bucket either.
        let guard = publisher.object_guard();
        let publish_error = |err| BuildError::Publish(Box::new(err));
        let uploading = async {
            if !overlap {
                self.steps.begin(ctx, Stage::Publish).await;
            }
            publisher.refuse_existing().await.map_err(publish_error)?;
            publisher.upload(ctx).await.map_err(publish_error)
        };
        let staged = match side_by_side(overlap, self.tests(self.disk), uploading).await {
            Ok(()) => self.tested().await,
            Err(err) => Err(err),
        };
        if let Err(err) = staged {
            publisher.discard(ctx).await;
            if let Some(guard) = guard {
                guard.disarm();
            }
            return Err(err);
        }
        if overlap {
            self.steps.begin(ctx, Stage::Publish).await;
        }
        // Only now may an existing image of the name go (-force).
        let created = match publisher.replace_existing(ctx).await {
            Ok(()) => publisher.create(ctx).await,
            Err(err) => Err(err),
        };
        publisher.remove_object(ctx).await;
        if let Some(guard) = guard {
            guard.disarm();
        }
        let image = publish::image_artifact(spec, &created.map_err(publish_error)?);
        let artifacts = if spec.post_processors.is_empty() {
            vec![image]
        } else {
            self.steps.begin(ctx, Stage::Post).await;
            run_post_processors(
                spec,
                image,
                ctx,
                undo,
                self.run_uuid,
                Early::none(spec),
                &[],
            )
            .await?
        };
        self.steps.end(ctx).await;
        Ok(artifacts)
    }

    /// The disk stays in the output directory: compaction and the
    /// post-processors' reading of the disk beside the tests, the rest
    /// after.
    async fn keep(
        &mut self,
        overlap: bool,
        undo: &mut UndoStack,
    ) -> Result<Vec<Artifact>, BuildError> {
        let (spec, ctx, config) = (self.spec, self.ctx, &self.spec.qemu);
        // The step cache wrote the finished disk compacted already.
        let mut compaction = match self.cached {
            Some(_) => None,
            None => plan_compaction(config, ctx, self.disk).await,
        };
        // The test boot keeps reading the disk as it was while the
        // compacted copy takes its name.
        let needs_snapshot = overlap && compaction.is_some() && !spec.tests.is_empty();
        let snapshot = match needs_snapshot.then(|| Snapshot::link(self.disk)) {
            Some(Ok(snapshot)) => Some(snapshot),
            Some(Err(err)) => {
                // A filesystem without hard links: compaction first, and
                // the tests read the compacted disk.
                tracing::debug!(error = %err, "no hard link of the disk; compacting first");
                if let Some(compress) = compaction.take() {
                    ctx.say("Compacting the disk...");
                    disk::compact(self.disk, config.format, compress).await?;
                }
                None
            }
            None => None,
        };
        let test_disk = snapshot.as_ref().map_or(self.disk, |s| s.path.as_path());
        // Shown as the template wrote it, as Packer shows it: kiln never
        // changes its working directory, so the relative path stays good.
        let artifact = Artifact {
            build_name: spec.name.clone(),
            builder_type: spec.builder_type.clone(),
            builder_id: report::QEMU_BUILDER_ID.to_string(),
            id: None,
            description: format!(
                "VM files in directory: {}",
                config.output_directory_shown.display()
            ),
            files: vec![config.output_directory_shown.join(&config.vm_name)],
        };
        // Made before anything is uploaded, so whatever is uploaded can be
        // deleted whatever happens next.
        let imports = if overlap {
            import_publishers(spec, &artifact)?
        } else {
            Vec::new()
        };
        let guards: Vec<_> = imports.iter().flatten().map(|p| p.object_guard()).collect();
        let packaging = async {
            if !overlap {
                self.steps.begin(ctx, Stage::Finalize).await;
            }
            if let Some(compress) = compaction {
                ctx.say("Compacting the disk...");
                disk::compact(self.disk, config.format, compress).await?;
            }
            if overlap {
                early_packaging(spec, ctx, &artifact, &imports).await
            } else {
                Ok(Early::none(spec))
            }
        };
        let packaged = side_by_side(overlap, self.tests(test_disk), packaging).await;
        drop(snapshot);
        let packaged = match packaged {
            Ok(early) => self.tested().await.map(|()| early),
            Err(err) => Err(err),
        };
        let result = match packaged {
            Ok(early) => self.commit(artifact, early, &imports, undo).await,
            Err(err) => Err(err),
        };
        if result.is_err() {
            for publisher in imports.iter().flatten() {
                publisher.discard(ctx).await;
            }
        }
        for guard in guards.into_iter().flatten() {
            guard.disarm();
        }
        result
    }

    /// The tested disk becomes the build's result: the post-processors run,
    /// with what was packaged early.
    async fn commit(
        &self,
        artifact: Artifact,
        early: Vec<Early>,
        imports: &[Option<Publisher>],
        undo: &mut UndoStack,
    ) -> Result<Vec<Artifact>, BuildError> {
        let (spec, ctx, config) = (self.spec, self.ctx, &self.spec.qemu);
        if let Some(gce) = &spec.gce {
            let why = if gce.skip_create_image {
                "skip_create_image"
            } else {
                "-publish=false"
            };
            ctx.say(&format!(
                "{why}: the image is not published; the disk stays in {}",
                config.output_directory_shown.display()
            ));
        }
        let artifacts = if spec.post_processors.is_empty() {
            vec![artifact]
        } else {
            self.steps.begin(ctx, Stage::Post).await;
            run_post_processors(spec, artifact, ctx, undo, self.run_uuid, early, imports).await?
        };
        self.steps.end(ctx).await;
        Ok(artifacts)
    }

    /// The smoke tests of `disk`, when the template has any and the step
    /// cache has not seen them pass on this very disk.
    async fn tests(&self, disk: &Path) -> Result<(), BuildError> {
        if self.spec.tests.is_empty() {
            return Ok(());
        }
        if self
            .cached
            .as_deref()
            .is_some_and(|c| c.tests_already_passed(&cached::tests_hash(self.spec)))
        {
            self.ctx
                .say("step cache: these checks passed on this very disk before; not run again");
            return Ok(());
        }
        // test_boot announces its stage itself.
        self.steps.next(self.ctx, Stage::Test).await;
        smoke_test(self.spec, self.options, self.ctx, disk).await
    }
}

impl Finish<'_> {
    /// The tests passed (or there are none): the step cache keeps the
    /// finished disk, with the checks that passed on it.
    async fn tested(&mut self) -> Result<(), BuildError> {
        let Some(cached) = self.cached.as_deref_mut() else {
            return Ok(());
        };
        if self.spec.tests.is_empty() {
            cached.keep_untested().await?;
        } else {
            cached.tests_passed(&cached::tests_hash(self.spec)).await?;
        }
        self.ctx.say(&cached.summary());
        Ok(())
    }
}

/// `KILN_SEQUENTIAL_STAGES=1`.
fn sequential_from_env() -> bool {
    std::env::var(SEQUENTIAL_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The tests and the packaging: side by side (the first failure stops
/// the other, which is dropped: its QEMU killed, its upload stopped), or
/// tests first.
async fn side_by_side<T>(
    overlap: bool,
    tests: impl std::future::Future<Output = Result<(), BuildError>>,
    packaging: impl std::future::Future<Output = Result<T, BuildError>>,
) -> Result<T, BuildError> {
    if overlap {
        let ((), packaged) = tokio::try_join!(tests, packaging)?;
        Ok(packaged)
    } else {
        tests.await?;
        packaging.await
    }
}

/// Whether the disk is rewritten, and compressed (`Some(compress)`), or
/// left as it is (`None`), with a line saying which and why.
async fn plan_compaction(config: &QemuConfig, ctx: &BuildContext, path: &Path) -> Option<bool> {
    // A disk on a backing file is never rewritten.
    if config.use_backing_file {
        return None;
    }
    if config.disk_compression {
        return Some(true);
    }
    if config.skip_compaction {
        return None;
    }
    // Zeroes the guest wrote (or blocks it freed) may hide in allocated
    // clusters: only a rewrite finds them.
    if !config.frees_what_the_guest_frees() {
        return Some(false);
    }
    let Some(footprint) = disk::footprint(path).await else {
        return Some(false);
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let saves = footprint.reclaimable();
    let pays = saves >= COMPACTION_MIN_BYTES
        || saves * 100 >= footprint.file_bytes * COMPACTION_MIN_PERCENT;
    if pays {
        ctx.say(&format!(
            "Compaction pays: the disk file is {:.0} MiB, {:.0} MiB once rewritten",
            mib(footprint.file_bytes),
            mib(footprint.compacted_bytes)
        ));
        Some(false)
    } else {
        ctx.say(&format!(
            "Skipping compaction: the disk file is {:.0} MiB, a rewrite would save {:.0} MiB \
             (it runs from {} MiB or {COMPACTION_MIN_PERCENT}%)",
            mib(footprint.file_bytes),
            mib(saves),
            COMPACTION_MIN_BYTES >> 20
        ));
        None
    }
}

/// A hard link to the disk as it was before compaction, removed when
/// dropped: the test boot's overlay reads it.
struct Snapshot {
    path: PathBuf,
}

impl Snapshot {
    fn link(disk: &Path) -> std::io::Result<Snapshot> {
        let mut name = disk.file_name().unwrap_or_default().to_os_string();
        name.push(".testing");
        let path = disk.with_file_name(name);
        let _ = std::fs::remove_file(&path);
        std::fs::hard_link(disk, &path)?;
        Ok(Snapshot { path })
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the first post-processor of a chain made of the disk beside the
/// tests.
pub(super) enum Early {
    /// Nothing: it runs after the tests.
    None,
    /// The disk's digests, for `checksum`.
    Digests(Digests),
    /// The `compress` tarball, to be moved to its name.
    Tarball(EarlyFile),
    /// The `googlecompute-import` upload is done.
    Uploaded,
}

impl Early {
    fn none(spec: &BuildSpec) -> Vec<Early> {
        spec.post_processors.iter().map(|_| Early::None).collect()
    }
}

/// A file made early, removed when dropped unless taken.
pub(super) struct EarlyFile(Option<PathBuf>);

impl EarlyFile {
    fn take(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for EarlyFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A publisher for each chain that starts with `googlecompute-import`.
fn import_publishers(
    spec: &BuildSpec,
    artifact: &Artifact,
) -> Result<Vec<Option<Publisher>>, BuildError> {
    spec.post_processors
        .iter()
        .map(|chain| match chain.first() {
            Some(PostProcessorSpec::GceImport(config)) => {
                gce::import_publisher(config, artifact, disk_format(spec)).map(Some)
            }
            _ => Ok(None),
        })
        .collect()
}

/// Runs, one after the other, what the chains' first post-processors read
/// of the disk: checksums, the `compress` tarball (to a hidden name beside
/// its output), the `googlecompute-import` upload.
async fn early_packaging(
    spec: &BuildSpec,
    ctx: &BuildContext,
    artifact: &Artifact,
    imports: &[Option<Publisher>],
) -> Result<Vec<Early>, BuildError> {
    let mut early = Vec::new();
    for (index, chain) in spec.post_processors.iter().enumerate() {
        let made = match chain.first() {
            Some(PostProcessorSpec::Checksum(config)) => {
                let files = artifact.files.clone();
                let kinds = config.checksum_types.clone();
                let digests = tokio::task::spawn_blocking(move || {
                    let mut digests = Digests::new();
                    for file in &files {
                        for &kind in &kinds {
                            let digest = post::hash_file(file, kind)?;
                            digests.insert((file.clone(), post::type_name(kind)), digest);
                        }
                    }
                    Ok::<_, post::PostError>(digests)
                })
                .await
                .map_err(|err| BuildError::Io {
                    path: artifact.files.first().cloned().unwrap_or_default(),
                    source: std::io::Error::other(err.to_string()),
                })??;
                Early::Digests(digests)
            }
            Some(PostProcessorSpec::Compress(config)) => {
                let output = post::compress_output(config, artifact);
                let mut name = std::ffi::OsString::from(".");
                name.push(output.file_name().unwrap_or_default());
                name.push(".kiln-untested");
                let hidden = EarlyFile(Some(output.with_file_name(name)));
                if let Some(path) = &hidden.0 {
                    post::package_disk_to(ctx, config, artifact, disk_format(spec), path).await?;
                }
                Early::Tarball(hidden)
            }
            Some(PostProcessorSpec::GceImport(_)) => match &imports[index] {
                Some(publisher) => {
                    publisher.refuse_existing().await?;
                    publisher.upload(ctx).await?;
                    Early::Uploaded
                }
                None => Early::None,
            },
            _ => Early::None,
        };
        early.push(made);
    }
    Ok(early)
}

/// Runs the chains and returns the build's artifacts as Packer's build
/// does: the builder's first when kept, then, per chain, each kept
/// intermediate artifact and the chain's last.
async fn run_post_processors(
    spec: &BuildSpec,
    artifact: Artifact,
    ctx: &BuildContext,
    undo: &mut UndoStack,
    run_uuid: &str,
    early: Vec<Early>,
    imports: &[Option<Publisher>],
) -> Result<Vec<Artifact>, BuildError> {
    // Packer deletes a post-processor's input unless it asks to keep it;
    // the builder's own artifact goes only when no chain keeps it.
    let mut builder_artifact_kept = spec.post_processors.is_empty();
    let mut results = Vec::new();
    for ((chain, mut early), import) in spec
        .post_processors
        .iter()
        .zip(early)
        .zip(imports.iter().chain(std::iter::repeat(&None)))
    {
        let mut current = artifact.clone();
        for (position, post) in chain.iter().enumerate() {
            let keeps_input = keeps_input(post);
            // What was made of the disk beside the tests is the chain's
            // first post-processor's.
            let made = std::mem::replace(&mut early, Early::None);
            let output = match post {
                PostProcessorSpec::Checksum(config) => {
                    ctx.say("Running post-processor: checksum");
                    let known = match made {
                        Early::Digests(digests) => digests,
                        _ => Digests::new(),
                    };
                    let out = post::checksum(config, &current, &known)?;
                    for file in &out.files {
                        undo.push(Created::File(file.clone()));
                    }
                    out
                }
                PostProcessorSpec::Manifest(config) => {
                    ctx.say(&format!(
                        "Running post-processor: manifest ({})",
                        config.output.display()
                    ));
                    post::manifest(config, &current, run_uuid)?
                }
                PostProcessorSpec::Compress(config) => {
                    ctx.say("Running post-processor: compress (GCE disk.raw tarball)");
                    let packaged = match made {
                        Early::Tarball(file) => file.take(),
                        _ => None,
                    };
                    let out = post::compress(
                        ctx,
                        config,
                        &current,
                        disk_format(spec),
                        packaged.as_deref(),
                    )
                    .await?;
                    for file in &out.files {
                        undo.push(Created::File(file.clone()));
                    }
                    ctx.say(&out.description);
                    out
                }
                PostProcessorSpec::GceImport(config) => {
                    ctx.say("Running post-processor: googlecompute-import");
                    match (made, import) {
                        (Early::Uploaded, Some(publisher)) => {
                            gce::import_uploaded(ctx, config, &current, publisher).await?
                        }
                        _ => gce::import(ctx, config, &current, disk_format(spec)).await?,
                    }
                }
                PostProcessorSpec::Vagrant(config) => {
                    ctx.say("Running post-processor: vagrant");
                    let disk = post::disk_of("vagrant", &current)?;
                    let out = vagrant::vagrant(
                        ctx,
                        config,
                        &current,
                        &disk,
                        disk_format(spec),
                        spec.qemu.accelerator,
                    )
                    .await
                    .map_err(post::PostError::from)?;
                    for file in &out.files {
                        undo.push(Created::File(file.clone()));
                    }
                    ctx.say(&out.description);
                    out
                }
                PostProcessorSpec::ShellLocal(config) => {
                    ctx.say("Running post-processor: shell-local");
                    post_shell_local::run(ctx, config, &current)
                        .await
                        .map_err(BuildError::PostShellLocal)?
                }
            };
            if position == 0 {
                builder_artifact_kept |= keeps_input;
            } else if keeps_input {
                results.push(current);
            } else {
                remove_files(ctx, &current.files);
            }
            current = output;
        }
        if !chain.is_empty() {
            results.push(current);
        }
    }
    if builder_artifact_kept {
        results.insert(0, artifact);
    } else {
        ctx.say("Deleting the builder's artifact (no post-processor kept its input)");
        remove_files(ctx, &artifact.files);
    }
    Ok(results)
}

/// Checksum and manifest describe their input and always keep it;
/// shell-local keeps it whatever the template says, as Packer's does.
fn keeps_input(post: &PostProcessorSpec) -> bool {
    match post {
        PostProcessorSpec::Checksum(_)
        | PostProcessorSpec::Manifest(_)
        | PostProcessorSpec::ShellLocal(_) => true,
        PostProcessorSpec::Compress(c) => c.keep_input_artifact,
        PostProcessorSpec::GceImport(c) => c.keep_input_artifact,
        PostProcessorSpec::Vagrant(c) => c.keep_input_artifact,
    }
}

fn remove_files(ctx: &BuildContext, files: &[PathBuf]) {
    for file in files {
        if let Err(err) = std::fs::remove_file(file) {
            ctx.reporter.error(
                &ctx.name,
                &format!("could not remove {}: {err}", file.display()),
            );
        }
    }
}

/// Boots the finished disk again and runs the template's checks; writes
/// the report when asked, and fails the build when a check failed.
async fn smoke_test(
    spec: &BuildSpec,
    options: &BuildOptions,
    ctx: &BuildContext,
    disk_path: &Path,
) -> Result<(), BuildError> {
    let config = &spec.qemu;
    // Kept with the artifact under -on-error=abort, to say why it must
    // not be used. Not written when the test boot is stopped because the
    // packaging beside it failed: the tests did not fail.
    let marker = config.output_directory.join("TESTS-FAILED.json");
    let results = match super::test_boot::run(
        ctx,
        config,
        disk_path,
        config.format.as_str(),
        &super::log_beside(config, "test.serial.log"),
        &spec.tests,
        spec.gce.as_ref().map(|gce| &gce.instance),
    )
    .await
    {
        Ok(results) => results,
        Err(err) => {
            let why = options.redactor.redact(&crate::error::error_chain(&err));
            let _ = std::fs::write(
                &marker,
                crate::smoke::report::not_run(&spec.name, spec.tests.len(), &why),
            );
            return Err(err);
        }
    };
    // A check's output is the guest's: it may print a secret.
    let results = mask_results(results, &options.redactor);
    let report = match &options.test_report {
        Some(path) => {
            let path = report_path(path, &spec.name, options.many_builds);
            crate::smoke::report::write(&path, &spec.name, &results)?;
            Some(path)
        }
        None => None,
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        let _ = std::fs::write(&marker, crate::smoke::report::json(&spec.name, &results));
        return Err(BuildError::TestsFailed {
            failed,
            total: results.len(),
            report,
        });
    }
    Ok(())
}

fn mask_results(
    results: Vec<crate::smoke::CheckResult>,
    redactor: &crate::redact::Redactor,
) -> Vec<crate::smoke::CheckResult> {
    results
        .into_iter()
        .map(|r| crate::smoke::CheckResult {
            name: redactor.redact(&r.name),
            reason: redactor.redact(&r.reason),
            output: redactor.redact(&r.output),
            ..r
        })
        .collect()
}

/// With several builds, each writes its own report: `report-<build>.xml`.
fn report_path(path: &Path, build: &str, many_builds: bool) -> PathBuf {
    if !many_builds {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{build}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::report::Reporter;
    use crate::plan::{ChecksumPostConfig, ChecksumType, ManifestConfig};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    struct Quiet;

    impl Reporter for Quiet {
        fn stage(&self, _: &str, _: Stage) {}
        fn say(&self, _: &str, _: &str) {}
        fn output(&self, _: &str, _: &str) {}
        fn error(&self, _: &str, _: &str) {}
        fn artifacts(&self, _: &str, _: &[Artifact]) {}
        fn progress(&self, _: &str, _: Option<&report::Progress>) {}
    }

    /// Packer's list: the kept builder artifact first, then the last
    /// artifact of each chain (a manifest passes its input on).
    #[tokio::test]
    async fn the_artifacts_are_the_builders_and_each_chains_last() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.qcow2");
        std::fs::write(&disk, b"disk").unwrap();
        let sums = dir.path().join("disk.md5").display().to_string();
        let spec = BuildSpec {
            name: "demo".into(),
            builder_type: "qemu".into(),
            qemu: QemuConfig::default(),
            gce: None,
            provisioners: Vec::new(),
            post_processors: vec![
                vec![PostProcessorSpec::Checksum(ChecksumPostConfig {
                    checksum_types: vec![ChecksumType::Md5],
                    output: sums.clone(),
                    keep_input_artifact: false,
                })],
                vec![PostProcessorSpec::Manifest(ManifestConfig {
                    output: dir.path().join("manifest.json"),
                    strip_path: false,
                    strip_time: true,
                    custom_data: Default::default(),
                    keep_input_artifact: false,
                })],
            ],
            tests: Vec::new(),
        };
        let built = Artifact {
            build_name: "demo".into(),
            builder_type: "qemu".into(),
            builder_id: report::QEMU_BUILDER_ID.into(),
            id: None,
            files: vec![disk.clone()],
            description: "VM files in directory: out".into(),
        };
        let ctx = BuildContext::standalone("demo", Arc::new(Quiet), CancellationToken::new());
        let mut undo = UndoStack::default();
        let artifacts = run_post_processors(
            &spec,
            built,
            &ctx,
            &mut undo,
            "run",
            Early::none(&spec),
            &[],
        )
        .await
        .unwrap();
        let described: Vec<(&str, &str)> = artifacts
            .iter()
            .map(|a| (a.builder_id.as_str(), a.id()))
            .collect();
        assert_eq!(
            described,
            [
                (report::QEMU_BUILDER_ID, "VM"),
                ("packer.post-processor.checksum", ""),
                (report::QEMU_BUILDER_ID, "VM"),
            ]
        );
        assert_eq!(
            artifacts[1].description,
            format!("Created artifact from files: {sums}")
        );
        assert!(disk.exists(), "checksum keeps its input");
        undo.succeed();
    }

    fn qemu_io(disk: &Path, command: &str) {
        let ok = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", command])
            .arg(disk)
            .output()
            .expect("qemu-io is needed for this test")
            .status
            .success();
        assert!(ok, "qemu-io {command}");
    }

    /// A disk that is all data is left alone; once the guest freed most of
    /// it, it is rewritten; without discards reaching the image, or with
    /// compression asked for, it always is.
    #[tokio::test]
    async fn compaction_runs_only_when_it_pays() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.qcow2");
        let created = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("1G")
            .status()
            .unwrap();
        assert!(created.success());
        qemu_io(&disk, "write -P 7 0 100M");
        let ctx = BuildContext::standalone("demo", Arc::new(Quiet), CancellationToken::new());
        let mut config = QemuConfig::default();
        assert_eq!(plan_compaction(&config, &ctx, &disk).await, None);
        qemu_io(&disk, "discard 0 90M");
        assert_eq!(plan_compaction(&config, &ctx, &disk).await, Some(false));
        config.disk_discard = Some("ignore".into());
        assert_eq!(plan_compaction(&config, &ctx, &disk).await, Some(false));
        config.disk_compression = true;
        assert_eq!(plan_compaction(&config, &ctx, &disk).await, Some(true));
        config.use_backing_file = true;
        assert_eq!(plan_compaction(&config, &ctx, &disk).await, None);
    }
}
