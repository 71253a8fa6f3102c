"""scripts/build-wheelhouse.sh: the kit's wheels compiled for the target Python, reproducible,
rebuilt on a C change, and pure (with a warning) when nothing here compiles; the pure wheel's
wsecho runs its Python hot path and refuses --hot-path compiled.

Each test builds from a copy of the script and the kit's sources, so it can change a C file
freely; pip's cache and the local package mirror give the dependencies in seconds."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
CPTAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
COMPILED_TAG = f"{CPTAG}-{CPTAG}-linux_{platform.machine()}"
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
LEFTOVERS = shutil.ignore_patterns("build", "tests", "*.egg-info", "__pycache__", "*.so")


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    """A copy of what the script reads: itself, the pins, server/ and client/."""
    copy = tmp_path / "kit"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "build-wheelhouse.sh", copy / "scripts")
    shutil.copytree(ROOT / "requirements", copy / "requirements")
    for pkg in ("server", "client"):
        shutil.copytree(ROOT / pkg, copy / pkg, ignore=LEFTOVERS)
    return copy


def build(kit: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the copy's script for this interpreter's version; fails the test on a non-zero exit."""
    environ = dict(os.environ, PIP=str(Path(sys.executable).parent / "pip"), **env)
    proc = subprocess.run(
        [str(kit / "scripts" / "build-wheelhouse.sh"), PYVER, str(out)],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def wheel(out: Path, name: str) -> Path:
    (found,) = out.glob(f"{name}-*.whl")
    return found


def tag(path: Path) -> str:
    return path.name.removesuffix(".whl").split("-", 2)[2]


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.whl"))}


def engine_member(path: Path, package: str) -> str:
    """The name of `package`'s compiled engine in wheel `path`."""
    names = zipfile.ZipFile(path).namelist()
    (member,) = [n for n in names if n.startswith(f"{package}/_engine.") and n.endswith(".so")]
    return member


def in_unpacked(wheels: list[Path], unpacked: Path, code: str) -> str:
    """Run `code` in this Python with `wheels` unpacked first on sys.path; its stdout."""
    for path in wheels:
        zipfile.ZipFile(path).extractall(unpacked)
    first = f"import sys; sys.path.insert(0, {str(unpacked)!r}); "
    return subprocess.run(
        [sys.executable, "-c", first + code], capture_output=True, text=True, check=True
    ).stdout


def test_compiled_wheels_fit_this_python_and_rebuild_byte_identical(
    kit: Path, tmp_path: Path
) -> None:
    """The interpreter given by WHEELHOUSE_BUILD_PYTHON compiles wsecho._engine and
    wsswarm._engine into wheels tagged for its version, which import; a second build gives the
    same bytes; the stamp skips a rebuild until a C source changes, and the change reaches the
    wheel."""
    out = tmp_path / "py"
    python = {"WHEELHOUSE_BUILD_PYTHON": sys.executable}
    first = build(kit, out, **python)
    assert first.stdout.split() == ["changed"]
    assert f"compiling wsecho and wsswarm for Python {PYVER}" in first.stderr
    wheels = [wheel(out, "wsecho"), wheel(out, "wsswarm")]
    for path, package in zip(wheels, ("wsecho", "wsswarm"), strict=True):
        assert tag(path) == COMPILED_TAG
        assert engine_member(path, package) == f"{package}/_engine{EXT_SUFFIX}"
    # The compiled modules load, from the wheels' files, into this Python.
    loaded = in_unpacked(
        wheels,
        tmp_path / "unpacked",
        "import wsecho._engine, wsswarm._engine; "
        "print(wsecho._engine.__file__); print(wsswarm._engine.__file__)",
    )
    assert loaded.split() == [
        str(tmp_path / "unpacked" / engine_member(path, package))
        for path, package in zip(wheels, ("wsecho", "wsswarm"), strict=True)
    ]

    again = tmp_path / "again"
    build(kit, again, **python)
    assert digests(again) == digests(out)
    assert build(kit, out, **python).stdout.split() == ["unchanged"]

    engine_c = kit / "server" / "src" / "wsecho" / "_engine.c"
    with engine_c.open("a") as source:
        source.write('\nconst char echolab_rebuild_probe[] = "rebuilt-from-the-new-source";\n')
    assert build(kit, out, **python).stdout.split() == ["changed"]
    with zipfile.ZipFile(wheel(out, "wsecho")) as rebuilt:
        assert b"rebuilt-from-the-new-source" in rebuilt.read(engine_member(wheels[0], "wsecho"))


def test_without_a_compiler_the_wheels_are_pure_and_run_python(kit: Path, tmp_path: Path) -> None:
    """No candidate interpreter finds a C compiler: the script says so on stderr and "pure" on
    stdout, the wheels are py3-none-any without an engine, and from them wsswarm picks its
    Python closed loop and wsecho serves on its Python hot path with --hot-path auto, while
    --hot-path compiled is refused with the reason."""
    out = tmp_path / "py"
    proc = build(kit, out, CC="/nonexistent/cc")
    assert proc.stdout.split() == ["changed", "pure"]
    assert f"WARNING: wsecho and wsswarm for Python {PYVER} are built pure" in proc.stderr
    assert "finds no C compiler '/nonexistent/cc'" in proc.stderr
    wsecho, wsswarm = wheel(out, "wsecho"), wheel(out, "wsswarm")
    assert tag(wsecho) == tag(wsswarm) == "py3-none-any"
    for path in (wsecho, wsswarm):
        assert not [n for n in zipfile.ZipFile(path).namelist() if n.endswith(".so")]
    # The stamp remembers that the build was pure: still pure, still said.
    assert build(kit, out, CC="/nonexistent/cc").stdout.split() == ["unchanged", "pure"]

    unpacked = tmp_path / "unpacked"
    swarm = in_unpacked(
        [wsecho, wsswarm],
        unpacked,
        "import wsswarm; assert wsswarm.__file__.startswith(sys.path[0]), wsswarm.__file__; "
        "from wsswarm.hotpath import resolve\n"
        "print(*resolve('auto', mode='closed', compat=False))\n"
        "try: resolve('compiled', mode='closed', compat=False)\n"
        "except ValueError as exc: print(exc)",
    )
    assert "python hot path: python (wsswarm._engine not importable" in swarm
    assert "--hot-path compiled: wsswarm._engine is not importable" in swarm

    run_wsecho = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); import wsecho; "
        "assert wsecho.__file__.startswith(sys.path[0]), wsecho.__file__; "
        "from wsecho.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", run_wsecho, str(unpacked), "--host", "127.0.0.1", "--port"]
    refused = subprocess.run(
        [*command, "0", "--hot-path", "compiled"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "--hot-path compiled: the engine (wsecho._engine) cannot be imported" in refused.stderr

    log = tmp_path / "wsecho.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([*command, "0"], stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "serving on port" not in log.read_text() and server.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    assert "hot_path=python (wsecho._engine cannot be imported" in log.read_text()
