#!/usr/bin/env bash
# Build, on the controller, every wheel a host needs to run wsecho and wsswarm, for one target
# Python version, so that hosts install with `pip install --no-index --find-links DIR` and never
# reach PyPI (offline mirrors, TLS-inspecting proxies). Pinned by requirements/runtime.txt.
#
#   scripts/build-wheelhouse.sh PYTHON_VERSION OUTDIR     e.g. 3.11 .cache/wheelhouse/py3.11
#
# Prints "changed" when it built something, "unchanged" when OUTDIR was already complete.
set -euo pipefail
# Reproducible wheels: the same sources give byte-identical wheels, so images built from them
# are rebuilt only when the code changes (idempotence of the target roles).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
cd "$(dirname "$0")/.."
pyver=${1:?usage: $0 PYTHON_VERSION OUTDIR}
out=${2:?usage: $0 PYTHON_VERSION OUTDIR}
pip=${PIP:-.venv/bin/pip}

stamp="$out/.stamp"
want=$(cat "$0" requirements/runtime.txt server/pyproject.toml client/pyproject.toml \
        <(find server/src client/src -name '*.py' -type f -print0 | sort -z | xargs -0 cat) \
        | sha256sum | cut -c1-16)-$pyver
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo unchanged
    exit 0
fi
# Build beside OUTDIR and swap it in at the end: a reader (another play copying the wheels) never
# sees a half-built directory, and a failed build leaves the previous one in place.
final=$out
mkdir -p "$(dirname "$final")"
out=$(mktemp -d "${final%/}.tmp.XXXXXX")
trap 'rm -rf "$out"' EXIT
# Binary wheels of the dependencies for the target interpreter (manylinux, x86_64 or the machine's arch).
arch=$(uname -m)
"$pip" download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
    --platform "linux_$arch" -d "$out" -r requirements/runtime.txt >&2
# The kit's own packages: pure Python, built from this checkout.
"$pip" wheel -q --no-deps --no-build-isolation -w "$out" ./server ./client >&2
# The pins travel with the wheels: hosts install with `-c constraints.txt`, so a stale or extra
# wheel in a copied wheelhouse can never be picked instead of the pinned one.
cp requirements/runtime.txt "$out/constraints.txt"
echo "$want" > "$out/.stamp"
chmod 0755 "$out"
rm -rf "$final.old" && { [ ! -e "$final" ] || mv "$final" "$final.old"; } && mv "$out" "$final" && rm -rf "$final.old"
trap - EXIT
echo changed
