//! `kiln test`: boot an existing image as a new instance and run checks on
//! it, the test stage of a build without the build.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::report::{Reporter, Stage};
use super::{BuildContext, BuildError, scratch_dir, test_boot};
use crate::export::FormatPolicy;
use crate::plan::{CheckSpec, Checksum, Communicator, Location, QemuConfig, SshOptions};

/// The name the test instance goes by (its hostname is `kiln-test`).
const VM_NAME: &str = "kiln";
/// How long the test instance may take to power off.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// An image to boot and the checks to run on it.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// qcow2, raw, or a GCE `disk.raw.tar.gz`.
    pub image: PathBuf,
    /// What the image's format may be taken to be; with `Detect`, a gzip
    /// file is read as a GCE tarball.
    pub format: FormatPolicy,
    /// How to boot it: the qemu builder's settings, the image as a
    /// `disk_image` source.
    pub machine: QemuConfig,
    /// The checks to run, in order.
    pub checks: Vec<CheckSpec>,
}

impl TestRequest {
    /// Packer's qemu defaults for booting `image` headless as it stands,
    /// logged into over SSH with `ssh`.
    pub fn new(image: PathBuf, ssh: SshOptions, checks: Vec<CheckSpec>) -> TestRequest {
        let machine = QemuConfig {
            iso_urls: vec![Location::Path(image.clone())],
            iso_checksum: Checksum::None,
            disk_image: true,
            headless: true,
            vm_name: VM_NAME.to_string(),
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            communicator: Communicator::Ssh(ssh),
            ..QemuConfig::for_build("test")
        };
        TestRequest {
            image,
            format: FormatPolicy::Detect,
            machine,
            checks,
        }
    }
}

/// Boots the request's image (qcow2, raw, or a GCE `disk.raw.tar.gz`) as a
/// new instance under a throw-away overlay and runs its checks. The image
/// is never written.
pub async fn test_image(
    request: &TestRequest,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> Result<Vec<crate::smoke::CheckResult>, BuildError> {
    let ctx = BuildContext::standalone("test", reporter, cancel.clone());
    let image = request.image.as_path();
    let scratch = scratch_dir("kiln-")?;
    let work = async {
        let (disk, format) =
            if request.format == FormatPolicy::Detect && crate::export::unpack::is_gzip(image) {
                ctx.stage(Stage::Source);
                ctx.say(&format!("Unpacking disk.raw from {}...", image.display()));
                let raw = scratch.path().join("disk.raw");
                let (tarball, out) = (image.to_path_buf(), raw.clone());
                tokio::task::spawn_blocking(move || {
                    crate::export::unpack::extract_disk(&tarball, &out)
                })
                .await
                .map_err(|err| BuildError::Io {
                    path: image.to_path_buf(),
                    source: std::io::Error::other(err.to_string()),
                })??;
                (raw, "raw")
            } else {
                // Checked once and then told to QEMU: a raw image is never
                // probed, and a bad backing chain never reaches it.
                let checked = crate::export::check_image(image, request.format)?;
                (checked.path, checked.format.as_str())
            };
        let serial_log = scratch.path().join("serial.log");
        test_boot::run(
            &ctx,
            &request.machine,
            &disk,
            format,
            &serial_log,
            &request.checks,
            None,
        )
        .await
    };
    let result = tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(BuildError::Cancelled),
    };
    ctx.stage(Stage::Cleanup);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_request_boots_the_image_headless_over_ssh() {
        let ssh = SshOptions {
            username: "ubuntu".into(),
            ..SshOptions::default()
        };
        let request = TestRequest::new(PathBuf::from("/images/base.qcow2"), ssh, Vec::new());
        let machine = &request.machine;
        assert_eq!(
            machine.iso_urls,
            vec![Location::Path(PathBuf::from("/images/base.qcow2"))]
        );
        assert!(machine.disk_image && machine.headless);
        assert_eq!(machine.vm_name, "kiln");
        assert_eq!(machine.iso_checksum, Checksum::None);
        assert_eq!(request.format, FormatPolicy::Detect);
        let Communicator::Ssh(ssh) = &machine.communicator else {
            panic!("no SSH: {:?}", machine.communicator)
        };
        assert_eq!(ssh.username, "ubuntu");
        assert_eq!(ssh.timeout, crate::plan::defaults::SSH_TIMEOUT);
    }
}
