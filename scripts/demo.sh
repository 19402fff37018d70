#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo build on the local fixture.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

# Each step says what it does; a failing command reports the step and how
# to fix it instead of ending the script without a word.
step="starting"
hint=""
on_error() {
  if [ "$BASHPID" != "$$" ]; then exit "$1"; fi
  echo "demo: error: $step failed (exit status $1, line $2: $3)" >&2
  if [ -n "$hint" ]; then echo "demo: to fix: $hint" >&2; fi
  exit "$1"
}
trap 'on_error $? "$LINENO" "$BASH_COMMAND"' ERR
at() { step=$1; hint=$2; }

at "scripts/setup.sh (installing what kiln needs)" "read setup's message above, fix that, and run scripts/demo.sh again"
scripts/setup.sh
at "vm-fixtures/build.sh (building the VM fixture image)" \
  "read the fixture's message above; KILN_FIXTURE_REBUILD=1 vm-fixtures/build.sh builds it again"
fixture=$(vm-fixtures/build.sh | tail -n 1)
command -v cargo >/dev/null || {
  echo "demo: error: cargo is not on PATH" >&2
  echo "demo: to fix: install Rust with rustup (https://rustup.rs), then run scripts/demo.sh again" >&2
  exit 1
}
at "cargo build --release" "cargo's message above says what failed; fix that and run scripts/demo.sh again"
echo "demo: building kiln in release mode; the first build takes about 7.5 minutes on 2 cores" >&2
cargo build --release --locked
at "the demo build (kiln build templates/demo.json)" "kiln's message above says what failed"
target/release/kiln build -force -var "fixture_image=$fixture" templates/demo.json

# The GCE workflow: templates/base-image.json is a googlecompute template
# as written for GCE. The image map makes the realistic fixture (Debian
# with systemd and cloud-init, standing in for Ubuntu's cloud image) its
# ubuntu-2204-lts; with no GCE here it is built and tested, not published.
at "vm-fixtures/build-realistic.sh (building the realistic fixture image)" \
  "read the fixture's message above; KILN_FIXTURE_REBUILD=1 vm-fixtures/build-realistic.sh builds it again"
realistic=$(vm-fixtures/build-realistic.sh | tail -n 1)
map=$(mktemp --suffix=.json)
trap 'rm -f "$map"' EXIT
printf '{"ubuntu-2204-lts": {"url": "%s", "checksum": "none"}}\n' "$realistic" >"$map"
at "the GCE demo build (kiln build -publish=false templates/base-image.json)" "kiln's message above says what failed"
KILN_IMAGE_MAP=$map target/release/kiln build -force -publish=false templates/base-image.json
