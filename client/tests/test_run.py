"""`wsswarm run` against a real wsecho and a deliberately misbehaving server, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
Wsecho = Any
FaultServer = Any
RunResult = Any
TIMEOUT_FACTOR = float(os.environ.get("WSSWARM_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


SHORT = ("--warmup", "0.5", "--duration", "2")


def test_counts_match_the_server_and_littles_law_holds(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """Round trips counted equal wsecho's message delta; connections / rt/s ≈ mean latency."""
    before = wsecho.messages_total()
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "2", "--connections", "200",
        "--connect-rate", "400", *SHORT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = wsecho.messages_total()
    summary = result.summary
    assert summary["status"] == "completed"
    assert summary["roundtrips_total"] == after - before
    assert summary["messages_sent"] == summary["roundtrips_total"]
    assert summary["connections"] == {"attempted": 200, "open": 200, "failed": 0, "dropped": 0}
    assert summary["errors"] == {}
    # Closed loop, one message in flight per connection: N = X * R (Little's law).
    mean_s = summary["latency_ms"]["mean"] / 1000
    predicted_s = 200 / summary["roundtrips_per_s"]
    assert predicted_s == pytest.approx(mean_s, rel=0.15)
    hist = HdrHistogram.decode(summary["histogram"].encode())
    assert hist.get_total_count() == summary["roundtrips"] > 0
    assert summary["measure_ended"] - summary["measure_started"] == pytest.approx(2.0)


def test_worker_files_follow_the_format(wsecho: Wsecho, wsswarm: Callable[..., RunResult]) -> None:
    """Each worker writes start, one tick per second through every phase, and end."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "2", "--connections", "40",
        "--connect-rate", "40", "--label", "lab-vm", *SHORT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = 0
    for index in (0, 1):
        records = result.worker_records(index)
        start, ticks, end = records[0], records[1:-1], records[-1]
        assert start["type"] == "start"
        assert start["format_version"] == 1
        assert start["worker"] == index
        assert start["label"] == "lab-vm"
        assert start["params"]["connections"] == 40
        # The baseline of the memory the connections add: read before the first of them.
        assert start["rss_bytes"] > 1 << 20
        assert end["type"] == "end"
        assert end["reason"] == "completed"
        phases = [tick["phase"] for tick in ticks]
        assert phases[0] == "ramp"
        assert phases[-1] == "drain"
        assert phases.count("measure") == 2
        assert phases == sorted(phases, key=["ramp", "warmup", "measure", "drain"].index)
        for tick in ticks:
            assert tick["type"] == "tick"
            assert set(tick) >= {
                "t", "phase", "roundtrips", "interval_s", "latency_ms", "open", "attempted",
                "failed", "errors", "cpu_percent", "rss_bytes", "histogram",
            }  # fmt: skip
            hist = HdrHistogram.decode(tick["histogram"].encode())
            assert hist.get_total_count() == tick["roundtrips"]
            if tick["phase"] == "measure":
                measured += tick["roundtrips"]
                assert tick["open"] == 20
                assert tick["interval_s"] == pytest.approx(1.0, abs=0.2)
    assert measured == result.summary["roundtrips"]


def test_ramp_rate_is_within_five_percent(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Attempts leave at --connect-rate (±5%), and the server sees upgrades arrive at that rate."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/slow/1"), "--processes", "2", "--connections", "400",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["ramp"]["achieved_rate"] == pytest.approx(100, rel=0.05)
    upgrades = sorted(server.stats()["upgrades"])[1:]  # the first is wsswarm's probe
    assert len(upgrades) == 400
    # Same definition as the summary's: n arrivals over (scheduled start .. last arrival + 1/R).
    # The server's view also carries the (pure Python) test server's own scheduling delays on a
    # shared 2-core machine, hence a 10% band there; the pacing itself is held to 5% above.
    server_rate = 400 / (upgrades[-1] - summary["started"] + 0.01)
    assert server_rate == pytest.approx(100, rel=0.10)


def test_connection_faults_are_counted_by_kind(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Every 2nd connection meets a different real fault; the summary counts each by its kind."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/mix"), "--processes", "1", "--connections", "12",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1", "--connect-timeout", "1",
        "--no-probe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    mismatches = summary["errors"].pop("echo_mismatch")
    assert mismatches > 0
    assert summary["errors"] == {
        "handshake_503": 1,
        "timeout": 1,
        "reset": 1,
        "close_1001": 1,
        "dropped": 1,
    }
    assert summary["connections"] == {"attempted": 12, "open": 7, "failed": 3, "dropped": 2}


def test_echo_mismatch_is_counted_and_not_measured(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """A server echoing something else: each such message is an echo_mismatch, not a round trip."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/wrong/1"), "--processes", "1", "--connections", "4",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["roundtrips_total"] == 0
    assert summary["errors"]["echo_mismatch"] == summary["messages_sent"] > 0


