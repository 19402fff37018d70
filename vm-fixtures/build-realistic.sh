#!/usr/bin/env bash
# Builds kiln's realistic VM fixture: a Debian 12 cloud-style disk image
# that behaves like Ubuntu's cloud images (real cloud-init with the NoCloud
# and GCE datasources, systemd, OpenSSH, default user ubuntu with
# password-less sudo, root refused, growpart), made with mmdebstrap and
# booted by syslinux from a FAT partition. Cached outside the repository.
#
#   build-realistic.sh
#
# Prints the absolute path of the image as the last line on stdout; all
# other output goes to stderr. See vm-fixtures/README.md.
#
# Environment:
#   KILN_FIXTURE_CACHE       cache directory
#                            (default ${XDG_CACHE_HOME:-$HOME/.cache}/kiln/vm-fixtures)
#   KILN_FIXTURE_MIRROR      Debian mirror (default: the host's, from
#                            /etc/apt/sources.list.d/debian.sources or
#                            /etc/apt/sources.list, else http://deb.debian.org/debian)
#   KILN_FIXTURE_REBUILD=1   build again even if a good image is cached
set -euo pipefail

# stdout is kept for the final path only.
exec 3>&1 1>&2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files=$here/realistic
image_name=realistic.qcow2

log() { echo "fixture: $*" >&2; }
die() {
  echo "fixture: error: $1" >&2
  [ -z "${2:-}" ] || echo "fixture: to fix: $2" >&2
  exit 1
}

# --- tools -----------------------------------------------------------------

need_tools() {
  local missing=() pair tool pkg
  for pair in "$@"; do
    tool=${pair%%:*} pkg=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (Debian package $pkg)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'fixture: error: missing tool: %s\n' "${missing[@]}" >&2
    echo "fixture: to fix: run scripts/setup.sh, which installs them all" >&2
    exit 1
  fi
}
# sfdisk, mke2fs and friends live in sbin, which is not on a normal user's PATH.
export PATH=$PATH:/usr/sbin:/sbin
need_tools apt-cache:apt sha256sum:coreutils flock:util-linux qemu-img:qemu-utils \
  mmdebstrap:mmdebstrap sfdisk:fdisk mkfs.vfat:dosfstools syslinux:syslinux mcopy:mtools \
  mke2fs:e2fsprogs debugfs:e2fsprogs e2fsck:e2fsprogs tar:tar python3:python3
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr_bin" ] || die "missing $mbr_bin" "apt-get install syslinux-common (scripts/setup.sh does)"

# --- inputs and cache key ----------------------------------------------------

if [ -z "${KILN_FIXTURE_CACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ] && [ -z "${HOME:-}" ]; then
  die "no cache directory" "set KILN_FIXTURE_CACHE (or XDG_CACHE_HOME or HOME) to say where to cache the image"
fi
cache=${KILN_FIXTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln/vm-fixtures}
mkdir -p "$cache/debs-realistic"
cache=$(cd "$cache" && pwd)

# The host's Debian mirror(s): "URI SUITE" for bookworm, bookworm-updates
# and bookworm-security (the guest's apt uses the same ones).
host_sources() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    awk '
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uris = $0; sub(/^URIs:[[:space:]]*/, "", uris) }
      /^Suites:/ { suites = $0; sub(/^Suites:[[:space:]]*/, "", suites) }
      /^Types:/ { types = $0 }
      /^Enabled:[[:space:]]*no/ { disabled = 1 }
      function flush(  u, s, nu, ns, i, j) {
        if (uris != "" && types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && !disabled) {
          nu = split(uris, u, /[[:space:]]+/); ns = split(suites, s, /[[:space:]]+/)
          for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
        }
        uris = ""; suites = ""; types = ""; disabled = 0
      }
      END { flush() }' "$f"
  fi
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+\([^[:space:]]\+\).*/\2 \3/p' \
      /etc/apt/sources.list
  fi
}
if [ -n "${KILN_FIXTURE_MIRROR:-}" ]; then
  sources="$KILN_FIXTURE_MIRROR bookworm"
else
  sources=$(host_sources | awk '$2 ~ /^bookworm(-updates|-security)?$/ && !seen[$0]++')
  grep -q ' bookworm$' <<<"$sources" || sources=$(printf 'http://deb.debian.org/debian bookworm\n%s' "$sources")
fi
mirrors=()
while read -r uri suite; do
  [ -n "$uri" ] || continue
  mirrors+=("deb $uri $suite main")
done <<<"$sources"
log "mirrors: $(printf '%s; ' "${mirrors[@]}")"

# What goes into the image besides Debian's required packages
# (--variant=minbase). No recommends.
packages=(
  linux-image-cloud-amd64 initramfs-tools
  systemd systemd-sysv systemd-resolved udev dbus libpam-systemd
  cloud-init cloud-guest-utils fdisk e2fsprogs isc-dhcp-client
  openssh-server sudo ca-certificates curl dmidecode procps iproute2
  netbase less bash-completion
)

