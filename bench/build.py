#!/usr/bin/env python3
"""Build benchmark: kiln against Packer 1.6.6 and against the floor.

The same image (the VM fixture) gets the same provisioning from three
contenders, in alternating order:

* kiln, from a template;
* Packer 1.6.6 (Debian's `packer`), from the same template with what Packer
  needs on top: the NoCloud seed through `qemuargs` (it has no `cd_files`),
  a key file, and SFTP (the fixture has no `scp`);
* the floor: plain QEMU with the same arguments as kiln, timed from launch
  until the guest's SSH answers (polled every 50 ms), plus the same
  provisioning through one multiplexed OpenSSH connection, plus the guest's
  shutdown until QEMU exits.

It prints each contender's median wall time, the overhead of kiln and Packer
over the floor, and the ratios.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INLINE = [
    "echo benchmark > /root/bench.txt",
    "uname -sr",
    "ls /etc/bench-files",
]
MEMORY_MIB = 512
DISK_MIB = 2048


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_quiet(argv, **kwargs):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def fixture_image():
    out = run_quiet(["bash", str(ROOT / "vm-fixtures/build.sh")], text=True)
    return out.stdout.strip().splitlines()[-1]


def kiln_binary():
    log("building kiln (release)...")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    return str(ROOT / "target/release/kiln")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_key(work):
    key = work / "id_ed25519"
    run_quiet(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key, (work / "id_ed25519.pub").read_text().strip()


def make_seed(work, public_key):
    seed_dir = work / "seed"
    seed_dir.mkdir()
    (seed_dir / "meta-data").write_text("instance-id: bench\nlocal-hostname: bench\n")
    (seed_dir / "user-data").write_text(
        f"#cloud-config\ndisable_root: false\nssh_authorized_keys:\n  - {public_key}\n"
    )
    seed = work / "seed.iso"
    run_quiet([
        "genisoimage", "-quiet", "-output", str(seed), "-volid", "cidata", "-joliet", "-rock",
        str(seed_dir / "user-data"), str(seed_dir / "meta-data"),
    ])
    return seed


def make_files(work):
    files = work / "files"
    files.mkdir()
    for i in range(5):
        (files / f"file{i}.conf").write_text(f"setting{i} = {i}\n" * 50)
    return files


def builder(fixture, out_dir, name):
    return {
        "type": "qemu",
        "name": name,
        "iso_url": fixture,
        "iso_checksum": "none",
        "disk_image": True,
        "disk_size": DISK_MIB,
        "format": "qcow2",
        "accelerator": "tcg",
        "memory": MEMORY_MIB,
        "cpus": 1,
        "headless": True,
        "ssh_username": "root",
        "ssh_timeout": "5m",
        "shutdown_command": "poweroff",
        "output_directory": str(out_dir),
        "vm_name": "disk.qcow2",
    }


def provisioners(files):
    # Packer 1.6.6 uploads a directory over SFTP only into one that exists.
    return [
        {"type": "shell", "inline": ["mkdir -p /etc/bench-files"]},
        {"type": "file", "source": f"{files}/", "destination": "/etc/bench-files"},
        {"type": "shell", "inline": INLINE},
    ]


def kiln_template(work, fixture, files):
    out = work / "out-kiln"
    template = {"builders": [builder(fixture, out, "bench")], "provisioners": provisioners(files)}
    path = work / "kiln.json"
    path.write_text(json.dumps(template, indent=2))
    return path, out


def packer_template(work, fixture, files, key, seed):
    out = work / "out-packer"
    b = builder(fixture, out, "bench")
    b.update({
        "ssh_private_key_file": str(key),
        "ssh_file_transfer_method": "sftp",
        "qemuargs": [["-cdrom", str(seed)]],
    })
    template = {"builders": [b], "provisioners": provisioners(files)}
    path = work / "packer.json"
    path.write_text(json.dumps(template, indent=2))
    return path, out


def timed(argv, env=None, cwd=None):
    start = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        log(result.stdout[-4000:])
        raise SystemExit(f"{argv[0]} failed with exit code {result.returncode}")
    return elapsed


def run_kiln(kiln, template, out):
    shutil.rmtree(out, ignore_errors=True)
    return timed([kiln, "build", "-force", str(template)])


def run_packer(template, out):
    shutil.rmtree(out, ignore_errors=True)
    # Packer keeps a cache (and port locks) in its working directory.
    env = dict(os.environ, CHECKPOINT_DISABLE="1", PACKER_NO_COLOR="1",
               PACKER_CACHE_DIR=str(template.parent / "packer_cache"))
    return timed(["packer", "build", "-force", str(template)], env=env, cwd=template.parent)


def ssh_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as s:
            s.settimeout(0.05)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def run_floor(work, fixture, files, key, seed):
    disk = work / "floor.qcow2"
    run_quiet(["qemu-img", "convert", "-O", "qcow2", fixture, str(disk)])
    run_quiet(["qemu-img", "resize", str(disk), f"{DISK_MIB}M"])
    port = free_port()
    control = work / "ssh-control"
    ssh = [
        "ssh", "-q", "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60",
    ]
    qemu = [
        "qemu-system-x86_64", "-name", "floor",
        "-machine", "type=pc,accel=tcg", "-m", f"{MEMORY_MIB}M", "-smp", "1",
        "-drive", f"file={disk},if=virtio,cache=writeback,discard=ignore,format=qcow2,detect-zeroes=off",
        "-cdrom", str(seed),
        "-netdev", f"user,id=user.0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net,netdev=user.0",
        "-display", "none", "-serial", f"file:{work / 'floor.serial.log'}",
    ]
    start = time.monotonic()
    vm = subprocess.Popen(qemu, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ssh_answers(port):
            if vm.poll() is not None:
                raise SystemExit("floor: QEMU exited before SSH answered")
            if time.monotonic() - start > 300:
                raise SystemExit("floor: SSH did not answer within 5 minutes")
            time.sleep(0.05)
        target = "root@127.0.0.1"
        subprocess.run(ssh + [target, "mkdir -p /etc/bench-files"], check=True)
        subprocess.run(
            ["sftp", "-q", "-b", "-", "-i", str(key), "-P", str(port),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", f"ControlPath={control}", target],
            input=f"put -r {files}/. /etc/bench-files\n", text=True, check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(ssh + [target, "sh -e"], input="\n".join(INLINE) + "\n", text=True,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(ssh + [target, "poweroff"], stdout=subprocess.DEVNULL)
        vm.wait(timeout=300)
        elapsed = time.monotonic() - start
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.wait()
        subprocess.run(ssh + ["-O", "exit", "root@127.0.0.1"], stderr=subprocess.DEVNULL)
        disk.unlink(missing_ok=True)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each contender (default 5)")
    parser.add_argument("--fixture", help="image to build on (default: vm-fixtures/build.sh's)")
    args = parser.parse_args()

    for tool in ["packer", "qemu-system-x86_64", "genisoimage", "ssh", "sftp"]:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh")
    version = run_quiet(["packer", "version"], text=True, env=dict(os.environ, CHECKPOINT_DISABLE="1"))
    log(f"reference: {version.stdout.strip().splitlines()[0]}")
    fixture = args.fixture or fixture_image()
    kiln = kiln_binary()

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        work = Path(tmp)
        files = make_files(work)
        key, public_key = make_key(work)
        seed = make_seed(work, public_key)
        kiln_json, kiln_out = kiln_template(work, fixture, files)
        packer_json, packer_out = packer_template(work, fixture, files, key, seed)

        contenders = {
            "kiln": lambda: run_kiln(kiln, kiln_json, kiln_out),
            "packer": lambda: run_packer(packer_json, packer_out),
            "floor": lambda: run_floor(work, fixture, files, key, seed),
        }
        times = {name: [] for name in contenders}
        order = list(contenders)
        for i in range(args.runs):
            for name in order:
                elapsed = contenders[name]()
                times[name].append(elapsed)
                log(f"run {i + 1}/{args.runs} {name:6s} {elapsed:6.2f} s")
            order = order[1:] + order[:1]

    median = {name: statistics.median(values) for name, values in times.items()}
    floor = median["floor"]
    overhead = {name: median[name] - floor for name in ("kiln", "packer")}
    print(f"runs per contender: {args.runs} (alternating)")
    print(f"{'contender':10s} {'median':>9s} {'overhead':>9s}   all runs")
    for name in ("floor", "packer", "kiln"):
        extra = f"{overhead[name]:8.2f}s" if name in overhead else f"{'-':>9s}"
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:10s} {median[name]:8.2f}s {extra}   {runs}")
    print(f"kiln / packer wall time:  {median['kiln'] / median['packer']:.2f}x")
    if overhead["packer"] > 0:
        print(f"kiln / packer overhead:   {overhead['kiln'] / overhead['packer']:.2f}x")
    print(f"kiln overhead over floor: {overhead['kiln']:.2f} s (target < 0.5 s)")


if __name__ == "__main__":
    main()
