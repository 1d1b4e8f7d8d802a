#!/bin/bash
# vm-test.sh - test lmtgt with the Linux kernel initiator (open-iscsi) running
# in a throw-away QEMU guest.
#
#   lmtgt on 127.0.0.1:PORT  <-- slirp user networking (10.0.2.2:PORT) --  guest
#
# One boot runs every scenario, in this order:
#   plain      discovery, login, fio write+verify, dd+md5, mkfs.ext4, mount,
#              write, umount, fsck, remount, md5 check, logout
#   chap       one-way CHAP: a wrong secret is refused, the right one logs in;
#              then the same checks as plain
#   mutual     mutual CHAP with CRC32C header and data digests: a wrong target
#              secret is refused by the initiator, the right one logs in;
#              fio write+verify, logout
#   reconnect  login with a long replacement_timeout, fio write+verify running;
#              the guest asks the host (console line VMTEST-HOST-ACTION) to
#              kill -9 the target and start it again on the same data dir; the
#              session must come back and fio's verify must pass
#   migrate    (lmtgt only) login to a 256 MiB LUN the host filled with random
#              data; fio randwrite 4k+64k with crc32c verify (backlog and final
#              pass) running; the guest asks the host (VMTEST-HOST-ACTION
#              migrate) to `migration create` to a second LUN, wait for synced
#              and `migration split` (first, unless VMTEST_MIGRATE_ROLLBACK=0:
#              `split --keep-source`, ~2 s mirrored back, `rollback`, ~2 s, and
#              only then the plain split: fio runs across all three, its
#              backlog verify reading the old volume after the rollback);
#              the host answers by creating a marker
#              target the guest sees in a SendTargets discovery. fio must pass
#              with no I/O error in the kernel log, VPD 0x80/0x83 (re-read with
#              a rescan) must not change, the tail fio never wrote must keep
#              its md5; then dd+md5 and logout. After the VM the host checks
#              that the LUN's volume is the former target's and the pair split.
# The target and the VM run in a private network namespace (unshare --net), so
# nothing else on the host is reachable or disturbed.
#
# Usage: scripts/vm-test.sh [options]
#   --target lmtgt|tgt   target under test (default lmtgt; tgt proves the harness)
#   --bin PATH           lmtgt binary (default: go build into the run dir)
#   --scenarios LIST     comma-separated subset of plain,chap,mutual,reconnect,migrate
#                        (default all; migrate only with --target lmtgt)
#   --build-only         build (or check) the cached guest and exit
#   --rebuild            rebuild the guest even when cached
#   --timeout S          wall-clock limit for the VM (default 900)
#   --keep               keep the run dir (logs are kept anyway on failure)
# Env: CACHE_DIR (default scripts/cache), VM_MEM (MiB, 1024), VM_SMP (2),
#      VMTEST_RUNS (run dirs, default REPO/.work/vm-test).
# Output: VMTEST-RESULT lines, one per scenario and a last overall one.
# Exit 0 when all passed, 1 on a failed scenario, 2 on a harness problem.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"

CACHE_DIR=${CACHE_DIR:-$HERE/cache}
GUEST_DIR=$CACHE_DIR/guest
SUITE=bookworm
KERNEL_META=linux-image-cloud-amd64
GUEST_PKGS="open-iscsi,fio,e2fsprogs,kmod,busybox"
GUEST_MODULES="virtio_pci virtio_net iscsi_tcp sd_mod crc32c_generic virtio_blk ext4"
GUEST_RECIPE=1   # bump when the guest build changes

TARGET=lmtgt
BIN=""
SCENARIOS=""
BUILD_ONLY=0
REBUILD=0
TIMEOUT=900
KEEP=0
VM_MEM=${VM_MEM:-1024}
VM_SMP=${VM_SMP:-2}

ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET=$2; shift ;;
    --bin) BIN=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --build-only) BUILD_ONLY=1 ;;
    --rebuild) REBUILD=1 ;;
    --timeout) TIMEOUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,"");print}' "$0"; exit 0 ;;
    *) echo "vm-test: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$TARGET" in lmtgt|tgt) ;; *) echo "vm-test: --target must be lmtgt or tgt" >&2; exit 2 ;; esac
if [ -z "$SCENARIOS" ]; then
  SCENARIOS=plain,chap,mutual,reconnect
  [ "$TARGET" = lmtgt ] && SCENARIOS=$SCENARIOS,migrate   # tgt has no migration
fi
for s in ${SCENARIOS//,/ }; do
  case "$s" in plain|chap|mutual|reconnect|migrate) ;; *) echo "vm-test: unknown scenario $s" >&2; exit 2 ;; esac
  [ "$s" = migrate ] && [ "$TARGET" != lmtgt ] && { echo "vm-test: the migrate scenario needs --target lmtgt" >&2; exit 2; }
done

