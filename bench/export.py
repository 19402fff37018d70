#!/usr/bin/env python3
"""Export benchmark: packaging a disk as GCE's disk.raw tar.gz.

The disk: a 10 GiB sparse raw file holding an ext4 filesystem with about
4 GB of real files (hard links to files under /usr, made into the
filesystem by `mke2fs -d`), cached under ~/.cache/kiln/bench/ between runs.

The contenders, each writing a .tar.gz of that disk, gzip level 6:

* kiln: `examples/package.rs`, built in release mode;
* GNU tar: `tar --format=oldgnu -S -I 'gzip -6' -cf` (`-Sczf` at level 6);
* GNU tar piped to pigz: `tar --format=oldgnu -S -cf - | pigz -6`;
* Packer 1.6.6: the `compress` post-processor after an `artifice` one, in a
  template with a `null` builder, run by `packer build`.

Each runs once, under `/usr/bin/time`, after one read of the disk so all of
them find it in the page cache. It prints wall time, output size and peak
RSS (of the largest process, for a pipeline), and kiln's ratios to Packer and
GNU tar. Needs: e2fsprogs, tar, pigz, packer, GNU time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache/kiln/bench"
DISK_SIZE = "10G"
DATA_BYTES = 4_000_000_000
SOURCES = ["/usr"]
LEVEL = 6


def log(message):
    print(message, file=sys.stderr, flush=True)


def stage_files(staging):
    """Hard links to regular files until DATA_BYTES: real data, no copying."""
    total = 0
    for source in SOURCES:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    stat = path.lstat()
                except OSError:
                    continue
                if not path.is_file() or path.is_symlink() or stat.st_size == 0:
                    continue
                target = staging / path.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copy2(path, target)
                total += stat.st_size
                if total >= DATA_BYTES:
                    return total
    return total


def bench_disk():
    disk = CACHE / "export-10G.raw"
    if disk.exists():
        return disk
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir()
        log("staging files...")
        total = stage_files(staging)
        log(f"staged {total / 1e9:.2f} GB; making the ext4 disk...")
        partial = Path(tmp) / "disk.raw"
        subprocess.run(
            ["mke2fs", "-q", "-t", "ext4", "-d", str(staging), str(partial), DISK_SIZE],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        partial.rename(disk)
    return disk


def kiln_example():
    log("building kiln's package example (release)...")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--example", "package"],
        cwd=ROOT,
        check=True,
    )
    return str(ROOT / "target/release/examples/package")


def packer_template(work, disk, out):
    template = {
        "builders": [{"type": "null", "communicator": "none"}],
        "post-processors": [
            [
                {"type": "artifice", "files": [str(disk)]},
                # Without keep_input_artifact Packer deletes the artifice files:
                # the cached disk itself.
                {
                    "type": "compress",
                    "output": str(out),
                    "compression_level": LEVEL,
                    "keep_input_artifact": True,
                },
            ]
        ],
    }
    path = work / "packer.json"
    path.write_text(json.dumps(template, indent=2))
    return path


def timed(argv, work, name, env=None, cwd=None):
    """Wall seconds and peak RSS (bytes) from GNU time."""
    report = work / f"{name}.time"
    subprocess.run(
        ["/usr/bin/time", "-o", str(report), "-f", "%e %M", *argv],
        check=True,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
    )
    wall, peak_kib = report.read_text().split()[-2:]
    return float(wall), int(peak_kib) * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all)")
    args = parser.parse_args()
    for tool in ["mke2fs", "tar", "pigz", "packer", "/usr/bin/time"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (pigz: apt-get install pigz)")

    disk = bench_disk()
    kiln = kiln_example()
    log("reading the disk once into the page cache...")
    subprocess.run(["cat", str(disk)], check=True, stdout=subprocess.DEVNULL)
    allocated = disk.stat().st_blocks * 512

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        quoted = lambda p: "'" + str(p).replace("'", "'\\''") + "'"
        outs = {name: work / f"{name}.tar.gz" for name in ("kiln", "gnu-tar", "tar+pigz", "packer")}
        packer_json = packer_template(work, disk, outs["packer"])
        packer_env = dict(
            os.environ,
            CHECKPOINT_DISABLE="1",
            PACKER_NO_COLOR="1",
            PACKER_CACHE_DIR=str(work / "packer_cache"),
        )
        contenders = {
            "kiln": lambda: timed(
                [kiln, str(disk), str(outs["kiln"]), "--level", str(LEVEL)], work, "kiln"
            ),
            "gnu-tar": lambda: timed(
                ["bash", "-c", f"tar --format=oldgnu -S -I 'gzip -{LEVEL}' -cf {quoted(outs['gnu-tar'])} "
                 f"-C {quoted(disk.parent)} {quoted(disk.name)}"],
                work,
                "gnu-tar",
            ),
            "tar+pigz": lambda: timed(
                ["bash", "-c", f"set -o pipefail; tar --format=oldgnu -S -cf - -C {quoted(disk.parent)} "
                 f"{quoted(disk.name)} | pigz -{LEVEL} > {quoted(outs['tar+pigz'])}"],
                work,
                "tar+pigz",
            ),
            "packer": lambda: timed(
                ["packer", "build", "-force", str(packer_json)], work, "packer", env=packer_env, cwd=work
            ),
        }
        results = {}
        for name, run in contenders.items():
            if args.only and name not in args.only:
                continue
            log(f"running {name}...")
            wall, peak = run()
            size = outs[name].stat().st_size
            results[name] = (wall, size, peak)
            log(f"  {wall:.1f} s, {size / 1e6:.1f} MB, peak RSS {peak / 2**20:.0f} MiB")
            outs[name].unlink()

    print(f"disk: {DISK_SIZE} raw, {allocated / 1e9:.2f} GB allocated, gzip level {LEVEL}, "
          f"{os.cpu_count()} cores")
    print(f"{'contender':<10} {'wall s':>8} {'size MB':>10} {'peak RSS MiB':>13}")
    for name, (wall, size, peak) in results.items():
        print(f"{name:<10} {wall:>8.1f} {size / 1e6:>10.1f} {peak / 2**20:>13.0f}")
    if "kiln" in results:
        kiln_wall, kiln_size, _ = results["kiln"]
        for other in ("packer", "gnu-tar", "tar+pigz"):
            if other in results:
                wall, size, _ = results[other]
                print(f"kiln / {other}: time {kiln_wall / wall:.2f}x, size {kiln_size / size:.3f}x")


if __name__ == "__main__":
    main()
