//! The QEMU process: its own process group, killed with kiln.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::QemuError;

/// How much of QEMU's stderr is kept for error messages.
const STDERR_LINES: usize = 50;
/// How long `spawn` waits for QEMU to either come up or fail.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Without a QMP socket to watch, how long QEMU must survive to count as
/// started.
const STARTUP_GRACE: Duration = Duration::from_millis(1500);

type Lines = Arc<Mutex<VecDeque<String>>>;

/// How QEMU ended.
#[derive(Debug, Clone)]
pub struct QemuExit {
    /// Exit code 0.
    pub success: bool,
    /// "with status N" or "on signal N (NAME)", to follow "QEMU exited".
    pub status: String,
    /// The last lines QEMU printed on stderr.
    pub stderr: String,
}

impl std::fmt::Display for QemuExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QEMU exited {}", self.status)?;
        if !self.stderr.is_empty() {
            write!(f, " ({})", self.stderr.replace('\n', "; "))?;
        }
        Ok(())
    }
}

/// A running QEMU: its own process group, killed (the whole group) when this
/// is dropped or kiln dies; stderr captured for error messages.
pub struct QemuProcess {
    child: Child,
    pid: Option<i32>,
    status: Option<ExitStatus>,
    stderr: Lines,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
}

impl QemuProcess {
    /// Starts `binary argv...`. Fails if QEMU exits at once (bad arguments,
    /// port in use, ...), with its stderr in the error.
    pub async fn spawn(binary: &str, argv: &[String]) -> Result<QemuProcess, QemuError> {
        let mut command = Command::new(binary);
        command
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own group, so a terminal's Ctrl-C reaches kiln only (kiln
        // then shuts QEMU down in order) and kill(-pgid) takes helpers
        // along; QEMU must not outlive kiln, even after a SIGKILL of kiln.
        crate::export::tool::own_group(&mut command);
        let mut child = command.spawn().map_err(|source| QemuError::Spawn {
            binary: binary.to_string(),
            source,
        })?;
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        let stderr: Lines = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(collect_stderr(pipe, stderr.clone())));
        let mut process = QemuProcess {
            child,
            pid,
            status: None,
            stderr,
            stderr_done,
        };
        process.wait_started(qmp_socket(argv)).await?;
        Ok(process)
    }

    /// QEMU's QMP greeting comes from the monitor's own I/O thread, possibly
    /// before the machine is built (a device that fails to realize exits
    /// QEMU after it). Commands, though, run in the main loop, which starts
    /// only once every netdev and device is set up: an answer to
    /// `query-status` means QEMU really started, an exit first means it did
    /// not.
    async fn wait_started(&mut self, qmp: Option<PathBuf>) -> Result<(), QemuError> {
        let ready = async {
            match qmp {
                Some(path) => {
                    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
                    while tokio::time::Instant::now() < deadline {
                        if main_loop_answers(&path).await {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tracing::debug!(path = %path.display(), "QMP still silent; assuming QEMU started");
                }
                None => tokio::time::sleep(STARTUP_GRACE).await,
            }
        };
        tokio::select! {
            () = ready => Ok(()),
            status = self.child.wait() => {
                let status = status.map_err(|source| QemuError::Io {
                    context: "waiting for QEMU".to_string(),
                    source,
                })?;
                self.status = Some(status);
                self.drain_stderr().await;
                Err(QemuError::Exited {
                    status: describe_status(status),
                    stderr: self.stderr_tail(),
                })
            }
        }
    }

    /// The OS process id (also the process group id).
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        self.pid.and_then(|pid| u32::try_from(pid).ok())
    }

    /// The last lines QEMU printed on stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        match self.stderr.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>().join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Resolves when QEMU has exited: how (exit code or signal) and the
    /// last lines of its stderr. Cancel-safe.
    pub async fn exited(&mut self) -> QemuExit {
        let status = match self.status {
            Some(status) => status,
            // Child::wait is cancel-safe: the status is kept by tokio until
            // a later call collects it.
            None => match self.child.wait().await {
                Ok(status) => {
                    self.status = Some(status);
                    status
                }
                Err(err) => {
                    return QemuExit {
                        success: false,
                        status: format!("(it could not be waited for: {err})"),
                        stderr: String::new(),
                    };
                }
            },
        };
        self.drain_stderr().await;
        QemuExit {
            success: status.success(),
            status: describe_status(status),
            stderr: self.stderr_tail().trim().to_string(),
        }
    }

    /// Waits up to `timeout` for QEMU to exit; `None` if it is still running.
    #[cfg(test)]
    async fn wait_timeout(&mut self, timeout: Duration) -> Option<QemuExit> {
        tokio::time::timeout(timeout, self.exited()).await.ok()
    }

    /// Kills the whole process group now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.kill_group();
        let _ = self.child.start_kill();
        // SIGKILL takes effect at once; a short bounded wait reaps QEMU so
        // it leaves no zombie and its disk is closed when this returns.
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return,
            }
        }
    }

    fn kill_group(&self) {
        if let Some(pid) = self.pid.filter(|pid| *pid > 0) {
            // SAFETY: plain syscall; the group is QEMU's own (process_group(0)).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    /// Lets the stderr task take in QEMU's last words before they are
    /// reported.
    async fn drain_stderr(&mut self) {
        if let Some(task) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl Drop for QemuProcess {
    /// A build that fails or is cancelled drops its QEMU: it is killed and
    /// reaped here (a bounded wait), so that when kiln exits right after,
    /// no QEMU is still on its way out holding the disk.
    fn drop(&mut self) {
        self.kill();
    }
}

async fn collect_stderr(pipe: tokio::process::ChildStderr, lines: Lines) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        // Bytes, not String: QEMU may print paths that are not UTF-8.
        match (&mut reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut buffer)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer).trim_end().to_string();
                tracing::debug!(target: "kiln::qemu::stderr", "{line}");
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == STDERR_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
        }
    }
}

