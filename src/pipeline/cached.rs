//! `kiln build -cache`: the build's machine as a chain of step-cache
//! entries. The machine is saved (memory and disk, with the VM stopped so
//! both match) right after SSH first answers and after each provisioner;
//! a rebuild restores the last saved machine whose inputs did not change
//! and runs only the provisioners after it. The finished, shut-down disk
//! is an entry too: a rebuild with nothing changed copies it and boots
//! nothing.

use std::path::{Path, PathBuf};

use super::machine::{self, KeptKey, Machine, MachineError};
use super::step_keys::{self, BuildKeys};
use super::{
    BuildContext, BuildError, against_machine, disk, gce_guest, interactive, report::Stage,
};
use crate::plan::{BuildSpec, Communicator, DiskFormat, QemuConfig};
use crate::ssh::Guest;
use crate::stepcache::{
    Began, CommitInfo, EntryInfo, EntryKind, Found, PendingEntry, StepKey, StepStore, UsedEntry,
};

/// `meta.json` extra: the seed's instance-id the saved machine booted with.
const EXTRA_INSTANCE_ID: &str = "instance_id";
/// `meta.json` extra: kiln's `/etc/hosts` line was in the saved guest.
const EXTRA_HOSTS_LINE: &str = "hosts_line";
/// `meta.json` extra of a final entry: the hash of the checks that passed
/// on it.
const EXTRA_TESTS: &str = "tests";

/// Why a build cannot use the step cache (it then builds as without
/// `-cache`, saying so once).
pub(super) fn not_cacheable(spec: &BuildSpec) -> Option<&'static str> {
    let config = &spec.qemu;
    if matches!(config.communicator, Communicator::None) {
        return Some("communicator none: there are no steps to save");
    }
    if config.use_backing_file {
        return Some("use_backing_file: the output must stay an overlay on the source");
    }
    None
}

/// How many entries a build reused and made.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub hits: usize,
    pub misses: usize,
}

/// The step cache's part of a build, from the source image to the
/// finished disk.
pub(super) struct Cached {
    store: StepStore,
    keys: BuildKeys,
    /// Entries this build reads: held (shared lock) until it ends.
    used: Vec<UsedEntry>,
    /// The finished disk's entry, made by this build: committed once the
    /// tests pass.
    finished: Option<PendingEntry>,
    /// The finished disk came from the cache and these checks passed on
    /// it already.
    tests_passed: Option<String>,
    /// Every step up to the last one is in the cache, made or reused by
    /// this build: the finished disk can be kept as their child.
    chain_whole: bool,
    pub counts: Counts,
}

impl Cached {
    /// Opens the cache and computes the build's keys.
    pub(super) async fn open(
        spec: &BuildSpec,
        ctx: &BuildContext,
        source: &Path,
    ) -> Result<Cached, BuildError> {
        let cache = crate::cache::Cache::from_env()
            .map_err(|err| BuildError::Source(crate::source::SourceError::Cache(err)))?;
        let store = StepStore::open(&cache).map_err(BuildError::StepCache)?;
        let digest = {
            let (store, source) = (store.clone(), source.to_path_buf());
            tokio::task::spawn_blocking(move || store.source_digest(&source))
                .await
                .map_err(|err| BuildError::StepCache(crate::stepcache::StepCacheError::Task(err)))?
                .map_err(BuildError::StepCache)?
        };
        let version = qemu_version(&spec.qemu).await;
        let keys = step_keys::compute(spec, &digest, &version).map_err(BuildError::StepKey)?;
        if let Some((position, why)) = &keys.uncached_from {
            ctx.say(&format!(
                "step cache: provisioner {} and those after it are not cached: {why}",
                position + 1
            ));
        }
        Ok(Cached {
            store,
            keys,
            used: Vec::new(),
            finished: None,
            tests_passed: None,
            chain_whole: true,
            counts: Counts::default(),
        })
    }

    /// Whether the smoke tests `tests_hash` already passed on the disk
    /// this build took from the cache.
    pub(super) fn tests_already_passed(&self, tests_hash: &str) -> bool {
        self.tests_passed.as_deref() == Some(tests_hash)
    }

