"""experiment_preflight's clock synchronisation reader (files/clock_sync.py): on the literal
output of chronyc and timedatectl, and run for real on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from module_loader import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "roles/experiment_preflight/files/clock_sync.py"


clock_sync = load_module("experiment_preflight_clock_sync", SCRIPT)

CHRONY_SYNCED = """\
Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
Ref time (UTC)  : Mon Nov 30 19:40:01 2026
System time     : 0.000123456 seconds slow of NTP time
Last offset     : -0.000011 seconds
Leap status     : Normal
"""

CHRONY_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
System time     : 0.000000000 seconds fast of NTP time
Leap status     : Not synchronised
"""


def test_chrony_synchronised_with_its_offset() -> None:
    """ "slow of NTP time" is behind it: a negative offset."""
    state = clock_sync.from_chrony(CHRONY_SYNCED)
    assert state["source"] == "chrony"
    assert state["synchronised"] is True
    assert state["offset_s"] == pytest.approx(-0.000123456)
    assert "Normal" in state["detail"]


def test_chrony_not_synchronised() -> None:
    state = clock_sync.from_chrony(CHRONY_UNSYNCED)
    assert state["synchronised"] is False
    assert state["offset_s"] == 0.0


@pytest.mark.parametrize(
    ("status", "offset"),
    [
        ("       Server: 192.168.0.1 (ntp.example)\n       Offset: +1.234ms\n", 0.001234),
        ("       Offset: -15us\n", -0.000015),
        ("       Offset: +2.5s\n", 2.5),
        (None, None),
    ],
)
def test_timedatectl_synchronised_with_its_offset(status: str | None, offset: float | None) -> None:
    show = "Timezone=Etc/UTC\nNTP=yes\nNTPSynchronized=yes\nTimeUSec=Mon 2026-11-30\n"
    state = clock_sync.from_timedatectl(show, status)
    assert state["source"] == "timesyncd"
    assert state["synchronised"] is True
    assert state["offset_s"] == (None if offset is None else pytest.approx(offset))


def test_timedatectl_not_synchronised() -> None:
    state = clock_sync.from_timedatectl("NTP=no\nNTPSynchronized=no\n", None)
    assert state["synchronised"] is False
    assert "NTP service no" in state["detail"]


def test_runs_here_and_says_unknown_without_chrony_or_systemd() -> None:
    """The lab has neither: one JSON line, synchronisation unknown, exit 0 (never a failure)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, timeout=30
    )
    state = json.loads(done.stdout)
    if (
        Path("/run/systemd/system").is_dir()
        or subprocess.run(
            ["sh", "-c", "command -v chronyc"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        assert state["source"] in {"chrony", "timesyncd"}
    else:
        assert state == {
            "source": "unknown",
            "synchronised": None,
            "offset_s": None,
            "detail": "neither chronyc nor a running systemd's timedatectl answers",
        }
