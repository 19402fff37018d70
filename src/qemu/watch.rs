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

/// What to watch, and what counts as failure.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'a> {
    /// The guest's accelerator: under KVM a stuck vCPU is watched for too.
    pub accel: Accel,
    /// The guest's serial console, read for firmware boot failures.
    pub serial_log: &'a Path,
    /// The firmware's debug console (see `LaunchSpec::firmware_log`).
    pub firmware_log: Option<&'a Path>,
    /// The guest is being powered off: the `shutdown` run state is the
    /// goal, not a failure.
    pub shutdown_expected: bool,
    /// The template set up a network boot (a TFTP boot file): the
    /// firmware turning to the network is then not a failure.
    pub network_boot: bool,
}

/// Resolves only if the guest fails: a run state such as `internal-error`
/// or `guest-panicked`, firmware that found nothing to boot, or (with KVM)
/// a guest that makes no progress after the firmware. Never resolves while
/// the guest is healthy. QEMU exiting is the caller's to watch (it owns the
/// process); here it shows as a lost QMP connection, reported after a grace.
pub async fn watch_guest(qmp: &Qmp, watch: &Watch<'_>) -> QemuError {
    let kvm = watch.accel == Accel::Kvm;
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
    let mut firmware = watch.firmware_log.map(LogTail::new);
    let mut serial = LogTail::new(watch.serial_log);
    let started = tokio::time::Instant::now();
    let mut state_tick = tokio::time::interval(STATE_POLL);
    let mut register_tick = tokio::time::interval(REGISTER_POLL);
    loop {
        tokio::select! {
            _ = state_tick.tick() => {
                if let Some(failure) = check_state(qmp, watch, kvm).await {
                    return failure;
                }
                if let Some(failure) = boot_failure(firmware.as_mut(), &mut serial, watch.network_boot) {
                    return failure;
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
                            serial_len: file_len(watch.serial_log),
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
                    // The guest stopped or went down: look at once rather
                    // than at the next tick.
                    let name = event.get("event").and_then(Value::as_str).unwrap_or("");
                    if matches!(name, "STOP" | "SHUTDOWN")
                        && let Some(failure) = check_state(qmp, watch, kvm).await
                    {
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

/// `Some` when the run state is one the guest does not come back from.
async fn check_state(qmp: &Qmp, watch: &Watch<'_>, kvm: bool) -> Option<QemuError> {
    match qmp.run_state().await {
        Ok(state) if state == "shutdown" && watch.shutdown_expected => None,
        Ok(state) if FAILED_STATES.contains(&state.as_str()) => {
            Some(failed(state, String::new(), kvm))
        }
        Ok(_) => None,
        Err(err) => Some(lost(err).await),
    }
}

/// New lines of a log file QEMU appends to, read as they come.
struct LogTail<'a> {
    path: &'a Path,
    offset: u64,
    partial: Vec<u8>,
    /// The lines that may explain a failure, the last few kept.
    notes: VecDeque<String>,
}

/// Firmware logs are small; a guest writing to them without end is read
/// no further than this (per poll, and in all).
const LOG_READ_CHUNK: u64 = 256 * 1024;
const LOG_READ_LIMIT: u64 = 16 << 20;
const NOTES_KEPT: usize = 8;

impl<'a> LogTail<'a> {
    fn new(path: &'a Path) -> Self {
        LogTail {
            path,
            offset: 0,
            partial: Vec::new(),
            notes: VecDeque::new(),
        }
    }

    /// The complete lines written since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        if self.offset >= LOG_READ_LIMIT {
            return Vec::new();
        }
        let Ok(mut file) = std::fs::File::open(self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.take(LOG_READ_CHUNK).read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&bytes);
        let mut lines = Vec::new();
        // OVMF ends its lines with \r\n and moves the cursor with escape
        // sequences; either end of line will do.
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = clean_line(&line);
            if !text.is_empty() {
                lines.push(text);
            }
        }
        // A firmware message without its end of line yet ("No bootable
        // device." is SeaBIOS's last word) is looked at as it stands.
        if self.partial.len() > 4096 {
            self.partial.clear();
        }
        lines
    }

    fn note(&mut self, line: String) {
        if self.notes.len() == NOTES_KEPT {
            self.notes.pop_front();
        }
        self.notes.push_back(line);
    }

    fn pending(&self) -> String {
        clean_line(&self.partial)
    }
}

/// One console line, printable only (see `printable`) and trimmed.
fn clean_line(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes))
        .trim()
        .to_string()
}

