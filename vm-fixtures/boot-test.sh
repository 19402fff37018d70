#!/usr/bin/env bash
# Checks the fixture image end to end under QEMU TCG:
#   1. ISO seed (genisoimage, Joliet + Rock Ridge): boot, time to SSH,
#      first-boot marker, commands, SFTP upload, `poweroff`.
#   2. Same disk, FAT seed (mkfs.vfat -n CIDATA) with a new instance-id
#      and a disk grown by qemu-img resize: boot, SFTP, QMP power button.
#   3. Same disk, no seed: boots, keys kept, `shutdown -h now`.
#   4. Same disk, disk as IDE: boots, `halt -p`.
#   5. Same disk on virtio-scsi and on NVMe: boots, `poweroff`.
# After every power-off, a file written over SSH is read back from the
# disk with debugfs.
#
# Usage: vm-fixtures/boot-test.sh [IMAGE]   (default: what build.sh prints)
# BOOT_TEST_RUNS=N adds N extra boots just to time boot-to-SSH;
# BOOT_TEST_KEEP=1 keeps the scratch directory (disk, serial logs);
# BOOT_TEST_QEMU_ARGS adds QEMU arguments (split on spaces), e.g.
# "-boot once=d -machine pc,accel=tcg" as Packer passes them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
image=${1:-$("$here/build.sh" | tail -n 1)}
t=$(mktemp -d "${TMPDIR:-/tmp}/fixture-test.XXXXXX")
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  if [ "${BOOT_TEST_KEEP:-0}" = 1 ]; then
    echo "boot-test: kept $t (serial logs: serial-N.log)" >&2
  else
    rm -rf "$t"
  fi
}
trap cleanup EXIT

say() { echo "boot-test: $*"; }
fail() {
  echo "boot-test: FAIL: $*" >&2
  if [ -f "$t/serial.log" ]; then
    echo "--- serial console ---" >&2
    tail -n 40 "$t/serial.log" >&2
  fi
  exit 1
}

ssh-keygen -q -t ed25519 -N '' -C fixture-test -f "$t/key"
port=$((20000 + RANDOM % 20000))
ssh_opts=(-i "$t/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=10 -o BatchMode=yes)
gssh() { ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 "$@"; }
gsftp() { sftp "${ssh_opts[@]}" -P "$port" -b - root@127.0.0.1; }

make_seed_files() { # instance-id hostname
  mkdir -p "$t/seed"
  cat >"$t/seed/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - "$(cat "$t/key.pub")"
EOF
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$1" "$2" >"$t/seed/meta-data"
}
iso_seed() {
  make_seed_files "$1" "$2"
  genisoimage -quiet -output "$t/seed.iso" -volid cidata -joliet -rock \
    "$t/seed/user-data" "$t/seed/meta-data"
  seed_args=(-drive "file=$t/seed.iso,media=cdrom,readonly=on")
}
vfat_seed() {
  make_seed_files "$1" "$2"
  rm -f "$t/seed.img"
  mkfs.vfat -C -n CIDATA "$t/seed.img" 1440 >/dev/null
  mcopy -i "$t/seed.img" "$t/seed/user-data" "$t/seed/meta-data" ::
  seed_args=(-drive "file=$t/seed.img,format=raw,if=virtio,readonly=on")
}

# boot DISK_IF: starts QEMU, waits for the SSH banner, sets boot_time.
# DISK_IF is a QEMU if= value, or virtio-scsi or nvme.
boot() {
  local disk_if=$1 disk_args
  case "$disk_if" in
    virtio-scsi)
      disk_args=(-device virtio-scsi-pci,id=scsi0 -drive "file=$t/disk.qcow2,format=qcow2,if=none,id=d0"
        -device scsi-hd,drive=d0,bus=scsi0.0) ;;
    nvme)
      disk_args=(-drive "file=$t/disk.qcow2,format=qcow2,if=none,id=d0" -device nvme,drive=d0,serial=fixture) ;;
    *) disk_args=(-drive "file=$t/disk.qcow2,format=qcow2,if=$disk_if") ;;
  esac
  boots=$((boots + 1))
  rm -f "$t/qmp.sock"
  [ ! -f "$t/serial.log" ] || mv "$t/serial.log" "$t/serial-$((boots - 1)).log"
  local start end
  start=$(date +%s%N)
  qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none \
    -serial "file:$t/serial.log" \
    "${disk_args[@]}" ${seed_args[@]+"${seed_args[@]}"} \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    -qmp "unix:$t/qmp.sock,server=on,wait=off" ${BOOT_TEST_QEMU_ARGS:-} &
  qemu_pid=$!
  local i=0
  while :; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited during boot"
    if banner=$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 4 <&3" 2>/dev/null) &&
      [ "$banner" = SSH- ]; then
      break
    fi
    i=$((i + 1))
    [ $i -lt 2400 ] || fail "no SSH after 120 s"
    sleep 0.05
  done
  end=$(date +%s%N)
  boot_time=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
  say "boot-to-SSH ($disk_if): ${boot_time} s"
}

