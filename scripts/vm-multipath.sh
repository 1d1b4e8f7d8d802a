#!/bin/bash
# vm-multipath.sh - move a LUN between storage systems under a Linux host
# that uses it through dm-multipath, with the host noticing nothing.
#
#   guest (generic kernel, open-iscsi, multipath-tools, udev, sg3-utils, fio)
#     --slirp 10.0.2.2:PORT-->  Linux tgt / lmtgt servers on the host's 127.0.0.1
#
# One boot runs every scenario (--scenarios), in order:
#   tgt   Linux tgt plays the old array (a 256 MiB LUN on a sparse file).
#         The guest logs in to tgt; dm-multipath makes a map (one path);
#         mkfs.ext4, mount, a checksummed file set, and fio write+verify
#         rounds (crc32c, verify backlog and a final verify pass per round)
#         run from here to the end. The host `lun import`s the tgt LUN into
#         lmtgt (identity adopt) and maps it; the guest logs in to lmtgt and
#         `multipath -ll` must show ONE map with TWO paths, the same WWID,
#         and the same logical-unit designators (sg_vpd -p di_lu) on both
#         paths. The guest removes the tgt path (multipathd del path, iSCSI
#         logout); the host runs `migration create` onto a local file, waits
#         for synced, `migration split`, deletes the former target LUN (the
#         remote one: lmtgt logs out of tgt) and stops tgt. The guest checks:
#         fio's verify passed in every round and ran through the whole move,
#         the file set is intact, no I/O error in the kernel log, the WWID
#         (map name, dm uuid, /dev/disk/by-id/dm-uuid-mpath-*) and the LU
#         designators never changed, e2fsck -fn clean after unmount.
#   handover  LUN hodisk moves from lmtgt server A to lmtgt server B (README
#         "Moving a LUN between lmtgt servers"). The guest logs in to A,
#         registers a persistent reservation key and reserves WRITE
#         EXCLUSIVE - REGISTRANTS ONLY with sg_persist (as a cluster does),
#         makes ext4, a file set and fio write+verify rounds. B imports the
#         LUN from A's peer target (identity adopt, PRs carried over); the
#         guest logs in to B: ONE map, TWO paths, the key and the
#         reservation visible through B's path. ALUA drives the path
#         choice: A's group goes active/non-optimized (multipath moves I/O
#         to B's group, prio alua), then standby (A's path is a ghost). B
#         runs `migration create --preempt` (re-sync of the PRs, fence of
#         A's LUN: a write straight to A through its peer target fails),
#         migrates under fio and splits; the PR is enforced on B (a write
#         from another initiator fails); A's group goes unavailable, B
#         deletes the remote LUN. The guest drops A's path and checks fio,
#         the file set, the key and reservation on B, the WWID, the kernel
#         log and e2fsck as in tgt.
#   rbd   LUN rbdisk on a Ceph RBD image (a mini cluster, scripts/mini-ceph.sh,
#         on the host) moves from lmtgt server A to lmtgt server B on the same
#         cluster WITHOUT copying (README "Running on Ceph", "Handover without
#         copying"). The guest logs in to A, registers and reserves (WRITE
#         EXCLUSIVE - REGISTRANTS ONLY, sg_persist), makes ext4, a file set
#         and fio write+verify rounds. B: lun create --rbd --adopt-from A's
#         LUN (identity, PRs; the image stays A's), its group standby. The
#         handover under fio: A's group transitioning, B: lun takeover
#         --adopt-from (PR re-sync, exclusive lock; A is blocklisted), B's
#         group active, A's standby; the guest logs in to B: ONE map, TWO
#         paths, A's a ghost, the key and reservation through B. No
#         migration, one image. The guest drops A's path; A retires its LUN
#         (the image stays, B's); then fio verify, file set, WWID and
#         e2fsck as in tgt; the kernel log may hold "I/O error" lines of
#         A's path only (commands in flight on A when it went standby,
#         retried on B by dm-multipath), nothing else. Runs only when the binary has RBD (built with
#         scripts/rbd-tags.sh) and Ceph is installed; in the default list
#         it is skipped otherwise, asked for by name it is an error.
#
# Adding a scenario NAME: a guest function sc_NAME in guest_script (it asks
# the host for actions with `ask ACTION`, and is built of the steps the
# scenarios share: first_path, pr_reserve, workload_start, second_path,
# drop_path, fio_running, fio_wait_round, workload_end, no_ioerr, fs_check,
# pr_release, teardown), host functions setup_NAME (before
# the boot: start servers with lm_start/tgt instances, export guest variables
# with guest_env), act_ACTION for each action the guest asks for (return 0
# or 1, set ACT_MSG), and optionally verdict_NAME (after the VM: return 1 on
# failure). lmtgt instances: `lm_start NAME` (own port, data dir and log),
# `lm NAME ARGS...` runs the CLI against it.
#
# Everything runs in a private network namespace (unshare --net).
#
# Usage: scripts/vm-multipath.sh [options]
#   --scenarios LIST  comma-separated subset of: tgt,handover,rbd (default all)
#   --bin PATH        lmtgt binary (default: go build into the run dir)
#   --build-only      build (or check) the cached guest and exit
#   --rebuild         rebuild the guest even when cached
#   --timeout S       wall-clock limit for the VM (default 900)
#   --keep            keep the run dir (kept anyway on failure)
# Env: CACHE_DIR (default scripts/cache; the guest is CACHE_DIR/guest-mp),
#      VM_MEM (MiB, 1536), VM_SMP (2), VMTEST_RUNS (REPO/.work/vm-multipath).
# Output: VMTEST-RESULT lines, one per scenario and a last overall one.
# Exit 0 when all passed, 1 on a failed scenario, 2 on a harness problem.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"
. "$HERE/vm-guest-mp.sh"

CACHE_DIR=${CACHE_DIR:-$HERE/cache}
MP_GUEST_DIR=$CACHE_DIR/guest-mp
ALL_SCENARIOS=tgt,handover,rbd

BIN=""
SCENARIOS=$ALL_SCENARIOS
EXPLICIT_SCENARIOS=0
BUILD_ONLY=0
REBUILD=0
TIMEOUT=900
KEEP=0
VM_MEM=${VM_MEM:-1536}
VM_SMP=${VM_SMP:-2}

ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift ;;
    --scenarios) SCENARIOS=$2; EXPLICIT_SCENARIOS=1; shift ;;
    --build-only) BUILD_ONLY=1 ;;
    --rebuild) REBUILD=1 ;;
    --timeout) TIMEOUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,"");print}' "$0"; exit 0 ;;
    *) echo "vm-multipath: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in ${SCENARIOS//,/ }; do
  case ",$ALL_SCENARIOS," in *,"$s",*) ;; *) echo "vm-multipath: unknown scenario $s (have: $ALL_SCENARIOS)" >&2; exit 2 ;; esac
done

log() { echo "[vm-multipath $(ts)] $*" >&2; }
die() { log "ERROR: $*"; echo "VMTEST-RESULT: FAIL (harness: $*)"; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1 (package $2; scripts/install-test-deps.sh)"; }

# ================================================================ guest side
# guest_init: PID 1 after the first stage (bash, on the root disk): mounts,
# modules, udev, network, iscsid and multipathd; runs /vmmp/test.sh.
guest_init() {
  cat <<'EOF'
#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/lock/iscsi /run/udev /mnt /etc/multipath
echo "VMTEST-GUEST-UP uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
for m in virtio_net iscsi_tcp sd_mod sg crc32c_generic dm_multipath dm_round_robin dm_service_time scsi_dh_alua; do
  modprobe "$m" || echo "VMTEST-WARN modprobe $m failed"
done
/usr/lib/systemd/systemd-udevd --daemon --resolve-names=never || echo "VMTEST-WARN systemd-udevd did not start"
# only the block devices there already (the root disk): a trigger of every
# device would load dozens of useless modules under TCG; the iSCSI disks and
# the dm maps come later and get their events as on any host
udevadm trigger --action=add --subsystem-match=block
udevadm settle --timeout=120 || echo "VMTEST-WARN udevadm settle timed out"
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "VMTEST-GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
set -a; . /vmmp/test.env; set +a
bash /vmmp/test.sh; rc=$?
echo "VMTEST-EXIT rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
busybox poweroff -f
sleep 10
echo o > /proc/sysrq-trigger
EOF
}

guest_script() {
  cat <<'EOF'
#!/bin/bash
# runs in the guest; /vmmp/test.env holds HOST, SCENARIOS and what the
# scenarios' setup_ functions exported
EOF
  guest_prelude # lib.sh
  cat <<'EOF'

# ---- the channel to the host: requests on the console, answers on ttyS1
exec 4<>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null || stty raw -echo <&4
# ask ACTION [SECONDS]: the host does ACTION (act_ACTION there) and answers
# "VMTEST-ANSWER ACTION ok|fail MESSAGE"; true when it answered ok
ask() {
  local a=$1 secs=${2:-300} line part="" deadline
  deadline=$(( $(date +%s) + secs ))
  echo "VMTEST-HOST-ACTION: $a"
  while :; do
    line=""
    if IFS= read -r -t 5 line <&4; then
      line=$part${line%$'\r'}; part=""
      case "$line" in
        "VMTEST-ANSWER $a ok"*) echo "host: ${line#VMTEST-ANSWER }"; return 0 ;;
        "VMTEST-ANSWER $a "*) bad "host: ${line#VMTEST-ANSWER }"; return 1 ;;
        *) [ -n "$line" ] && echo "host channel: unexpected [$line]" ;;
      esac
    else
      part=$part$line   # a timeout keeps what it read of a line
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { bad "no answer from the host ${secs}s after asking for $a"; return 1; }
  done
}

