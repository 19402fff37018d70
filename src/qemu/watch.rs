//! Watching a booting guest for failures QEMU itself survives: a dead
//! guest must end the wait for SSH at once, not at `ssh_timeout`.
//!
//! What KVM does on a host whose `/dev/kvm` opens but whose CPU advertises
//! neither vmx nor svm (seen with QEMU 10.0): the run state stays `running`,
//! SeaBIOS takes ~4 s instead of milliseconds, then a Linux kernel sits in
//! its decompressor, its instruction pointer confined to a few hundred bytes
//! (progressing at ~0.4 MB/s), with not one byte on the serial console after
//! 40 s. No state change and no event ever arrive, so under KVM the vCPU's
//! instruction pointer is sampled as well (see [`StallTracker`]).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::{Accel, QemuError, Qmp, cpu_has_virtualization};

const STATE_POLL: Duration = Duration::from_millis(250);
const REGISTER_POLL: Duration = Duration::from_millis(500);
/// How long a stuck vCPU is tolerated on a host without vmx/svm, where a
/// working KVM is not expected in the first place.
const STALL_WINDOW_SUSPECT_HOST: Duration = Duration::from_secs(3);
/// The same on a host with hardware virtualisation: long enough that no
/// healthy boot looks like this.
const STALL_WINDOW_VIRT_HOST: Duration = Duration::from_secs(60);
/// After the QMP connection breaks, how long to wait before reporting it:
/// usually QEMU exited, and the caller's exit watch tells that better.
const LOST_GRACE: Duration = Duration::from_secs(2);

/// Run states a guest does not come back from by itself.
const FAILED_STATES: &[&str] = &[
    "internal-error",
    "guest-panicked",
    "io-error",
    "shutdown",
    "watchdog",
];

/// Resolves only if the guest fails: a run state such as `internal-error`
/// or `guest-panicked`, or (with KVM) a guest that makes no progress after
/// the firmware. Never resolves while the guest is healthy.
pub async fn watch_guest(qmp: &Qmp, accel: Accel, serial_log: &Path) -> QemuError {
    let kvm = accel == Accel::Kvm;
    let mut events = qmp.subscribe();
    for event in qmp.recent_events() {
        if let Some(failure) = failure_from_event(&event, kvm) {
            return failure;
        }
    }
    let virt_host = host_has_virtualization();
    let window = if virt_host {
        STALL_WINDOW_VIRT_HOST
    } else {
        STALL_WINDOW_SUSPECT_HOST
    };
    let mut stalls = StallTracker::new(window);
    let mut sample_registers = kvm;
    let started = tokio::time::Instant::now();
    let mut state_tick = tokio::time::interval(STATE_POLL);
    let mut register_tick = tokio::time::interval(REGISTER_POLL);
    loop {
        tokio::select! {
            _ = state_tick.tick() => {
                match qmp.run_state().await {
                    Ok(state) if FAILED_STATES.contains(&state.as_str()) => {
                        return failed(state, String::new(), kvm);
                    }
                    Ok(_) => {}
                    Err(err) => return lost(err).await,
                }
            }
            _ = register_tick.tick(), if sample_registers => {
                match qmp.human_command("info registers").await {
                    Ok(text) => {
                        let Some((ip, halted)) = parse_registers(&text) else {
                            tracing::debug!("cannot read vCPU registers; stall detection off");
                            sample_registers = false;
                            continue;
                        };
                        let sample = Sample {
                            at: started.elapsed(),
                            ip,
                            halted,
                            serial_len: file_len(serial_log),
                        };
                        tracing::trace!(?sample, "vCPU sample");
                        if let Some(mut detail) = stalls.observe(sample) {
                            if !virt_host {
                                detail.push_str("; this CPU advertises neither vmx nor svm");
                            }
                            return QemuError::KvmUnusable { detail };
                        }
                    }
                    Err(QemuError::Qmp { desc, .. }) => {
                        tracing::debug!(%desc, "info registers refused; stall detection off");
                        sample_registers = false;
                    }
                    Err(err) => return lost(err).await,
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(failure) = failure_from_event(&event, kvm) {
                        return failure;
                    }
                }
                // Missed events are covered by the state poll.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    return lost(QemuError::QmpProtocol("QMP event stream ended".into())).await;
                }
            }
        }
    }
}

fn failed(state: String, detail: String, kvm: bool) -> QemuError {
    QemuError::GuestFailed { state, detail, kvm }
}

