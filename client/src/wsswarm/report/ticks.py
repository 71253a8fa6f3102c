"""The worker records of one target as the merge sees them: workers, windows, histograms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsswarm import latency
from wsswarm.report.hist import summary_ms
from wsswarm.report.load import HostDir, Problem, Series


@dataclass
class Worker:
    key: str  # "<host>/worker-<n>"
    host: str
    series: Series
    measure: list[dict[str, Any]]

    @property
    def window(self) -> tuple[float, float] | None:
        if not self.measure:
            return None
        first, last = self.measure[0], self.measure[-1]
        return first["t"] - first["interval_s"], last["t"]


def mid(tick: dict[str, Any]) -> float:
    return float(tick["t"] - tick["interval_s"] / 2)


def add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        total[kind] = total.get(kind, 0) + count


class Histograms:
    """Decodes tick histograms once each, naming the ones that do not decode."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.cache: dict[int, Any] = {}

    def get(self, series: Series, tick: dict[str, Any]) -> Any | None:
        key = id(tick)
        if key not in self.cache:
            hist = None
            encoded = tick.get("histogram")
            if encoded is None:
                if tick["roundtrips"]:
                    self.problems.append(
                        Problem(
                            series.path,
                            tick["_line"],
                            f"tick without histogram: latency of {tick['roundtrips']} round "
                            "trips not in the percentiles",
                        )
                    )
            else:
                try:
                    hist = latency.decode(encoded)
                except Exception as exc:  # hdrh raises binascii, zlib, struct and value errors
                    self.problems.append(
                        Problem(
                            series.path,
                            tick["_line"],
                            f"histogram does not decode ({type(exc).__name__}): latency of "
                            f"{tick['roundtrips']} round trips not in the percentiles",
                        )
                    )
            self.cache[key] = hist
        return self.cache[key]


def host_params(host: HostDir) -> dict[str, Any]:
    if host.summary and isinstance(host.summary.get("params"), dict):
        return dict(host.summary["params"])
    for worker in host.workers:
        if worker.start and isinstance(worker.start.get("params"), dict):
            return dict(worker.start["params"])
    return {}


def latency_ms(hist: Any, ticks: list[dict[str, Any]]) -> dict[str, float] | None:
    """Percentiles from the merged histogram; the mean weighted by round trips when exact."""
    if hist.get_total_count() == 0:
        return None
    weighted, count = 0.0, 0
    for tick in ticks:
        if not tick["roundtrips"]:
            continue
        mean = (tick.get("latency_ms") or {}).get("mean")
        if not isinstance(mean, (int, float)):
            count = 0  # one tick without a mean: the histogram's mean for all
            break
        weighted += mean * tick["roundtrips"]
        count += tick["roundtrips"]
    return summary_ms(hist, weighted / count if count else None)


def in_window(tick: dict[str, Any], common: tuple[float, float] | None) -> bool:
    if common is None:
        return True  # no common window: every measured tick counts (per-worker rates)
    return common[0] <= mid(tick) <= common[1]
