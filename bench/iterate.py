#!/usr/bin/env python3
"""Iteration benchmark: the edit-build-test loop, kiln against Packer 1.6.6.

On the tiny fixture (vm-fixtures/build.sh) and on the realistic one
(vm-fixtures/build-realistic.sh: Debian 12 with systemd and cloud-init, user
`ubuntu`), kiln and Packer 1.6.6 (Debian's `packer`) build the same image
from the same scripts, in alternating runs. Three scenarios:

* edit-last-provisioner rebuild: a hardening build of four shell
  provisioners (config files written, users and a sudoers rule created, a
  file-integrity baseline of the system's programs plus an audit-rule loop,
  then a build label). Before every run the last provisioner's echo is
  changed. kiln: `kiln build -cache -force`, after one warm-up build that
  fills the step cache (timed apart); Packer: `packer build -force`.
  Prints kiln/Packer (target: at most 0.2x on the realistic fixture).
* unchanged rebuild with -cache: `kiln build -cache -force` of the last
  edited template again, nothing changed (target: under 2 s wall). Only
  kiln: Packer has nothing to compare with.
* cold build with tests and packaging: the same build as a `raw` disk
  (`disk.raw`), plus the kiln `tests` section (the checks read what the
  provisioners wrote) and a `compress` post-processor making GCE's
  disk.raw tar.gz (kept input artifact). Three contenders, no cache: kiln
  with its finishing stages overlapped (the default), kiln with
  KILN_SEQUENTIAL_STAGES=1 (smoke tests, then packaging), and Packer
  followed by a separate test boot: `kiln test` of Packer's disk.raw with
  the same checks (Packer has no smoke tests; `kiln test` boots the image
  as a fresh instance exactly as kiln's build does, so the test boot costs
  the same for both and Packer's image passing the same checks shows the
  two templates build the same thing). Prints overlapped/sequential
  (target: at most 0.7x) and overlapped/(Packer + test).

For each contender it prints the median wall time with min, max and every
run, and for kiln the step cache's hits and misses of each run as kiln
reports them (`4h/2m`: 4 hits, 2 misses; a -cache build has one entry for
the boot, one per provisioner and one for the finished disk, so an edit of
the last of four provisioners reads 4h/2m and an unchanged rebuild 6h/0m).
A failed run is listed at the end and the exit status is 1; the other runs
still count. Everything runs
in a scratch directory (removed at the end, `--keep` keeps it) with its own
KILN_CACHE_DIR and PACKER_CACHE_DIR: the user's caches are never touched.

Packer gets what it lacks: the NoCloud seed as a `-cdrom` in `qemuargs`
(1.6.6's qemu builder has no `cd_files`; cloud-init 22.4 of the realistic
fixture reads the `cidata` volume) with a key pair made here, SFTP for
uploads (the tiny fixture has no `scp`), and on the realistic fixture
`sudo` in `execute_command` (kiln gets the same).

Without `-cache` in `kiln build -h`, the first two scenarios run kiln
without it (full builds, said in the output); a kiln that does not know
KILN_SEQUENTIAL_STAGES runs its one order for both kiln contenders (said
too).

    bench/iterate.py [--runs 3] [--fixture tiny|realistic|both]
                     [--scenarios edit,unchanged,cold] [--kiln PATH] [--keep]

Needs packer, qemu-system-x86_64, qemu-img, genisoimage, ssh-keygen
(scripts/setup.sh installs them). Under TCG on two shared cores, with
--runs 3: the tiny fixture takes about 5 minutes, the realistic one about
12 minutes for the edit and unchanged scenarios and 30 for the cold one
(a cold realistic build with its test boot is 3 to 3.5 minutes).
"""

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# kiln's interface for what is measured: kept here so a rename is one line.
CACHE_FLAG = "-cache"
# Hidden: forces the old order (smoke-test boot, then packaging).
SEQUENTIAL_ENV = "KILN_SEQUENTIAL_STAGES"
CACHE_DIR_ENV = "KILN_CACHE_DIR"
# kiln's summary line of a -cache build, e.g. "step cache: 4 hit(s), 2 miss(es)".
CACHE_LINE_RE = re.compile(r"step cache:\s*(\d+)\s+hits?\b\S*,\s*(\d+)\s+miss", re.IGNORECASE)
# `-cache` listed as a flag of its own in `kiln build -h`.
CACHE_HELP_RE = re.compile(r"(?m)^\s*(?:-\w,\s*)?-{1,2}cache\b(?![-\w])")

