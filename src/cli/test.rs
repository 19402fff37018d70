//! `kiln test IMAGE --tests checks.json`: smoke-test any image.

use std::process::ExitCode;

use super::args::TestArgs;
use super::exit;
use super::session::Session;
use crate::export::FormatPolicy;
use crate::pipeline::{self, TestRequest};
use crate::plan::{Accelerator, SshOptions, defaults};

pub(super) async fn run(args: TestArgs, machine_readable: bool) -> ExitCode {
    let session = Session::on_stdout(machine_readable, args.timestamp_ui);
    let request = match request(&args) {
        Ok(request) => request,
        // Nothing was booted: the arguments or the checks are wrong.
        Err(err) => return session.usage_error(err.as_ref()),
    };
    let result = session
        .run(pipeline::test_image(
            &request,
            session.reporter(),
            session.cancel(),
        ))
        .await;
    if let Some(code) = session.interrupted() {
        return code;
    }
    let ui = session.ui();
    let results = match result {
        Ok(results) => results,
        // The image did not boot, could not be reached, or was lost
        // before the checks were through: there is no verdict on it.
        Err(err) => {
            ui.error_global(&format!(
                "Error: testing {}: {}",
                args.image.display(),
                crate::error::error_chain(&err)
            ));
            if let Some((tried, default_user)) = err.wrong_user() {
                ui.error_global(&ssh_username_hint(tried, default_user));
            }
            return exit::code(exit::TEST_NOT_RUN);
        }
    };
    if let Some(path) = &args.test_report {
        let suite = args
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kiln".into());
        if let Err(err) = crate::smoke::report::write(path, &suite, &results) {
            return session.fail(exit::FAILURE, &err);
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed == 0 {
        ui.say_global(&format!("==> All {} check(s) passed.", results.len()));
        ExitCode::SUCCESS
    } else {
        ui.error_global(&format!(
            "==> {failed} of {} check(s) failed.",
            results.len()
        ));
        exit::code(exit::FAILURE)
    }
}

/// `kiln test` logs in as root unless told otherwise, which cloud images
/// refuse: say how to pick the user.
fn ssh_username_hint(tried: &str, default_user: Option<&str>) -> String {
    match default_user {
        Some(user) if user != tried => format!(
            "kiln test logged in as {tried} (--ssh-username, default root); this image's default user is {user}: try --ssh-username {user}"
        ),
        _ => format!(
            "kiln test logged in as {tried} (--ssh-username, default root); pass --ssh-username with the image's default user"
        ),
    }
}

/// Everything that can be wrong before a boot: the image, the checks, the
/// report name, the settings.
fn request(args: &TestArgs) -> anyhow::Result<TestRequest> {
    if let Some(path) = &args.test_report {
        crate::smoke::report::check_path(path)?;
    }
    let checks = crate::template::load_checks(&args.tests)?;
    if checks.is_empty() {
        anyhow::bail!("{} holds no checks", args.tests.display());
    }
    let format = FormatPolicy::from_flag(args.disk_format);
    // A tarball is unpacked and its disk.raw read as raw; anything else
    // must be a disk kiln may boot as it stands.
    if args.disk_format.is_some() || !crate::export::unpack::is_gzip(&args.image) {
        crate::export::check_image(&args.image, format)?;
    }
    let ssh = SshOptions {
        username: non_empty("--ssh-username", &args.ssh_username)?.to_string(),
        private_key_file: match &args.ssh_private_key_file {
            Some(path) if !path.is_file() => {
                anyhow::bail!("--ssh-private-key-file: file not found: {}", path.display())
            }
            Some(path) => Some(std::path::absolute(path)?),
            None => None,
        },
        timeout: crate::template::parse_duration(&args.ssh_timeout)
            .map_err(|err| anyhow::anyhow!("--ssh-timeout {:?}: {err}", args.ssh_timeout))?,
        ..SshOptions::default()
    };
    let mut request = TestRequest::new(std::path::absolute(&args.image)?, ssh, checks);
    request.format = format;
    let machine = &mut request.machine;
    machine.accelerator = args
        .accelerator
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(accelerator)
        .transpose()?;
    // As a template's builder: Packer quietly takes its defaults for values
    // below these floors.
    machine.memory_mib = Some(args.memory)
        .filter(|mib| *mib >= defaults::MEMORY_FLOOR_MIB)
        .unwrap_or(defaults::MEMORY_MIB);
    machine.cpus = args.cpus.max(1);
    Ok(request)
}

fn non_empty<'a>(flag: &str, value: &'a str) -> anyhow::Result<&'a str> {
    if value.is_empty() {
        anyhow::bail!("{flag}: must not be empty");
    }
    Ok(value)
}

