#!/usr/bin/env python3
"""Upload benchmark: kiln's resumable upload against Google's Python client.

Both upload the same file (random bytes, 256 MiB by default) to a local
fake-gcs-server (`-backend memory`, started fresh for every upload, since it
slows down as it holds more), with the same chunk size, in alternating runs:

* kiln: `examples/gcs_upload_bench.rs`, built in release mode, which streams
  the file without telling the server its size up front, as an export does;
* Python: `google-cloud-storage`'s `Blob.upload_from_file` with `chunk_size`
  set, so it makes a resumable upload too, with crc32c checking.

Prints each contender's median throughput per chunk size and kiln's ratio.
Needs the emulators' venv from scripts/setup.sh (for fake-gcs-server); the
Python client goes into a venv of its own under kiln's cache, made on the
first run (nothing is installed into the Python that runs this script).
"""

import argparse
import functools
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench"
PYTHON_UPLOAD = """
import sys, time
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
path, bucket, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = storage.Client(project="bench", credentials=AnonymousCredentials())
blob = client.bucket(bucket).blob("bench.bin", chunk_size=chunk)
started = time.monotonic()
with open(path, "rb") as f:
    blob.upload_from_file(f, checksum="crc32c")
print(time.monotonic() - started)
"""


def log(message):
    print(message, file=sys.stderr, flush=True)


# The Python contender, pinned so runs compare like with like.
CLIENT_PIN = "google-cloud-storage==2.18.2"


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ["HOME"], ".cache")
    return Path(base) / "kiln"


@functools.cache
def fake_gcs_server_binary():
    """fake-gcs-server from the venv scripts/setup.sh made (where the tests find it)."""
    if os.environ.get("KILN_FAKE_GCS_SERVER"):
        return os.environ["KILN_FAKE_GCS_SERVER"]
    venv = Path(subprocess.run(
        ["bash", str(ROOT / "scripts/setup.sh"), "--emulator-venv"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    marker = venv / "kiln-ready"
    pins = (ROOT / "scripts/emulators.txt").read_text()
    if not marker.is_file() or marker.read_text() != pins:
        sys.exit(f"the Cloud Storage emulators' venv {venv} is missing or half-made: "
                 "run scripts/setup.sh")
    return str(venv / "bin" / "fake-gcs-server")


@functools.cache
def client_python():
    """The interpreter of a venv holding google-cloud-storage, made once.

    Built under a temporary name and renamed into place when complete, so
    an interrupted run never leaves one that a later run trusts (only its
    bin/python is used, which works after the rename).
    """
    key = hashlib.sha256(CLIENT_PIN.encode()).hexdigest()[:16]
    venv = cache_dir() / "bench" / f"client-venv-{key}"
    python = venv / "bin" / "python"
    if (venv / "kiln-ready").is_file():
        return str(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{venv.name}.", dir=venv.parent))
    try:
        log(f"making a venv with {CLIENT_PIN} in {venv}...")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(work)], check=True)
        except subprocess.CalledProcessError:
            sys.exit(f"{sys.executable} -m venv failed: on Debian, apt-get install python3-venv")
        try:
            subprocess.run([str(work / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", CLIENT_PIN], check=True)
        except subprocess.CalledProcessError:
            sys.exit(f"pip could not install {CLIENT_PIN}: check the network (pip's message is above)")
        (work / "kiln-ready").write_text(CLIENT_PIN + "\n")
        shutil.rmtree(venv, ignore_errors=True)
        work.rename(venv)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return str(python)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGcsServer:
    def __enter__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [fake_gcs_server_binary(), "-scheme", "http", "-host", "127.0.0.1",
             "-port", str(self.port), "-backend", "memory", "-log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                request = urllib.request.Request(
                    f"{self.url}/storage/v1/b?project=bench",
                    data=json.dumps({"name": BUCKET}).encode(),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                urllib.request.urlopen(request, timeout=2).read()
                return self
            except OSError:
                time.sleep(0.05)
        self.process.kill()
        sys.exit("fake-gcs-server did not come up")

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def kiln_upload(binary, path, chunk_mib):
    with FakeGcsServer() as server:
        env = dict(os.environ, STORAGE_EMULATOR_HOST=server.url)
        out = subprocess.run(
            [binary, str(path), BUCKET, str(chunk_mib)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(out)
        if result["size"] != path.stat().st_size:
            sys.exit(f"kiln uploaded {result['size']} bytes of {path.stat().st_size}")
        return result["seconds"]


def python_upload(path, chunk_mib):
    with FakeGcsServer() as server:
        env = dict(os.environ, STORAGE_EMULATOR_HOST=server.url)
        out = subprocess.run(
            [client_python(), "-c", PYTHON_UPLOAD, str(path), BUCKET, str(chunk_mib << 20)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout
        return float(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--chunks", type=int, nargs="*", default=[8, 100],
                        help="chunk sizes in MiB (default 8 100)")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (default 3)")
    args = parser.parse_args()
    fake_gcs_server_binary()
    client_python()

    log("building kiln's upload example (release)...")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--example", "gcs_upload_bench"],
        cwd=ROOT, check=True,
    )
    binary = str(ROOT / "target/release/examples/gcs_upload_bench")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.bin"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        rows = []
        for chunk in args.chunks:
            times = {"kiln": [], "python": []}
            for run in range(args.runs):
                log(f"chunk {chunk} MiB, run {run + 1}/{args.runs}...")
                times["kiln"].append(kiln_upload(binary, path, chunk))
                times["python"].append(python_upload(path, chunk))
            rows.append((chunk, statistics.median(times["kiln"]),
                         statistics.median(times["python"])))

    print(f"{args.mib} MiB to fake-gcs-server, median of {args.runs} runs")
    print(f"{'chunk MiB':>9} {'kiln MiB/s':>11} {'python MiB/s':>13} {'kiln/python':>12}")
    for chunk, kiln, python in rows:
        print(f"{chunk:>9} {args.mib / kiln:>11.1f} {args.mib / python:>13.1f} "
              f"{python / kiln:>11.2f}x")


if __name__ == "__main__":
    main()