/// Console text without escape sequences (OVMF draws its screen with CSI
/// sequences, ESC [ ... final letter: dropped whole, not just their ESC) or
/// control characters other than newlines and tabs.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// What the firmware said about a boot that went nowhere.
#[derive(Debug, PartialEq, Eq)]
enum BootVerdict {
    /// A line worth quoting if the boot fails.
    Note(String),
    /// Nothing is left to boot from.
    Failed(String),
}

/// SeaBIOS, on its debug console: `Booting from Hard Disk...`, then
/// `Boot failed: not a bootable disk` (and the same for every other
/// device), and last `No bootable device.`, after which it only waits to
/// retry. Only that last line is final: a blank disk before an installer
/// CD fails first on the way to the CD.
fn seabios_line(line: &str) -> Option<BootVerdict> {
    if line.starts_with("No bootable device") {
        return Some(BootVerdict::Failed(line.to_string()));
    }
    if line.starts_with("Booting from ") || line.starts_with("Boot failed") {
        return Some(BootVerdict::Note(line.to_string()));
    }
    None
}

/// OVMF, on the serial console: `BdsDxe: failed to load Boot0002 "UEFI
/// Misc Device" ...: Not Found` for each boot option, then (after its
/// network boot attempts, a minute or more under TCG) `BdsDxe: No bootable
/// option or device was found.` OVMF tries every disk and CD before the
/// network, so reaching the network boot (iPXE's banner, or
/// `>>Start PXE over IPv4`) already means that they all failed: kiln's
/// network has no boot server.
fn ovmf_line(line: &str, network_boot: bool) -> Option<BootVerdict> {
    if line.contains("No bootable option or device was found") {
        return Some(BootVerdict::Failed(line.to_string()));
    }
    // iPXE's banner comes first, seconds before OVMF's own PXE attempt.
    if !network_boot
        && (line.contains(">>Start PXE over IPv")
            || line.contains("Open Source Network Boot Firmware"))
    {
        return Some(BootVerdict::Failed(
            "every disk and CD failed to boot; the firmware moved on to a network boot".into(),
        ));
    }
    if line.starts_with("BdsDxe: failed to load") {
        return Some(BootVerdict::Note(line.to_string()));
    }
    None
}

fn boot_failure(
    firmware: Option<&mut LogTail>,
    serial: &mut LogTail,
    network_boot: bool,
) -> Option<QemuError> {
    if let Some(firmware) = firmware {
        for line in firmware.new_lines() {
            match seabios_line(&line) {
                Some(BootVerdict::Note(note)) => firmware.note(note),
                Some(BootVerdict::Failed(last)) => {
                    return Some(not_bootable(&firmware.notes, &last));
                }
                None => {}
            }
        }
        // SeaBIOS's last word has no end of line: it is looked at as it
        // stands, for a verdict only (a note would be taken twice).
        if let Some(BootVerdict::Failed(last)) = seabios_line(&firmware.pending()) {
            return Some(not_bootable(&firmware.notes, &last));
        }
    }
    for line in serial.new_lines() {
        // Linux, before it halts or (with `panic=N`) reboots: no run state
        // shows this without a pvpanic device, and a rebooting guest looks
        // alive.
        if let Some(at) = line.find("Kernel panic - not syncing") {
            return Some(QemuError::GuestFailed {
                state: "guest-panicked".into(),
                detail: line[at..].to_string(),
                kvm: false,
            });
        }
        match ovmf_line(&line, network_boot) {
            Some(BootVerdict::Note(note)) => serial.note(note),
            Some(BootVerdict::Failed(last)) => return Some(not_bootable(&serial.notes, &last)),
            None => {}
        }
    }
    // ">>Start PXE over IPv4." waits for its end of line until the attempt
    // times out.
    if let Some(BootVerdict::Failed(last)) = ovmf_line(&serial.pending(), network_boot) {
        return Some(not_bootable(&serial.notes, &last));
    }
    None
}