# The cache key: this script, its files, the mirrors and the candidate
# versions of the packages asked for, as the host's apt lists know them
# (an updated kernel or cloud-init makes a new image).
versions=$(apt-cache policy "${packages[@]}" 2>/dev/null | awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}')
key=$(
  {
    echo "kiln-vm-fixture-realistic 1"
    cd "$here" && find build-realistic.sh realistic -type f | LC_ALL=C sort | xargs sha256sum
    printf '%s\n' "${mirrors[@]}"
    echo "$versions"
  } | sha256sum | cut -c1-16
)
dest=$cache/realistic-$key
image=$dest/$image_name

verify_cached() {
  [ -f "$image" ] && [ -f "$image.sha256" ] &&
    (cd "$dest" && sha256sum --quiet -c "$image_name.sha256" >/dev/null 2>&1)
}

# One builder at a time (shared with build.sh); the others wait and then
# find the image cached.
exec 9>"$cache/lock"
flock 9

if [ "${KILN_FIXTURE_REBUILD:-0}" != 1 ] && verify_cached; then
  log "cached image $image"
  echo "$image" >&3
  exit 0
fi
if [ -e "$dest" ]; then
  if [ "${KILN_FIXTURE_REBUILD:-0}" = 1 ]; then
    log "KILN_FIXTURE_REBUILD=1: rebuilding $image"
  else
    log "cached image in $dest is missing or its sha256 does not match: rebuilding"
  fi
fi

# --- build -----------------------------------------------------------------