iscsid -f > /tmp/iscsid.log 2>&1 &
i=0; until iscsiadm -m session >/dev/null 2>&1 || [ $? -eq 21 ]; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "VMTEST-RESULT: FAIL (iscsid not answering)"; exit 1; }; sleep 0.1; done

# multipath.conf: only the disks of the scenarios are multipathed (every
# other device is blacklisted); the map is named by its WWID
# (user_friendly_names no), so the name itself shows that the WWID did not
# change. no_path_retry queue: while no path is usable (a path being
# swapped, a target restarting, a split's pause stretched by a slow
# machine) dm-multipath queues I/O instead of failing it to ext4 and fio;
# the test must see an error only if data is really lost, never because a
# path was briefly gone. (A production host may prefer a bounded
# no_path_retry N so that a dead storage system does not hang it forever.)
# path_grouping_policy failover: one path per group, I/O on one path at a
# time; the old array and lmtgt are different systems with different
# latencies, and round-robin across them gains nothing. prio const and
# detect_prio no for the old array's vendor/product: its paths keep the
# order they joined in even if lmtgt's path reports ALUA (TPGS) and the
# kernel attaches scsi_dh_alua to it.
cat > /etc/multipath.conf <<'MPC'
defaults {
	user_friendly_names no
	find_multipaths no
	polling_interval 2
}
blacklist {
	device {
		vendor ".*"
		product ".*"
	}
}
blacklist_exceptions {
	device {
		vendor "IET"
		product "VIRTUAL-DISK"
	}
	device {
		vendor "LMTGT"
		product ".*"
	}
}
devices {
	device {
		vendor "IET"
		product "VIRTUAL-DISK"
		path_grouping_policy failover
		path_checker tur
		prio const
		detect_prio no
		no_path_retry queue
		failback manual
	}
	device {
		vendor "LMTGT"
		product ".*"
		path_grouping_policy group_by_prio
		prio alua
		path_checker tur
		no_path_retry queue
		failback immediate
	}
}
MPC
multipathd -d -s > /tmp/multipathd.log 2>&1 &
i=0; until multipathd show daemon >/dev/null 2>&1; do
  i=$((i+1)); [ $i -gt 300 ] && { cat /tmp/multipathd.log; echo "VMTEST-RESULT: FAIL (multipathd not answering)"; exit 1; }; sleep 0.1; done
echo "multipathd: $(multipathd show daemon)"

# ---- iSCSI and multipath helpers
node_new() {  # PORTAL IQN: a node record for the portal the guest can reach
  iscsiadm -m node -T "$2" -p "$1" -o delete >/dev/null 2>&1
  run iscsiadm -m node -o new -T "$2" -p "$1" >/dev/null || bad "node new $2"
}
login() {  # PORTAL IQN
  node_new "$1" "$2" && run timeout 60 iscsiadm -m node -T "$2" -p "$1" --login || bad "login to $2 at $1"
}
logout() {  # PORTAL IQN
  run timeout 60 iscsiadm -m node -T "$2" -p "$1" --logout || bad "logout of $2 at $1"
}
session_disk() {  # IQN: the sd device of that target's session (empty if none)
  iscsiadm -m session -P 3 2>/dev/null | awk -v t="$1" '
    /^Target: /{cur=($2==t)} cur && /Attached scsi disk/{print $4; exit}'
}
wait_session_disk() {  # IQN VAR: wait for the session's disk, its size and udev
  local d="" i=0
  while :; do
    d=$(session_disk "$1")
    [ -n "$d" ] && [ -b "/dev/$d" ] && [ "$(cat /sys/block/$d/size 2>/dev/null || echo 0)" -gt 0 ] && break
    i=$((i+1)); [ $i -gt 300 ] && { bad "no disk for $1 30 s after login"; return 1; }; sleep 0.1
  done
  udevadm settle --timeout=60
  printf -v "$2" '%s' "$d"
  echo "disk $d of $1: $(blockdev --getsize64 /dev/$d) bytes, $(cat /sys/block/$d/device/vendor) $(cat /sys/block/$d/device/model)"
}
map_paths() {  # MAP: the number of paths of the map as multipathd knows it
  multipathd show paths raw format "%m %d" 2>/dev/null | awk -v m="$1" '$1==m{n++} END{print n+0}'
}
map_of() {  # DEV: the map that holds DEV ("" if none)
  multipathd show paths raw format "%d %m" 2>/dev/null | awk -v d="$1" '$1==d && $2!="[orphan]"{print $2}'
}
wait_map() {  # DEV PATHS VAR: wait until DEV is in a map with PATHS paths; VAR=map
  local m="" i=0
  while :; do
    m=$(map_of "$1")
    [ -n "$m" ] && [ "$(map_paths "$m")" = "$2" ] && [ -b "/dev/mapper/$m" ] && break
    i=$((i+1)); [ $i -gt 600 ] && { multipath -ll; multipathd show paths; tail -n 20 /tmp/multipathd.log; bad "$1 not in a map with $2 paths after 60 s"; return 1; }
    sleep 0.1
  done
  udevadm settle --timeout=60
  printf -v "$3" '%s' "$m"
}
# mp_check MAP PATHS: `multipath -ll` shows exactly one map, named MAP, with
# PATHS paths, all active and ready
mp_check() {
  multipath -ll > /tmp/mpll.txt 2>&1
  cat /tmp/mpll.txt
  local maps paths ready
  maps=$(grep -cE '^[^ |`].* dm-[0-9]+ ' /tmp/mpll.txt)
  paths=$(grep -cE '[0-9]+:[0-9]+:[0-9]+:[0-9]+ sd[a-z]+ ' /tmp/mpll.txt)
  ready=$(grep -cE '[0-9]+:[0-9]+:[0-9]+:[0-9]+ sd[a-z]+ .*active ready running' /tmp/mpll.txt)
  [ "$maps" = 1 ] || { bad "multipath -ll shows $maps maps, want 1"; return 1; }
  grep -qE "^$1 dm-[0-9]+ " /tmp/mpll.txt || { bad "the map is not named $1 (its WWID) any more"; return 1; }
  [ "$paths" = "$2" ] || { bad "multipath -ll shows $paths paths, want $2"; return 1; }
  [ "$ready" = "$2" ] || { bad "only $ready of $paths paths are active ready running"; return 1; }
  echo "multipath -ll: 1 map ($1), $paths paths, all active ready running"
}
ident() {  # DEV: the identity a host sees: LU designators of VPD 0x83, VPD 0x80, INQUIRY vendor/product
  sg_vpd -p di_lu "$1" 2>&1 && sg_vpd -p sn "$1" 2>&1 && sg_inq "$1" 2>&1 | grep -E 'Vendor identification|Product identification'
}
dm_uuid() {  # MAP: the dm uuid and the by-id link of the map
  local dm; dm=$(basename "$(readlink -f "/dev/mapper/$1")")
  echo "$dm uuid $(cat /sys/block/$dm/dm/uuid) by-id $(readlink -f "/dev/disk/by-id/dm-uuid-$(cat /sys/block/$dm/dm/uuid)")"
}
IOERR_RE='I/O error|Buffer I/O|EXT4-fs (error|warning)|blk_update_request|critical (target|medium|nexus)|Aborting journal|remounting filesystem read-only'
ioerr_count() { dmesg | grep -cE "$IOERR_RE"; }

