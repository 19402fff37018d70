//! kiln's exit statuses, one definition for every command (documented in
//! the README's "Failure and safety").

use std::process::ExitCode;

/// Everything asked for was done.
// Listed for a complete table: commands return `ExitCode::SUCCESS`.
#[allow(dead_code)]
pub const OK: u8 = 0;
/// A build, an export or an upload failed.
pub const FAILURE: u8 = 1;
/// Bad arguments or a template that does not validate: nothing was started.
pub const USAGE: u8 = 2;
/// `kiln test`: the image could not be booted or reached, so no check ran.
pub const TEST_NOT_RUN: u8 = 3;
/// Interrupted by SIGINT (128 + 2), as shells report it.
pub const SIGINT: u8 = 130;
/// Interrupted by SIGTERM (128 + 15).
pub const SIGTERM: u8 = 143;

/// One of the statuses above as the process's exit code.
pub fn code(status: u8) -> ExitCode {
    ExitCode::from(status)
}
