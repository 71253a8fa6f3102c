"""experiment_targets' token check (tasks_from token_check) against a real wsecho on 127.0.0.1:
the right run token passes; a different token, or none at all, fails with a message saying so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "Tok3nOfThisRun"

PLAYBOOK = """
- name: Check a target's run token.
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check the token.
      ansible.builtin.include_role:
        name: experiment_targets
        tasks_from: token_check
      vars:
        experiment_targets_item: {name: container, address: local, port: "{{ target_port }}"}
        experiment_targets_run_token: "{{ token }}"
"""


def _wsecho(*args: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"serving on port (\d+)", line)
            if found:
                yield int(found.group(1))
                return
        pytest.fail(f"wsecho did not start: exit {proc.wait()}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def with_token() -> Iterator[int]:
    """wsecho answering /healthz with TOKEN."""
    yield from _wsecho("--run-token", TOKEN)


@pytest.fixture
def without_token() -> Iterator[int]:
    """wsecho answering /healthz without any token."""
    yield from _wsecho()


def _check(tmp_path: Path, port: int, token: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    extra = f"target_port={port} token={token} ansible_python_interpreter={sys.executable}"
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_run_token_passes(tmp_path: Path, with_token: int) -> None:
    """/healthz carries this run's token: the target is the one just deployed."""
    proc = _check(tmp_path, with_token, TOKEN)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_another_token_fails(tmp_path: Path, with_token: int) -> None:
    """A different token: whatever answers is not this run's target."""
    proc = _check(tmp_path, with_token, "SomeOtherRun")
    assert proc.returncode != 0
    assert f"container: /healthz on port {with_token} answered a different run token" in (
        proc.stdout
    )


def test_no_token_fails(tmp_path: Path, without_token: int) -> None:
    """No Echolab-Run-Token header at all fails too."""
    proc = _check(tmp_path, without_token, TOKEN)
    assert proc.returncode != 0
    assert f"container: /healthz on port {without_token} answered no Echolab-Run-Token header" in (
        proc.stdout
    )
