"""SLO gates: parsing, checking, and `wsswarm run --slo` against a real wsecho on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from wsswarm import slo

Wsecho = Any
RunResult = Any
SHORT: tuple[str, ...] = ("--processes", "1", "--connections", "10", "--connect-rate", "100")
SHORT += ("--warmup", "0.5", "--duration", "1")

RESULT = {
    "roundtrips_per_s": 25_000.0,
    "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 80.0, "p999": 250.0, "max": 300.0, "mean": 1.5},
    "connections": {"open": 10_000, "failed": 0, "dropped": 2, "attempted": 10_000},
}


@pytest.mark.parametrize(
    ("expr", "value", "passed"),
    [
        ("p99<100ms", 80.0, True),
        ("p99 < 0.05s", 80.0, False),
        ("p999<=250ms", 250.0, True),
        ("p999<250", 250.0, False),
        ("max<300000us", 300.0, False),
        ("failed==0", 0.0, True),
        ("dropped==0", 2.0, False),
        ("open>=10000", 10_000.0, True),
        ("roundtrips_per_s>=20000", 25_000.0, True),
        ("roundtrips_per_s>30000", 25_000.0, False),
        ("mean!=1.5", 1.5, False),
    ],
)
def test_gate_checks_the_named_figure(expr: str, value: float, passed: bool) -> None:
    outcome = slo.parse(expr).check(RESULT)
    assert (outcome["value"], outcome["passed"]) == (value, passed)
    assert slo.line(outcome).endswith("pass" if passed else "FAIL")


def test_a_result_without_the_figure_fails_the_gate() -> None:
    outcome = slo.parse("p99<100ms").check({"latency_ms": None})
    assert outcome == {
        "expr": "p99<100ms",
        "metric": "p99",
        "op": "<",
        "threshold": 100.0,
        "value": None,
        "passed": False,
    }
    assert slo.line(outcome) == "SLO p99<100ms: no value -> FAIL"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("p99", "expected METRIC OP NUMBER"),
        ("p98<100ms", "unknown metric 'p98'"),
        ("p99<100kg", "latency unit 'kg'"),
        ("failed==0ms", "failed takes no unit"),
        ("p99=<100", "expected METRIC OP NUMBER"),
    ],
)
def test_bad_expressions_are_refused(expr: str, problem: str) -> None:
    with pytest.raises(slo.SloError, match=problem):
        slo.parse(expr)


def test_run_exits_3_when_an_slo_fails_and_0_when_all_hold(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """A rate no loopback run reaches fails the gate (exit 3, FAIL line, slo[]); gates that hold
    exit 0."""
    url = ("--url", wsecho.url("/"))
    held = wsswarm(*url, *SHORT, "--slo", "failed==0", "--slo", "p99<60s")
    assert held.returncode == 0, held.stderr
    assert [o["passed"] for o in held.summary["slo"]] == [True, True]
    assert "SLO failed==0: 0 -> pass" in held.stdout
    failed = wsswarm(*url, *SHORT, "--slo", "failed==0", "--slo", "roundtrips_per_s>=1000000000")
    assert failed.returncode == 3, failed.stderr
    gates = failed.summary["slo"]
    assert [(o["expr"], o["passed"]) for o in gates] == [
        ("failed==0", True),
        ("roundtrips_per_s>=1000000000", False),
    ]
    rate = failed.summary["roundtrips_per_s"]
    assert gates[1]["value"] == rate > 0
    assert f"SLO roundtrips_per_s>=1000000000: {rate:g} -> FAIL" in failed.stdout
    plain = wsswarm(*url, *SHORT)
    assert plain.returncode == 0
    assert plain.summary["slo"] == []


def test_run_refuses_a_bad_slo_before_it_starts(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    result = wsswarm("--url", wsecho.url("/"), *SHORT, "--slo", "p99<fast")
    assert result.returncode == 2
    assert "SLO 'p99<fast': expected METRIC OP NUMBER[UNIT]" in result.stderr
    assert not result.out.exists()