log() { echo "[vm-test $(ts)] $*" >&2; }
die() { log "ERROR: $*"; echo "VMTEST-RESULT: FAIL (harness: $*)"; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1 (package $2; scripts/install-test-deps.sh)"; }

# ================================================================ guest build
recipe_id() {
  { echo "$GUEST_RECIPE $SUITE $KERNEL_META $GUEST_PKGS $GUEST_MODULES"
    declare -f guest_init; } | sha256sum | cut -c1-16
}

# guest_init: the guest's PID 1 (busybox sh): bring up the network, run
# /test.sh with /test.env, power off.
guest_init() {
  cat <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run/lock/iscsi /tmp /mnt
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
echo "VMTEST-GUEST-UP uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
for m in virtio_pci virtio_net iscsi_tcp sd_mod crc32c_generic; do
  modprobe "$m" 2>/dev/null || echo "VMTEST-WARN modprobe $m failed"
done
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
if [ -f /test.env ]; then set -a; . /test.env; set +a; fi
if [ -f /test.sh ]; then sh /test.sh; rc=$?; else echo "VMTEST-RESULT: FAIL (no /test.sh)"; rc=2; fi
echo "VMTEST-EXIT rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
sleep 10
echo o > /proc/sysrq-trigger
EOF
}

build_guest() {
  need mmdebstrap mmdebstrap
  mkdir -p "$CACHE_DIR"
  rm -rf "$CACHE_DIR"/build.*
  local W; W=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
  local R=$W/rootfs S=$W/stage O=$W/out t0=$SECONDS
  log "building the guest: mmdebstrap $SUITE with $GUEST_PKGS and $KERNEL_META (about 1.5 min)"
  # the kernel package is only downloaded and unpacked on the side (no
  # initramfs-tools, no bootloader); its modules go into the rootfs for depmod
  { guest_kernel_hook "$W" "$KERNEL_META" # lib.sh
    cat <<EOF
mkdir -p "\$R/usr/lib/modules"
cp -a "$W/kernel/lib/modules/\$KV" "\$R/usr/lib/modules/"
cp "$W/kernel/boot/vmlinuz-\$KV" "\$R/boot/"
chroot "\$R" depmod "\$KV"
echo "\$KV" > "\$R/KVERSION"
EOF
  } > "$W/kernel.sh"
  chmod +x "$W/kernel.sh"
  mmdebstrap --quiet --variant=apt --include="$GUEST_PKGS" \
    --customize-hook="$W/kernel.sh \"\$1\"" "$SUITE" "$R" >"$W/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  local KV; KV=$(cat "$R/KVERSION")
  log "rootfs ready after $((SECONDS-t0))s (kernel $KV); cutting the initramfs"

  mkdir -p "$S"/usr/bin "$S"/usr/sbin "$S"/usr/lib64 "$S"/dev "$S"/proc "$S"/sys "$S"/run \
           "$S"/tmp "$S"/mnt "$S"/root "$S"/etc/iscsi "$S"/var/lib/iscsi "$S"/var/lock "$S"/usr/lib/modules
  ln -s usr/bin "$S/bin"; ln -s usr/sbin "$S/sbin"; ln -s usr/lib "$S/lib"; ln -s usr/lib64 "$S/lib64"
  local b p lib m
  for b in iscsiadm iscsid fio mke2fs e2fsck kmod busybox; do   # binaries + their libraries
    p=$(chroot "$R" sh -c "command -v $b") || die "$b not in the guest rootfs"
    p=$(chroot "$R" readlink -f "$p")
    cp -L "$R$p" "$S$p"
    for lib in $(chroot "$R" ldd "$p" | grep -o '/[^ ]*'); do
      [ -e "$S$lib" ] || { mkdir -p "$(dirname "$S$lib")"; cp -L "$R$lib" "$S$lib"; }
    done
  done
  ln -sf mke2fs "$S/usr/sbin/mkfs.ext4"
  for b in modprobe insmod lsmod rmmod depmod modinfo; do ln -sf ../bin/kmod "$S/usr/sbin/$b"; done
  for b in $(chroot "$R" busybox --list); do
    [ -e "$S/usr/bin/$b" ] || [ -e "$S/usr/sbin/$b" ] || ln -s busybox "$S/usr/bin/$b"
  done
  mkdir -p "$S/lib/modules/$KV"   # only the modules we load and what they depend on
  for m in $GUEST_MODULES; do chroot "$R" modprobe -S "$KV" --show-depends "$m" 2>/dev/null || true; done |
    awk '$1=="insmod"{print $2}' | sort -u | while read -r p; do
      mkdir -p "$(dirname "$S$p")"; cp "$R$p" "$S$p"
    done
  cp "$R/lib/modules/$KV"/modules.* "$S/lib/modules/$KV/"
  cp "$R/etc/iscsi/iscsid.conf" "$S/etc/iscsi/iscsid.conf"
  sed -i -e 's|^iscsid.startup = .*|iscsid.startup = /usr/sbin/iscsid|' \
         -e 's|^node.session.initial_login_retry_max = .*|node.session.initial_login_retry_max = 2|' \
         "$S/etc/iscsi/iscsid.conf"
  echo "InitiatorName=iqn.2026-11.org.lmtgt:vm-guest" > "$S/etc/iscsi/initiatorname.iscsi"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$S/etc/passwd"
  printf 'root:x:0:\n' > "$S/etc/group"
  : > "$S/etc/fstab"
  ln -s /proc/self/mounts "$S/etc/mtab"
  guest_init > "$S/init"; chmod 755 "$S/init"

  mkdir -p "$O"
  cp "$R/boot/vmlinuz-$KV" "$O/vmlinuz"
  (cd "$S" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) | zstd -q -T0 -9 > "$O/initrd-base.cpio.zst"
  # the kernel reads an appended cpio archive only at an aligned offset
  truncate -s $(( ( $(stat -c %s "$O/initrd-base.cpio.zst") + 511 ) / 512 * 512 )) "$O/initrd-base.cpio.zst"
  echo "$KV" > "$O/KVERSION"
  chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' open-iscsi fio e2fsprogs busybox kmod > "$O/PACKAGES"
  recipe_id > "$O/RECIPE"
  rm -rf "$GUEST_DIR"; mv "$O" "$GUEST_DIR"; rm -rf "$W"
  log "guest built in $((SECONDS-t0))s ($(du -sh "$GUEST_DIR" | cut -f1) in $GUEST_DIR)"
}

# ================================================================ guest test
guest_script() {
  cat <<'EOF'
#!/bin/sh
# runs in the guest; /test.env: PORTAL SCENARIOS IQN_PLAIN IQN_CHAP IQN_MUTUAL
# IQN_MIGRATE MIGRATE_DONE CHAP_USER CHAP_SECRET MUTUAL_USER MUTUAL_SECRET TGT_USER TGT_SECRET
EOF
  guest_prelude # lib.sh
  cat <<'EOF'
DEV=""

iscsid -f > /tmp/iscsid.log 2>&1 &
i=0; until iscsiadm -m session >/dev/null 2>&1 || [ $? -eq 21 ]; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "VMTEST-RESULT: FAIL (iscsid not answering)"; exit 1; }; sleep 0.1; done

node_set() {  # IQN NAME VALUE
  iscsiadm -m node -T "$1" -p "$PORTAL" -o update -n "$2" -v "$3" >/dev/null || bad "iscsiadm set $2 on $1"
}
node_new() {  # IQN: a node record for the portal the guest can reach
  iscsiadm -m node -T "$1" -p "$PORTAL" -o delete >/dev/null 2>&1
  run iscsiadm -m node -o new -T "$1" -p "$PORTAL" >/dev/null || bad "node new $1"
}
logout_all() {
  umount /mnt 2>/dev/null
  iscsiadm -m session >/dev/null 2>&1 && iscsiadm -m node -u >/dev/null 2>&1
  return 0
}
login() {  # IQN
  run timeout 60 iscsiadm -m node -T "$1" -p "$PORTAL" --login || bad "login to $1"
}
wait_disk() {  # sets DEV to the sd device of the (only) session
  DEV=""; i=0
  while :; do
    for b in /sys/block/sd*; do
      [ -e "$b" ] || continue
      case "$(readlink -f "$b")" in *session*) DEV=/dev/${b##*/};; esac
    done
    [ -n "$DEV" ] && [ -b "$DEV" ] && [ "$(cat /sys/block/${DEV#/dev/}/size)" -gt 0 ] && break
    DEV=""; i=$((i+1)); [ $i -gt 300 ] && { bad "no /dev/sdX 30s after login"; return 1; }; sleep 0.1
  done
  echo "disk $DEV $(blockdev --getsize64 "$DEV") bytes, $(cat /sys/block/${DEV#/dev/}/device/vendor) $(cat /sys/block/${DEV#/dev/}/device/model)"
}
fio_verify() {  # SIZE
  run fio --name=verify --filename="$DEV" --ioengine=libaio --direct=1 --rw=write --bs=64k \
      --size="$1" --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 > /tmp/fio.txt 2>&1 \
    || { cat /tmp/fio.txt; bad "fio write+verify"; return 1; }
  grep -E "WRITE:|READ:" /tmp/fio.txt
}
dd_md5() {
  dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
  A=$(md5sum < /tmp/pattern | cut -d' ' -f1)
  dd if=/tmp/pattern of="$DEV" bs=1M seek=100 count=8 oflag=direct conv=fsync 2>/dev/null || { bad "dd write"; return 1; }
  echo 3 > /proc/sys/vm/drop_caches
  B=$(dd if="$DEV" bs=1M skip=100 count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  echo "dd md5 written=$A read=$B"; [ "$A" = "$B" ] || bad "dd md5 mismatch"
}
fs_check() {
  run mkfs.ext4 -F -q "$DEV" || { bad "mkfs.ext4"; return 1; }
  run mount -t ext4 "$DEV" /mnt || { bad "mount"; return 1; }
  dd if=/dev/urandom of=/mnt/testfile bs=1M count=16 2>/dev/null || { bad "write a file"; return 1; }
  A=$(md5sum < /mnt/testfile | cut -d' ' -f1)
  sync || { bad "sync"; return 1; }
  run umount /mnt || { bad "umount"; return 1; }
  echo 3 > /proc/sys/vm/drop_caches
  run e2fsck -fn "$DEV" > /tmp/fsck.txt 2>&1 || { cat /tmp/fsck.txt; bad "e2fsck"; return 1; }
  run mount -t ext4 -o ro "$DEV" /mnt || { bad "remount"; return 1; }
  B=$(md5sum < /mnt/testfile | cut -d' ' -f1)
  run umount /mnt || { bad "umount after remount"; return 1; }
  echo "file md5 written=$A reread=$B"; [ "$A" = "$B" ] || bad "file md5 mismatch after remount"
}
logout() {  # IQN
  run iscsiadm -m node -T "$1" -p "$PORTAL" --logout || { bad "logout"; return 1; }
  iscsiadm -m session >/dev/null 2>&1; [ $? -eq 21 ] || { bad "session still there after logout"; return 1; }
  [ -e "$DEV" ] && { bad "$DEV still there after logout"; return 1; }
  return 0
}
chap() {  # IQN USER SECRET [USER_IN SECRET_IN]
  node_set "$1" node.session.auth.authmethod CHAP &&
  node_set "$1" node.session.auth.username "$2" &&
  node_set "$1" node.session.auth.password "$3" || return 1
  if [ -n "${4:-}" ]; then
    node_set "$1" node.session.auth.username_in "$4" &&
    node_set "$1" node.session.auth.password_in "$5" || return 1
  fi
}
refused() {  # IQN WHAT: a login that must fail
  if timeout 60 iscsiadm -m node -T "$1" -p "$PORTAL" --login > /tmp/refused.txt 2>&1; then
    cat /tmp/refused.txt; logout_all; bad "login with $2 succeeded"; return 1
  fi
  echo "login with $2 refused as it must be: $(grep -m1 -i 'iscsiadm:.*\(fail\|error\)' /tmp/refused.txt)"
  iscsiadm -m session >/dev/null 2>&1; [ $? -eq 21 ] || { logout_all; bad "a session exists after the refused login"; return 1; }
}

sc_plain() {
  step "plain: discovery at $PORTAL"
  run iscsiadm -m discovery -t sendtargets -p "$PORTAL" > /tmp/disc.txt 2>&1 || { cat /tmp/disc.txt; bad "discovery"; return 1; }
  cat /tmp/disc.txt
  for t in "$IQN_PLAIN" "$IQN_CHAP" "$IQN_MUTUAL"; do
    grep -q " $t\$" /tmp/disc.txt || { bad "target $t not discovered"; return 1; }
  done
  # discovery answers with the portal the target listens on (127.0.0.1 on
  # the host); the guest logs in through the one it can reach
  node_new "$IQN_PLAIN" || return 1
  step "plain: login"; login "$IQN_PLAIN" && wait_disk || return 1
  step "plain: fio write+verify"; fio_verify 32M || return 1
  step "plain: dd md5"; dd_md5 || return 1
  step "plain: ext4"; fs_check || return 1
  step "plain: logout"; logout "$IQN_PLAIN"
}
sc_chap() {
  node_new "$IQN_CHAP" || return 1
  step "chap: wrong secret"
  chap "$IQN_CHAP" "$CHAP_USER" "wrong-$CHAP_SECRET" && refused "$IQN_CHAP" "a wrong CHAP secret" || return 1
  step "chap: no CHAP at all"
  node_set "$IQN_CHAP" node.session.auth.authmethod None && refused "$IQN_CHAP" "no CHAP" || return 1
  step "chap: right secret"
  chap "$IQN_CHAP" "$CHAP_USER" "$CHAP_SECRET" && login "$IQN_CHAP" && wait_disk || return 1
  step "chap: fio write+verify"; fio_verify 16M || return 1
  step "chap: ext4"; fs_check || return 1
  step "chap: logout"; logout "$IQN_CHAP"
}
sc_mutual() {
  node_new "$IQN_MUTUAL" || return 1
  node_set "$IQN_MUTUAL" node.conn[0].iscsi.HeaderDigest CRC32C &&
  node_set "$IQN_MUTUAL" node.conn[0].iscsi.DataDigest CRC32C || return 1
  step "mutual: wrong target secret"
  chap "$IQN_MUTUAL" "$MUTUAL_USER" "$MUTUAL_SECRET" "$TGT_USER" "wrong-$TGT_SECRET" &&
    refused "$IQN_MUTUAL" "a wrong target (mutual) secret" || return 1
  step "mutual: right secrets, CRC32C digests"
  chap "$IQN_MUTUAL" "$MUTUAL_USER" "$MUTUAL_SECRET" "$TGT_USER" "$TGT_SECRET" &&
    login "$IQN_MUTUAL" && wait_disk || return 1
  iscsiadm -m session -P 2 | grep -E 'HeaderDigest|DataDigest'
  iscsiadm -m session -P 2 | grep -q 'DataDigest: CRC32C' || { bad "DataDigest CRC32C not negotiated"; return 1; }
  step "mutual: fio write+verify"; fio_verify 16M || return 1
  step "mutual: dd md5"; dd_md5 || return 1
  step "mutual: logout"; logout "$IQN_MUTUAL"
}
sc_reconnect() {
  node_new "$IQN_PLAIN" || return 1
  node_set "$IQN_PLAIN" node.session.timeo.replacement_timeout 180 || return 1
  step "reconnect: login"; login "$IQN_PLAIN" && wait_disk || return 1
  SID=$(iscsiadm -m session | sed -n 's/^tcp: \[\([0-9]*\)\].*/\1/p')
  dmesg | grep -c 'conn error' > /tmp/connerr.before
  step "reconnect: fio write+verify in the background (rate limited, ~15 s of writes)"
  fio --name=reconnect --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bs=16k \
      --size=48M --iodepth=8 --rate=3m --verify=crc32c --do_verify=1 --verify_fatal=1 \
      > /tmp/fio-reconnect.txt 2>&1 &
  FIO=$!
  # wait until fio really writes, then ask the host to kill the target
  W0=$(awk '{print $5}' /sys/block/${DEV#/dev/}/stat); i=0
  while [ "$(awk '{print $5}' /sys/block/${DEV#/dev/}/stat)" -le $((W0 + 64)) ]; do
    i=$((i+1)); [ $i -gt 300 ] && { kill $FIO; bad "fio did not start writing"; return 1; }; sleep 0.1
  done
  echo "VMTEST-HOST-ACTION: kill-restart"
  step "reconnect: waiting for fio (the target is killed and restarted meanwhile)"
  wait $FIO; rc=$?
  cat /tmp/fio-reconnect.txt | grep -E "WRITE:|READ:|err=|verify"
  dmesg | grep -E 'connection[0-9:]+ |session recovery|detected conn' | tail -n 3
  grep -E 'after recovery|reopen|Kernel reported iSCSI connection' /tmp/iscsid.log | tail -n 3
  [ $rc = 0 ] || { cat /tmp/fio-reconnect.txt; bad "fio across the target restart exited $rc"; return 1; }
  [ "$(dmesg | grep -c 'conn error')" -gt "$(cat /tmp/connerr.before)" ] ||
    { bad "the session saw no connection error: the target was not killed during I/O"; return 1; }
  iscsiadm -m session | grep -q "^tcp: \[$SID\]" || { bad "session $SID gone after the restart"; return 1; }
  iscsiadm -m session -P 3 | grep -E 'iSCSI Connection State|iSCSI Session State'
  step "reconnect: dd md5 after the restart"; dd_md5 || return 1
  step "reconnect: logout"; logout "$IQN_PLAIN"
}

vpd_save() {  # DIR: the identity pages the kernel holds for $DEV, read again from the target
  S=/sys/block/${DEV#/dev/}/device
  echo 1 > $S/rescan || { bad "rescan of $DEV"; return 1; }
  mkdir -p "$1" && cat $S/vpd_pg80 > "$1/pg80" && cat $S/vpd_pg83 > "$1/pg83" ||
    { bad "cannot read vpd_pg80/vpd_pg83 of $DEV"; return 1; }
  echo "VPD 0x80 serial [$(tail -c +5 "$1/pg80")], 0x83 md5 $(md5sum < "$1/pg83" | cut -d' ' -f1)"
}
tail_md5() {  # md5 of the last 32 MiB, which fio never writes (the host filled it before the VM)
  dd if="$DEV" bs=1M skip=$(( $(blockdev --getsize64 "$DEV") / 1048576 - 32 )) count=32 iflag=direct 2>/dev/null |
    md5sum | cut -d' ' -f1
}
sc_migrate() {
  node_new "$IQN_MIGRATE" || return 1
  step "migrate: login"; login "$IQN_MIGRATE" && wait_disk || return 1
  IOERR0=$(dmesg | grep -ci "i/o error")
  step "migrate: identity pages and the md5 of the untouched tail before the migration"
  vpd_save /tmp/vpd.before || return 1
  TAIL_A=$(tail_md5); echo "tail md5 $TAIL_A"
  step "migrate: fio randwrite 4k+64k with crc32c verify (backlog and final pass) in the background"
  fio --name=migrate --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bssplit=4k/50:64k/50 \
      --size=64M --iodepth=8 --rate=3m --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --verify_backlog=256 > /tmp/fio-migrate.txt 2>&1 &
  FIO=$!
  W0=$(awk '{print $5}' /sys/block/${DEV#/dev/}/stat); i=0
  while [ "$(awk '{print $5}' /sys/block/${DEV#/dev/}/stat)" -le $((W0 + 64)) ]; do
    i=$((i+1)); [ $i -gt 300 ] && { kill $FIO; bad "fio did not start writing"; return 1; }; sleep 0.1
  done
  echo "VMTEST-HOST-ACTION: migrate"
  step "migrate: the host migrates the LUN and splits while fio runs; waiting for its marker target"
  # the host answers by creating the target $MIGRATE_DONE-ok (or -fail); the
  # guest sees it in a SendTargets discovery, the channel it already has
  M=""; i=0
  while [ -z "$M" ]; do
    M=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL" -o nonpersistent 2>/dev/null |
        sed -n "s/.* \($MIGRATE_DONE-[a-z]*\)\$/\1/p" | head -n1)
    [ -n "$M" ] && break
    i=$((i+1)); [ $i -gt 240 ] && { kill $FIO; bad "no answer from the host 240 s after the migrate request"; return 1; }
    sleep 1
  done
  if kill -0 $FIO 2>/dev/null; then RUNNING=yes; else RUNNING=no; fi
  step "migrate: host says ${M##*-}; fio still running: $RUNNING"
  [ "$M" = "$MIGRATE_DONE-ok" ] || { kill $FIO; bad "the host's migration or split failed (see the host log)"; return 1; }
  [ $RUNNING = yes ] || { bad "fio ended before the split: it did not run through the migration"; return 1; }
  step "migrate: identity pages after the split (read again from the target)"
  vpd_save /tmp/vpd.after || return 1
  cmp /tmp/vpd.before/pg80 /tmp/vpd.after/pg80 || { bad "VPD 0x80 changed across the split"; return 1; }
  cmp /tmp/vpd.before/pg83 /tmp/vpd.after/pg83 || { bad "VPD 0x83 changed across the split"; return 1; }
  step "migrate: waiting for fio to finish its verify"
  wait $FIO; rc=$?
  grep -E "WRITE:|READ:|err=|verify|bad" /tmp/fio-migrate.txt
  [ $rc = 0 ] || { cat /tmp/fio-migrate.txt; bad "fio through the migration exited $rc"; return 1; }
  grep -q "err= 0" /tmp/fio-migrate.txt || { cat /tmp/fio-migrate.txt; bad "fio reports errors"; return 1; }
  echo "fio verify passed"
  IOERR=$(( $(dmesg | grep -ci "i/o error") - IOERR0 ))
  [ $IOERR = 0 ] || { dmesg | grep -i "i/o error" | tail -n 5; bad "$IOERR new I/O error lines in the kernel log"; return 1; }
  echo "kernel log: no I/O error on $DEV"
  TAIL_B=$(tail_md5); echo "tail md5 after the split $TAIL_B"
  [ "$TAIL_A" = "$TAIL_B" ] || { bad "the untouched tail changed across the migration"; return 1; }
  step "migrate: dd md5"; dd_md5 || return 1
  step "migrate: logout"; logout "$IQN_MIGRATE"
}

# after a failed scenario (guest_runner): its logs, then a clean slate
scenario_failed() {
  echo "---- iscsid log"; tail -n 30 /tmp/iscsid.log
  echo "---- dmesg"; dmesg | tail -n 30
  logout_all
}
EOF
  guest_runner # lib.sh
}

# ================================================================ main (host)
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need zstd zstd
if [ -z "${VMTEST_IN_NETNS:-}" ]; then
  if [ "$REBUILD" = 1 ] || [ ! -s "$GUEST_DIR/initrd-base.cpio.zst" ] || [ ! -s "$GUEST_DIR/vmlinuz" ] \
     || [ "$(cat "$GUEST_DIR/RECIPE" 2>/dev/null)" != "$(recipe_id)" ]; then
    build_guest
  else
    log "cached guest $GUEST_DIR (kernel $(cat "$GUEST_DIR/KVERSION"))"
  fi
  [ "$BUILD_ONLY" = 1 ] && exit 0

  RUNS=${VMTEST_RUNS:-$REPO/.work/vm-test}
  mkdir -p "$RUNS"
  RUN_DIR=$(mktemp -d "$RUNS/run.XXXXXX")
  if [ "$TARGET" = lmtgt ] && [ -z "$BIN" ]; then
    BIN=$RUN_DIR/lmtgt
    log "building lmtgt -> $BIN"
    build_lmtgt "$BIN" || die "go build ./cmd/lmtgt failed"
  fi
  [ "$TARGET" = tgt ] || [ -x "$BIN" ] || die "no lmtgt binary at $BIN"
  [ -n "$BIN" ] && BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  need unshare util-linux; need ip iproute2
  unshare --net true 2>/dev/null || die "unshare --net does not work here (needs root)"
  log "re-running in a private network namespace; run dir $RUN_DIR"
  rc=0
  VMTEST_IN_NETNS=1 VMTEST_RUN_DIR=$RUN_DIR unshare --net -- "$BASH" "$0" "${ARGS[@]}" --bin "${BIN:-none}" || rc=$?
  if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$RUN_DIR"; else log "logs kept in $RUN_DIR"; fi
  exit "$rc"
fi

# ---------------------------------------------------------------- inside the netns
RUN_DIR=$VMTEST_RUN_DIR
ip link set lo up
PORT=$(free_port)
IQN_PLAIN=iqn.2026-11.org.lmtgt:vm-plain
IQN_CHAP=iqn.2026-11.org.lmtgt:vm-chap
IQN_MUTUAL=iqn.2026-11.org.lmtgt:vm-mutual
IQN_MIGRATE=iqn.2026-11.org.lmtgt:vm-migrate
MIGRATE_DONE=iqn.2026-11.org.lmtgt:vm-migrate-done   # + -ok or -fail: the host's answer
MIG_SRC=vmmig MIG_DST=vmmig-new MIG_SIZE_MB=256
MIG_MBPS=${VMTEST_MIGRATE_MBPS:-48}   # copy cap: a few seconds for MIG_SIZE_MB of data
MIG_ROLLBACK=${VMTEST_MIGRATE_ROLLBACK:-1}   # split --keep-source and rollback before the split
CHAP_USER=vmuser CHAP_SECRET=vm-chap-secret-1
MUTUAL_USER=vmuser2 MUTUAL_SECRET=vm-chap-secret-2
TGT_USER=vmtarget TGT_SECRET=vm-target-secret-3
DATA=$RUN_DIR/data
TLOG=$RUN_DIR/target.log
mkdir -p "$DATA"; : > "$TLOG"
LMTGT_PID=""; TGTD_PID=""; CTL=""; QEMU_PID=""

configure_tgt() {
  local c=$1 tid=1 iqn f
  for iqn in "$IQN_PLAIN" "$IQN_CHAP" "$IQN_MUTUAL"; do
    f=$DATA/lun$tid.img
    [ -e "$f" ] || truncate -s 256M "$f"
    tgtadm -C "$c" --lld iscsi --op new --mode target --tid $tid -T "$iqn" &&
    tgtadm -C "$c" --lld iscsi --op new --mode logicalunit --tid $tid --lun 1 -b "$f" &&
    tgtadm -C "$c" --lld iscsi --op update --mode logicalunit --tid $tid --lun 1 --params thin_provisioning=1 &&
    tgtadm -C "$c" --lld iscsi --op bind --mode target --tid $tid -I ALL || return 1
    tid=$((tid+1))
  done
  tgtadm -C "$c" --lld iscsi --op new --mode account --user "$CHAP_USER" --password "$CHAP_SECRET" &&
  tgtadm -C "$c" --lld iscsi --op bind --mode account --tid 2 --user "$CHAP_USER" &&
  tgtadm -C "$c" --lld iscsi --op new --mode account --user "$MUTUAL_USER" --password "$MUTUAL_SECRET" &&
  tgtadm -C "$c" --lld iscsi --op bind --mode account --tid 3 --user "$MUTUAL_USER" &&
  tgtadm -C "$c" --lld iscsi --op new --mode account --user "$TGT_USER" --password "$TGT_SECRET" &&
  tgtadm -C "$c" --lld iscsi --op bind --mode account --tid 3 --user "$TGT_USER" --outgoing &&
  # tgt answers None to a CRC32C offer unless told to use digests
  tgtadm -C "$c" --lld iscsi --op update --mode target --tid 3 -n HeaderDigest -v CRC32C &&
  tgtadm -C "$c" --lld iscsi --op update --mode target --tid 3 -n DataDigest -v CRC32C
}
configure_lmtgt() {
  lmtgt_setup "$BIN" "$IQN_PLAIN" vmplain 256MiB &&
  lmtgt_setup "$BIN" "$IQN_CHAP" vmchap 256MiB &&
  lmtgt_setup "$BIN" "$IQN_MUTUAL" vmmutual 256MiB &&
  lmtgt_cli "$BIN" target chap "$IQN_CHAP" --user "$CHAP_USER" --secret "$CHAP_SECRET" &&
  lmtgt_cli "$BIN" target chap "$IQN_MUTUAL" --user "$MUTUAL_USER" --secret "$MUTUAL_SECRET" \
    --mutual-user "$TGT_USER" --mutual-secret "$TGT_SECRET" || return 1
  case ",$SCENARIOS," in *,migrate,*) ;; *) return 0 ;; esac
  # the migration source is full of random data (so the copy has work to do
  # and the guest can check the part fio never writes); the target is a new
  # sparse file on the same filesystem, unmapped
  head -c "${MIG_SIZE_MB}M" /dev/urandom > "$DATA/$MIG_SRC.img" &&
  lmtgt_setup "$BIN" "$IQN_MIGRATE" "$MIG_SRC" "${MIG_SIZE_MB}MiB" --path "$DATA/$MIG_SRC.img" &&
  lmtgt_cli "$BIN" lun create "$MIG_DST" --size "${MIG_SIZE_MB}MiB" --path "$DATA/$MIG_DST.img"
}
start_target() {  # first|restart
  echo "==== $(date '+%F %T') start ($1)" >> "$TLOG"
  if [ "$TARGET" = lmtgt ]; then
    # lmtgt's data dir is a subdirectory: the migration images below sit
    # beside it (lmtgt refuses a --path inside its data dir)
    lmtgt_start "$BIN" "$DATA/lmtgt" "$PORT" "$TLOG" || return 1
    if [ "$1" = first ]; then configure_lmtgt >>"$RUN_DIR/setup.log" 2>&1 || { cat "$RUN_DIR/setup.log" >&2; return 1; }; fi
  else   # tgt keeps no configuration: set it up again after every start
    CTL=$(tgt_ctl_port)
    tgt_start "$CTL" "$PORT" "$TLOG" && configure_tgt "$CTL" >>"$RUN_DIR/setup.log" 2>&1
  fi
}
target_pid() { if [ "$TARGET" = lmtgt ]; then echo "$LMTGT_PID"; else echo "$TGTD_PID"; fi; }
cleanup() {
  set +e
  [ -n "$QEMU_PID" ] && stop_pid "$QEMU_PID" 5
  if [ "$TARGET" = lmtgt ]; then
    [ -n "$LMTGT_PID" ] && { stop_pid "$LMTGT_PID" 20 || log "lmtgt needed SIGKILL to stop"; }
  else
    [ -n "$TGTD_PID" ] && tgt_stop "$CTL" "$TGTD_PID"
  fi
  rm -f "$RUN_DIR/initrd.img" "$DATA"/*.img "$DATA"/lmtgt/volumes/* 2>/dev/null
}
trap cleanup EXIT

start_target first || die "could not start $TARGET (logs: $TLOG $RUN_DIR/setup.log)"
log "$TARGET pid $(target_pid) on 127.0.0.1:$PORT in a private netns; targets $IQN_PLAIN $IQN_CHAP $IQN_MUTUAL"

GUEST_PORTAL=10.0.2.2:$PORT
mkdir -p "$RUN_DIR/overlay"
guest_script > "$RUN_DIR/overlay/test.sh"
{ for v in PORTAL=$GUEST_PORTAL SCENARIOS=$SCENARIOS IQN_PLAIN=$IQN_PLAIN IQN_CHAP=$IQN_CHAP IQN_MUTUAL=$IQN_MUTUAL \
           IQN_MIGRATE=$IQN_MIGRATE MIGRATE_DONE=$MIGRATE_DONE \
           CHAP_USER=$CHAP_USER CHAP_SECRET=$CHAP_SECRET MUTUAL_USER=$MUTUAL_USER MUTUAL_SECRET=$MUTUAL_SECRET \
           TGT_USER=$TGT_USER TGT_SECRET=$TGT_SECRET; do echo "$v"; done; } > "$RUN_DIR/overlay/test.env"
{ cat "$GUEST_DIR/initrd-base.cpio.zst"
  (cd "$RUN_DIR/overlay" && printf '%s\n' test.sh test.env | cpio -o -H newc --owner=0:0 --quiet)
} > "$RUN_DIR/initrd.img"

# kill -9 the target and start it again on the same data dir (the guest asked)
kill_restart() {
  local old t0
  old=$(target_pid); t0=$(date +%s%N)
  log "HOST ACTION: kill -9 $TARGET (pid $old) while the guest has I/O running"
  kill -KILL "$old" 2>/dev/null || log "target pid $old was not running!"
  wait "$old" 2>/dev/null || true
  if [ "$TARGET" = lmtgt ]; then LMTGT_PID=""; else TGTD_PID=""; fi
  if start_target restart; then
    echo "VMTEST-HOST: killed $TARGET pid $old with SIGKILL, restarted as pid $(target_pid) on the same data dir in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  else
    echo "VMTEST-HOST: FAILED to restart $TARGET after kill -9 (see $TLOG)"
    RESTART_FAILED=1
  fi
}

# migrate the guest's LUN while its fio runs, wait for synced, split (the
# guest asked); answer with the marker target MIGRATE_DONE-ok or -fail
mcli() { "$BIN" --admin "$LMTGT_ADMIN_SOCK" "$@"; }
host_vpd() {  # PAGE: the LUN's VPD page as the host's libiscsi reads it on the portal
  command -v iscsi-inq >/dev/null || { echo "(no iscsi-inq)"; return 0; }
  iscsi-inq -e 1 -c "$1" "iscsi://127.0.0.1:$PORT/$IQN_MIGRATE/0" 2>&1
}
# mswap WHAT ARGS...: a split or rollback, retried while "deferred" (in-flight
# I/O took longer than --max-pause); prints the pause, or fails with why
mswap() {
  local what=$1 out try; shift
  for try in 1 2 3 4 5; do
    echo "+ lmtgt $* -o json" >&2
    if out=$(mcli "$@" -o json 2>&1); then echo "$out" | json_field pause_ms; return 0; fi
    log "$what: $out"
    case "$out" in *deferred*) ;; *) echo "$what failed: $out"; return 1 ;; esac
  done
  echo "$what deferred 5 times"; return 1
}
# rollback_steps: split --keep-source, fio mirrored back for ~2 s, rollback,
# ~2 s in dual-write again (the guest's fio keeps running throughout)
rollback_steps() {
  local out st
  out=$(mswap "split --keep-source" migration split "$MIG_SRC" --keep-source) || { MIG_FAIL=$out; return 1; }
  st=$(mcli migration show "$MIG_SRC" -o json | json_field state)
  [ "$st" = switched ] || { MIG_FAIL="after split --keep-source the pair is ${st:-?}, not switched"; return 1; }
  log "switched (pause $out ms): host writes mirrored back to the old volume"
  sleep 2   # the guest's fio writes through the switched pair meanwhile
  out=$(mswap rollback migration rollback "$MIG_SRC") || { MIG_FAIL=$out; return 1; }
  st=$(mcli migration show "$MIG_SRC" -o json | json_field state)
  [ "$st" = synced ] || { MIG_FAIL="after rollback the pair is ${st:-?}, not synced"; return 1; }
  MIG_ROLLED="keep-source and rollback done (rollback pause $out ms); "
  log "rolled back (pause $out ms): the LUN runs on its old volume again"
  sleep 2
}
migrate_action() {
  local s0 s1 p0 p1 j st out try t0 t_sync="" deadline marker
  log "HOST ACTION: migrate $MIG_SRC -> $MIG_DST (--speed high --max-mbps $MIG_MBPS) while the guest runs fio"
  s0=$(host_vpd 128 | sed -n 's/^Unit Serial Number:\[\(.*\)\]$/\1/p'); p0=$(host_vpd 131 | md5sum | cut -c1-32)
  t0=$SECONDS
  if ! lmtgt_cli "$BIN" migration create --source "$MIG_SRC" --target "$MIG_DST" --speed high \
         --max-mbps "$MIG_MBPS" >&2; then
    MIG_FAIL="migration create failed"
  else
    deadline=$((SECONDS + 120))
    while :; do
      j=$(mcli migration show "$MIG_SRC" -o json 2>&1); st=$(echo "$j" | json_field state)
      case "$st" in
        synced) t_sync=$((SECONDS - t0)); break ;;
        faulty|cancelled|split) MIG_FAIL="pair $st: $(echo "$j" | json_field reason)"; break ;;
      esac
      [ "$SECONDS" -ge "$deadline" ] && { MIG_FAIL="pair not synced 120 s after create (state ${st:-?}: $j)"; break; }
      sleep 0.2
    done
  fi
  if [ -z "$MIG_FAIL" ]; then
    log "pair synced after ${t_sync}s: $(echo "$j" | tr -d '\n' | tr -s ' ' | cut -c1-400)"
    [ "$MIG_ROLLBACK" = 1 ] && { rollback_steps || true; }   # MIG_FAIL says why
  fi
  if [ -z "$MIG_FAIL" ]; then
    for try in 1 2 3 4 5; do   # "split deferred": in-flight I/O took longer than --max-pause; retry
      echo "+ lmtgt migration split $MIG_SRC -o json" >&2
      if out=$(mcli migration split "$MIG_SRC" -o json 2>&1); then MIG_PAUSE=$(echo "$out" | json_field pause_ms); break; fi
      log "split: $out"
      case "$out" in *deferred*) ;; *) MIG_FAIL="split failed: $out"; break ;; esac
    done
    [ -z "$MIG_FAIL" ] && [ -z "$MIG_PAUSE" ] && MIG_FAIL="split deferred 5 times"
  fi
  s1=$(host_vpd 128 | sed -n 's/^Unit Serial Number:\[\(.*\)\]$/\1/p'); p1=$(host_vpd 131 | md5sum | cut -c1-32)
  echo "VMTEST-HOST: migrate: synced after ${t_sync:-?}s, ${MIG_ROLLED:-}split pause ${MIG_PAUSE:-?} ms (try ${try:-0}); VPD 0x80 serial [$s0] -> [$s1], 0x83 md5 $p0 -> $p1"
  if [ -z "$MIG_FAIL" ]; then
    [ "$s0" = "$s1" ] || MIG_FAIL="VPD 0x80 serial changed across the split: [$s0] -> [$s1]"
    [ "$p0" = "$p1" ] || MIG_FAIL="${MIG_FAIL:+$MIG_FAIL; }VPD 0x83 changed across the split"
  fi
  [ -n "$MIG_FAIL" ] && log "migrate FAILED: $MIG_FAIL"
  if [ -z "$MIG_FAIL" ]; then marker=$MIGRATE_DONE-ok; else marker=$MIGRATE_DONE-fail; fi
  { mcli target create "$marker" && mcli target allow "$marker" ALL; } >&2 ||
    log "could not create the marker target $marker: the guest will time out"
}

# kvm only when it can boot a stock kernel (a PVM-only /dev/kvm hangs)
ACCEL=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; fi
[ "$ACCEL" = kvm ] && CPU=qemu64 || CPU=max
CONSOLE=$RUN_DIR/console.log
: > "$CONSOLE"
log "booting the guest (accel $ACCEL, $VM_MEM MiB, $VM_SMP vCPU, portal $GUEST_PORTAL, scenarios $SCENARIOS); console $CONSOLE"
T_VM=$SECONDS
qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$VM_MEM" -smp "$VM_SMP" \
  -nodefaults -no-user-config -display none -no-reboot -serial "file:$CONSOLE" \
  -kernel "$GUEST_DIR/vmlinuz" -initrd "$RUN_DIR/initrd.img" \
  -append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init" \
  -netdev "user,id=n0,restrict=off" -device virtio-net-pci,netdev=n0,romfile= \
  > "$RUN_DIR/qemu.stderr" 2>&1 &
QEMU_PID=$!
# follow the console: echo it, and do what the guest asks for
ACTED=0; RESTART_FAILED=0; MIG_ACTED=0; MIG_FAIL=""; MIG_PAUSE=""; MIG_ROLLED=""; SEEN=0; VM_RC=0
while :; do
  n=$(wc -l < "$CONSOLE")
  if [ "$n" -gt "$SEEN" ]; then
    sed -n "$((SEEN+1)),${n}p" "$CONSOLE" | tr -d '\r' | sed 's/^/  guest| /' >&2
    for a in $(sed -n "$((SEEN+1)),${n}p" "$CONSOLE" | tr -d '\r' | sed -n 's/^VMTEST-HOST-ACTION: \([a-z-]*\).*/\1/p'); do
      case "$a" in
        kill-restart) [ "$ACTED" = 0 ] && { ACTED=1; kill_restart; } ;;
        migrate) [ "$MIG_ACTED" = 0 ] && [ "$TARGET" = lmtgt ] && { MIG_ACTED=1; migrate_action; } ;;
        *) log "the guest asked for an unknown host action: $a" ;;
      esac
    done
    SEEN=$n
  fi
  pid_alive "$QEMU_PID" || break
  if [ $((SECONDS-T_VM)) -ge "$TIMEOUT" ]; then log "VM time limit ${TIMEOUT}s reached"; VM_RC=124; stop_pid "$QEMU_PID" 5 || true; break; fi
  sleep 0.2
done
wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
sed -n "$((SEEN+1)),\$p" "$CONSOLE" | tr -d '\r' | sed 's/^/  guest| /' >&2
[ -s "$RUN_DIR/qemu.stderr" ] && sed 's/^/  qemu| /' "$RUN_DIR/qemu.stderr" >&2
log "VM ran $((SECONDS-T_VM))s (accel $ACCEL)"

# ---------------------------------------------------------------- verdict
STATUS=0
tr -d '\r' < "$CONSOLE" | grep '^VMTEST-RESULT: [a-z]* ' || true
case ",$SCENARIOS," in
  *,reconnect,*) if [ "$ACTED" = 0 ]; then echo "VMTEST-RESULT: FAIL (the guest never asked for the kill -9)"; STATUS=1; fi ;;
