#!/bin/bash
# vm-systemd.sh - lmtgt under a real systemd (PID 1 of a throw-away QEMU
# guest), installed by `make install` with the shipped unit (Type=notify).
#
# The guest (Debian bookworm: systemd, udev, open-iscsi) boots with its
# whole root file system in the initramfs and runs one oneshot unit,
# /vmtest.sh, which:
#   1. `systemctl start lmtgt`: when it returns the unit must be active
#      (READY=1 received), the portal 127.0.0.1:3260 must accept and
#      `lmtgt lun list` must work with no --admin (the CLI finds
#      /run/lmtgt/admin.sock); systemctl status shows the STATUS= line;
#   2. creates a LUN on a file under /var/tmp and one on a raw block device
#      (/dev/ram0: the unit's hardening must not hide or refuse devices),
#      maps both on a target, logs in with the kernel initiator (open-iscsi)
#      and writes 8 MiB of random data to each;
#   3. `systemctl stop lmtgt` then `systemctl start lmtgt`: the socket is
#      gone while stopped, the file under /var/tmp is still there (no
#      PrivateTmp), and the data read back through iSCSI is the same on
#      both LUNs;
#   4. the socket is 0660 and group-owned with LMTGT_ADMIN_GROUP; log
#      lines reach the journal with their priority.
# Results are console lines VMSD-RESULT: PASS|FAIL.
#
# The guest is built once (mmdebstrap, about 2 min) and cached; a run
# boots it in about a minute (TCG).
# Usage: scripts/vm-systemd.sh [--bin PATH] [--rebuild] [--timeout S] [--keep]
#   --bin PATH   lmtgt binary built without RBD (default: make install RBD=0)
# Env: CACHE_DIR (default scripts/cache), VM_MEM (MiB, 1536), VM_SMP (2).
# Exit 0 passed, 1 failed, 2 harness problem.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"

CACHE_DIR=${CACHE_DIR:-$HERE/cache}
GUEST_DIR=$CACHE_DIR/guest-systemd
SUITE=bookworm
KERNEL_META=linux-image-cloud-amd64
GUEST_PKGS="systemd-sysv,udev,open-iscsi,kmod,dbus"
GUEST_MODULES="iscsi_tcp sd_mod crc32c_generic brd"
GUEST_RECIPE=1
VM_MEM=${VM_MEM:-1536}
VM_SMP=${VM_SMP:-2}
TIMEOUT=900
REBUILD=0
KEEP=0
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift ;;
    --rebuild) REBUILD=1 ;;
    --timeout) TIMEOUT=$2; shift ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--bin PATH] [--rebuild] [--timeout S] [--keep]" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[vm-systemd $(ts)] $*" >&2; }
