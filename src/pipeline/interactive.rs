//! `-on-error=ask` and `-debug`: where a build stops to ask the person at
//! the terminal, in the words of Packer's step runner. The questions go
//! through [`Reporter::ask`](super::report::Reporter::ask); when nobody can
//! answer (no terminal), a failed build is cleaned up and a paused one goes
//! on, and the build says so.

use std::sync::{Mutex, MutexGuard};

use super::report::Stage;
use super::{BuildContext, BuildError, OnError};

/// Packer's question after a failed step that can run again.
const ASK_WITH_RETRY: &str = "[c] Clean up and exit, [a] abort without cleanup, or [r] retry step (build may fail even if retry succeeds)?";
/// The same for a step that cannot.
const ASK: &str = "[c] Clean up and exit, or [a] abort without cleanup?";

/// How a failed build ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Remove what the build made.
    CleanUp,
    /// Leave it for inspection.
    Leave,
}

/// An answer to the question after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    End(Ending),
    Retry,
}

/// One build's questions: the step it is in (to name it), and what was
/// already answered.
pub(crate) struct Interactive {
    ask: bool,
    debug: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The step under way, named in the pause and the failure question.
    current: Option<Stage>,
    /// The answer given where the failure happened (a provisioner), so the
    /// build's end does not ask again.
    answered: Option<Ending>,
    /// "Nobody can answer" is said once.
    told_unanswered: bool,
}

