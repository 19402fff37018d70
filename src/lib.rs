//! kiln: a local-first machine image builder.

pub mod build;
pub mod cli;
pub mod provision;
pub mod qemu;
pub mod seed;
pub mod source;
pub mod ssh;
pub mod template;