die() { log "ERROR: $*"; echo "VMSD-RESULT: FAIL (harness: $*)"; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1 (package $2; scripts/install-test-deps.sh)"; }

recipe_id() { echo "$GUEST_RECIPE $SUITE $KERNEL_META $GUEST_PKGS $GUEST_MODULES" | sha256sum | cut -c1-16; }

# build_guest: a Debian rootfs with systemd, trimmed, packed as a cpio
# archive (the kernel unpacks it into its root tmpfs: no disk image).
build_guest() {
  need mmdebstrap mmdebstrap
  mkdir -p "$CACHE_DIR"
  rm -rf "$CACHE_DIR"/sdbuild.*
  local W; W=$(mktemp -d "$CACHE_DIR/sdbuild.XXXXXX")
  local R=$W/rootfs O=$W/out t0=$SECONDS
  log "building the guest: mmdebstrap $SUITE with $GUEST_PKGS and $KERNEL_META"
  { guest_kernel_hook "$W" "$KERNEL_META" # lib.sh
    cat <<EOF
cp "$W/kernel/boot/vmlinuz-\$KV" "$W/vmlinuz"
mkdir -p "\$R/usr/lib/modules"
cp -a "$W/kernel/lib/modules/\$KV" "\$R/usr/lib/modules/"
chroot "\$R" depmod "\$KV"
# keep only the modules the test loads and what they depend on
for m in $GUEST_MODULES; do chroot "\$R" modprobe -S "\$KV" --show-depends "\$m" 2>/dev/null || true; done |
  awk '\$1=="insmod"{print \$2}' | sed 's|^/lib/|/usr/lib/|' | sort -u > "$W/keep"
find "\$R/usr/lib/modules/\$KV" -name '*.ko*' | sed "s|^\$R||" | sort | comm -23 - "$W/keep" | sed "s|^|\$R|" | xargs rm -f
chroot "\$R" depmod "\$KV"
echo "\$KV" > "$W/KVERSION"
EOF
  } > "$W/kernel.sh"
  chmod +x "$W/kernel.sh"
  mmdebstrap --quiet --variant=apt --include="$GUEST_PKGS" \
    --customize-hook="$W/kernel.sh \"\$1\"" \
    --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/* "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$R" >"$W/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  [ -s "$W/vmlinuz" ] || die "no kernel in $W"
  mkdir -p "$O"
  cp "$W/vmlinuz" "$W/KVERSION" "$O/"
  # systemd as the guest's init; root without a password on the console
  ln -sf /lib/systemd/systemd "$R/init"
  echo "vmsd" > "$R/etc/hostname"
  echo "InitiatorName=iqn.2026-12.org.lmtgt:vm-systemd" > "$R/etc/iscsi/initiatorname.iscsi"
  : > "$R/etc/fstab"
  (cd "$R" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) | zstd -q -T0 -3 > "$O/initrd-base.cpio.zst"
  truncate -s $(( ( $(stat -c %s "$O/initrd-base.cpio.zst") + 511 ) / 512 * 512 )) "$O/initrd-base.cpio.zst"
  recipe_id > "$O/RECIPE"
  rm -rf "$GUEST_DIR"; mv "$O" "$GUEST_DIR"; rm -rf "$W"
  log "guest built in $((SECONDS-t0))s ($(du -sh "$GUEST_DIR" | cut -f1) in $GUEST_DIR)"
}

# guest_test: the oneshot the guest runs once booted.
guest_test() {
  cat <<'EOF'
#!/bin/bash
set -u
FAILED=0
ok()   { echo "VMSD-OK: $*"; }
bad()  { echo "VMSD-FAIL: $*"; FAILED=1; }
IQN=iqn.2026-12.org.lmtgt:sd
for m in iscsi_tcp sd_mod; do modprobe $m || bad "modprobe $m"; done
modprobe brd rd_nr=1 rd_size=65536 || bad "modprobe brd"
getent group lmtgtadm >/dev/null || groupadd -r lmtgtadm
mkdir -p /etc/default && echo "LMTGT_ADMIN_GROUP=lmtgtadm" > /etc/default/lmtgt
systemctl daemon-reload

t0=$(date +%s%N)
systemctl start lmtgt || bad "systemctl start lmtgt failed: $(systemctl status lmtgt --no-pager 2>&1 | tail -5)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# Right after `systemctl start` returned: no polling, READY must mean ready.
st=$(systemctl is-active lmtgt)
[ "$st" = active ] && ok "systemctl start returned after ${ms} ms, unit active" || bad "after start: unit $st"
(exec 3<>/dev/tcp/127.0.0.1/3260) 2>/dev/null && ok "portal 127.0.0.1:3260 accepts right after start" || bad "portal not accepting right after start"
lmtgt lun list >/dev/null 2>/tmp/err && ok "lmtgt lun list finds /run/lmtgt/admin.sock" || bad "lmtgt lun list: $(cat /tmp/err)"
txt=$(systemctl show -p StatusText --value lmtgt)
case "$txt" in serving*) ok "StatusText: $txt" ;; *) bad "StatusText '$txt'" ;; esac
# Log lines carry their syslog priority: journald strips the "<6>" prefix.
if journalctl -u lmtgt -o cat --no-pager | grep -q '^<[0-7]>'; then bad "journal lines keep a <N> prefix"
elif journalctl -u lmtgt -p info..info -o cat --no-pager | grep -q 'lmtgt serving' &&
     ! journalctl -u lmtgt -p err -o cat --no-pager | grep -q 'lmtgt serving'; then ok "journal priorities (serving line at info)"
else bad "serving line not at priority info in the journal"; fi
m=$(stat -c '%a %G' /run/lmtgt/admin.sock)
[ "$m" = "660 lmtgtadm" ] && ok "admin socket $m" || bad "admin socket mode/group '$m', want 660 lmtgtadm"

lmtgt lun create v --path /var/tmp/lmtgt-v.img --size 64MiB >/dev/null || bad "lun create"
lmtgt lun create r --path /dev/ram0 >/dev/null 2>/tmp/err && ok "LUN on the raw device /dev/ram0" || bad "lun create --path /dev/ram0: $(cat /tmp/err)"
lmtgt lun create gone --path /var/tmp/lmtgt-gone.img --size 1MiB >/dev/null || bad "lun create gone"
lmtgt target create $IQN >/dev/null && lmtgt target map $IQN v --lun 0 >/dev/null && lmtgt target map $IQN r --lun 1 >/dev/null &&
  lmtgt target map $IQN gone --lun 2 >/dev/null &&
  lmtgt target allow $IQN ALL >/dev/null || bad "target setup"

login() {
  iscsiadm -m discovery -t st -p 127.0.0.1:3260 >/dev/null || { bad "discovery"; return 1; }
  iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --login >/dev/null || { bad "login"; return 1; }
  DEV0=""; DEV1=""
  for i in $(seq 100); do
    DEV0=$(ls /sys/class/iscsi_session/session*/device/target*/*:0/block 2>/dev/null | head -n1)
    DEV1=$(ls /sys/class/iscsi_session/session*/device/target*/*:1/block 2>/dev/null | head -n1)
    [ -n "$DEV0" ] && [ -b /dev/$DEV0 ] && [ -n "$DEV1" ] && [ -b /dev/$DEV1 ] && break
    sleep 0.1
  done
  [ -n "$DEV0" ] && [ -n "$DEV1" ] || { bad "no block devices for LUN 0 and 1 after login"; return 1; }
  DEV0=/dev/$DEV0; DEV1=/dev/$DEV1
}
logout() { iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --logout >/dev/null || bad "logout"; }

head -c 8M /dev/urandom > /root/pattern
if login; then
  dd if=/root/pattern of=$DEV0 bs=1M oflag=direct conv=fsync status=none && ok "wrote 8 MiB to LUN 0 ($DEV0, file)" || bad "write LUN 0"
  dd if=/root/pattern of=$DEV1 bs=1M oflag=direct conv=fsync status=none && ok "wrote 8 MiB to LUN 1 ($DEV1, /dev/ram0)" || bad "write LUN 1"
  logout
fi
systemctl stop lmtgt
st=$(systemctl is-active lmtgt)
[ "$st" = inactive ] && ok "stopped (unit $st)" || bad "after stop: unit $st"
[ ! -e /run/lmtgt/admin.sock ] && ok "admin socket removed" || bad "admin socket left after stop"
[ -f /var/tmp/lmtgt-v.img ] && ok "/var/tmp volume kept after stop" || bad "/var/tmp/lmtgt-v.img gone after stop"
journalctl -u lmtgt --no-pager -o cat | grep -q '"stopped"\|lmtgt stopped' && ok "clean stop in the journal" || bad "no clean stop line in the journal"

# A volume that vanished while stopped: the daemon starts without it and
# says so at warning or error priority.
rm -f /var/tmp/lmtgt-gone.img
systemctl start lmtgt || bad "second start"
w=$(journalctl -u lmtgt -p warning -o cat --no-pager)
if echo "$w" | grep -q 'gone\|lmtgt-gone' && ! echo "$w" | grep -q 'lmtgt serving'; then
  ok "journal priorities: the missing volume at warning or above, the serving line not"
else
  bad "journalctl -p warning: '$(echo "$w" | tail -n 3)'"
fi
if login; then
  dd if=$DEV0 of=/root/back0 bs=1M count=8 iflag=direct status=none
  cmp -s /root/pattern /root/back0 && ok "LUN 0 (file under /var/tmp): data read back after stop/start" || bad "LUN 0: data differs after stop/start"
  dd if=$DEV1 of=/root/back1 bs=1M count=8 iflag=direct status=none
  cmp -s /root/pattern /root/back1 && ok "LUN 1 (/dev/ram0): data read back after stop/start" || bad "LUN 1: data differs after stop/start"
  cmp -s <(head -c 8M /dev/ram0) /root/pattern && ok "/dev/ram0 holds the data" || bad "/dev/ram0 does not hold what was written"
  logout
fi
systemctl stop lmtgt
journalctl -u lmtgt --no-pager -o cat | tail -n 8 | sed 's/^/VMSD-LOG: /'
if [ $FAILED = 0 ]; then echo "VMSD-RESULT: PASS"; else echo "VMSD-RESULT: FAIL"; fi
EOF
}

need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need zstd zstd
if [ "$REBUILD" = 1 ] || [ ! -s "$GUEST_DIR/initrd-base.cpio.zst" ] || [ "$(cat "$GUEST_DIR/RECIPE" 2>/dev/null)" != "$(recipe_id)" ]; then
  build_guest
else
  log "cached guest $GUEST_DIR (kernel $(cat "$GUEST_DIR/KVERSION"))"
fi

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vm-systemd.XXXXXX")
cleanup() { [ -n "${QEMU_PID:-}" ] && stop_pid "$QEMU_PID" 5; [ "$KEEP" = 1 ] || rm -rf "$RUN_DIR"; }
trap cleanup EXIT
OV=$RUN_DIR/overlay
mkdir -p "$OV/etc/systemd/system/multi-user.target.wants"
# lmtgt, its unit, man page and completion exactly as `make install` puts them.
make -C "$REPO" --no-print-directory install DESTDIR="$OV" PREFIX=/usr/local RBD=0 BIN="$RUN_DIR/lmtgt" >"$RUN_DIR/install.log" 2>&1 \
  || { cat "$RUN_DIR/install.log" >&2; die "make install RBD=0"; }
if [ -n "$BIN" ]; then   # another binary (an older build, to see a check fail)
  install -m 0755 "$BIN" "$OV/usr/local/bin/lmtgt"
fi
guest_test > "$OV/vmtest.sh"; chmod 755 "$OV/vmtest.sh"
cat > "$OV/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=lmtgt systemd test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/vmtest.sh
ExecStopPost=/bin/systemctl poweroff --no-block
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=600
EOF
ln -s ../vmtest.service "$OV/etc/systemd/system/multi-user.target.wants/vmtest.service"
ln -s /dev/null "$OV/etc/systemd/system/serial-getty@ttyS0.service"   # no login prompt amid the results
{ cat "$GUEST_DIR/initrd-base.cpio.zst"
  (cd "$OV" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet)
} > "$RUN_DIR/initrd.img"

ACCEL=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; fi
[ "$ACCEL" = kvm ] && CPU=qemu64 || CPU=max
CONSOLE=$RUN_DIR/console.log
: > "$CONSOLE"
log "booting the guest with systemd (accel $ACCEL, $VM_MEM MiB); console $CONSOLE"
T_VM=$SECONDS
qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$VM_MEM" -smp "$VM_SMP" \
  -nodefaults -no-user-config -display none -no-reboot -serial "file:$CONSOLE" \
  -kernel "$GUEST_DIR/vmlinuz" -initrd "$RUN_DIR/initrd.img" \
  -append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init systemd.show_status=false" -nic none \
  > "$RUN_DIR/qemu.stderr" 2>&1 &
QEMU_PID=$!
while pid_alive "$QEMU_PID"; do
  if [ $((SECONDS-T_VM)) -ge "$TIMEOUT" ]; then log "VM time limit ${TIMEOUT}s reached"; stop_pid "$QEMU_PID" 5 || true; break; fi
  grep -q 'VMSD-RESULT' "$CONSOLE" 2>/dev/null && { sleep 5; stop_pid "$QEMU_PID" 5 || true; break; }
  sleep 1
done
QEMU_PID=""
tr -d '\r' < "$CONSOLE" | grep -ao 'VMSD-.*' || true
log "VM ran $((SECONDS-T_VM))s (accel $ACCEL)"
if tr -d '\r' < "$CONSOLE" | grep -aq 'VMSD-RESULT: PASS'; then exit 0; fi
KEEP=1
log "FAILED: console and logs kept in $RUN_DIR"
tail -n 40 "$CONSOLE" >&2
exit 1
