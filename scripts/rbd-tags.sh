#!/bin/bash
# rbd-tags.sh [auto|1|0] - print the Go build tags for RBD support: "rbd,RELEASE"
# when librbd's headers are installed (RELEASE is the Ceph release go-ceph needs
# as a tag for an older librbd: pacific for Debian 12's 16.2, quincy, reef;
# nothing for newer ones), nothing without them (auto) or when turned off (0).
# With 1 and no headers it fails: install librbd-dev librados-dev.
mode=${1:-auto}
h=/usr/include/rbd/librbd.h
[ "$mode" = 0 ] && exit 0
if [ ! -f $h ] || [ ! -f /usr/include/rados/librados.h ]; then
  if [ "$mode" = 1 ]; then
    echo "rbd-tags: RBD=1 needs librbd-dev and librados-dev (apt-get install librbd-dev librados-dev)" >&2
    exit 1
  fi
  exit 0
fi
minor=$(sed -n 's/^#define LIBRBD_VER_MINOR \([0-9]*\).*/\1/p' $h)
case $minor in
  16) echo rbd,pacific ;;
  17) echo rbd,quincy ;;
  18) echo rbd,reef ;;
  *) echo rbd ;;
esac
