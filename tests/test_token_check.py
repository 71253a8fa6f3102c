"""experiment_targets' token check (tasks_from token_check) against a real wsecho on 127.0.0.1:
the right run token passes; a different token, or none at all, fails with a message saying so.
The run's token (tasks_from run_token) is fresh at each run, and a wsecho reading the token file
answers with the new one at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Generator, Iterator
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


def _wsecho(*args: str) -> Generator[int, None, None]:
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


RUN_TOKEN_PLAYBOOK = """
- name: Write this run's token.
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Write the token.
      ansible.builtin.include_role:
        name: experiment_targets
        tasks_from: run_token
      vars:
        experiment_targets_list:
          - {name: container, kind: container, instance: c, address: local, port: 1, repetition: 1}
        experiment_targets_token_file: "{{ token_file }}"
"""


def _playbook(tmp_path: Path, text: str, extra: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            str(playbook),
            "-e",
            extra,
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _check(tmp_path: Path, port: int, token: str) -> subprocess.CompletedProcess[str]:
    return _playbook(tmp_path, PLAYBOOK, f"target_port={port} token={token}")


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


def test_each_run_gets_a_fresh_token(tmp_path: Path) -> None:
    """run_token writes 32 new letters and digits at each run (mode 0644, read by the targets'
    users), and a wsecho reading the file answers with the new token without a restart."""
    token_file = tmp_path / "token" / "run-token"
    token_file.parent.mkdir()
    token_file.write_text("TokenOfTheTargetsStage\n")
    server = _wsecho("--run-token-file", str(token_file))
    port = next(server)
    seen = []
    for _ in range(2):
        proc = _playbook(tmp_path, RUN_TOKEN_PLAYBOOK, f"token_file={token_file}")
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert re.search(r"localhost\s+: ok=\d+\s+changed=1 ", proc.stdout), proc.stdout[-2000:]
        token = token_file.read_text().strip()
        assert re.fullmatch(r"[A-Za-z0-9]{32}", token)
        assert token_file.stat().st_mode & 0o777 == 0o644
        assert _check(tmp_path, port, token).returncode == 0
        seen.append(token)
    assert len(set(seen)) == 2
    assert "TokenOfTheTargetsStage" not in seen
    server.close()