# ---- the guest workload: fio write+verify rounds on ext4, and a file set
# fio_rounds DIR: fio rounds until DIR/stop exists; each round writes 16 MiB
# (4k and 64k random, rate limited) with crc32c verify of a backlog while it
# writes and of everything at its end; a failing round stops the loop and
# leaves DIR/failed
fio_rounds() {
  local d=$1 n=0
  while :; do
    n=$((n+1))
    if ! fio --name=round$n --filename="$d/data" --size=16M --rw=randwrite --bssplit=4k/50:64k/50 \
        --ioengine=libaio --direct=1 --iodepth=8 --rate=4m --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --verify_backlog=256 --randseed=$n > "$d/round$n.txt" 2>&1; then
      echo "$n" > "$d/failed"; return 1
    fi
    echo "$n" > "$d/rounds"
    [ -e "$d/stop" ] && return 0
  done
}
fio_start() {  # DIR
  rm -rf "$1"; mkdir -p "$1"
  fio_rounds "$1" &
  FIO_PID=$!
  local i=0
  until [ -s "$1/data" ]; do i=$((i+1)); [ $i -gt 300 ] && { bad "fio did not start"; return 1; }; sleep 0.1; done
}
fio_round() { cat "$1/rounds" 2>/dev/null || echo 0; }
fio_stop() {  # DIR: end after the current round; fails if any round failed
  touch "$1/stop"
  wait "$FIO_PID"; local rc=$?
  grep -hE 'WRITE:|READ:' "$1"/round*.txt | tail -n 2
  if [ $rc != 0 ] || [ -e "$1/failed" ]; then
    local f; f=$(cat "$1/failed" 2>/dev/null); cat "$1/round$f.txt"
    bad "fio round $f failed (verify or I/O error)"; return 1
  fi
  echo "fio: $(fio_round "$1") rounds, every one verified"
}
fileset_write() {  # DIR N: N files of 4 MiB of random data and their md5s in /tmp
  mkdir -p "$1"
  for i in $(seq 1 "$2"); do head -c 4M /dev/urandom > "$1/f$i"; done
  sync
  (cd "$1" && md5sum f*) > /tmp/fileset.md5
}
fileset_check() {  # DIR: the files read back from the device (page cache dropped)
  echo 3 > /proc/sys/vm/drop_caches
  (cd "$1" && md5sum -c --quiet /tmp/fileset.md5) || { bad "the file set changed"; return 1; }
  echo "file set: $(wc -l < /tmp/fileset.md5) files intact"
}

# ---- the steps the scenarios share. WHAT (the scenario) starts each step
# and names its files in /tmp; a VAR argument is the name of the caller's
# variable to set (as wait_session_disk and wait_map do). The workload
# runs on /mnt (ext4 on the map) and /mnt/fio.

# first_path WHAT PORTAL IQN SDVAR MAPVAR: log in to the LUN's first path,
# wait for its disk and its map (one path); keep the map's dm uuid and the
# identity seen through it (/tmp/WHAT-dmuuid.0, /tmp/WHAT-ident.0)
first_path() {
  local _w=$1 _sd _m
  step "$_w: login to $3 at $2"
  login "$2" "$3" && wait_session_disk "$3" _sd && wait_map "$_sd" 1 _m || return 1
  mp_check "$_m" 1 || return 1
  dm_uuid "$_m" | tee "/tmp/$_w-dmuuid.0"
  ident "/dev/mapper/$_m" > "/tmp/$_w-ident.0" || { cat "/tmp/$_w-ident.0"; bad "sg_vpd on the map"; return 1; }
  printf -v "$4" '%s' "$_sd"; printf -v "$5" '%s' "$_m"
}
# pr_reserve WHAT DEV KEY: register KEY and reserve WRITE EXCLUSIVE -
# REGISTRANTS ONLY through DEV (as a cluster does); pr_release DEV KEY
# undoes it (at the end: errors ignored)
pr_reserve() {
  step "$1: register key $3 and reserve WRITE EXCLUSIVE - REGISTRANTS ONLY through $2 (sg_persist)"
  run sg_persist --out --register --param-sark="$3" "$2" >/dev/null &&
    run sg_persist --out --reserve --param-rk="$3" --prout-type=5 "$2" >/dev/null || { bad "sg_persist register/reserve on $2"; return 1; }
  pr_check "$2" "$3"
}
pr_release() {
  run sg_persist --out --release --param-rk="$2" --prout-type=5 "$1" >/dev/null || true
  run sg_persist --out --register --param-rk="$2" --param-sark=0 "$1" >/dev/null || true
}
# workload_start WHAT MAP: ext4 on the map, a file set, fio write+verify
# rounds from now to the end (workload_end)
workload_start() {
  step "$1: ext4 on /dev/mapper/$2, a file set, fio write+verify rounds from now to the end"
  run mkfs.ext4 -F -q "/dev/mapper/$2" && run mount -t ext4 "/dev/mapper/$2" /mnt || { bad "mkfs/mount"; return 1; }
  fileset_write /mnt/set 8 && fio_start /mnt/fio
}
# second_path WHAT PORTAL IQN SDVAR MAP WHO: log in to the LUN's second
# path (WHO names it in messages): it presents the identity of the first
# and joins MAP as its second path
second_path() {
  local _w=$1 _sd _m
  step "$_w: login to $3 at $2"
  login "$2" "$3" && wait_session_disk "$3" _sd || return 1
  ident "/dev/$_sd" > "/tmp/$_w-ident.2"
  cmp -s "/tmp/$_w-ident.0" "/tmp/$_w-ident.2" || { diff "/tmp/$_w-ident.0" "/tmp/$_w-ident.2"; bad "$6 does not present the first path's identity"; return 1; }
  echo "$6 $_sd presents the identity of the first path (LU designators, serial, vendor/product)"
  wait_map "$_sd" 2 _m || return 1
  [ "$_m" = "$5" ] || { bad "$6 joined map $_m, not $5"; return 1; }
  printf -v "$4" '%s' "$_sd"
}
# drop_path PORTAL IQN DEV LEFT MAP: remove the path DEV (multipathd del
# path, iSCSI logout); MAP is left with one path, LEFT
drop_path() {
  local _m
  run multipathd del path "$3" || { bad "multipathd del path $3"; return 1; }
  logout "$1" "$2" || return 1
  wait_map "$4" 1 _m && mp_check "$5" 1
}
# fio_running WHEN: fio has failed no round and still runs (else it is
# stopped and WHEN says when it ended)
fio_running() {
  [ -e /mnt/fio/failed ] && { fio_stop /mnt/fio; return 1; }
  kill -0 "$FIO_PID" 2>/dev/null || { fio_stop /mnt/fio; bad "fio ended $1"; return 1; }
}
# fio_wait_round N: until fio finished round N (at most 2 min, or a failed round)
fio_wait_round() {
  local i=0
  while [ "$(fio_round /mnt/fio)" -lt "$1" ] && [ ! -e /mnt/fio/failed ]; do
    i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1
  done
}
# workload_end WHAT MAP N WHERE: stop fio (every round verified, at least
# N of them: WHERE says where the last whole one had to run), check the
# file set, and that the map's dm uuid and identity are those first_path
# kept
workload_end() {
  local _w=$1
  step "$_w: fio verify, file set, identity, kernel log"
  fio_stop /mnt/fio || return 1
  [ "$(fio_round /mnt/fio)" -ge "$3" ] || { bad "fio made no whole round $4"; return 1; }
  fileset_check /mnt/set || return 1
  dm_uuid "$2" | tee "/tmp/$_w-dmuuid.1"
  cmp -s "/tmp/$_w-dmuuid.0" "/tmp/$_w-dmuuid.1" || { bad "the map's dm uuid or by-id link changed"; return 1; }
  ident "/dev/mapper/$2" > "/tmp/$_w-ident.1"
  cmp -s "/tmp/$_w-ident.0" "/tmp/$_w-ident.1" || { diff "/tmp/$_w-ident.0" "/tmp/$_w-ident.1"; bad "the identity seen through the map changed"; return 1; }
  echo "WWID $2, dm uuid, LU designators, serial, vendor/product: unchanged"
}
# no_ioerr SINCE: no I/O error line in the kernel log beyond the SINCE first
no_ioerr() {
  local n=$(( $(ioerr_count) - $1 ))
  [ "$n" = 0 ] || { dmesg | grep -E "$IOERR_RE" | tail -n 10; bad "$n I/O error lines in the kernel log"; return 1; }
  echo "kernel log: no I/O error"
}
# fs_check WHAT MAP: umount, e2fsck -fn clean
fs_check() {
  step "$1: umount, e2fsck -fn"
  run umount /mnt || { bad "umount"; return 1; }
  run e2fsck -fn "/dev/mapper/$2" > /tmp/fsck.txt 2>&1 || { cat /tmp/fsck.txt; bad "e2fsck -fn found problems"; return 1; }
  tail -n 1 /tmp/fsck.txt
}
# teardown MAP PORTAL IQN: flush the map, log out of the path left
teardown() {
  run multipath -f "$1" || { bad "multipath -f $1"; return 1; }
  logout "$2" "$3"
}

