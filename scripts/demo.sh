#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo build on the local fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
fixture=$(vm-fixtures/build.sh | tail -n 1)
cargo build --release --locked
exec target/release/kiln build -force -var "fixture_image=$fixture" templates/demo.json
