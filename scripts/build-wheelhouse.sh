#!/usr/bin/env bash
# Build, on the controller, every wheel a host needs to run wsecho and wsswarm, for one target
# Python version, so that hosts install with `pip install --no-index --find-links DIR` and never
# reach PyPI (offline mirrors, TLS-inspecting proxies). Pinned by requirements/runtime.txt.
#
#   scripts/build-wheelhouse.sh PYTHON_VERSION OUTDIR     e.g. 3.11 .cache/wheelhouse/py3.11
#
# The kit's own packages carry C extensions (wsecho._engine, wsswarm._engine), compiled by an
# interpreter of the target version found on the controller: $WHEELHOUSE_BUILD_PYTHON, else the
# dev venv's, python<ver> on PATH, pyenv's versions, in that order; it needs Python's headers and
# a C compiler. Without one, the packages are built pure (WSECHO_PURE=1 WSSWARM_PURE=1, tag
# py3-none-any) with a warning: hosts then run the Python hot paths. WHEELHOUSE_BUILD_PYTHON=pure
# asks for that on purpose.
#
# Prints "changed" when it built something, "unchanged" when OUTDIR was already complete, then
# "pure" when the kit's packages are the pure fallback.
set -euo pipefail
# Reproducible wheels: the same sources give byte-identical wheels, so images built from them
# are rebuilt only when the code changes (idempotence of the target roles).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
cd "$(dirname "$0")/.."
pyver=${1:?usage: $0 PYTHON_VERSION OUTDIR}
out=${2:?usage: $0 PYTHON_VERSION OUTDIR}
pip=${PIP:-.venv/bin/pip}
arch=$(uname -m)
cptag=cp${pyver/./}

