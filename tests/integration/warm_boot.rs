//! Warm boots on the tiny fixture: a running build machine saved
//! (checkpoint) and started again from the saved files (restore).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln::pipeline::MachineError;
use kiln::pipeline::warm_probe::Probe;
use serde_json::json;

use crate::util::{Scratch, fixture_builder, qemu_processes_with};

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// `qemu-img info`'s JSON for `path` (shared lock: QEMU may hold it).
fn image_info(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn overlay(backing: &Path, target: &Path) {
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(backing)
        .arg(target)
        .status()
        .unwrap();
    assert!(made.success());
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_machine_restores_with_its_disk_key_and_the_hosts_clock() {
    let scratch = Scratch::new();
    let marker = scratch.path().display().to_string();
    let template = scratch.write_json(
        "t.json",
        // The overlay a checkpoint adds takes the disk's options.
        &json!({ "builders": [fixture_builder(json!({
            "vm_name": "disk.qcow2",
            "disk_cache": "unsafe",
            "disk_discard": "unmap",
            "disk_detect_zeroes": "unmap",
        }))] }),
    );
    let entry = scratch.path().join("entry");
    std::fs::create_dir(&entry).unwrap();
    let first = scratch.path().join("first");
    std::fs::create_dir(&first).unwrap();
    let disk = scratch.path().join("disk.qcow2");
    let state = entry.join("state");
    let next = scratch.path().join("next.qcow2");

    let mut probe = Probe::boot(&template, &disk, &first).await.unwrap();
    let (code, _) = probe
        .run("echo before > /root/before.txt && sync")
        .await
        .unwrap();
    assert_eq!(code, 0);
    // A checkpoint that cannot write its state fails with QEMU's reason,
    // and the machine runs on, on its disk as before.
    let nowhere = scratch.path().join("missing").join("state");
    let err = probe
        .checkpoint(&nowhere, &scratch.path().join("unused.qcow2"))
        .await
        .unwrap_err();
    assert!(format!("{:?}", err).contains("No such file"), "{err:?}");
    let (code, out) = probe.run("cat /root/before.txt").await.unwrap();
    assert_eq!((code, out.trim()), (0, "before"));
    probe.checkpoint(&state, &next).await.unwrap();
    let kept = probe.keep_key(&entry).unwrap().expect("kiln's own key");
    // The frozen image, as the cache entry keeps it.
    let frozen_sum = sha256(&disk);
    let info = image_info(&next);
    assert_eq!(info["backing-filename"], disk.display().to_string());
    // The machine goes on, writing to the new overlay only.
    let (code, _) = probe
        .run("echo after > /root/after.txt && sync")
        .await
        .unwrap();
    assert_eq!(code, 0);
    probe.shutdown().await.unwrap();
    assert_eq!(sha256(&disk), frozen_sum, "the frozen image was written to");
    assert_eq!(
        image_info(&next)["backing-filename"],
        disk.display().to_string()
    );

    // A fresh QEMU from the frozen image and the state.
    let second = scratch.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let restored_disk = second.join("disk.qcow2");
    overlay(&disk, &restored_disk);
    let mut probe = Probe::restore(&template, &restored_disk, &second, Some(&kept), &state)
        .await
        .unwrap();
    let (_, before) = probe.run("cat /root/before.txt").await.unwrap();
    assert_eq!(before.trim(), "before");
    let (code, _) = probe.run("test -e /root/after.txt").await.unwrap();
    assert_ne!(code, 0, "a write after the checkpoint came back");
    let host_before = now();
    let (_, guest_clock) = probe.run("date -u +%s").await.unwrap();
    let host_after = now();
    let guest_clock: i64 = guest_clock.trim().parse().unwrap();
    assert!(
        guest_clock >= host_before - 3 && guest_clock <= host_after + 3,
        "guest clock {guest_clock}, host {host_before}..{host_after}"
    );
    probe.shutdown().await.unwrap();
    assert_eq!(sha256(&disk), frozen_sum);

    // A truncated state: the restore fails, and leaves no QEMU behind.
    let third = scratch.path().join("third");
    std::fs::create_dir(&third).unwrap();
    let truncated = entry.join("truncated");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let third_disk = third.join("disk.qcow2");
    overlay(&disk, &third_disk);
    let err = Probe::restore(&template, &third_disk, &third, Some(&kept), &truncated)
        .await
        .err()
        .expect("a truncated state must not restore");
    let err = err.downcast::<MachineError>().expect("a machine error");
    assert!(
        matches!(*err, MachineError::RestoreFailed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("QEMU said"), "{err}");
    assert!(qemu_processes_with(&marker).is_empty());
}

/// The realistic fixture (systemd, cloud-init, OpenSSH, sudo): a restore
/// logs in as the default user and sets the clock through sudo. Slow (a
/// cold boot under TCG takes minutes): run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots the realistic fixture cold: minutes under TCG"]
async fn the_realistic_fixture_restores_as_its_default_user() {
    let scratch = Scratch::new();
    let template = scratch.write_json(
        "t.json",
        &json!({ "builders": [{
            "type": "qemu",
            "iso_url": crate::util::realistic_fixture().display().to_string(),
            "iso_checksum": "none",
            "disk_image": true,
            "disk_size": "4G",
            "memory": 1024,
            "accelerator": "tcg",
            "headless": true,
            "ssh_username": "ubuntu",
            "ssh_timeout": "20m",
            "shutdown_command": "sudo -n poweroff",
            "shutdown_timeout": "3m",
        }]}),
    );
    let first = scratch.path().join("first");
    let second = scratch.path().join("second");
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&second).unwrap();
    let disk = scratch.path().join("disk.qcow2");
    let state = scratch.path().join("state");
    let next = scratch.path().join("next.qcow2");
    let started = std::time::Instant::now();
    let mut probe = Probe::boot(&template, &disk, &first).await.unwrap();
    eprintln!("figures: cold boot to SSH {:?}", started.elapsed());
    let started = std::time::Instant::now();
    probe.checkpoint(&state, &next).await.unwrap();
    eprintln!(
        "figures: checkpoint {:?}, state {} bytes",
        started.elapsed(),
        std::fs::metadata(&state).unwrap().len()
    );
    let kept = probe.keep_key(scratch.path()).unwrap();
    probe.shutdown().await.unwrap();

    let restored_disk = second.join("disk.qcow2");
    overlay(&disk, &restored_disk);
    let started = std::time::Instant::now();
    let mut probe = Probe::restore(&template, &restored_disk, &second, kept.as_ref(), &state)
        .await
        .unwrap();
    eprintln!("figures: restore to SSH and fixed {:?}", started.elapsed());
    let host = now();
    let (code, clock) = probe.run("sudo -n date -u +%s").await.unwrap();
    assert_eq!(code, 0);
    let clock: i64 = clock.trim().parse().unwrap();
    assert!((clock - host).abs() <= 3, "guest {clock}, host {host}");
    let (_, net) = probe
        .run("ip -4 addr show scope global; systemctl is-active systemd-networkd; ls /run/dhclient* /var/lib/dhcp 2>&1")
        .await
        .unwrap();
    eprintln!("figures: network after restore:\n{net}");
    probe.shutdown().await.unwrap();
}
