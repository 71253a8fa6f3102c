"""playbooks/lab.yml creates a systemd lab host container, leaves it alone when run again, and
removes it (and its volume) with lab_state=absent. Uses its own container name, not the real lab."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME = f"echolab-labtest-{os.getpid()}"


def _playbook(*extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        ["ansible-playbook", "playbooks/lab.yml", "-e", f"lab_host_name={NAME}", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        print(proc.stdout[-10000:], proc.stderr[-5000:])
    return proc


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def lab_name() -> Iterator[str]:
    """The test's container name; whatever happens, nothing of it is left behind."""
    yield NAME
    _docker("rm", "-f", "-v", NAME)
    _docker("volume", "rm", f"{NAME}-docker")


@pytest.mark.lab
def test_create_is_idempotent_and_remove_cleans_up(lab_name: str) -> None:
    """Create → systemd running inside → second run changes nothing → absent removes it all."""
    created = _playbook()
    assert created.returncode == 0
    state = _docker("exec", lab_name, "systemctl", "is-system-running")
    assert state.stdout.strip() in {"running", "degraded"}
    inspect = _docker(
        "inspect", "-f", "{{.HostConfig.Privileged}} {{.HostConfig.CgroupnsMode}}", lab_name
    )
    assert inspect.stdout.split() == ["false", "host"]

    again = _playbook()
    assert again.returncode == 0
    assert "changed=0" in again.stdout

    removed = _playbook("-e", "lab_state=absent")
    assert removed.returncode == 0
    assert _docker("inspect", lab_name).returncode != 0
    assert _docker("volume", "inspect", f"{lab_name}-docker").returncode != 0


@pytest.mark.lab
def test_bad_state_is_refused(lab_name: str) -> None:
    """An unknown lab_state fails argument validation and creates nothing."""
    proc = _playbook("-e", "lab_state=maybe")
    assert proc.returncode != 0
    assert "lab_host_state" in proc.stdout + proc.stderr
    assert _docker("inspect", lab_name).returncode != 0
