#!/usr/bin/env bash
# mmdebstrap customize hook of vm/build-image.sh: turn the fresh Debian root file system ($1) into
# the echolab guest. Runs with /proc, /sys and /dev mounted in the chroot; its settings come from
# the ECHOLAB_VM_* environment that build-image.sh exports.
set -euo pipefail
root=${1:?usage: customize.sh ROOTFS}
files=$ECHOLAB_VM_FILES

subst() {
    sed -e "s|@ADDRESS@|$ECHOLAB_VM_ADDRESS|g" -e "s|@GATEWAY@|$ECHOLAB_VM_GATEWAY|g" \
        -e "s|@PORT@|$ECHOLAB_VM_PORT|g" -e "s|@NOFILE@|$ECHOLAB_VM_NOFILE|g" \
        -e "s|@MAX_CONNECTIONS@|$ECHOLAB_VM_MAX_CONNECTIONS|g" \
        -e "s|@WORKERS@|$ECHOLAB_VM_WORKERS|g" "$1"
}

echo echolab-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\techolab-vm\n' >"$root/etc/hosts"
install -m 0644 "$files/fstab" "$root/etc/fstab"
subst "$files/interfaces" >"$root/etc/network/interfaces"
install -m 0644 "$files/90-echolab.conf" "$root/etc/sysctl.d/90-echolab.conf"
install -m 0644 "$files/tmpfiles-echolab.conf" "$root/etc/tmpfiles.d/echolab.conf"
subst "$files/wsecho.service" >"$root/etc/systemd/system/wsecho.service"

# wsecho and its pinned dependencies from the controller's wheelhouse: no index is ever asked.
# The wheelhouse's constraints.txt (the pins) keeps a stale extra wheel from being picked.
mkdir -p "$root/tmp/wheelhouse"
cp "$ECHOLAB_VM_WHEELHOUSE"/*.whl "$root/tmp/wheelhouse/"
constraints=()
if [ -f "$ECHOLAB_VM_WHEELHOUSE/constraints.txt" ]; then
    cp "$ECHOLAB_VM_WHEELHOUSE/constraints.txt" "$root/tmp/wheelhouse/"
    constraints=(-c /tmp/wheelhouse/constraints.txt)
fi
chroot "$root" python3 -m venv /opt/echolab/venv
chroot "$root" /opt/echolab/venv/bin/pip install --quiet --no-index --no-cache-dir \
    --find-links /tmp/wheelhouse "${constraints[@]}" 'wsecho[speed]'
rm -rf "$root/tmp/wheelhouse"
chroot "$root" /opt/echolab/venv/bin/wsecho --help >/dev/null # fail the build, not the boot
chroot "$root" systemctl enable --quiet wsecho.service

# No login at all (the guest is reached over HTTP only); nothing to wait for at boot.
chroot "$root" passwd --lock root >/dev/null 2>&1 || sed -i 's|^root:[^:]*:|root:!:|' "$root/etc/shadow"
# Under TCG every unit costs seconds of boot: mask what a single-service guest does not use.
chroot "$root" systemctl mask --quiet systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_reap.service dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
    sys-fs-fuse-connections.mount sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount \
    modprobe@fuse.service modprobe@drm.service modprobe@dm_mod.service modprobe@loop.service \
    modprobe@efi_pstore.service modprobe@configfs.service 2>/dev/null || true
# A smaller image: package lists and caches are not needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
