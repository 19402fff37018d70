//! Warm boots: the running machine saved to files (its disk frozen under a
//! new overlay, its memory and devices in a QEMU migration stream) and a
//! later QEMU started from them instead of booting the guest again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Machine, MachineError};
use crate::pipeline::BuildContext;
use crate::plan::Communicator;
use crate::ssh::{Auth, Guest};

/// How long a saved state may take to write or to load: a stopped guest's
/// memory is written once, at disk speed.
const MIGRATION_BOUND: Duration = Duration::from_secs(300);
/// A restored guest is already up: if its SSH server does not answer in
/// this time, a cold boot is the quicker way.
const RESTORE_SSH_BOUND: Duration = Duration::from_secs(60);
/// Bytes of host randomness mixed into the restored guest's pool, which
/// would otherwise hand out what every other restore of the same state
/// hands out.
const ENTROPY_BYTES: usize = 64;
/// What the guest fix-up prints when it got through.
const FIXED: &str = "kiln-restored";

/// The credentials a saved machine was booted with, for a restore of it:
/// the guest knows only this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptKey {
    /// The OpenSSH private key (kiln's generated key, mode 0600).
    pub private_key: PathBuf,
    /// The seed's `instance-id`, which names cloud-init's copy of the seed
    /// in the guest (removed with the key before shutdown).
    pub instance_id: String,
    /// kiln's `metadata.google.internal` line was in the guest's
    /// `/etc/hosts` when it was saved (a `googlecompute` build): it must
    /// come out before shutdown.
    pub hosts_line: bool,
}

impl Machine {
    /// The key kiln generated for this machine and gave it through its
    /// seed, to keep with a checkpoint; `None` when the template brings its
    /// own credentials (a restore then uses them again).
    pub fn kept_key(&self) -> Option<KeptKey> {
        let key = self.build_key.as_ref()?;
        match &self.ssh.as_ref()?.auth {
            Auth::KeyFile(path) => Some(KeptKey {
                private_key: path.clone(),
                instance_id: key.instance_id.clone(),
                hosts_line: self.hosts_line,
            }),
            _ => None,
        }
    }

    /// Saves the running machine, at rest between provisioners: its memory
    /// and device state go to `state_path` (a new file) and its disk's top
    /// image is frozen. From then on the guest writes to `next_overlay`, a
    /// new qcow2 image on top of the frozen one (its backing file recorded
    /// as the frozen image's path, as given), and runs on as before.
    /// The frozen image and `state_path` together are the machine at that
    /// instant, for [`Machine::restore`].
    /// On error the guest runs on (on its disk as before, or already on
    /// `next_overlay`), and neither file is a usable checkpoint.
    pub async fn checkpoint(
        &mut self,
        ctx: &BuildContext,
        state_path: &Path,
        next_overlay: &Path,
    ) -> Result<(), MachineError> {
        let Some(qmp) = self.qmp.clone() else {
            return Err(MachineError::Qemu(crate::qemu::QemuError::other(
                "QEMU is not running",
            )));
        };
        let disk = self.spec.disks[0].clone();
        let top_path = disk.path.clone();
        let started = Instant::now();
        let top = qmp.top_image(&top_path).await.map_err(MachineError::Qemu)?;
        make_overlay(&top_path, &top.format, top.virtual_size, next_overlay).await?;
        self.checkpoints += 1;
        let node = format!("kiln-top-{}", self.checkpoints);
        // Stopped, the guest cannot write between the state and the disk:
        // they describe the same instant.
        qmp.stop().await.map_err(MachineError::Qemu)?;
        let saved = async {
            qmp.migrate_to_file(state_path, MIGRATION_BOUND).await?;
            qmp.add_overlay(&node, next_overlay, &disk).await?;
            qmp.snapshot(&top.node, &node).await
        }
        .await;
        // Whatever happened, the build goes on with a running guest.
        let resumed = qmp.cont().await;
        saved.map_err(MachineError::Qemu)?;
        resumed.map_err(MachineError::Qemu)?;
        let top = &mut self.spec.disks[0];
        top.path = next_overlay.to_path_buf();
        top.format = "qcow2".to_string();
        let size = std::fs::metadata(state_path).map(|m| m.len()).unwrap_or(0);
        ctx.say(&format!(
            "Saved the machine in {:.1}s ({}), the disk frozen at {}",
            started.elapsed().as_secs_f64(),
            crate::human::bytes(size),
            top_path.display()
        ));
        Ok(())
    }

