# scripts/vm-guest-mp.sh - the multipath guest of scripts/vm-multipath.sh:
# build it (once, cached) and boot it. Source it; it defines functions only.
#
# Unlike the vm-test.sh guest (a cloud kernel and a minimal initramfs that is
# the whole system), this guest is a real small Debian host:
#   - the generic kernel linux-image-amd64 (it has dm-multipath,
#     dm-round-robin and the SCSI device handlers such as scsi_dh_alua; the
#     cloud kernel has no CONFIG_SCSI_DH);
#   - a root disk (raw ext4 image, attached with snapshot=on so every boot
#     starts from the cached image) with open-iscsi, multipath-tools,
#     sg3-utils, fio, e2fsprogs and udev: udev names the disks
#     (/dev/disk/by-id/dm-uuid-mpath-WWID) and tells multipathd about new
#     paths as on any host;
#   - a tiny first-stage initramfs (busybox, kmod and the modules to reach
#     the root disk: virtio_pci, virtio_blk, ext4) that mounts the root disk,
#     copies the run's files from the appended overlay (/vmmp/*) into it and
#     switch_roots into /vmmp/init.sh (the run's PID 1, no systemd).
# The run's files (init.sh, test.sh, test.env) are appended to the
# initramfs at every run, so changing a scenario never rebuilds the guest.
#
# Cache layout ($MP_GUEST_DIR, default $CACHE_DIR/guest-mp):
#   vmlinuz  initrd-base.cpio.zst  root.img  KVERSION  PACKAGES  RECIPE
#
# Needs: mmdebstrap, cpio, zstd, mke2fs, qemu-system-x86_64 and lib.sh.

MP_SUITE=bookworm
MP_KERNEL_META=linux-image-amd64
MP_GUEST_PKGS="mount,util-linux,open-iscsi,multipath-tools,sg3-utils,sg3-utils-udev,kpartx,udev,dmsetup,fio,e2fsprogs,kmod,busybox,iproute2,bash,procps"
# modules of the first stage (the rest load from the root disk)
MP_STAGE1_MODULES="virtio_pci virtio_blk crc32c_generic ext4"
MP_ROOT_SIZE=1200M
MP_GUEST_RECIPE=1   # bump when the build below changes

# mp_stage1_init: PID 1 of the first-stage initramfs.
mp_stage1_init() {
  cat <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "VMTEST-STAGE1 uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
for m in virtio_pci virtio_blk crc32c_generic ext4; do
  modprobe "$m" || echo "VMTEST-WARN stage1 modprobe $m failed"
done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
  echo "VMTEST-RESULT: FAIL (stage1: cannot mount the root disk /dev/vda)"; poweroff -f; sleep 10
fi
mkdir -p /newroot/vmmp
cp -a /vmmp/. /newroot/vmmp/
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /vmmp/init.sh
EOF
}

mp_recipe_id() {
  { echo "$MP_GUEST_RECIPE $MP_SUITE $MP_KERNEL_META $MP_GUEST_PKGS $MP_STAGE1_MODULES $MP_ROOT_SIZE"
    declare -f mp_stage1_init mp_build_guest; } | sha256sum | cut -c1-16
}

# mp_guest_ok: the cache holds a guest of this recipe.
mp_guest_ok() {
  [ -s "$MP_GUEST_DIR/vmlinuz" ] && [ -s "$MP_GUEST_DIR/initrd-base.cpio.zst" ] && [ -s "$MP_GUEST_DIR/root.img" ] &&
    [ "$(cat "$MP_GUEST_DIR/RECIPE" 2>/dev/null)" = "$(mp_recipe_id)" ]
}

