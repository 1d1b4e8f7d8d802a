#!/bin/bash
# vm-powercut.sh - power-cut test: lmtgt runs inside a QEMU guest with its
# data dir on a virtio disk; the host writes to a LUN over iSCSI, migrates
# it, and kills QEMU (kill -9: a power cut for the guest) at a random moment
# of the copy, the dual-write or the split; then boots the guest again on
# the same disk and checks every acknowledged write and the split's all or
# nothing from the host.
#
#   host: pcio (qemu-io, libiscsi) --> 127.0.0.1:PORT  --hostfwd-->  guest 10.0.2.15:3260
#         lmtgt CLI                --> 127.0.0.1:APORT --hostfwd-->  guest :9260 (admin, token)
#   guest: initramfs (the vm-test.sh guest + a static lmtgt), /dev/vda = RUN/data.img
#          (raw, ext4, e2fsck -p at every boot) mounted on /data; lmtgt serve
#          --data-dir /data/lmtgt; LUNs src and dst are files in /data/vols.
#
# The disk is attached with cache=none (O_DIRECT on the host, a volatile
# write cache as the guest sees it, so the guest's flushes and FUA become
# fdatasync on the host). kill -9 of QEMU loses exactly the guest's memory:
# its page cache, ext4's uncommitted journal, lmtgt's and badger's buffers;
# whatever the guest did not write to the virtual disk is gone, as after a
# power loss. What the guest wrote to the virtual disk but did not flush
# survives (it reached the host kernel, which is not power-cut): this
# models a disk without a volatile cache. A disk that drops its cache on
# power loss is not modelled here; the crashable volume and directory of
# the unit tests (layer (a)) drop unsynced writes at the volume level.
# cache=writeback would behave the same on a QEMU kill (the host page cache
# survives it) but lets the guest see its flushes complete without
# reaching the host disk; cache=unsafe would ignore them; raw, not qcow2,
# so no QEMU-side metadata cache is lost with the process.
#
# First boot: LUN src (the initial pattern of pcio init, put into the ext4
# image by mke2fs -d), LUN dst (sparse), target IQN with src at LUN 0.
# Per cut i (seeded: SEED, printed; the phase rotates copy, dual, split,
# recovery):
#   - pcio write: 4 KiB-block writes of 1-8 blocks with one byte pattern each,
#     a flush every 1-32 writes, one write in 8 with FUA, journaled;
#   - migration create src -> dst (--max-mbps MBPS, vehicle auto or generic);
#   - copy: cut at a random time while the pair is copying;
#     dual: wait for synced, cut 0-2 s later (host writes go to both legs);
#     split: wait for synced, start `migration split`, then (alternately)
#     cut 0 to 3/4 of the last split's wall time later ("split" if it
#     had not returned), or wait for it to return and cut 0-300 ms later
#     ("split-acked": the split must be there after the reboot);
#     recovery: as copy, then a second cut 0-2 s after the rebooted lmtgt
#     serves (while it recovers the pair and resumes the copy);
#   - kill -9 QEMU, stop the writer, boot again, wait for lmtgt;
#   - check: the volumes of src and dst are either swapped and the pair
#     split, or unchanged and the pair not split (never half); an
#     acknowledged split must be there; the LUN (read through lmtgt) holds,
#     in every sector, its last durable write or a later issued one (pcio
#     check; durable = acknowledged with FUA or before a flush that
#     returned GOOD, lmtgt reporting a volatile write cache, WCE=1);
#   - if not split: wait for synced, split, read the LUN again: unchanged.
# Output: one line per cut (phase, writes checked, result), then
# VMTEST-RESULT: PASS|FAIL. A failure prints the seed and keeps the run dir.
#
# Usage: scripts/vm-powercut.sh [--cuts N] [--seed S] [--keep] [--timeout S]
# Env: POWERCUTS (cuts, default 10), SEED, CACHE_DIR (guest cache, default
#      scripts/cache), LUN_MB (64), MBPS (copy cap, 16), SPLIT_WINDOW (ms,
#      400: the split's wall time assumed before one was measured), VM_MEM (1024), VM_SMP (2), VMTEST_RUNS (REPO/.work/vm-powercut).
# Exit 0 when every cut passed, 1 on a failed check, 2 on a harness problem.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"

