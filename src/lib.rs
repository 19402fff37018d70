//! kiln: a local-first machine image builder.

pub mod cleanup;
pub mod cli;
pub mod error;
pub mod export;
pub mod gcp;
pub mod human;
pub mod pipeline;
pub mod plan;
pub mod provision;
pub mod qemu;
pub mod redact;
pub mod seed;
pub mod smoke;
pub mod source;
pub mod ssh;
pub mod template;
pub mod tmp;