    /// The checks passed on the finished disk: its entry is kept for the
    /// next build, with the checks that passed.
    pub(super) async fn tests_passed(&mut self, tests_hash: &str) -> Result<(), BuildError> {
        let mut extra = serde_json::Map::new();
        extra.insert(EXTRA_TESTS.into(), tests_hash.into());
        if let Some(pending) = self.finished.take() {
            let entry = pending
                .commit_async(CommitInfo { extra })
                .await
                .map_err(BuildError::StepCache)?;
            self.used.push(entry);
        } else if let Some(entry) = self.used.last_mut()
            && entry.meta().kind == EntryKind::Final
        {
            let entry_extra = extra;
            // Best effort: another build using the entry keeps it as it was.
            let _ = entry.record_extra(entry_extra);
        }
        Ok(())
    }

    /// The finished disk has no smoke tests to pass: kept as it is.
    pub(super) async fn keep_untested(&mut self) -> Result<(), BuildError> {
        if let Some(pending) = self.finished.take() {
            let entry = pending
                .commit_async(CommitInfo::default())
                .await
                .map_err(BuildError::StepCache)?;
            self.used.push(entry);
        }
        Ok(())
    }

    /// One line for the person watching.
    pub(super) fn summary(&self) -> String {
        format!(
            "step cache: {} hit(s), {} miss(es)",
            self.counts.hits, self.counts.misses
        )
    }
}

/// The hash of a build's smoke tests, as recorded on a final entry.
pub(super) fn tests_hash(spec: &BuildSpec) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{:?}", spec.tests).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `qemu-system-... --version`'s first line: a saved machine loads only
/// into the QEMU that saved it.
async fn qemu_version(config: &QemuConfig) -> String {
    let output = tokio::process::Command::new(&config.qemu_binary)
        .arg("--version")
        .output()
        .await;
    match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        Err(_) => String::new(),
    }
}

/// What the build runs with: the machine to start from and where it goes.
pub(super) struct Run<'a> {
    pub spec: &'a BuildSpec,
    pub ctx: &'a BuildContext,
    pub steps: &'a interactive::Interactive,
    pub source: &'a Path,
    pub scratch: &'a Path,
    pub serial_log: &'a Path,
    pub http_port: Option<u16>,
}

/// Builds the finished disk at `disk_path` (in the output format,
/// standalone, compacted): from the cache where it can, from the longest
/// unchanged prefix of steps otherwise.
pub(super) async fn build_disk(
    cached: &mut Cached,
    run: &Run<'_>,
    disk_path: &Path,
) -> Result<(), BuildError> {
    let ctx = run.ctx;
    let total_steps = 1 + cached.keys.steps.len();
    if let Some(key) = cached.keys.finished
        && let Some(entry) = lookup(&cached.store, ctx, key).await?
    {
        ctx.say("step cache: nothing changed; the finished disk comes from the cache");
        copy(&entry.disk_path(), disk_path).await?;
        cached.tests_passed = entry
            .meta()
            .extra
            .get(EXTRA_TESTS)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        cached.used.push(entry);
        cached.counts.hits += total_steps + 1;
        return Ok(());
    }
    // The longest run of saved steps, from the boot on.
    let chain: Vec<StepKey> = std::iter::once(cached.keys.boot)
        .chain(cached.keys.steps.iter().copied())
        .collect();
    let mut reusable = Vec::new();
    for key in &chain {
        match lookup(&cached.store, ctx, *key).await? {
            Some(entry) => reusable.push(entry),
            None => break,
        }
    }
    let result = if reusable.is_empty() {
        let info = EntryInfo {
            kind: EntryKind::Boot,
            parent: None,
            base: run.spec.qemu.disk_image.then(|| absolute(run.source)),
            label: format!("{}: boot", run.spec.name),
        };
        match cached
            .store
            .begin_async(cached.keys.boot, info)
            .await
            .map_err(BuildError::StepCache)?
        {
            Began::New(boot) => cold(cached, run, Some(boot)).await,
            // Another build booted the same machine meanwhile: use it.
            Began::Exists(boot) => restore_or_cold(cached, run, vec![boot]).await,
        }
    } else {
        restore_or_cold(cached, run, reusable).await
    };
    let top = result?;
    finish(cached, run, &top, disk_path).await
}

