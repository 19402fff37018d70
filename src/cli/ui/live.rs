//! The live part of the TTY mode, drawn by indicatif: one line per running
//! build with its stage and how long it has run, and a bar while a long
//! transfer goes on. Lines for people are written with the bars cleared
//! first, so nothing is torn, and every bar line fits the terminal's width.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::pipeline::report::{Progress, Stage};
use crate::redact::Redactor;

/// The width used when the terminal does not tell its own.
const FALLBACK_WIDTH: u16 = 80;
/// A bar narrower than this says little: the words around it go first.
const MIN_BAR_CELLS: usize = 10;
/// Redraws a second at most; indicatif drops the ones in between.
const REFRESH_HZ: u8 = 10;
/// The bar's length: the share done, in thousandths.
const BAR_STEPS: u64 = 1000;

/// What the Ui writes to: stdout, or a buffer in tests.
pub(super) type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// Runs `f` on the writer; a lock poisoned by a panic mid-print still
/// holds a usable writer.
pub(super) fn with_out<R>(out: &Out, f: impl FnOnce(&mut dyn Write) -> R) -> R {
    let mut guard = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.as_mut())
}

/// A terminal that writes its escapes to the Ui's output and takes its size
/// from the terminal on stdout.
#[derive(Clone)]
pub(super) struct OutTerm {
    out: Out,
}

impl OutTerm {
    /// A terminal on `out`, for indicatif to draw on.
    pub(super) fn new(out: Out) -> Self {
        OutTerm { out }
    }

    fn write(&self, text: &str) -> std::io::Result<()> {
        with_out(&self.out, |out| out.write_all(text.as_bytes()))
    }

    fn cursor(&self, n: usize, code: char) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}{code}"))
    }
}

impl std::fmt::Debug for OutTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutTerm")
    }
}

impl TermLike for OutTerm {
    fn width(&self) -> u16 {
        // Asked at every draw: a resized terminal is drawn to its new width.
        match console::Term::stdout().size_checked() {
            Some((_, width)) if width > 0 => width,
            _ => FALLBACK_WIDTH,
        }
    }

    fn height(&self) -> u16 {
        match console::Term::stdout().size_checked() {
            Some((height, _)) if height > 0 => height,
            _ => 24,
        }
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(s)?;
        self.write("\n")
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        with_out(&self.out, |out| out.flush())
    }
}

/// Lends one terminal to indicatif while [`Live`] keeps asking its width.
#[derive(Debug, Clone)]
struct SharedTerm(Arc<dyn TermLike>);

impl TermLike for SharedTerm {
    fn width(&self) -> u16 {
        self.0.width()
    }
    fn height(&self) -> u16 {
        self.0.height()
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

struct BuildLine {
    name: String,
    bar: ProgressBar,
    stage: Option<Stage>,
    started: Instant,
    stage_started: Instant,
    progress: Option<Progress>,
    /// When the bar last took a progress report.
    progress_shown: Option<Instant>,
    /// The words before and after the bar: read by the bar's template as
    /// it draws, so one draw shows them and the bar together.
    words: Words,
    /// The template with the bar, reading `words`.
    bar_style: ProgressStyle,
    /// Whether the bar is drawn with the progress template now.
    with_bar: bool,
}

type Words = Arc<Mutex<(String, String)>>;

/// `{before} [{wide_bar}] {after}`, with the words taken from `words`.
fn bar_style(words: &Words) -> ProgressStyle {
    let word = |second: bool| {
        let words = words.clone();
        move |_: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
            let words = words
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = out.write_str(if second { &words.1 } else { &words.0 });
        }
    };
    ProgressStyle::with_template("{before} [{wide_bar}] {after}")
        .expect("a fixed template that parses")
        .with_key("before", word(false))
        .with_key("after", word(true))
        .progress_chars("#-")
}

/// The status lines of the builds that are running.
pub(super) struct Live {
    multi: MultiProgress,
    term: SharedTerm,
    builds: Vec<BuildLine>,
    /// A whole line of text, cut to the width.
    text_style: ProgressStyle,
    bold: bool,
}

impl Live {
    /// Draws on `term`; names in bold when `bold`.
    pub(super) fn new(term: Arc<dyn TermLike>, bold: bool) -> Self {
        let term = SharedTerm(term);
        let multi = MultiProgress::with_draw_target(draw_target(&term));
        Live {
            multi,
            term,
            builds: Vec::new(),
            text_style: ProgressStyle::with_template("{wide_msg}")
                .expect("a fixed template that parses"),
            bold,
        }
    }

