//! Command line: argument parsing, exit codes, output mode.

mod args;
mod build;
mod cache;
mod exit;
mod export;
mod fix;
mod inspect;
mod interrupt;
mod redact;
mod session;
mod test;
#[cfg(test)]
mod testing;
mod ui;
mod validate;
mod version;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::template::{self, Override, Overrides};
use args::{Cli, Command, TemplateArgs};
use ui::Mode;

/// The `kiln` binary: parses the arguments, runs the command, and returns
/// its exit status (see `exit`).
pub fn main() -> ExitCode {
    if let Some(code) = internal_command() {
        return code;
    }
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

/// The metadata server command QEMU runs once per guest connection of a
/// `googlecompute` build (`guestfwd=...-cmd:`): not a command for people,
/// so it is not in the help.
const GCE_METADATA_COMMAND: &str = "__gce-metadata";

/// Runs kiln's internal commands, which bypass the command line parser.
fn internal_command() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != GCE_METADATA_COMMAND {
        return None;
    }
    let Some(doc) = args.next() else {
        eprintln!("usage: kiln {GCE_METADATA_COMMAND} DOCUMENT");
        return Some(exit::code(exit::USAGE));
    };
    match crate::gcp::metadata_http::serve_stdio(std::path::Path::new(&doc)) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(err) => {
            // QEMU shows the command's stderr in its own.
            eprintln!("kiln metadata server: {err}");
            Some(exit::code(exit::FAILURE))
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let machine_readable = cli.machine_readable;
    match cli.command {
        Command::Validate(args) => validate::run(&args, machine_readable),
        Command::Inspect(args) => inspect::run(&args, machine_readable),
        Command::Fix(args) => fix::run(&args, machine_readable),
        Command::Build(args) => build::run(args, machine_readable).await,
        Command::Test(args) => test::run(args, machine_readable).await,
        Command::Export(args) => export::run(args, machine_readable).await,
        Command::Cache(args) => cache::run(&args, machine_readable),
        Command::Version => version::run(machine_readable),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "kiln", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                // As every error of a command that starts no work.
                Err(err) => {
                    eprintln!("Error: writing the man page: {err}");
                    exit::code(exit::USAGE)
                }
            }
        }
    }
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
    let mut source_images = Vec::new();
    for assignment in &args.source_image {
        let (name, url) = assignment
            .split_once('=')
            .with_context(|| format!("-source-image {assignment:?}: expected NAME=URL"))?;
        source_images.push((name.to_string(), url.to_string()));
    }
    Ok(Overrides {
        entries: entries.into_iter().map(|(_, entry)| entry).collect(),
        source_images,
        image_map: std::env::var_os("KILN_IMAGE_MAP")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from),
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

/// What to warn about before working on `plan`: its deprecated keys, then
/// each selected build kiln skips, once.
fn warnings(plan: &crate::plan::Plan, skipped: &[&crate::plan::SkippedBuild]) -> Vec<String> {
    let mut out = plan.warnings.clone();
    out.extend(
        skipped
            .iter()
            .map(|s| format!("skipping build {:?}: {}", s.name, s.reason)),
    );
    out
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

use logging::init as init_logging;

mod logging;
