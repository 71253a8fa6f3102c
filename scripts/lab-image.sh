#!/usr/bin/env bash
# Build the local-lab base images with mmdebstrap (no container registry is needed).
#
#   scripts/lab-image.sh [testhost|base|all|cleanroom]
#
# echolab/testhost:bookworm  a Debian 12 host with systemd as PID 1: the lab test host and the
#                            platform of every molecule scenario.
# echolab/base:bookworm      a minimal Debian 12 with python3: the base of the container target.
# echolab/cleanroom:bookworm a minimal Debian 12 (not in "all"): the fresh machine of
#                            scripts/cleanroom.sh.
#
# Each image carries a label with the hash of its recipe; an image whose label matches is kept,
# so running this again is cheap and a changed recipe rebuilds.
set -euo pipefail

suite=bookworm
mirror=${ECHOLAB_DEBIAN_MIRROR:-}   # empty: mmdebstrap's default (deb.debian.org)

build() {
    local tag=$1 include=$2 cmd=$3
    local recipe="suite=$suite include=$include cmd=$cmd mirror=$mirror v=1"
    local hash
    hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "echolab.recipe"}}' "$tag" 2>/dev/null)" = "$hash" ]; then
        echo "lab-image: $tag is up to date ($hash)"
        return 0
    fi
    echo "lab-image: building $tag ($hash)"
    # shellcheck disable=SC2086
    mmdebstrap --quiet --variant=minbase --include="$include" "$suite" - $mirror \
        | docker import -c "CMD $cmd" -c "LABEL echolab.recipe=$hash" - "$tag"
}

what=${1:-all}
case "$what" in
    testhost|all)
        build echolab/testhost:bookworm \
            systemd-sysv,python3,python3-apt,iproute2,dbus,procps,sudo,ca-certificates \
            '["/sbin/init"]' ;;&
    base|all)
        build echolab/base:bookworm python3,ca-certificates '["/bin/bash"]' ;;
    testhost) ;;
    cleanroom)
        build echolab/cleanroom:bookworm ca-certificates '["/bin/bash"]' ;;
    *) echo "usage: $0 [testhost|base|all|cleanroom]" >&2; exit 2 ;;
esac