export CACHE_DIR=${CACHE_DIR:-$HERE/cache}
GUEST_DIR=$CACHE_DIR/guest
CUTS=${POWERCUTS:-10}
SEED=${SEED:-$(( $(date +%s) % 1000000 ))}
KEEP=0
TIMEOUT=${TIMEOUT:-3600}
LUN_MB=${LUN_MB:-64}
MBPS=${MBPS:-16}
SPLIT_WINDOW=${SPLIT_WINDOW:-400}
VM_MEM=${VM_MEM:-1024}
VM_SMP=${VM_SMP:-2}
while [ $# -gt 0 ]; do
  case "$1" in
    --cuts) CUTS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --keep) KEEP=1 ;;
    --timeout) TIMEOUT=$2; shift ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,"");print}' "$0"; exit 0 ;;
    *) echo "vm-powercut: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[vm-powercut $(ts)] $*" >&2; }
FAILED=""
die() { log "ERROR: $*"; echo "VMTEST-RESULT: FAIL (harness: $*; seed $SEED; logs in ${RUN_DIR:-?})"; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1 (package $2; scripts/install-test-deps.sh)"; }
need qemu-system-x86_64 qemu-system-x86
need qemu-io qemu-utils
need qemu-img qemu-utils
need mke2fs e2fsprogs
need go golang
qemu-io --help 2>/dev/null | grep -q . || die "qemu-io does not run"

RUNS=${VMTEST_RUNS:-$REPO/.work/vm-powercut}
mkdir -p "$RUNS"
RUN_DIR=$(mktemp -d "$RUNS/run.XXXXXX")
log "seed $SEED, $CUTS cuts, LUN ${LUN_MB} MiB, copy capped at ${MBPS} MB/s; run dir $RUN_DIR"

# ---------------------------------------------------------------- build
"$HERE/vm-test.sh" --build-only >&2 || die "guest build failed"
[ -f "$GUEST_DIR/vmlinuz" ] && [ -f "$GUEST_DIR/initrd-base.cpio.zst" ] || die "no guest in $GUEST_DIR"
# (ext4 is built into the cloud kernel; virtio_blk is a module)
{ zstd -dc "$GUEST_DIR/initrd-base.cpio.zst" 2>/dev/null | cpio -it --quiet 2>/dev/null || true; } | grep -q '/virtio_blk\.ko$' ||
  die "the cached guest has no virtio_blk module: rebuild it (scripts/vm-test.sh --build-only --rebuild)"
BIN=$RUN_DIR/lmtgt PCIO=$RUN_DIR/pcio
(cd "$REPO" && CGO_ENABLED=0 go build -ldflags '-s -w' -o "$BIN" ./cmd/lmtgt) || die "static build of lmtgt failed"
(cd "$REPO" && go build -o "$PCIO" ./scripts/pcio) || die "build of scripts/pcio failed"

TOKEN=powercut-$RANDOM$RANDOM
IQN=iqn.2026-12.org.lmtgt:powercut
SECTORS=$(( LUN_MB * 2048 ))
STATE=$RUN_DIR/state

# the guest side: /test.sh, run by the vm-test.sh guest's init after the network
mkdir -p "$RUN_DIR/overlay/usr/bin"
cp "$BIN" "$RUN_DIR/overlay/usr/bin/lmtgt"
echo "TOKEN=$TOKEN" > "$RUN_DIR/overlay/test.env"
cat > "$RUN_DIR/overlay/test.sh" <<'EOF'
#!/bin/sh
# guest: fsck and mount the data disk, run lmtgt until the power is cut
for m in virtio_blk ext4; do modprobe $m || echo "VMTEST-PC-WARN modprobe $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || { echo "VMTEST-PC-FAIL no /dev/vda"; exit 1; }
e2fsck -p /dev/vda > /tmp/fsck.txt 2>&1; rc=$?
echo "VMTEST-PC-FSCK rc=$rc $(tail -n 1 /tmp/fsck.txt)"
if [ $rc -ge 4 ]; then cat /tmp/fsck.txt; echo "VMTEST-PC-FAIL e2fsck -p exit $rc"; exit 1; fi
mkdir -p /data
mount -t ext4 /dev/vda /data || { echo "VMTEST-PC-FAIL mount /dev/vda"; exit 1; }
echo "VMTEST-PC-MOUNTED $(df -k /data | tail -n 1)"
lmtgt serve --data-dir /data/lmtgt --portal 0.0.0.0:3260 --admin /run/lmtgt.sock \
  --admin-tcp 0.0.0.0:9260 --admin-token "$TOKEN" --log-level info --log-format json 2>&1 |
  while IFS= read -r l; do echo "lmtgt| $l"; done
echo "VMTEST-PC-FAIL lmtgt exited"
exit 1
EOF
{ cat "$GUEST_DIR/initrd-base.cpio.zst"
  (cd "$RUN_DIR/overlay" && printf '%s\n' test.sh test.env usr usr/bin usr/bin/lmtgt | cpio -o -H newc --owner=0:0 --quiet)
} > "$RUN_DIR/initrd.img"

# the data disk: ext4 with the source LUN's initial content in it
mkdir -p "$RUN_DIR/disk/vols" "$RUN_DIR/disk/lmtgt"
"$PCIO" init -sectors "$SECTORS" -state "$STATE" -image "$RUN_DIR/disk/vols/src.img" || die "pcio init"
mke2fs -q -F -t ext4 -d "$RUN_DIR/disk" "$RUN_DIR/data.img" 1G >&2 || die "mke2fs"
rm -rf "$RUN_DIR/disk"

# ---------------------------------------------------------------- the VM
PORT=$(free_port); APORT=$(free_port)
[ "$PORT" != "$APORT" ] || APORT=$(free_port)
URL=iscsi://127.0.0.1:$PORT/$IQN/0
QEMU_PID="" WRITER_PID="" SPLIT_PID="" BOOTS=0 CONSOLE=""
cli() { "$BIN" --admin "127.0.0.1:$APORT" --admin-token "$TOKEN" "$@"; }
cleanup() {
  set +e
  [ -n "$WRITER_PID" ] && stop_pid "$WRITER_PID" 5
  [ -n "$QEMU_PID" ] && { kill -KILL "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; }
  [ -n "$SPLIT_PID" ] && stop_pid "$SPLIT_PID" 5
  rm -f "$RUN_DIR/initrd.img" "$RUN_DIR"/dump*.img "$BIN" "$PCIO"
  rm -rf "$RUN_DIR/overlay"
  if [ -z "$FAILED" ] && [ "$KEEP" = 0 ]; then rm -rf "$RUN_DIR"; else log "run dir kept: $RUN_DIR"; fi
}
trap cleanup EXIT

# boot: start QEMU on the same disk and wait until lmtgt serves in the guest.
boot() {
  local try
  for try in 1 2 3; do
    boot_once && return 0
    # a kernel that died before user space never touched the disk (under
    # TCG on a loaded host its timer check can fail): boot again
    tr -d '\r' < "$CONSOLE" | grep -q '^VMTEST-GUEST-UP' && return 1
    pid_dead "${QEMU_PID:-0}" || return 1
    log "boot $BOOTS: the guest kernel died before user space (try $try): $(tr -d '\r' < "$CONSOLE" | grep -m1 -i 'panic' | cut -c1-160)"
    wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
  done
  return 1
}
boot_once() {
  BOOTS=$((BOOTS + 1))
  CONSOLE=$RUN_DIR/console.$BOOTS.log
  : > "$CONSOLE"
  local t0=$SECONDS
  qemu-system-x86_64 -accel tcg -cpu max -m "$VM_MEM" -smp "$VM_SMP" \
    -nodefaults -no-user-config -display none -no-reboot -serial "file:$CONSOLE" \
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$RUN_DIR/initrd.img" \
    -append "console=ttyS0 loglevel=4 panic=-1 no_timer_check rdinit=/init" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:3260,hostfwd=tcp:127.0.0.1:$APORT-:9260" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -drive "file=$RUN_DIR/data.img,format=raw,if=none,id=d0,cache=none,aio=threads" \
    -device virtio-blk-pci,drive=d0 \
    > "$RUN_DIR/qemu.$BOOTS.stderr" 2>&1 &
  QEMU_PID=$!
  _ready_or_dead() { pid_dead "$QEMU_PID" || grep -q -e '"lmtgt serving' -e 'lmtgt serving' -e VMTEST-PC-FAIL "$CONSOLE"; }
  wait_for "lmtgt in the guest (boot $BOOTS)" 300 _ready_or_dead || { tail -n 30 "$CONSOLE" >&2; return 1; }
  if pid_dead "$QEMU_PID" || grep -q VMTEST-PC-FAIL "$CONSOLE"; then
    tr -d '\r' < "$CONSOLE" | tail -n 40 >&2; return 1
  fi
  BOOT_S=$((SECONDS - t0))
  FSCK=$(tr -d '\r' < "$CONSOLE" | sed -n 's/^VMTEST-PC-FSCK //p' | head -n 1)
  wait_for "the admin API through the forwarded port" 60 cli lun list >/dev/null || return 1
}
# cut: the power cut (kill -9 QEMU), then stop the writer and the split CLI.
cut() {
  if [ -n "$QEMU_PID" ]; then
    kill -KILL "$QEMU_PID" 2>/dev/null || log "QEMU $QEMU_PID was not running at the cut!"
    wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
  fi
  [ -n "$WRITER_PID" ] && { stop_pid "$WRITER_PID" 10 || true; WRITER_PID=""; }
  if [ -n "$SPLIT_PID" ]; then stop_pid "$SPLIT_PID" 10 || true; SPLIT_PID=""; fi
}
mstate() { { cli migration show src -o json 2>/dev/null | json_field state; } || true; }
vol() { { cli lun show "$1" -o json 2>/dev/null | json_field volume; } || true; }
# wait_state STATE SECONDS
wait_state() {
  local want=$1 secs=$2 deadline=$((SECONDS + $2)) st
  while :; do
    st=$(mstate)
    [ "$st" = "$want" ] && return 0
    case "$st" in faulty|cancelled) log "pair is $st: $(cli migration show src 2>&1 | tr '\n' ' ')"; return 1 ;; esac
    [ "$SECONDS" -ge "$deadline" ] && { log "pair not $want after ${secs}s (state ${st:-?})"; return 1; }
    sleep 0.2
  done
}
# split_now: split src, retrying while deferred; sets SPLIT_MS (wall time).
split_now() {
  local try out t0
  for try in 1 2 3 4 5 6 7 8; do
    t0=$(date +%s%N)
    if out=$(cli migration split src --max-pause 2s 2>&1); then
      SPLIT_MS=$(( ($(date +%s%N) - t0) / 1000000 )); return 0
    fi
    log "split: $out"
    case "$out" in *deferred*) ;; *) return 1 ;; esac
  done
  return 1
}
dump() {  # FILE: the LUN as the host reads it through lmtgt
  rm -f "$1"
  qemu-img convert -f raw -O raw -t none -T none "$URL" "$1" 2>"$RUN_DIR/dump.err" ||
    { cat "$RUN_DIR/dump.err" >&2; return 1; }
}
panic_check() {
  if tr -d '\r' < "$CONSOLE" | grep -q -E '^lmtgt\| (panic:|fatal error:)'; then
    log "lmtgt panicked in boot $BOOTS: $CONSOLE"; return 1
  fi
}

