# scripts/lib.sh - shell helpers shared by conformance.sh, the vm-*.sh scripts and bench.
# Source it; it defines functions only (no side effects).

# REPO: the repository root (this file lives in REPO/scripts).
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

ts() { date +%H:%M:%S; }

# port_open PORT [HOST]: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
# Asks the kernel (bind to port 0) when python3 exists, else probes random ports.
free_port() {
  local p i
  if command -v python3 >/dev/null 2>&1; then
    p=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null) && { echo "$p"; return 0; }
  fi
  for i in $(seq 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_open "$p" || { echo "$p"; return 0; }
  done
  echo "free_port: no free port found" >&2; return 1
}

# wait_for DESC SECONDS CMD...: poll CMD every 0.1 s until it succeeds or the
# deadline passes (then print why and return 1).
wait_for() {
  local desc=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
  until "$@" 2>/dev/null; do
    if [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ]; then
      echo "timed out after ${secs}s waiting for $desc" >&2; return 1
    fi
    sleep 0.1
  done
}

# pid_alive PID / pid_dead PID (a zombie child counts as dead)
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
pid_dead() { ! pid_alive "$1"; }

# stop_pid PID [SECONDS]: SIGTERM, wait (default 10 s), then SIGKILL. Returns
# 0 when the process ended on TERM, 1 when it needed KILL.
stop_pid() {
  local pid=$1 secs=${2:-10}
  pid_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  if wait_for "pid $pid to exit" "$secs" pid_dead "$pid"; then
    wait "$pid" 2>/dev/null; return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null; return 1
}

# ---------------------------------------------------------------- lmtgt
# build_lmtgt OUT: go build the daemon into OUT.
build_lmtgt() {
  (cd "$REPO" && go build -o "$1" ./cmd/lmtgt)
}

# lmtgt_start BIN DATADIR PORT LOG: start `lmtgt serve` in the background;
# sets LMTGT_PID and LMTGT_ADMIN_SOCK; waits until the portal and the admin
# socket are up.
lmtgt_start() {
  local bin=$1 dd=$2 port=$3 log=$4
  mkdir -p "$dd"
  LMTGT_ADMIN_SOCK=$dd/admin.sock
  "$bin" serve --data-dir "$dd" --portal "127.0.0.1:$port" --admin "$LMTGT_ADMIN_SOCK" \
    ${LMTGT_SERVE_ARGS:-} >>"$log" 2>&1 &
  LMTGT_PID=$!
  _lmtgt_up_or_dead() { ! pid_alive "$LMTGT_PID" || { port_open "$port" && [ -S "$LMTGT_ADMIN_SOCK" ]; }; }
  if ! wait_for "lmtgt to listen on 127.0.0.1:$port" 30 _lmtgt_up_or_dead; then
    echo "lmtgt did not start; last log lines ($log):" >&2; tail -n 20 "$log" >&2; return 1
  fi
  if ! pid_alive "$LMTGT_PID"; then
    echo "lmtgt exited at start; last log lines ($log):" >&2; tail -n 20 "$log" >&2; return 1
  fi
}

# lmtgt_cli BIN ARGS...: run the CLI against LMTGT_ADMIN_SOCK, echo it to stderr.
lmtgt_cli() {
  local bin=$1; shift
  echo "+ lmtgt $*" >&2
  "$bin" --admin "$LMTGT_ADMIN_SOCK" "$@"
}

# lmtgt_setup BIN IQN LUNNAME SIZE [extra lun create args...]: one LUN mapped
# at LUN 0 of IQN, open to all initiators.
lmtgt_setup() {
  local bin=$1 iqn=$2 lun=$3 size=$4; shift 4
  lmtgt_cli "$bin" lun create "$lun" --size "$size" "$@" >&2 &&
  lmtgt_cli "$bin" target create "$iqn" >&2 &&
  lmtgt_cli "$bin" target map "$iqn" "$lun" --lun 0 >&2 &&
  lmtgt_cli "$bin" target allow "$iqn" ALL >&2
}

# ---------------------------------------------------------------- Linux tgt
# tgt_start CTL PORT LOG: tgtd on a private control port; sets TGTD_PID.
tgt_start() {
  local ctl=$1 port=$2 log=$3
  tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$port" >>"$log" 2>&1 &
  TGTD_PID=$!
  _tgt_up_or_dead() { ! pid_alive "$TGTD_PID" || { port_open "$port" && tgtadm -C "$ctl" --mode sys --op show >/dev/null; }; }
  wait_for "tgtd to listen on 127.0.0.1:$port" 15 _tgt_up_or_dead || return 1
  pid_alive "$TGTD_PID" || { echo "tgtd exited at start (see $log)" >&2; return 1; }
}

