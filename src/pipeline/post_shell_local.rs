//! The `shell-local` post-processor: the shell-local provisioner's runner,
//! on this machine, after the build; the artifact passes through.

use super::BuildContext;
use super::report::Artifact;
use crate::plan::ShellLocalConfig;

/// Runs the commands with `PACKER_BUILD_NAME` and `PACKER_BUILDER_TYPE`
/// set, their output streamed as the build's, and returns the input
/// artifact, which Packer's shell-local always keeps.
pub async fn run(
    ctx: &BuildContext,
    config: &ShellLocalConfig,
    input: &Artifact,
) -> Result<Artifact, crate::provision::ProvisionError> {
    let output = |line: &str| ctx.reporter.output(&ctx.name, line);
    let say = |line: &str| ctx.reporter.say(&ctx.name, line);
    let mut pctx = crate::provision::Context {
        build_name: &input.build_name,
        builder_type: &input.builder_type,
        guest: None,
        output: &output,
        say: &say,
        cancel: ctx.cancel.clone(),
    };
    crate::provision::run_shell_local(config, &mut pctx).await?;
    Ok(input.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pipeline::report::{Progress, Reporter, Stage};
    use crate::plan::ShellLocalSource;
    use crate::provision::ProvisionError;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl Reporter for Lines {
        fn stage(&self, _: &str, _: Stage) {}
        fn say(&self, _: &str, _: &str) {}
        fn output(&self, build: &str, line: &str) {
            self.0.lock().unwrap().push(format!("{build}: {line}"));
        }
        fn error(&self, _: &str, _: &str) {}
        fn artifacts(&self, _: &str, _: &[Artifact]) {}
        fn progress(&self, _: &str, _: Option<&Progress>) {}
    }

    fn config(lines: &[&str]) -> ShellLocalConfig {
        ShellLocalConfig {
            source: ShellLocalSource::Inline(lines.iter().map(|l| l.to_string()).collect()),
            environment: vec![("GREETING".into(), "hi there".into())],
            execute_command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "{{.Vars}} {{.Script}}".into(),
            ],
            inline_shebang: "/bin/sh -e".into(),
            valid_exit_codes: vec![0],
            only_on: Vec::new(),
        }
    }

    fn artifact() -> Artifact {
        Artifact {
            build_name: "web".into(),
            builder_type: "qemu".into(),
            builder_id: crate::pipeline::report::QEMU_BUILDER_ID.into(),
            id: None,
            files: vec!["out/disk.qcow2".into()],
            description: "VM files in directory: out".into(),
        }
    }

    #[tokio::test]
    async fn the_commands_see_the_build_and_the_artifact_passes_through() {
        let lines = Arc::new(Lines::default());
        let ctx = BuildContext::standalone("web", lines.clone(), Default::default());
        let out = run(
            &ctx,
            &config(&["echo \"$GREETING $PACKER_BUILD_NAME $PACKER_BUILDER_TYPE\""]),
            &artifact(),
        )
        .await
        .unwrap();
        assert_eq!(out.files, artifact().files);
        assert_eq!(out.builder_id, artifact().builder_id);
        assert_eq!(*lines.0.lock().unwrap(), ["web: hi there web qemu"]);
    }

    #[tokio::test]
    async fn a_failing_command_fails_with_its_code() {
        let ctx = BuildContext::standalone("web", Arc::new(Lines::default()), Default::default());
        let err = run(&ctx, &config(&["exit 4"]), &artifact())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProvisionError::ExitCode { code: 4, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn only_on_another_os_skips_it() {
        let ctx = BuildContext::standalone("web", Arc::new(Lines::default()), Default::default());
        let config = ShellLocalConfig {
            only_on: vec!["windows".into()],
            ..config(&["exit 4"])
        };
        assert!(run(&ctx, &config, &artifact()).await.is_ok());
    }
}
