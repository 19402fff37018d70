#!/usr/bin/env bash
# Builds the kiln VM fixture: small BIOS-bootable qcow2 disk images made
# from Debian packages (kernel, busybox, dropbear, sftp-server) with
# unprivileged tools only, cached outside the repository. Three images come
# from one build, differing only in /etc/cloud/cloud.cfg and the boot menu:
#   default    root is the default user and may log in (fixture.qcow2)
#   cloud      like a cloud image: default user ubuntu (uid 1000, sudo),
#              root refused with cloud-init's "Please login as" command
#              (fixture-cloud.qcow2)
#   installer  like default, but syslinux waits at a "boot:" prompt for a
#              minute, as an installer CD does, so a typed boot command
#              (kernel arguments such as kiln.fetch=URL) matters
#              (fixture-installer.qcow2)
#
#   build.sh [default|cloud|installer]
#
# Prints the absolute path of the image asked for (default: the default
# one) as the last line on stdout; all other output goes to stderr. See
# vm-fixtures/README.md.
#
# Environment:
#   KILN_FIXTURE_CACHE       cache directory
#                            (default ${XDG_CACHE_HOME:-$HOME/.cache}/kiln/vm-fixtures)
#   KILN_FIXTURE_KERNEL_PKG  kernel package (default: what linux-image-cloud-amd64
#                            depends on in apt's candidate version)
#   KILN_FIXTURE_REBUILD=1   build again even if a good image is cached
set -euo pipefail

# stdout is kept for the final path only.
exec 3>&1 1>&2

variant=${1:-default}
case "$variant" in
  default) image_name=fixture.qcow2 ;;
  cloud) image_name=fixture-cloud.qcow2 ;;
  installer) image_name=fixture-installer.qcow2 ;;
  *) echo "fixture: error: unknown variant '$variant' (default, cloud or installer)" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files=$here/files