    /// Runs `f` (which writes lines) with the bars cleared, then draws them
    /// again below what it wrote.
    pub(super) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    /// Takes the bars off the screen and stops drawing them (while a
    /// question waits for its answer on that screen).
    pub(super) fn hide(&self) {
        let _ = self.multi.clear();
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
    }

    /// Draws the bars again after [`Live::hide`], up to date: they were
    /// not kept so while hidden.
    pub(super) fn show(&mut self, now: Instant, redactor: &Redactor) {
        self.multi.set_draw_target(draw_target(&self.term));
        self.redraw(now, redactor);
        self.multi.suspend(|| ());
    }

    /// Takes every bar off the screen for good.
    pub(super) fn clear(&mut self) {
        for build in self.builds.drain(..) {
            build.bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    /// `build` entered `stage` at `now`: its line shows the stage and how
    /// long it has run.
    pub(super) fn stage(&mut self, build: &str, stage: Stage, now: Instant, redactor: &Redactor) {
        let line = self.line_of(build, now);
        line.stage = Some(stage);
        line.stage_started = now;
        self.redraw(now, redactor);
    }

    /// The build is over: its line goes.
    pub(super) fn finish(&mut self, build: &str) {
        if let Some(index) = self.builds.iter().position(|b| b.name == build) {
            self.builds.remove(index).bar.finish_and_clear();
        }
    }

    /// A progress report; redraws at most every `every`.
    pub(super) fn progress(
        &mut self,
        build: &str,
        progress: Option<&Progress>,
        every: Duration,
        now: Instant,
        redactor: &Redactor,
    ) {
        let line = self.line_of(build, now);
        match progress {
            Some(progress) => {
                line.progress = Some(progress.clone());
                let due = line.progress_shown.is_none_or(|at| now - at >= every);
                if !due {
                    return;
                }
                line.progress_shown = Some(now);
            }
            None => {
                line.progress = None;
                line.progress_shown = None;
            }
        }
        self.redraw(now, redactor);
    }

    /// Brings every line up to date (the clocks on them move on).
    pub(super) fn redraw(&mut self, now: Instant, redactor: &Redactor) {
        let width = usize::from(self.term.width());
        for line in &mut self.builds {
            // Build names come from the template, and may hold a variable.
            let name = redactor.redact(&line.name);
            let name = if self.bold {
                format!("\x1b[1m{name}\x1b[0m")
            } else {
                name
            };
            match layout(line, &name, now, width) {
                // Each change is drawn at once: the style and the words are
                // set first, then one call draws them together.
                Layout::Text(text) => {
                    if line.with_bar {
                        line.bar.set_style(self.text_style.clone());
                        line.with_bar = false;
                    }
                    line.bar.set_message(text);
                }
                Layout::Bar {
                    before,
                    after,
                    fraction,
                } => {
                    *line
                        .words
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = (before, after);
                    if !line.with_bar {
                        line.bar.set_style(line.bar_style.clone());
                        line.with_bar = true;
                    }
                    line.bar.set_position((fraction * BAR_STEPS as f64) as u64);
                    line.bar.tick();
                }
            }
        }
    }

    fn line_of(&mut self, build: &str, now: Instant) -> &mut BuildLine {
        let index = match self.builds.iter().position(|b| b.name == build) {
            Some(index) => index,
            None => {
                let bar = self.multi.add(ProgressBar::new(BAR_STEPS));
                bar.set_style(self.text_style.clone());
                let words = Words::default();
                self.builds.push(BuildLine {
                    bar_style: bar_style(&words),
                    words,
                    name: build.to_string(),
                    bar,
                    stage: None,
                    started: now,
                    stage_started: now,
                    progress: None,
                    progress_shown: None,
                    with_bar: false,
                });
                self.builds.len() - 1
            }
        };
        &mut self.builds[index]
    }
}

fn draw_target(term: &SharedTerm) -> ProgressDrawTarget {
    ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), REFRESH_HZ)
}

/// What one build's line shows.
#[derive(Debug, PartialEq)]
enum Layout {
    /// Text alone (indicatif cuts it to the width).
    Text(String),
    /// `before [####----] after`, the bar taking the room the words leave.
    Bar {
        before: String,
        after: String,
        fraction: f64,
    },
}

/// `name  stage 0:12  (total 3:04)`, or with a transfer under way
/// `name  post 0:12  Uploading [####------]  42%  612 MiB  38.2 MiB/s  0:51 left`,
/// with the least useful words left out until the line fits `width`.
fn layout(line: &BuildLine, name: &str, now: Instant, width: usize) -> Layout {
    let total = format_elapsed(now - line.started);
    let Some(progress) = &line.progress else {
        return Layout::Text(match line.stage {
            Some(stage) => format!(
                "{name}  {:<10} {:>6}  (total {total})",
                stage.as_str(),
                format_elapsed(now - line.stage_started),
            ),
            // Not a build (`kiln export`): no stages to show.
            None => format!("{name}  {total}"),
        });
    };
    // Beside a bar, room is short: no padding, no total.
    let stage = match line.stage {
        Some(stage) => format!(
            "{name}  {} {}",
            stage.as_str(),
            format_elapsed(now - line.stage_started)
        ),
        None => format!("{name}  {total}"),
    };
    let bytes = crate::human::bytes(progress.bytes);
    let rate = format!("{:.1} MiB/s", progress.bytes_per_sec / f64::from(1 << 20));
    let Some(fraction) = progress.fraction else {
        // No total yet: no bar to fill.
        return Layout::Text(format!("{stage}  {}  {bytes}  {rate}", progress.action));
    };
    // Rounded down, as the bar is: 100% only when all is done.
    let percent = format!("{:>3}%", (fraction * 100.0) as u32);
    let eta = progress
        .eta
        .map(|eta| format!("{} left", format_elapsed(eta)));
    let with_action = format!("{stage}  {}", progress.action);
    // From the fullest to the barest: the rate goes first, then the time
    // left, the action, and the byte count.
    let candidates: [(&str, Vec<&str>); 5] = [
        (&with_action, vec![&percent, &bytes, &rate]),
        (&with_action, vec![&percent, &bytes]),
        (&stage, vec![&percent, &bytes]),
        (&stage, vec![&percent]),
        (name, vec![&percent]),
    ];
    for (before, mut after) in candidates {
        if let Some(eta) = &eta
            && after.len() > 1
        {
            after.push(eta);
        }
        let after = after.join("  ");
        // `before [bar] after`: two spaces and the brackets around the bar.
        let fixed = console::measure_text_width(before) + console::measure_text_width(&after) + 4;
        if fixed + MIN_BAR_CELLS <= width {
            return Layout::Bar {
                before: before.to_string(),
                after,
                fraction,
            };
        }
    }
    // Narrower than a name and a bar: words only, cut to the width.
    Layout::Text(format!("{name} {percent}"))
}

fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::upload;

