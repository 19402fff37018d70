//! What the user sees: live status lines per build on a TTY (drawn by
//! [`live`]), plain timestamped lines otherwise, or Packer's
//! machine-readable format. Errors for people go to stderr in every mode;
//! in the machine-readable mode their records stay on stdout too, as Packer
//! writes them.

mod live;

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redact::Redactor;
use crate::pipeline::report::{Artifact, Progress, Reporter, Stage};
use live::{Live, Out, OutTerm, with_out};

/// Between progress lines when there is no live status line to redraw.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);
/// Between redraws of a live progress bar.
const PROGRESS_REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Colours and bold on a terminal: off with `-color=false` or `NO_COLOR`.
/// One setting for the whole process, made once from the arguments.
static COLOR: AtomicBool = AtomicBool::new(true);

/// Turns colour on or off for the whole process (`-color=false`, `NO_COLOR`).
pub fn set_color(enabled: bool) {
    COLOR.store(enabled, Ordering::Relaxed);
}

fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

/// How output looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live status lines, redrawn in place.
    Tty,
    /// One timestamped line per event.
    Plain,
    /// `timestamp,target,type,data...` as Packer's `-machine-readable`.
    Machine,
}

struct State {
    out: Out,
    /// Where errors for people go: stderr, but for tests.
    err: Box<dyn Write + Send>,
    /// The status lines (TTY mode, until [`Ui::stop_live`]).
    live: Option<Live>,
    /// When each build's progress was last said as a line (other modes).
    progress_said: Vec<(String, Instant)>,
    /// Shared by every clone of the [`Ui`], so one set late (after the
    /// template is loaded) reaches the clones made before.
    redactor: Redactor,
}

/// Where answers to questions come from: a terminal's lines.
type Answers = Arc<Mutex<Box<dyn BufRead + Send>>>;

/// The terminal side of a command: prints what builds report, in its
/// [`Mode`], with secrets masked.
#[derive(Clone)]
pub struct Ui {
    mode: Mode,
    timestamps: bool,
    /// Errors in red: only on a terminal's stderr, and only in TTY mode.
    color_errors: bool,
    /// Between progress lines without a terminal.
    progress_line_every: Duration,
    /// `None` when nobody can answer: stdin is not a terminal, or the
    /// output is for machines (Packer's machine-readable UI never asks).
    answers: Option<Answers>,
    state: Arc<Mutex<State>>,
}

impl Ui {
    /// Everything but errors goes to `out`; errors go to stderr. Questions
    /// are answered on stdin when it is a terminal.
    pub fn new(mode: Mode, timestamps: bool, out: Box<dyn Write + Send>) -> Self {
        let out: Out = Arc::new(Mutex::new(out));
        let live =
            (mode == Mode::Tty).then(|| Live::new(Arc::new(OutTerm::new(out.clone())), color()));
        let answers = (mode != Mode::Machine && std::io::stdin().is_terminal()).then(|| {
            let stdin: Box<dyn BufRead + Send> =
                Box::new(std::io::BufReader::new(std::io::stdin()));
            Arc::new(Mutex::new(stdin))
        });
        Ui {
            mode,
            timestamps,
            color_errors: color() && mode == Mode::Tty && std::io::stderr().is_terminal(),
            progress_line_every: PROGRESS_LINE_EVERY,
            answers,
            state: Arc::new(Mutex::new(State {
                out,
                err: Box::new(std::io::stderr()),
                live,
                progress_said: Vec::new(),
                redactor: Redactor::default(),
            })),
        }
    }

    /// Masks the plan's sensitive values in everything printed from now on.
    pub fn set_redactor(&self, redactor: Redactor) {
        self.with_state(|state| state.redactor = redactor);
    }

    /// `text` with the secrets masked, for text cut before it is shown (a
    /// first line): masking the whole first means no part of a secret is
    /// left at the cut.
    pub fn redact(&self, text: &str) -> String {
        let mut masked = None;
        self.with_state(|state| masked = Some(state.redactor.redact(text)));
        masked.unwrap_or_default()
    }

    /// Errors to `err` instead of stderr (for tests).
    #[cfg(test)]
    pub fn with_error_output(mut self, err: Box<dyn Write + Send>) -> Self {
        self.color_errors = false;
        self.with_state(|state| state.err = err);
        self
    }

