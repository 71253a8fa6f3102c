#!/usr/bin/env bash
# Build the echolab VM guest: a Debian 12 root file system with wsecho installed from a wheelhouse,
# made only from the distribution's package mirror (no cloud image, no PyPI), booted directly by
# QEMU/libvirt with the kernel and initrd this script copies out of it.
#
#   vm/build-image.sh --wheelhouse DIR --out DIR [options]
#
#   --wheelhouse DIR  wheels for the guest's Python (cp311 for Debian 12), built on the controller by
#                     scripts/build-wheelhouse.sh 3.11 DIR; must hold a wsecho wheel
#   --out DIR         where vmlinuz, initrd.img, disk.qcow2 and image.json are written
#   --address CIDR    static address of eth0 in the guest            (default 10.0.0.42/24)
#   --gateway IP      its gateway, the host side of the bridge        (default 10.0.0.1)
#   --port N          wsecho's TCP port                               (default 8080)
#   --nofile N        LimitNOFILE of the wsecho unit                  (default 200000)
#   --max-connections N  wsecho's --max-connections                  (default 50000)
#   --workers N       wsecho worker processes, one per vCPU (1-64)    (default 1)
#   --size SIZE       size of the root file system, mkfs.ext4 syntax  (default 1G)
#   --suite NAME      Debian suite                                    (default bookworm)
#   --mirror URL      Debian mirror                                   (default: mmdebstrap's own)
#   --keyring FILE    Debian archive keyring for mmdebstrap, needed where the host's apt keys are
#                     not Debian's (Ubuntu: /usr/share/keyrings/debian-archive-keyring.gpg from
#                     debian-archive-keyring)                          (default: the host's apt keys)
#   --cache DIR       keep downloaded .deb files here and reuse them  (default: none)
#   --force           rebuild even when nothing changed
#   --check           only say whether a build is due ("changed") or not ("unchanged")
#
# Needs root, mmdebstrap, e2fsprogs and qemu-utils. It takes about a minute and 1.5 GB of scratch
# space in DIR. Its inputs (this script, vm/files, the wheels, the options) are hashed into a stamp:
# when OUT already holds an image of the same stamp nothing is rebuilt. The last line on stdout is
# "changed" or "unchanged" (configuration tools read it); progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
wheelhouse='' out='' address=10.0.0.42/24 gateway=10.0.0.1 port=8080 nofile=200000 workers=1 size=1G
max_connections=50000 suite=bookworm mirror='' keyring='' cache='' force=0 check=0

die() { echo "build-image: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) need "$@"; wheelhouse=$2; shift 2 ;;
        --out) need "$@"; out=$2; shift 2 ;;
        --address) need "$@"; address=$2; shift 2 ;;
        --gateway) need "$@"; gateway=$2; shift 2 ;;
        --port) need "$@"; port=$2; shift 2 ;;
        --nofile) need "$@"; nofile=$2; shift 2 ;;
        --max-connections) need "$@"; max_connections=$2; shift 2 ;;
        --workers) need "$@"; workers=$2; shift 2 ;;
        --size) need "$@"; size=$2; shift 2 ;;
        --suite) need "$@"; suite=$2; shift 2 ;;
        --mirror) need "$@"; mirror=$2; shift 2 ;;
        --keyring) need "$@"; keyring=$2; shift 2 ;;
        --cache) need "$@"; cache=$2; shift 2 ;;
        --force) force=1; shift ;;
        --check) check=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# Validate everything before spending a minute on mmdebstrap.
[ -n "$wheelhouse" ] || die "--wheelhouse DIR is required"
[ -n "$out" ] || die "--out DIR is required"
[ -d "$wheelhouse" ] || die "wheelhouse $wheelhouse is not a directory"
compgen -G "$wheelhouse/wsecho-*.whl" >/dev/null || die "no wsecho wheel in $wheelhouse (run scripts/build-wheelhouse.sh 3.11 DIR)"
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
ipv4="$octet\\.$octet\\.$octet\\.$octet"
[[ $address =~ ^$ipv4/([0-9]|[12][0-9]|3[0-2])$ ]] || die "--address must be IPv4/prefix, e.g. 10.0.0.42/24, not '$address'"
[[ $gateway =~ ^$ipv4$ ]] || die "--gateway must be an IPv4 address, not '$gateway'"
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port must be 1-65535, not '$port'"
[[ $nofile =~ ^[0-9]+$ ]] && [ "$nofile" -ge 1024 ] || die "--nofile must be an integer >= 1024, not '$nofile'"
[[ $max_connections =~ ^[0-9]+$ ]] && [ "$max_connections" -ge 1 ] ||
    die "--max-connections must be an integer >= 1, not '$max_connections'"
