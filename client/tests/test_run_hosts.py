"""Several client hosts given one --start-at measure the same seconds; every close is clean.

Real `wsswarm run` processes (one per "host") against a real wsecho that logs JSON lines, then
the real `wsswarm report` over their files.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
FaultServer = Any
RunResult = Any
WSSWARM = [sys.executable, "-m", "wsswarm"]
SERVING = re.compile(r"serving on port (\d+)")
# What wsecho logs when a peer's close frame is not a clean one (backend_picows.py).
UNCLEAN = re.compile(r"bad close code|protocol error|closing .* with \d+", re.IGNORECASE)


class JsonWsecho:
    """wsecho (picows backend) with `--log-format json`, its log in a file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *[sys.executable, "-m", "wsecho", "--backend", "picows"],
                *["--host", "127.0.0.1", "--port", "0", "--log-format", "json"],
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not (match := SERVING.search(self.log_path.read_text())):
            assert self.proc.poll() is None, f"wsecho exited: {self.log_path.read_text()}"
            assert time.monotonic() < deadline, "wsecho did not start"
            time.sleep(0.05)
        self.port = int(match.group(1))
        self.url = f"ws://127.0.0.1:{self.port}/"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def json_wsecho(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonWsecho]:
    server = JsonWsecho(tmp_path_factory.mktemp("wsecho-json") / "wsecho.jsonl")
    yield server
    server.stop()


def unclean_lines(server: JsonWsecho, since: int) -> list[dict[str, Any]]:
    return [r for r in server.records()[since:] if UNCLEAN.search(str(r.get("message", "")))]