# mp_build_guest: build the guest into $MP_GUEST_DIR (about 3 min). Uses
# log and die of the caller.
mp_build_guest() {
  mkdir -p "$CACHE_DIR"
  rm -rf "$CACHE_DIR"/build-mp.*
  local W; W=$(mktemp -d "$CACHE_DIR/build-mp.XXXXXX")
  local R=$W/rootfs S=$W/stage O=$W/out t0=$SECONDS
  log "building the multipath guest: mmdebstrap $MP_SUITE with $MP_GUEST_PKGS and $MP_KERNEL_META (a few minutes)"
  # the kernel package is downloaded and unpacked on the side (no
  # initramfs-tools, no bootloader); its modules go into the rootfs, less
  # the drivers a VM never needs
  { guest_kernel_hook "$W" "$MP_KERNEL_META" # lib.sh
    cat <<EOF
M="$W/kernel/lib/modules/\$KV/kernel"
rm -rf "\$M"/sound "\$M"/drivers/gpu "\$M"/drivers/media "\$M"/drivers/net/wireless "\$M"/drivers/net/ethernet \\
  "\$M"/drivers/infiniband "\$M"/drivers/staging "\$M"/drivers/usb "\$M"/drivers/bluetooth "\$M"/drivers/iio \\
  "\$M"/drivers/hid "\$M"/drivers/input "\$M"/drivers/isdn "\$M"/drivers/mtd "\$M"/net/wireless \\
  "\$M"/net/mac80211 "\$M"/net/bluetooth
mkdir -p "\$R/usr/lib/modules"
cp -a "$W/kernel/lib/modules/\$KV" "\$R/usr/lib/modules/"
cp "$W/kernel/boot/vmlinuz-\$KV" "\$R/boot/"
chroot "\$R" depmod "\$KV"
echo "\$KV" > "\$R/KVERSION"
# a host as the tests want it: iscsid started by hand, the initiator name
# fixed, short iSCSI timeouts (dm-multipath, not the session, rides out a
# lost path), no services started by package scripts
sed -i -e 's|^iscsid.startup = .*|iscsid.startup = /usr/sbin/iscsid|' \\
       -e 's|^node.session.initial_login_retry_max = .*|node.session.initial_login_retry_max = 2|' \\
       -e 's|^node.session.timeo.replacement_timeout = .*|node.session.timeo.replacement_timeout = 15|' \\
       "\$R/etc/iscsi/iscsid.conf"
echo "InitiatorName=iqn.2026-12.org.lmtgt:vm-multipath" > "\$R/etc/iscsi/initiatorname.iscsi"
rm -rf "\$R"/usr/share/doc/* "\$R"/usr/share/man/* "\$R"/usr/share/locale/* "\$R"/var/cache/apt/*.bin
EOF
  } > "$W/kernel.sh"
  chmod +x "$W/kernel.sh"
  mmdebstrap --quiet --variant=apt --include="$MP_GUEST_PKGS" \
    --customize-hook="$W/kernel.sh \"\$1\"" "$MP_SUITE" "$R" >"$W/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed (multipath guest)"; }
  local KV; KV=$(cat "$R/KVERSION")
  log "rootfs ready after $((SECONDS-t0))s (kernel $KV); the root disk and the first stage"

  # first stage: busybox, kmod and the modules to mount the root disk
  mkdir -p "$S"/usr/bin "$S"/usr/sbin "$S"/usr/lib64 "$S"/dev "$S"/proc "$S"/sys "$S"/vmmp "$S"/usr/lib/modules
  ln -s usr/bin "$S/bin"; ln -s usr/sbin "$S/sbin"; ln -s usr/lib "$S/lib"; ln -s usr/lib64 "$S/lib64"
  local b p lib
  for b in kmod busybox; do
    p=$(chroot "$R" sh -c "command -v $b") || die "$b not in the guest rootfs"
    p=$(chroot "$R" readlink -f "$p")
    cp -L "$R$p" "$S/usr/bin/$b"
    for lib in $(chroot "$R" ldd "$p" | grep -o '/[^ ]*'); do
      [ -e "$S$lib" ] || { mkdir -p "$(dirname "$S$lib")"; cp -L "$R$lib" "$S$lib"; }
    done
  done
  for b in modprobe insmod depmod; do ln -sf ../bin/kmod "$S/usr/sbin/$b"; done
  for b in $(chroot "$R" busybox --list); do
    [ -e "$S/usr/bin/$b" ] || [ -e "$S/usr/sbin/$b" ] || ln -s busybox "$S/usr/bin/$b"
  done
  mkdir -p "$S/lib/modules/$KV"
  for m in $MP_STAGE1_MODULES; do chroot "$R" modprobe -S "$KV" --show-depends "$m" 2>/dev/null || true; done |
    awk '$1=="insmod"{print $2}' | sort -u | while read -r p; do
      mkdir -p "$(dirname "$S$p")"; cp "$R$p" "$S$p"
    done
  cp "$R/lib/modules/$KV"/modules.* "$S/lib/modules/$KV/"
  mp_stage1_init > "$S/init"; chmod 755 "$S/init"

  mkdir -p "$O"
  cp "$R/boot/vmlinuz-$KV" "$O/vmlinuz"
  (cd "$S" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) | zstd -q -T0 -9 > "$O/initrd-base.cpio.zst"
  # the kernel reads an appended cpio archive only at an aligned offset
  truncate -s $(( ( $(stat -c %s "$O/initrd-base.cpio.zst") + 511 ) / 512 * 512 )) "$O/initrd-base.cpio.zst"
  chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' open-iscsi multipath-tools sg3-utils udev fio e2fsprogs > "$O/PACKAGES"
  rm -f "$R/KVERSION"
  mke2fs -q -F -t ext4 -L vmmp-root -d "$R" "$O/root.img" "$MP_ROOT_SIZE" || die "mke2fs of the root disk failed"
  echo "$KV" > "$O/KVERSION"
  mp_recipe_id > "$O/RECIPE"
  rm -rf "$MP_GUEST_DIR"; mv "$O" "$MP_GUEST_DIR"; rm -rf "$W"
  log "multipath guest built in $((SECONDS-t0))s ($(du -sh "$MP_GUEST_DIR" | cut -f1) in $MP_GUEST_DIR)"
}