esac
case ",$SCENARIOS," in
  *,migrate,*)
    if [ "$MIG_ACTED" = 0 ]; then echo "VMTEST-RESULT: FAIL (the guest never asked for the migration)"; STATUS=1
    else
      [ -n "$MIG_FAIL" ] && { echo "VMTEST-RESULT: FAIL (migrate, host side: $MIG_FAIL)"; STATUS=1; }
      if pid_alive "$LMTGT_PID"; then
        vp=$(mcli lun show "$MIG_SRC" -o json | json_field volume_path)
        st=$(mcli migration show "$MIG_SRC" -o json | json_field state)
        pause=$(mcli migration show "$MIG_SRC" -o json | json_field split_pause_ms)
        echo "VMTEST-HOST: migrate: after the VM lun $MIG_SRC has volume $vp, the pair is ${st:-?}, split pause ${pause:-?} ms"
        if [ "$vp" != "$DATA/$MIG_DST.img" ] && ! [ "$vp" -ef "$DATA/$MIG_DST.img" ]; then
          echo "VMTEST-RESULT: FAIL (migrate: lun $MIG_SRC volume is $vp, not the former target's $DATA/$MIG_DST.img)"; STATUS=1
        fi
        [ "$st" = split ] || { echo "VMTEST-RESULT: FAIL (migrate: pair state ${st:-?}, not split)"; STATUS=1; }
      fi
    fi ;;
