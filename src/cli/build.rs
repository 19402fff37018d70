//! `kiln build TEMPLATE`: load the template, run its builds, summarise
//! them as Packer does.

use std::process::ExitCode;
use std::sync::Arc;

use super::args::BuildArgs;
use super::ui::Ui;
use super::{exit, first_line, format_anyhow, interrupt, load_plan, output_mode, redact};
use crate::pipeline::{self, BuildOptions};

pub(super) async fn run(args: BuildArgs) -> ExitCode {
    let mode = output_mode(args.machine_readable);
    let ui = Ui::new(mode, args.timestamp_ui, Box::new(std::io::stdout()));

    let prepared = (|| {
        let plan = load_plan(&args.template)?;
        let selection = pipeline::Selection::new(&args.template.only, &args.template.except);
        selection.check(&plan)?;
        anyhow::Ok((plan, selection))
    })();
    let prepared = prepared.and_then(|ready| {
        if let Some(path) = &args.test_report {
            crate::smoke::report::check_path(path)?;
        }
        Ok(ready)
    });
    // Before anything is printed, the error about the template included.
    ui.set_redactor(redact::known());
    let (plan, selection) = match prepared {
        Ok(ready) => ready,
        Err(err) => {
            ui.error_global(&format!("Error: {}", format_anyhow(&err)));
            ui.machine("", &["error-count", "1"]);
            // Nothing was started: the template or the arguments are wrong.
            return exit::code(exit::USAGE);
        }
    };
    if args.debug {
        ui.say_global("Debug mode enabled. Builds will not be parallelized.");
    }
    let options = BuildOptions {
        force: args.force,
        on_error: args.on_error,
        debug: args.debug,
        // One build at a time: the pauses of several would interleave.
        parallel: if args.debug { 1 } else { args.parallel_builds },
        selection,
        test_report: args.test_report.clone(),
        many_builds: false,
        redactor: redact::Redactor::default(),
    };
    let interrupt = interrupt::Interrupt::install(ui.clone());
    let cancel = interrupt.token();
    let ticker = ui.start_ticker();
    let reporter: Arc<dyn pipeline::report::Reporter> = Arc::new(ui.clone());
    let outcomes = pipeline::run_all(&plan, &options, reporter, cancel).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    ui.stop_live();
    let code = summarize(&ui, &outcomes);
    match interrupt.exit_status() {
        Some(status) => exit::code(status),
        None => code,
    }
}

fn summarize(ui: &Ui, outcomes: &[pipeline::Outcome]) -> ExitCode {
    let failed: Vec<&pipeline::Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    for outcome in &failed {
        if let Err(err) = &outcome.result {
            ui.error_global(&format!(
                "Build '{}' errored after {}: {}",
                outcome.name,
                crate::human::duration(outcome.elapsed),
                first_line(&ui.redact(&crate::error::error_chain(err)))
            ));
        }
    }
    if !failed.is_empty() {
        ui.machine("", &["error-count", &failed.len().to_string()]);
        ui.error_global("==> Some builds didn't complete successfully and had errors:");
        for outcome in &failed {
            if let Err(err) = &outcome.result {
                ui.error_global(&format!(
                    "--> {}: {}",
                    outcome.name,
                    first_line(&ui.redact(&crate::error::error_chain(err)))
                ));
            }
        }
    }
    let artifacts: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|a| (o, a)))
        .collect();
    if !artifacts.is_empty() {
        ui.say_global("==> Builds finished. The artifacts of successful builds are:");
        for (outcome, artifact) in artifacts {
            ui.say_global(&format!(
                "--> {}: {} (in {})",
                outcome.name,
                artifact.description,
                crate::human::duration(outcome.elapsed)
            ));
        }
    } else if outcomes.is_empty() {
        ui.say_global("==> No builds to run.");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        exit::code(exit::FAILURE)
    }
}
