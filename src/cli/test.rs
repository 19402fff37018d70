//! `kiln test IMAGE --tests checks.json`: smoke-test any image.

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::args::TestArgs;
use super::ui::Ui;
use crate::pipeline;
use crate::plan::{CheckSpec, QemuConfig};
use crate::template;

pub async fn run(args: TestArgs) -> ExitCode {
    let ui = Ui::new(
        super::output_mode(args.machine_readable),
        args.timestamp_ui,
        Box::new(std::io::stdout()),
    );
    let prepared = prepare(&args);
    let (config, checks) = match prepared {
        Ok(ready) => ready,
        // Nothing was booted: the arguments or the checks are wrong.
        Err(err) => {
            ui.error_global(&format!(
                "Error: {}",
                crate::error::error_chain(err.as_ref())
            ));
            return super::exit::code(super::exit::USAGE);
        }
    };
    let interrupt = super::interrupt::Interrupt::install(ui.clone());
    let cancel = interrupt.token();
    let ticker = ui.start_ticker();
    let reporter: Arc<dyn pipeline::report::Reporter> = Arc::new(ui.clone());
    let format = crate::export::FormatPolicy::from_flag(args.format);
    let result =
        pipeline::test_image(&args.image, format, &config, &checks, reporter, cancel).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    ui.stop_live();
    if let Some(status) = interrupt.exit_status() {
        return super::exit::code(status);
    }
    let results = match result {
        Ok(results) => results,
        // The image did not boot, could not be reached, or was lost
        // before the checks were through: there is no verdict on it.
        Err(err) => {
            ui.error_global(&format!(
                "Error: testing {}: {}",
                args.image.display(),
                crate::error::error_chain(&err)
            ));
            if let Some((tried, default_user)) = err.wrong_user() {
                ui.error_global(&ssh_username_hint(tried, default_user));
            }
            return super::exit::code(super::exit::TEST_NOT_RUN);
        }
    };
    if let Some(path) = &args.test_report {
        let suite = args
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kiln".into());
        if let Err(err) = crate::smoke::report::write(path, &suite, &results) {
            ui.error_global(&format!("Error: {}", crate::error::error_chain(&err)));
            return super::exit::code(super::exit::FAILURE);
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed == 0 {
        ui.say_global(&format!("==> All {} check(s) passed.", results.len()));
        ExitCode::SUCCESS
    } else {
        ui.error_global(&format!(
            "==> {failed} of {} check(s) failed.",
            results.len()
        ));
        super::exit::code(super::exit::FAILURE)
    }
}

/// `kiln test` logs in as root unless told otherwise, which cloud images
/// refuse: say how to pick the user.
fn ssh_username_hint(tried: &str, default_user: Option<&str>) -> String {
    match default_user {
        Some(user) if user != tried => format!(
            "kiln test logged in as {tried} (--ssh-username, default root); this image's default user is {user}: try --ssh-username {user}"
        ),
        _ => format!(
            "kiln test logged in as {tried} (--ssh-username, default root); pass --ssh-username with the image's default user"
        ),
    }
}

/// Everything that can be wrong before a boot: the image, the checks, the
/// report name, the settings.
fn prepare(args: &TestArgs) -> anyhow::Result<(QemuConfig, Vec<CheckSpec>)> {
    if let Some(path) = &args.test_report {
        crate::smoke::report::check_path(path)?;
    }
    let checks = template::load_checks(&args.tests)?;
    if checks.is_empty() {
        anyhow::bail!("{} holds no checks", args.tests.display());
    }
    // A tarball is unpacked and its disk.raw read as raw; anything else
    // must be a disk kiln may boot as it stands.
    if args.format.is_some() || !crate::export::unpack::is_gzip(&args.image) {
        crate::export::check_image(
            &args.image,
            crate::export::FormatPolicy::from_flag(args.format),
        )?;
    }
    let mut settings = Map::new();
    settings.insert(
        "ssh_username".into(),
        Json::String(args.ssh_username.clone()),
    );
    settings.insert("ssh_timeout".into(), Json::String(args.ssh_timeout.clone()));
    settings.insert("memory".into(), Json::from(args.memory));
    settings.insert("cpus".into(), Json::from(args.cpus));
    settings.insert("vm_name".into(), Json::String("kiln".into()));
    settings.insert("shutdown_timeout".into(), Json::String("2m".into()));
    if let Some(key) = &args.ssh_private_key_file {
        settings.insert(
            "ssh_private_key_file".into(),
            Json::String(key.to_string_lossy().into_owned()),
        );
    }
    if let Some(accel) = &args.accelerator {
        settings.insert("accelerator".into(), Json::String(accel.clone()));
    }
    let image = std::path::absolute(&args.image)?;
    let config = template::image_config(&image, &settings)?;
    Ok((config, checks))
}
