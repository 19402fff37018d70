#!/bin/sh
# Records what the image was built from. The build instance's machine-id
# and cloud-init instance-id are kept so that a smoke test on a new
# instance can tell that both were made anew.
set -eu

install -d -m 0755 /etc/base-image
{
  echo "IMAGE_NAME=$IMAGE_NAME"
  echo "IMAGE_FAMILY=$IMAGE_FAMILY"
  echo "BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "BUILD_MACHINE_ID=$(cat /etc/machine-id)"
  echo "BUILD_INSTANCE_ID=$(cat /var/lib/cloud/data/instance-id 2>/dev/null || echo unknown)"
} > /etc/base-image/build-info
chmod 0644 /etc/base-image/build-info
cat /etc/base-image/build-info
