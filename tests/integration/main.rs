//! Integration tests: the `kiln` binary against real templates, and builds
//! that boot the fixture image under QEMU.

mod ansible;
mod boot_command;
mod build;
mod build_signals;
mod cli;
mod container;
mod dead_machine;
mod disks;
mod gce;
mod gce_cache;
mod gce_guest;
mod gce_publish;
mod gce_sources;
mod gce_templates;
mod gce_unchanged;
mod guest;
mod interactive;
mod legacy_templates;
mod overlap;
mod secrets;
mod smoke;
mod sources;
mod step_cache;
mod templates_corpus;
mod util;
mod vagrant;
mod warm_boot;
