#!/bin/sh
# mmdebstrap customize hook of build-realistic.sh: turns the Debian 12
# root at $1 into something that behaves like an Ubuntu cloud image.
# Runs on the build host (as root, or as namespaced root in unshare mode);
# commands for inside the image go through chroot.
#
#   customize.sh ROOT ROOT_UUID
set -eu
root=$1
uuid=$2
here=$(cd "$(dirname "$0")" && pwd)

# --- cloud-init ---------------------------------------------------------------
# The defaults Ubuntu's cloud images have: default user ubuntu with
# password-less sudo, root and passwords refused; NoCloud (kiln's seed ISO)
# and GCE (kiln's googlecompute emulation) only, so detection is quick.
install -m 644 "$here/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/90_kiln_fixture.cfg"
# Debian's 01_debian_cloud.cfg-style files may name another user; the
# fixture's file above sorts after them and wins. The dpkg-chosen datasource
# list is replaced too.
printf 'datasource_list: [ NoCloud, GCE, None ]\n' >"$root/etc/cloud/cloud.cfg.d/90_dpkg.cfg"

# --- network ------------------------------------------------------------------
# cloud-init writes systemd-networkd files (renderers: [networkd] in
# cloud.cfg); this catch-all only applies to NICs it left out.
install -m 644 "$here/99-kiln-fallback-dhcp.network" "$root/etc/systemd/network/99-kiln-fallback-dhcp.network"
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# Waiting for every link to be online would stall the boot on a second,
# unconfigured NIC; one routable link is enough.
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n' \
  >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/10-any.conf"

# --- SSH ----------------------------------------------------------------------
# No host keys in the image: cloud-init makes them at the first boot of an
# instance; ssh-keygen -A covers a boot where it did not (cloud-init
# disabled or failed), which sshd -t would otherwise refuse.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/ssh/sshd_config.d" "$root/etc/systemd/system/ssh.service.d"
printf '# As on Ubuntu cloud images.\nPasswordAuthentication no\n' \
  >"$root/etc/ssh/sshd_config.d/60-cloudimg-settings.conf"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  >"$root/etc/systemd/system/ssh.service.d/10-hostkeys.conf"

# --- PATH with sbin for every user, as Ubuntu has ---------------------------------
# /etc/environment is read by pam_env for SSH sessions, interactive or not
# (sshd's own default PATH lacks sbin); /etc/profile for login shells;
# login.defs for su and login.
echo 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games"' \
  >"$root/etc/environment"
sed -i 's#^\([[:space:]]*PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"\)#  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/games:/usr/games"#' \
  "$root/etc/profile"
grep -q 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/games' "$root/etc/profile" ||
  { echo "customize: /etc/profile has no user PATH line to fix" >&2; exit 1; }
sed -i 's#^ENV_PATH.*#ENV_PATH\tPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/games:/usr/games#' \
  "$root/etc/login.defs"

# --- boot ---------------------------------------------------------------------
printf 'UUID=%s\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n' "$uuid" >"$root/etc/fstab"
echo localhost >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n' \
  >"$root/etc/hosts"
echo 'LANG=C.UTF-8' >"$root/etc/default/locale"
# Scrubbing ext4 metadata at boot only slows a short-lived VM down.
chroot "$root" systemctl disable e2scrub_reap.service e2scrub_all.timer >/dev/null 2>&1 || true
# A serial console login, as on cloud images.
chroot "$root" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
# Each instance gets its own machine-id (systemd makes one at boot when
# the file is empty).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
[ ! -d "$root/var/lib/dbus" ] || ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"

# --- size -------------------------------------------------------------------------
# (apt's lists and caches and /tmp are mmdebstrap's to clean: it still
# uses them after this hook.)
rm -rf "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/tmp/*
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian
find "$root/usr" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
