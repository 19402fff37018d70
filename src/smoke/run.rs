//! Runs checks over SSH: each attempt bounded by the check's `timeout`,
//! attempts repeated until it passes or `retry_for` is used up.

use std::time::{Duration, Instant};

use regex::Regex;
use tokio_util::sync::CancellationToken;

use super::expand::{GuestCommand, expand};
use crate::plan::CheckSpec;
use crate::ssh::{ExitStatus, SshError, Stream};
use crate::ssh::{Guest, shell_quote};

/// Between attempts of a check with `retry_for`.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How one check went.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Whether an attempt passed.
    pub passed: bool,
    /// The time all its attempts took.
    pub duration: Duration,
    /// How many times it ran.
    pub attempts: u32,
    /// Why it failed (empty when it passed).
    pub reason: String,
    /// The last attempt's output, stdout then stderr.
    pub output: String,
}

/// What one attempt saw.
struct Attempt {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs every check in order; a failed check does not stop the others.
/// `on_result` hears of each result as it comes.
pub async fn run_checks(
    checks: &[CheckSpec],
    guest: &mut Guest,
    cancel: &CancellationToken,
    on_result: &(dyn Fn(&CheckResult) + Send + Sync),
) -> Result<Vec<CheckResult>, SshError> {
    let mut results = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let result = run_check(check, index, guest, cancel).await?;
        on_result(&result);
        results.push(result);
    }
    Ok(results)
}

async fn run_check(
    check: &CheckSpec,
    index: usize,
    guest: &mut Guest,
    cancel: &CancellationToken,
) -> Result<CheckResult, SshError> {
    let started = Instant::now();
    let command = expand(&check.kind);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(check.timeout, attempt(&command, index, guest)) => attempt,
            () = cancel.cancelled() => return Ok(failed(check, started, attempts, "cancelled".into(), String::new())),
        };
        let (reason, output) = match attempt {
            Ok(Ok(attempt)) => {
                let output = combine(&attempt.stdout, &attempt.stderr);
                match judge(check, &attempt) {
                    None => {
                        return Ok(CheckResult {
                            name: check.name.clone(),
                            passed: true,
                            duration: started.elapsed(),
                            attempts,
                            reason: String::new(),
                            output,
                        });
                    }
                    Some(reason) => (reason, output),
                }
            }
            Ok(Err(err)) => {
                // The guest may have dropped the connection (a check that
                // restarts sshd, say): reconnect for the next attempt.
                guest.disconnected().await;
                (
                    format!("ssh: {}", crate::error::error_chain(&err)),
                    String::new(),
                )
            }
            Err(_) => {
                guest.disconnected().await;
                (
                    format!("timed out after {}", crate::human::duration(check.timeout)),
                    String::new(),
                )
            }
        };
        if started.elapsed() + RETRY_PAUSE >= check.retry_for {
            let reason = if attempts > 1 {
                format!(
                    "{reason} (after {attempts} attempts in {})",
                    crate::human::duration(started.elapsed())
                )
            } else {
                reason
            };
            return Ok(failed(check, started, attempts, reason, output));
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PAUSE) => {}
            () = cancel.cancelled() => return Ok(failed(check, started, attempts, "cancelled".into(), output)),
        }
    }
}

fn failed(
    check: &CheckSpec,
    started: Instant,
    attempts: u32,
    reason: String,
    output: String,
) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        passed: false,
        duration: started.elapsed(),
        attempts,
        reason,
        output,
    }
}

async fn attempt(
    command: &GuestCommand,
    index: usize,
    guest: &mut Guest,
) -> Result<Attempt, SshError> {
    let session = guest.session().await?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut collect = |stream: Stream, line: &str| {
        let buffer = match stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        buffer.push_str(line);
        buffer.push('\n');
    };
    let status = match command {
        GuestCommand::Shell(script) => session.exec(script, &mut collect).await?,
        GuestCommand::Upload(local) => {
            let data = tokio::fs::read(local)
                .await
                .map_err(|source| SshError::Local {
                    path: local.clone(),
                    source,
                })?;
            let remote = format!("/tmp/kiln-check-{index}-{}", std::process::id());
            session.upload_bytes(&data, &remote, 0o755).await?;
            let quoted = shell_quote(&remote);
            let status = session.exec(&quoted, &mut collect).await?;
            let _ = session
                .exec(&format!("rm -f {quoted}"), &mut |_, _| {})
                .await;
            status
        }
    };
    Ok(Attempt {
        status: Some(status),
        stdout,
        stderr,
    })
}

/// `None` when the attempt passed, else why not.
fn judge(check: &CheckSpec, attempt: &Attempt) -> Option<String> {
    match &attempt.status {
        Some(ExitStatus::Code(code)) if i64::from(*code) == check.expect_exit => {}
        Some(ExitStatus::Code(code)) => {
            let first = attempt
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            return Some(format!(
                "exit code {code}, expected {}{first}",
                check.expect_exit
            ));
        }
        Some(ExitStatus::Signal(signal)) => return Some(format!("killed by signal {signal}")),
        Some(ExitStatus::Disconnected) | None => {
            return Some("the connection closed before the check ended".into());
        }
    }
    for (what, pattern, text) in [
        ("stdout", &check.expect_stdout, &attempt.stdout),
        ("stderr", &check.expect_stderr, &attempt.stderr),
    ] {
        let Some(pattern) = pattern else { continue };
        // Without its final newline, `^ok$` matches a command that printed
        // one line `ok`, as people write it.
        let text = text.strip_suffix('\n').unwrap_or(text);
        // Validated when the checks were loaded.
        let matches = Regex::new(pattern).map(|re| re.is_match(text));
        if !matches.unwrap_or(false) {
            return Some(format!("{what} does not match /{pattern}/"));
        }
    }
    None
}

fn combine(stdout: &str, stderr: &str) -> String {
    let mut out = stdout.to_string();
    out.push_str(stderr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::CheckKind;

    fn check(expect_exit: i64, stdout: Option<&str>, stderr: Option<&str>) -> CheckSpec {
        CheckSpec {
            name: "c".into(),
            kind: CheckKind::Command("true".into()),
            expect_exit,
            expect_stdout: stdout.map(String::from),
            expect_stderr: stderr.map(String::from),
            timeout: Duration::from_secs(1),
            retry_for: Duration::ZERO,
        }
    }

    fn seen(code: u32, stdout: &str, stderr: &str) -> Attempt {
        Attempt {
            status: Some(ExitStatus::Code(code)),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn exit_codes_and_patterns_decide() {
        assert_eq!(judge(&check(0, None, None), &seen(0, "", "")), None);
        assert_eq!(
            judge(&check(0, None, None), &seen(3, "", "\nno such file\n")).as_deref(),
            Some("exit code 3, expected 0: no such file")
        );
        assert_eq!(judge(&check(3, None, None), &seen(3, "", "")), None);
        assert_eq!(
            judge(&check(0, Some("^ok$"), None), &seen(0, "ok\n", "")),
            None
        );
        assert_eq!(
            judge(&check(0, Some("^ok$"), None), &seen(0, "not ok\n", "")).as_deref(),
            Some("stdout does not match /^ok$/")
        );
        assert_eq!(
            judge(
                &check(0, Some("(?m)^ok$"), Some("warn")),
                &seen(0, "x\nok\n", "a warning")
            ),
            None
        );
        let gone = Attempt {
            status: Some(ExitStatus::Disconnected),
            stdout: String::new(),
            stderr: String::new(),
        };
        assert!(judge(&check(0, None, None), &gone).is_some());
    }
}