# ================================================================ scenario tgt
sc_tgt() {
  local OLD=$HOST:$TGT_PORT NEW=$HOST:$LM_A_PORT SD_OLD SD_NEW MAP R0 R1 IOERR0 n
  IOERR0=$(ioerr_count)
  first_path tgt "$OLD" "$TGT_IQN" SD_OLD MAP || return 1
  cat /tmp/tgt-ident.0
  workload_start tgt "$MAP" || return 1

  step "tgt: the host imports the tgt LUN into lmtgt (identity adopt) and maps it"
  ask tgt-import || { fio_stop /mnt/fio; return 1; }
  second_path tgt "$NEW" "$LM_IQN" SD_NEW "$MAP" "lmtgt's path" || { fio_stop /mnt/fio; return 1; }
  step "tgt: one map, two paths"
  mp_check "$MAP" 2 || { fio_stop /mnt/fio; return 1; }

  step "tgt: remove the old array's path ($SD_OLD): multipathd del path, then log out of tgt"
  drop_path "$OLD" "$TGT_IQN" "$SD_OLD" "$SD_NEW" "$MAP" || { fio_stop /mnt/fio; return 1; }
  R0=$(fio_round /mnt/fio)

  step "tgt: the host migrates the LUN onto a local file under the running fio, splits, and stops tgt"
  ask tgt-migrate 600 || { fio_stop /mnt/fio; return 1; }
  R1=$(fio_round /mnt/fio)
  fio_running "before the split" || return 1
  echo "fio rounds finished: $R0 when the migration began, $R1 when tgt was stopped"
  # one more whole round after tgt is gone: the LUN lives on lmtgt alone
  n=$((R1 + 2))
  fio_wait_round "$n"
  workload_end tgt "$MAP" "$n" "after tgt was stopped" || return 1
  mp_check "$MAP" 1 || return 1
  echo "sg_inq -p 0x83 through the map now (the target port designators are lmtgt's, the LU ones tgt's):"
  sg_inq -p 0x83 "/dev/mapper/$MAP" 2>&1 | sed 's/^/    /'
  dmesg | grep -E 'multipath|sd[a-z]+\]|dm-[0-9]' | tail -n 20
  no_ioerr "$IOERR0" || return 1
  fs_check tgt "$MAP" || return 1
  step "tgt: tear down (flush the map, log out of lmtgt)"
  teardown "$MAP" "$NEW" "$LM_IQN"
}

# ================================================================ scenario handover
pr_keys() { sg_persist --in --read-keys "$1" 2>&1; }           # DEV
pr_res() { sg_persist --in --read-reservation "$1" 2>&1; }     # DEV
# pr_check DEV KEY: KEY registered and holding a write exclusive,
# registrants only reservation, seen through DEV
pr_check() {
  local k r
  k=$(pr_keys "$1"); r=$(pr_res "$1")
  echo "$k"; echo "$r"
  echo "$k" | grep -qi "$2" || { bad "key $2 not registered as seen through $1"; return 1; }
  echo "$r" | grep -qi "Key=$2" && echo "$r" | grep -qi 'Write Exclusive, registrants only' ||
    { bad "no write exclusive, registrants only reservation of key $2 through $1"; return 1; }
}
path_field() {  # DEV FORMAT: one multipathd field of a path (%T checker state, %p prio, %t dm state)
  multipathd show paths raw format "%d $2" 2>/dev/null | awk -v d="$1" '$1==d{print $2}'
}
# wait_path DEV FORMAT VALUE SECONDS
wait_path() {
  local i=0 v
  while :; do
    v=$(path_field "$1" "$2")
    [ "$v" = "$3" ] && return 0
    i=$((i+1)); [ $i -gt $(( $4 * 10 )) ] && { multipath -ll; multipathd show paths; bad "path $1: $2 is ${v:-?}, not $3, after $4 s"; return 1; }
    sleep 0.1
  done
}
# wait_prio_below DEV_LOW DEV_HIGH SECONDS: multipathd gives DEV_LOW a lower prio
wait_prio_below() {
  local i=0 a b
  while :; do
    a=$(path_field "$1" %p); b=$(path_field "$2" %p)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ] 2>/dev/null && { echo "prio: $1 $a, $2 $b"; return 0; }
    i=$((i+1)); [ $i -gt $(( $3 * 10 )) ] && { multipath -ll; bad "prio of $1 (${a:-?}) not below $2 (${b:-?}) after $3 s"; return 1; }
    sleep 0.1
  done
}
sc_handover() {
  local A=$HOST:$HA_PORT B=$HOST:$HB_PORT SD_A SD_B MAP R0 R1 IOERR0 n KEY=0x1ab2c3
  IOERR0=$(ioerr_count)
  first_path handover "$A" "$HA_IQN" SD_A MAP || return 1
  pr_reserve handover "/dev/$SD_A" "$KEY" || return 1
  workload_start handover "$MAP" || return 1

  step "handover: B imports the LUN from A's peer target (identity adopt, PRs carried over) and maps it"
  ask handover-import || { fio_stop /mnt/fio; return 1; }
  second_path handover "$B" "$HB_IQN" SD_B "$MAP" "B's path" || { fio_stop /mnt/fio; return 1; }
  step "handover: one map, two paths; the reservation is on B too"
  mp_check "$MAP" 2 || { fio_stop /mnt/fio; return 1; }
  pr_check "/dev/$SD_B" "$KEY" || { fio_stop /mnt/fio; return 1; }
  echo "sg_rtpg through B:"; sg_rtpg -d "/dev/$SD_B" 2>&1 | head -n 12

  step "handover: ALUA: A's group active/non-optimized: multipath moves I/O to B's path group"
  ask handover-ano || { fio_stop /mnt/fio; return 1; }
  wait_prio_below "$SD_A" "$SD_B" 60 || { fio_stop /mnt/fio; return 1; }
  step "handover: ALUA: A's group standby: A's path becomes a ghost"
  ask handover-standby || { fio_stop /mnt/fio; return 1; }
  wait_path "$SD_A" %T ghost 60 || { fio_stop /mnt/fio; return 1; }
  multipath -ll
  [ "$(path_field "$SD_B" %T)" = ready ] || { fio_stop /mnt/fio; bad "B's path is $(path_field "$SD_B" %T), not ready"; return 1; }
  echo "sg_rtpg through A:"; sg_rtpg -d "/dev/$SD_A" 2>&1 | head -n 12
  R0=$(fio_round /mnt/fio)

  step "handover: B fences A's LUN (migration create --preempt), migrates under fio, splits; A's group unavailable; B deletes the remote LUN"
  ask handover-migrate 600 || { fio_stop /mnt/fio; return 1; }
  R1=$(fio_round /mnt/fio)
  fio_running "before the split" || return 1
  echo "fio rounds finished: $R0 when the migration began, $R1 after the split"
  step "handover: the reservation is still on B after the split"
  pr_check "/dev/$SD_B" "$KEY" || { fio_stop /mnt/fio; return 1; }
  step "handover: drop A's path ($SD_A): multipathd del path, log out of A"
  drop_path "$A" "$HA_IQN" "$SD_A" "$SD_B" "$MAP" || { fio_stop /mnt/fio; return 1; }
  n=$((R1 + 2))
  fio_wait_round "$n"
  workload_end handover "$MAP" "$n" "on B alone" || return 1
  no_ioerr "$IOERR0" || return 1
  fs_check handover "$MAP" || return 1
  step "handover: release the reservation, tear down"
  pr_release "/dev/$SD_B" "$KEY"
  teardown "$MAP" "$B" "$HB_IQN"
}

