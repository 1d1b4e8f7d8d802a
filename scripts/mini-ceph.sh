#!/bin/bash
# mini-ceph.sh - a single-node Ceph cluster on loopback for lmtgt's RBD tests:
# one monitor and one OSD (memstore by default: it forgets everything when the
# OSD restarts; OBJECTSTORE=bluestore for a file-backed OSD that survives a
# restart), auth none, pool size 1, pool "rbd" initialised. Needs the Debian
# packages ceph-mon ceph-osd ceph-common. Ready in about 8 s.
#
#   mini-ceph.sh start DIR [PORT]   start it; then export CEPH_CONF=DIR/ceph.conf
#   mini-ceph.sh stop DIR           stop the daemons started in DIR and wait for them
#   mini-ceph.sh stop-osd DIR       stop the OSD only
#   mini-ceph.sh start-osd DIR      start the OSD again
#   mini-ceph.sh DIR [PORT]         same as start
set -eu
cmd=${1:?usage: mini-ceph.sh start|stop|stop-osd|start-osd DIR [PORT]}
case $cmd in start|stop|stop-osd|start-osd) shift ;; *) cmd=start ;; esac
DIR=${1:?dir}; PORT=${2:-16789}
MEMSTORE_BYTES=${MEMSTORE_BYTES:-536870912}
OBJECTSTORE=${OBJECTSTORE:-memstore}
export CEPH_CONF=$DIR/ceph.conf

# stop_pid FILE: SIGTERM, wait up to 30 s, then SIGKILL and wait.
stop_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

wait_osd_up() {
  for _ in $(seq 120); do
    ceph osd stat 2>/dev/null | grep -q ' 1 up' && return 0
    sleep 0.5
  done
  echo "mini-ceph: the OSD did not come up (logs in $DIR/log)" >&2
  return 1
}

case $cmd in
stop)
  stop_pid "$DIR/run/osd.0.pid"
  stop_pid "$DIR/run/mon.a.pid"
  exit 0 ;;
stop-osd)
  stop_pid "$DIR/run/osd.0.pid"
  exit 0 ;;
start-osd)
  ceph-osd --id 0
  wait_osd_up
  exit 0 ;;
esac

for c in ceph-mon ceph-osd ceph rbd; do
  command -v $c >/dev/null || { echo "mini-ceph: $c is not installed (apt-get install ceph-mon ceph-osd ceph-common)" >&2; exit 1; }
done
rm -rf "$DIR"; mkdir -p "$DIR"/{mon,osd,log,run}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$CEPH_CONF" <<C
[global]
fsid = $FSID
mon host = 127.0.0.1:$PORT
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
mon allow pool delete = true
mon data avail crit = 0
mon warn on pool no redundancy = false
[mon.a]
mon data = $DIR/mon
public addr = 127.0.0.1:$PORT
[osd.0]
osd data = $DIR/osd
osd objectstore = $OBJECTSTORE
memstore device bytes = $MEMSTORE_BYTES
bluestore block size = 2147483648
bluestore block create = true
osd class load list = *
osd class default list = *
C
ceph-mon --id a --mkfs --keyring /dev/null
ceph-mon --id a
OSD_ID=$(ceph osd create)
ceph osd crush add osd.$OSD_ID 1 root=default >/dev/null
ceph-osd --id $OSD_ID --mkfs >>"$DIR/log/mkfs.log" 2>&1 || { echo "mini-ceph: ceph-osd --mkfs failed (see $DIR/log)" >&2; exit 1; }
ceph-osd --id $OSD_ID >>"$DIR/log/start.log" 2>&1
wait_osd_up
ceph osd pool create rbd 8 >/dev/null 2>&1
rbd pool init rbd
echo "mini-ceph: up in $DIR (CEPH_CONF=$CEPH_CONF)"