    /// A terminal of a set width that keeps each piece of text written.
    #[derive(Debug, Default)]
    struct Recorder {
        writes: Mutex<Vec<String>>,
    }

    impl Recorder {
        /// The lines drawn: what was written between cursor moves, less
        /// the spaces that pad a line to the width.
        fn lines(&self) -> Vec<String> {
            self.writes
                .lock()
                .unwrap()
                .iter()
                .filter(|w| !w.trim().is_empty())
                .cloned()
                .collect()
        }
    }

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.writes.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(stage: Stage, progress: Option<Progress>, now: Instant) -> BuildLine {
        BuildLine {
            name: String::new(),
            bar: ProgressBar::hidden(),
            stage: Some(stage),
            started: now - Duration::from_secs(754),
            stage_started: now - Duration::from_secs(62),
            progress,
            progress_shown: None,
            words: Words::default(),
            bar_style: ProgressStyle::default_bar(),
            with_bar: false,
        }
    }

    #[test]
    fn an_upload_line_fits_80_columns_and_drops_words_as_it_narrows() {
        let now = Instant::now();
        let build = line(Stage::Post, Some(upload(0.42)), now);
        let name = "debian-12-cloud";
        let mut seen = Vec::new();
        for width in [200, 100, 80, 60, 45, 30, 20] {
            let layout = layout(&build, name, now, width);
            let drawn = match &layout {
                Layout::Bar { before, after, .. } => {
                    // What indicatif draws: the bar takes the room left.
                    let used = before.len() + after.len() + 4;
                    assert!(used + MIN_BAR_CELLS <= width, "{width}: {layout:?}");
                    format!("{before} [{}] {after}", "#".repeat(width - used))
                }
                Layout::Text(text) => text.clone(),
            };
            assert!(drawn.len() <= width, "{width}: {drawn}");
            seen.push(drawn);
        }
        let full = "debian-12-cloud  post 1:02  Uploading";
        let rest = "  42%  600 MiB  40.0 MiB/s  1:15 left";
        assert_eq!(seen[0], format!("{full} [{}]{rest}", "#".repeat(200 - 77)));
        assert!(
            seen[1].starts_with(full) && seen[1].ends_with(rest),
            "{}",
            seen[1]
        );
        // 80 columns: the rate goes first.
        assert!(seen[2].starts_with(full), "{}", seen[2]);
        assert!(
            seen[2].ends_with("]  42%  600 MiB  1:15 left"),
            "{}",
            seen[2]
        );
        for narrow in &seen[3..5] {
            assert!(
                narrow.starts_with("debian-12-cloud  post 1:02 ["),
                "{narrow}"
            );
            assert!(narrow.ends_with("]  42%"), "{narrow}");
        }
        assert_eq!(seen[5], "debian-12-cloud  42%");
        assert_eq!(seen[6], "debian-12-cloud  42%");
    }

