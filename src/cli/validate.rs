//! `kiln validate TEMPLATE`: the template parses, its values are right,
//! and `-only`/`-except` name its builds.

use std::process::ExitCode;

use super::args::ValidateArgs;
use super::session::Report;
use super::{load_plan, warnings};
use crate::pipeline;
use crate::template;

/// `kiln validate`: checks the template (or only its JSON with
/// `-syntax-only`) and says what is wrong.
pub(super) fn run(args: &ValidateArgs, machine_readable: bool) -> ExitCode {
    let report = Report::new(machine_readable);
    match check(args) {
        Ok((message, warnings)) => {
            for warning in &warnings {
                report.warn(warning);
            }
            report.say(message);
            ExitCode::SUCCESS
        }
        // Whatever stops it is in the template or the arguments.
        Err(err) => report.usage_error(&err),
    }
}

/// What to say when the template is valid, and what to warn about.
fn check(args: &ValidateArgs) -> anyhow::Result<(&'static str, Vec<String>)> {
    if args.syntax_only {
        template::check_syntax(&args.template.template)?;
        return Ok((
            "Syntax-only check passed. Everything looks okay.",
            Vec::new(),
        ));
    }
    let args = &args.template;
    let plan = load_plan(args)?;
    let skipped = pipeline::Selection::new(&args.only, &args.except).check(&plan)?;
    Ok(("The configuration is valid.", warnings(&plan, &skipped)))
}
