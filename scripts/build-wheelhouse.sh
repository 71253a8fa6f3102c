#!/usr/bin/env bash
# Build, on the controller, every wheel a host needs to run wsecho and wsswarm, for one target
# Python version, so that hosts install with `pip install --no-index --find-links DIR` and never
# reach PyPI (offline mirrors, TLS-inspecting proxies). Pinned by requirements/runtime.txt.
#
#   scripts/build-wheelhouse.sh PYTHON_VERSION OUTDIR     e.g. 3.11 .cache/wheelhouse/py3.11
#
# Prints "changed" when it built something, "unchanged" when OUTDIR was already complete.
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:?usage: $0 PYTHON_VERSION OUTDIR}
out=${2:?usage: $0 PYTHON_VERSION OUTDIR}
pip=${PIP:-.venv/bin/pip}

stamp="$out/.stamp"
want=$(cat requirements/runtime.txt server/pyproject.toml client/pyproject.toml \
        <(find server/src client/src -name '*.py' -type f -print0 | sort -z | xargs -0 cat) \
        | sha256sum | cut -c1-16)-$pyver
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo unchanged
    exit 0
fi
rm -rf "$out" && mkdir -p "$out"
# Binary wheels of the dependencies for the target interpreter (manylinux, x86_64 or the machine's arch).
arch=$(uname -m)
"$pip" download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
    --platform "linux_$arch" -d "$out" -r requirements/runtime.txt >&2
# The kit's own packages: pure Python, built from this checkout.
"$pip" wheel -q --no-deps --no-build-isolation -w "$out" ./server ./client >&2
echo "$want" > "$stamp"
echo changed
