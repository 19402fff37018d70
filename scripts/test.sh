#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, then the
# integration tests that boot the fixture under QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
vm-fixtures/build.sh >/dev/null
exec cargo test --locked "$@"