fn not_bootable(notes: &VecDeque<String>, last: &str) -> QemuError {
    let mut said: Vec<&str> = notes.iter().map(String::as_str).collect();
    said.push(last);
    QemuError::NotBootable {
        firmware_said: said.join("\n"),
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

    #[test]
    fn seabios_fails_only_when_nothing_is_left_to_boot() {
        // As SeaBIOS 1.16 under QEMU 10 writes it to port 0x402.
        let log = "enter handle_19:\n  NULL\nBooting from Hard Disk...\n\
                   Boot failed: not a bootable disk\n\nenter handle_18:\n  NULL\n\
                   Booting from DVD/CD...\nBoot failed: Could not read from CDROM (code 0004)\n\
                   enter handle_18:\n  NULL\nBooting from ROM...\nBooting from ca00:0385\n\
                   enter handle_18:\n  NULL\nNo bootable device.";
        let dir = tempfile::tempdir().unwrap();
        let firmware_path = dir.path().join("firmware.log");
        let serial_path = dir.path().join("serial.log");
        // Up to the CD: an installer CD may still boot.
        let cut = log
            .find("enter handle_18:\n  NULL\nBooting from ROM")
            .unwrap();
        std::fs::write(&firmware_path, &log[..cut]).unwrap();
        let mut firmware = LogTail::new(&firmware_path);
        let mut serial = LogTail::new(&serial_path);
        assert!(boot_failure(Some(&mut firmware), &mut serial, false).is_none());
        std::fs::write(&firmware_path, log).unwrap();
        let err = boot_failure(Some(&mut firmware), &mut serial, false).expect("a verdict");
        let text = err.to_string();
        assert!(text.starts_with("the disk is not bootable"), "{text}");
        for said in [
            "Booting from Hard Disk...",
            "Boot failed: not a bootable disk",
            "Could not read from CDROM",
            "No bootable device.",
        ] {
            assert_eq!(text.matches(said).count(), 1, "{said} in {text}");
        }
        assert!(!text.contains("handle_18"), "{text}");
    }

    #[test]
    fn ovmf_fails_at_the_network_boot_or_its_last_word() {
        let serial = "\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: failed to load Boot0001 \
                      \"UEFI QEMU DVD-ROM QM00003 \" from PciRoot(0x0)/Pci(0x1,0x1)/Ata(Secondary,Master,0x0): Not Found\r\n\
                      BdsDxe: failed to load Boot0002 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x4,0x0): Not Found\r\n\
                      >>Start PXE over IPv4.\r\n";
        let dir = tempfile::tempdir().unwrap();
        let serial_path = dir.path().join("serial.log");
        std::fs::write(&serial_path, serial).unwrap();
        let err = boot_failure(None, &mut LogTail::new(&serial_path), false).expect("a verdict");
        let text = err.to_string();
        assert!(text.contains("UEFI Misc Device"), "{text}");
        assert!(text.contains("network boot"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        std::fs::write(
            &serial_path,
            "BdsDxe: failed to load Boot0002 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x4,0x0): Not Found\r\n\
             \x1b[1m\x1b[37m\x1b[40miPXE 1.0.0+git-20190125.36a4c85-5.1\x1b[0m\x1b[37m\x1b[40m -- Open Source Network Boot Firmware -- \r\n",
        )
        .unwrap();
        let text = boot_failure(None, &mut LogTail::new(&serial_path), false)
            .expect("a verdict at iPXE's banner")
            .to_string();
        assert!(text.contains("UEFI Misc Device"), "{text}");
        std::fs::write(&serial_path, serial).unwrap();
        // A template that boots from the network on purpose.
        assert!(boot_failure(None, &mut LogTail::new(&serial_path), true).is_none());
        std::fs::write(
            &serial_path,
            "BdsDxe: No bootable option or device was found.\r\n",
        )
        .unwrap();
        assert!(boot_failure(None, &mut LogTail::new(&serial_path), true).is_some());
    }

    #[test]
    fn a_kernel_panic_on_the_console_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let serial_path = dir.path().join("serial.log");
        std::fs::write(
            &serial_path,
            "[   12.1] sysrq: Trigger a crash\n\
             [   12.2] Kernel panic - not syncing: sysrq triggered crash\n",
        )
        .unwrap();
        let err = boot_failure(None, &mut LogTail::new(&serial_path), false).expect("a verdict");
        let text = err.to_string();
        assert!(text.contains("guest-panicked"), "{text}");
        assert!(text.contains("sysrq triggered crash"), "{text}");
        assert!(!text.contains("tcg"), "{text}");
    }

    #[test]
    fn a_booted_guest_is_not_taken_for_a_failed_boot() {
        let dir = tempfile::tempdir().unwrap();
        let firmware_path = dir.path().join("firmware.log");
        let serial_path = dir.path().join("serial.log");
        std::fs::write(
            &firmware_path,
            "Booting from Hard Disk...\nBooting from 0000:7c00\n",
        )
        .unwrap();
        std::fs::write(&serial_path, "[    0.000000] Linux version 6.1\nlogin: ").unwrap();
        let mut firmware = LogTail::new(&firmware_path);
        let mut serial = LogTail::new(&serial_path);
        assert!(boot_failure(Some(&mut firmware), &mut serial, false).is_none());
        assert!(boot_failure(Some(&mut firmware), &mut serial, false).is_none());
    }

    // ---- with a real QEMU ----

    fn plain_watch(accel: Accel, serial_log: &Path) -> Watch<'_> {
        Watch {
            accel,
            serial_log,
            firmware_log: None,
            shutdown_expected: false,
            network_boot: false,
        }
    }

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
        let watch = plain_watch(Accel::Kvm, &serial);
        let outcome = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                err = watch_guest(&qmp, &watch) => Ok(err),
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
            watch_guest(&qmp, &plain_watch(Accel::Tcg, &serial)),
        )
        .await;
        assert!(
            fired.is_err(),
            "watch_guest fired: {:?}",
            fired.map(|e| e.to_string())
        );
        assert_eq!(qmp.run_state().await.unwrap(), "running");
    }

    /// What SeaBIOS in this QEMU really prints for a disk of zeros and a
    /// CD that is not bootable, through the debug console kiln adds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disk_that_cannot_boot_is_reported() {
        require_qemu();
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("zero.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let spec = crate::qemu::LaunchSpec::for_tests(disk, "raw", dir.path());
        let _process = QemuProcess::spawn(QEMU, &crate::qemu::argv(&spec))
            .await
            .unwrap();
        let qmp = Qmp::connect(&spec.qmp_socket, Duration::from_secs(10))
            .await
            .unwrap();
        let watch = Watch {
            firmware_log: spec.firmware_log.as_deref(),
            ..plain_watch(Accel::Tcg, &spec.serial_log)
        };
        // No time bound: a regression hangs here, it does not pass.
        let err = watch_guest(&qmp, &watch).await;
        let text = err.to_string();
        assert!(matches!(err, QemuError::NotBootable { .. }), "{err:?}");
        assert!(text.contains("Boot failed: not a bootable disk"), "{text}");
        assert!(text.contains("No bootable device."), "{text}");
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
            watch_guest(&qmp, &plain_watch(Accel::Tcg, &serial)),
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
