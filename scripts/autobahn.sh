#!/usr/bin/env bash
# Install Autobahn|Testsuite (the WebSocket conformance suite) into .cache/autobahn/, idempotently,
# and print the path of its `wstest` command on the last line of stdout.
#
# autobahntestsuite is Python 2 code, so it needs a Python 2.7 interpreter:
#   AUTOBAHN_PYTHON2=/path/to/python2.7   explicit choice
#   $(pyenv root)/versions/2.7.18          the pyenv build these machines carry
#   python2.7 on PATH                      anything else
# A python3 venv provides 'virtualenv<20.22' (the last line that can still create 2.7 environments),
# which then builds the 2.7 environment that holds wstest.
set -euo pipefail
cd "$(dirname "$0")/.."

version=25.10.1
root=.cache/autobahn
wstest=$root/wst/bin/wstest
stamp=$root/wst/.echolab-stamp

log() { printf 'autobahn: %s\n' "$*" >&2; }

if [ -x "$wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "$PWD/$wstest"
    exit 0
fi

python2=${AUTOBAHN_PYTHON2:-}
if [ -z "$python2" ] && command -v pyenv >/dev/null 2>&1; then
    candidate="$(pyenv root)/versions/2.7.18/bin/python2.7"
    [ -x "$candidate" ] && python2=$candidate
fi
if [ -z "$python2" ]; then
    # pyenv's own folder, for environments where the pyenv command is not on PATH (e.g. CI).
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7.*/bin/python2.7; do
        [ -x "$candidate" ] && python2=$candidate
    done
fi
if [ -z "$python2" ] && command -v python2.7 >/dev/null 2>&1; then
    python2=$(command -v python2.7)
fi
if [ -z "$python2" ] || ! "$python2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    log "no Python 2.7 found (Autobahn|Testsuite is Python 2 code)."
    log "Install one, e.g. 'pyenv install 2.7.18', or point AUTOBAHN_PYTHON2 at a python2.7 binary."
    exit 1
fi

log "installing autobahntestsuite==$version with $python2 into $root/"
mkdir -p "$root"
rm -rf "$root/wst"
[ -x "$root/venv/bin/virtualenv" ] || {
    python3 -m venv "$root/venv"
    "$root/venv/bin/pip" install -q 'virtualenv<20.22'
}
"$root/venv/bin/virtualenv" -q -p "$python2" "$root/wst" >&2
"$root/wst/bin/pip" install -q --disable-pip-version-check "autobahntestsuite==$version" >&2
"$wstest" --help >/dev/null
echo "$version" > "$stamp"
log "ready: $wstest"
echo "$PWD/$wstest"
