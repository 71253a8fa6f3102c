"""vm/run-token.py refuses bad input before it talks to any guest: a token file that is missing or
holds no valid run token exits 2 with one line; a guest agent that never answers exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "vm" / "run-token.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--domain", "echolab-vm", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "holds no valid run token"),
        ("two words\n", "holds no valid run token"),
        ("t" * 129, "holds no valid run token"),
    ],
)
def test_a_file_without_a_token_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    """No file, an empty one, or one with a token wsecho would refuse: exit 2, one line."""
    path = tmp_path / "run-token"
    if content is not None:
        path.write_text(content)
    done = _run("--token-file", str(path), "--timeout", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("run-token: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_no_guest_agent_exits_1(tmp_path: Path) -> None:
    """No libvirt or no agent answering within --timeout: exit 1, naming the domain."""
    path = tmp_path / "run-token"
    path.write_text("Tok3n\n")
    done = _run("--token-file", str(path), "--timeout", "0", "--connect", "test:///nonexistent")
    assert done.returncode == 1
    assert "the guest agent of echolab-vm did not answer" in done.stderr
    assert done.stdout == ""