# ================================================================ scenario rbd
sc_rbd() {
  local A=$HOST:$RA_PORT B=$HOST:$RB_PORT SD_A SD_B MAP R0 R1 IOERR0 n pa PA0 KEY=0x2bd2c3
  IOERR0=$(ioerr_count)
  first_path rbd "$A" "$RA_IQN" SD_A MAP || return 1
  PA0=$(dmesg | grep -cE "I/O error, dev $SD_A, ")
  pr_reserve rbd "/dev/$SD_A" "$KEY" || return 1
  workload_start rbd "$MAP" || return 1

  step "rbd: B creates the LUN on the same image, adopting A's identity and reservations (lun create --rbd --adopt-from); B's group standby"
  ask rbd-adopt || { fio_stop /mnt/fio; return 1; }
  R0=$(fio_round /mnt/fio)
  step "rbd: the handover without copy under fio: A transitioning, B takes the lock over (lun takeover --adopt-from), B active, A standby"
  ask rbd-handover || { fio_stop /mnt/fio; return 1; }
  second_path rbd "$B" "$RB_IQN" SD_B "$MAP" "B's path" || { fio_stop /mnt/fio; return 1; }
  wait_path "$SD_B" %T ready 60 || { fio_stop /mnt/fio; return 1; }
  wait_path "$SD_A" %T ghost 60 || { fio_stop /mnt/fio; return 1; }
  step "rbd: one map, two paths (A's a ghost: standby), I/O on B"
  multipath -ll
  fio_running "during the handover" || return 1
  step "rbd: the reservation is on B after the takeover"
  pr_check "/dev/$SD_B" "$KEY" || { fio_stop /mnt/fio; return 1; }
  step "rbd: drop A's path ($SD_A): multipathd del path, log out of A; A retires its LUN"
  drop_path "$A" "$RA_IQN" "$SD_A" "$SD_B" "$MAP" || { fio_stop /mnt/fio; return 1; }
  ask rbd-retire || { fio_stop /mnt/fio; return 1; }
  R1=$(fio_round /mnt/fio)
  echo "fio rounds finished: $R0 before the handover, $R1 after A retired"
  n=$((R1 + 1))
  fio_wait_round "$n"
  workload_end rbd "$MAP" "$n" "on B alone" || return 1
  # Commands dm-multipath had sent down A's path when A stopped serving
  # fail there ("I/O error, dev $SD_A": a path error that dm-multipath
  # retries on B's path, queued meanwhile); nothing else may fail: no
  # error on B's path, none in ext4 or the buffer cache, fio verified.
  n=$(( $(ioerr_count) - IOERR0 ))
  pa=$(( $(dmesg | grep -cE "I/O error, dev $SD_A, ") - PA0 ))
  dmesg | grep -E "$IOERR_RE" | tail -n 12
  echo "kernel log: $pa path errors on A's path $SD_A at the switch (retried by dm-multipath), $((n - pa)) other I/O error lines"
  [ "$((n - pa))" = 0 ] || { bad "$((n - pa)) I/O error lines in the kernel log besides A's path errors"; return 1; }
  fs_check rbd "$MAP" || return 1
  step "rbd: release the reservation, tear down"
  pr_release "/dev/$SD_B" "$KEY"
  teardown "$MAP" "$B" "$RB_IQN"
}

cleanup_all() {
  umount /mnt 2>/dev/null
  multipath -F >/dev/null 2>&1
  iscsiadm -m node -u >/dev/null 2>&1
  return 0
}

# after a failed scenario (guest_runner): its logs, then a clean slate
scenario_failed() {
  echo "---- iscsid log"; tail -n 20 /tmp/iscsid.log
  echo "---- multipathd log"; tail -n 30 /tmp/multipathd.log
  echo "---- dmesg"; dmesg | tail -n 30
  cleanup_all
}
EOF
  guest_runner # lib.sh
}

# ================================================================ host side
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need zstd zstd
need jq jq
if [ -z "${VMTEST_IN_NETNS:-}" ]; then
  if [ "$REBUILD" = 1 ] || ! mp_guest_ok; then
    need mmdebstrap mmdebstrap
    need mke2fs e2fsprogs
    mp_build_guest
  else
    log "cached guest $MP_GUEST_DIR (kernel $(cat "$MP_GUEST_DIR/KVERSION"))"
  fi
  [ "$BUILD_ONLY" = 1 ] && exit 0

  RUNS=${VMTEST_RUNS:-$REPO/.work/vm-multipath}
  mkdir -p "$RUNS"
  RUN_DIR=$(mktemp -d "$RUNS/run.XXXXXX")
  if [ -z "$BIN" ]; then
    BIN=$RUN_DIR/lmtgt
    log "building lmtgt -> $BIN"
    # with RBD when librbd-dev is there (scenario rbd), as make build does
    (cd "$REPO" && go build -tags "$(bash scripts/rbd-tags.sh)" -o "$BIN" ./cmd/lmtgt) || die "go build ./cmd/lmtgt failed"
  fi
  [ -x "$BIN" ] || die "no lmtgt binary at $BIN"
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  case ",$SCENARIOS," in *,rbd,*)
    why=""
    "$BIN" version 2>/dev/null | grep -q 'RBD built in' || why="$BIN is built without RBD (install librbd-dev librados-dev)"
    for c in ceph-mon ceph-osd rbd; do command -v $c >/dev/null 2>&1 || why="${why:+$why; }no $c (install ceph-mon ceph-osd ceph-common)"; done
    if [ -n "$why" ]; then
      [ "$EXPLICIT_SCENARIOS" = 1 ] && die "scenario rbd: $why"
      log "scenario rbd skipped: $why"; echo "VMTEST-RESULT: rbd SKIP ($why)"
      SCENARIOS=$(echo ",$SCENARIOS," | sed 's/,rbd,/,/; s/^,//; s/,$//')
    fi ;;
  esac
  need unshare util-linux; need ip iproute2; need tgtd tgt; need tgtadm tgt
  unshare --net true 2>/dev/null || die "unshare --net does not work here (needs root)"
  log "re-running in a private network namespace; run dir $RUN_DIR"
  rc=0
  VMTEST_IN_NETNS=1 VMTEST_RUN_DIR=$RUN_DIR unshare --net -- "$BASH" "$0" "${ARGS[@]}" --bin "$BIN" --scenarios "$SCENARIOS" || rc=$?
  if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$RUN_DIR"; else log "logs kept in $RUN_DIR"; fi
  exit "$rc"
fi

# ---------------------------------------------------------------- inside the netns
RUN_DIR=$VMTEST_RUN_DIR
DATA=$RUN_DIR/data
mkdir -p "$DATA"
ip link set lo up
QEMU_PID=""
GUEST_ENV=$RUN_DIR/test.env
echo "HOST=10.0.2.2" > "$GUEST_ENV"
echo "SCENARIOS=$SCENARIOS" >> "$GUEST_ENV"
guest_env() { local v; for v in "$@"; do echo "$v" >> "$GUEST_ENV"; done; }   # NAME=VALUE...

