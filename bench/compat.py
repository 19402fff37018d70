#!/usr/bin/env python3
"""Compatibility report: kiln against Packer 1.6 on the public templates.

Runs `kiln validate` and `packer validate -syntax-only` (and the full
`packer validate`, which works offline for these builders) on every template
listed in tests/data/packer-templates/expected.json, each in a scratch
directory with the files it references stubbed, the same way as the
integration test tests/integration/templates_corpus.rs. Prints one row per
template, the totals, and kiln's rejection reasons grouped by their first
error, normalised: the templates each reason rejects, most frequent first.

    bench/compat.py [KILN] [--packer PACKER] [--json OUT] [--record] [--only-qemu]

KILN defaults to target/debug/kiln. --record rewrites the "kiln" outcome of
every entry in expected.json with what this kiln does now (run it after a
change that makes more templates validate).
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "data", "packer-templates")

# Keys whose string value names one file the template reads.
FILE_KEYS = {
    "script", "playbook_file", "galaxy_file", "vagrantfile_template",
    "ssh_private_key_file", "config_template", "vars_file", "inventory_file",
    "ansible_cfg",
}
# Keys whose list names files the template reads.
FILE_LIST_KEYS = {"scripts", "floppy_files", "cd_files", "include", "tests", "sources"}
# Keys naming directories.
DIR_KEYS = {"http_directory", "playbook_dir", "data_bags_path", "roles_path",
            "environments_path"}
DIR_LIST_KEYS = {"floppy_dirs", "cookbook_paths", "role_paths"}

USER_RE = re.compile(r"\{\{\s*user\s+[`\"]([^`\"]+)[`\"]\s*\}\}")
DIR_RE = re.compile(r"\{\{\s*(template_dir|pwd)\s*\}\}")
ENV_RE = re.compile(r"\{\{\s*env\s+[`\"][^`\"]*[`\"]\s*\}\}")


def variables(template, var_files, given):
    """The user variables as Packer resolves them: defaults, then var files,
    then -var values; values that refer to other variables are expanded."""
    values = {}
    for name, default in (template.get("variables") or {}).items():
        values[name] = default if isinstance(default, str) else ""
    for path in var_files:
        with open(path) as f:
            for name, value in json.load(f).items():
                values[name] = value if isinstance(value, str) else str(value)
    values.update(given)
    for _ in range(5):
        values = {k: resolve(v, values) or v for k, v in values.items()}
    return values


def resolve(value, values):
    """The path a template string names, or None when it still holds a
    template expression this cannot evaluate offline."""
    out = USER_RE.sub(lambda m: values.get(m.group(1), ""), value)
    out = DIR_RE.sub(".", out)
    out = ENV_RE.sub("", out)
    return None if "{{" in out else out


def references(template, values):
    """(path, is_dir) for every local file the template refers to."""
    found = []

    def local(path):
        if not path or "://" in path or path.startswith("/") or any(c in path for c in "*?["):
            return None
        return path[len("file:"):] if path.startswith("file:") else path

    def add(key, raw, is_dir):
        if not isinstance(raw, str):
            return
        path = resolve(raw, values)
        path = local(path) if path is not None else None
        if path:
            found.append((key, os.path.normpath(path), is_dir or raw.endswith("/")))

    def walk(node, kind):
        if isinstance(node, list):
            for item in node:
                walk(item, kind)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in FILE_KEYS:
                add(key, value, False)
            elif key in DIR_KEYS:
                add(key, value, True)
            elif key in FILE_LIST_KEYS and isinstance(value, list):
                for item in value:
                    add(key, item, False)
            elif key in DIR_LIST_KEYS and isinstance(value, list):
                for item in value:
                    add(key, item, True)
            elif key == "source" and kind == "provisioner" and node.get("direction") != "download":
                add(key, value, False)
            elif key in ("iso_url",) and kind == "builder":
                if isinstance(value, str) and (value.startswith("file:") or "://" not in value):
                    add(key, value, False)
            elif key == "iso_urls" and kind == "builder" and isinstance(value, list):
                for item in value:
                    if isinstance(item, str) and (item.startswith("file:") or "://" not in item):
                        add(key, item, False)

    walk(template.get("builders", []), "builder")
    walk(template.get("provisioners", []), "provisioner")
    walk(template.get("post-processors", []), "post-processor")
    return found


STUB_CONTENT = {
    ".sh": "#!/bin/sh\n",
    ".yml": "---\n- hosts: all\n  tasks: []\n",
    ".yaml": "---\n- hosts: all\n  tasks: []\n",
    ".json": "{}\n",
}


def stage(name, entry, scratch, only_qemu=False):
    """Copies the template into scratch (three levels down, so `../..`
    references stay inside), stubs what it references, returns its directory
    and the kiln/packer arguments."""
    work = os.path.join(scratch, "a", "b", "c")
    os.makedirs(work)
    shutil.copy(os.path.join(CORPUS, name), os.path.join(work, name))
    var_files = [os.path.join(CORPUS, v) for v in entry.get("var_files", [])]
    given = entry.get("vars", {})
    with open(os.path.join(CORPUS, name)) as f:
        template = json.load(f)
    values = variables(template, var_files, given)
    for key, path, is_dir in references(template, values):
        full = os.path.normpath(os.path.join(work, path))
        if not full.startswith(scratch + os.sep):
            continue
        # A path named both as a file and as a directory keeps its first kind.
        try:
            if is_dir:
                os.makedirs(full, exist_ok=True)
            elif not os.path.exists(full):
                os.makedirs(os.path.dirname(full), exist_ok=True)
                if key == "ssh_private_key_file":
                    # Packer reads the key while validating: a real one.
                    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", full], check=True)
                else:
                    with open(full, "w") as f:
                        f.write(STUB_CONTENT.get(os.path.splitext(full)[1], "stub\n"))
        except (FileExistsError, NotADirectoryError):
            pass
    args = []
    if only_qemu:
        names = [b.get("name", b.get("type")) for b in template.get("builders", [])
                 if b.get("type") in ("qemu", "googlecompute")]
        args.append("-only=" + ",".join(names))
    for v in var_files:
        args += ["-var-file=" + v]
    for k, v in given.items():
        args += ["-var", f"{k}={v}"]
    return work, args


def run(cmd, cwd):
    env = dict(os.environ, NO_COLOR="1", CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=os.path.join(cwd, ".packer-cache"))
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    return p.returncode == 0, (p.stderr + "\n" + p.stdout).strip()


def errors(output):
    """Each error a validation reported: the `* ...` lines under kiln's (and
    Packer's) "N error(s)" header, joined with their wrapped continuation
    lines, or else the first line of the output."""
    found = []
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("* "):
            found.append(stripped[2:])
        elif found and stripped and line.startswith(" ") and not stripped.startswith("Error"):
            found[-1] += " " + stripped
    if found:
        return found
    for line in output.splitlines():
        if line.strip():
            return [re.sub(r"^(Error|error):\s*", "", line.strip())]
    return ["(no output)"]


def fragment(error):
    """What expected.json records of an error: the part after the last
    absolute path into the corpus or the scratch directory, which a later run
    elsewhere prints the same."""
    for marker in (CORPUS, "<dir>"):
        error = error.split(marker)[-1]
    return error


def normalise(reason):
    """Groups rejections that differ only in names, numbers and paths."""
    reason = re.sub(r"\s*\(got [^)]*\)", "", reason)
    reason = re.sub(r"\[\d+\]", "[N]", reason)
    reason = reason.replace("[N][N].type: post-processor", "[N].type: post-processor")
    reason = re.sub(r"^variables\.[\w-]+:", "variables.NAME:", reason)
    reason = re.sub(r"^-var-file \S+: [\w-]+:", "-var-file FILE: NAME:", reason)
    reason = re.sub(r": (script|file|directory) not found: .*", r": \1 not found: PATH", reason)
    reason = re.sub(r"\"[^\"]*\"|`[^`]*`", "…", reason)
    return reason


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kiln", nargs="?", default=os.path.join(ROOT, "target", "debug", "kiln"))
    ap.add_argument("--packer", default=shutil.which("packer") or "/usr/bin/packer")
    ap.add_argument("--json", help="write the per-template results here")
    ap.add_argument("--record", action="store_true", help="record kiln's outcomes in expected.json")
    ap.add_argument("--only-qemu", action="store_true",
                    help="validate only the qemu and googlecompute builds (-only=NAMES), as Packer users of these templates do")
    opts = ap.parse_args()
    if opts.record and opts.only_qemu:
        ap.error("--record records the plain `kiln validate` outcomes: drop --only-qemu")
    kiln = os.path.abspath(opts.kiln)
    for tool in (kiln, opts.packer):
        if not os.access(tool, os.X_OK):
            ap.error(f"{tool}: not an executable (build kiln, or give its path)")
    with open(os.path.join(CORPUS, "expected.json")) as f:
        expected = json.load(f)
    entries = expected["templates"]

    rows = []
    for name in sorted(entries):
        entry = entries[name]
        with tempfile.TemporaryDirectory(prefix="kiln-compat-") as scratch:
            work, args = stage(name, entry, scratch, opts.only_qemu)
            k_ok, k_out = run([kiln, "validate", *args, name], work)
            s_ok, s_out = run([opts.packer, "validate", "-syntax-only", *args, name], work)
            p_ok, p_out = run([opts.packer, "validate", *args, name], work)
            # The scratch directory changes from run to run: name it <dir>.
            k_out, p_out = k_out.replace(work, "<dir>"), p_out.replace(work, "<dir>")
        rows.append(dict(name=name, kiln=k_ok, kiln_errors=[] if k_ok else errors(k_out),
                         packer_syntax=s_ok, packer=p_ok,
                         packer_errors=[] if p_ok else errors(p_out)))

    width = max(len(r["name"]) for r in rows)
    print(f"{'template':<{width}}  kiln  packer-syntax  packer")
    for r in rows:
        yes = lambda b: "yes" if b else "no"
        print(f"{r['name']:<{width}}  {yes(r['kiln']):<4}  {yes(r['packer_syntax']):<13}  {yes(r['packer'])}")
    total = len(rows)
    k = sum(r["kiln"] for r in rows)
    s = sum(r["packer_syntax"] for r in rows)
    p = sum(r["packer"] for r in rows)
    print()
    print(f"kiln validates {k}/{total}; packer -syntax-only {s}/{total}; packer validate {p}/{total}")

    for tool, key in (("kiln", "kiln_errors"), ("packer validate", "packer_errors")):
        # Each reason counts once per template it rejects.
        tally = collections.Counter(
            reason for r in rows for reason in {normalise(e) for e in r[key]})
        if tally:
            print(f"\n{tool}'s rejections (templates per reason):")
            for reason, count in tally.most_common():
                print(f"{count:4}  {reason}")

    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=1)
    if opts.record:
        for r in rows:
            entries[r["name"]]["kiln"] = "valid" if r["kiln"] else {"invalid": fragment(r["kiln_errors"][0])}
        with open(os.path.join(CORPUS, "expected.json"), "w") as f:
            json.dump(expected, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