/// Restores the last of `reusable` (the boot and the provisioners after
/// it, in order) and runs on from there; boots cold, saving nothing, when
/// the saved machine does not come back.
async fn restore_or_cold(
    cached: &mut Cached,
    run: &Run<'_>,
    reusable: Vec<UsedEntry>,
) -> Result<PathBuf, BuildError> {
    let ctx = run.ctx;
    let done = reusable.len();
    let Some(last) = reusable.last() else {
        return cold(cached, run, None).await;
    };
    ctx.say(&format!(
        "step cache: restoring the machine saved after {}",
        describe_position(done - 1)
    ));
    match restore(cached, run, last, done).await {
        Ok(result) => {
            cached.counts.hits += done;
            cached.used.extend(reusable);
            Ok(result)
        }
        Err(BuildError::Machine(MachineError::RestoreFailed { why })) => {
            ctx.say(&format!("warm boot failed ({why}); booting cold"));
            // Entries this build cannot restore are not taken again by
            // it: it builds without saving.
            drop(reusable);
            cached.chain_whole = false;
            cold(cached, run, None).await
        }
        Err(err) => Err(err),
    }
}

/// "the boot" or "provisioner N (type)".
fn describe_position(position: usize) -> String {
    if position == 0 {
        "the boot".to_string()
    } else {
        format!("provisioner {position}")
    }
}

/// The entry `key` when it is complete and sound; a damaged one is said
/// and left for this build to make again.
async fn lookup(
    store: &StepStore,
    ctx: &BuildContext,
    key: StepKey,
) -> Result<Option<UsedEntry>, BuildError> {
    match store.find_async(key).await.map_err(BuildError::StepCache)? {
        Found::Entry(entry) => Ok(Some(*entry)),
        Found::Missing => Ok(None),
        Found::Corrupt(why) => {
            ctx.say(&format!(
                "step cache: entry {key} is corrupt ({why}); building it again"
            ));
            Ok(None)
        }
    }
}

/// Takes the entry `key` to fill: `None` when another build made it
/// meanwhile (this build then stops saving: its machine is its own).
async fn begin(
    store: &StepStore,
    key: StepKey,
    info: EntryInfo,
) -> Result<Option<PendingEntry>, BuildError> {
    match store
        .begin_async(key, info)
        .await
        .map_err(BuildError::StepCache)?
    {
        Began::New(pending) => Ok(Some(pending)),
        Began::Exists(_) => Ok(None),
    }
}

/// The disk overlay the machine writes to after the checkpoint at
/// `position` (0: the boot): the next entry's, or a scratch file when
/// nothing after it is saved.
struct Next {
    pending: Option<PendingEntry>,
    overlay: PathBuf,
}

async fn next_overlay(
    cached: &Cached,
    run: &Run<'_>,
    position: usize,
    saving: bool,
) -> Result<Next, BuildError> {
    let parent = if position == 0 {
        cached.keys.boot
    } else {
        cached.keys.steps[position - 1]
    };
    if saving && let Some(key) = cached.keys.steps.get(position).copied() {
        let label = provisioner_label(run.spec, position);
        if let Some(pending) = begin(
            &cached.store,
            key,
            EntryInfo {
                kind: EntryKind::Step,
                parent: Some(parent),
                base: None,
                label,
            },
        )
        .await?
        {
            return Ok(Next {
                overlay: pending.disk_path(),
                pending: Some(pending),
            });
        }
    }
    Ok(Next {
        pending: None,
        overlay: run.scratch.join(format!("top-{position}.qcow2")),
    })
}

fn provisioner_label(spec: &BuildSpec, position: usize) -> String {
    let provisioner = &spec.provisioners[position];
    format!(
        "{}: provisioner {} ({})",
        spec.name,
        provisioner.index + 1,
        provisioner.type_name
    )
}