# lmtgt instances, by name: each with its own portal, data dir, admin socket and log
declare -A LM_PID=() LM_SOCK=() LM_PORT=() LM_LOG=()
lm_start() {  # NAME: start (or restart, on the same data dir and port) instance NAME
  local n=$1
  [ -n "${LM_PORT[$n]:-}" ] || LM_PORT[$n]=$(free_port)
  LM_LOG[$n]=$RUN_DIR/lmtgt-$n.log
  echo "==== $(date '+%F %T') start" >> "${LM_LOG[$n]}"
  lmtgt_start "$BIN" "$DATA/lmtgt-$n" "${LM_PORT[$n]}" "${LM_LOG[$n]}" || return 1
  LM_PID[$n]=$LMTGT_PID LM_SOCK[$n]=$LMTGT_ADMIN_SOCK
  log "lmtgt $n: pid ${LM_PID[$n]} on 127.0.0.1:${LM_PORT[$n]}, data dir $DATA/lmtgt-$n"
}
lm() {  # NAME ARGS...: the CLI against instance NAME (echoed to stderr)
  local n=$1; shift
  echo "+ lmtgt[$n] $*" >&2
  "$BIN" --admin "${LM_SOCK[$n]}" "$@"
}
lmq() { local n=$1; shift; "$BIN" --admin "${LM_SOCK[$n]}" "$@"; }   # the same, quiet
# lm_wait_state NAME LUN STATE SECONDS: wait for the pair of LUN to reach STATE
lm_wait_state() {
  local n=$1 lun=$2 want=$3 deadline=$((SECONDS + $4)) st j
  while :; do
    j=$(lmq "$n" migration show "$lun" -o json 2>&1) || true
    st=$(echo "$j" | jq -r '.state // empty' 2>/dev/null || true)
    [ "$st" = "$want" ] && return 0
    case "$st" in faulty|cancelled) ACT_MSG="pair of $lun is $st: $(echo "$j" | jq -r '.reason // empty' 2>/dev/null)"; return 1 ;; esac
    [ "$SECONDS" -lt "$deadline" ] || { ACT_MSG="pair of $lun not $want after $4 s (state ${st:-?})"; return 1; }
    sleep 0.2
  done
}
# lm_split NAME LUN: migration split, retried while deferred
lm_split() {
  local n=$1 lun=$2 try out
  for try in 1 2 3 4 5; do
    echo "+ lmtgt[$n] migration split $lun -o json" >&2
    if out=$(lmq "$n" migration split "$lun" -o json 2>&1); then
      log "split of $lun: pause $(echo "$out" | jq -r '.pause_ms // "?"' 2>/dev/null) ms (try $try)"; return 0
    fi
    log "split: $out"
    case "$out" in *deferred*) ;; *) ACT_MSG="split of $lun failed: $out"; return 1 ;; esac
  done
  ACT_MSG="split of $lun deferred 5 times"; return 1
}

# Linux tgt instances: TGT_CTL/TGT_PID/TGT_PORT/TGT_LOG of one named instance
declare -A TGT_CTL=() TGT_PIDS=() TGT_PORTS=()
tgt_instance() {  # NAME: start tgtd NAME on a free port
  local n=$1
  TGT_CTL[$n]=$(tgt_ctl_port) || return 1
  TGT_PORTS[$n]=$(free_port)
  tgt_start "${TGT_CTL[$n]}" "${TGT_PORTS[$n]}" "$RUN_DIR/tgt-$n.log" || return 1
  TGT_PIDS[$n]=$TGTD_PID
  log "tgt $n: pid $TGTD_PID on 127.0.0.1:${TGT_PORTS[$n]} (control port ${TGT_CTL[$n]})"
}
tgt_instance_stop() {  # NAME
  [ -n "${TGT_PIDS[$1]:-}" ] || return 0
  tgt_stop "${TGT_CTL[$1]}" "${TGT_PIDS[$1]}"
  TGT_PIDS[$1]=""
}

# ---------------------------------------------------------------- scenario tgt (host)
TGT_IQN=iqn.2001-04.com.example:old-array
LM_IQN=iqn.2026-12.org.lmtgt:vm-multipath
TGT_LUN_MB=256
# copy cap: the copy of the LUN (full of random data) lasts several seconds,
# so fio's writes meet it in the copy and in the dual-write
TGT_MIGRATE_MBPS=${VMMP_MIGRATE_MBPS:-16}
setup_tgt() {
  tgt_instance old || return 1
  # the old array's LUN is full (random data): the copy has all of it to move
  head -c "${TGT_LUN_MB}M" /dev/urandom > "$DATA/old-array.img"
  tgt_setup "${TGT_CTL[old]}" "$TGT_IQN" "$DATA/old-array.img" >>"$RUN_DIR/setup.log" 2>&1 || return 1
  [ -n "${LM_PID[a]:-}" ] || lm_start a || return 1
  guest_env "TGT_PORT=${TGT_PORTS[old]}" "TGT_IQN=$TGT_IQN" "LM_A_PORT=${LM_PORT[a]}" "LM_IQN=$LM_IQN"
}
act_tgt_import() {
  local j
  lm a lun import vmdisk --from "iscsi://127.0.0.1:${TGT_PORTS[old]}/$TGT_IQN/1" --identity adopt >&2 &&
  lm a target create "$LM_IQN" >&2 &&
  lm a target map "$LM_IQN" vmdisk --lun 0 >&2 &&
  lm a target allow "$LM_IQN" ALL >&2 || { ACT_MSG="lun import or target setup on lmtgt failed"; return 1; }
  lmq a lun show vmdisk >&2
  j=$(lmq a lun show vmdisk -o json)
  [ "$(echo "$j" | jq -r '.identity + " " + .remote.session')" = "adopted up" ] ||
    { ACT_MSG="lun vmdisk after the import: $(echo "$j" | jq -c '{identity, remote}'), want adopted with the remote session up"; return 1; }
  ACT_MSG="lun vmdisk imported from tgt and mapped at $LM_IQN/0"
}
act_tgt_migrate() {
  local t0=$SECONDS size j
  size=$(lmq a lun show vmdisk -o json | jq -r .size)
  lm a lun create vmdisk-local --size "$size" --path "$DATA/vmdisk-local.img" >&2 &&
  lm a migration create --source vmdisk --target vmdisk-local --speed high --max-mbps "$TGT_MIGRATE_MBPS" >&2 ||
    { ACT_MSG="lun create or migration create failed"; return 1; }
  lm_wait_state a vmdisk synced 300 || return 1
  log "pair synced after $((SECONDS - t0)) s: $(lmq a migration show vmdisk -o json | jq -c '{state, copied_bytes, total_bytes, dcl_bytes, vehicle}' 2>/dev/null)"
  lm_split a vmdisk || return 1
  j=$(lmq a lun show vmdisk -o json)
  [ "$(echo "$j" | jq -r '.remote == null')" = true ] && [ "$(echo "$j" | jq -r .volume_path)" -ef "$DATA/vmdisk-local.img" ] ||
    { ACT_MSG="after the split lun vmdisk is not on the local file: $(echo "$j" | jq -c '{volume_path, remote}')"; return 1; }
  [ "$(echo "$j" | jq -r .identity)" = adopted ] || { ACT_MSG="after the split lun vmdisk lost the adopted identity"; return 1; }
  # the former target LUN now holds the tgt volume: deleting it logs out of
  # tgt (and deletes nothing there); then the old array goes away
  lm a lun delete vmdisk-local >&2 || { ACT_MSG="lun delete vmdisk-local failed"; return 1; }
  tgt_instance_stop old
  ACT_MSG="migrated onto $DATA/vmdisk-local.img and split in $((SECONDS - t0)) s; tgt stopped"
}
verdict_tgt() {
  local j a
  for a in tgt-import tgt-migrate; do
    [ -n "${ACTED[$a]:-}" ] || { echo "VMTEST-RESULT: FAIL (tgt: the guest never asked for $a)"; return 1; }
  done
  j=$(lmq a lun show vmdisk -o json 2>&1) || { echo "VMTEST-RESULT: FAIL (tgt, host side: lun show vmdisk: $j)"; return 1; }
  echo "VMTEST-HOST: tgt: lun vmdisk after the VM: $(echo "$j" | jq -c '{identity, vendor, product, volume_path, state}')"
}