/// `--accelerator`: as a template's `accelerator`, an empty value picks
/// automatically.
fn accelerator(text: &str) -> anyhow::Result<Accelerator> {
    match text {
        "kvm" => Ok(Accelerator::Kvm),
        "tcg" => Ok(Accelerator::Tcg),
        "none" => Ok(Accelerator::None),
        other => anyhow::bail!("--accelerator {other:?}: expected kvm, tcg or none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Communicator;

    /// The arguments, and the directory that holds their files.
    fn args(extra: &[&str]) -> (tempfile::TempDir, TestArgs) {
        let dir = tempfile::tempdir().unwrap();
        let checks = dir.path().join("checks.json");
        std::fs::write(&checks, r#"{"tests": [{"name": "up", "command": "true"}]}"#).unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let mut argv = vec![
            "kiln".to_string(),
            "test".into(),
            "--tests".into(),
            checks.display().to_string(),
            "--disk-format".into(),
            "raw".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.push(image.display().to_string());
        let cli = super::super::args::Cli::parse_with_positions(
            argv.into_iter().map(Into::into).collect(),
        )
        .unwrap();
        match cli.command {
            super::super::args::Command::Test(args) => (dir, args),
            other => panic!("not a test: {other:?}"),
        }
    }

    #[test]
    fn the_flags_become_a_typed_request() {
        let (_dir, args) = args(&[
            "--ssh-username",
            "ubuntu",
            "--ssh-timeout",
            "90s",
            "--accelerator",
            "tcg",
            "--memory",
            "2048",
            "--cpus",
            "2",
        ]);
        let request = request(&args).unwrap();
        let machine = &request.machine;
        assert_eq!(machine.accelerator, Some(Accelerator::Tcg));
        assert_eq!((machine.memory_mib, machine.cpus), (2048, 2));
        assert!(matches!(&machine.iso_urls[0], crate::plan::Location::Path(p) if p.is_absolute()));
        let Communicator::Ssh(ssh) = &machine.communicator else {
            panic!("no SSH")
        };
        assert_eq!(ssh.username, "ubuntu");
        assert_eq!(ssh.timeout, std::time::Duration::from_secs(90));
        assert_eq!(request.checks.len(), 1);
        assert_eq!(
            request.format,
            FormatPolicy::from_flag(Some(crate::export::ImageFormat::Raw))
        );
    }

    #[test]
    fn bad_settings_are_named() {
        for (extra, expected) in [
            (&["--accelerator", "xen"][..], "--accelerator \"xen\""),
            (&["--ssh-timeout", "soon"][..], "--ssh-timeout \"soon\""),
            (&["--ssh-username", ""][..], "--ssh-username"),
            (
                &["--ssh-private-key-file", "/no/such/key"][..],
                "/no/such/key",
            ),
        ] {
            let (_dir, args) = args(extra);
            let err = request(&args).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra:?}: {err}");
        }
    }

    #[test]
    fn packers_floors_apply() {
        let (_dir, args) = args(&["--memory", "4", "--cpus", "0"]);
        let request = request(&args).unwrap();
        assert_eq!(request.machine.memory_mib, defaults::MEMORY_MIB);
        assert_eq!(request.machine.cpus, 1);
    }
}
