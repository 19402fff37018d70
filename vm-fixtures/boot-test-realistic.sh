#!/usr/bin/env bash
# Checks the realistic fixture image under QEMU TCG (machine pc, virtio
# disk, user networking), each boot from a fresh overlay with a NoCloud
# seed ISO that gives the default user a new ed25519 key:
#   1. disk grown by 1 GiB: SSH as ubuntu with the key, sudo -n, root
#      refused, sbin on a non-interactive SSH command's PATH,
#      `cloud-init status --wait` done, the root filesystem grew, apt-get
#      update reaches the mirror, DMI readable, machine-id set, host keys
#      made at boot; `cloud-init clean` and a reboot as a new instance.
#   2. QEMU user net on 169.254.169.0/24 (as kiln's googlecompute builder
#      uses): DHCP lease in that net and SSH.
# Prints the time from QEMU's start to SSH and to cloud-init done.
#
# Usage: vm-fixtures/boot-test-realistic.sh [IMAGE]  (default: what build-realistic.sh prints)
# BOOT_TEST_KEEP=1 keeps the scratch directory (disks, serial logs);
# BOOT_TEST_TIMEOUT=seconds to wait for SSH (default 900: TCG on a busy machine).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${1:-$("$here/build-realistic.sh" | tail -n 1)}
timeout_s=${BOOT_TEST_TIMEOUT:-900}
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
serial=
fail() {
  echo "boot-test: FAIL: $*" >&2
  if [ -n "$serial" ] && [ -f "$serial" ]; then
    echo "--- serial console ---" >&2
    tail -n 40 "$serial" >&2
  fi
  exit 1
}
for tool in qemu-system-x86_64 qemu-img ssh ssh-keygen genisoimage awk; do
  command -v "$tool" >/dev/null || fail "missing $tool (scripts/setup.sh installs it)"
done

