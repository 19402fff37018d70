//! Command line: argument parsing, exit codes, output mode.

pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
