"""SLO gates: `p99<100ms`, `failed==0`, `roundtrips_per_s>=20000`, checked on a result.

A result is anything with the figures of `summary.json` (one `wsswarm run`) or of a target in
the report's merged `summary.json`: `latency_ms` {p50, p90, p99, p999, max, mean},
`roundtrips_per_s`, `connections` {open, failed, dropped, attempted}.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wsswarm.formats import SloResult

LATENCY_METRICS = ("p50", "p90", "p99", "p999", "max", "mean")
COUNT_METRICS = ("failed", "dropped", "open", "attempted")
RATE_METRICS = ("roundtrips_per_s",)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
# Latency thresholds in ms; a bare number is ms too.
UNITS_MS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001}
_EXPR = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$")


class SloError(ValueError):
    """An expression that is not an SLO; the message says what is allowed."""


@dataclass(frozen=True)
class Slo:
    expr: str
    metric: str
    op: str
    threshold: float

    def value_of(self, result: Mapping[str, Any]) -> float | None:
        if self.metric in LATENCY_METRICS:
            value = (result.get("latency_ms") or {}).get(self.metric)
        elif self.metric in COUNT_METRICS:
            value = (result.get("connections") or {}).get(self.metric)
        else:
            value = result.get(self.metric)
        return float(value) if isinstance(value, (int, float)) else None

    def check(self, result: Mapping[str, Any]) -> SloResult:
        value = self.value_of(result)
        passed = value is not None and OPERATORS[self.op](value, self.threshold)
        return {
            "expr": self.expr,
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "value": value,
            "passed": passed,
        }


def parse(text: str) -> Slo:
    """`METRIC OP NUMBER[UNIT]`; SloError names what is wrong."""
    match = _EXPR.match(text)
    known = ", ".join((*LATENCY_METRICS, *COUNT_METRICS, *RATE_METRICS))
    if match is None:
        raise SloError(
            f"SLO {text!r}: expected METRIC OP NUMBER[UNIT], e.g. p99<100ms, failed==0, "
            f"roundtrips_per_s>=20000 (OP: < <= > >= == !=)"
        )
    metric, op, number, unit = match.groups()
    if metric not in (*LATENCY_METRICS, *COUNT_METRICS, *RATE_METRICS):
        raise SloError(f"SLO {text!r}: unknown metric {metric!r} (known: {known})")
    threshold = float(number)
    if metric in LATENCY_METRICS:
        if unit not in UNITS_MS:
            raise SloError(f"SLO {text!r}: latency unit {unit!r} is not one of ms, s, us")
        threshold *= UNITS_MS[unit]
    elif unit:
        raise SloError(f"SLO {text!r}: {metric} takes no unit")
    return Slo(text.replace(" ", ""), metric, op, threshold)


def check_all(slos: list[Slo], result: Mapping[str, Any]) -> list[SloResult]:
    return [slo.check(result) for slo in slos]


def line(outcome: SloResult) -> str:
    """`SLO p99<100ms: 12.3 ms -> pass` (what `run` and `report` print)."""
    value = outcome["value"]
    unit = " ms" if outcome["metric"] in LATENCY_METRICS else ""
    shown = "no value" if value is None else f"{value:g}{unit}"
    verdict = "pass" if outcome["passed"] else "FAIL"
    return f"SLO {outcome['expr']}: {shown} -> {verdict}"
