//! What every command does around its work, written once: the output
//! (live, plain or machine-readable), the signal handlers and the cancel
//! token they fire, errors printed whole and masked, and the exit status a
//! signal overrides.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::interrupt::Interrupt;
use super::ui::{Mode, Ui};
use super::{exit, output_mode, redact};
use crate::pipeline::report::Reporter;

/// A command that starts work: a build, a test boot, an export.
pub(super) struct Session {
    ui: Ui,
    interrupt: Interrupt,
}

impl Session {
    /// The output in `mode`, everything but errors to `out`, and the signal
    /// handlers installed: call inside the runtime, before any work.
    pub fn start(mode: Mode, timestamps: bool, out: Box<dyn Write + Send>) -> Session {
        let ui = Ui::new(mode, timestamps, out);
        let interrupt = Interrupt::install(ui.clone());
        Session { ui, interrupt }
    }

    /// The output on stdout: machine-readable when asked, live on a terminal.
    pub fn on_stdout(machine_readable: bool, timestamps: bool) -> Session {
        Session::start(
            output_mode(machine_readable),
            timestamps,
            Box::new(std::io::stdout()),
        )
    }

    /// Where the command's output goes.
    pub fn ui(&self) -> &Ui {
        &self.ui
    }

    /// Where the library reports to.
    pub fn reporter(&self) -> Arc<dyn Reporter> {
        Arc::new(self.ui.clone())
    }

    /// Fired by the first SIGINT or SIGTERM.
    pub fn cancel(&self) -> CancellationToken {
        self.interrupt.token()
    }

    /// Runs `work` with the live status lines ticking, and erases them when
    /// it is done, before anything is summarised.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        let ticker = self.ui.start_ticker();
        let result = work.await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        self.ui.stop_live();
        result
    }

    /// The status for a signal that arrived, if one did: whatever the work
    /// made of its cancel, the exit status says it was interrupted.
    pub fn interrupted(&self) -> Option<ExitCode> {
        self.interrupt.exit_status().map(exit::code)
    }

    /// `code`, unless a signal arrived.
    pub fn exit(&self, code: ExitCode) -> ExitCode {
        self.interrupted().unwrap_or(code)
    }

    /// Prints `Error: ` and the whole chain (masked), and gives `status`.
    pub fn fail(&self, status: u8, err: &(dyn std::error::Error + 'static)) -> ExitCode {
        self.ui
            .error_global(&format!("Error: {}", crate::error::error_chain(err)));
        exit::code(status)
    }

    /// Arguments or a template that are wrong: nothing was started. In
    /// machine-readable mode the error count follows, as Packer writes it.
    pub fn usage_error(&self, err: &(dyn std::error::Error + 'static)) -> ExitCode {
        // The values of the template's secrets are known by now, whatever
        // went wrong: the message may quote one.
        self.ui.set_redactor(redact::known());
        let code = self.fail(exit::USAGE, err);
        self.ui.machine("", &["error-count", "1"]);
        code
    }
}

/// The output of a command that only reads (`validate`, `inspect`): text
/// as it is, or records with `-machine-readable`.
pub(super) struct Report {
    /// Set in machine-readable mode.
    ui: Option<Ui>,
}

impl Report {
    /// Records on stdout with `-machine-readable`, plain text otherwise.
    pub fn new(machine_readable: bool) -> Report {
        Report {
            ui: machine_readable
                .then(|| Ui::new(Mode::Machine, false, Box::new(std::io::stdout()))),
        }
    }

    /// One message for people: a line, or a `ui,say` record.
    pub fn say(&self, text: &str) {
        match &self.ui {
            Some(ui) => ui.say_global(text),
            None => println!("{text}"),
        }
    }

    /// Already formatted text (several lines): printed as it is, or one
    /// `ui,say` record per line.
    pub fn text(&self, text: &str) {
        match &self.ui {
            Some(ui) => text.lines().for_each(|line| ui.say_global(line)),
            None => print!("{text}"),
        }
    }

    /// A warning (`Warning: ...`), masked: on stderr, or a `ui,say` record
    /// with `-machine-readable`.
    pub fn warn(&self, text: &str) {
        match &self.ui {
            Some(ui) => {
                ui.set_redactor(redact::known());
                ui.warn_global(text);
            }
            None => eprintln!("{}", redact::known().redact(&format!("Warning: {text}"))),
        }
    }

    /// A line about the work, kept off stdout (which holds the result): on
    /// stderr, or a `ui,say` record with `-machine-readable`.
    pub fn note(&self, text: &str) {
        match &self.ui {
            Some(ui) => ui.say_global(text),
            None => eprintln!("{}", crate::template::show::escape(text)),
        }
    }

    /// A record of its own type; nothing without `-machine-readable`.
    pub fn record(&self, target: &str, fields: &[&str]) {
        if let Some(ui) = &self.ui {
            ui.machine(target, fields);
        }
    }

    /// Nothing was started: the template or the arguments are wrong. The
    /// whole chain, masked, on stderr (and as records on stdout in
    /// machine-readable mode).
    pub fn usage_error(&self, err: &anyhow::Error) -> ExitCode {
        let text = redact::known().redact(&format!(
            "Error: {}",
            crate::error::error_chain(err.as_ref())
        ));
        match &self.ui {
            Some(ui) => {
                ui.set_redactor(redact::known());
                ui.error_global(&text);
                ui.machine("", &["error-count", "1"]);
            }
            None => eprintln!("{text}"),
        }
        exit::code(exit::USAGE)
    }
}
