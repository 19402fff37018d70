//! External programs run so that they can always be stopped: in a process
//! group of their own, killed with kiln (PR_SET_PDEATHSIG). The tools
//! (qemu-img, qemu-nbd) also within a time bound, on a cancel, and on every
//! way out of the call; QEMU and `shell-local` commands through
//! [`own_group`].

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::ToolError;

/// How often a running tool is checked on.
const POLL: Duration = Duration::from_millis(10);

/// Makes a command's child die when the thread that spawned it does (kiln
/// exiting for any reason, SIGKILL included), and refuses to start it if
/// kiln is already gone.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        command.pre_exec(move || parent_death_signal(parent));
    }
}

/// A tokio command's child in a process group of its own (a terminal's
/// Ctrl-C is kiln's to handle; killing the group takes the child's helpers
/// along), killed when its handle is dropped and when kiln dies (QEMU,
/// `shell-local` commands).
pub fn own_group(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.process_group(0).kill_on_drop(true);
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        command.pre_exec(move || parent_death_signal(parent));
    }
    command
}

/// The `pre_exec` body, for std's and tokio's `Command`. The signal
/// follows the forking *thread*: tokio's worker threads live as long as
/// the runtime, which is kiln.
fn parent_death_signal(parent: u32) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe and take no pointers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() as u32 != parent {
            return Err(io::Error::other("kiln exited while starting a tool"));
        }
    }
    Ok(())
}

/// A child that is killed (its whole process group) and reaped when this
/// is dropped.
pub(super) struct Killable {
    child: Child,
}

impl Killable {
    /// Starts `command` in its own process group, to die with kiln.
    pub fn spawn(command: &mut Command) -> io::Result<Killable> {
        command.process_group(0);
        die_with_parent(command);
        Ok(Killable {
            child: command.spawn()?,
        })
    }

    /// The running process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill takes no pointers; the group is the child's own.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program args`, returning its stdout; fails when it fails, takes
/// longer than `limit` (when there is one) or `cancel` fires, and never
/// leaves it running.
pub fn run(
    program: &'static str,
    args: &[&OsStr],
    limit: Option<Duration>,
    cancel: Option<&CancellationToken>,
) -> Result<Vec<u8>, ToolError> {
    let spawn_err = |source| ToolError::Spawn { program, source };
    // Unnamed files: nothing is left behind whatever happens.
    let mut stdout = tempfile::tempfile().map_err(spawn_err)?;
    let mut stderr = tempfile::tempfile().map_err(spawn_err)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().map_err(spawn_err)?)
        .stderr(stderr.try_clone().map_err(spawn_err)?);
    let mut running = Killable::spawn(&mut command).map_err(spawn_err)?;
    let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
    let status = loop {
        if let Some(status) = running.child().try_wait().map_err(spawn_err)? {
            break status;
        }
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(ToolError::Cancelled { program });
        }
        if let (Some(deadline), Some(limit)) = (deadline, limit)
            && Instant::now() >= deadline
        {
            return Err(ToolError::TimedOut {
                program,
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    };
    let read_back = |file: &mut std::fs::File| -> io::Result<Vec<u8>> {
        file.rewind()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    if !status.success() {
        let text = read_back(&mut stderr).unwrap_or_default();
        return Err(ToolError::Failed {
            program,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&text).trim().to_string(),
        });
    }
    read_back(&mut stdout).map_err(spawn_err)
}

/// [`run`] from async code, with no time bound: on a blocking thread, and
/// the tool's process group killed when the returned future is dropped (an
/// interrupted build) as on every other way out.
pub(super) async fn run_async(
    program: &'static str,
    args: &[&OsStr],
) -> Result<Vec<u8>, ToolError> {
    let args: Vec<OsString> = args.iter().map(|arg| arg.to_os_string()).collect();
    let cancel = CancellationToken::new();
    let _kill_when_dropped = cancel.clone().drop_guard();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        run(program, &args, None, Some(&cancel))
    })
    .await
    .map_err(|err| ToolError::Spawn {
        program,
        source: io::Error::other(err),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_past_its_time_is_killed() {
        let err = run(
            "sleep",
            &[OsStr::new("600")],
            Some(Duration::from_millis(50)),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ToolError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn a_cancelled_tool_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let cancel = CancellationToken::new();
        let script = format!("sleep 600 & echo $! > {}; wait", pid_file.to_str().unwrap());
        let waiter = {
            let cancel = cancel.clone();
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                while std::fs::metadata(&pid_file).map_or(true, |m| m.len() == 0) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                cancel.cancel();
            })
        };
        let err = run(
            "sh",
            &[OsStr::new("-c"), OsStr::new(&script)],
            None,
            Some(&cancel),
        )
        .unwrap_err();
        waiter.join().unwrap();
        assert!(matches!(err, ToolError::Cancelled { .. }), "{err}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild went with the group: reaped by init or gone.
        assert!(gone(pid), "sleep {pid} outlived the cancelled tool");
    }

    #[tokio::test]
    async fn a_dropped_async_run_kills_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 600", pid_file.to_str().unwrap());
        let started = async {
            while std::fs::metadata(&pid_file).map_or(true, |m| m.len() == 0) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let args = [OsStr::new("-c"), OsStr::new(&script)];
        tokio::select! {
            result = run_async("sh", &args) => {
                panic!("sleep 600 ended: {result:?}")
            }
            () = started => {}
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid), "sleep {pid} outlived the dropped run");
    }

    #[tokio::test]
    async fn an_async_run_gives_stdout() {
        let out = run_async("sh", &[OsStr::new("-c"), OsStr::new("echo hi")])
            .await
            .unwrap();
        assert_eq!(out, b"hi\n");
    }

    /// Waits (boundedly) for `pid` to be gone or a zombie.
    fn gone(pid: i32) -> bool {
        for _ in 0..6000 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_failure_carries_stderr() {
        let err = run(
            "sh",
            &[OsStr::new("-c"), OsStr::new("echo boom >&2; exit 3")],
            None,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
