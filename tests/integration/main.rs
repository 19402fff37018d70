//! Integration tests: the `kiln` binary against real templates, and builds
//! that boot the fixture image under QEMU.

mod build;
mod cli;
mod disks;
mod gce;
mod guest;
mod secrets;
mod smoke;
mod util;