TARGETS = {
    "edit": 0.2,  # kiln / Packer, realistic fixture
    "unchanged": 2.0,  # seconds
    "cold": 0.7,  # overlapped / sequential
}


class Fixture:
    def __init__(self, name, image, user, memory, disk_mib, ssh_timeout):
        self.name = name
        self.image = image
        self.user = user
        self.memory = memory
        self.disk_mib = disk_mib
        self.ssh_timeout = ssh_timeout

    @property
    def sudo(self):
        return self.user != "root"


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_quiet(argv, **kwargs):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def fixture_path(script, env_var):
    if os.environ.get(env_var):
        return os.environ[env_var]
    log(f"finding the fixture ({script})...")
    out = subprocess.run(["bash", str(ROOT / "vm-fixtures" / script)], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def fixtures(which):
    found = []
    if which in ("tiny", "both"):
        found.append(Fixture("tiny", fixture_path("build.sh", "KILN_TEST_FIXTURE"),
                             "root", 512, 2048, "5m"))
    if which in ("realistic", "both"):
        found.append(Fixture("realistic",
                             fixture_path("build-realistic.sh", "KILN_TEST_REALISTIC_FIXTURE"),
                             "ubuntu", 1024, 3072, "20m"))
    return found


def kiln_binary(given):
    if given:
        return str(Path(given).resolve())
    log("building kiln (release)...")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "release/kiln")


