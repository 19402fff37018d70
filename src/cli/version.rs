//! `kiln version`.

use std::process::ExitCode;

use super::session::Report;

/// `kiln version`.
pub(super) fn run(machine_readable: bool) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let report = Report::new(machine_readable);
    // Packer's records: the bare version first, then the line for people.
    report.record("", &["version", version]);
    report.say(&format!("kiln {version}"));
    ExitCode::SUCCESS
}
