//! What the user sees: a live status line per build on a TTY, plain
//! timestamped lines otherwise, or Packer's machine-readable format.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redact::Redactor;
use crate::build::report::{Artifact, Reporter, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live status lines, redrawn in place.
    Tty,
    /// One timestamped line per event.
    Plain,
    /// `timestamp,target,type,data...` as Packer's `-machine-readable`.
    Machine,
}

struct BuildStatus {
    name: String,
    stage: Option<Stage>,
    started: Instant,
    stage_started: Instant,
    finished: bool,
}

struct State {
    out: Box<dyn Write + Send>,
    builds: Vec<BuildStatus>,
    /// Status lines currently on screen (TTY mode), to erase before printing.
    drawn: usize,
    /// Only a terminal gets the live status lines.
    live: bool,
}

#[derive(Clone)]
pub struct Ui {
    mode: Mode,
    timestamps: bool,
    redactor: Redactor,
    state: Arc<Mutex<State>>,
}

impl Ui {
    pub fn new(mode: Mode, timestamps: bool, out: Box<dyn Write + Send>) -> Self {
        Ui {
            mode,
            timestamps,
            redactor: Redactor::default(),
            state: Arc::new(Mutex::new(State {
                out,
                builds: Vec::new(),
                drawn: 0,
                live: mode == Mode::Tty,
            })),
        }
    }

    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

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
                ui.with_state(redraw);
            }
        }))
    }

    /// Erases the live lines for good (before the final summary).
    pub fn stop_live(&self) {
        if self.mode == Mode::Tty {
            self.with_state(|state| {
                erase(state);
                state.builds.clear();
            });
        }
    }

    fn with_state(&self, f: impl FnOnce(&mut State)) {
        // A poisoned lock only means another thread panicked mid-print;
        // the output is still usable.
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state);
        let _ = state.out.flush();
    }

    /// A line for people; `kind` is Packer's ui type (say, message, error).
    fn line(&self, kind: &str, text: &str) {
        let text = self.redactor.redact(text);
        match self.mode {
            Mode::Machine => {
                let record = machine_record("", &["ui", kind, &text]);
                self.with_state(|state| {
                    let _ = writeln!(state.out, "{record}");
                });
            }
            Mode::Plain | Mode::Tty => {
                let stamp = if self.mode == Mode::Plain || self.timestamps {
                    format!("{} ", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"))
                } else {
                    String::new()
                };
                let colored = self.mode == Mode::Tty && kind == "error";
                self.with_state(|state| {
                    erase(state);
                    for line in text.split('\n') {
                        if colored {
                            let _ = writeln!(state.out, "{stamp}\x1b[31m{line}\x1b[0m");
                        } else {
                            let _ = writeln!(state.out, "{stamp}{line}");
                        }
                    }
                    redraw(state);
                });
            }
        }
    }

    pub fn say_global(&self, text: &str) {
        self.line("say", text);
    }

    pub fn error_global(&self, text: &str) {
        self.line("error", text);
    }

    /// A raw machine-readable record (ignored in the other modes).
    pub fn machine(&self, target: &str, fields: &[&str]) {
        if self.mode != Mode::Machine {
            return;
        }
        let fields: Vec<String> = fields.iter().map(|f| self.redactor.redact(f)).collect();
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        let record = machine_record(target, &refs);
        self.with_state(|state| {
            let _ = writeln!(state.out, "{record}");
        });
    }

    pub fn finish_build(&self, build: &str) {
        self.with_state(|state| {
            if let Some(status) = state.builds.iter_mut().find(|b| b.name == build) {
                status.finished = true;
            }
            redraw(state);
        });
    }
}

impl Reporter for Ui {
    fn stage(&self, build: &str, stage: Stage) {
        let now = Instant::now();
        self.with_state(|state| {
            match state.builds.iter_mut().find(|b| b.name == build) {
                Some(status) => {
                    status.stage = Some(stage);
                    status.stage_started = now;
                }
                None => state.builds.push(BuildStatus {
                    name: build.to_string(),
                    stage: Some(stage),
                    started: now,
                    stage_started: now,
                    finished: false,
                }),
            }
            redraw(state);
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

    fn artifact(&self, build: &str, artifact: &Artifact) {
        let count = artifact.files.len().to_string();
        self.machine(build, &["artifact-count", "1"]);
        self.machine(
            build,
            &["artifact", "0", "builder-id", &artifact.builder_id],
        );
        self.machine(build, &["artifact", "0", "id", "VM"]);
        self.machine(build, &["artifact", "0", "string", &artifact.description]);
        self.machine(build, &["artifact", "0", "files-count", &count]);
        for (index, file) in artifact.files.iter().enumerate() {
            let index = index.to_string();
            let path = file.display().to_string();
            self.machine(build, &["artifact", "0", "file", &index, &path]);
        }
        self.machine(build, &["artifact", "0", "end"]);
    }
}

fn erase(state: &mut State) {
    for _ in 0..state.drawn {
        let _ = write!(state.out, "\x1b[1A\x1b[2K");
    }
    state.drawn = 0;
}

fn redraw(state: &mut State) {
    if !state.live || state.builds.is_empty() {
        return;
    }
    erase(state);
    let now = Instant::now();
    let mut lines = Vec::new();
    for build in &state.builds {
        if build.finished {
            continue;
        }
        let stage = build.stage.map_or("starting", Stage::as_str);
        lines.push(format!(
            "\x1b[1m{}\x1b[0m  {:<10} {:>6}  (total {})",
            build.name,
            stage,
            format_elapsed(now - build.stage_started),
            format_elapsed(now - build.started),
        ));
    }
    for line in &lines {
        let _ = writeln!(state.out, "{line}");
    }
    state.drawn = lines.len();
}

fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// One machine-readable line: commas inside fields become Packer's
/// `%!(PACKER_COMMA)`, newlines become a literal `\n`.
pub fn machine_record(target: &str, fields: &[&str]) -> String {
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

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
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
        let mut ui = Ui::new(Mode::Machine, false, Box::new(sink.clone()));
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
        let mut ui = Ui::new(Mode::Plain, false, Box::new(sink.clone()));
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
}