# wait_off: QEMU must exit by itself within 30 s.
wait_off() {
  local i=0
  while kill -0 "$qemu_pid" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] || fail "QEMU still running 30 s after $1"
    sleep 0.1
  done
  wait "$qemu_pid" || true
  qemu_pid=
  say "powered off by $1 in $((i / 10)).$((i % 10)) s"
}

# read_back PATH EXPECTED: the file on the root partition of the disk.
read_back() {
  qemu-img convert -O raw "$t/disk.qcow2" "$t/raw.img"
  local start size
  read -r start size < <(sfdisk -d "$t/raw.img" | grep 'start=' | sed -n '2s/.*start= *\([0-9]*\), *size= *\([0-9]*\).*/\1 \2/p')
  [ -n "$start" ] || fail "no partition 2 on the disk"
  dd if="$t/raw.img" of="$t/root.img" bs=512 skip="$start" count="$size" conv=sparse status=none
  local got
  got=$(debugfs -R "cat $1" "$t/root.img" 2>/dev/null)
  [ "$got" = "$2" ] || fail "$1 on the disk is '$got', expected '$2'"
  e2fsck -fn "$t/root.img" >/dev/null 2>&1 || fail "the root filesystem is not clean after power-off"
  say "$1 read back from the disk with debugfs; filesystem clean"
  rm -f "$t/raw.img" "$t/root.img"
}

qmp_powerdown() {
  if command -v socat >/dev/null; then
    printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' |
      socat - "UNIX-CONNECT:$t/qmp.sock" >/dev/null
  else
    python3 - "$t/qmp.sock" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(4096)
s.sendall(b'{"execute":"qmp_capabilities"}\n'); time.sleep(0.2); s.recv(4096)
s.sendall(b'{"execute":"system_powerdown"}\n'); time.sleep(0.2); s.recv(4096)
EOF
  fi
}

times=()
boots=0
qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$t/disk.qcow2"

# 1. ISO seed, first boot, poweroff.
iso_seed iid-one fixture-one
boot virtio
times+=("$boot_time")
grep -q 'fixture: ssh up' "$t/serial.log" || fail "no 'fixture: ssh up' on the serial console"
[ "$(gssh hostname)" = fixture-one ] || fail "hostname from meta-data not set"
gssh 'cat /var/lib/fixture/first-boot' | grep -q 'instance-id: iid-one' || fail "no first-boot marker"
gssh 'id -u; uname -r; echo $HOME; ls -ld /root/.ssh /root/.ssh/authorized_keys' | sed 's/^/  guest: /'
echo "hello from sftp" >"$t/upload.txt"
mkdir -p "$t/updir/sub" && echo nested >"$t/updir/sub/file"
printf 'put %s /root/upload.txt\nmkdir /root/updir\nput -r %s/sub /root/updir/\nls -l /root\n' \
  "$t/upload.txt" "$t/updir" | gsftp >/dev/null || fail "sftp upload"
