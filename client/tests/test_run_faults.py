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


def _thousand_ports_two_wsecho(tmp_path: Path) -> str:
    """Shell lines for a private namespace: 1,000 local ports, wsecho on 8080 and on 8081."""
    return (
        "sysctl -q -w net.ipv4.ip_local_port_range='40000 40999'\n"
        "for port in 8080 8081; do\n"
        f"  {sys.executable} -m wsecho --backend picows --host 127.0.0.1 --port $port "
        f"> {tmp_path}/wsecho$port.log 2>&1 &\n"
        f"  for i in $(seq 200); do grep -q 'serving on port' {tmp_path}/wsecho$port.log && "
        "break; sleep 0.05; done\n"
        "done\n"
    )


def test_source_addresses_multiply_the_local_ports(
    tmp_path: Path, in_private_netns: Callable[[Path], subprocess.CompletedProcess[str]]
) -> None:
    """A private network namespace with 1,000 local ports and two wsecho (ports 8080, 8081).

    2,500 connections from one source address to 8080: the preflight refuses them with the
    arithmetic; forced with --limits warn, the connections beyond the ports fail as
    addr_not_available. From 127.0.0.1, 127.0.0.2 and 127.0.0.3 in turn (both ways of giving
    them) to 8081, all 2,500 open: each address has its own ports for the 4-tuple. (Another
    server port for the second run: the first run's 4-tuples may still be in TIME_WAIT.)
    Open mode at one message per second per connection keeps wsecho idle enough to answer every
    upgrade in time on a loaded machine: the test is about ports, not throughput.
    """
    python = sys.executable
    run = (
        f"{python} -m wsswarm run --processes 2 --connections 2500 --connect-rate 250 "
        "--mode open --rate 1 --warmup 0 --duration 1 --connect-timeout 30"
    )
    script = tmp_path / "inner.sh"
    script.write_text(
        "set -e\n"
        "ip link set lo up\n"
        "ip addr add 127.0.0.2/8 dev lo\n"
        "ip addr add 127.0.0.3/8 dev lo\n" + _thousand_ports_two_wsecho(tmp_path) + "set +e\n"
        f"{run} --url ws://127.0.0.1:8080/ --source-address 127.0.0.1 "
        f"> {tmp_path}/refused.log 2>&1\n"
        f"echo $? > {tmp_path}/refused.rc\n"
        f"{run} --url ws://127.0.0.1:8080/ --source-address 127.0.0.1 --limits warn "
        f"--out {tmp_path}/one > {tmp_path}/one.log 2>&1\n"
        f"echo $? > {tmp_path}/one.rc\n"
        f"{run} --url ws://127.0.0.1:8081/ --source-address 127.0.0.1,127.0.0.2 "
        f"--source-address 127.0.0.3 --out {tmp_path}/three > {tmp_path}/three.log 2>&1\n"
        f"echo $? > {tmp_path}/three.rc\n"
        # By pid: `jobs -p` of a non-interactive sh lists nothing.
        "kill $(pgrep -P $$ -f wsecho) 2>/dev/null || true\n"
    )
    in_private_netns(script)

    def outcome(name: str) -> tuple[str, str]:
        return (tmp_path / f"{name}.rc").read_text().strip(), (tmp_path / f"{name}.log").read_text()

    rc, log = outcome("refused")
    assert rc == "2", log
    assert "need 2500 local ports from one source address" in log
    assert "(40000-40999) gives 1000" in log
    assert "give --source-address 3 addresses or more" in log

    rc, log = outcome("one")
    assert rc == "0", log
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    failed = one["connections"]["failed"]
    assert set(one["errors"]) == {"addr_not_available"}, one["errors"]
    assert one["errors"]["addr_not_available"] == failed
    assert 1500 <= failed < 2500
    assert one["connections"]["open"] == 2500 - failed

    rc, log = outcome("three")
    assert rc == "0", log
    three = json.loads((tmp_path / "three" / "summary.json").read_text())
    assert three["errors"] == {}, log
    assert three["connections"] == {"attempted": 2500, "open": 2500, "failed": 0, "dropped": 0}
    assert three["params"]["source_address"] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def test_one_source_address_shares_its_ports_between_destinations(
    tmp_path: Path, in_private_netns: Callable[[Path], subprocess.CompletedProcess[str]]
) -> None:
    """IP_BIND_ADDRESS_NO_PORT itself: 1,600 connections from one address, with 1,000 ports.

    In a private network namespace with 1,000 local ports, two runs with one --start-at (so
    one planned window) each hold 800 connections from 127.0.0.1, one to wsecho on 8080 and
    one to wsecho on 8081. The kernel picks the port at connect time per 4-tuple, so each
    destination has the whole range and all 1,600 are open at once. A plain bind would pick
    the port for the address alone: 1,600 sockets cannot bind 1,000 ports, and ~600 attempts
    would fail as addr_not_available.
    """
    python = sys.executable
    run = (
        f"{python} -m wsswarm run --processes 1 --connections 800 --connect-rate 400 "
        "--warmup 1 --duration 2 --connect-timeout 5 --source-address 127.0.0.1"
    )
    script = tmp_path / "inner.sh"
    script.write_text(
        "set -e\n"
        "ip link set lo up\n" + _thousand_ports_two_wsecho(tmp_path) + "set +e\n"
        f"start=$(( $(date +%s) + 3 ))\n"
        f"{run} --url ws://127.0.0.1:8080/ --start-at $start --out {tmp_path}/to8080 "
        f"> {tmp_path}/to8080.log 2>&1 &\n"
        "first=$!\n"
        f"{run} --url ws://127.0.0.1:8081/ --start-at $start --out {tmp_path}/to8081 "
        f"> {tmp_path}/to8081.log 2>&1 &\n"
        "second=$!\n"
        f"wait $first; echo $? > {tmp_path}/to8080.rc\n"
        f"wait $second; echo $? > {tmp_path}/to8081.rc\n"
        "kill $(pgrep -P $$ -f wsecho) 2>/dev/null || true\n"
    )
    in_private_netns(script)
    summaries = []
    for port in (8080, 8081):
        log = (tmp_path / f"to{port}.log").read_text()
        assert (tmp_path / f"to{port}.rc").read_text().strip() == "0", log
        summary = json.loads((tmp_path / f"to{port}" / "summary.json").read_text())
        assert summary["errors"] == {}, log
        assert summary["connections"] == {"attempted": 800, "open": 800, "failed": 0, "dropped": 0}
        assert summary["params"]["source_address"] == ["127.0.0.1"]
        summaries.append(summary)
    # One planned window for both: the 1,600 connections were open at the same time.
    assert {s["ramp"]["window"] for s in summaries} == {"planned"}
    assert summaries[0]["measure_started"] == summaries[1]["measure_started"]
    assert summaries[0]["measure_ended"] == summaries[1]["measure_ended"]
    assert all(s["ramp"]["completed_before_window"] for s in summaries)