T0=$SECONDS
boot || die "first boot failed (console $CONSOLE)"
log "first boot: lmtgt ready after ${BOOT_S}s (fsck: $FSCK)"
{ cli lun create src --size "${LUN_MB}MiB" --path /data/vols/src.img &&
  cli lun create dst --size "${LUN_MB}MiB" --path /data/vols/dst.img &&
  cli target create "$IQN" && cli target map "$IQN" src --lun 0 && cli target allow "$IQN" ALL
} > "$RUN_DIR/setup.log" 2>&1 || { cat "$RUN_DIR/setup.log" >&2; die "setup over the admin API failed"; }
dump "$RUN_DIR/dump0.img" && "$PCIO" check -state "$STATE" -image "$RUN_DIR/dump0.img" >&2 ||
  die "the source LUN does not hold its initial pattern before any cut"

RANDOM=$SEED
PHASES=(copy dual split recovery)
declare -A HITS=()
PASSED=0 SPLITS=0
COPY_S=$(( LUN_MB / MBPS ))
[ "$COPY_S" -ge 1 ] || COPY_S=1
for i in $(seq 1 "$CUTS"); do
  [ $((SECONDS - T0)) -lt "$TIMEOUT" ] || { FAILED="time limit ${TIMEOUT}s"; break; }
  tc=$SECONDS
  aim=${PHASES[$(( (i - 1) % 4 ))]}
  veh=auto; [ $((RANDOM % 2)) = 0 ] && veh=generic
  J=$RUN_DIR/cut$i.journal
  VS=$(vol src); VD=$(vol dst)
  [ -n "$VS" ] && [ -n "$VD" ] && [ "$VS" != "$VD" ] || { FAILED="cut $i: cannot read the volumes of src and dst ($VS, $VD)"; break; }
  "$PCIO" write -url "$URL" -state "$STATE" -journal "$J" -seed $((SEED * 1000 + i)) \
    > "$RUN_DIR/cut$i.writer.log" 2>&1 &
  WRITER_PID=$!
  _writing() { pid_dead "$WRITER_PID" || [ "$(grep -c '^A ' "$J" 2>/dev/null)" -ge 20 ]; }
  wait_for "the writer's first acknowledged writes" 60 _writing || { FAILED="writer did not start"; break; }
  pid_alive "$WRITER_PID" || { cat "$RUN_DIR/cut$i.writer.log" >&2; FAILED="writer exited"; break; }
  cli migration create --source src --target dst --speed highest --max-mbps "$MBPS" --vehicle "$veh" \
    >> "$RUN_DIR/cut$i.cli.log" 2>&1 || { cat "$RUN_DIR/cut$i.cli.log" >&2; FAILED="migration create (cut $i)"; break; }
  tcreate=$(date +%s%N)
  split_acked=0 phase=""
  case "$aim" in
    copy|recovery)
      d=$(( 200 + RANDOM % (COPY_S * 800) ))
      sleep $((d / 1000)).$(printf '%03d' $((d % 1000)))
      st=$(mstate)
      case "$st" in copying|queued) phase=copy ;; synced) phase=dual ;; *) phase="copy($st)" ;; esac ;;
    dual)
      wait_state synced 180 || { FAILED="cut $i: pair not synced"; break; }
      d=$(( RANDOM % 2000 ))
      sleep $((d / 1000)).$(printf '%03d' $((d % 1000)))
      phase=dual ;;
    split)
      wait_state synced 180 || { FAILED="cut $i: pair not synced"; break; }
      d=$(( RANDOM % 1000 ))
      sleep $((d / 1000)).$(printf '%03d' $((d % 1000)))
      SL=$RUN_DIR/cut$i.split.log
      ts0=$(date +%s%N)
      ( cli migration split src --max-pause 2s > "$SL" 2>&1; echo "rc=$? ms=$(( ($(date +%s%N) - ts0) / 1000000 ))" >> "$SL" ) &
      SPLIT_PID=$!
      SPLITS=$((SPLITS + 1))
      if [ $((SPLITS % 2)) = 1 ]; then
        # while the split runs: 0 to 3/4 of the last split's wall time
        d=$(( RANDOM % (SPLIT_WINDOW * 3 / 4 + 1) ))
        sleep $((d / 1000)).$(printf '%03d' $((d % 1000)))
      else
        # after the split returned: it was acknowledged, it must survive
        _split_done() { grep -q '^rc=' "$SL"; }
        wait_for "the split command" 60 _split_done || true
        d=$(( RANDOM % 300 ))
        sleep 0.$(printf '%03d' "$d")
      fi
      ms=""
      if grep -q '^rc=0' "$SL"; then
        split_acked=1; phase=split-acked
        ms=$(sed -n 's/^rc=0 ms=//p' "$SL")
        [ -n "$ms" ] && SPLIT_WINDOW=$ms
      else phase=split; fi ;;
  esac
  at_ms=$(( ($(date +%s%N) - tcreate) / 1000000 ))
  cut
  HITS[$phase]=$(( ${HITS[$phase]:-0} + 1 ))
  [ "$aim" = split ] && phase="$phase (${d}ms after the split command; it took ${ms:-?}ms)" && ms=""
  tb=$SECONDS
  if ! boot; then FAILED="cut $i: the guest did not come back (console $CONSOLE)"; break; fi
  if [ "$aim" = recovery ]; then
    # a second cut while lmtgt recovers the pair and resumes the copy (no
    # host writes meanwhile: the journal stays the one of the first cut)
    d=$(( RANDOM % 2000 ))
    sleep $((d / 1000)).$(printf '%03d' $((d % 1000)))
    phase="$phase+recovery(+${d}ms, pair $(mstate))"
    HITS[recovery]=$(( ${HITS[recovery]:-0} + 1 ))
    cut
    if ! boot; then FAILED="cut $i: the guest did not come back after the recovery cut (console $CONSOLE)"; break; fi
  fi
  boot_s=$BOOT_S
  why=""
  st=$(mstate); nS=$(vol src); nD=$(vol dst)
  if [ "$nS" = "$VD" ] && [ "$nD" = "$VS" ]; then
    committed=yes; [ "$st" = split ] || why="volumes swapped but the pair is ${st:-?}, not split"
  elif [ "$nS" = "$VS" ] && [ "$nD" = "$VD" ]; then
    committed=no
    case "$st" in split|faulty|cancelled|"") why="volumes not swapped but the pair is ${st:-gone}" ;; esac
    [ "$split_acked" = 1 ] && why="${why:+$why; }the split was acknowledged before the cut and is not there"
  else
    committed=half; why="half a split: src volume $VS -> $nS, dst volume $VD -> $nD, pair ${st:-?}"
  fi
  res="" post=""
  if dump "$RUN_DIR/dump.img"; then
    res=$("$PCIO" check -state "$STATE" -image "$RUN_DIR/dump.img" -journal "$J" -new-state "$STATE.next" 2>&1) ||
      why="${why:+$why; }data: $(echo "$res" | tail -n 1)"
  else
    why="${why:+$why; }cannot read the LUN after the reboot"
  fi
  echo "$res" > "$RUN_DIR/cut$i.check.txt"
  # finish what the cut interrupted, then the data must not have moved
  if [ -z "$why" ] && [ "$committed" = no ]; then
    if wait_state synced 300 && split_now; then
      post="; split after the reboot took ${SPLIT_MS}ms"
      if dump "$RUN_DIR/dump.img"; then
        res2=$("$PCIO" check -state "$STATE.next" -image "$RUN_DIR/dump.img" 2>&1) ||
          why="after the split: $(echo "$res2" | tail -n 1)"
      else why="cannot read the LUN after the split"; fi
      [ "$(vol src)" = "$VD" ] || why="${why:+$why; }split returned but src is not on the former target volume"
    else
      why="could not finish the migration after the reboot (state $(mstate))"
    fi
  fi
  panic_check || why="${why:+$why; }panic in the lmtgt log"
  [ -f "$STATE.next" ] && mv "$STATE.next" "$STATE"
  summary=$(echo "$res" | head -n 1 | sed -n 's/^writes issued \([0-9]*\), acknowledged \([0-9]*\), durable \([0-9]*\) (flushes \([0-9]*\), I\/O errors \([0-9]*\)).*newer than durable \([0-9]*\); torn blocks \([0-9]*\).*/issued \1 acked \2 durable \3 (flushes \4, I\/O errors \5), newer than durable in \6 sectors, torn blocks \7/p')
  line="cut $i/$CUTS: aimed $aim, cut in $phase at +${at_ms}ms after create (vehicle $veh), split committed: $committed; writes ${summary:-?}; boot ${boot_s}s (fsck: $FSCK)$post; $((SECONDS - tc))s"
  if [ -n "$why" ]; then
    echo "VMTEST-CUT: $line: FAIL: $why"
    echo "$res" | sed 's/^/    /'
    FAILED="cut $i: $why"; break
  fi
  echo "VMTEST-CUT: $line: PASS"
  PASSED=$((PASSED + 1))
done
cut
hits=""; for p in "${!HITS[@]}"; do hits="$hits $p=${HITS[$p]}"; done
log "phases at the cuts (a recovery round cuts twice: in copy, then in recovery):$hits; $PASSED of $CUTS rounds passed in $((SECONDS - T0))s"
if [ -n "$FAILED" ]; then
  echo "VMTEST-RESULT: FAIL (power cut: $FAILED; seed $SEED; rerun with SEED=$SEED; logs in $RUN_DIR)"; exit 1
fi
echo "VMTEST-RESULT: PASS (power cut: $CUTS cuts,$hits; seed $SEED; $((SECONDS - T0))s)"
