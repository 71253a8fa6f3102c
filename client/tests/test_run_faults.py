"""The error kinds that need a fault of their own: an invalid upgrade, an unreachable network,
the open-mode backlog, and a listen queue that overflows. All traffic stays on 127.0.0.1 or
inside a private network namespace with no route out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
FaultServer = Any
RunResult = Any
TIMEOUT_FACTOR = float(os.environ.get("WSSWARM_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


@pytest.mark.parametrize("fault", ["badaccept", "nothttp"])
def test_invalid_upgrade_answers_are_counted(
    fault: str, fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Every 2nd upgrade is answered with a wrong accept value or not HTTP: handshake_invalid."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url(f"/fault/{fault}/2"), "--processes", "1", "--connections", "6",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1", "--connect-timeout", "2",
        "--no-probe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["errors"] == {"handshake_invalid": 3}
    assert summary["connections"] == {"attempted": 6, "open": 3, "failed": 3, "dropped": 0}
    assert summary["roundtrips_total"] > 0
    # Said at once, not after the connect timeout: the answer was read and judged.
    reason = "wrong Sec-WebSocket-Accept" if fault == "badaccept" else "not an HTTP response"
    assert reason in result.stdout


def test_unreachable_network_is_counted(
    tmp_path: Path, in_private_netns: Callable[[Path], subprocess.CompletedProcess[str]]
) -> None:
    """In a network namespace without a route, connects fail with ENETUNREACH: `unreachable`.

    Nothing is sent anywhere: the namespace has only its loopback, and the kernel refuses the
    connect before a packet exists. 192.0.2.1 is TEST-NET-1 (RFC 5737), routed nowhere.
    """
    out = tmp_path / "out"
    run = f"{sys.executable} -m wsswarm run --url ws://192.0.2.1:80/ --processes 1"
    script = tmp_path / "inner.sh"
    script.write_text(
        "ip link set lo up\n"
        # The probe: the run ends at once, naming the cause.
        f"{run} --connections 5 > {tmp_path}/probe.out 2>&1; echo $? > {tmp_path}/probe.rc\n"
        # Without the probe: every attempt of the workers fails, each counted.
        f"{run} --connections 5 --connect-rate 50 --warmup 0 --duration 1 --no-probe "
        f"--out {out} > {tmp_path}/run.out 2>&1; echo $? > {tmp_path}/run.rc\n"
    )
    in_private_netns(script)
    probe_out = (tmp_path / "probe.out").read_text()
    assert (tmp_path / "probe.rc").read_text().strip() == "1", probe_out
    assert "target unreachable" in probe_out
    assert "Network is unreachable" in probe_out
    run_out = (tmp_path / "run.out").read_text()
    assert (tmp_path / "run.rc").read_text().strip() == "1", run_out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {"unreachable": 5}
    assert summary["connections"]["failed"] == 5
    assert summary["status"] == "error"


def test_open_mode_backlog_is_counted(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """A server that reads and never answers: after 10,000 in flight, sends become `backlog`."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/swallow/1"), "--processes", "1", "--connections", "1",
        "--mode", "open", "--rate", "5000", "--warmup", "0", "--duration", "3", "--no-probe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    # Exactly the cap went out; everything the schedule wanted beyond it was counted instead.
    assert summary["messages_sent"] == 10_000
    assert summary["errors"]["backlog"] > 1000
    assert set(summary["errors"]) == {"backlog"}
    assert summary["roundtrips_total"] == 0
    assert server.stats()["swallowed"] == 10_000


def test_listen_queue_overflow_is_a_timeout(wsswarm: Callable[..., RunResult]) -> None:
    """A listener that never accepts, with a queue of 1: the kernel drops later SYNs.

    The connects that got into the queue wait for an upgrade answer, the others for a SYN-ACK;
    both end at --connect-timeout, so both are `timeout` (TCP gives the client no way to tell
    an overflowing queue from a slow or lossy path).
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = wsswarm(
            "--url", f"ws://127.0.0.1:{port}/", "--processes", "1", "--connections", "6",
            "--connect-rate", "100", "--warmup", "0", "--duration", "1",
            "--connect-timeout", "1", "--no-probe",
        )  # fmt: skip
    assert result.returncode == 1  # nothing could be opened
    summary = result.summary
    assert summary["errors"] == {"timeout": 6}
    assert summary["connections"]["failed"] == 6