# ---------------------------------------------------------------- scenario handover (host)
HA_IQN=iqn.2026-12.org.lmtgt:server-a
HA_PEER=iqn.2026-12.org.lmtgt:server-a-peer
HB_IQN=iqn.2026-12.org.lmtgt:server-b
HO_LUN_MB=256
setup_handover() {
  lm_start ha && lm_start hb || return 1
  { lm ha lun create hodisk --size "${HO_LUN_MB}MiB" &&
    lm ha target create "$HA_IQN" && lm ha target map "$HA_IQN" hodisk --lun 0 && lm ha target allow "$HA_IQN" ALL &&
    # the peer target B imports through: its own target port group, so it
    # stays active when the hosts' group goes standby
    lm ha target create "$HA_PEER" && lm ha target map "$HA_PEER" hodisk --lun 0 && lm ha target allow "$HA_PEER" ALL &&
    lm ha alua group "$HA_PEER" 3
  } >>"$RUN_DIR/setup.log" 2>&1 || return 1
  guest_env "HA_PORT=${LM_PORT[ha]}" "HB_PORT=${LM_PORT[hb]}" "HA_IQN=$HA_IQN" "HB_IQN=$HB_IQN"
}
act_handover_import() {
  lm hb lun import hodisk --from "iscsi://127.0.0.1:${LM_PORT[ha]}/$HA_PEER/0" >&2 &&
  lm hb target create "$HB_IQN" >&2 &&
  lm hb alua group "$HB_IQN" 2 >&2 && lm hb alua port "$HB_IQN" 10 >&2 &&
  lm hb target map "$HB_IQN" hodisk --lun 0 >&2 &&
  lm hb target allow "$HB_IQN" ALL >&2 || { ACT_MSG="lun import or target setup on B failed"; return 1; }
  lmq hb lun show hodisk >&2
  ACT_MSG="B imported hodisk from A's peer target and maps it at $HB_IQN/0 (group 2, port 10)"
}
act_handover_ano() {
  lm ha alua state hodisk 1 active-nonoptimized >&2 || { ACT_MSG="alua state on A failed"; return 1; }
  ACT_MSG="A: hodisk active/non-optimized in group 1"
}
act_handover_standby() {
  lm ha alua state hodisk 1 standby >&2 || { ACT_MSG="alua state on A failed"; return 1; }
  lmq ha alua show hodisk >&2
  ACT_MSG="A: hodisk standby in group 1"
}
act_handover_migrate() {
  local t0=$SECONDS size j f out
  size=$(lmq hb lun show hodisk -o json | jq -r .size)
  lm hb lun create hodisk-local --size "$size" --path "$DATA/hodisk-local.img" >&2 &&
  lm hb migration create --source hodisk --target hodisk-local --preempt --speed high --max-mbps "$TGT_MIGRATE_MBPS" >&2 ||
    { ACT_MSG="lun create or migration create --preempt on B failed"; return 1; }
  f=$(lmq hb migration show hodisk -o json | jq -r '.fence // empty')
  case "$f" in held*) log "fence: $f" ;; *) ACT_MSG="fence on A's LUN not held: '$f'"; return 1 ;; esac
  # a stray write straight to A (through its active peer target; bytes
  # 0-511, which ext4 does not use) must fail: the fence
  if out=$(qemu-io -f raw -t none -c 'write -P 0xee 0 512' "iscsi://127.0.0.1:${LM_PORT[ha]}/$HA_PEER/0" 2>&1) &&
     ! echo "$out" | grep -qi 'failed\|error'; then
    ACT_MSG="a stray write straight to A went through the fence: $out"; return 1
  fi
  log "stray write to A refused: $(echo "$out" | tr '\n' ' ')"
  lm_wait_state hb hodisk synced 300 || return 1
  lm_split hb hodisk || return 1
  j=$(lmq hb lun show hodisk -o json)
  [ "$(echo "$j" | jq -r '.remote == null')" = true ] && [ "$(echo "$j" | jq -r .volume_path)" -ef "$DATA/hodisk-local.img" ] ||
    { ACT_MSG="after the split hodisk on B is not on the local file: $(echo "$j" | jq -c '{volume_path, remote}')"; return 1; }
  # the reservation is enforced on B: a write from another initiator
  # (libiscsi's) fails
  if out=$(qemu-io -f raw -t none -c 'write -P 0xee 0 512' "iscsi://127.0.0.1:${LM_PORT[hb]}/$HB_IQN/0" 2>&1) &&
     ! echo "$out" | grep -qi 'failed\|error'; then
    ACT_MSG="an unregistered initiator wrote to B despite the carried reservation: $out"; return 1
  fi
  lm ha alua state hodisk 1 unavailable >&2 || { ACT_MSG="alua state unavailable on A failed"; return 1; }
  # the former target LUN holds A's copy: deleting it releases the fence and logs out of A
  lm hb lun delete hodisk-local >&2 || { ACT_MSG="lun delete hodisk-local on B failed"; return 1; }
  ACT_MSG="fence held ($f), stray write to A refused, migrated and split in $((SECONDS - t0)) s, PR enforced on B, A unavailable, A's copy released"
}
verdict_handover() {
  local a
  for a in handover-import handover-ano handover-standby handover-migrate; do
    [ -n "${ACTED[$a]:-}" ] || { echo "VMTEST-RESULT: FAIL (handover: the guest never asked for $a)"; return 1; }
  done
  echo "VMTEST-HOST: handover: B: $(lmq hb lun show hodisk -o json | jq -c '{identity, volume_path, state}')"
}

# ---------------------------------------------------------------- scenario rbd (host)
RA_IQN=iqn.2026-12.org.lmtgt:rbd-a
RB_IQN=iqn.2026-12.org.lmtgt:rbd-b
RBD_LUN_MB=256
CEPH_DIR=""
setup_rbd() {
  CEPH_DIR=$RUN_DIR/ceph
  mkdir -p "$CEPH_DIR"
  bash "$HERE/mini-ceph.sh" start "$CEPH_DIR" >>"$RUN_DIR/ceph.log" 2>&1 || { tail -n 20 "$RUN_DIR/ceph.log" >&2; return 1; }
  export CEPH_CONF=$CEPH_DIR/ceph.conf   # lmtgt serve reads it (--ceph-conf's env var)
  lm_start ra && lm_start rb || return 1
  { lm ra lun create rbdisk --rbd rbd/rbdisk --size "${RBD_LUN_MB}MiB" &&
    lm ra target create "$RA_IQN" && lm ra target map "$RA_IQN" rbdisk --lun 0 && lm ra target allow "$RA_IQN" ALL
  } >>"$RUN_DIR/setup.log" 2>&1 || return 1
  guest_env "RA_PORT=${LM_PORT[ra]}" "RB_PORT=${LM_PORT[rb]}" "RA_IQN=$RA_IQN" "RB_IQN=$RB_IQN" "RBD_IMAGE=rbd/rbdisk"
}
rbd_url_a() { echo "iscsi://127.0.0.1:${LM_PORT[ra]}/$RA_IQN/0"; }
act_rbd_adopt() {
  local j
  lm rb lun create rbdisk --rbd rbd/rbdisk --adopt-from "$(rbd_url_a)" >&2 &&
  lm rb target create "$RB_IQN" >&2 &&
  lm rb alua group "$RB_IQN" 2 >&2 && lm rb alua port "$RB_IQN" 10 >&2 &&
  lm rb alua state rbdisk 2 standby >&2 &&
  lm rb target map "$RB_IQN" rbdisk --lun 0 >&2 &&
  lm rb target allow "$RB_IQN" ALL >&2 || { ACT_MSG="lun create --adopt-from or target setup on B failed"; return 1; }
  lmq rb lun show rbdisk >&2
  j=$(lmq rb lun show rbdisk -o json)
  [ "$(echo "$j" | jq -r .state)" = offline ] || { ACT_MSG="B's rbdisk before the takeover: $(echo "$j" | jq -c '{state, offline}'), want offline (the image is A's)"; return 1; }
  ACT_MSG="B: rbdisk on rbd/rbdisk, identity and PRs adopted from A, offline until the takeover ($(echo "$j" | jq -r .offline | cut -c1-80)...), mapped at $RB_IQN/0 standby"
}
act_rbd_handover() {
  local t0=$SECONDS ja jb n
  # transitioning, not standby: Linux (scsi_dh_alua) retries a command
  # that meets an ALUA transition instead of failing it as an I/O error
  lm ra alua state rbdisk 1 transitioning >&2 &&
  lm rb lun takeover rbdisk --adopt-from "$(rbd_url_a)" >&2 &&
  lm rb alua state rbdisk 2 active >&2 &&
  lm ra alua state rbdisk 1 standby >&2 || { ACT_MSG="the handover failed"; return 1; }
  jb=$(lmq rb lun show rbdisk -o json); ja=$(lmq ra lun show rbdisk -o json)
  [ "$(echo "$jb" | jq -r '.state + " " + .rbd.lock')" = "online held" ] || { ACT_MSG="B after the takeover: $(echo "$jb" | jq -c '{state, rbd}')"; return 1; }
  [ "$(echo "$ja" | jq -r .rbd.lock)" != held ] || { ACT_MSG="A still holds the lock after B's takeover"; return 1; }
  n=$(lmq rb migration list -o json | jq 'length')
  [ "$n" = 0 ] || { ACT_MSG="B has $n migrations: a handover without copy must have none"; return 1; }
  n=$(rbd -c "$CEPH_CONF" ls rbd | wc -l)
  [ "$n" = 1 ] || { ACT_MSG="$n images in pool rbd, want 1 (nothing copied)"; return 1; }
  ACT_MSG="A transitioning, B took the lock over (A: lock $(echo "$ja" | jq -r .rbd.lock)) and is active, A standby, in $((SECONDS - t0)) s; no migration, one image"
}
act_rbd_retire() {
  local out
  lm ra alua state rbdisk 1 unavailable >&2 &&
  lm ra target unmap "$RA_IQN" rbdisk >&2 &&
  lm ra lun delete rbdisk >&2 || { ACT_MSG="retiring A's LUN failed"; return 1; }
  out=$(rbd -c "$CEPH_CONF" ls rbd)
  [ "$out" = rbdisk ] || { ACT_MSG="after A's lun delete pool rbd holds '$out', want rbdisk (B's now)"; return 1; }
  ACT_MSG="A: unavailable, unmapped, deleted; rbd/rbdisk stays, B's"
}
verdict_rbd() {
  local a
  for a in rbd-adopt rbd-handover rbd-retire; do
    [ -n "${ACTED[$a]:-}" ] || { echo "VMTEST-RESULT: FAIL (rbd: the guest never asked for $a)"; return 1; }
  done
  echo "VMTEST-HOST: rbd: B: $(lmq rb lun show rbdisk -o json | jq -c '{identity, volume_path, state, rbd}')"
}