    /// Answers to questions from `answers` instead of the terminal (for
    /// tests); with `None`, nobody is asked.
    #[cfg(test)]
    pub fn with_answers(mut self, answers: Option<Box<dyn BufRead + Send>>) -> Self {
        self.answers = answers.map(|a| Arc::new(Mutex::new(a)));
        self
    }

    /// How this output looks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Keeps the TTY status lines ticking while builds run.
    pub fn start_ticker(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.mode != Mode::Tty {
            return None;
        }
        let ui = self.clone();
        Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            loop {
                interval.tick().await;
                ui.with_state(|state| {
                    if let Some(live) = &mut state.live {
                        live.redraw(Instant::now(), &state.redactor);
                    }
                });
            }
        }))
    }

    /// Erases the live lines for good (before the final summary).
    pub fn stop_live(&self) {
        self.with_state(|state| {
            if let Some(mut live) = state.live.take() {
                live.clear();
            }
        });
    }

    fn with_state(&self, f: impl FnOnce(&mut State)) {
        // A poisoned lock only means another thread panicked mid-print;
        // the output is still usable.
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state);
        let _ = with_out(&state.out, |out| out.flush());
        let _ = state.err.flush();
    }

    /// `2026-01-02T03:04:05Z ` in plain mode or with `-timestamp-ui`.
    fn stamp(&self) -> String {
        if self.mode == Mode::Plain || self.timestamps {
            format!("{} ", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            String::new()
        }
    }

    /// A line for people; `kind` is Packer's ui type (say, message, error).
    fn line(&self, kind: &str, text: &str) {
        self.line_to(kind, text, kind == "error");
    }

    /// [`Ui::line`], to stderr in the text modes when `to_err`; errors are
    /// also coloured.
    fn line_to(&self, kind: &str, text: &str, to_err: bool) {
        // Masked whole before being split into lines: a secret spanning
        // lines is seen whole.
        let text = self.redact(text);
        let error = kind == "error";
        match self.mode {
            Mode::Machine => {
                let record = machine_record("", &["ui", kind, &text]);
                self.with_state(|state| {
                    let _ = with_out(&state.out, |out| writeln!(out, "{record}"));
                    if error {
                        let _ = writeln!(state.err, "{text}");
                    }
                });
            }
            Mode::Plain | Mode::Tty => {
                let stamp = self.stamp();
                let colored = error && self.color_errors;
                self.with_state(|state| {
                    let State { out, err, live, .. } = state;
                    let mut write = || {
                        let write_to = |to: &mut dyn Write| {
                            for line in text.split('\n') {
                                if colored {
                                    let _ = writeln!(to, "{stamp}\x1b[31m{line}\x1b[0m");
                                } else {
                                    let _ = writeln!(to, "{stamp}{line}");
                                }
                            }
                            let _ = to.flush();
                        };
                        if to_err {
                            write_to(err.as_mut());
                        } else {
                            with_out(out, |out| write_to(out));
                        }
                    };
                    // The bars leave the screen while the line is written
                    // (through either stream), and come back below it.
                    match live {
                        Some(live) => live.suspend(write),
                        None => write(),
                    }
                });
            }
        }
    }

    /// A message that belongs to no build.
    pub fn say_global(&self, text: &str) {
        self.line("say", text);
    }

    /// An error that belongs to no build.
    pub fn error_global(&self, text: &str) {
        self.line("error", text);
    }

    /// A warning that belongs to no build (`Warning: ...`): on stderr in
    /// the text modes, a `ui,say` record in machine-readable mode (Packer
    /// says its warnings).
    pub fn warn_global(&self, text: &str) {
        self.line_to("say", &format!("Warning: {text}"), true);
    }

    /// A raw machine-readable record (ignored in the other modes).
    pub fn machine(&self, target: &str, fields: &[&str]) {
        if self.mode != Mode::Machine {
            return;
        }
        let fields: Vec<String> = fields.iter().map(|f| self.redact(f)).collect();
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        let record = machine_record(&self.redact(target), &refs);
        self.with_state(|state| {
            let _ = with_out(&state.out, |out| writeln!(out, "{record}"));
        });
    }

    /// Removes `build`'s status line (a build's line otherwise stays until
    /// the live display stops).
    pub fn finish_build(&self, build: &str) {
        self.with_state(|state| {
            if let Some(live) = &mut state.live {
                live.finish(build);
            }
        });
    }
}

