#!/usr/bin/env bash
# mmdebstrap essential hook of vm/build-image.sh, run before the kernel is installed: make the initrd
# hold only what finds the root disk of a libvirt guest (virtio). The default (MODULES=most) packs
# hundreds of drivers, which costs build time and, under TCG emulation, tens of seconds of boot.
set -euo pipefail
root=${1:?usage: initramfs.sh ROOTFS}
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks"
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/echolab.conf"
cat >"$root/etc/initramfs-tools/hooks/echolab-virtio" <<'HOOK'
#!/bin/sh
# echolab: the virtio disk drivers (the ext4 root is built into the cloud kernel).
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk
HOOK
chmod 0755 "$root/etc/initramfs-tools/hooks/echolab-virtio"