esac
[ "$RESTART_FAILED" = 1 ] && { echo "VMTEST-RESULT: FAIL ($TARGET did not restart after kill -9)"; STATUS=1; }
if [ "$TARGET" = lmtgt ]; then
  if [ -z "$LMTGT_PID" ] || ! pid_alive "$LMTGT_PID"; then echo "VMTEST-RESULT: FAIL (lmtgt is not running at the end: it crashed)"; STATUS=1; fi
  if grep -q -E '^panic:|fatal error:' "$TLOG"; then echo "VMTEST-RESULT: FAIL (lmtgt log has a panic: $TLOG)"; STATUS=1; fi
fi
if [ "$VM_RC" = 124 ]; then echo "VMTEST-RESULT: FAIL (VM time limit ${TIMEOUT}s)"; exit 1; fi
if [ "$STATUS" = 0 ] && tr -d '\r' < "$CONSOLE" | grep -q '^VMTEST-RESULT: PASS' && grep -q '^VMTEST-EXIT rc=0 ' <(tr -d '\r' < "$CONSOLE"); then
  echo "VMTEST-RESULT: PASS ($TARGET, accel $ACCEL, VM $((SECONDS-T_VM))s)"; exit 0
elif tr -d '\r' < "$CONSOLE" | grep -q '^VMTEST-RESULT: \(FAIL\|PASS\)'; then
  echo "VMTEST-RESULT: FAIL ($TARGET; logs in $RUN_DIR)"; exit 1
else
  echo "VMTEST-RESULT: FAIL (no result from the guest; console $CONSOLE)"; exit 2
fi
