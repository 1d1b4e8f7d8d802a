#!/bin/bash
# install-test-deps.sh - install (as root, Debian/Ubuntu) the programs the tests
# use: libiscsi tools, qemu-img/qemu-io with the iSCSI driver, Linux tgt, fio,
# and what scripts/vm-test.sh needs to build and boot a guest (and
# scripts/vm-powercut.sh to make its ext4 data disk: e2fsprogs), and for Ceph RBD
# volumes librbd-dev, librados-dev (building) and ceph-mon, ceph-osd, ceph-common
# (scripts/mini-ceph.sh, the test cluster), tgt-rbd (Linux tgt's rbd backing
# store, a peer of scripts/bench rbd), and promtool (package prometheus) to
# check the /metrics exposition (target/metrics, integration). Does nothing
# when every command is already there, so it is cheap to run every time.
set -euo pipefail

PKGS="libiscsi-bin qemu-utils qemu-block-extra tgt fio jq qemu-system-x86 mmdebstrap cpio zstd socat iproute2 util-linux e2fsprogs librbd-dev librados-dev ceph-mon ceph-osd ceph-common tgt-rbd prometheus"
# command -> package (qemu-block-extra: the iscsi block driver module of qemu-img)
CHECKS="iscsi-test-cu:libiscsi-bin iscsi-ls:libiscsi-bin iscsi-inq:libiscsi-bin
iscsi-readcapacity16:libiscsi-bin qemu-img:qemu-utils qemu-io:qemu-utils qemu-nbd:qemu-utils
tgtd:tgt tgtadm:tgt fio:fio qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap
cpio:cpio zstd:zstd jq:jq socat:socat ip:iproute2 unshare:util-linux setsid:util-linux mke2fs:e2fsprogs
ceph-mon:ceph-mon ceph-osd:ceph-osd ceph:ceph-common rbd:ceph-common promtool:prometheus"

missing=""
for c in $CHECKS; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing="$missing ${c#*:}"
done
# the iscsi block driver lives in a module package of its own
if ! compgen -G "/usr/lib/*/qemu/block-iscsi.so" >/dev/null; then
  missing="$missing qemu-block-extra"
fi
# RBD support (metavol/volume/rbd) builds against librbd's and librados' headers;
# scripts/mini-ceph.sh runs the test cluster from ceph-mon, ceph-osd, ceph-common.
[ -f /usr/include/rbd/librbd.h ] || missing="$missing librbd-dev"
[ -f /usr/include/rados/librados.h ] || missing="$missing librados-dev"
# tgt's rbd backing store (tgtd --bstype rbd): the tgt-rbd peer of scripts/bench rbd
compgen -G "/usr/lib/tgt/backing-store/bs_rbd.so" >/dev/null || compgen -G "/usr/lib/*/tgt/backing-store/bs_rbd.so" >/dev/null ||
  missing="$missing tgt-rbd"
if [ -z "$missing" ]; then
  echo "install-test-deps: all test tools present"
  exit 0
fi
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
echo "install-test-deps: missing packages: $missing"
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: not root and no sudo; install as root: apt-get install -y $PKGS" >&2; exit 1
  fi
else SUDO=""; fi
command -v apt-get >/dev/null || { echo "install-test-deps: no apt-get; install by hand: $PKGS" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS
echo "install-test-deps: installed $PKGS"
