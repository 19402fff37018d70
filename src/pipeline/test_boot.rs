//! The test stage: a throw-away overlay of a disk, booted as a brand-new
//! instance (fresh seed, new instance-id and hostname, so first-boot logic
//! runs again), checked over SSH, powered off and deleted. The disk itself
//! is only ever read.

use std::path::Path;

use super::machine::{DURING_TESTS, Machine};
use super::report::Stage;
use super::{BuildContext, BuildError, disk};
use crate::plan::{CheckSpec, Communicator, DiskFormat, GceInstance, QemuConfig};
use crate::smoke::{self, CheckResult};

/// Boots `disk` (in `format`) under an overlay and runs `checks` on it.
pub async fn run(
    ctx: &BuildContext,
    config: &QemuConfig,
    disk: &Path,
    format: &str,
    serial_log: &Path,
    checks: &[CheckSpec],
    gce: Option<&GceInstance>,
) -> Result<Vec<CheckResult>, BuildError> {
    if matches!(config.communicator, Communicator::None) {
        return Err(BuildError::TestsNeedSsh);
    }
    ctx.stage(Stage::Test);
    // Removed when this returns, fails or is cancelled: the overlay, the
    // seed, the key and the QMP socket.
    let scratch = super::scratch_dir("kiln-test-")?;
    let overlay = scratch.path().join("overlay.qcow2");
    disk::overlay(disk, format, &overlay).await?;

    let mut boot_config = config.clone();
    boot_config.disk_image = true;
    boot_config.format = DiskFormat::Qcow2;
    // The template's own cd_files were for the build; the test boot gets
    // only its fresh seed.
    boot_config.cd_files.clear();
    boot_config.cd_content.clear();
    boot_config.cd_label = None;
    // A googlecompute image boots as a new instance of the same project,
    // without the build's key (the seed gives the test boot its own).
    let test_instance = gce.map(|instance| {
        let mut instance = instance.clone();
        instance.name = format!("{}-test", instance.name);
        instance.attributes.remove("ssh-keys");
        instance
    });
    let hostname = match &test_instance {
        Some(instance) => instance.name.clone(),
        None => format!("{}-test", config.vm_name.replace('.', "-")),
    };
    ctx.say(&format!(
        "Booting a fresh instance of the result for {} check(s)...",
        checks.len()
    ));
    let mut vm = Machine::prepare(
        ctx,
        &boot_config,
        disk,
        &overlay,
        scratch.path(),
        serial_log,
        &super::machine::Identity {
            hostname: &hostname,
            gce: test_instance.as_ref(),
        },
    )
    .await?;
    vm.launch(ctx).await?;
    let mut guest = vm.connect(ctx).await?;
    // The overlay is thrown away: the hosts line need not be removed.
    vm.resolve_metadata_name(ctx, &mut guest).await?;
    let report = |result: &CheckResult| {
        if result.passed {
            ctx.say(&format!("check {}: pass", result.name));
        } else {
            ctx.reporter.error(
                &ctx.name,
                &format!("check {}: FAIL: {}", result.name, result.reason),
            );
        }
    };
    let checking = async {
        smoke::run_checks(checks, &mut guest, &ctx.cancel, &report)
            .await
            .map_err(|source| BuildError::Machine(super::MachineError::Ssh(source)))
    };
    let results = super::against_machine(&mut vm, DURING_TESTS, checking).await?;
    // The instance is thrown away with its overlay: a power-off that
    // does not finish (a busy host, a guest that hangs on the way down)
    // must not lose the results. The machine is stopped when dropped.
    if let Err(err) = vm.shutdown(ctx, Some(guest)).await {
        ctx.say(&format!(
            "the test instance did not power off cleanly ({}); stopped it",
            crate::error::error_chain(&err)
        ));
    }
    for line in smoke::report::table(&results) {
        ctx.say(&line);
    }
    Ok(results)
}
