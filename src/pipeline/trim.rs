//! `fstrim` before the shutdown: the guest tells the disk which blocks its
//! filesystems no longer use, and with `discard=unmap` on the build disk
//! those become holes in the image. A provisioner's deleted files then cost
//! nothing: not in the compacted disk, not in the tarball, not in the
//! upload. Best effort and bounded: it never fails the build.

use std::time::Duration;

use super::BuildContext;
use crate::plan::QemuConfig;
use crate::ssh::{ExitStatus, Guest, Stream};

/// How long the guest may take: a trim of a large, freshly written
/// filesystem under TCG takes seconds, not minutes.
const TIMEOUT: Duration = Duration::from_secs(90);

/// util-linux's `fstrim -a` trims every mounted filesystem that supports
/// it; busybox's has no `-a`, so the root filesystem is trimmed instead.
/// As root: through `sudo -n` for another user (no password to give).
const COMMAND: &str = r#"PATH="$PATH:/sbin:/usr/sbin"
if command -v fstrim >/dev/null 2>&1; then t=fstrim
elif busybox fstrim --help >/dev/null 2>&1; then t="busybox fstrim"
else echo "kiln-no-fstrim"; exit 0; fi
if [ "$(id -u)" != 0 ]; then t="sudo -n $t"; fi
$t -av 2>/dev/null || $t -v /"#;

/// Runs `fstrim` in the guest when discards reach the image; says what it
/// freed, or why it did not run.
pub async fn run(ctx: &BuildContext, config: &QemuConfig, guest: &mut Guest) {
    if config.discard() != "unmap" {
        ctx.say(&format!(
            "fstrim: skipped, the template's disk_discard is {:?}: freed blocks stay in the image",
            config.discard()
        ));
        return;
    }
    let mut lines = Vec::new();
    let trimming = async {
        let session = guest.session().await?;
        session
            .exec(COMMAND, &mut |stream, line| {
                tracing::debug!(build = %ctx.name, ?stream, "fstrim: {line}");
                if stream == Stream::Stdout {
                    lines.push(line.to_string());
                }
            })
            .await
    };
    let status = tokio::time::timeout(TIMEOUT, trimming).await;
    let message = match status {
        Err(_) => format!("fstrim: no answer within {}s; going on", TIMEOUT.as_secs()),
        Ok(Err(err)) => format!("fstrim: {err}; going on"),
        Ok(Ok(_)) if lines.iter().any(|l| l == "kiln-no-fstrim") => {
            "fstrim: not in the guest; freed blocks stay in the image".to_string()
        }
        Ok(Ok(ExitStatus::Code(0))) => summary(&lines),
        Ok(Ok(status)) => format!("fstrim: did not run ({status:?}); going on"),
    };
    ctx.say(&message);
}

/// "fstrim: trimmed 812 MiB (/: 800 MiB, /boot: 12 MiB)".
fn summary(lines: &[String]) -> String {
    let parts: Vec<(String, u64)> = lines.iter().filter_map(|l| parse(l)).collect();
    let total: u64 = parts.iter().map(|(_, bytes)| bytes).sum();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    format!(
        "fstrim: trimmed {:.0} MiB ({})",
        mib(total),
        parts
            .iter()
            .map(|(mount, bytes)| format!("{mount}: {:.0} MiB", mib(*bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One line of `fstrim -v`: util-linux's "/: 1.2 GiB (1288490188 bytes)
/// trimmed on /dev/vda1", busybox's "/: 1288490188 bytes trimmed".
fn parse(line: &str) -> Option<(String, u64)> {
    let (mount, rest) = line.split_once(": ")?;
    let before_bytes = rest.split(" bytes").next()?;
    let number = before_bytes
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|n| !n.is_empty())?;
    Some((mount.to_string(), number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fstrims_are_read() {
        assert_eq!(
            parse("/: 1.2 GiB (1288490188 bytes) trimmed on /dev/vda1"),
            Some(("/".to_string(), 1288490188))
        );
        assert_eq!(
            parse("/boot: 52428800 bytes trimmed"),
            Some(("/boot".to_string(), 52428800))
        );
        assert_eq!(parse("fstrim: /: FITRIM ioctl failed"), None);
        let lines = vec![
            "/: 200 MiB (209715200 bytes) trimmed on /dev/vda1".to_string(),
            "/boot: 1048576 bytes trimmed".to_string(),
        ];
        assert_eq!(
            summary(&lines),
            "fstrim: trimmed 201 MiB (/: 200 MiB, /boot: 1 MiB)"
        );
    }
}
