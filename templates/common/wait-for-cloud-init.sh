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
# What matters here is that it is done. Its errors on the build instance
# are shown, not fatal: the image's smoke tests check that cloud-init
# completes on a new instance, which is what users of the image get.
if [ "$status" -eq 0 ]; then
  echo "cloud-init finished"
else
  echo "cloud-init finished with errors (exit $status):"
  cloud-init status --long || true
fi
