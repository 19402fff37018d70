//! Running commands: output streamed line by line, and a raw variant that
//! pipes bytes in and out (the transfer fallback).

use russh::client::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ExitStatus, Session, SshError, Stream};

/// The SSH extended-data type of stderr.
const STDERR: u32 = 1;
/// Enough of what the guest said to explain a failure, not enough to hurt.
const SAID_KEEP: usize = 16 * 1024;

impl Session {
    /// Opens a channel and starts `command` on it, on a PTY when `pty` is
    /// set.
    async fn start(&self, command: &str, pty: bool) -> Result<Channel<Msg>, SshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(SshError::protocol)?;
        if pty {
            // Best effort, as with `ssh -t`: without a PTY the command
            // still runs.
            channel
                .request_pty(false, "vt100", 80, 40, 0, 0, &[])
                .await
                .map_err(SshError::protocol)?;
        }
        channel
            .exec(true, command)
            .await
            .map_err(SshError::protocol)?;
        Ok(channel)
    }

    /// Runs `command`, calling `on_line` for each complete line of output
    /// (a trailing partial line is flushed at the end).
    ///
    /// A connection that goes away before the command reported how it
    /// ended (the guest rebooted or powered off) gives
    /// `ExitStatus::Disconnected`, not an error.
    pub async fn exec(
        &self,
        command: &str,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExitStatus, SshError> {
        let mut channel = self.start(command, self.pty).await?;

        let mut stdout = Lines::default();
        let mut stderr = Lines::default();
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    stdout.push(&data, &mut |line| on_line(Stream::Stdout, line));
                }
                ChannelMsg::ExtendedData { data, ext: STDERR } => {
                    stderr.push(&data, &mut |line| on_line(Stream::Stderr, line));
                }
                ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } => {
                    status = exit_status(&msg);
                }
                ChannelMsg::Failure if status.is_none() => {
                    return Err(SshError::Protocol(
                        format!("the server refused to run {command:?}").into(),
                    ));
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        stdout.finish(&mut |line| on_line(Stream::Stdout, line));
        stderr.finish(&mut |line| on_line(Stream::Stderr, line));
        Ok(status.unwrap_or(ExitStatus::Disconnected))
    }

    /// Runs `command` without a PTY (bytes must pass untouched), feeding it
    /// `input` then end-of-file, and copying its stdout into `output`.
    pub(super) async fn exec_raw(
        &self,
        command: &str,
        input: Option<&mut (dyn AsyncRead + Unpin + Send)>,
        output: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<RawOutcome, SshError> {
        let (mut read_half, write_half) = self.start(command, false).await?.split();

        // Reading goes on while writing: a channel whose incoming messages
        // are not drained stalls the whole connection.
        let send = async {
            if let Some(input) = input {
                write_half.data(input).await?;
            }
            write_half.eof().await
        };
        let receive = async {
            let mut outcome = RawOutcome {
                status: ExitStatus::Disconnected,
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
            let mut write_error = None;
            while let Some(msg) = read_half.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        // The start is kept too: a guest that refuses the
                        // command (a forced command in authorized_keys)
                        // says why on stdout, which the caller may discard.
                        keep(&mut outcome.stdout, &data);
                        if write_error.is_none()
                            && let Err(err) = output.write_all(&data).await
                        {
                            write_error = Some(err);
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => keep(&mut outcome.stderr, &data),
                    ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } => {
                        if let Some(status) = exit_status(&msg) {
                            outcome.status = status;
                        }
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            if write_error.is_none() {
                write_error = output.flush().await.err();
            }
            (outcome, write_error)
        };
        let (sent, (outcome, write_error)) = tokio::join!(send, receive);
        if let Some(err) = write_error {
            return Err(SshError::Transfer {
                path: command.to_string(),
                source: err.into(),
            });
        }
        // A command that failed early stops reading its input: its own
        // exit status tells more than the broken pipe.
        if let (Err(err), ExitStatus::Code(0)) = (sent, &outcome.status) {
            return Err(SshError::protocol(err));
        }
        Ok(outcome)
    }
}

/// Appends what fits of `data` under [`SAID_KEEP`].
fn keep(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = SAID_KEEP.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

/// How a command run for a transfer ended, and what it printed.
pub(super) struct RawOutcome {
    /// How the command ended.
    pub status: ExitStatus,
    /// The first [`SAID_KEEP`] bytes of stdout (all of it also went to the
    /// caller's output).
    pub stdout: Vec<u8>,
    /// The first [`SAID_KEEP`] bytes of stderr.
    pub stderr: Vec<u8>,
}

impl RawOutcome {
    /// Ok for exit code 0, else an error carrying what the command said:
    /// its stderr, or its stdout when stderr is empty.
    pub fn check(self, path: &str) -> Result<(), SshError> {
        match self.status {
            ExitStatus::Code(0) => Ok(()),
            status => {
                let stderr = String::from_utf8_lossy(&self.stderr);
                let stdout = String::from_utf8_lossy(&self.stdout);
                let detail = match stderr.trim() {
                    "" => stdout.trim(),
                    stderr => stderr,
                };
                let how = match status {
                    ExitStatus::Code(code) => format!("exit code {code}"),
                    ExitStatus::Signal(signal) => format!("signal {signal}"),
                    ExitStatus::Disconnected => "the connection closed".to_string(),
                };
                let message = if detail.is_empty() {
                    how
                } else {
                    format!("{how}: {detail}")
                };
                Err(SshError::transfer(path, message))
            }
        }
    }
}

/// How the command ended, when `msg` says so.
fn exit_status(msg: &ChannelMsg) -> Option<ExitStatus> {
    match msg {
        ChannelMsg::ExitStatus { exit_status } => Some(ExitStatus::Code(*exit_status)),
        ChannelMsg::ExitSignal { signal_name, .. } => {
            Some(ExitStatus::Signal(signal_text(signal_name)))
        }
        _ => None,
    }
}

fn signal_text(signal: &Sig) -> String {
    let name = match signal {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    };
    name.to_string()
}

/// Splits a byte stream into lines: `\n` ends a line, a `\r` before it
/// goes (PTYs and Windows tools send `\r\n`), invalid UTF-8 is replaced.
#[derive(Default)]
pub(super) struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Emits every line `data` completes; keeps the partial rest.
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&str)) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end);
            if self.partial.is_empty() {
                emit_line(line, emit);
            } else {
                self.partial.extend_from_slice(line);
                emit_line(&self.partial, emit);
                self.partial.clear();
            }
            rest = tail.get(1..).unwrap_or_default();
        }
        self.partial.extend_from_slice(rest);
    }

    /// Emits the last line, when the stream did not end with `\n`.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() {
            emit_line(&self.partial, emit);
            self.partial.clear();
        }
    }
}

fn emit_line(line: &[u8], emit: &mut dyn FnMut(&str)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    emit(&String::from_utf8_lossy(line));
}