# tgt_setup CTL IQN FILE: target tid 1, file LUN 1 (thin provisioned, so that
# UNMAP is offered as lmtgt does), open to all initiators.
tgt_setup() {
  local ctl=$1 iqn=$2 file=$3
  tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn" &&
  tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$file" &&
  tgtadm -C "$ctl" --lld iscsi --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 &&
  tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL
}

# tgt_stop CTL PID: tgtd ignores SIGTERM while it has targets: offline, drop
# every target even with sessions, delete the system, and only then KILL.
tgt_stop() {
  local ctl=$1 pid=$2 tid
  pid_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  timeout 5 tgtadm -C "$ctl" --mode sys --op update --name State -v offline >/dev/null 2>&1
  for tid in $(timeout 5 tgtadm -C "$ctl" --lld iscsi --mode target --op show 2>/dev/null |
               sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
    timeout 5 tgtadm -C "$ctl" --lld iscsi --mode target --op delete --tid "$tid" --force >/dev/null 2>&1
  done
  timeout 5 tgtadm -C "$ctl" --mode system --op delete >/dev/null 2>&1
  if ! wait_for "tgtd $pid to exit" 5 pid_dead "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# tgt_ctl_port: a tgtd control port (-C N, a unix socket
# /var/run/tgtd/socket.N) that no other tgtd uses.
tgt_ctl_port() {
  local n i
  for i in $(seq 100); do
    n=$(( 1000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    [ -e "/var/run/tgtd/socket.$n" ] || [ -e "/var/run/tgtd/socket.$n.lock" ] || { echo "$n"; return 0; }
  done
  return 1
}

# json_field KEY: the value of the top-level KEY in the indented JSON that
# lmtgt's `-o json` prints on stdin (strings without quotes); no jq needed.
json_field() {
  sed -n -e "s/^  \"$1\": *\"\(.*\)\",\{0,1\}\$/\1/p" -e "s/^  \"$1\": *\([^\",]*\),\{0,1\}\$/\1/p" | head -n 1
}

# The shared parts of the VM guest scripts (guest_script of vm-test.sh and
# vm-multipath.sh): text written into the script the guest runs (POSIX sh).
# guest_prelude: the step helpers up, step, bad (sets WHY) and run.
guest_prelude() {
  cat <<'EOF'
up() { cut -d' ' -f1 /proc/uptime; }
step() { echo "VMTEST-STEP [$(up)s] $*"; }
WHY=""
bad() { WHY="$*"; echo "VMTEST-STEP [$(up)s] FAILED: $*"; return 1; }
run() { echo "+ $*"; "$@"; }
EOF
}

# guest_runner: the end of a guest script: runs sc_NAME for every NAME of
# $SCENARIOS (comma-separated), one "VMTEST-RESULT: NAME PASS|FAIL" line
# each (after a failure the guest script's scenario_failed: its logs and
# cleanup), a last overall VMTEST-RESULT line; exits 1 if one failed.
guest_runner() {
  cat <<'EOF'
FAILED=0
for s in $(echo "$SCENARIOS" | tr ',' ' '); do
  WHY=""; T=$(up)
  if sc_$s; then
    echo "VMTEST-RESULT: $s PASS ($(awk -v a="$T" -v b="$(up)" 'BEGIN{printf "%.0f", b-a}')s)"
  else
    echo "VMTEST-RESULT: $s FAIL ($WHY)"
    FAILED=1; scenario_failed
  fi
done
if [ $FAILED = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL"; fi
exit $FAILED
EOF
}

# guest_kernel_hook W KERNEL_META: the start of the mmdebstrap customize
# hook (sh; the rootfs is its $1) that the VM guest builds write to
# W/kernel.sh: resolve KERNEL_META to its linux-image package, download
# it, unpack it into W/kernel (no initramfs-tools, no bootloader) and set
# KV to its version. The caller appends where the modules and the kernel
# go.
guest_kernel_hook() {
  local W=$1 meta=$2
  cat <<EOF
#!/bin/sh
set -e
R="\$1"
K=\$(chroot "\$R" apt-cache depends $meta | sed -n 's/^ *Depends: \\(linux-image-[0-9][^ ]*\\).*/\\1/p' | head -n1)
[ -n "\$K" ] || { echo "cannot resolve $meta" >&2; exit 1; }
chroot "\$R" sh -c "cd /tmp && apt-get download -q \$K >/dev/null 2>&1"
dpkg-deb -x "\$R"/tmp/\${K}_*.deb "$W/kernel"
rm -f "\$R"/tmp/*.deb
KV=\${K#linux-image-}
EOF
}
