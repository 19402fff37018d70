//! Running a program on this machine for a provisioner: its output
//! forwarded line by line, the whole process group killed on a cancel.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::ProvisionError;

/// Runs `command` (stdin from /dev/null, stdout and stderr forwarded line by
/// line to `output`) in a process group of its own, and returns how it
/// ended. A cancel kills the group: the command and all it started.
pub async fn run(
    mut command: tokio::process::Command,
    program: &str,
    output: &(dyn Fn(&str) + Send + Sync),
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<std::process::ExitStatus, ProvisionError> {
    let spawn_error = |source: std::io::Error| ProvisionError::Local {
        what: if source.kind() == std::io::ErrorKind::NotFound {
            format!("cannot run {program}: not found on this machine's PATH")
        } else {
            format!("cannot run {program}")
        },
        source,
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A group of its own: a cancel ends the command and everything it
    // started; a terminal's Ctrl-C is kiln's to handle.
    crate::export::tool::own_group(&mut command);
    let mut child = command.spawn().map_err(spawn_error)?;
    let mut group = GroupKill(child.id());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = async {
        tokio::join!(
            child.wait(),
            forward_lines(stdout, output),
            forward_lines(stderr, output)
        )
    };
    let (status, (), ()) = tokio::select! {
        finished = finished => finished,
        // `group` kills the command and what it started.
        () = cancel.cancelled() => return Err(ProvisionError::Cancelled),
    };
    // Finished on its own: what it left running in the background (a local
    // server for later provisioners, say) is the template's business.
    group.0 = None;
    status.map_err(spawn_error)
}

async fn forward_lines<R: AsyncRead + Unpin>(
    stream: Option<R>,
    output: &(dyn Fn(&str) + Send + Sync),
) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output(&line);
    }
}

/// Kills a command's whole process group when the provisioner is cancelled
/// (its future dropped) before the command finished.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: kill takes no pointers; the group is the command's own.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
