"""The pinned sets: run.txt (make reproduce) is a closed subset of dev.txt (make test)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQS = ROOT / "requirements"


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line; any other requirement line is an error."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(_pins(path.parent / line[3:].strip()))
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def _subset_errors(run: dict[str, str], dev: dict[str, str]) -> list[str]:
    return [
        f"{name}=={version} (dev.txt: {dev.get(name, 'absent')})"
        for name, version in sorted(run.items())
        if dev.get(name) != version
    ]


def test_run_pins_are_dev_pins_at_the_same_versions() -> None:
    """Every pin of run.txt is in dev.txt at the same version: a dev .venv serves reproduce."""
    run, dev = _pins(REQS / "run.txt"), _pins(REQS / "dev.txt")
    assert run, "run.txt pins nothing"
    assert _subset_errors(run, dev) == []
    # The check itself: a version or a package dev.txt lacks is reported.
    assert _subset_errors({**run, "ansible": "0.1"}, dev) == ["ansible==0.1 (dev.txt: 12.3.0)"]
    assert _subset_errors({"no-such-pkg": "1"}, dev) == ["no-such-pkg==1 (dev.txt: absent)"]


def test_run_in_is_pinned_in_run_txt() -> None:
    """What run.in asks for (runtime.txt included) is pinned in run.txt at the same version."""
    wanted, run = _pins(REQS / "run.in"), _pins(REQS / "run.txt")
    # pip freeze omits setuptools, which a venv brings along; runtime.txt pins it for the hosts.
    wanted.pop("setuptools", None)
    assert {name: run.get(name) for name in wanted} == wanted


def _closure_errors(pins: dict[str, str]) -> list[str]:
    """Dependencies (of the installed distributions, markers evaluated) that pins leaves out."""
    errors = []
    for name in sorted(pins):
        for spec in importlib.metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in pins and dep not in {"setuptools", "pip"}:
                errors.append(f"{name} needs {dep}")
    return errors


def test_run_txt_holds_every_dependency_of_its_packages() -> None:
    """run.txt is closed under the install requirements of its packages (read from this .venv)."""
    run = _pins(REQS / "run.txt")
    assert _closure_errors(run) == []
    without_jinja = {name: v for name, v in run.items() if name != "jinja2"}
    assert "ansible-core needs jinja2" in _closure_errors(without_jinja)


def test_bootstrap_refuses_an_unknown_option() -> None:
    """bootstrap.sh stops with its usage, before installing anything, on an unknown option."""
    result = subprocess.run(
        [ROOT / "scripts" / "bootstrap.sh", "--runn"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "[--run]" in result.stderr
