//! Command line: argument parsing, exit codes, output mode.

mod args;
pub mod exit;
mod export;
mod inspect;
pub mod interrupt;
pub mod redact;
mod test;
pub mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::pipeline::{self, BuildOptions};
use crate::template::{self, Override, Overrides};
use args::{BuildArgs, Cli, Command, TemplateArgs, ValidateArgs};
use ui::{Mode, Ui};

pub fn main() -> ExitCode {
    let argv = args::normalize(std::env::args_os());
    let cli = match Cli::parse_with_positions(argv) {
        Ok(cli) => cli,
        Err(err) => {
            // Errors go to stderr, --help and --version to stdout.
            let _ = err.print();
            return if err.use_stderr() {
                exit::code(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    ui::set_color(cli.color && !no_color_requested());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::code(exit::FAILURE);
        }
    };
    let code = runtime.block_on(run(cli));
    // Cleanup started by cancelled work (a packaging thread, an upload
    // session being cancelled) finishes before the exit status is seen.
    crate::cleanup::wait(std::time::Duration::from_secs(10));
    // Builds kill their QEMU and clean up before returning; anything still
    // running in the background (a ticker) can go.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate(args) => validate(args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Build(args) => return build(args).await,
        Command::Test(args) => return test::run(args).await,
        Command::Export(args) => return export::run(args).await,
        Command::Version => {
            println!("kiln {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "kiln", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .context("writing the man page"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // validate and inspect only load the template: whatever stops
        // them is in the template or the arguments.
        Err(err) => {
            let text = format!("Error: {}", format_anyhow(&err));
            eprintln!("{}", redact::known().redact(&text));
            exit::code(exit::USAGE)
        }
    }
}

fn format_anyhow(err: &anyhow::Error) -> String {
    crate::error::error_chain(err.as_ref())
}

/// `-var` and `-var-file` in command-line order.
fn overrides(args: &TemplateArgs) -> anyhow::Result<Overrides> {
    let mut entries = Vec::new();
    for (index, assignment) in args.var.iter().enumerate() {
        let (name, value) = assignment
            .split_once('=')
            .with_context(|| format!("-var {assignment:?}: expected NAME=VALUE"))?;
        let position = args.positions.var.get(index).copied().unwrap_or(usize::MAX);
        entries.push((position, Override::Var(name.to_string(), value.to_string())));
    }
    for (index, file) in args.var_file.iter().enumerate() {
        let position = args.positions.var_file.get(index).copied().unwrap_or(0);
        entries.push((position, Override::File(file.clone())));
    }
    entries.sort_by_key(|(position, _)| *position);
    Ok(Overrides {
        entries: entries.into_iter().map(|(_, entry)| entry).collect(),
    })
}

/// Loads the template. Whatever the outcome, the values of its sensitive
/// variables are known to the redactor from then on: a failed load's
/// message may quote one.
fn load_plan(args: &TemplateArgs) -> anyhow::Result<template::Plan> {
    let overrides = overrides(args)?;
    match template::load(&args.template, &overrides) {
        Ok(plan) => {
            redact::remember(&plan.sensitive_values);
            Ok(plan)
        }
        Err(err) => {
            redact::remember(err.sensitive_values());
            Err(err.into())
        }
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    if args.syntax_only {
        template::check_syntax(&args.template.template)?;
        println!("Syntax-only check passed. Everything looks okay.");
        return Ok(());
    }
    let args = args.template;
    let plan = load_plan(&args)?;
    let selection = pipeline::Selection::new(&args.only, &args.except);
    selection.check(&plan)?;
    println!("The configuration is valid.");
    Ok(())
}

/// <https://no-color.org>: set and not empty.
fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

/// Machine-readable when asked, live lines on a terminal, plain otherwise.
pub(crate) fn output_mode(machine_readable: bool) -> Mode {
    if machine_readable {
        Mode::Machine
    } else if std::io::stdout().is_terminal() {
        Mode::Tty
    } else {
        Mode::Plain
    }
}

async fn build(args: BuildArgs) -> ExitCode {
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
    let options = BuildOptions {
        force: args.force,
        on_error: args.on_error,
        parallel: args.parallel_builds,
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

/// The whole error (with a console tail, say) was printed when the build
/// failed; the summary repeats only its first line.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub use logging::init as init_logging;

mod logging;
