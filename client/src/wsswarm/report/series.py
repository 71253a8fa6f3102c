"""Per-second series of a target and its distributions, for the plots."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from wsswarm import latency
from wsswarm.report.hist import values_at_percentiles
from wsswarm.report.load import TargetDir
from wsswarm.report.ticks import Histograms, Worker

# Percentiles of the latency distribution plot (the classic HdrHistogram "nines" axis).
DISTRIBUTION_PERCENTILES = [0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]


@dataclass
class TimeSeries:
    """Per-second series of one target (seconds since the start of its ramp), for the plots."""

    t0: float | None = None
    roundtrips_per_s: dict[int, float] = field(default_factory=dict)
    open: dict[int, float] = field(default_factory=dict)
    p50_ms: dict[int, float] = field(default_factory=dict)
    p99_ms: dict[int, float] = field(default_factory=dict)
    server_cpu: dict[int, float] = field(default_factory=dict)
    server_rss_mb: dict[int, float] = field(default_factory=dict)
    window: tuple[float, float] | None = None  # measured window, seconds since t0
    distribution: list[tuple[float, float]] = field(default_factory=list)  # (percentile, ms)
    # (percentile, ms) of the TCP connects and of the upgrades of the whole run.
    connect_distribution: list[tuple[float, float]] = field(default_factory=list)
    upgrade_distribution: list[tuple[float, float]] = field(default_factory=list)


def distribution(hist: Any) -> list[tuple[float, float]]:
    """(percentile, ms) points of the merged latency histogram, for the distribution plot."""
    if not hist.get_total_count():
        return []
    return [
        (p, v / 1000.0)
        for p, v in zip(
            DISTRIBUTION_PERCENTILES,
            values_at_percentiles(hist, DISTRIBUTION_PERCENTILES),
            strict=True,
        )
    ]


def fill_series(
    series: TimeSeries,
    target: TargetDir,
    workers: list[Worker],
    common: tuple[float, float] | None,
    hists: Histograms,
) -> None:
    starts = [
        float(h.summary["started"])
        for h in target.hosts
        if h.summary and isinstance(h.summary.get("started"), (int, float)) and h.workers
    ]
    firsts = [
        w.series.records[0]["t"] - w.series.records[0]["interval_s"]
        for w in workers
        if w.series.records
    ]
    samples = [r["t"] for h in target.hosts if h.sampler for r in h.sampler.records[:1]]
    t0 = min(starts) if starts else (min(firsts) if firsts else (min(samples) if samples else None))
    if t0 is None:
        return
    series.t0 = t0
    if common is not None:
        series.window = (common[0] - t0, common[1] - t0)
    rates: dict[tuple[int, str], list[float]] = defaultdict(list)
    opens: dict[tuple[int, str], list[float]] = defaultdict(list)
    bin_hists: dict[int, Any] = {}
    for worker in workers:
        for tick in worker.series.records:
            k = round(tick["t"] - t0)
            rates[(k, worker.key)].append(tick["roundtrips"] / tick["interval_s"])
            if "open" in tick:
                opens[(k, worker.key)].append(tick["open"])
            tick_hist = hists.get(worker.series, tick) if tick["roundtrips"] else None
            if tick_hist is not None:
                bin_hists.setdefault(k, latency.new_histogram()).add(tick_hist)
    for (k, _), values in rates.items():
        series.roundtrips_per_s[k] = series.roundtrips_per_s.get(k, 0.0) + sum(values) / len(values)
    for (k, _), values in opens.items():
        series.open[k] = series.open.get(k, 0.0) + sum(values) / len(values)
    for k, hist in bin_hists.items():
        p50, p99 = values_at_percentiles(hist, [50.0, 99.0])
        series.p50_ms[k], series.p99_ms[k] = p50 / 1000.0, p99 / 1000.0
    for host in target.hosts:
        if host.sampler is None:
            continue
        for record in host.sampler.records:
            k = round(record["t"] - t0)
            series.server_cpu[k] = series.server_cpu.get(k, 0.0) + record["cpu_percent"]
            series.server_rss_mb[k] = series.server_rss_mb.get(k, 0.0) + record["rss_bytes"] / 1e6
