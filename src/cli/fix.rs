//! `kiln fix TEMPLATE`: the template with its deprecated keys rewritten,
//! as `packer fix` prints it.

use std::process::ExitCode;

use super::args::FixArgs;
use super::session::Report;
use crate::template;

/// `kiln fix`: prints the rewritten template (indented JSON, keys in the
/// template's order) on stdout, and each rewrite on stderr.
pub(super) fn run(args: &FixArgs, machine_readable: bool) -> ExitCode {
    let report = Report::new(machine_readable);
    let (fixed, fixes) = match template::fix(&args.template) {
        Ok(done) => done,
        Err(err) => return report.usage_error(&err.into()),
    };
    let text = match serde_json::to_string_pretty(&fixed) {
        Ok(text) => text,
        Err(err) => return report.usage_error(&err.into()),
    };
    // The JSON is the output, whole, even in machine-readable mode.
    println!("{text}");
    for fix in &fixes {
        report.note(&format!("fixed {fix}"));
    }
    if fixes.is_empty() {
        report.note("nothing to fix: the template has no deprecated keys");
    }
    ExitCode::SUCCESS
}