async fn lost(err: QemuError) -> QemuError {
    tokio::time::sleep(LOST_GRACE).await;
    err
}

fn host_has_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|cpuinfo| cpu_has_virtualization(&cpuinfo))
        .unwrap_or(false)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Events that mean the guest is gone, whatever the run state says (with
/// `-no-shutdown` absent a panic ends in QEMU exiting, and the state is
/// never seen).
fn failure_from_event(event: &Value, kvm: bool) -> Option<QemuError> {
    let name = event.get("event").and_then(Value::as_str)?;
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    match name {
        "GUEST_PANICKED" | "GUEST_CRASHLOADED" => {
            let action = data.get("action").and_then(Value::as_str).unwrap_or("");
            Some(failed(
                "guest-panicked".into(),
                format!("{name}, action {action}"),
                kvm,
            ))
        }
        "SHUTDOWN" if data.get("reason").and_then(Value::as_str) == Some("guest-panic") => {
            Some(failed(
                "guest-panicked".into(),
                "shutdown after a panic".into(),
                kvm,
            ))
        }
        _ => None,
    }
}

/// The vCPU's linear instruction address (CS base + RIP/EIP, so real-mode
/// firmware is told apart from a kernel) and whether it is halted, from
/// HMP `info registers`.
fn parse_registers(text: &str) -> Option<(u64, bool)> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .map(str::to_string)
    };
    let ip = field("RIP=").or_else(|| field("EIP="))?;
    let ip = u64::from_str_radix(&ip, 16).ok()?;
    let cs_base = text
        .lines()
        .find_map(|line| line.strip_prefix("CS ="))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|base| u64::from_str_radix(base, 16).ok())
        .unwrap_or(0);
    let halted = field("HLT=").is_some_and(|flag| flag == "1");
    Some((cs_base.wrapping_add(ip), halted))
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    ip: u64,
    halted: bool,
    serial_len: u64,
}

/// Decides that a vCPU is stuck. A healthy guest that is busy moves around
/// its code, one that is idle halts, and one that boots writes to the
/// serial console; a stuck one does none of these for a whole window.
/// Firmware (below 1 MiB) polling for a boot device is not stuck unless it
/// is frozen on one instruction.
struct StallTracker {
    window: Duration,
    samples: VecDeque<Sample>,
}

/// How far a "stuck" instruction pointer may wander: a small loop.
const STUCK_SPAN: u64 = 4096;
const FIRMWARE_END: u64 = 1 << 20;