def kiln_knows_cache(kiln):
    out = subprocess.run([kiln, "build", "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    return bool(CACHE_HELP_RE.search(out.stdout))


def kiln_reads_env(kiln, name):
    """Whether the binary holds the variable's name: the only sign of a
    hidden variable short of a run."""
    with open(kiln, "rb") as f:
        return name.encode() in f.read()


# --- the work: scripts, templates, checks ------------------------------------

CONFIG_SH = r"""#!/bin/sh
# Hardening: kernel, SSH, limits and login settings as config files.
set -eu
mkdir -p /etc/sysctl.d /etc/ssh/sshd_config.d /etc/security/limits.d /etc/profile.d /etc/hardening
cat >/etc/sysctl.d/90-hardening.conf <<'EOF'
kernel.kptr_restrict = 2
kernel.dmesg_restrict = 1
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.default.rp_filter = 1
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.tcp_syncookies = 1
fs.protected_hardlinks = 1
fs.protected_symlinks = 1
EOF
cat >/etc/ssh/sshd_config.d/90-hardening.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
X11Forwarding no
ClientAliveInterval 300
EOF
printf '* hard core 0\n' >/etc/security/limits.d/90-hardening.conf
printf 'umask 027\n' >/etc/profile.d/90-umask.sh
printf 'Authorized use only. Activity is logged.\n' >/etc/issue.net
# One policy file per service, as a hardening role templates them.
i=0
while [ "$i" -lt 200 ]; do
  printf 'service = svc%03d\naction = deny\nlog = yes\n' "$i" >"/etc/hardening/policy-$i.conf"
  i=$((i + 1))
done
chmod 0644 /etc/sysctl.d/90-hardening.conf
echo "config: $(ls /etc/hardening | wc -l) policy files"
"""

USERS_SH = r"""#!/bin/sh
# Operators: a group, five users with an empty authorized_keys, a sudo rule.
# Without shadow's tools (a busybox image) the account files are written.
set -eu
mkdir -p /home /etc/sudoers.d
touch /etc/group /etc/passwd
if command -v groupadd >/dev/null 2>&1; then
  groupadd -f ops
elif ! grep -q '^ops:' /etc/group; then
  echo 'ops:x:2000:' >>/etc/group
fi
uid=2001
for u in alice bob carol dave erin; do
  if ! id "$u" >/dev/null 2>&1; then
    if command -v useradd >/dev/null 2>&1; then
      useradd -m -s /bin/sh -G ops "$u"
    else
      echo "$u:x:$uid:$uid::/home/$u:/bin/sh" >>/etc/passwd
      echo "$u:x:$uid:" >>/etc/group
      sed -i "s/^ops:x:2000:\(.*\)/ops:x:2000:\1,$u/; s/^ops:x:2000:,/ops:x:2000:/" /etc/group
      mkdir -p "/home/$u"
      chown "$u:$u" "/home/$u"
    fi
  fi
  uid=$((uid + 1))
  mkdir -p "/home/$u/.ssh"
  : >"/home/$u/.ssh/authorized_keys"
  chmod 700 "/home/$u/.ssh"
  chmod 600 "/home/$u/.ssh/authorized_keys"
  chown -R "$u" "/home/$u/.ssh"
done
printf '%%ops ALL=(root) NOPASSWD: /usr/bin/systemctl status *\n' >/etc/sudoers.d/90-ops
chmod 0440 /etc/sudoers.d/90-ops
echo "users: $(grep '^ops:' /etc/group)"
"""

BASELINE_SH = r"""#!/bin/sh
# A file-integrity baseline of the system's programs (as AIDE's first run
# makes) and audit rules for every policy file: the slow step.
set -eu
mkdir -p /var/lib/hardening
find /bin /sbin /lib /usr/bin /usr/sbin /usr/lib -xdev -type f -exec sha256sum {} + 2>/dev/null |
  sort -k 2 >/var/lib/hardening/baseline.sha256
i=0
while [ "$i" -lt 3000 ]; do
  echo "-w /etc/hardening/policy-$((i % 200)).conf -p wa -k policy$((i % 7))"
  i=$((i + 1))
done >/var/lib/hardening/audit.rules
sha256sum /var/lib/hardening/audit.rules >/var/lib/hardening/audit.rules.sha256
echo "baseline: $(wc -l </var/lib/hardening/baseline.sha256) files"
sync
"""

SCRIPTS = {"10-config.sh": CONFIG_SH, "20-users.sh": USERS_SH, "30-baseline.sh": BASELINE_SH}


def write_scripts(work):
    scripts = work / "scripts"
    scripts.mkdir()
    for name, text in SCRIPTS.items():
        path = scripts / name
        path.write_text(text)
        path.chmod(0o755)
    return scripts


def checks(fixture, label):
    """The smoke tests: what the provisioners wrote, on a fresh instance.
    They run as the SSH user: sudo where a file is root's alone."""
    sudo = "sudo -n " if fixture.sudo else ""
    return [
        {"name": "sysctl", "file": "/etc/sysctl.d/90-hardening.conf",
         "contains": "kernel.kptr_restrict = 2", "mode": "0644", "owner": "root"},
        {"name": "policies", "command": "ls /etc/hardening | wc -l", "expect_stdout": "^ *200$"},
        {"name": "operators", "command": "id -nG erin", "expect_stdout": "ops"},
        {"name": "sudoers", "command": f"{sudo}stat -c %a /etc/sudoers.d/90-ops",
         "expect_stdout": "^440$"},
        {"name": "baseline", "inline": ["test -s /var/lib/hardening/baseline.sha256",
                                        "test -s /var/lib/hardening/audit.rules"]},
        {"name": "label", "file": "/etc/build-info", "contains": label},
    ]


def provisioners(fixture, scripts, label):
    extra = {}
    if fixture.sudo:
        extra["execute_command"] = "chmod +x {{ .Path }}; sudo -n env {{ .Vars }} {{ .Path }}"
    steps = [{"type": "shell", "script": str(scripts / name), **extra} for name in SCRIPTS]
    steps.append({"type": "shell", **extra, "inline": [
        f"echo 'build label: {label}'",
        f"echo '{label}' >/etc/build-info",
    ]})
    return steps


def builder(fixture, out_dir, packaged):
    b = {
        "type": "qemu",
        "name": "bench",
        "iso_url": fixture.image,
        "iso_checksum": "none",
        "disk_image": True,
        "disk_size": fixture.disk_mib,
        "format": "raw" if packaged else "qcow2",
        "accelerator": "tcg",
        "memory": fixture.memory,
        "cpus": 1,
        "headless": True,
        "ssh_username": fixture.user,
        "ssh_timeout": fixture.ssh_timeout,
        "shutdown_command": "sudo -n poweroff" if fixture.sudo else "poweroff",
        "output_directory": str(out_dir),
        "vm_name": "disk.raw" if packaged else "disk.qcow2",
    }
    return b


class Template:
    """One template file, rewritten with a new label before each edit."""

    def __init__(self, work, name, tool, fixture, scripts, keys, packaged):
        self.path = work / f"{name}.json"
        self.out = work / f"out-{name}"
        self.package = work / f"out-{name}.tar.gz"
        self.tool = tool
        self.fixture = fixture
        self.scripts = scripts
        self.keys = keys
        self.packaged = packaged
        self.label = None

    def write(self, label):
        self.label = label
        b = builder(self.fixture, self.out, self.packaged)
        if self.tool == "packer":
            key, seed = self.keys
            b.update({
                "ssh_private_key_file": str(key),
                "ssh_file_transfer_method": "sftp",
                "qemuargs": [["-cdrom", str(seed)]],
            })
        template = {"builders": [b], "provisioners": provisioners(self.fixture, self.scripts, label)}
        if self.packaged:
            template["post-processors"] = [{
                "type": "compress", "format": "tar.gz", "output": str(self.package),
                "keep_input_artifact": True,
            }]
            if self.tool == "kiln":
                template["tests"] = checks(self.fixture, label)
        self.path.write_text(json.dumps(template, indent=2))

    def edit(self):
        self.write(f"edit-{secrets.token_hex(4)}")

    def clean(self):
        shutil.rmtree(self.out, ignore_errors=True)
        self.package.unlink(missing_ok=True)


def make_packer_seed(work, fixture):
    key = work / "packer_key"
    run_quiet(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-bench", "-f", str(key)])
    public = (work / "packer_key.pub").read_text().strip()
    seed_dir = work / "seed"
    seed_dir.mkdir()
    (seed_dir / "meta-data").write_text("instance-id: kiln-bench\nlocal-hostname: bench\n")
    # Top-level keys go to the image's default user (and root, where the
    # image allows it), as kiln's own seed does.
    (seed_dir / "user-data").write_text(f"#cloud-config\nssh_authorized_keys:\n  - {public}\n")
    seed = work / "seed.iso"
    run_quiet(["genisoimage", "-quiet", "-output", str(seed), "-volid", "cidata", "-joliet",
               "-rock", str(seed_dir / "user-data"), str(seed_dir / "meta-data")])
    return key, seed


# --- running -----------------------------------------------------------------

class Failed(Exception):
    pass


def timed(argv, env, cwd):
    start = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    elapsed = time.monotonic() - start
    # Every run's output stays in the scratch directory (see --keep).
    logs = Path(cwd) / "logs"
    logs.mkdir(exist_ok=True)
    name = f"{len(list(logs.iterdir())):03d}-{Path(argv[0]).name}-{argv[1]}.log"
    (logs / name).write_text(result.stdout)
    if result.returncode != 0:
        log(result.stdout[-6000:])
        raise Failed(f"{' '.join(str(a) for a in argv[:3])} ... failed with exit code {result.returncode}")
    return elapsed, result.stdout


class Bench:
    def __init__(self, kiln, work, use_cache, sequential_known):
        self.kiln = kiln
        self.work = work
        self.use_cache = use_cache
        self.sequential_known = sequential_known
        self.kiln_env = dict(os.environ, **{CACHE_DIR_ENV: str(work / "kiln-cache")},
                             NO_COLOR="1")
        self.kiln_env.pop(SEQUENTIAL_ENV, None)
        self.packer_env = dict(os.environ, CHECKPOINT_DISABLE="1", PACKER_NO_COLOR="1",
                               PACKER_CACHE_DIR=str(work / "packer_cache"))

    def kiln_build(self, template, cache, sequential=False):
        template.clean()
        argv = [self.kiln, "build"]
        if cache and self.use_cache:
            argv.append(CACHE_FLAG)
        argv += ["-force", str(template.path)]
        env = dict(self.kiln_env)
        if sequential:
            env[SEQUENTIAL_ENV] = "1"
        elapsed, out = timed(argv, env, self.work)
        match = None
        for match in CACHE_LINE_RE.finditer(out):
            pass
        hits = (int(match.group(1)), int(match.group(2))) if match else None
        template.clean()
        return elapsed, hits

    def packer_build(self, template, keep=False):
        template.clean()
        elapsed, _ = timed(["packer", "build", "-force", str(template.path)], self.packer_env, self.work)
        if not keep:
            template.clean()
        return elapsed

    def kiln_test(self, template, checks_file):
        fixture = template.fixture
        disk = template.out / "disk.raw"
        argv = [self.kiln, "test", str(disk), "--tests", str(checks_file),
                "--disk-format", "raw", "--ssh-username", fixture.user,
                "--ssh-timeout", fixture.ssh_timeout, "--accelerator", "tcg",
                "--memory", str(fixture.memory), "--cpus", "1"]
        elapsed, _ = timed(argv, self.kiln_env, self.work)
        return elapsed


class Series:
    """One contender's times (and cache counts) in one scenario."""

    def __init__(self, name):
        self.name = name
        self.times = []
        self.hits = []

    def add(self, elapsed, hits=None):
        self.times.append(elapsed)
        if hits is not None:
            self.hits.append(hits)

    @property
    def median(self):
        return statistics.median(self.times) if self.times else float("nan")

    def row(self):
        if not self.times:
            return f"  {self.name:34s} {'-':>8s}"
        line = (f"  {self.name:34s} {self.median:7.2f}s  (min {min(self.times):.2f}, "
                f"max {max(self.times):.2f}; runs {' '.join(f'{t:.2f}' for t in self.times)})")
        if self.hits:
            line += "  cache " + " ".join(f"{h}h/{m}m" for h, m in self.hits)
        return line


def alternate(runs, contenders, say, failures):
    """Each contender once per round, the order rotated each round. A failed
    run is counted (its output is in logs/) and the rounds go on: one crash
    in a long benchmark should not throw away every other figure."""
    order = list(contenders)
    for i in range(runs):
        for name in order:
            try:
                elapsed = contenders[name]()
            except Failed as err:
                failures.append(f"{name} run {i + 1}: {err}")
                say(f"run {i + 1}/{runs} {name}: FAILED ({err})")
                continue
            say(f"run {i + 1}/{runs} {name}: {elapsed:.2f} s")
        order = order[1:] + order[:1]


def ratio(a, b):
    return a.median / b.median if a.times and b.times and b.median > 0 else float("nan")


def scenario_edit_and_unchanged(bench, fixture, scripts, keys, runs, scenarios, say, failures):
    kiln_t = Template(bench.work, "edit-kiln", "kiln", fixture, scripts, keys, packaged=False)
    packer_t = Template(bench.work, "edit-packer", "packer", fixture, scripts, keys, packaged=False)
    cached = "kiln -cache" if bench.use_cache else "kiln (no -cache: full)"
    warm = Series(f"{cached} warm-up")
    kiln = Series(f"{cached}")
    packer = Series("packer")
    unchanged = Series(f"{cached} unchanged")
    lines = []

    kiln_t.edit()
    elapsed, hits = bench.kiln_build(kiln_t, cache=True)
    warm.add(elapsed, hits)
    say(f"warm-up (fills the step cache): {elapsed:.2f} s")

    if "edit" in scenarios:
        def run_kiln():
            kiln_t.edit()
            elapsed, hits = bench.kiln_build(kiln_t, cache=True)
            kiln.add(elapsed, hits)
            return elapsed

        def run_packer():
            packer_t.edit()
            elapsed = bench.packer_build(packer_t)
            packer.add(elapsed)
            return elapsed

        alternate(runs, {"kiln": run_kiln, "packer": run_packer}, say, failures)
        lines += ["edit-last-provisioner rebuild", warm.row(), kiln.row(), packer.row(),
                  f"  kiln / packer: {ratio(kiln, packer):.2f}x"
                  f"  (target <= {TARGETS['edit']}x on realistic)"]

    if "unchanged" in scenarios:
        def run_unchanged():
            elapsed, hits = bench.kiln_build(kiln_t, cache=True)
            unchanged.add(elapsed, hits)
            return elapsed

        # The template as last built: every step, and the output, cached.
        alternate(runs, {"kiln unchanged": run_unchanged}, say, failures)
        lines += ["unchanged rebuild", unchanged.row(),
                  f"  median {unchanged.median:.2f} s  (target < {TARGETS['unchanged']:.0f} s)"]
    return lines


def scenario_cold(bench, fixture, scripts, keys, runs, say, failures):
    over_t = Template(bench.work, "cold-kiln", "kiln", fixture, scripts, keys, packaged=True)
    seq_t = Template(bench.work, "cold-kiln-seq", "kiln", fixture, scripts, keys, packaged=True)
    packer_t = Template(bench.work, "cold-packer", "packer", fixture, scripts, keys, packaged=True)
    label = f"cold-{secrets.token_hex(4)}"
    for t in (over_t, seq_t, packer_t):
        t.write(label)
    checks_file = bench.work / "checks.json"
    checks_file.write_text(json.dumps({"tests": checks(fixture, label)}, indent=2))

    over = Series("kiln overlapped")
    seq = Series(f"kiln {SEQUENTIAL_ENV}=1" if bench.sequential_known
                 else "kiln sequential (var unknown)")
    packer = Series("packer + kiln test")
    packer_only = Series("  of which packer build")
    test_only = Series("  of which kiln test")

    def run_over():
        elapsed, _ = bench.kiln_build(over_t, cache=False)
        over.add(elapsed)
        return elapsed

    def run_seq():
        elapsed, _ = bench.kiln_build(seq_t, cache=False, sequential=True)
        seq.add(elapsed)
        return elapsed

    def run_packer():
        try:
            build = bench.packer_build(packer_t, keep=True)
            if not packer_t.package.exists():
                raise Failed(f"packer made no {packer_t.package.name}")
            test = bench.kiln_test(packer_t, checks_file)
        finally:
            packer_t.clean()
        packer_only.add(build)
        test_only.add(test)
        packer.add(build + test)
        return build + test

    alternate(runs, {"kiln overlapped": run_over, "kiln sequential": run_seq,
                     "packer + test": run_packer}, say, failures)
    return ["cold build with tests and packaging", over.row(), seq.row(), packer.row(),
            packer_only.row(), test_only.row(),
            f"  overlapped / sequential:  {ratio(over, seq):.2f}x  (target <= {TARGETS['cold']}x)",
            f"  overlapped / packer+test: {ratio(over, packer):.2f}x"]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (default 3)")
    parser.add_argument("--fixture", choices=["tiny", "realistic", "both"], default="both")
    parser.add_argument("--scenarios", default="edit,unchanged,cold",
                        help="comma-separated: edit, unchanged, cold (default all)")
    parser.add_argument("--kiln", help="the kiln binary (default: cargo build --release)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    unknown = scenarios - {"edit", "unchanged", "cold"}
    if unknown or args.runs < 1:
        parser.error(f"bad --scenarios {sorted(unknown)} or --runs")

    for tool in ["packer", "qemu-system-x86_64", "qemu-img", "genisoimage", "ssh-keygen"]:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh")
    packer_version = run_quiet(["packer", "version"], text=True,
                               env=dict(os.environ, CHECKPOINT_DISABLE="1")).stdout.split("\n")[0]
    kiln = kiln_binary(args.kiln)
    kiln_version = run_quiet([kiln, "version"], text=True).stdout.strip().splitlines()[0]
    use_cache = kiln_knows_cache(kiln)
    sequential_known = kiln_reads_env(kiln, SEQUENTIAL_ENV)
    chosen = fixtures(args.fixture)

    header = [f"{kiln_version} against {packer_version}; {args.runs} run(s) each, alternating"]
    if not use_cache:
        header.append(f"note: `kiln build -h` lists no {CACHE_FLAG}: kiln runs without it "
                      "(full builds) in the edit and unchanged scenarios")
    if not sequential_known:
        header.append(f"note: kiln does not read {SEQUENTIAL_ENV}: both kiln contenders of the "
                      "cold scenario run kiln's one order")
    report = list(header)
    failed = False
    print("\n".join(header), flush=True)

    for fixture in chosen:
        tmp = tempfile.mkdtemp(prefix=f"kiln-iterate-{fixture.name}-")
        work = Path(tmp)
        try:
            scripts = write_scripts(work)
            keys = make_packer_seed(work, fixture)
            bench = Bench(kiln, work, use_cache, sequential_known)

            def say(message, name=fixture.name):
                log(f"[{name}] {message}")

            lines = [f"== {fixture.name} fixture: {fixture.image} (user {fixture.user}, "
                     f"{fixture.memory} MiB, 1 CPU, TCG)"]
            # A failed warm-up ends its scenario; a failed run only itself.
            failures = []
            if scenarios & {"edit", "unchanged"}:
                try:
                    lines += scenario_edit_and_unchanged(bench, fixture, scripts, keys, args.runs,
                                                         scenarios, say, failures)
                except Failed as err:
                    failures.append(f"edit warm-up: {err}")
            if "cold" in scenarios:
                lines += scenario_cold(bench, fixture, scripts, keys, args.runs, say, failures)
            if failures:
                failed = True
                lines.append(f"FAILED runs ({len(failures)}; their output is in logs/ under --keep):")
                lines += [f"  {f}" for f in failures]
            report += lines
            print("\n".join(lines), flush=True)
        finally:
            if args.keep:
                log(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)

    if len(chosen) > 1:
        print("\n=== summary ===")
        print("\n".join(report))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