def test_refused_connections_are_counted(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The server stops listening after 6 connections (probe + 5): the other 5 are refused.

    10/s leaves the server 100 ms to close its listener after the 6th accept; at 100/s a loaded
    machine let a 7th connection in before the close (one opened too many, one reset)."""
    server = fault_server("--accept-limit", "6")
    result = wsswarm(
        "--url", server.url("/"), "--processes", "1", "--connections", "10",
        "--connect-rate", "10", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.summary["errors"] == {"refused": 5}
    assert result.summary["connections"]["failed"] == 5


def test_unreachable_target_fails_at_once(wsswarm: Callable[..., RunResult]) -> None:
    """Nothing listens: exit 1 within seconds, saying so, not after a 133 s ramp."""
    with socket_bound() as port:
        result = wsswarm("--url", f"ws://127.0.0.1:{port}/", "--connections", "10000")
    assert result.returncode == 1
    assert "target unreachable" in result.stderr
    assert "refused" in result.stderr
    assert result.elapsed < timeout(10)


def test_all_attempts_failing_ends_the_run(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Every handshake rejected (the probe skipped): the run stops early with exit 1 and a
    summary saying why."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/503/1"), "--processes", "1", "--connections", "1000",
        "--connect-rate", "200", "--warmup", "0", "--duration", "1", "--no-probe",
    )  # fmt: skip
    assert result.returncode == 1
    assert "no connection could be opened" in result.stderr
    assert "handshake_503" in result.stderr
    assert result.summary["status"] == "error"
    assert result.elapsed < timeout(15)


def test_too_many_open_files_is_counted(wsecho: Wsecho, wsswarm: Callable[..., RunResult]) -> None:
    """A worker with a soft limit of 40 files cannot open 60 sockets: EMFILE, counted."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "1", "--connections", "60",
        "--connect-rate", "300", "--warmup", "0", "--duration", "1", "--rlimit-nofile", "40",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    failed = summary["errors"]["too_many_open_files"]
    assert failed > 0
    assert summary["connections"]["failed"] == failed
    assert summary["connections"]["open"] == 60 - failed


def test_address_not_available_is_counted(
    tmp_path: Path, in_private_netns: Callable[[Path], subprocess.CompletedProcess[str]]
) -> None:
    """In a private network namespace with 8 local ports, connects beyond them get EADDRNOTAVAIL."""
    script = tmp_path / "inner.sh"
    out = tmp_path / "out"
    server = Path(__file__).parent / "faultserver.py"
    script.write_text(
        "set -e\n"
        "ip link set lo up\n"
        "sysctl -q -w net.ipv4.ip_local_port_range='40000 40007'\n"
        f"{sys.executable} {server} > {tmp_path}/port 2>&1 &\n"
        "server=$!\n"
        f"for i in $(seq 100); do grep -q PORT {tmp_path}/port && break; sleep 0.05; done\n"
        f"port=$(awk '{{print $2}}' {tmp_path}/port)\n"
        # Connections of the test itself hold most of the 8 ports for the whole run.
        f"{sys.executable} -c 'import socket,time\n"
        "s=[socket.create_connection((\"127.0.0.1\",'$port')) for _ in range(5)]\n"
        "time.sleep(30)' >/dev/null 2>&1 &\n"
        "holder=$!\n"
        "sleep 0.5\n"
        f"{sys.executable} -m wsswarm run --url ws://127.0.0.1:$port/ --processes 1 "
        f"--connections 6 --connect-rate 100 --warmup 0 --duration 1 --no-probe --out {out}"
        " || rc=$?\n"
        # By pid: `jobs -p` of a non-interactive sh lists nothing, and the server outlived the test.
        "kill $server $holder 2>/dev/null || true\n"
        "exit ${rc:-0}\n"
    )
    in_private_netns(script)
    summary = json.loads((out / "summary.json").read_text())
    # 8 ports, 5 held by the test, maybe 1 by the server's listening socket: 2 or 3 remain.
    failed = summary["errors"]["addr_not_available"]
    assert set(summary["errors"]) == {"addr_not_available"}
    assert failed in (3, 4)
    assert summary["connections"]["open"] == 6 - failed


def test_compat_prints_the_2017_lines(wsecho: Wsecho, wsswarm: Callable[..., RunResult]) -> None:
    """--compat: 2017 console (its exact line, JS number format) and its batching of attempts."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "2", "--connections", "10", "--compat",
        "--warmup", "0", "--duration", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"benchmarking server 127.0.0.1:{wsecho.port}"
    assert lines.count("Worker started!") == 2
    stats = [line for line in lines if line.startswith("Roundtrips per second")]
    assert len(stats) >= 2
    pattern = re.compile(r"^Roundtrips per second: \d+, at average latency: (NaN|\d+(\.\d+)?)ms$")
    for line in stats:
        assert pattern.match(line), line
    assert set(lines) <= {*stats, lines[0], "Worker started!"}
    # 5 per worker in batches of 3: the 2017 counter overshoots to 6 attempts per worker.
    assert result.summary["connections"]["attempted"] == 12


def test_open_mode_sends_at_the_fixed_rate(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """--mode open --rate 20 with 20 connections: 400 round trips per second."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "1", "--connections", "20",
        "--connect-rate", "200", "--mode", "open", "--rate", "20", *SHORT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["roundtrips_per_s"] == pytest.approx(400, rel=0.1)
    assert summary["latency_ms"]["p50"] > 0


def test_reconnect_reopens_dropped_connections(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """--reconnect: each dropped connection is attempted again."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/drop/2"), "--processes", "1", "--connections", "10",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1", "--reconnect", "--no-probe",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["errors"]["dropped"] >= 5
    assert summary["connections"]["attempted"] > 10


def test_interrupt_keeps_what_was_measured(wsecho: Wsecho, tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130, every worker file ends with an `interrupted` end record."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsswarm", "run", "--url", wsecho.url("/"), "--processes", "2",
         "--connections", "20", "--connect-rate", "100", "--warmup", "0", "--duration", "60",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout(20)
    while time.monotonic() < deadline and not (out / "worker-1.jsonl").exists():
        time.sleep(0.1)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=timeout(20))
    assert proc.returncode == 130, stderr
    for index in (0, 1):
        lines = (out / f"worker-{index}.jsonl").read_text().splitlines()
        assert '"reason":"interrupted"' in lines[-1]
        assert len(lines) >= 3
    assert '"status": "interrupted"' in (out / "summary.json").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--url"),
        (["--url", "http://127.0.0.1:1/"], "must start with ws://"),
        (["--url", "wss://127.0.0.1:1/"], "wss:// is not supported"),
        (["--url", "ws://127.0.0.1:1/", "--connections", "0"], "must be at least 1"),
        (["--url", "ws://127.0.0.1:1/", "--connect-rate", "-5"], "positive number"),
        (["--url", "ws://127.0.0.1:1/", "--connect-rate", "0"], "positive number"),
        (["--url", "ws://127.0.0.1:1/", "--duration", "inf"], "positive number"),
        (["--url", "ws://127.0.0.1:1/", "--warmup", "-1"], "zero or more"),
        (["--url", "ws://127.0.0.1:1/", "--warmup", "nan"], "zero or more"),
        (["--url", "ws://127.0.0.1:1/", "--warmup", "x"], "not a number"),
        (["--url", "ws://127.0.0.1:1/", "--mode", "open"], "needs --rate"),
        (["--url", "ws://127.0.0.1:1/", "--rate", "5"], "only applies to --mode open"),
        (["--url", "ws://127.0.0.1:1/", "--processes", "5", "--connections", "2"], "more than"),
        (["--url", "ws://127.0.0.1:1/", "--start-at", "1000"], "in the past"),
        (["--url", "ws://no-such-host.invalid:80/"], "cannot resolve"),
        (["--url", "ws://127.0.0.1:1/", "--source-address", "nope"], "not an IP address"),
        (["--url", "ws://127.0.0.1:1/", "--source-address", "127.0.0.1,x"], "not an IP address"),
        (
            ["--url", "ws://127.0.0.1:1/", "--source-address", "127.0.0.2,127.0.0.2"],
            "an address twice",
        ),
        # TEST-NET-1: not an address of this host (bound, never connected: nothing is sent).
        (["--url", "ws://127.0.0.1:1/", "--source-address", "192.0.2.7"], "not an address of"),
        (["--url", "ws://127.0.0.1:1/", "--source-address", "::1"], "cannot bind"),
        (["--url", "ws://127.0.0.1:1/", "--run-token", "a b"], "1-128 characters"),
        (["--url", "ws://127.0.0.1:1/", "--run-token", ""], "1-128 characters"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    wsswarm: Callable[..., RunResult], args: list[str], message: str
) -> None:
    """Bad input: exit 2 and a message naming the problem."""
    result = wsswarm(*args, out=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_start_at_in_the_past_sends_nothing(wsswarm: Callable[..., RunResult]) -> None:
    """A --start-at 5 s old: exit 2 and a message, and the listening target sees no connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = wsswarm(
            "--url", f"ws://127.0.0.1:{port}/", "--connections", "2", "--processes", "1",
            "--start-at", str(time.time() - 5), out=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "is in the past" in result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_open_file_limit_too_low_says_what_to_change(wsswarm: Callable[..., RunResult]) -> None:
    """A hard limit of 200 files cannot hold 1000 connections in one process: exit 2 + advice."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    result = wsswarm(
        "--url", "ws://127.0.0.1:1/", "--processes", "1", "--connections", "1000",
        out=False, preexec_fn=low_limit,
    )  # fmt: skip
    assert result.returncode == 2
    assert "hard limit is 200" in result.stderr
    assert "--processes 8" in result.stderr


class socket_bound:
    """A port that is certainly closed: bound (so nobody else takes it) but not listening."""

    def __enter__(self) -> int:
        import socket  # noqa: PLC0415

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()