/// Boots from the source, saving the boot into `boot` when there is one,
/// then runs every provisioner.
async fn cold(
    cached: &mut Cached,
    run: &Run<'_>,
    boot: Option<PendingEntry>,
) -> Result<PathBuf, BuildError> {
    let (ctx, spec) = (run.ctx, run.spec);
    let config = &spec.qemu;
    let saving = boot.is_some();
    let disk_path = match &boot {
        Some(pending) => pending.disk_path(),
        None => run.scratch.join("top-boot.qcow2"),
    };
    make_overlay_disk(config, run.source, &disk_path).await?;
    let mut vm = Machine::prepare(
        ctx,
        config,
        run.source,
        &disk_path,
        run.scratch,
        run.serial_log,
        &identity(spec),
    )
    .await?;
    if let Some(port) = run.http_port {
        vm.set_http_port(port);
    }
    run.steps.begin(ctx, Stage::Launch).await;
    vm.launch(ctx).await?;
    vm.type_boot_command(ctx).await?;
    run.steps.begin(ctx, Stage::Connect).await;
    let mut guest = vm.connect(ctx).await?;
    if let Some(gce) = &spec.gce {
        vm.resolve_metadata_name(ctx, &mut guest).await?;
        if let Some(script) = &gce.startup_script {
            let running = async {
                gce_guest::run_startup_script(ctx, &mut guest, script, gce.state_timeout)
                    .await
                    .map_err(BuildError::StartupScript)
            };
            against_machine(&mut vm, machine::DURING_STARTUP_SCRIPT, running).await?;
        }
    }
    let mut current = boot;
    if current.is_some() {
        cached.counts.misses += 1;
    } else {
        cached.chain_whole = false;
    }
    let top = provision_from(
        cached,
        run,
        &mut vm,
        &mut guest,
        0,
        &mut current,
        disk_path,
        saving,
    )
    .await?;
    shut_down(run, vm, guest).await?;
    Ok(top)
}

/// Restores the machine saved in `entry` (`done` steps in: the boot and
/// `done - 1` provisioners) and runs the provisioners after it.
async fn restore(
    cached: &mut Cached,
    run: &Run<'_>,
    entry: &UsedEntry,
    done: usize,
) -> Result<PathBuf, BuildError> {
    let (ctx, spec) = (run.ctx, run.spec);
    let config = &spec.qemu;
    let position = done - 1;
    let next = next_overlay(cached, run, position, true).await?;
    disk::overlay(&entry.disk_path(), "qcow2", &next.overlay).await?;
    let extra = &entry.meta().extra;
    let kept = extra
        .get(EXTRA_INSTANCE_ID)
        .and_then(|v| v.as_str())
        .map(|id| KeptKey {
            private_key: entry.ssh_key_path(),
            instance_id: id.to_string(),
            hosts_line: extra
                .get(EXTRA_HOSTS_LINE)
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        });
    let mut vm = Machine::prepare_warm(
        ctx,
        config,
        run.source,
        &next.overlay,
        run.scratch,
        run.serial_log,
        &identity(spec),
        kept.as_ref(),
    )
    .await?;
    if let Some(port) = run.http_port {
        vm.set_http_port(port);
    }
    run.steps.begin(ctx, Stage::Launch).await;
    let mut guest = vm.restore(ctx, &entry.state_path()).await?;
    let mut current = next.pending;
    if current.is_none() && position < cached.keys.steps.len() {
        cached.chain_whole = false;
    }
    let top = provision_from(
        cached,
        run,
        &mut vm,
        &mut guest,
        done,
        &mut current,
        next.overlay,
        true,
    )
    .await?;
    shut_down(run, vm, guest).await?;
    Ok(top)
}

/// Runs provisioners from `start` (0-based) on, saving the machine before
/// each one (the first save is the boot's when `start` is 0) into
/// `current`, the entry its overlay belongs to. Returns the overlay the
/// machine writes to at the end.
#[allow(clippy::too_many_arguments)]
async fn provision_from(
    cached: &mut Cached,
    run: &Run<'_>,
    vm: &mut Machine,
    guest: &mut Guest,
    start: usize,
    current: &mut Option<PendingEntry>,
    mut overlay: PathBuf,
    saving: bool,
) -> Result<PathBuf, BuildError> {
    let (ctx, spec) = (run.ctx, run.spec);
    if start == 0 {
        overlay = checkpoint(cached, run, vm, current, 0, overlay, saving).await?;
    }
    run.steps.begin(ctx, Stage::Provision).await;
    for position in start.max(1)..=spec.provisioners.len() {
        let provisioner = &spec.provisioners[position - 1];
        let running = super::provision_one(spec, provisioner, ctx, Some(&mut *guest), run.steps);
        against_machine(vm, machine::DURING_PROVISIONING, running).await?;
        overlay = checkpoint(cached, run, vm, current, position, overlay, saving).await?;
    }
    Ok(overlay)
}

