//! `kiln export DISK`: the GCE tarball of any qcow2 or raw disk, to a file
//! or published as a Compute Engine image.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use super::args::ExportArgs;
use super::ui::Ui;
use crate::export::FormatPolicy;
use crate::pipeline::BuildContext;
use crate::pipeline::gce::{self, Publish};
use crate::pipeline::post;
use crate::plan::{CompressionLevel, GceImportConfig};

pub async fn run(args: ExportArgs) -> ExitCode {
    let ui = Ui::new(
        super::output_mode(false),
        false,
        Box::new(std::io::stdout()),
    );
    let interrupt = super::interrupt::Interrupt::install(ui.clone());
    let cancel = interrupt.token();
    let ctx = BuildContext {
        name: "export".to_string(),
        builder_type: "qemu".to_string(),
        reporter: Arc::new(ui.clone()),
        cancel: cancel.clone(),
    };
    // Wrong arguments stop the export before anything is written.
    let target = match check(&args) {
        Ok(target) => target,
        Err(err) => {
            ui.error_global(&format!(
                "Error: {}",
                crate::error::error_chain(err.as_ref())
            ));
            return super::exit::code(super::exit::USAGE);
        }
    };
    let work = async {
        match &target {
            Target::File(output) => package(&ctx, &args, output).await,
            Target::Image(config) => publish(&ctx, &args, config).await,
        }
    };
    let result = tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
    };
    ui.stop_live();
    if let Some(status) = interrupt.exit_status() {
        return super::exit::code(status);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui.error_global(&format!(
                "Error: {}",
                crate::error::error_chain(err.as_ref())
            ));
            super::exit::code(super::exit::FAILURE)
        }
    }
}

/// Where the tarball goes.
enum Target {
    File(std::path::PathBuf),
    Image(Box<GceImportConfig>),
}

/// `--level` is read as a plain number so that a wrong one gets kiln's
/// message (and exit code) rather than clap's.
fn level(args: &ExportArgs) -> anyhow::Result<CompressionLevel> {
    CompressionLevel::try_from(args.level).map_err(|_| {
        anyhow::anyhow!(
            "--level {}: expected {} to {}",
            args.level,
            CompressionLevel::MIN,
            CompressionLevel::MAX
        )
    })
}

fn check(args: &ExportArgs) -> anyhow::Result<Target> {
    level(args)?;
    if std::fs::symlink_metadata(&args.disk).is_err() {
        anyhow::bail!("disk {} not found", args.disk.display());
    }
    // Not a disk, a format kiln must not guess, a bad backing chain: said
    // before anything is written or sent.
    let format = FormatPolicy::from_flag(args.format);
    crate::export::check_image(&args.disk, format)?;
    Ok(match &args.output {
        Some(output) => {
            crate::export::check_output(&args.disk, output, args.force, format)?;
            Target::File(output.clone())
        }
        None => {
            let config = import_config(args)?;
            // Names and labels GCE would refuse, before a byte is packaged.
            crate::gcp::validate_image_request(&gce::image_request(&config))?;
            Target::Image(Box::new(config))
        }
    })
}

async fn package(
    ctx: &BuildContext,
    args: &ExportArgs,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    ctx.say(&format!(
        "Packaging {} as {} (GCE disk.raw tarball, level {})...",
        args.disk.display(),
        output.display(),
        level(args)?
    ));
    let started = Instant::now();
    let summary = post::package_to_file(
        ctx,
        &args.disk,
        output,
        level(args)?,
        FormatPolicy::from_flag(args.format),
        args.force,
    )
    .await?;
    ctx.say(&format!(
        "Wrote {} ({:.0} MiB; disk.raw of {} GiB, {:.0} MiB of data) in {:.1}s",
        output.display(),
        summary.compressed_bytes as f64 / f64::from(1 << 20),
        summary.raw_size >> 30,
        summary.data_bytes as f64 / f64::from(1 << 20),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The image to publish, from the arguments.
fn import_config(args: &ExportArgs) -> anyhow::Result<GceImportConfig> {
    let (Some(bucket), Some(image_name)) = (&args.bucket, &args.image_name) else {
        anyhow::bail!("give --output FILE, or --bucket and --image-name to publish to GCE");
    };
    let project = match &args.project {
        Some(project) => project.clone(),
        None => std::env::var("GOOGLE_CLOUD_PROJECT")
            .or_else(|_| std::env::var("CLOUDSDK_CORE_PROJECT"))
            .context("no project: give --project or set GOOGLE_CLOUD_PROJECT")?,
    };
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .with_context(|| format!("--label {label:?}: expected KEY=VALUE"))?;
        labels.insert(key.to_string(), value.to_string());
    }
    let timeout = crate::template::parse_duration(&args.image_create_timeout)
        .map_err(|e| anyhow::anyhow!("--image-create-timeout: {e}"))?;
    Ok(GceImportConfig {
        project_id: project,
        account_file: args.account_file.clone(),
        bucket: bucket.clone(),
        gcs_object_name: args
            .object_name
            .clone()
            .unwrap_or_else(|| format!("kiln-import-{}.tar.gz", chrono::Utc::now().timestamp())),
        image_name: image_name.clone(),
        image_family: args.family.clone(),
        image_description: args.description.clone(),
        image_labels: labels,
        image_guest_os_features: args.guest_os_features.clone(),
        image_storage_locations: args.storage_locations.clone(),
        image_architecture: args.architecture.clone(),
        keep_input_artifact: true,
        skip_clean: args.skip_clean,
        image_create_timeout: timeout,
        compression_level: level(args)?,
    })
}

async fn publish(
    ctx: &BuildContext,
    args: &ExportArgs,
    config: &GceImportConfig,
) -> anyhow::Result<()> {
    gce::publish(
        ctx,
        &args.disk,
        &Publish {
            config,
            force: args.force,
            compute_endpoint: args.compute_endpoint.as_deref(),
            format: FormatPolicy::from_flag(args.format),
        },
    )
    .await?;
    Ok(())
}
