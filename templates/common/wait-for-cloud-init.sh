#!/bin/sh
# Provisioning must not race cloud-init's first boot: it may still be
# writing users, SSH keys and apt sources, or holding the dpkg lock.
set -eu

if ! command -v cloud-init >/dev/null 2>&1; then
  echo "cloud-init is not installed; nothing to wait for"
  exit 0
fi

status=0
cloud-init status --wait >/dev/null || status=$?
# Exit 2 (cloud-init 23.4 and later) means it finished with recoverable
# errors: the instance is usable, so the build goes on and shows them.
case "$status" in
  0) echo "cloud-init finished" ;;
  2) echo "cloud-init finished with recoverable errors:"; cloud-init status --long || true ;;
  *) echo "cloud-init failed (exit $status):"; cloud-init status --long || true; exit "$status" ;;
esac
