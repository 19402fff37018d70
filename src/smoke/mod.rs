//! Smoke tests: checks run on a fresh boot of an image (after a build, or
//! with `kiln test`), and their report.

mod expand;
pub mod report;
mod run;

pub use run::{CheckResult, run_checks};
