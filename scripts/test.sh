#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, then the
# integration tests that boot the fixture under QEMU. Arguments go to
# `cargo test`.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

# Each step says what it does; a failing command reports the step and how
# to fix it instead of ending the script without a word.
step="starting"
hint=""
on_error() {
  if [ "$BASHPID" != "$$" ]; then exit "$1"; fi
  echo "test: error: $step failed (exit status $1, line $2: $3)" >&2
  if [ -n "$hint" ]; then echo "test: to fix: $hint" >&2; fi
  exit "$1"
}
trap 'on_error $? "$LINENO" "$BASH_COMMAND"' ERR
at() { step=$1; hint=$2; }

at "scripts/setup.sh (installing what kiln needs)" "read setup's message above, fix that, and run scripts/test.sh again"
scripts/setup.sh
at "vm-fixtures/build.sh (building the VM fixture image)" \
  "read the fixture's message above; KILN_FIXTURE_REBUILD=1 vm-fixtures/build.sh builds it again"
vm-fixtures/build.sh >/dev/null
at "vm-fixtures/build-realistic.sh (building the realistic VM fixture image)" \
  "read the fixture's message above; KILN_FIXTURE_REBUILD=1 vm-fixtures/build-realistic.sh builds it again"
vm-fixtures/build-realistic.sh >/dev/null
command -v cargo >/dev/null || {
  echo "test: error: cargo is not on PATH" >&2
  echo "test: to fix: install Rust with rustup (https://rustup.rs), then run scripts/test.sh again" >&2
  exit 1
}
exec cargo test --workspace --locked "$@"