[ "$(gssh cat /root/upload.txt)" = "hello from sftp" ] || fail "uploaded file differs"
[ "$(gssh cat /root/updir/sub/file)" = nested ] || fail "uploaded directory differs"
printf '#!/bin/sh\necho "script ran as $(id -un) with $GREETING"\n' >"$t/script.sh"
printf 'put %s /tmp/script.sh\n' "$t/script.sh" | gsftp >/dev/null
[ "$(gssh 'chmod +x /tmp/script.sh && GREETING=hi /tmp/script.sh')" = "script ran as root with hi" ] ||
  fail "shell provisioner-style script"
gssh 'echo one > /root/written-1' || fail "write over ssh"
gssh poweroff || true
wait_off poweroff
read_back /root/written-1 one
read_back /root/upload.txt "hello from sftp"

# 2. FAT seed, new instance, grown disk, ACPI power button.
qemu-img resize -q "$t/disk.qcow2" 2G
vfat_seed iid-two fixture-two
boot virtio
times+=("$boot_time")
[ "$(gssh hostname)" = fixture-two ] || fail "hostname from the FAT seed not set"
gssh 'cat /var/lib/fixture/first-boot' | grep -q 'instance-id: iid-two' || fail "no new first-boot marker"
[ "$(gssh 'grep -c . /var/lib/fixture/boots.log')" = 2 ] || fail "boots.log should have 2 lines"
gssh 'echo two > /root/written-2; cat /proc/partitions' | sed 's/^/  guest: /'
sleep 1
qmp_powerdown
wait_off "QMP system_powerdown (ACPI power button)"
read_back /root/written-2 two
grep -q 'power button' "$t/serial.log" || fail "power button not seen by acpid"

# 3. No seed: same instance, keys kept, shutdown -h now.
seed_args=()
boot virtio
times+=("$boot_time")
gssh 'cat /var/lib/fixture/first-boot' | grep -q 'instance-id: iid-two' || fail "first-boot marker changed without a seed"
gssh 'tail -n 1 /var/lib/fixture/boots.log' | grep -q 'seed=none first-boot=no' || fail "boots.log without seed"
gssh 'echo three > /root/written-3'
for alg in ecdsa-sha2-nistp256 rsa-sha2-256; do
  s0=$(date +%s%N)
  [ "$(gssh -o HostKeyAlgorithms=$alg echo ok)" = ok ] || fail "no login with a $alg host key"
  say "login with a $alg host key (made on demand): $(( ($(date +%s%N) - s0) / 1000000 )) ms"
done
gssh 'shutdown -h now' || true
wait_off "shutdown -h now"
read_back /root/written-3 three

# 4. Disk on IDE, ISO seed with the same instance-id: halt -p.
iso_seed iid-two fixture-two
boot ide
times+=("$boot_time")
gssh 'echo four > /root/written-4; tail -n 1 /var/lib/fixture/boots.log' | sed 's/^/  guest: /'
gssh 'halt -p' || true
wait_off "halt -p"
read_back /root/written-4 four

# 5. Other disk controllers the kernel has drivers for.
for disk_if in virtio-scsi nvme; do
  boot "$disk_if"
  times+=("$boot_time")
  gssh 'echo "root on $(grep " / " /proc/mounts | cut -d" " -f1)"' | sed 's/^/  guest: /'
  gssh poweroff || true
  wait_off poweroff
done

# Extra timing runs (fresh overlay each, ISO seed).
for _ in $(seq 1 "${BOOT_TEST_RUNS:-0}"); do
  rm -f "$t/disk.qcow2"
  qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$t/disk.qcow2"
  iso_seed "iid-$RANDOM" timing
  boot virtio
  times+=("$boot_time")
  gssh 'shutdown -P now' || true
  wait_off "shutdown -P now"
done

say "PASS; boot-to-SSH times: ${times[*]} s"
