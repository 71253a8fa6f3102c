#!/usr/bin/env bash
# Install everything echolab's commands and tests need, idempotently:
#   - Debian packages (Docker engine, mmdebstrap, QEMU tools, node.js/npm, ...)
#   - the Docker engine started (systemd when it runs, dockerd by hand otherwise)
#   - .venv with the pinned controller/test toolchain and server/ + client/ installed editable
#   - the base images of the local lab (scripts/lab-image.sh), built while pip installs
# Re-running it does only what is missing.
#
#   scripts/bootstrap.sh          for everything: make test, lint, bench (requirements/dev.txt)
#   scripts/bootstrap.sh --run    for `make reproduce` only: the packages the controller needs to
#                                 run site.yml, .venv from requirements/run.txt (a subset of
#                                 dev.txt), and only the lab host image
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    '') toolset=dev ;;
    --run) toolset=run ;;
    *) echo "usage: $0 [--run]" >&2; exit 2 ;;
esac

log() { printf 'bootstrap: %s\n' "$*"; }
# Some machines' pip configuration names local indexes that may be absent; pip warns per package.
pip_quiet() { "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }

apt_packages=(
    # What site.yml needs on the controller (both sets):
    docker.io          # the Docker engine: lab hosts, molecule, the container target, and
                       # client/tests/test_sample.py's docker tests (a real container and docker-proxy)
    mmdebstrap         # base images (scripts/lab-image.sh) and the VM guest image without a registry
    gcc python3-dev    # wsecho's C extension (pip install -e server, the wheelhouse), the C
                       # ceiling server (bench/tests/test_ceiling.py)
    python3-venv make  # .venv, the make targets
    git                # the run manifest's commit (roles/run_manifest), scripts/cleanroom.sh's clone
    iproute2           # ip: Ansible's facts of the controller; network namespaces and veths
                       # (tests/test_roles_netns.py, client/tests/test_run.py)
    procps             # sysctl, inside those network namespaces (a narrow local port range)
    ca-certificates    # https to PyPI and npm
)
dev_apt_packages=(
    # What only the tests and benchmarks need; a test that finds a command missing fails, it never skips.
    qemu-utils         # qemu-img, for guest disk images
    qemu-system-x86    # qemu-system-x86_64: client/tests/test_sample.py's libvirt tests run a real
                       # qemu process; vm/kvm-probe.sh when the controller hosts the VM target
    e2fsprogs          # mkfs.ext4 -d, for guest disk images
    util-linux         # unshare (client tests in a private network namespace), prlimit
                       # (server/tests/test_accept.py: wsecho at 40 open files), taskset (bench/)
    curl               # server/tools/rss_probe.py reads wsecho's /metrics
    acl                # setfacl: tests/test_site_e2e.py's controller user (not root) may
                       # traverse to this checkout and to the Python its venv runs on
)
[ "$toolset" = run ] || apt_packages+=("${dev_apt_packages[@]}")

# Root is needed for two things only: installing packages and starting the Docker engine.
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi

missing=()
for p in "${apt_packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] || missing+=("$p")
done
# node.js and npm: any install will do (a NodeSource nodejs bundles npm and conflicts with
# Debian's npm package), so look for the commands rather than for Debian's packages.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    # The node.js baseline: server/tests/test_node_baseline.py runs it with `ws` from npm;
    # roles/wheelhouse npm-packs `ws` for the container target (its molecule scenario, the
    # end-to-end test); the benchmarks run the 2017 peers.
    missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Docker engine --------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        log "starting docker.service"
        $sudo systemctl start docker
    else
        # No service manager (as in CI containers): run dockerd by hand, detached from this shell.
        log "starting dockerd by hand (no systemd); log in /var/log/dockerd.log"
        $sudo setsid -f sh -c 'exec dockerd >/var/log/dockerd.log 2>&1 </dev/null'
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || {
        log "Docker engine did not answer: see /var/log/dockerd.log; as a user, are you in the docker group?"
        exit 1
    }
fi

# --- Local lab images, built in the background while pip installs ----------------------------
images=all
[ "$toolset" = run ] && images=testhost   # the lab host; the container target builds its own base
images_log=$(mktemp)
scripts/lab-image.sh "$images" >"$images_log" 2>&1 &
images_pid=$!
trap 'kill "$images_pid" 2>/dev/null || true; rm -f "$images_log"' EXIT

# --- Python virtual environment -------------------------------------------------------------
python=${PYTHON:-python3}
stamp=.venv/.echolab-stamp
venv_hash() { cat "requirements/$1.txt" server/pyproject.toml client/pyproject.toml | sha256sum | cut -c1-16; }
want=$(venv_hash "$toolset")
have=$(cat "$stamp" 2>/dev/null || true)
# A dev .venv holds all of run.txt too (tests/test_requirements.py), so it serves --run as it is.
if [ "$have" != "$want" ] && [ "$have" != "$(venv_hash dev)" ]; then
    log "building .venv ($toolset set) with $($python --version)"
    [ -x .venv/bin/python ] || $python -m venv .venv
    .venv/bin/pip install -q --upgrade pip 2>/dev/null || true
    pip_quiet .venv/bin/pip install -q -r "requirements/$toolset.txt"
    echo "$want" > "$stamp"
fi
# server/ and client/ editable; their C extensions are compiled in place, and again whenever a C
# source or a build file changes, so that the tests run the C code of the checkout.
stamp=.venv/.echolab-kit-stamp
want=$( { find server/src client/src -type f \( -name '*.c' -o -name '*.h' \) -print0
          find server client -maxdepth 1 -type f \( -name setup.py -o -name pyproject.toml \) -print0
        } | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing server/ and client/ editable, compiling their C extensions"
    pip_quiet .venv/bin/pip install -q --no-deps -e server -e client
    echo "$want" > "$stamp"
fi

images_rc=0
wait "$images_pid" || images_rc=$?
cat "$images_log"
trap 'rm -f "$images_log"' EXIT
[ "$images_rc" -eq 0 ] || { log "scripts/lab-image.sh $images failed (exit $images_rc)"; exit 1; }
log "ready"