impl Interactive {
    /// Asks only under `-on-error=ask`; pauses only with `-debug`.
    pub(crate) fn new(on_error: OnError, debug: bool) -> Self {
        Interactive {
            ask: on_error == OnError::Ask,
            debug,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The build moves on to `stage`: under `-debug` it first pauses after
    /// the step before.
    pub(crate) async fn begin(&self, ctx: &BuildContext, stage: Stage) {
        self.next(ctx, stage).await;
        ctx.stage(stage);
    }

    /// As [`Interactive::begin`], for a stage its own code announces.
    pub(crate) async fn next(&self, ctx: &BuildContext, stage: Stage) {
        self.pause(ctx).await;
        self.state().current = Some(stage);
    }

    /// The last step is over: under `-debug`, a pause after it too.
    pub(crate) async fn end(&self, ctx: &BuildContext) {
        self.pause(ctx).await;
        self.state().current = None;
    }

    /// Under `-debug`, a pause before each provisioner, as Packer's
    /// debugged provisioners make.
    pub(crate) async fn before_provisioner(&self, ctx: &BuildContext) {
        if self.debug {
            self.wait_for_enter(
                ctx,
                "Pausing before the next provisioner. Press enter to continue.",
            )
            .await;
        }
    }

    async fn pause(&self, ctx: &BuildContext) {
        let current = self.state().current;
        let (true, Some(stage)) = (self.debug, current) else {
            return;
        };
        let question = format!(
            "Pausing after run of step '{}'. Press enter to continue.",
            stage.as_str()
        );
        self.wait_for_enter(ctx, &question).await;
    }

    async fn wait_for_enter(&self, ctx: &BuildContext, question: &str) {
        if ask(ctx, question).await.is_none() {
            self.tell_unanswered(
                ctx,
                "-debug: nobody to answer (standard input is not a terminal): not pausing",
            );
        }
    }

    /// Under `-on-error=ask`, after a step that can run again failed with
    /// `err`: whether to run it again. Any other answer is kept for
    /// [`Interactive::ending`].
    pub(crate) async fn retry(&self, ctx: &BuildContext, err: &BuildError) -> bool {
        if !self.ask || ctx.cancel.is_cancelled() {
            return false;
        }
        ctx.reporter
            .error(&ctx.name, &crate::error::error_chain(err));
        match self.ask_on_failure(ctx, true).await {
            Answer::Retry => true,
            Answer::End(ending) => {
                self.state().answered = Some(ending);
                false
            }
        }
    }

    /// How the failed build ends: as `-on-error` says, or under `ask` as
    /// the person answers. Shows the error first, unless it was shown
    /// where it happened.
    pub(crate) async fn ending(
        &self,
        ctx: &BuildContext,
        on_error: OnError,
        err: &BuildError,
    ) -> Ending {
        let answered = self.state().answered;
        if let Some(ending) = answered {
            return ending;
        }
        ctx.reporter
            .error(&ctx.name, &crate::error::error_chain(err));
        match on_error {
            OnError::Cleanup => Ending::CleanUp,
            OnError::Abort => Ending::Leave,
            // Interrupted: nobody is asked, as in Packer.
            OnError::Ask if ctx.cancel.is_cancelled() => Ending::CleanUp,
            OnError::Ask => match self.ask_on_failure(ctx, false).await {
                Answer::End(ending) => ending,
                Answer::Retry => Ending::CleanUp,
            },
        }
    }

    async fn ask_on_failure(&self, ctx: &BuildContext, retry: bool) -> Answer {
        let current = self.state().current;
        let step = current.map_or("build", Stage::as_str);
        ctx.say(&format!("Step {step:?} failed"));
        let question = if retry { ASK_WITH_RETRY } else { ASK };
        loop {
            let Some(line) = ask(ctx, question).await else {
                if !ctx.cancel.is_cancelled() {
                    self.tell_unanswered(
                        ctx,
                        "-on-error=ask: nobody to answer (standard input is not a terminal): cleaning up",
                    );
                }
                return Answer::End(Ending::CleanUp);
            };
            match choice(&line, retry) {
                Some(answer) => return answer,
                None => ctx.say(&format!("Incorrect input: {line:?}")),
            }
        }
    }

    fn tell_unanswered(&self, ctx: &BuildContext, message: &str) {
        let told = std::mem::replace(&mut self.state().told_unanswered, true);
        if !told {
            ctx.say(message);
        }
    }
}

/// As Packer reads an answer: by its first letter, and an empty line
/// means clean up.
fn choice(line: &str, retry: bool) -> Option<Answer> {
    match line.trim().to_lowercase().chars().next().unwrap_or('c') {
        'c' => Some(Answer::End(Ending::CleanUp)),
        'a' => Some(Answer::End(Ending::Leave)),
        'r' if retry => Some(Answer::Retry),
        _ => None,
    }
}

/// The reporter's answer to `question`; `None` when nobody answers or the
/// build is cancelled meanwhile.
async fn ask(ctx: &BuildContext, question: &str) -> Option<String> {
    let reporter = ctx.reporter.clone();
    let (build, question) = (ctx.name.clone(), question.to_string());
    // Reading a terminal blocks: not on the async threads.
    let answer = tokio::task::spawn_blocking(move || reporter.ask(&build, &question));
    tokio::select! {
        answer = answer => answer.ok().flatten(),
        () = ctx.cancel.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::pipeline::report::{Artifact, Progress, Reporter};

    /// Answers from a list (`None`: nobody answers), and keeps what was
    /// said and asked.
    #[derive(Default)]
    struct Person {
        answers: Mutex<VecDeque<Option<&'static str>>>,
        heard: Mutex<Vec<String>>,
    }

    impl Person {
        fn answering(answers: &[Option<&'static str>]) -> Arc<Self> {
            Arc::new(Person {
                answers: Mutex::new(answers.iter().copied().collect()),
                heard: Mutex::default(),
            })
        }

        fn heard(&self) -> Vec<String> {
            self.heard.lock().unwrap().clone()
        }

        fn hear(&self, line: String) {
            self.heard.lock().unwrap().push(line);
        }
    }

    impl Reporter for Person {
        fn stage(&self, _: &str, stage: Stage) {
            self.hear(format!("stage {}", stage.as_str()));
        }
        fn say(&self, _: &str, message: &str) {
            self.hear(format!("say {message}"));
        }
        fn output(&self, _: &str, _: &str) {}
        fn error(&self, _: &str, message: &str) {
            self.hear(format!("error {message}"));
        }
        fn artifacts(&self, _: &str, _: &[Artifact]) {}
        fn progress(&self, _: &str, _: Option<&Progress>) {}
        fn ask(&self, _: &str, question: &str) -> Option<String> {
            self.hear(format!("ask {question}"));
            let answer = self.answers.lock().unwrap().pop_front().flatten();
            answer.map(str::to_string)
        }
    }

    fn ctx(person: &Arc<Person>) -> BuildContext {
        BuildContext {
            name: "demo".into(),
            builder_type: "qemu".into(),
            reporter: person.clone(),
            cancel: CancellationToken::new(),
        }
    }

    fn failure() -> BuildError {
        BuildError::Cancelled
    }

    #[test]
    fn answers_are_read_as_packer_reads_them() {
        assert_eq!(choice("c", true), Some(Answer::End(Ending::CleanUp)));
        assert_eq!(choice("", true), Some(Answer::End(Ending::CleanUp)));
        assert_eq!(choice(" Abort", false), Some(Answer::End(Ending::Leave)));
        assert_eq!(choice("r", true), Some(Answer::Retry));
        assert_eq!(choice("r", false), None);
        assert_eq!(choice("x", true), None);
    }

    #[tokio::test]
    async fn a_failed_step_asks_and_the_answer_decides() {
        for (answer, ending) in [("c", Ending::CleanUp), ("a", Ending::Leave)] {
            let person = Person::answering(&[Some("what?"), Some(answer)]);
            let ctx = ctx(&person);
            let asking = Interactive::new(OnError::Ask, false);
            asking.begin(&ctx, Stage::Launch).await;
            assert_eq!(asking.ending(&ctx, OnError::Ask, &failure()).await, ending);
            let heard = person.heard();
            assert_eq!(heard[1], "error cancelled");
            assert_eq!(heard[2], "say Step \"launch\" failed");
            // Only a step that can run again is offered a retry.
            assert_eq!(heard[3], format!("ask {ASK}"));
            assert_eq!(heard[4], "say Incorrect input: \"what?\"");
            assert_eq!(heard[5], format!("ask {ASK}"));
            assert_eq!(heard.len(), 6, "{heard:?}");
        }
    }

    #[tokio::test]
    async fn a_provisioner_is_retried_until_it_passes_or_the_answer_ends_it() {
        let person = Person::answering(&[Some("r"), Some("a")]);
        let ctx = ctx(&person);
        let asking = Interactive::new(OnError::Ask, false);
        asking.begin(&ctx, Stage::Provision).await;
        // A provisioner that fails twice: retried after the first failure,
        // left after the second.
        let mut runs = 0;
        let result: Result<(), BuildError> = loop {
            runs += 1;
            let err = failure();
            if !asking.retry(&ctx, &err).await {
                break Err(err);
            }
        };
        assert!(result.is_err());
        assert_eq!(runs, 2);
        let retry_question = format!("ask {ASK_WITH_RETRY}");
        assert_eq!(
            person
                .heard()
                .iter()
                .filter(|l| **l == retry_question)
                .count(),
            2
        );
        // The end keeps the answer given, and shows the error no more.
        let before = person.heard().len();
        assert_eq!(
            asking.ending(&ctx, OnError::Ask, &failure()).await,
            Ending::Leave
        );
        assert_eq!(person.heard().len(), before);

        // Retried once, then it passes.
        let person = Person::answering(&[Some("r")]);
        let ctx = self::ctx(&person);
        let asking = Interactive::new(OnError::Ask, false);
        let mut runs = 0;
        let passed = loop {
            runs += 1;
            if runs == 2 {
                break true;
            }
            if !asking.retry(&ctx, &failure()).await {
                break false;
            }
        };
        assert!(passed);
        assert_eq!(runs, 2);
    }

    #[tokio::test]
    async fn nobody_to_answer_means_clean_up_and_is_said() {
        let person = Person::answering(&[None]);
        let ctx = ctx(&person);
        let asking = Interactive::new(OnError::Ask, false);
        asking.begin(&ctx, Stage::Provision).await;
        assert!(!asking.retry(&ctx, &failure()).await);
        assert_eq!(
            asking.ending(&ctx, OnError::Ask, &failure()).await,
            Ending::CleanUp
        );
        let heard = person.heard().join("\n");
        assert!(heard.contains("nobody to answer"), "{heard}");
        assert!(heard.contains("cleaning up"), "{heard}");
    }

    #[tokio::test]
    async fn other_settings_never_ask() {
        for (on_error, ending) in [
            (OnError::Cleanup, Ending::CleanUp),
            (OnError::Abort, Ending::Leave),
        ] {
            let person = Person::answering(&[Some("a")]);
            let ctx = ctx(&person);
            let asking = Interactive::new(on_error, false);
            asking.begin(&ctx, Stage::Provision).await;
            assert!(!asking.retry(&ctx, &failure()).await);
            assert_eq!(asking.ending(&ctx, on_error, &failure()).await, ending);
            assert!(
                person.heard().iter().all(|l| !l.starts_with("ask")),
                "{:?}",
                person.heard()
            );
        }
    }

    #[tokio::test]
    async fn debug_pauses_after_each_step() {
        let person = Person::answering(&[Some(""), Some(""), Some("")]);
        let ctx = ctx(&person);
        let steps = Interactive::new(OnError::Cleanup, true);
        steps.begin(&ctx, Stage::Source).await;
        steps.begin(&ctx, Stage::Disk).await;
        steps.next(&ctx, Stage::Test).await;
        steps.end(&ctx).await;
        let pause = |step: &str| {
            format!("ask Pausing after run of step '{step}'. Press enter to continue.")
        };
        assert_eq!(
            person.heard(),
            [
                "stage source".to_string(),
                pause("source"),
                "stage disk".to_string(),
                pause("disk"),
                pause("test"),
            ]
        );
        // Without -debug, no pauses.
        let person = Person::answering(&[]);
        let ctx = self::ctx(&person);
        let steps = Interactive::new(OnError::Ask, false);
        steps.begin(&ctx, Stage::Source).await;
        steps.end(&ctx).await;
        assert_eq!(person.heard(), ["stage source"]);
    }

    #[tokio::test]
    async fn debug_pauses_before_each_provisioner() {
        let person = Person::answering(&[Some(""), Some("")]);
        let ctx = ctx(&person);
        let steps = Interactive::new(OnError::Cleanup, true);
        steps.before_provisioner(&ctx).await;
        steps.before_provisioner(&ctx).await;
        let pause = "ask Pausing before the next provisioner. Press enter to continue.";
        assert_eq!(person.heard(), [pause, pause]);
        // Without -debug, none.
        let person = Person::answering(&[]);
        let steps = Interactive::new(OnError::Ask, false);
        steps.before_provisioner(&self::ctx(&person)).await;
        assert!(person.heard().is_empty());
    }

    #[tokio::test]
    async fn debug_without_a_terminal_goes_on_and_says_so_once() {
        let person = Person::answering(&[]);
        let ctx = ctx(&person);
        let steps = Interactive::new(OnError::Cleanup, true);
        steps.begin(&ctx, Stage::Source).await;
        steps.begin(&ctx, Stage::Disk).await;
        steps.end(&ctx).await;
        let said: Vec<String> = person
            .heard()
            .into_iter()
            .filter(|l| l.starts_with("say"))
            .collect();
        assert_eq!(
            said,
            ["say -debug: nobody to answer (standard input is not a terminal): not pausing"]
        );
    }

    #[tokio::test]
    async fn an_interrupted_build_is_cleaned_up_without_asking() {
        let person = Person::answering(&[Some("a")]);
        let ctx = ctx(&person);
        ctx.cancel.cancel();
        let asking = Interactive::new(OnError::Ask, false);
        assert!(!asking.retry(&ctx, &failure()).await);
        assert_eq!(
            asking.ending(&ctx, OnError::Ask, &failure()).await,
            Ending::CleanUp
        );
        assert!(person.heard().iter().all(|l| !l.starts_with("ask")));
    }
}