impl StallTracker {
    fn new(window: Duration) -> StallTracker {
        StallTracker {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample; `Some(description)` once the vCPU has been stuck for
    /// the whole window.
    fn observe(&mut self, sample: Sample) -> Option<String> {
        self.samples.push_back(sample);
        while let Some(first) = self.samples.front() {
            if sample.at.saturating_sub(first.at) > self.window + Duration::from_millis(500) {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let first = self.samples.front()?;
        if sample.at.saturating_sub(first.at) < self.window || self.samples.len() < 3 {
            return None;
        }
        if self
            .samples
            .iter()
            .any(|s| s.halted || s.serial_len != sample.serial_len)
        {
            return None;
        }
        let low = self.samples.iter().map(|s| s.ip).min()?;
        let high = self.samples.iter().map(|s| s.ip).max()?;
        let frozen = low == high;
        let looping = low >= FIRMWARE_END && high - low < STUCK_SPAN;
        if !(frozen || looping) {
            return None;
        }
        let serial = if sample.serial_len == 0 {
            "and nothing on the serial console".to_string()
        } else {
            "and no new serial output".to_string()
        };
        Some(format!(
            "for {}s the vCPU has stayed at {:#x}..{:#x} without halting, {serial}",
            self.window.as_secs(),
            low,
            high
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::QemuProcess;
    use std::path::PathBuf;

    #[test]
    fn registers_are_parsed_in_long_and_real_mode() {
        let long = "CPU#0\nRAX=0000000000000002 RBX=0000000000000002\n\
                    RIP=000000000431c3f0 RFL=00000087 [--S--PC] CPL=0 II=0 A20=1 SMM=0 HLT=0\n\
                    ES =0018 0000000000000000 ffffffff 00c09300 DPL=0 DS   [-WA]\n\
                    CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]\n";
        assert_eq!(parse_registers(long), Some((0x431c3f0, false)));
        let real = "CPU#0\nEAX=00000000\nEIP=00009dc1 EFL=00000006 [-----P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
                    CS =f000 000f0000 0000ffff 00009b00\n";
        assert_eq!(parse_registers(real), Some((0xf9dc1, true)));
        assert_eq!(parse_registers("nonsense"), None);
    }

    fn sample(at_ms: u64, ip: u64) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            ip,
            halted: false,
            serial_len: 0,
        }
    }

    #[test]
    fn a_tight_loop_past_the_firmware_is_a_stall() {
        let mut tracker = StallTracker::new(Duration::from_secs(5));
        let ips = [
            0x431c3f0, 0x431c341, 0x431c331, 0x431c3af, 0x431c3a5, 0x431c2d4,
        ];
        let mut verdict = None;
        for (i, ip) in ips.iter().enumerate() {
            verdict = tracker.observe(sample(i as u64 * 1000, *ip));
            if i < 5 {
                assert!(verdict.is_none(), "fired early at {i}");
            }
        }
        let text = verdict.expect("stall detected");
        assert!(text.contains("0x431c2d4"), "{text}");
    }

    #[test]
    fn a_moving_halting_or_talking_guest_is_not_stalled() {
        let window = Duration::from_secs(5);
        // Moving around.
        let mut tracker = StallTracker::new(window);
        for i in 0..20u64 {
            assert!(
                tracker
                    .observe(sample(i * 1000, 0x100_0000 + (i % 3) * 0x10000))
                    .is_none()
            );
        }
        // Idle: halted now and then.
        let mut tracker = StallTracker::new(window);
        for i in 0..20u64 {
            let mut s = sample(i * 1000, 0x100_0000);
            s.halted = i % 4 == 0;
            assert!(tracker.observe(s).is_none());
        }
        // Printing to the console.
        let mut tracker = StallTracker::new(window);
        for i in 0..20u64 {
            let mut s = sample(i * 1000, 0x431c3f0);
            s.serial_len = i * 100;
            assert!(tracker.observe(s).is_none());
        }
        // Firmware polling for a boot device (real-mode addresses).
        let mut tracker = StallTracker::new(window);
        for i in 0..20u64 {
            assert!(
                tracker
                    .observe(sample(i * 1000, 0x7a58 + (i % 5) * 0x40))
                    .is_none()
            );
        }
    }

    #[test]
    fn a_frozen_vcpu_is_a_stall_even_in_firmware() {
        let mut tracker = StallTracker::new(Duration::from_secs(5));
        let verdict = (0..7u64).find_map(|i| tracker.observe(sample(i * 1000, 0xfff0)));
        assert!(verdict.is_some());
    }

    #[test]
    fn panic_events_are_failures_and_unknown_events_are_not() {
        let panic = serde_json::json!({"event": "GUEST_PANICKED", "data": {"action": "pause"}});
        assert!(matches!(
            failure_from_event(&panic, false),
            Some(QemuError::GuestFailed { state, kvm: false, .. }) if state == "guest-panicked"
        ));
        let shutdown = serde_json::json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-panic"}});
        assert!(failure_from_event(&shutdown, true).is_some());
        let normal = serde_json::json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}});
        assert!(failure_from_event(&normal, false).is_none());
        let unknown = serde_json::json!({"event": "RTC_CHANGE", "data": {"offset": 1}});
        assert!(failure_from_event(&unknown, false).is_none());
    }

    // ---- with a real QEMU ----

    use crate::qemu::test_support::{QEMU, require_qemu};

    fn kvm_available() -> bool {
        let ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !ok {
            eprintln!("note: /dev/kvm is not usable here; skipping the KVM part of this test");
        }
        ok
    }

    /// A Debian cloud kernel if one was unpacked for experiments, to boot
    /// past the firmware; otherwise plain SeaBIOS with no boot device.
    fn test_kernel() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("KILN_TEST_KERNEL") {
            // Set but empty: pretend there is none.
            return (!path.is_empty()).then(|| PathBuf::from(path));
        }
        let dir = std::fs::read_dir("/tmp/kiln-kernel/x/boot").ok()?;
        dir.filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz"))
            })
    }

    fn test_argv(dir: &Path, accel: &str, kernel: Option<&Path>) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "-machine".into(),
            format!("type=pc,accel={accel}"),
            "-m".into(),
            "256M".into(),
            "-display".into(),
            "none".into(),
            "-nic".into(),
            "none".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
            "-serial".into(),
            format!("file:{}", dir.join("serial.log").display()),
        ];
        if let Some(kernel) = kernel {
            argv.extend([
                "-kernel".into(),
                kernel.display().to_string(),
                "-append".into(),
                "console=ttyS0 panic=-1".into(),
                "-no-reboot".into(),
            ]);
        }
        argv
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kvm_that_cannot_run_the_guest_is_reported_within_seconds() {
        require_qemu();
        if !kvm_available() {
            return;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if cpu_has_virtualization(&cpuinfo) {
            eprintln!("note: this host has working KVM; nothing to detect");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let argv = match test_kernel() {
            Some(kernel) => test_argv(dir.path(), "kvm", Some(&kernel)),
            None => {
                // Without a kernel: a boot sector that spins on `jmp $`.
                eprintln!("note: no test kernel; booting a spinning boot sector instead");
                let mut mbr = vec![0u8; 512];
                mbr[..2].copy_from_slice(&[0xeb, 0xfe]);
                mbr[510..].copy_from_slice(&[0x55, 0xaa]);
                let image = dir.path().join("spin.img");
                std::fs::write(&image, mbr).unwrap();
                let mut argv = test_argv(dir.path(), "kvm", None);
                argv.extend([
                    "-drive".into(),
                    format!("file={},format=raw,if=ide", image.display()),
                ]);
                argv
            }
        };
        let started = std::time::Instant::now();
        let mut process = match QemuProcess::spawn(QEMU, &argv).await {
            Ok(process) => process,
            // QEMU refusing KVM outright is also a quick, clear failure.
            Err(err) => {
                eprintln!("QEMU refused KVM at once: {err}");
                return;
            }
        };
        eprintln!("QEMU up after {:?}", started.elapsed());
        let qmp = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(10))
            .await
            .unwrap();
        let serial = dir.path().join("serial.log");
        // The watch must report the failure itself; without it the build
        // would wait for the whole ssh_timeout. The timeout only keeps a
        // missed detection from hanging the test.
        let outcome = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                err = watch_guest(&qmp, Accel::Kvm, &serial) => Ok(err),
                status = process.exited() => Err(status),
            }
        })
        .await
        .expect("KVM failure not detected");
        // The build's wait would end here, long before any ssh_timeout.
        let elapsed = started.elapsed();
        match outcome {
            Ok(err) => {
                let text = err.to_string();
                eprintln!("detected after {elapsed:?}: {text}");
                assert!(text.contains("use accelerator tcg"), "{text}");
            }
            Err(status) => eprintln!("QEMU exited under KVM after {elapsed:?}: {status}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_tcg_guest_is_left_alone() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        // SeaBIOS with no boot device loops looking for one: alive, quiet.
        let argv = test_argv(dir.path(), "tcg", None);
        let _process = QemuProcess::spawn(QEMU, &argv).await.unwrap();
        let qmp = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(10))
            .await
            .unwrap();
        let serial = dir.path().join("serial.log");
        let fired = tokio::time::timeout(
            Duration::from_secs(4),
            watch_guest(&qmp, Accel::Tcg, &serial),
        )
        .await;
        assert!(
            fired.is_err(),
            "watch_guest fired: {:?}",
            fired.map(|e| e.to_string())
        );
        assert_eq!(qmp.run_state().await.unwrap(), "running");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_that_dies_is_reported() {
        require_qemu();
        let Some(kernel) = test_kernel() else {
            eprintln!("note: no test kernel (set KILN_TEST_KERNEL); skipping");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // No root fs: the kernel panics, `panic=-1` resets at once,
        // `-no-reboot` turns the reset into a shutdown and `-no-shutdown`
        // keeps QEMU there for watch_guest to see.
        let mut argv = test_argv(dir.path(), "tcg", Some(&kernel));
        argv.push("-no-shutdown".into());
        let _process = QemuProcess::spawn(QEMU, &argv).await.unwrap();
        let qmp = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(10))
            .await
            .unwrap();
        let serial = dir.path().join("serial.log");
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            watch_guest(&qmp, Accel::Tcg, &serial),
        )
        .await
        .expect("the dead guest was not reported");
        assert!(
            matches!(&err, QemuError::GuestFailed { state, kvm: false, .. } if state == "shutdown"),
            "{err:?}"
        );
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        assert!(log.contains("Kernel panic"), "{log}");
    }
}
