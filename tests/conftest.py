"""Fixtures shared by the tests of the playbooks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

FAKE_BECOME = """#!/bin/sh
echo "controller task tried to become another user: $*" >&2
exit 97
"""


@pytest.fixture(scope="session")
def controller_become_trap() -> Iterator[str]:
    """host_vars for localhost under which any become on the controller fails loudly.

    The become goes to `nobody` (another user than the one running the play, so Ansible never
    skips it as a become to the same user) through a script that prints "controller task tried
    to become another user" and fails. The script lies outside pytest's private temporary
    directory, so that a controller user other than the one running pytest reaches it too.
    """
    directory = Path(tempfile.mkdtemp(prefix="echolab-become-"))
    directory.chmod(0o755)
    fake = directory / "fake-become"
    fake.write_text(FAKE_BECOME)
    fake.chmod(0o755)
    yield f"ansible_become_exe: {fake}\nansible_become_user: nobody\n"
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def wsecho_port() -> Iterator[int]:
    """A real wsecho on 127.0.0.1 (a free port), for the tests that drive the roles' load."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "wsecho did not start"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


PreflightCheck = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def preflight_check(tmp_path: Path) -> PreflightCheck:
    """Run playbooks/preflight.yml in check mode on an inventory given as a dict (written to
    tmp_path), with extra ansible-playbook arguments; return the finished process."""

    def run(inventory: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        return subprocess.run(
            [
                str(Path(sys.executable).with_name("ansible-playbook")),
                "--check",
                "-i",
                str(path),
                *args,
                str(ROOT / "playbooks" / "preflight.yml"),
            ],
            cwd=ROOT,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run
