#!/usr/bin/env bash
# Run scripts/bootstrap.sh and `make test-fast` from a fresh clone on a fresh Debian 12: a missing
# install step then shows up here, and not only on a new machine. Run it before you stop when you
# changed bootstrap.sh or what a test needs (a command, a package, an image).
#
#   scripts/cleanroom.sh [COMMIT]              default: HEAD of this checkout (commit your work first)
#   scripts/cleanroom.sh --reproduce [COMMIT]  `make reproduce` instead: the fresh-machine time of the
#                                              quick start, every output line time-stamped (seconds
#                                              since the start) and Ansible's per-task times
#
# The fresh machine is a container of echolab/cleanroom:bookworm (minbase + ca-certificates, built
# with mmdebstrap by scripts/lab-image.sh, no registry). It gets what every machine of this kind
# has and no more:
#   - root, and the lab host's container options, so that bootstrap's own Docker engine runs in it
#     for real (test-fast runs containers); /var/lib/docker is a volume, for overlay2;
#   - a writable /proc/sys, as root has on a machine (the tests write net.* keys only, and only in
#     network namespaces of their own);
#   - this machine's extra CA certificates (/usr/local/share/ca-certificates) and PIP_CERT, for a
#     TLS-inspecting proxy in front of PyPI and npm;
#   - pyenv's Python 2.7 (read-only), which these machines carry for the conformance suite.
# Prints the pytest summary line; exits non-zero when bootstrap or a test fails. The whole output
# is kept in .cache/cleanroom/<commit>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'cleanroom: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

mode=test-fast
if [ "${1:-}" = --reproduce ]; then mode=reproduce; shift; fi
[ $# -le 1 ] || die "usage: $0 [--reproduce] [COMMIT]"
commit=$(git rev-parse --verify "${1:-HEAD}^{commit}" 2>/dev/null) || die "no commit ${1:-HEAD} here"
docker info >/dev/null 2>&1 || die "the Docker engine is not running (scripts/bootstrap.sh starts it)"

scripts/lab-image.sh cleanroom >&2

work=$(mktemp -d /tmp/echolab-cleanroom.XXXXXX)
name=echolab-cleanroom-$$
cleanup() {
    docker rm -f -v "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p .cache/cleanroom
out=$PWD/.cache/cleanroom/${commit:0:12}$([ "$mode" = test-fast ] || echo ".$mode").log

log "cloning ${commit:0:12}"
git clone -q --no-hardlinks "$PWD" "$work/echolab"
git -C "$work/echolab" checkout -q --detach "$commit"

python2_mount=()
for python2 in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7.*; do
    [ -x "$python2/bin/python2.7" ] && python2_mount=(-v "$python2:/root/.pyenv/versions/${python2##*/}:ro")
done
[ ${#python2_mount[@]} -gt 0 ] || log "no pyenv Python 2.7 here: the conformance tests will fail"

# The lab host's options (docs: lab-environment.md), with tini as PID 1 to reap what the tests leave.
docker run -d --name "$name" --init --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --device /dev/net/tun --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    -v /var/lib/docker --tmpfs /run --tmpfs /run/lock "${python2_mount[@]}" \
    -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    -e NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    echolab/cleanroom:bookworm sleep infinity >/dev/null
docker cp -q "$work/echolab" "$name:/root/echolab"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    for crt in /usr/local/share/ca-certificates/*.crt; do
        docker cp -q "$crt" "$name:/usr/local/share/ca-certificates/"
    done
fi

started=$(date +%s)
rc=0
if [ "$mode" = test-fast ]; then
    log "bootstrap and make test-fast in $name (output in $out)"
    docker exec "$name" bash -c '
        set -e
        mount -o remount,rw /proc/sys
        update-ca-certificates >/dev/null
        cd /root/echolab
        scripts/bootstrap.sh
        make test-fast
    ' >"$out" 2>&1 || rc=$?
else
    log "make reproduce in $name (output in $out)"
    # profile_tasks: each task's time, and the slowest tasks at the end of the play.
    docker exec -e ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks \
        -e PROFILE_TASKS_TASK_OUTPUT_LIMIT=40 "$name" bash -c '
        set -eo pipefail
        mount -o remount,rw /proc/sys
        update-ca-certificates >/dev/null
        cd /root/echolab
        start=$SECONDS
        # A fresh Debian has no make; the quick start asks for it, so its install is timed too.
        { command -v make >/dev/null || { apt-get update -q && apt-get install -y -q make; }
          make reproduce; } 2>&1 | while IFS= read -r line; do
            printf "[%4d s] %s\n" $((SECONDS - start)) "$line"
        done
    ' >"$out" 2>&1 || rc=$?
fi
log "done in $(($(date +%s) - started)) s, exit $rc"
if [ "$mode" = reproduce ]; then
    # The play's recap and the report's summary table.
    sed -n '/PLAY RECAP/,$p' "$out" | tail -n 80
    exit "$rc"
fi
# pytest's last line, "==== N passed, ... in Ts ====", when pytest ran at all.
summary=$(awk '/^=+ .* in [0-9.]+s.* =+$/ { line = $0 } END { print line }' "$out")
if [ -n "$summary" ]; then echo "$summary"; else tail -n 30 "$out"; fi
exit "$rc"
