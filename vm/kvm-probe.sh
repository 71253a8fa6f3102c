#!/usr/bin/env bash
# Prove that KVM really runs a guest kernel on this host before a domain relies on it.
#
#   vm/kvm-probe.sh [--timeout SECONDS] [--cache FILE] [--device PATH] KERNEL
#
# The mere presence of /dev/kvm proves nothing: on some hosts (nested or restricted virtualisation)
# it exists but a standard kernel hangs in early boot. So boot KERNEL under KVM with no root disk:
# a working KVM gets through the whole kernel start-up within a second or two and stops at
# "VFS: Unable to mount root fs" (panic=-1 and -no-reboot then end QEMU); a broken one never gets
# there and is killed after the timeout (default 20 s).
#
# Prints one JSON line {"kvm": true|false, "reason": "...", "cached": true|false} and exits 0
# either way, whatever QEMU and the guest do (hang, get killed, print nothing or garbage); exit 2 on
# bad usage. With --cache FILE the verdict is kept for this kernel, QEMU and host kernel, so that
# repeated runs (idempotence, check mode) do not wait again. --device names the KVM device that
# must be there and usable before QEMU is tried (default /dev/kvm; tests use another one).
set -euo pipefail

timeout=20 cache='' device=/dev/kvm kernel=''
die() { echo "kvm-probe: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout=$2; shift 2 ;;
        --cache) [ $# -ge 2 ] || die "--cache needs a value"; cache=$2; shift 2 ;;
        --device) [ $# -ge 2 ] || die "--device needs a value"; device=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$kernel" ] || die "one KERNEL only"; kernel=$1; shift ;;
    esac
done
[ -n "$kernel" ] || die "usage: $0 [--timeout SECONDS] [--cache FILE] [--device PATH] KERNEL"
[ -r "$kernel" ] || die "kernel $kernel is not readable"
[[ $timeout =~ ^[0-9]+$ ]] && [ "$timeout" -ge 1 ] || die "--timeout must be a positive integer"
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is missing"

verdict() { # kvm reason cached
    local reason=${2//\"/\'}
    reason=${reason//\\//}
    printf '{"kvm": %s, "reason": "%s", "cached": %s}\n' "$1" "$reason" "$3"
}

# One line of FILE for a reason: the first or last line with printable characters, unprintable
# bytes dropped, at most 100 characters, or "nothing printed". awk reads all of its input and
# always succeeds, so no pipeline here can fail under pipefail, whatever FILE holds.
printable_line() { # first|last FILE
    LC_ALL=C tr -cd '[:print:]\n' <"$2" | LC_ALL=C awk -v which="$1" '
        NF && first == "" { first = $0 }
        NF { last = $0 }
        END { line = (which == "first") ? first : last
              print ((line == "") ? "nothing printed" : substr(line, 1, 100)) }'
}

if [ ! -c "$device" ]; then
    verdict false "$device does not exist (as a character device)" false
    exit 0
fi
if [ ! -r "$device" ] || [ ! -w "$device" ]; then
    verdict false "$device is not accessible to $(id -un)" false
    exit 0
fi

# QEMU's version line is part of the cache key; a QEMU that cannot even say it is tried anyway.
qemu_version=$(timeout -s KILL 10 "$qemu" --version 2>/dev/null) || qemu_version="no version"
key=$(printf '%s\n' "$(sha256sum <"$kernel")" "${qemu_version%%$'\n'*}" "$(uname -r)" \
    "$(stat -c '%t:%T' "$device")" | sha256sum | cut -c1-16)
if [ -n "$cache" ] && [ -s "$cache" ]; then
    read -r cached_key cached_kvm cached_reason <"$cache" || true
    if [ "${cached_key:-}" = "$key" ]; then
        verdict "$cached_kvm" "$cached_reason" true
        exit 0
    fi
fi

console=$(mktemp) errors=$(mktemp)
trap 'rm -f "$console" "$errors"' EXIT
started=$(date +%s)
rc=0
timeout -s KILL "$timeout" "$qemu" -accel kvm -machine q35 -cpu host -m 256 -smp 1 \
    -nodefaults -display none -monitor none -no-reboot -serial "file:$console" \
    -kernel "$kernel" -append 'console=ttyS0 panic=-1 loglevel=4' >/dev/null 2>"$errors" || rc=$?
took=$(($(date +%s) - started))
if grep -q 'Unable to mount root fs' "$console"; then
    kvm=true reason="a guest kernel booted under KVM in ${took} s"
elif [ "$rc" = 137 ] && [ "$took" -ge "$timeout" ]; then
    kvm=false reason="a guest kernel did not boot under KVM within ${timeout} s (last console line: $(printable_line last "$console"))"
elif [ "$rc" -gt 128 ]; then
    kvm=false reason="QEMU with KVM was killed by signal $((rc - 128)) after ${took} s (last console line: $(printable_line last "$console"))"
else
    kvm=false reason="QEMU with KVM ended (exit $rc) before the guest kernel finished booting: $(printable_line first "$errors") (last console line: $(printable_line last "$console"))"
fi
if [ -n "$cache" ]; then
    { printf '%s %s %s\n' "$key" "$kvm" "$reason" >"$cache"; } 2>/dev/null ||
        echo "kvm-probe: cannot write the cache $cache; the verdict is not kept" >&2
fi
verdict "$kvm" "$reason" false