    #[test]
    fn drawn_lines_stay_within_the_width_and_show_stage_and_progress() {
        let recorder = Arc::new(Recorder::default());
        let mut live = Live::new(recorder.clone(), true);
        let redactor = Redactor::new(&["s3cret".into()]);
        let now = Instant::now();
        let long = format!("a-build-name-that-is-long-{}", "x".repeat(70));
        live.stage("vm-s3cret", Stage::Connect, now, &redactor);
        live.stage("b", Stage::Provision, now, &redactor);
        live.stage(&long, Stage::Provision, now, &redactor);
        live.progress(
            "vm-s3cret",
            Some(&upload(0.5)),
            Duration::ZERO,
            now,
            &redactor,
        );
        live.suspend(|| ());
        let lines = recorder.lines();
        for line in &lines {
            assert!(console::measure_text_width(line) <= 80, "{line:?}");
            assert!(!line.contains("s3cret"), "{line:?}");
        }
        // Too long a line is cut to the width.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("\x1b[1ma-build-name-that-is-long-xxx")
                    && console::measure_text_width(l) == 80)
        );
        let text = lines.join("\n");
        assert!(text.contains("\x1b[1mb\x1b[0m  provision"), "{text}");
        assert!(
            text.contains("\x1b[1mvm-<sensitive>\x1b[0m  connect"),
            "{text}"
        );
        assert!(text.contains("]  50%  600 MiB  1:15 left"), "{text}");
        assert!(text.contains("Uploading [#####"), "{text}");
        // Nearly done is not done.
        live.progress(
            "vm-s3cret",
            Some(&upload(0.999)),
            Duration::ZERO,
            now,
            &redactor,
        );
        live.suspend(|| ());
        let last = recorder.lines().join("\n");
        assert!(last.contains("-]  99%"), "{last}");
        // Over: the bar goes from the line.
        recorder.writes.lock().unwrap().clear();
        live.progress("vm-s3cret", None, Duration::ZERO, now, &redactor);
        live.suspend(|| ());
        let after = recorder.lines().join("\n");
        assert!(after.contains("connect"), "{after}");
        assert!(!after.contains("Uploading"), "{after}");
    }

    #[test]
    fn hidden_bars_are_not_drawn_until_shown_again() {
        let recorder = Arc::new(Recorder::default());
        let mut live = Live::new(recorder.clone(), false);
        let redactor = Redactor::default();
        let now = Instant::now();
        live.stage("a", Stage::Provision, now, &redactor);
        live.hide();
        recorder.writes.lock().unwrap().clear();
        live.stage("a", Stage::Shutdown, now, &redactor);
        live.suspend(|| ());
        assert!(recorder.lines().is_empty(), "{:?}", recorder.lines());
        live.show(now, &redactor);
        assert!(recorder.lines().join("").contains("shutdown"));
        live.finish("a");
        recorder.writes.lock().unwrap().clear();
        live.suspend(|| ());
        assert!(recorder.lines().is_empty(), "{:?}", recorder.lines());
    }
}
