//! `kiln build TEMPLATE`: load the template, run its builds, summarise
//! them as Packer does.

use std::process::ExitCode;

use super::args::BuildArgs;
use super::session::Session;
use super::ui::Ui;
use super::{exit, first_line, load_plan, redact, warnings};
use crate::pipeline::{self, BuildOptions};

/// `kiln build`: loads the plan, runs its builds, prints the summary.
pub(super) async fn run(args: BuildArgs, machine_readable: bool) -> ExitCode {
    let session = Session::on_stdout(machine_readable, args.timestamp_ui);
    let prepared = (|| {
        let plan = load_plan(&args.template)?;
        let selection = pipeline::Selection::new(&args.template.only, &args.template.except);
        let warnings = warnings(&plan, &selection.check(&plan)?);
        if let Some(path) = &args.test_report {
            crate::smoke::report::check_path(path)?;
        }
        let options = BuildOptions {
            force: args.force,
            on_error: args.on_error,
            debug: args.debug,
            // One build at a time: the pauses of several would interleave.
            parallel: if args.debug { 1 } else { args.parallel_builds },
            selection,
            test_report: args.test_report.clone(),
            many_builds: false,
            redactor: redact::Redactor::default(),
            publish: args.publish,
            cache: args.cache,
            gce_bucket: staging_bucket(
                args.gce_bucket.as_deref(),
                std::env::var(pipeline::BUCKET_ENV).ok().as_deref(),
            ),
        };
        // Before any build starts: a build that could not publish its
        // image would have booted for nothing.
        pipeline::check_publishing(&plan, &options)?;
        anyhow::Ok((plan, options, warnings))
    })();
    let (plan, options, warnings) = match prepared {
        Ok(ready) => ready,
        // Nothing was started: the template or the arguments are wrong.
        Err(err) => return session.usage_error(err.as_ref()),
    };
    session.ui().set_redactor(redact::known());
    for warning in &warnings {
        session.ui().warn_global(warning);
    }
    if args.debug {
        session
            .ui()
            .say_global("Debug mode enabled. Builds will not be parallelized.");
    }
    let outcomes = session
        .run(pipeline::build(
            &plan,
            &options,
            session.reporter(),
            session.cancel(),
        ))
        .await;
    let code = summarize(session.ui(), &outcomes);
    session.exit(code)
}

/// `-gce-bucket`, else `KILN_GCE_BUCKET`; an empty value is none.
fn staging_bucket(flag: Option<&str>, env: Option<&str>) -> Option<String> {
    flag.or(env)
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
}

fn summarize(ui: &Ui, outcomes: &[pipeline::Outcome]) -> ExitCode {
    let failed: Vec<&pipeline::Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    for outcome in &failed {
        if let Err(err) = &outcome.result {
            ui.error_global(&format!(
                "Build '{}' errored after {}: {}",
                outcome.name,
                crate::human::duration(outcome.elapsed),
                first_line(&ui.redact(&crate::error::error_chain(err)))
            ));
        }
    }
    if !failed.is_empty() {
        ui.machine("", &["error-count", &failed.len().to_string()]);
        ui.error_global("==> Some builds didn't complete successfully and had errors:");
        for outcome in &failed {
            if let Err(err) = &outcome.result {
                ui.error_global(&format!(
                    "--> {}: {}",
                    outcome.name,
                    first_line(&ui.redact(&crate::error::error_chain(err)))
                ));
            }
        }
    }
    let artifacts: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|a| (o, a)))
        .collect();
    if !artifacts.is_empty() {
        ui.say_global("==> Builds finished. The artifacts of successful builds are:");
        // Every artifact of every build, as Packer lists them: the
        // builder's (when kept) and the post-processors'.
        for (outcome, list) in artifacts {
            for artifact in list {
                ui.say_global(&format!(
                    "--> {}: {} (in {})",
                    outcome.name,
                    artifact.description,
                    crate::human::duration(outcome.elapsed)
                ));
            }
        }
    } else if outcomes.is_empty() {
        ui.say_global("==> No builds to run.");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        exit::code(exit::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::staging_bucket;

    #[test]
    fn the_flag_wins_over_the_environment() {
        assert_eq!(
            staging_bucket(Some("flag"), Some("env")).as_deref(),
            Some("flag")
        );
        assert_eq!(staging_bucket(None, Some("env")).as_deref(), Some("env"));
        assert_eq!(staging_bucket(None, None), None);
        // An empty KILN_GCE_BUCKET is no bucket.
        assert_eq!(staging_bucket(None, Some("")), None);
    }
}
