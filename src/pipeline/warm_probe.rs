//! A template's build machine driven one step at a time from outside the
//! pipeline (boot, run a command, checkpoint, restore, shut down): the seam
//! the warm-boot integration tests go through, so that they test the very
//! `Machine` a build uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::machine::{Identity, KeptKey, Machine};
use super::report::{Artifact, Progress, Reporter, Stage};
use super::{BuildContext, MachineError};
use crate::ssh::{ExitStatus, Guest, Stream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The first build of a template, its machine up and logged in to.
pub struct Probe {
    ctx: BuildContext,
    machine: Machine,
    guest: Option<Guest>,
}

/// Prints what a build would show, for the test's log.
struct Stderr;

impl Reporter for Stderr {
    fn stage(&self, _: &str, _: Stage) {}
    fn say(&self, build: &str, message: &str) {
        eprintln!("{build}: {message}");
    }
    fn output(&self, build: &str, line: &str) {
        eprintln!("{build}: | {line}");
    }
    fn error(&self, build: &str, message: &str) {
        eprintln!("{build}: error: {message}");
    }
    fn artifacts(&self, _: &str, _: &[Artifact]) {}
    fn progress(&self, _: &str, _: Option<&Progress>) {}
}

/// The template's first build: its context and QEMU settings.
fn first_build(template: &Path) -> Result<(BuildContext, crate::plan::QemuConfig), Error> {
    let plan = crate::template::load(template, &Default::default())?;
    let spec = plan.builds.into_iter().next().ok_or("no build")?;
    let ctx = BuildContext::standalone(&spec.name, Arc::new(Stderr), CancellationToken::new());
    Ok((ctx, spec.qemu))
}

impl Probe {
    /// Boots the template's first build cold on a new disk `disk` (made as
    /// a build makes it), its files in `scratch`, and logs in.
    pub async fn boot(template: &Path, disk: &Path, scratch: &Path) -> Result<Probe, Error> {
        let (ctx, config) = first_build(template)?;
        let source = super::resolve_source(&config, &ctx).await?;
        super::make_disk(&config, &source, disk).await?;
        let mut machine = Machine::prepare(
            &ctx,
            &config,
            &source,
            disk,
            scratch,
            &scratch.join("serial.log"),
            &Identity {
                hostname: "probe",
                gce: None,
            },
        )
        .await?;
        machine.launch(&ctx).await?;
        let guest = machine.connect(&ctx).await?;
        Ok(Probe {
            ctx,
            machine,
            guest: Some(guest),
        })
    }

    /// Restores the template's first build from `state` onto `disk`, a new
    /// overlay of the image frozen with it, logging in with `kept`.
    pub async fn restore(
        template: &Path,
        disk: &Path,
        scratch: &Path,
        kept: Option<&KeptKey>,
        state: &Path,
    ) -> Result<Probe, Error> {
        let (ctx, config) = first_build(template)?;
        let source = super::resolve_source(&config, &ctx).await?;
        let mut machine = Machine::prepare_warm(
            &ctx,
            &config,
            &source,
            disk,
            scratch,
            &scratch.join("serial.log"),
            &Identity {
                hostname: "probe",
                gce: None,
            },
            kept,
        )
        .await?;
        let guest = machine.restore(&ctx, state).await?;
        Ok(Probe {
            ctx,
            machine,
            guest: Some(guest),
        })
    }

    /// Runs `command` in the guest: its exit code and its stdout.
    pub async fn run(&mut self, command: &str) -> Result<(u32, String), Error> {
        let guest = self.guest.as_mut().ok_or("not logged in")?;
        let session = guest.session().await?;
        let mut out = String::new();
        let status = session
            .exec(command, &mut |stream, line| {
                if stream == Stream::Stdout {
                    out.push_str(line);
                    out.push('\n');
                }
            })
            .await?;
        match status {
            ExitStatus::Code(code) => Ok((code, out)),
            other => Err(format!("{command}: {other:?}").into()),
        }
    }

    /// [`Machine::checkpoint`].
    pub async fn checkpoint(
        &mut self,
        state: &Path,
        next_overlay: &Path,
    ) -> Result<(), MachineError> {
        self.machine
            .checkpoint(&self.ctx, state, next_overlay)
            .await
    }

    /// [`Machine::kept_key`], copied to `dir` as a cache entry keeps it.
    pub fn keep_key(&self, dir: &Path) -> Result<Option<KeptKey>, Error> {
        let Some(kept) = self.machine.kept_key() else {
            return Ok(None);
        };
        let path: PathBuf = dir.join("ssh_key");
        std::fs::copy(&kept.private_key, &path)?;
        Ok(Some(KeptKey {
            private_key: path,
            ..kept
        }))
    }

    /// Powers the guest off as a build does, and waits for QEMU to exit.
    pub async fn shutdown(mut self) -> Result<(), MachineError> {
        self.machine.shutdown(&self.ctx, self.guest.take()).await
    }
}