log() { echo "fixture: $*" >&2; }
die() { echo "fixture: error: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------

need_tools() {
  local missing=() pair tool pkg
  for pair in "$@"; do
    tool=${pair%%:*} pkg=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (Debian package $pkg)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'fixture: error: missing tool: %s\n' "${missing[@]}" >&2
    echo "fixture: scripts/setup.sh installs them all" >&2
    exit 1
  fi
}
need_tools apt-get:apt apt-cache:apt dpkg-deb:dpkg sha256sum:coreutils flock:util-linux \
  qemu-img:qemu-utils

# Tools that sfdisk, mkfs.vfat and friends need are looked up in sbin too,
# which is not on a normal user's PATH.
export PATH=$PATH:/usr/sbin:/sbin

# --- inputs and cache key ----------------------------------------------------

if [ -z "${KILN_FIXTURE_CACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ] && [ -z "${HOME:-}" ]; then
  die "set KILN_FIXTURE_CACHE (or XDG_CACHE_HOME or HOME) to say where to cache the image"
fi
cache=${KILN_FIXTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln/vm-fixtures}
mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)

kernel_pkg=${KILN_FIXTURE_KERNEL_PKG:-}
if [ -z "$kernel_pkg" ]; then
  kernel_pkg=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^Depends: //p' | tr ',' '\n' | grep -oE 'linux-image-[0-9][^ ]*-cloud-amd64' | head -n 1 || true)
  [ -n "$kernel_pkg" ] ||
    die "apt knows no linux-image-cloud-amd64; run 'apt-get update' (Debian 12 sources needed)"
fi

# Userland: busybox (all tools), dash as /bin/sh (busybox's ash runs its
# own applets before anything on PATH, so /sbin/halt and friends could not
# be replaced), dropbear (SSH server), OpenSSH's sftp-server, and the
# shared libraries they use.
packages=("$kernel_pkg" busybox-static dash dropbear-bin openssh-sftp-server
  libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g)

# 'URI' filename size SHA256:hash for the versions apt resolves (offline).
uris=$(apt-get download --print-uris "${packages[@]}" 2>&1) ||
  die "apt cannot resolve the packages: $uris"
uris=$(grep "^'" <<<"$uris" | sort)
[ "$(wc -l <<<"$uris")" -eq "${#packages[@]}" ] ||
  die "apt resolved $(wc -l <<<"$uris") of ${#packages[@]} packages:"$'\n'"$uris"

key=$(
  {
    echo "kiln-vm-fixture 2"
    cd "$here" && find build.sh modules.txt files -type f | LC_ALL=C sort | xargs sha256sum
    awk '{print $2, $4}' <<<"$uris"
  } | sha256sum | cut -c1-16
)
dest=$cache/$key
image=$dest/$image_name

verify_cached() {
  local name
  for name in fixture.qcow2 fixture-cloud.qcow2 fixture-installer.qcow2; do
    [ -f "$dest/$name" ] && [ -f "$dest/$name.sha256" ] || return 1
    (cd "$dest" && sha256sum --quiet -c "$name.sha256" >/dev/null 2>&1) || return 1
  done
}

# One builder at a time; the others wait and then find the image cached.
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

need_tools sfdisk:fdisk mkfs.vfat:dosfstools syslinux:syslinux mcopy:mtools mke2fs:e2fsprogs \
  debugfs:e2fsprogs cpio:cpio gzip:gzip depmod:kmod modprobe:kmod
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr_bin" ] || die "missing $mbr_bin (Debian package syslinux-common)"

# --- build -----------------------------------------------------------------

# Holding the lock, any build directory left is from a build that was killed.
rm -rf "$cache"/build.??????
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building into $work (key $key)"

# Download (or reuse) the packages, checking apt's sha256 of each.
debs=()
while read -r uri file size hash; do
  deb=$cache/debs/$file
  want=${hash#SHA256:}
  if [ ! -f "$deb" ] || [ "$(sha256sum <"$deb" | cut -d' ' -f1)" != "$want" ]; then
    uri=${uri#\'} uri=${uri%\'}
    name=${file%%_*} version=${file#*_} version=${version%_*}
    version=${version//%3a/:}
    log "downloading $name $version"
    sandbox=()
    [ "$(id -u)" != 0 ] || sandbox=(-o APT::Sandbox::User=root)
    (cd "$work" && apt-get download -q "${sandbox[@]}" "$name=$version" >&2) ||
      die "apt-get download $name=$version failed"
    got=$(ls "$work"/"${name}"_*.deb | head -n 1)
    [ "$(sha256sum <"$got" | cut -d' ' -f1)" = "$want" ] || die "bad sha256 for $got"
    mv "$got" "$deb"
  fi
  debs+=("$deb")
done <<<"$uris"

x=$work/x
mkdir -p "$x"
for deb in "${debs[@]}"; do
  dpkg-deb -x "$deb" "$x"
done

kver=$(ls "$x/lib/modules" | head -n 1)
[ -n "$kver" ] && [ -f "$x/boot/vmlinuz-$kver" ] || die "no kernel in $kernel_pkg"
log "kernel $kver"

# --- initramfs: busybox, modules, /init ----------------------------------------

initrd=$work/initrd
mkdir -p "$initrd"/{bin,sbin,dev,proc,sys,newroot,lib/modules}
cp "$x/bin/busybox" "$initrd/bin/busybox"
for applet in sh mount umount insmod findfs sleep cat cut switch_root mkdir echo; do
  ln -s busybox "$initrd/bin/$applet"
done
cp "$files/init" "$initrd/init"
chmod 755 "$initrd/init"

depmod -b "$x" "$kver"
: >"$initrd/modules.list"
grep -v '^[[:space:]]*\(#\|$\)' "$here/modules.txt" | while read -r mod; do
  modprobe -d "$x" -S "$kver" --show-depends "$mod" ||
    die "module $mod not in $kernel_pkg"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
  cp "$ko" "$initrd/lib/modules/"
  basename "$ko" >>"$initrd/modules.list"
done
log "initramfs modules: $(tr '\n' ' ' <"$initrd/modules.list")"

(cd "$initrd" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 >"$work/initrd.gz"

# --- root filesystem -----------------------------------------------------------

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib/openssh,lib/x86_64-linux-gnu,lib64} \
  "$root"/{etc/init.d,etc/dropbear,etc/acpi/PWRF,root/.ssh,home,tmp,run,proc,sys,dev,mnt} \
  "$root"/var/{lib/fixture,log,tmp,spool}
ln -s /run "$root/var/run"
ln -s /run/lock "$root/var/lock"

cp "$x/bin/busybox" "$root/bin/busybox"
"$x/bin/busybox" --list-full | while read -r path; do
  case "$path" in
    bin/busybox | bin/sh | sbin/halt | sbin/shutdown) continue ;;
  esac
  rel=$(dirname "$path" | sed 's#[^/][^/]*#..#g')
  ln -sf "$rel/bin/busybox" "$root/$path"
done
ln -sf ../bin/busybox "$root/sbin/init"
install -m 755 "$x/bin/dash" "$root/bin/dash"
ln -s dash "$root/bin/sh"

install -m 755 "$x/usr/sbin/dropbear" "$root/usr/sbin/dropbear"
install -m 755 "$x/usr/bin/dropbearkey" "$root/usr/bin/dropbearkey"
install -m 755 "$x/usr/lib/openssh/sftp-server" "$root/usr/lib/openssh/sftp-server"
# Where dropbear looks for the SFTP server (see `strings dropbear`).
ln -s openssh/sftp-server "$root/usr/lib/sftp-server"
mkdir -p "$root/usr/libexec"
ln -s ../lib/openssh/sftp-server "$root/usr/libexec/sftp-server"

# Shared libraries from the Debian packages: the packaged loader lists
# what each binary needs, looked up in the extracted packages only.
loader=$x/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libpath=$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu
libs=()
for elf in bin/dash usr/sbin/dropbear usr/bin/dropbearkey usr/lib/openssh/sftp-server; do
  out=$("$loader" --inhibit-cache --library-path "$libpath" --list "$root/$elf" 2>&1) ||
    die "cannot list the libraries of $elf: $out"
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    case "$name" in */*) continue ;; esac   # the loader itself
    case "$path" in
      "$x"/*) ;;
      *) die "$elf needs $name, which none of the packages has (found: $path)" ;;
    esac
    cp -L "$path" "$root/lib/x86_64-linux-gnu/$name"
    libs+=("$name")
  done <<<"$out"
done
cp -L "$loader" "$root/lib/x86_64-linux-gnu/"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
log "libraries: $(printf '%s\n' "${libs[@]}" | sort -u | tr '\n' ' ')"
# Check that everything resolves inside the root alone.
for elf in bin/dash usr/sbin/dropbear usr/bin/dropbearkey usr/lib/openssh/sftp-server; do
  out=$("$root/lib64/ld-linux-x86-64.so.2" --inhibit-cache \
    --library-path "$root/lib/x86_64-linux-gnu" --list "$root/$elf" 2>&1) ||
    die "cannot resolve the libraries of $elf: $out"
  if grep '=>' <<<"$out" | grep -v "=> $root/" | grep -q .; then
    die "$elf needs libraries from outside the image: $out"
  fi
done

# Configuration.
install -m 755 "$files/rcS" "$root/etc/init.d/rcS"
install -m 755 "$files/rcK" "$root/etc/init.d/rcK"
install -m 644 "$files/inittab" "$root/etc/inittab"
install -m 755 "$files/shutdown" "$root/sbin/shutdown"
install -m 755 "$files/halt" "$root/sbin/halt"
install -m 755 "$files/power-button" "$root/etc/acpi/PWRF/00000080"
mkdir -p "$root/usr/lib/fixture" "$root/usr/lib/fixture-sudo" "$root/etc/cloud" "$root/var/lib/cloud"
install -m 755 "$files/cloud-init" "$root/usr/lib/fixture/cloud-init"
install -m 644 "$files/yaml-flat" "$root/usr/lib/fixture/yaml-flat"
install -m 755 "$files/udhcpc" "$root/usr/lib/fixture/udhcpc"
install -m 755 "$files/sudo" "$root/usr/bin/sudo"
# The setuid busybox behind sudo: mode and group are set in the ext4
# below (4750 root:sudo); only start-stop-daemon may keep root.
cp "$x/bin/busybox" "$root/usr/lib/fixture-sudo/busybox"
chmod 750 "$root/usr/lib/fixture-sudo/busybox"
printf '[SUID]\nstart-stop-daemon = sx- root.sudo\n' >"$root/etc/busybox.conf"
chmod 644 "$root/etc/busybox.conf"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
sudo:x:27:
nogroup:x:65534:
EOF
chmod 640 "$root/etc/shadow"
printf '/bin/sh\n/bin/dash\n/bin/ash\n' >"$root/etc/shells"
echo kiln-fixture >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
ln -s /proc/mounts "$root/etc/mtab"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
cat >"$root/etc/profile" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PS1='\h:\w\$ '
EOF
cat >"$root/etc/os-release" <<EOF
NAME="kiln VM fixture"
ID=kiln-fixture
PRETTY_NAME="kiln VM fixture (busybox, dropbear, Debian kernel $kver)"
EOF
awk '{print $2}' <<<"$uris" | sed 's/%3a/:/g' >"$root/etc/fixture-packages"
: >"$root/root/.ssh/authorized_keys"
chmod 700 "$root/root" "$root/root/.ssh"
chmod 600 "$root/root/.ssh/authorized_keys"
chmod 755 "$root/home"
chmod 1777 "$root/tmp" "$root/var/tmp"

# --- disk: MBR, FAT boot partition with syslinux, ext4 root ------------------------

disk_mib=1024      # virtual size of the disk
boot_start_mib=1
boot_mib=40        # kernel (~14 MiB), initramfs and syslinux
root_start_mib=$((boot_start_mib + boot_mib))
root_mib=$((disk_mib - root_start_mib))

mkfs.vfat -C -n KILNBOOT "$work/boot.img" $((boot_mib * 1024)) >/dev/null
syslinux --install "$work/boot.img"
mcopy -i "$work/boot.img" "$x/boot/vmlinuz-$kver" ::vmlinuz
mcopy -i "$work/boot.img" "$work/initrd.gz" ::initrd.gz

mkdir -p "$work/out"

# cloud_cfg VARIANT: the settings files/cloud-init reads, as cloud-init's
# own /etc/cloud/cloud.cfg spells them.
cloud_cfg() {
  echo "# The kiln fixture's cloud-init settings (variant $1), read at the first"
  echo "# boot of each instance by /usr/lib/fixture/cloud-init."
  case "$1" in
    default) printf 'disable_root: false\nsystem_info:\n  default_user:\n    name: root\n' ;;
    cloud) printf 'disable_root: true\nsystem_info:\n  default_user:\n    name: ubuntu\n    groups: [sudo]\n' ;;
  esac
}

# make_image VARIANT NAME SYSLINUX_CFG: the disk of one variant, checked, as
# $work/out/NAME.
make_image() {
  local variant=$1 name=$2 menu=$3 path stat table
  cp "$work/boot.img" "$work/boot-menu.img"
  mcopy -i "$work/boot-menu.img" "$files/$menu" ::syslinux.cfg
  cloud_cfg "$variant" >"$root/etc/cloud/cloud.cfg"
  chmod 644 "$root/etc/cloud/cloud.cfg"
  rm -f "$work/root.img" "$work/disk.img"

  # ext4 root. Files are owned by whoever runs this script; debugfs makes
  # them all root's afterwards, so the result is the same with or without
  # root. The sudo busybox is setuid root, for group sudo (27) only.
  mke2fs -q -t ext4 -L kiln-root -d "$root" -m 0 -N 16384 \
    -E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
    "$work/root.img" "${root_mib}M"
  {
    if [ "$(id -u)" != 0 ]; then
      (cd "$root" && find . -mindepth 1 | sed 's#^\.##') | while read -r path; do
        printf 'sif "%s" uid 0\nsif "%s" gid 0\n' "$path" "$path"
      done
    fi
    printf 'sif /usr/lib/fixture-sudo/busybox gid 27\nsif /usr/lib/fixture-sudo/busybox mode 0104750\n'
  } >"$work/chown.debugfs"
  debugfs -w -f "$work/chown.debugfs" "$work/root.img" >/dev/null 2>"$work/debugfs.log" ||
    die "debugfs failed: $(cat "$work/debugfs.log")"
  e2fsck -fn "$work/root.img" >/dev/null 2>&1 || die "the new root filesystem does not check clean"

  truncate -s "${disk_mib}M" "$work/disk.img"
  printf '%s\n' 'label: dos' \
    "start=${boot_start_mib}MiB, size=${boot_mib}MiB, type=c, bootable" \
    "start=${root_start_mib}MiB, size=${root_mib}MiB, type=83" | sfdisk -q "$work/disk.img"
  dd if="$mbr_bin" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none
  dd if="$work/boot-menu.img" of="$work/disk.img" bs=1M seek=$boot_start_mib conv=notrunc,sparse status=none
  dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$root_start_mib conv=notrunc,sparse status=none

  qemu-img convert -f raw -O qcow2 "$work/disk.img" "$work/out/$name"

  # Checks.
  qemu-img check -q -f qcow2 "$work/out/$name" || die "qemu-img check failed"
  qemu-img convert -f qcow2 -O raw "$work/out/$name" "$work/check.img"
  cmp -s "$work/check.img" "$work/disk.img" || die "the qcow2 image does not read back as the disk"
  table=$(sfdisk -d "$work/check.img")
  grep -q 'start= *2048,.*type=c, bootable' <<<"$table" || die "bad partition 1: $table"
  grep -q "start= *$((root_start_mib * 2048)),.*type=83" <<<"$table" || die "bad partition 2: $table"
  dd if="$work/check.img" of="$work/check-root.img" bs=1M skip=$root_start_mib count=$root_mib \
    conv=sparse status=none
  for path in /bin/busybox /bin/dash /etc/init.d/rcS /usr/sbin/dropbear /usr/lib/openssh/sftp-server \
    /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/fixture/cloud-init /etc/cloud/cloud.cfg; do
    stat=$(debugfs -R "stat $path" "$work/check-root.img" 2>/dev/null)
    grep -q 'Type: regular' <<<"$stat" && grep -q 'User: *0 *Group: *0' <<<"$stat" ||
      die "$path missing, not a file or not root-owned in the root filesystem"
  done
  stat=$(debugfs -R "stat /usr/lib/fixture-sudo/busybox" "$work/check-root.img" 2>/dev/null)
  grep -q 'Mode: *04750' <<<"$stat" && grep -q 'User: *0 *Group: *27' <<<"$stat" ||
    die "the sudo busybox is not setuid root for group sudo: $stat"
  debugfs -R "cat /etc/cloud/cloud.cfg" "$work/check-root.img" 2>/dev/null | cmp -s - "$root/etc/cloud/cloud.cfg" ||
    die "/etc/cloud/cloud.cfg of variant $variant does not read back"
  mdir -i "$work/check.img@@${boot_start_mib}M" ::vmlinuz >/dev/null || die "no kernel in the boot partition"
  mtype -i "$work/check.img@@${boot_start_mib}M" ::syslinux.cfg | tr -d '\r' | cmp -s - "$files/$menu" ||
    die "the boot menu of $name does not read back as $menu"
  rm -f "$work/check.img" "$work/check-root.img" "$work/disk.img"
  (cd "$work/out" && sha256sum "$name" >"$name.sha256")
}

make_image default fixture.qcow2 syslinux.cfg
make_image cloud fixture-cloud.qcow2 syslinux.cfg
# The installer variant's root filesystem is the default one.
make_image default fixture-installer.qcow2 syslinux-installer.cfg

{
  echo "kernel $kver"
  awk '{print $2}' <<<"$uris" | sed 's/%3a/:/g'
} >"$work/out/packages.txt"

# Into place: the directory appears whole or not at all.
if [ -e "$dest" ]; then
  mv "$dest" "$work/old"
fi
mv "$work/out" "$dest"
size=$(du -k "$image" | cut -f1)
log "built $image ($((size / 1024)) MiB on disk, ${disk_mib} MiB virtual)"
echo "$image" >&3