log() { printf 'build-wheelhouse: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Some machines' pip configuration names local indexes that may be absent; pip warns per package.
pip_quiet() { "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
[[ $pyver =~ ^3\.[0-9]+$ ]] || die "PYTHON_VERSION must look like 3.11, got '$pyver'"

# Prints "<executable> <full version>" when interpreter $1 can compile extensions for $pyver;
# otherwise fails with the reason on stderr.
probe() {
    "$1" - "$pyver" <<'EOF'
import os, shlex, shutil, sys, sysconfig
want = sys.argv[1]
have = "%d.%d" % sys.version_info[:2]
if have != want or sys.implementation.name != "cpython":
    sys.exit(f"is {sys.implementation.name} {have}")
headers = os.path.join(sysconfig.get_config_var("INCLUDEPY") or "", "Python.h")
if not os.path.isfile(headers):
    sys.exit(f"has no {headers} (Debian: apt-get install python{want}-dev)")
cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[0]
if shutil.which(cc) is None:
    sys.exit(f"finds no C compiler {cc!r} (Debian: apt-get install gcc)")
print(os.path.realpath(sys.executable), sys.version.split()[0])
EOF
}

# The interpreter that builds the kit's packages: sets build_python and build_id ("pure": none).
build_python= build_id=pure
rejected=()
if [ "${WHEELHOUSE_BUILD_PYTHON:-}" = pure ]; then
    rejected+=("WHEELHOUSE_BUILD_PYTHON=pure asks for none")
elif [ -n "${WHEELHOUSE_BUILD_PYTHON:-}" ]; then
    build_id=$(probe "$WHEELHOUSE_BUILD_PYTHON" 2>&1) \
        || die "WHEELHOUSE_BUILD_PYTHON=$WHEELHOUSE_BUILD_PYTHON cannot build for Python $pyver: $build_id"
    build_python=$WHEELHOUSE_BUILD_PYTHON
else
    candidates=(.venv/bin/python)
    command -v "python$pyver" >/dev/null && candidates+=("$(command -v "python$pyver")")
    if command -v pyenv >/dev/null; then
        while IFS= read -r c; do candidates+=("$c"); done < <(
            compgen -G "$(pyenv root)/versions/$pyver.*/bin/python$pyver" | sort -Vr)
    fi
    for c in "${candidates[@]}"; do
        [ -x "$c" ] || continue
        if found=$(probe "$c" 2>&1); then
            build_python=$c build_id=$found
            break
        fi
        rejected+=("$c: ${found%%$'\n'*}")
    done
fi
if [ "$build_id" = pure ]; then
    why="$(IFS=';'; echo "${rejected[*]:-no python$pyver found}")"
    log "WARNING: wsecho and wsswarm for Python $pyver are built pure (py3-none-any): hosts on" \
        "Python $pyver run their Python hot path, slower. No Python $pyver here compiles C" \
        "extensions (${why//;/; }). Install python$pyver with its headers and gcc (or" \
        "\`pyenv install $pyver\`) for the compiled ones."
fi

stamp="$out/.stamp"
want=$( {
    cat "$0" requirements/runtime.txt
    # The kit's sources by name and content: Python, C, and the build files.
    find server client \( -name build -o -name tests -o -name '*.egg-info' -o -name __pycache__ \) -prune \
        -o -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name pyproject.toml \) -print0 \
        | sort -z | xargs -0 sha256sum
    echo "$build_id ${WSECHO_PURE:-} ${WSSWARM_PURE:-} ${CC:-} ${CFLAGS:-}"
} | sha256sum | cut -c1-16)-$pyver
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo unchanged
    [ "$build_id" != pure ] || echo pure
    exit 0
fi
# Build beside OUTDIR and swap it in at the end: a reader (another play copying the wheels) never
# sees a half-built directory, and a failed build leaves the previous one in place.
final=$out
mkdir -p "$(dirname "$final")"
out=$(mktemp -d "${final%/}.tmp.XXXXXX")
work=$(mktemp -d)
trap 'rm -rf "$out" "$work"' EXIT
# Binary wheels of the dependencies for the target interpreter (manylinux, x86_64 or the machine's arch).
pip_quiet "$pip" download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
    --platform "linux_$arch" -d "$out" -r requirements/runtime.txt >&2

# The kit's own packages, from a copy of their sources without build leftovers (build/, an
# extension compiled in place by the editable install): a wheel holds only what the sources give.
for pkg in server client; do
    mkdir "$work/$pkg"
    tar -C "$pkg" --exclude=./build --exclude=./tests --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude='*.so' -cf - . | tar -C "$work/$pkg" -xf -
done
if [ "$build_id" = pure ]; then
    WSECHO_PURE=1 WSSWARM_PURE=1 pip_quiet "$pip" wheel -q --no-deps --no-build-isolation \
        -w "$out" "$work/server" "$work/client" >&2
else
    log "compiling wsecho and wsswarm for Python $pyver with $build_python ($build_id)"
    # A venv of the target interpreter holding the pinned setuptools (a runtime pin, so its wheel
    # is already here): the build backend runs offline and the same on every build.
    "$build_python" -m venv --without-pip "$work/venv"
    setuptools=$(compgen -G "$out/setuptools-*.whl") \
        || die "no setuptools wheel in the wheelhouse: requirements/runtime.txt must pin setuptools"
    pip_quiet "$pip" --python "$work/venv/bin/python" install -q --no-index --no-deps "$setuptools" >&2
    # The build directory out of the debug information, so that two builds give the same bytes.
    CFLAGS="${CFLAGS:+$CFLAGS }-ffile-prefix-map=$work=/usr/src/echolab" \
        pip_quiet "$pip" --python "$work/venv/bin/python" wheel -q --no-deps --no-build-isolation \
        --no-index -w "$out" "$work/server" "$work/client" >&2
fi

# pip on a host refuses a wheel whose tag does not fit its Python; check the tags here, so that a
# wrong build fails on the controller with its reason rather than on the host.
for pkg in server client; do
    name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$pkg/pyproject.toml")
    wheel=$(compgen -G "$out/$name-*.whl") || die "pip built no $name wheel"
    tag=$(basename "$wheel" .whl | cut -d- -f3-)
    purevar=${name^^}_PURE
    if [ "$build_id" != pure ] && [ -n "$(find "$pkg/src" -name '*.c' -print -quit)" ] \
        && [[ ${!purevar:-0} =~ ^0?$ ]]; then
        expect="$cptag-$cptag-linux_$arch"
    else
        expect=py3-none-any
    fi
    [ "$tag" = "$expect" ] || die "$(basename "$wheel"): tag $tag, a Python $pyver host needs $expect"
done

# The pins travel with the wheels: hosts install with `-c constraints.txt`, so a stale or extra
# wheel in a copied wheelhouse can never be picked instead of the pinned one.
cp requirements/runtime.txt "$out/constraints.txt"
echo "$want" > "$out/.stamp"
chmod 0755 "$out"
rm -rf "$final.old" && { [ ! -e "$final" ] || mv "$final" "$final.old"; } && mv "$out" "$final" && rm -rf "$final.old"
rm -rf "$work"
trap - EXIT
echo changed
[ "$build_id" != pure ] || echo pure
