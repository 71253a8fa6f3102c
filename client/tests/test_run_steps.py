"""`wsswarm run --steps`: capacity steps against a real wsecho and the fault server, 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wsswarm.report import build_summary
from wsswarm.run.cli import _step_counts, validate
from wsswarm.run.exits import UsageError
from wsswarm.run.plan import planned_steps

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
Wsecho = Any
FaultServer = Any
RunResult = Any

STEPS = ("--steps", "50,100,200", "--step-duration", "2", "--warmup", "0.5")
PERCENTILES = ("p50", "p90", "p99", "p999", "max")


def _ordered(latency_ms: dict[str, float]) -> bool:
    values = [latency_ms[name] for name in PERCENTILES]
    return values == sorted(values) and values[0] > 0


@pytest.mark.parametrize("mode", [("--mode", "closed"), ("--mode", "open", "--rate", "5")])
def test_steps_give_one_entry_per_step_with_the_planned_counts_open(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult], mode: tuple[str, ...]
) -> None:
    """Each step ramps to its count, waits the warm-up and measures its own window: steps[]
    holds one entry per step, all planned connections open, percentiles ordered, the
    run-wide figures those of the last step."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "2", "--connect-rate", "200", *STEPS, *mode,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    steps = summary["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [s["connections_planned"] for s in steps] == [50, 100, 200]
    assert [s["connections"]["open"] for s in steps] == [50, 100, 200]
    assert [s["connections"]["failed"] for s in steps] == [0, 0, 0]
    assert summary["stopped_by"] is None
    previous_end = summary["started"]
    for step in steps:
        assert step["roundtrips"] > 0
        assert step["roundtrips_per_s"] == pytest.approx(step["roundtrips"] / 2, rel=1e-3)
        assert _ordered(step["latency_ms"])
        assert step["connect_ms"]["p50"] > 0
        # Windows of the planned length, one after the other, on whole seconds from the start.
        assert step["measure_ended"] - step["measure_started"] == pytest.approx(2)
        assert step["measure_started"] > previous_end
        offset = step["measure_started"] - summary["started"]
        assert offset == pytest.approx(round(offset), abs=1e-3)
        previous_end = step["measure_ended"]
    assert summary["latency_ms"] == steps[-1]["latency_ms"]
    assert summary["roundtrips"] == steps[-1]["roundtrips"]
    assert summary["connections"]["open"] == 200
    # The worker files tell each tick's step; the measured ones lie inside its window.
    for index in (0, 1):
        ticks = [r for r in result.worker_records(index) if r["type"] == "tick"]
        for tick in ticks:
            if tick["phase"] == "measure":
                window = steps[tick["step"] - 1]
                assert window["measure_started"] < tick["t"] <= window["measure_ended"] + 0.5


