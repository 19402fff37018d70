#!/bin/sh
# Puts the hardening files uploaded to $STAGING in place and applies them
# to the build instance, so a bad setting fails the build here rather than
# on the first instance.
set -eu

: "${STAGING:?STAGING must name the directory the files were uploaded to}"

install -m 0644 -o root -g root "$STAGING/90-hardening.conf" /etc/sysctl.d/90-hardening.conf
install -d -m 0755 /etc/ssh/sshd_config.d
install -m 0644 -o root -g root "$STAGING/10-hardening.conf" /etc/ssh/sshd_config.d/10-hardening.conf
install -m 0644 -o root -g root "$STAGING/20auto-upgrades" /etc/apt/apt.conf.d/20auto-upgrades
install -m 0644 -o root -g root "$STAGING/52unattended-upgrades-local" /etc/apt/apt.conf.d/52unattended-upgrades-local

# Every key must be known to this kernel: sysctl fails on one that is not.
sysctl -p /etc/sysctl.d/90-hardening.conf

# sshd -t refuses a configuration sshd would refuse to start with. The
# running sshd keeps its settings until the next boot, so this build's
# session is not cut.
sshd -t
sshd -T | grep -E '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|x11forwarding) '

apt-config dump APT::Periodic
systemctl enable unattended-upgrades.service apt-daily.timer apt-daily-upgrade.timer

rm -rf "$STAGING"
