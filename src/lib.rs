//! kiln: a local-first machine image builder.
//!
//! A Packer JSON template goes in; a disk comes out that was booted under
//! QEMU, provisioned over SSH, shut down cleanly, booted again and
//! smoke-tested, and, when asked, packaged as a GCE `disk.raw` tarball,
//! uploaded and registered as an image.
//!
//! Data flows one way: `cli` reads the arguments, `template` turns the
//! template into a `plan`, and `pipeline` runs each build of the plan
//! through the stages (`source`, `seed`, `qemu`, `ssh`, `provision`,
//! `smoke`, `export`, `gcp`). No stage module imports `template` or `cli`.
//! `docs/architecture.md` has the whole map.

#![warn(missing_docs)]

pub mod bootcmd;
pub mod cache;
pub mod cleanup;
pub mod cli;
pub mod error;
pub mod export;
pub mod gcp;
pub mod httpd;
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
pub mod stepcache;
pub mod template;
pub mod tmp;