impl Reporter for Ui {
    fn stage(&self, build: &str, stage: Stage) {
        self.with_state(|state| {
            if let Some(live) = &mut state.live {
                live.stage(build, stage, Instant::now(), &state.redactor);
            }
        });
        if self.mode == Mode::Machine {
            self.machine(build, &["kiln-stage", stage.as_str()]);
        }
    }

    fn say(&self, build: &str, message: &str) {
        self.line("say", &format!("==> {build}: {message}"));
    }

    fn output(&self, build: &str, line: &str) {
        self.line("message", &format!("    {build}: {line}"));
    }

    fn error(&self, build: &str, message: &str) {
        self.line("error", &format!("==> {build}: {message}"));
    }

    fn finished(&self, build: &str) {
        self.finish_build(build);
    }

    /// Packer's records, artifact by artifact.
    fn artifacts(&self, build: &str, artifacts: &[Artifact]) {
        self.machine(build, &["artifact-count", &artifacts.len().to_string()]);
        for (number, artifact) in artifacts.iter().enumerate() {
            let n = number.to_string();
            let count = artifact.files.len().to_string();
            self.machine(build, &["artifact", &n, "builder-id", &artifact.builder_id]);
            self.machine(build, &["artifact", &n, "id", artifact.id()]);
            self.machine(build, &["artifact", &n, "string", &artifact.description]);
            self.machine(build, &["artifact", &n, "files-count", &count]);
            for (index, file) in artifact.files.iter().enumerate() {
                let index = index.to_string();
                let path = file.display().to_string();
                self.machine(build, &["artifact", &n, "file", &index, &path]);
            }
            self.machine(build, &["artifact", &n, "end"]);
        }
    }

    fn progress(&self, build: &str, progress: Option<&Progress>) {
        let now = Instant::now();
        let mut line = None;
        self.with_state(|state| {
            if let Some(live) = &mut state.live {
                live.progress(build, progress, PROGRESS_REDRAW_EVERY, now, &state.redactor);
                return;
            }
            let said = state.progress_said.iter().position(|(b, _)| b == build);
            match (progress, said) {
                (None, Some(index)) => {
                    state.progress_said.remove(index);
                }
                (None, None) => {}
                // The first line waits a while too: a transfer that ends
                // sooner needs none, and early rates are noise.
                (Some(_), None) => state.progress_said.push((build.to_string(), now)),
                (Some(progress), Some(index)) => {
                    let at = &mut state.progress_said[index].1;
                    if now - *at >= self.progress_line_every {
                        *at = now;
                        line = Some(progress.describe());
                    }
                }
            }
        });
        if let Some(text) = line {
            self.say(build, &text);
        }
    }

    fn ask(&self, build: &str, question: &str) -> Option<String> {
        let answers = self.answers.as_ref()?;
        let prompt = self.redact(&format!("{}==> {build}: {question} ", self.stamp()));
        self.with_state(|state| {
            // The bars would draw over the prompt and the answer typed.
            if let Some(live) = &state.live {
                live.hide();
            }
            let _ = with_out(&state.out, |out| out.write_all(prompt.as_bytes()));
        });
        // Read without the Ui's lock: the other builds go on printing.
        let mut answer = String::new();
        let read = answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .read_line(&mut answer);
        self.with_state(|state| {
            if let Some(live) = &mut state.live {
                live.show(Instant::now(), &state.redactor);
            }
        });
        match read {
            // End of input (Ctrl-D) or a terminal gone: nobody answers.
            Ok(0) | Err(_) => None,
            Ok(_) => Some(answer.trim_end_matches(['\r', '\n']).to_string()),
        }
    }
}