[[ $workers =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] && [ "$workers" -le 64 ] || die "--workers must be 1-64, not '$workers'"
[[ $size =~ ^[0-9]+[MG]$ ]] || die "--size must look like 1G or 800M, not '$size'"
[ -z "$keyring" ] || [ -r "$keyring" ] || die "--keyring $keyring is not a readable file (apt-get install debian-archive-keyring)"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap builds a chroot, mkfs.ext4 keeps ownership)"
for tool in mmdebstrap mkfs.ext4 qemu-img sha256sum flock; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install mmdebstrap e2fsprogs qemu-utils)"
done

if [ "$check" = 0 ]; then
    mkdir -p "$out"
    exec 9>"$out/.lock"
    flock 9 # one build at a time per output directory
fi

# The stamp: everything that decides the image's content, hashed.
stamp=$(
    {
        cat "$here/build-image.sh" "$here/customize.sh" "$here/initramfs.sh"
        (cd "$here/files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        (cd "$wheelhouse" && find . -maxdepth 1 \( -name '*.whl' -o -name constraints.txt \) -print0 |
            sort -z | xargs -0 sha256sum)
        echo "address=$address gateway=$gateway port=$port nofile=$nofile max_connections=$max_connections workers=$workers size=$size suite=$suite mirror=$mirror"
    } | sha256sum | cut -c1-16
)
if [ "$force" = 0 ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ] &&
    [ -s "$out/disk.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    echo "build-image: $out is up to date ($stamp)" >&2
    echo unchanged
    exit 0
fi

if [ "$check" = 1 ]; then
    echo "build-image: $out would be rebuilt ($stamp)" >&2
    echo changed
    exit 0
fi
echo "build-image: building $out ($stamp)" >&2
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# The guest's packages: a kernel made for virtual machines (virtio built in, small), systemd as init,
# ifupdown for the static address, python3-venv for the service's own virtual environment, the
# QEMU guest agent through which the host writes the run token (vm/run-token.py).
packages=linux-image-cloud-amd64,systemd-sysv,udev,ifupdown,iproute2,python3,python3-venv,qemu-guest-agent
# customize.sh runs inside mmdebstrap, with /proc, /sys and /dev mounted in the chroot.
export ECHOLAB_VM_FILES="$here/files" ECHOLAB_VM_WHEELHOUSE=$wheelhouse ECHOLAB_VM_ADDRESS=$address \
    ECHOLAB_VM_GATEWAY=$gateway ECHOLAB_VM_PORT=$port ECHOLAB_VM_NOFILE=$nofile \
    ECHOLAB_VM_MAX_CONNECTIONS=$max_connections \
    ECHOLAB_VM_WORKERS=$workers
# A package cache makes rebuilds (new wheels, new options) cheap and possible offline.
cache_hooks=()
if [ -n "$cache" ]; then
    mkdir -p "$cache"
    cache_hooks=(--skip=essential/unlink
        --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\""
        --setup-hook="sync-in '$cache' /var/cache/apt/archives/"
        --customize-hook="sync-out /var/cache/apt/archives '$cache'")
fi
# shellcheck disable=SC2086 # an empty $mirror means "mmdebstrap's default"
mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook="\"$here/initramfs.sh\" \"\$1\"" \
    "${cache_hooks[@]}" ${keyring:+"--keyring=$keyring"} --customize-hook="\"$here/customize.sh\" \"\$1\"" \
    "$suite" "$work/rootfs" $mirror >&2

# Direct kernel boot: the kernel and initrd live outside the disk, readable by libvirt's QEMU user.
# (/boot checked first: a failing find would end the script in the pipeline, without this message.)
[ -d "$work/rootfs/boot" ] || die "no /boot in the root file system"
kernel=$(find "$work/rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
initrd=$(find "$work/rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no kernel or initrd in the root file system"
install -m 0644 "$kernel" "$work/vmlinuz"
install -m 0644 "$initrd" "$work/initrd.img"

mkfs.ext4 -q -d "$work/rootfs" -L root "$work/disk.raw" "$size"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
cat >"$work/image.json" <<EOF
{"format_version": 1, "stamp": "$stamp", "suite": "$suite", "kernel": "$(basename "$kernel")",
 "address": "$address", "gateway": "$gateway", "port": $port, "nofile": $nofile,
 "max_connections": $max_connections,
 "workers": $workers, "wsecho_wheel": "$(cd "$wheelhouse" && ls wsecho-*.whl | tail -n1)", "built": "$(date -u +%FT%TZ)"}
EOF

# Each rename is atomic; the stamp goes last, so an interrupted build is rebuilt next time.
rm -f "$out/stamp"
for f in vmlinuz initrd.img disk.qcow2 image.json; do mv -f "$work/$f" "$out/$f"; done
echo "$stamp" >"$out/stamp"
echo "build-image: done in $(($(date +%s) - started)) s: $(du -h "$out/disk.qcow2" | cut -f1) disk" >&2
echo changed
