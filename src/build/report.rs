//! How a build tells the outside world what it is doing. The CLI decides
//! what that looks like (live TTY lines, plain lines, machine-readable).

use std::path::PathBuf;

/// The build stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Source,
    Disk,
    Seed,
    Launch,
    Connect,
    Provision,
    Shutdown,
    Test,
    Finalize,
    Post,
    Cleanup,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Disk => "disk",
            Stage::Seed => "seed",
            Stage::Launch => "launch",
            Stage::Connect => "connect",
            Stage::Provision => "provision",
            Stage::Shutdown => "shutdown",
            Stage::Test => "test",
            Stage::Finalize => "finalize",
            Stage::Post => "post",
            Stage::Cleanup => "cleanup",
        }
    }
}

/// The qemu builder's artifact id, as Packer's qemu builder reports it.
pub const QEMU_BUILDER_ID: &str = "transcend.qemu";

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub build_name: String,
    pub builder_type: String,
    /// Packer's builder id, kept for manifest and machine-readable output.
    pub builder_id: String,
    pub files: Vec<PathBuf>,
    /// One line that says what it is, for people.
    pub description: String,
}

/// Receives everything a build has to say. Implementations must be cheap and
/// must not block for long: they are called from the build's tasks.
pub trait Reporter: Send + Sync {
    /// A stage began.
    fn stage(&self, build: &str, stage: Stage);
    /// A progress message from kiln itself.
    fn say(&self, build: &str, message: &str);
    /// One line of guest (or local command) output.
    fn output(&self, build: &str, line: &str);
    /// An error message (the build goes on to fail or clean up).
    fn error(&self, build: &str, message: &str);
    /// The build finished with this artifact.
    fn artifact(&self, build: &str, artifact: &Artifact);
}