/// Saves the machine into `current` (when there is one) and moves its
/// writes to the next overlay.
async fn checkpoint(
    cached: &mut Cached,
    run: &Run<'_>,
    vm: &mut Machine,
    current: &mut Option<PendingEntry>,
    position: usize,
    overlay: PathBuf,
    saving: bool,
) -> Result<PathBuf, BuildError> {
    let Some(pending) = current.take() else {
        return Ok(overlay);
    };
    let next = next_overlay(cached, run, position, saving).await?;
    vm.checkpoint(run.ctx, &pending.state_path(), &next.overlay)
        .await?;
    let kept = vm.kept_key();
    let mut extra = serde_json::Map::new();
    if let Some(kept) = &kept {
        copy_key(&kept.private_key, &pending.ssh_key_path())?;
        extra.insert(EXTRA_INSTANCE_ID.into(), kept.instance_id.clone().into());
        extra.insert(EXTRA_HOSTS_LINE.into(), kept.hosts_line.into());
    }
    let entry = pending
        .commit_async(CommitInfo { extra })
        .await
        .map_err(BuildError::StepCache)?;
    if position > 0 {
        cached.counts.misses += 1;
    }
    cached.used.push(entry);
    if next.pending.is_none() && position < cached.keys.steps.len() {
        cached.chain_whole = false;
    }
    *current = next.pending;
    Ok(next.overlay)
}

/// Writes the key the machine accepts into the entry, readable by its
/// owner only.
fn copy_key(from: &Path, to: &Path) -> Result<(), BuildError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| BuildError::Io {
        path: to.to_path_buf(),
        source,
    };
    let key = std::fs::read(from).map_err(|source| BuildError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(io)?;
    file.write_all(&key).map_err(io)?;
    Ok(())
}

async fn shut_down(run: &Run<'_>, mut vm: Machine, mut guest: Guest) -> Result<(), BuildError> {
    run.steps.begin(run.ctx, Stage::Shutdown).await;
    super::trim::run(run.ctx, &run.spec.qemu, &mut guest).await;
    vm.remove_build_key(run.ctx, &mut guest).await?;
    vm.shutdown(run.ctx, Some(guest)).await?;
    Ok(())
}

/// Makes the finished disk from the machine's overlay chain, in the
/// output format, into the final entry (kept once the tests pass) and
/// `disk_path`.
async fn finish(
    cached: &mut Cached,
    run: &Run<'_>,
    top: &Path,
    disk_path: &Path,
) -> Result<(), BuildError> {
    let config = &run.spec.qemu;
    run.ctx.say("Writing the finished disk...");
    let parent = cached
        .keys
        .steps
        .last()
        .copied()
        .unwrap_or(cached.keys.boot);
    let pending = match cached.keys.finished {
        Some(key) if cached.chain_whole => {
            begin(
                &cached.store,
                key,
                EntryInfo {
                    kind: EntryKind::Final,
                    parent: Some(parent),
                    base: None,
                    label: format!("{}: finished disk", run.spec.name),
                },
            )
            .await?
        }
        _ => None,
    };
    match pending {
        Some(pending) => {
            let target = match config.format {
                DiskFormat::Raw => pending.raw_disk_path(),
                _ => pending.disk_path(),
            };
            disk::flatten(top, &target, config.format, config.disk_compression).await?;
            copy(&target, disk_path).await?;
            cached.counts.misses += 1;
            cached.finished = Some(pending);
        }
        None => {
            disk::flatten(top, disk_path, config.format, config.disk_compression).await?;
        }
    }
    Ok(())
}

async fn copy(from: &Path, to: &Path) -> Result<(), BuildError> {
    disk::link_or_copy(from, to).await.map_err(BuildError::from)
}

/// The boot disk: an overlay on the source image, resized (or a blank
/// disk for an installer).
async fn make_overlay_disk(
    config: &QemuConfig,
    source: &Path,
    target: &Path,
) -> Result<(), BuildError> {
    let mut overlay_config = config.clone();
    overlay_config.format = DiskFormat::Qcow2;
    overlay_config.use_backing_file = true;
    super::make_disk(&overlay_config, source, target).await
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn identity(spec: &BuildSpec) -> machine::Identity<'_> {
    machine::Identity {
        hostname: spec
            .gce
            .as_ref()
            .map_or(spec.qemu.vm_name.as_str(), |gce| gce.instance.name.as_str()),
        gce: spec.gce.as_ref().map(|gce| &gce.instance),
    }
}