/// The unix socket of the first `-qmp unix:PATH,...` in argv.
fn qmp_socket(argv: &[String]) -> Option<PathBuf> {
    let value = argv
        .windows(2)
        .find(|pair| pair[0] == "-qmp")
        .map(|pair| pair[1].as_str())?;
    let rest = value.strip_prefix("unix:")?;
    // `,,` is an escaped comma inside the path; a single `,` ends it.
    let mut path = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                path.push(',');
                continue;
            }
            break;
        }
        path.push(c);
    }
    Some(PathBuf::from(path))
}

async fn main_loop_answers(path: &std::path::Path) -> bool {
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::UnixStream::connect(path),
    )
    .await
    else {
        return false;
    };
    let (read, mut write) = stream.into_split();
    let probe = concat!(
        "{\"execute\": \"qmp_capabilities\"}\n",
        "{\"execute\": \"query-status\", \"id\": \"kiln-probe\"}\n"
    );
    if write.write_all(probe.as_bytes()).await.is_err() {
        return false;
    }
    let mut lines = BufReader::new(read).lines();
    let answered = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("kiln-probe") && line.contains("\"return\"") {
                return true;
            }
        }
        false
    };
    // Under load QEMU may take a while; another round follows.
    tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .unwrap_or(false)
}

/// "with status N" or "on signal N (NAME)", to follow "QEMU exited".
fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("with status {code}"),
        (None, Some(signal)) => match signal_name(signal) {
            Some(name) => format!("on signal {signal} ({name})"),
            None => format!("on signal {signal}"),
        },
        (None, None) => "for an unknown reason".to_string(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_socket_is_found_in_argv() {
        let argv: Vec<String> = [
            "-m",
            "1M",
            "-qmp",
            "unix:/tmp/a,,b/qmp.sock,server=on,wait=off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(qmp_socket(&argv), Some(PathBuf::from("/tmp/a,b/qmp.sock")));
        assert_eq!(qmp_socket(&argv[..2]), None);
    }

    use crate::qemu::test_support::{QEMU, require_qemu};

    fn base_argv(dir: &std::path::Path) -> Vec<String> {
        vec![
            "-machine".into(),
            "type=pc,accel=tcg".into(),
            "-m".into(),
            "64M".into(),
            "-display".into(),
            "none".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        ]
    }

    fn alive(pid: u32) -> bool {
        // A zombie still answers kill(0): look at its state too.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        !stat.is_empty() && state != Some("Z") && unsafe { libc::kill(pid as i32, 0) } == 0
    }

    #[tokio::test]
    async fn bad_arguments_fail_with_qemus_stderr() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        let mut argv = base_argv(dir.path());
        argv.extend(["-m".into(), "lots".into()]);
        let err = QemuProcess::spawn(QEMU, &argv)
            .await
            .err()
            .expect("QEMU accepted -m lots");
        let text = err.to_string();
        assert!(matches!(err, QemuError::Exited { .. }), "{err:?}");
        assert!(text.contains("lots"), "{text}");
        assert!(!err.is_port_in_use());
    }

    /// QEMU greets on QMP before building the machine: a device that fails
    /// afterwards must still fail spawn, not a later step.
    #[tokio::test]
    async fn a_device_failing_after_the_greeting_fails_spawn() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mut argv = base_argv(dir.path());
        argv.extend([
            "-drive".into(),
            format!("file={},if=ide,format=raw,readonly=on", disk.display()),
        ]);
        for _ in 0..3 {
            let err = QemuProcess::spawn(QEMU, &argv)
                .await
                .err()
                .expect("QEMU started");
            assert!(err.to_string().contains("read-only"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let err = QemuProcess::spawn("/nonexistent/qemu", &[])
            .await
            .err()
            .unwrap();
        assert!(matches!(err, QemuError::Spawn { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_taken_port_is_recognised() {
        require_qemu();
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut argv = base_argv(dir.path());
        argv.extend([
            "-netdev".into(),
            format!("user,id=user.0,hostfwd=tcp:127.0.0.1:{port}-:22"),
            "-device".into(),
            "e1000,netdev=user.0".into(),
        ]);
        let err = QemuProcess::spawn(QEMU, &argv)
            .await
            .err()
            .expect("QEMU bound a taken port");
        assert!(err.is_port_in_use(), "{err}");
    }

    #[tokio::test]
    async fn dropping_kills_qemu() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        let process = QemuProcess::spawn(QEMU, &base_argv(dir.path()))
            .await
            .unwrap();
        let pid = process.pid().unwrap();
        assert!(alive(pid));
        drop(process);
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !alive(pid)
        });
        assert!(gone, "QEMU {pid} survived the drop");
    }

    #[tokio::test]
    async fn kill_and_exit_status() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        let mut process = QemuProcess::spawn(QEMU, &base_argv(dir.path()))
            .await
            .unwrap();
        assert!(
            process
                .wait_timeout(Duration::from_millis(200))
                .await
                .is_none()
        );
        let pid = process.pid().unwrap();
        process.kill();
        assert!(!alive(pid));
        let how = process.exited().await;
        assert!(!how.success);
        assert_eq!(how.status, "on signal 9 (SIGKILL)");
        assert!(
            how.to_string()
                .starts_with("QEMU exited on signal 9 (SIGKILL)"),
            "{how}"
        );
    }
}
