//! Command line: argument parsing, exit codes, output mode.

mod args;
mod build;
pub mod exit;
mod export;
mod inspect;
pub mod interrupt;
pub mod redact;
mod test;
pub mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::pipeline;
use crate::template::{self, Override, Overrides};
use args::{Cli, Command, TemplateArgs, ValidateArgs};
use ui::Mode;

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
        Command::Build(args) => return build::run(args).await,
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
fn load_plan(args: &TemplateArgs) -> anyhow::Result<crate::plan::Plan> {
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

/// The whole error (with a console tail, say) was printed when the build
/// failed; the summary repeats only its first line.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub use logging::init as init_logging;

mod logging;