    /// Starts the machine from `state_path` (written by
    /// [`Machine::checkpoint`]) instead of booting it: this machine must be
    /// prepared with [`Machine::prepare_warm`] on a new overlay of the
    /// image frozen with that state. Once SSH answers, the guest's clock is
    /// set from the host's, its entropy pool reseeded and its DHCP lease
    /// renewed (best effort). Any failure ends in
    /// [`MachineError::RestoreFailed`], with QEMU gone: the caller then
    /// boots cold.
    pub async fn restore(
        &mut self,
        ctx: &BuildContext,
        state_path: &Path,
    ) -> Result<Guest, MachineError> {
        let started = Instant::now();
        match self.restore_inner(ctx, state_path).await {
            Ok(guest) => {
                ctx.say(&format!(
                    "Restored the saved machine in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                Ok(guest)
            }
            Err(why) => {
                if let Some(mut process) = self.process.take() {
                    process.kill();
                }
                self.qmp = None;
                Err(MachineError::RestoreFailed { why })
            }
        }
    }

    async fn restore_inner(
        &mut self,
        ctx: &BuildContext,
        state_path: &Path,
    ) -> Result<Guest, String> {
        if self.gce && self.build_key.is_none() {
            return Err(GCE_REFUSED.to_string());
        }
        if !matches!(self.config.communicator, Communicator::Ssh(_)) {
            return Err("the build has no SSH communicator".to_string());
        }
        let state = std::fs::metadata(state_path)
            .map_err(|err| format!("{}: {err}", state_path.display()))?;
        if !state.is_file() || state.len() == 0 {
            return Err(format!("{} is not a saved state", state_path.display()));
        }
        self.launch_as(ctx, true).await.map_err(|err| chain(&err))?;
        let (Some(qmp), Some(process)) = (self.qmp.clone(), self.process.as_mut()) else {
            return Err("QEMU is not running".to_string());
        };
        let loaded = tokio::select! {
            loaded = qmp.migrate_from_file(state_path, MIGRATION_BOUND) => loaded.map_err(|e| e.to_string()),
            exit = process.exited() => Err(format!("QEMU exited {}", exit.status)),
        };
        if let Err(why) = loaded {
            // QEMU refuses a bad stream by exiting: its last words say why.
            let said = match tokio::time::timeout(super::LOST_GRACE, process.exited()).await {
                Ok(exit) if !exit.stderr.is_empty() => {
                    format!("; QEMU said: {}", exit.stderr.replace('\n', "; "))
                }
                _ => String::new(),
            };
            return Err(format!("loading the saved state: {why}{said}"));
        }
        // The state was saved with the guest stopped, so it loads paused.
        if qmp.run_state().await.map_err(|e| e.to_string())? != "running" {
            qmp.cont().await.map_err(|e| e.to_string())?;
        }
        let ssh = self.ssh.as_mut().ok_or("no SSH login")?;
        let timeout = ssh.timeout;
        ssh.timeout = timeout.min(RESTORE_SSH_BOUND);
        let connected = self.connect(ctx).await;
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.timeout = timeout;
        }
        let mut guest = connected.map_err(|err| chain(&err))?;
        if let Err(why) = fix_guest(ctx, &mut guest).await {
            guest.close().await;
            return Err(why);
        }
        Ok(guest)
    }
}

/// Why a `googlecompute` build without kiln's key is not restored: nothing
/// says whether kiln's `/etc/hosts` line is in the saved guest.
const GCE_REFUSED: &str = "a googlecompute build that brings its own SSH credentials is not restored (kiln cannot tell whether its /etc/hosts line is in the saved guest)";

/// The overlay the guest writes to after a checkpoint, its backing file
/// the frozen image's path exactly as given (`-u`: the image is open in
/// QEMU and need not be read).
async fn make_overlay(
    backing: &Path,
    backing_format: &str,
    virtual_size: u64,
    overlay: &Path,
) -> Result<(), MachineError> {
    let output = tokio::process::Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            backing_format,
            "-u",
            "-b",
        ])
        .arg(backing)
        .arg(overlay)
        .arg(virtual_size.to_string())
        .output()
        .await
        .map_err(|err| {
            MachineError::Qemu(crate::qemu::QemuError::Io {
                context: "running qemu-img".to_string(),
                source: err,
            })
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(MachineError::Qemu(crate::qemu::QemuError::other(format!(
            "qemu-img could not create {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))))
    }
}

/// Sets right in the restored guest what the saved state got wrong: the
/// clock (it stood still while the state lay in a file), the entropy pool
/// (the same in every restore of it) and the DHCP lease (best effort: QEMU's
/// DHCP server kept it, renewing only makes the guest ask again now).
async fn fix_guest(ctx: &BuildContext, guest: &mut Guest) -> Result<(), String> {
    let session = guest.session().await.map_err(|err| chain(&err))?;
    let mut seed = [0u8; ENTROPY_BYTES];
    rand::fill(&mut seed[..]);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|err| err.to_string())?
        // Rounded: `date -s @N` takes whole seconds.
        .as_millis()
        .div_ceil(1000);
    let command = fix_command(epoch, &seed);
    let mut said = Vec::new();
    let status = session
        .exec(&command, &mut |_, line| {
            if said.len() < 20 {
                said.push(line.to_string());
            }
        })
        .await
        .map_err(|err| chain(&err))?;
    tracing::debug!(build = %ctx.name, ?said, "restored guest fixed up");
    if status == crate::ssh::ExitStatus::Code(0) && said.iter().any(|line| line.trim() == FIXED) {
        Ok(())
    } else {
        Err(format!(
            "setting the restored guest's clock and entropy failed ({status:?}): {}",
            said.join("; ")
        ))
    }
}

/// The fix-up, as root (directly or through `sudo -n`). Exits non-zero
/// when the clock or the entropy could not be set; the lease renewal is
/// best effort (busybox udhcpc renews on SIGUSR1; systemd-networkd on
/// `networkctl renew`; dhclient's lease stays valid and is left alone).
fn fix_command(epoch: u128, seed: &[u8]) -> String {
    let bytes: String = seed.iter().map(|b| format!("\\{b:03o}")).collect();
    let script = format!(
        "date -u -s @{epoch} >/dev/null || exit 3
(hwclock -w || hwclock --systohc) >/dev/null 2>&1
printf '{bytes}' >/dev/urandom || exit 4
for pid in $(pidof udhcpc 2>/dev/null); do kill -USR1 \"$pid\" 2>/dev/null; done
if command -v networkctl >/dev/null 2>&1; then
    for dev in $(ls /sys/class/net); do
        [ \"$dev\" = lo ] || networkctl renew \"$dev\" >/dev/null 2>&1
    done
fi
echo {FIXED}"
    );
    let script = crate::ssh::shell_quote(&script);
    format!(
        "if [ \"$(id -u)\" = 0 ]; then sh -c {script}; \
         elif sudo -n true >/dev/null 2>&1; then sudo -n sh -c {script}; \
         else echo 'not root, and sudo -n is refused'; exit 5; fi"
    )
}

/// An error and its sources on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_command_sets_clock_and_writes_every_seed_byte() {
        let command = fix_command(1_700_000_000, &[0, 7, 255, b'\'']);
        assert!(command.contains("date -u -s @1700000000"), "{command}");
        assert!(command.contains(r"\000\007\377\047"), "{command}");
        assert!(command.contains("sudo -n sh -c"), "{command}");
    }
}