ssh-keygen -q -t ed25519 -N '' -C fixture-test -f "$t/key"
ssh_opts=(-i "$t/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=10 -o BatchMode=yes)
port=
gssh() { ssh "${ssh_opts[@]}" -p "$port" ubuntu@127.0.0.1 "$@"; }

elapsed() { awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# seed N INSTANCE-ID: $t/seed-N.iso
seed() {
  mkdir -p "$t/seed-$1"
  printf '#cloud-config\nssh_authorized_keys:\n  - "%s"\n' "$(cat "$t/key.pub")" >"$t/seed-$1/user-data"
  printf 'instance-id: %s\nlocal-hostname: realistic-%s\n' "$2" "$1" >"$t/seed-$1/meta-data"
  genisoimage -quiet -output "$t/seed-$1.iso" -volid cidata -joliet -rock \
    "$t/seed-$1/user-data" "$t/seed-$1/meta-data"
}

# boot N NETDEV_EXTRA: starts QEMU on $t/disk-N.qcow2, waits for SSH.
boot() {
  local n=$1 extra=$2
  port=$((20000 + RANDOM % 20000))
  serial=$t/serial-$n.log
  start=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -machine pc -m 1024 -smp 1 -nographic \
    -drive "file=$t/disk-$n.qcow2,if=virtio" -cdrom "$t/seed-$n.iso" \
    -netdev "user,id=n0${extra},hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    >"$serial" 2>&1 </dev/null &
  qemu_pid=$!
  local deadline=$((SECONDS + timeout_s))
  until gssh true 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited"
    [ "$SECONDS" -lt "$deadline" ] || fail "no SSH login as ubuntu after ${timeout_s} s"
    sleep 2
  done
  ssh_s=$(elapsed)
  say "boot $n: SSH as ubuntu after ${ssh_s} s"
}
stop() {
  gssh 'sudo systemctl poweroff' 2>/dev/null || true
  local i
  for i in $(seq 1 120); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
}

# --- 1: the checks, on a disk grown by 1 GiB -------------------------------------
seed 1 iid-realistic-1
qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$t/disk-1.qcow2"
virtual=$(qemu-img info "$image" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p')
[ -n "$virtual" ] || fail "cannot read the virtual size of $image"
qemu-img resize -q "$t/disk-1.qcow2" +1G
boot 1 ""
gssh 'cloud-init status --wait' >"$t/status" 2>&1 || fail "cloud-init status --wait: $(cat "$t/status")"
grep -q 'status: done' "$t/status" || fail "cloud-init did not finish cleanly: $(cat "$t/status")"
done_s=$(elapsed)
say "cloud-init done after ${done_s} s"

[ "$(gssh id -un)" = ubuntu ] || fail "not logged in as ubuntu"
gssh 'sudo -n true' || fail "sudo -n true failed"
gssh 'id -nG' | grep -qw sudo || fail "ubuntu is not in group sudo"
gssh 'command -v sysctl' | grep -q /sysctl || fail "sysctl not on a non-interactive SSH command's PATH"
gssh 'bash -lc "command -v sysctl"' | grep -q /sysctl || fail "sysctl not on a login shell's PATH"
out=$(ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 true 2>&1) && fail "root logged in"
grep -q 'Please login as the user "ubuntu"' <<<"$out" || fail "root was not told to log in as ubuntu: $out"
ssh "${ssh_opts[@]}" -o PreferredAuthentications=password -o BatchMode=yes -p "$port" ubuntu@127.0.0.1 true \
  2>/dev/null && fail "password authentication accepted"
root_bytes=$(gssh 'df -B1 --output=size / | tail -n 1' | tr -d ' ')
[ "$root_bytes" -gt "$virtual" ] ||
  fail "root filesystem ($root_bytes bytes) did not grow past the image's virtual size ($virtual)"
say "root filesystem grew to $((root_bytes / 1048576)) MiB (image: $((virtual / 1048576)) MiB)"
gssh 'sudo apt-get update' >"$t/apt.log" 2>&1 || fail "apt-get update failed: $(tail -n 5 "$t/apt.log")"
grep -q 'deb.debian.org\|Hit:\|Get:' "$t/apt.log" || fail "apt-get update reached no mirror: $(cat "$t/apt.log")"
product=$(gssh 'cat /sys/class/dmi/id/product_name') || fail "cannot read the DMI product name"
say "DMI product name: $product"
gssh 'sudo dmidecode -s system-product-name' >/dev/null || fail "dmidecode failed"
[ -n "$(gssh 'cat /etc/machine-id')" ] || fail "no machine-id made at boot"
gssh 'ls /etc/ssh/ssh_host_ed25519_key.pub' >/dev/null || fail "no SSH host key made at boot"
gssh 'sudo cloud-init query v1.instance_id' | grep -q iid-realistic-1 ||
  fail "cloud-init did not use the NoCloud seed"

# cloud-init clean, then a boot as a new instance on the same disk.
gssh 'sudo cloud-init clean --logs && sudo truncate -s 0 /etc/machine-id' || fail "cloud-init clean failed"
stop
mv "$t/disk-1.qcow2" "$t/disk-3.qcow2"
seed 3 iid-realistic-3
boot 3 ""
gssh 'cloud-init status --wait' >"$t/status" 2>&1 && grep -q 'status: done' "$t/status" ||
  fail "cloud-init after clean: $(cat "$t/status")"
[ "$(gssh hostname)" = realistic-3 ] || fail "the new instance's hostname was not set"
stop

# --- 2: QEMU user net on 169.254.169.0/24 ----------------------------------------
seed 2 iid-realistic-2
qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$t/disk-2.qcow2"
boot 2 ",net=169.254.169.0/24,host=169.254.169.1,dns=169.254.169.253,dhcpstart=169.254.169.15"
addr=$(gssh 'ip -4 -o addr show scope global' | awk '{print $4}')
grep -q '^169\.254\.169\.' <<<"$addr" || fail "no DHCP lease in 169.254.169.0/24: $addr"
gssh 'ip route' | grep -q 'default via 169.254.169.1' || fail "no default route via 169.254.169.1"
say "169.254.169.0/24 net: address $addr"
stop

say "OK (SSH after ${ssh_s} s on the last boot; cloud-init done after ${done_s} s on the first)"