def test_hosts_with_one_start_at_measure_the_same_window(
    json_wsecho: JsonWsecho, tmp_path: Path
) -> None:
    """Two `wsswarm run`s with one --start-at fix the same window in advance (start + ceil(ramp
    plan + warm-up)), whatever their own ramps did; the report over both loses no round trip.

    The parameters put the plan just past a tick (ramp plan 1.0 s + warm-up 2.05 s): a host
    that rounded its own "ramp done + warm-up" (last attempt at 0.9 s + handshake) up to the
    next tick would start measuring at start + 3, not start + 4, and one whose start-up was
    slow (seconds, on a loaded 2-core machine) later still.
    """
    since = len(json_wsecho.records())
    run_dir = tmp_path / "results" / "r1"
    target = run_dir / "echo"
    # A whole second, as a playbook would pick. Two start-ups took up to 11 s here under load
    # (spawned interpreters importing picows and uvloop): the window leaves room for that.
    start_at = math.floor(time.time()) + 8.0
    argv = [
        *WSSWARM, "run", "--url", json_wsecho.url, "--processes", "2", "--connections", "10",
        "--connect-rate", "10", "--warmup", "2.05", "--duration", "2",
        "--start-at", str(start_at),
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            [*argv, "--out", str(target / host)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in ("hostA", "hostB")
    ]
    outputs = [run.communicate(timeout=90) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
    summaries = [json.loads((target / h / "summary.json").read_text()) for h in ("hostA", "hostB")]
    windows = [(s["measure_started"], s["measure_ended"]) for s in summaries]
    assert windows == [(start_at + 4, start_at + 6)] * 2
    for out, _ in outputs:
        assert "measured window 4..6 s after start" in out
    for summary in summaries:
        assert summary["status"] == "completed"
        assert summary["ramp"]["window"] == "planned"
        # Normally true; a host whose start-up was late says so rather than shift its window.
        ramp = summary["ramp"]
        assert ramp["completed_before_window"] is (ramp["completed"] <= start_at + 4)
        assert summary["roundtrips"] > 0

    (target / "status.json").write_text(json.dumps({"target": "echo", "status": "ok"}))
    manifest = {"format_version": 1, "run_id": "r1", "targets": {"echo": {"kind": "baseline"}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    report = subprocess.run(
        [*WSSWARM, "report", "--no-plots", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    echo = json.loads((run_dir / "summary.json").read_text())["targets"]["echo"]
    assert not [w for w in echo["warnings"] if "outside the common window" in w], echo["warnings"]
    assert echo["window"]["start"] == pytest.approx(start_at + 4, abs=0.5)
    assert echo["window"]["seconds"] == pytest.approx(2.0, abs=0.5)
    # Every round trip each host measured is in the merged figure: none left out.
    assert echo["roundtrips"] == sum(s["roundtrips"] for s in summaries)
    # Both hosts closed their connections with a valid code: wsecho saw clean closes only.
    assert unclean_lines(json_wsecho, since) == []


def test_wsecho_sees_clean_closes(
    json_wsecho: JsonWsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """A clean run's probe and drain close with 1000: wsecho logs no bad close code."""
    since = len(json_wsecho.records())
    result = wsswarm(
        "--url", json_wsecho.url, "--processes", "1", "--connections", "5", "--connect-rate",
        "50", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.summary["connections"]["open"] == 5
    time.sleep(0.5)  # the server logs as it handles the close frames
    assert unclean_lines(json_wsecho, since) == []
    # Not vacuous: wsecho logs JSON lines, and the run's connections were served.
    assert json_wsecho.records()[0]["level"] == "info"


def test_a_ramp_that_ends_late_keeps_the_common_window(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Upgrades answered 1.5 s late: the ramp ends after the planned window began; the host
    keeps the window (start + ceil(0.5 + 0)) and says so, in the summary and in words."""
    server = fault_server()
    start_at = time.time() + 6
    result = wsswarm(
        "--url", server.url("/fault/lateup/1"), "--processes", "1", "--connections", "5",
        "--connect-rate", "10", "--warmup", "0", "--duration", "3", "--start-at", str(start_at),
        "--no-probe",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.summary
    assert summary["measure_started"] == start_at + 1
    assert summary["measure_ended"] == start_at + 4
    assert summary["ramp"]["completed_before_window"] is False
    assert summary["ramp"]["completed"] > summary["measure_started"]
    assert "WARNING: the ramp was not complete when the common measured window began" in (
        result.stdout
    )
    # The connections opened during the window: they measured, and closed with 1000 at the end.
    assert summary["connections"]["open"] == 5
    assert summary["roundtrips"] > 0
    assert server.stats()["closes"] == {"1000": 5}


def test_measure_at_overrides_the_plan(
    json_wsecho: JsonWsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """--measure-at fixes the window explicitly (hosts with unequal shares can share it)."""
    start_at = math.floor(time.time()) + 6.0
    result = wsswarm(
        "--url", json_wsecho.url, "--processes", "1", "--connections", "4", "--connect-rate",
        "40", "--warmup", "0", "--duration", "1", "--start-at", str(start_at),
        "--measure-at", str(start_at + 2),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.summary
    assert (summary["measure_started"], summary["measure_ended"]) == (start_at + 2, start_at + 3)
    phases = [r["phase"] for r in result.worker_records(0)[1:-1]]
    assert phases.count("measure") == 1
    assert "warmup" in phases


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--measure-at", "2000000000"], "--measure-at needs --start-at"),
        (["--start-at", "+10", "--measure-at", "+10.5"], "must be a whole number of seconds"),
        (["--start-at", "+10", "--measure-at", "+9"], "must be a whole number of seconds"),
    ],
)
def test_measure_at_is_validated(
    wsswarm: Callable[..., RunResult], extra: list[str], message: str
) -> None:
    now = math.floor(time.time())
    args = [str(now + float(a[1:])) if a.startswith("+") else a for a in extra]
    result = wsswarm("--url", "ws://127.0.0.1:9/", *args, out=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_close_frames_carry_1000(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The probe and every connection of the drain close with 1000 (not picows' default 0)."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/"), "--processes", "1", "--connections", "6", "--connect-rate",
        "60", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.stats()["closes"] == {"1000": 7}  # 6 connections + the probe
