#!/bin/sh
# The last step of every build: leave nothing of the build instance that
# another instance should not share or inherit.
set -eu

export DEBIAN_FRONTEND=noninteractive

# Downloaded packages and package lists: instances fetch fresh lists
# (apt-daily does) before they install anything.
apt-get -y -q autoremove --purge
apt-get clean
rm -rf /var/lib/apt/lists/*

# cloud-init state and logs, so every instance made from the image runs its
# first boot: new SSH host keys, users, hostname, the instance's metadata.
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs
fi
# The SSH host keys of the build instance must not be shared by every
# instance: cloud-init makes new ones on first boot.
rm -f /etc/ssh/ssh_host_*

# An empty machine-id (not a missing one) tells systemd this is a first
# boot: it makes a new id, different on every instance. D-Bus reads the
# same id through its link.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
if [ -d /var/lib/dbus ]; then
  ln -s /etc/machine-id /var/lib/dbus/machine-id
fi
rm -f /var/lib/systemd/random-seed

# Build leftovers.
rm -rf /tmp/* /var/tmp/*
if command -v journalctl >/dev/null 2>&1; then
  journalctl --rotate --quiet || true
  journalctl --vacuum-time=1s --quiet || true
fi
find /var/log -path /var/log/journal -prune -o -type f \( -name '*.gz' -o -name '*.[0-9]' \) -exec rm -f {} +
find /var/log -path /var/log/journal -prune -o -type f -exec truncate -s 0 {} +
sync