start=$SECONDS
# Holding the lock, any build directory left is from a build that was killed.
rm -rf "$cache"/build-realistic.??????
work=$(mktemp -d "$cache/build-realistic.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building into $work (key $key)"

# The root filesystem's UUID, from the key: the same inputs give the same
# UUID (fstab and the boot menu name it).
uuid=$(echo "$key" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')

# Unprivileged (user namespaces) if the machine allows it, else as root.
mode=unshare
if ! mmdebstrap --unshare-helper true >/dev/null 2>&1 && ! unshare --user --map-root-user true 2>/dev/null; then
  mode=""
fi
if [ "$mode" = unshare ] && ! unshare --user --map-root-user true 2>/dev/null; then
  mode=""
fi
if [ -z "$mode" ]; then
  [ "$(id -u)" = 0 ] || die "user namespaces are not available and this is not root" \
    "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) and give this user subordinate ids in /etc/subuid and /etc/subgid (package uidmap), or run as root"
  mode=root
fi
log "mmdebstrap --mode=$mode: Debian 12 with $(echo "${packages[@]}")"

# The .debs are kept in the cache between builds (mmdebstrap's sync-in/out).
mmdebstrap_log=$work/mmdebstrap.log
if ! mmdebstrap --mode="$mode" --variant=minbase --format=tar \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "COMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/kiln-fixture.conf"' \
  --skip=download/empty \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives/"' \
  --setup-hook="sync-in '$cache/debs-realistic' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$cache/debs-realistic'" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
  --customize-hook="'$files/customize.sh' \"\$1\" '$uuid'" \
  bookworm "$work/root.tar" "${mirrors[@]}" >"$mmdebstrap_log" 2>&1; then
  tail -n 30 "$mmdebstrap_log" >&2
  die "mmdebstrap failed (log above)" \
    "check that the mirror is reachable (apt-get update on this machine) and KILN_FIXTURE_REBUILD=1 $0 again"
fi
# Only the .debs of this build stay in the cache.
log "root filesystem made ($((SECONDS - start)) s)"

# Kernel and initramfs for the boot partition.
mkdir -p "$work/boot"
tar -C "$work/boot" -xf "$work/root.tar" --wildcards './boot/vmlinuz-*' './boot/initrd.img-*'
kernel=$(ls "$work"/boot/boot/vmlinuz-* | head -n 1)
kver=${kernel##*/vmlinuz-}
[ -f "$work/boot/boot/initrd.img-$kver" ] || die "no initramfs for kernel $kver in the image"
log "kernel $kver"

# --- disk: MBR, FAT boot partition with syslinux, ext4 root last ----------------

disk_mib=2048      # virtual size; growpart grows the root to a bigger disk
boot_start_mib=1
boot_mib=63        # kernel (~8 MiB), initramfs (~10-20 MiB), syslinux
root_start_mib=$((boot_start_mib + boot_mib))
root_mib=$((disk_mib - root_start_mib))

mkfs.vfat -C -n KILNBOOT "$work/boot.img" $((boot_mib * 1024)) >/dev/null
syslinux --install "$work/boot.img"
mcopy -i "$work/boot.img" "$kernel" ::vmlinuz
mcopy -i "$work/boot.img" "$work/boot/boot/initrd.img-$kver" ::initrd.img
sed "s/@UUID@/$uuid/" "$files/syslinux.cfg.in" >"$work/syslinux.cfg"
mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::syslinux.cfg

# ext4 from the tree (Debian 12's mke2fs -d reads directories, not
# tarballs). /dev is left empty: devtmpfs fills it at boot.
mkdir "$work/root"
tar -C "$work/root" --numeric-owner -xpf "$work/root.tar" --exclude='./dev/*'
mke2fs -q -t ext4 -L cloudimg-rootfs -U "$uuid" -d "$work/root" -m 0 \
  -E lazy_itable_init=0,lazy_journal_init=0 "$work/root.img" "${root_mib}M"
if [ "$(id -u)" != 0 ]; then
  # Not root: the extracted files are ours, so owners and special modes
  # are set from the tarball with debugfs, as mmdebstrap made them.
  python3 - "$work/root.tar" >"$work/owners.debugfs" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    for m in tar:
        path = m.name.lstrip(".")
        if not path or path.startswith("/dev/") or '"' in path:
            continue
        print(f'sif "{path}" uid {m.uid}\nsif "{path}" gid {m.gid}')
        if m.mode & 0o7000 and (m.isfile() or m.isdir()):
            kind = 0o100000 if m.isfile() else 0o040000
            print(f'sif "{path}" mode 0{kind | m.mode:o}')
PY
  debugfs -w -f "$work/owners.debugfs" "$work/root.img" >/dev/null 2>"$work/debugfs.log" ||
    die "debugfs failed: $(cat "$work/debugfs.log")"
fi
e2fsck -fn "$work/root.img" >/dev/null 2>&1 || die "the new root filesystem does not check clean"
rm -rf "$work/root.tar" "$work/root"

truncate -s "${disk_mib}M" "$work/disk.img"
printf '%s\n' 'label: dos' \
  "start=${boot_start_mib}MiB, size=${boot_mib}MiB, type=c, bootable" \
  "start=${root_start_mib}MiB, type=83" | sfdisk -q "$work/disk.img"
dd if="$mbr_bin" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$work/disk.img" bs=1M seek=$boot_start_mib conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$root_start_mib conv=notrunc,sparse status=none
rm -f "$work/root.img" "$work/boot.img"

mkdir -p "$work/out"
# Compressed clusters: about half the size; reading them back costs little
# next to TCG.
qemu-img convert -c -f raw -O qcow2 "$work/disk.img" "$work/out/$image_name"

# --- checks --------------------------------------------------------------------

qemu-img check -q -f qcow2 "$work/out/$image_name" || die "qemu-img check failed"
qemu-img convert -f qcow2 -O raw "$work/out/$image_name" "$work/check.img"
cmp -s "$work/check.img" "$work/disk.img" || die "the qcow2 image does not read back as the disk"
rm -f "$work/disk.img"
table=$(sfdisk -d "$work/check.img")
grep -q 'start= *2048,.*type=c, bootable' <<<"$table" || die "bad partition 1: $table"
grep -q "start= *$((root_start_mib * 2048)),.*type=83" <<<"$table" || die "bad partition 2: $table"
dd if="$work/check.img" of="$work/check-root.img" bs=1M skip=$root_start_mib conv=sparse status=none
rm -f "$work/check.img"
stat_of() { debugfs -R "stat $1" "$work/check-root.img" 2>/dev/null; }
for path in /usr/bin/cloud-init /usr/sbin/sshd /usr/bin/sudo /usr/bin/growpart /usr/sbin/dmidecode \
  /usr/lib/systemd/systemd /etc/cloud/cloud.cfg.d/90_kiln_fixture.cfg /etc/fstab /etc/environment; do
  s=$(stat_of "$path")
  grep -q 'Type: regular' <<<"$s" && grep -q 'User: *0 *Group: *0' <<<"$s" ||
    die "$path missing, not a file or not root-owned in the root filesystem"
done
grep -q 'Mode: *04755' <<<"$(stat_of /usr/bin/sudo)" || die "/usr/bin/sudo is not setuid root"
grep -q 'Size: 0' <<<"$(stat_of /etc/machine-id)" || die "/etc/machine-id is not empty"
if debugfs -R 'ls /etc/ssh' "$work/check-root.img" 2>/dev/null | grep -q ssh_host_; then
  die "SSH host keys were left in the image"
fi
debugfs -R 'cat /etc/fstab' "$work/check-root.img" 2>/dev/null | grep -q "^UUID=$uuid" ||
  die "/etc/fstab does not name the root by UUID $uuid"
rm -f "$work/check-root.img"

(cd "$work/out" && sha256sum "$image_name" >"$image_name.sha256")
{
  echo "kernel $kver"
  echo "$versions"
} >"$work/out/packages.txt"

# Into place: the directory appears whole or not at all.
if [ -e "$dest" ]; then
  mv "$dest" "$work/old"
fi
mv "$work/out" "$dest"
size=$(du -k "$image" | cut -f1)
log "built $image ($((size / 1024)) MiB on disk, ${disk_mib} MiB virtual) in $((SECONDS - start)) s"
echo "$image" >&3