/// One machine-readable line: commas inside fields become Packer's
/// `%!(PACKER_COMMA)`, newlines become a literal `\n`.
fn machine_record(target: &str, fields: &[&str]) -> String {
    let timestamp = chrono::Utc::now().timestamp();
    let mut record = format!("{timestamp},{target}");
    for field in fields {
        record.push(',');
        record.push_str(
            &field
                .replace(',', "%!(PACKER_COMMA)")
                .replace('\r', "\\r")
                .replace('\n', "\\n"),
        );
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::SharedBuf as Sink;
    use crate::cli::testing::upload;

    #[test]
    fn errors_go_to_stderr_in_every_mode() {
        for mode in [Mode::Tty, Mode::Plain, Mode::Machine] {
            let (out, err) = (Sink::default(), Sink::default());
            let ui = Ui::new(mode, false, Box::new(out.clone()))
                .with_error_output(Box::new(err.clone()));
            ui.set_redactor(Redactor::new(&["s3cret".into()]));
            ui.say("demo", "starting");
            ui.error("demo", "it broke, s3cret");
            ui.error_global("Error: all of it");
            let (out, err) = (out.text(), err.text());
            assert!(out.contains("starting"), "{mode:?}: {out:?}");
            assert!(!err.contains("starting"), "{mode:?}: {err:?}");
            assert!(
                err.contains("==> demo: it broke, <sensitive>\n"),
                "{mode:?}: {err:?}"
            );
            assert!(err.contains("Error: all of it\n"), "{mode:?}: {err:?}");
            assert!(!err.contains("s3cret") && !out.contains("s3cret"));
            assert!(!err.contains('\x1b'), "{mode:?}: {err:?}");
            if mode == Mode::Machine {
                // The records stay where Packer writes them.
                assert!(
                    out.contains(",,ui,error,==> demo: it broke%!(PACKER_COMMA) <sensitive>"),
                    "{out}"
                );
                assert!(out.lines().all(|l| l.split(',').count() >= 3), "{out}");
            } else {
                assert!(
                    !out.contains("broke") && !out.contains("all of it"),
                    "{mode:?}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn machine_record_escapes_commas_and_newlines() {
        let record = machine_record("demo", &["ui", "say", "a,b\nc"]);
        let (_, rest) = record.split_once(',').unwrap();
        assert_eq!(rest, "demo,ui,say,a%!(PACKER_COMMA)b\\nc");
    }

    #[test]
    fn machine_mode_redacts_sensitive_values() {
        let sink = Sink::default();
        let ui = Ui::new(Mode::Machine, false, Box::new(sink.clone()));
        ui.set_redactor(Redactor::new(&["s3cret".into()]));
        ui.output("demo", "password is s3cret");
        ui.machine("demo", &["artifact", "0", "string", "s3cret"]);
        let text = sink.text();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains(",,ui,message,    demo: password is <sensitive>"),
            "{text}"
        );
        assert!(
            text.contains(",demo,artifact,0,string,<sensitive>"),
            "{text}"
        );
    }

    #[test]
    fn plain_mode_is_timestamped_and_redacted() {
        let sink = Sink::default();
        let ui = Ui::new(Mode::Plain, false, Box::new(sink.clone()));
        ui.set_redactor(Redactor::new(&["tok".into()]));
        ui.say("demo", "using tok");
        let text = sink.text();
        let line = text.lines().next().unwrap();
        assert!(line.ends_with(" ==> demo: using <sensitive>"), "{line}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(line.split(' ').next().unwrap()).is_ok(),
            "{line}"
        );
    }

    #[test]
    fn a_multi_line_secret_leaks_in_no_mode() {
        let secret = "first-line-of-it\nsecond-line-of-it";
        for mode in [Mode::Tty, Mode::Plain, Mode::Machine] {
            let sink = Sink::default();
            let ui = Ui::new(mode, false, Box::new(sink.clone()))
                .with_error_output(Box::new(sink.clone()));
            // Set after the clone: the clone masks too.
            let clone = ui.clone();
            ui.set_redactor(Redactor::new(&[secret.into()]));
            clone.error("demo", &format!("failed with {secret} in it"));
            // Guest output comes a line at a time.
            for line in secret.lines() {
                clone.output("demo", line);
            }
            clone.stage(
                &format!("vm-{}", secret.lines().next().unwrap()),
                Stage::Connect,
            );
            let text = sink.text();
            assert!(!text.contains("line-of-it"), "{mode:?}: {text}");
            assert!(
                text.contains("failed with <sensitive> in it"),
                "{mode:?}: {text}"
            );
        }
    }

    #[test]
    fn only_a_terminal_gets_live_status_lines() {
        for mode in [Mode::Plain, Mode::Machine] {
            let sink = Sink::default();
            let ui = Ui::new(mode, false, Box::new(sink.clone()));
            ui.stage("demo", Stage::Connect);
            ui.say("demo", "waiting");
            ui.stage("demo", Stage::Provision);
            let text = sink.text();
            assert!(!text.contains('\x1b'), "{mode:?} drew escapes: {text:?}");
            assert!(text.contains("waiting"), "{text:?}");
        }
    }

    #[test]
    fn tty_mode_draws_a_status_line_per_build() {
        let sink = Sink::default();
        let ui = Ui::new(Mode::Tty, false, Box::new(sink.clone()));
        ui.stage("a", Stage::Connect);
        ui.stage("b", Stage::Provision);
        let text = sink.text();
        assert!(text.contains("connect"), "{text}");
        assert!(text.contains("provision"), "{text}");
        ui.finish_build("a");
        ui.stop_live();
        ui.say("b", "done");
        assert!(sink.text().ends_with("==> b: done\n"));
    }

    #[test]
    fn tty_mode_prints_lines_above_the_bars() {
        let sink = Sink::default();
        let ui = Ui::new(Mode::Tty, false, Box::new(sink.clone()));
        ui.stage("demo", Stage::Post);
        ui.progress("demo", Some(&upload(0.5)));
        let before = sink.text().len();
        ui.say("demo", "halfway");
        let text = sink.text()[before..].to_string();
        // The bar is cleared, the line written whole, the bar drawn again.
        let (cleared, rest) = text.split_once("==> demo: halfway\n").expect("the line");
        assert!(cleared.contains("\x1b[2K"), "{text:?}");
        assert!(rest.contains("Uploading ["), "{text:?}");
        assert!(rest.contains("]  50%"), "{text:?}");
    }

    #[test]
    fn questions_are_answered_by_a_line_and_nobody_answers_without_a_terminal() {
        let sink = Sink::default();
        let answers: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new("r\n\n"));
        let ui = Ui::new(Mode::Tty, false, Box::new(sink.clone())).with_answers(Some(answers));
        ui.set_redactor(Redactor::new(&["s3cret".into()]));
        ui.stage("vm-s3cret", Stage::Provision);
        assert_eq!(ui.ask("vm-s3cret", "Go on?").as_deref(), Some("r"));
        let text = sink.text();
        // The bar is cleared before the prompt, and back after the answer.
        let (before, after) = text
            .split_once("==> vm-<sensitive>: Go on? ")
            .expect("prompt");
        assert!(before.ends_with("\r\x1b[2K"), "{text:?}");
        assert!(after.contains("provision"), "{text:?}");
        assert_eq!(ui.ask("vm-s3cret", "Again?").as_deref(), Some(""));
        // The input ended: nobody answers.
        assert_eq!(ui.ask("vm-s3cret", "And?"), None);
        assert!(!sink.text().contains("s3cret"));
        // No terminal to ask, or machine-readable output: nobody answers.
        let ui = Ui::new(Mode::Plain, false, Box::new(Sink::default())).with_answers(None);
        assert_eq!(ui.ask("demo", "Go on?"), None);
    }

    #[test]
    fn without_a_terminal_progress_is_a_line_now_and_then() {
        let sink = Sink::default();
        let mut ui = Ui::new(Mode::Plain, false, Box::new(sink.clone()));
        // The interval is set by hand, so no step below hangs on the clock.
        ui.progress_line_every = Duration::from_secs(3600);
        // A transfer over before the first interval says nothing.
        ui.progress("demo", Some(&upload(0.1)));
        ui.progress("demo", None);
        assert_eq!(sink.text(), "");
        // One that lasts gets a line per interval, not one per report.
        ui.progress("demo", Some(&upload(0.0)));
        for step in 1..=50 {
            ui.progress("demo", Some(&upload(f64::from(step) / 100.0)));
        }
        assert_eq!(sink.text(), "");
        // The interval is over: the next report is a line, the ones after
        // it wait for the next interval.
        ui.progress_line_every = Duration::ZERO;
        ui.progress("demo", Some(&upload(0.51)));
        ui.progress_line_every = Duration::from_secs(3600);
        for step in 52..=60 {
            ui.progress("demo", Some(&upload(f64::from(step) / 100.0)));
        }
        let text = sink.text();
        assert_eq!(text.matches("Uploading").count(), 1, "{text}");
        assert!(
            text.contains("==> demo: Uploading: 600 MiB at 40.0 MiB/s, 51% done, about 1m15s left"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}