def test_stop_when_failed_ends_the_run_at_the_step_where_connects_fail(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The server stops accepting after 81 connections (the probe + 80): step 2 (100) is the
    first with refused connects; the run ends after it, step 3 never runs, the reason is
    recorded."""
    server = fault_server("--accept-limit", "81")
    result = wsswarm(
        "--url", server.url("/"), "--processes", "2", "--connect-rate", "50",
        "--steps", "50,100,200", "--step-duration", "2", "--warmup", "0.5",
        "--stop-when", "p99>60s", "--stop-when", "failed>0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert [s["connections_planned"] for s in summary["steps"]] == [50, 100]
    assert summary["steps"][0]["connections"]["failed"] == 0
    second = summary["steps"][1]["connections"]
    # About 20 refused; a loaded server may let one more in before its listener closes.
    assert second["failed"] > 0
    assert second["attempted"] == 100
    assert second["open"] + second["failed"] + second["dropped"] == 100
    assert summary["stopped_by"] == {
        "step": 2, "connections": 100, "expr": "failed>0", "value": float(second["failed"]),
    }  # fmt: skip
    assert "--stop-when failed>0 holds" in result.stdout
    assert summary["message"] == "--stop-when failed>0 at step 2"
    # The run-wide figures are step 2's, the last one measured.
    assert summary["latency_ms"] == summary["steps"][1]["latency_ms"]


def test_without_steps_nothing_of_steps_is_written(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """No --steps: no steps[], no stopped_by, no tick step, no step option in params (the
    files are those of a run before steps existed)."""
    result = wsswarm(
        "--url", wsecho.url("/"), "--processes", "1", "--connections", "10",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert "steps" not in summary
    assert "stopped_by" not in summary
    assert summary["params"]["connections"] == 10
    records = result.worker_records(0)
    for params in (summary["params"], records[0]["params"]):
        assert not {"steps", "step_duration", "stop_when"} & set(params)
    assert all("step" not in r for r in records)


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "start_at": None, "measure_at": None, "processes": 2, "connections": 10_000,
        "connect_rate": 100.0, "compat": False, "warmup": 0.5, "duration": 60.0,
        "steps": [50, 100, 200], "step_duration": 2, "stop_when": [], "mode": "closed",
        "rate": None, "source_address": [],
    }  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def test_planned_steps_come_from_the_shared_parameters_only() -> None:
    """Ramp of the step's new connections + warm-up, rounded up to whole seconds from t0; the
    next ramp starts when the window before ends."""
    assert planned_steps(_args(), 1000.0) == [
        (1000.0, 1001.0, 1003.0),  # 50 at 100/s: 0.5 s + 0.5 s warm-up -> 1 s
        (1003.0, 1004.0, 1006.0),  # 50 more: the same
        (1006.0, 1008.0, 1010.0),  # 100 more: 1 s + 0.5 s -> 2 s
    ]
    assert planned_steps(_args(processes=1), 1000.0) == planned_steps(_args(), 1000.0)
    assert all(math.isclose(b - a, 2) for _r, a, b in planned_steps(_args(step_duration=2), 5.0))


def test_step_options_are_checked() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must increase"):
        _step_counts("100,50")
    with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
        _step_counts("100,lots")
    args = _args()
    validate(args)
    assert args.connections == 200
    cases = [
        (_args(connections=300), "differs from the last step 200"),
        (_args(compat=True), "not with --compat"),
        (_args(start_at=time.time() + 5, measure_at=time.time() + 10), "--measure-at"),
        (_args(processes=60), "more than the first step 50"),
        (_args(steps=None, stop_when=["failed>0"]), "need --steps"),
        (_args(steps=None, step_duration=5), "need --steps"),
    ]
    for bad, message in cases:
        with pytest.raises(UsageError, match=message):
            validate(bad)


def test_hosts_with_one_start_at_measure_every_step_in_the_same_seconds(
    wsecho: Wsecho, tmp_path: Path
) -> None:
    """Two `wsswarm run --steps` ("hosts", one and two processes) given one --start-at plan
    the same windows from the shared parameters alone; the report over both merges each step
    from both hosts: the planned counts and the round trips add up."""
    start_at = math.floor(time.time()) + 8.0  # room for two start-ups on a loaded machine
    target = tmp_path / "results" / "r1" / "echo"
    argv = [
        sys.executable, "-m", "wsswarm", "run", "--url", wsecho.url("/"), "--steps", "10,20",
        "--step-duration", "2", "--connect-rate", "50", "--warmup", "0.5",
        "--start-at", str(start_at),
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            [*argv, "--processes", processes, "--out", str(target / host)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, processes in (("hostA", "1"), ("hostB", "2"))
    ]
    outputs = [run.communicate(timeout=90) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
    summaries = [json.loads((target / h / "summary.json").read_text()) for h in ("hostA", "hostB")]
    windows = [[(s["measure_started"], s["measure_ended"]) for s in r["steps"]] for r in summaries]
    # 10 at 50/s: 0.2 s + 0.5 s -> 1 s; then 10 more from 3 s: -> 4 s.
    assert windows == [[(start_at + 1, start_at + 3), (start_at + 4, start_at + 6)]] * 2
    merged = build_summary(target.parent)[0]["targets"]["echo"]
    assert [s["connections_planned"] for s in merged["steps"]] == [20, 40]
    assert [s["connections"]["open"] for s in merged["steps"]] == [20, 40]
    for index, step in enumerate(merged["steps"]):
        assert step["roundtrips"] == sum(r["steps"][index]["roundtrips"] for r in summaries)