# ---------------------------------------------------------------- run
cleanup() {
  set +e
  [ -n "$QEMU_PID" ] && stop_pid "$QEMU_PID" 5
  local n
  for n in "${!LM_PID[@]}"; do [ -n "${LM_PID[$n]}" ] && { stop_pid "${LM_PID[$n]}" 20 || log "lmtgt $n needed SIGKILL to stop"; }; done
  for n in "${!TGT_PIDS[@]}"; do tgt_instance_stop "$n"; done
  [ -n "$CEPH_DIR" ] && bash "$HERE/mini-ceph.sh" stop "$CEPH_DIR" >>"$RUN_DIR/ceph.log" 2>&1
  rm -f "$RUN_DIR/initrd.img" "$DATA"/*.img "$DATA"/lmtgt-*/volumes/* 2>/dev/null
}
trap cleanup EXIT

for s in ${SCENARIOS//,/ }; do
  "setup_$s" || die "setup of scenario $s failed (logs in $RUN_DIR)"
done

mkdir -p "$RUN_DIR/overlay/vmmp"
guest_init > "$RUN_DIR/overlay/vmmp/init.sh"
guest_script > "$RUN_DIR/overlay/vmmp/test.sh"
cp "$GUEST_ENV" "$RUN_DIR/overlay/vmmp/test.env"
{ cat "$MP_GUEST_DIR/initrd-base.cpio.zst"
  (cd "$RUN_DIR/overlay" && printf '%s\n' vmmp vmmp/init.sh vmmp/test.sh vmmp/test.env | cpio -o -H newc --owner=0:0 --quiet)
} > "$RUN_DIR/initrd.img"
# the host's answers reach the guest on its second serial port
mkfifo "$RUN_DIR/ctl.in" "$RUN_DIR/ctl.out"
answer() {  # ACTION ok|fail MESSAGE
  echo "VMTEST-ANSWER $1 $2 $3" | tr '\n' ' ' | sed 's/ *$//' > "$RUN_DIR/answer.txt"
  echo >> "$RUN_DIR/answer.txt"
  timeout 10 dd of="$RUN_DIR/ctl.in" if="$RUN_DIR/answer.txt" status=none || log "could not write the answer to the guest"
}

# kvm only when it can boot a stock kernel (a PVM-only /dev/kvm hangs)
ACCEL=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; fi
[ "$ACCEL" = kvm ] && CPU=qemu64 || CPU=max
CONSOLE=$RUN_DIR/console.log
: > "$CONSOLE"
log "booting the guest (accel $ACCEL, $VM_MEM MiB, $VM_SMP vCPU, scenarios $SCENARIOS); console $CONSOLE"
T_VM=$SECONDS
qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m "$VM_MEM" -smp "$VM_SMP" \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$CONSOLE" -serial "pipe:$RUN_DIR/ctl" \
  -kernel "$MP_GUEST_DIR/vmlinuz" -initrd "$RUN_DIR/initrd.img" \
  -append "console=ttyS0 loglevel=4 panic=-1 no_timer_check net.ifnames=0 rdinit=/init" \
  -drive "file=$MP_GUEST_DIR/root.img,format=raw,if=none,id=root,snapshot=on" \
  -device virtio-blk-pci,drive=root \
  -netdev "user,id=n0,restrict=off" -device virtio-net-pci,netdev=n0,romfile= \
  > "$RUN_DIR/qemu.stderr" 2>&1 &
QEMU_PID=$!
# follow the console: echo it, and do what the guest asks for
declare -A ACTED=()
SEEN=0 VM_RC=0 HOST_FAIL=""
while :; do
  n=$(wc -l < "$CONSOLE")
  if [ "$n" -gt "$SEEN" ]; then
    sed -n "$((SEEN+1)),${n}p" "$CONSOLE" | tr -d '\r' | sed 's/^/  guest| /' >&2
    for a in $(sed -n "$((SEEN+1)),${n}p" "$CONSOLE" | tr -d '\r' | sed -n 's/^VMTEST-HOST-ACTION: \([a-z0-9-]*\).*/\1/p'); do
      [ -z "${ACTED[$a]:-}" ] || continue
      ACTED[$a]=1; ACT_MSG=""
      f=act_${a//-/_}
      if ! declare -F "$f" >/dev/null; then
        log "the guest asked for an unknown host action: $a"; answer "$a" fail "unknown host action"; continue
      fi
      log "HOST ACTION: $a"
      if "$f"; then
        log "host action $a: ok: $ACT_MSG"; echo "VMTEST-HOST: $a ok: $ACT_MSG"; answer "$a" ok "$ACT_MSG"
      else
        log "host action $a FAILED: $ACT_MSG"; echo "VMTEST-HOST: $a FAILED: $ACT_MSG"
        HOST_FAIL="${HOST_FAIL:+$HOST_FAIL; }$a: $ACT_MSG"; answer "$a" fail "$ACT_MSG"
      fi
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
[ -n "$HOST_FAIL" ] && { echo "VMTEST-RESULT: FAIL (host actions: $HOST_FAIL)"; STATUS=1; }
for s in ${SCENARIOS//,/ }; do
  if declare -F "verdict_$s" >/dev/null; then "verdict_$s" || STATUS=1; fi
done
for n in "${!LM_PID[@]}"; do
  pid_alive "${LM_PID[$n]}" || { echo "VMTEST-RESULT: FAIL (lmtgt $n is not running at the end: it crashed)"; STATUS=1; }
  if grep -q -E '^panic:|fatal error:' "${LM_LOG[$n]}"; then echo "VMTEST-RESULT: FAIL (lmtgt $n log has a panic: ${LM_LOG[$n]})"; STATUS=1; fi
done
if [ "$VM_RC" = 124 ]; then echo "VMTEST-RESULT: FAIL (VM time limit ${TIMEOUT}s)"; exit 1; fi
if [ "$STATUS" = 0 ] && tr -d '\r' < "$CONSOLE" | grep -q '^VMTEST-RESULT: PASS' && grep -q '^VMTEST-EXIT rc=0 ' <(tr -d '\r' < "$CONSOLE"); then
  echo "VMTEST-RESULT: PASS (multipath: $SCENARIOS, accel $ACCEL, VM $((SECONDS-T_VM))s)"; exit 0
elif tr -d '\r' < "$CONSOLE" | grep -q '^VMTEST-RESULT: \(FAIL\|PASS\)'; then
  echo "VMTEST-RESULT: FAIL (multipath; logs in $RUN_DIR)"; exit 1
else
  echo "VMTEST-RESULT: FAIL (no result from the guest; console $CONSOLE)"; exit 2
fi
