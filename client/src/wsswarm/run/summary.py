"""`summary.json` of one run: the measured window's figures, merged over the workers."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsswarm import __version__, latency
from wsswarm.formats import (
    CLIENT_BOUND_PERCENT,
    FORMAT_VERSION,
    LatencyMs,
    RunSummary,
    StepSummary,
    sustained_cpu,
)
from wsswarm.run.plan import COMPAT_STEP_S

if TYPE_CHECKING:
    from wsswarm.run.master import Master


def window_latency(ticks: list[dict[str, Any]]) -> tuple[int, LatencyMs | None, Any]:
    """Round trips, latency percentiles (ms, mean weighted by round trips) and the merged
    histogram of some measured ticks."""
    hist = latency.new_histogram()
    roundtrips = 0
    lat_sum_ms = 0.0
    for tick in ticks:
        roundtrips += tick["roundtrips"]
        if tick["latency_ms"]:
            lat_sum_ms += tick["latency_ms"]["mean"] * tick["roundtrips"]
        hist.add(latency.decode(tick["histogram"]))
    summary_latency = latency.summarize_ms(hist)
    if summary_latency is not None and roundtrips:
        summary_latency["mean"] = round(lat_sum_ms / roundtrips, 4)
    return roundtrips, summary_latency, hist


def step_figures(master: Master, step: int) -> StepSummary:
    """--steps: the figures of one step's window, merged over the workers."""
    _ramp_start, start, end = master.steps[step]
    per_worker = [[t for t in w.measure_ticks if t.get("step") == step + 1] for w in master.workers]
    roundtrips, step_latency, _hist = window_latency([t for ticks in per_worker for t in ticks])
    last = [ticks[-1] for ticks in per_worker if ticks]
    ramp_done = [
        w.step_ramps.get(step) if step < len(master.steps) - 1 else (w.ramp or {}).get("t")
        for w in master.workers
    ]
    return {
        "step": step + 1,
        "connections_planned": master.args.steps[step],
        "measure_started": start,
        "measure_ended": end,
        "ramp_completed_before_window": (
            None if None in ramp_done else max(d for d in ramp_done if d is not None) <= start
        ),
        "roundtrips": roundtrips,
        "roundtrips_per_s": round(roundtrips / (end - start), 3),
        "latency_ms": step_latency,
        "connections": {
            "attempted": sum(t["attempted"] for t in last),
            "open": sum(t["open"] for t in last),
            "failed": sum(t["failed"] for t in last),
            "dropped": sum(t.get("dropped", 0) for t in last),
        },
        "connect_ms": merged_ms(master.step_dial[step]["connect"]),
        "upgrade_ms": merged_ms(master.step_dial[step]["upgrade"]),
    }


def summarize(master: Master) -> RunSummary:
    """The figures of the measured window and of the whole run, merged over the workers.

    With --steps the run-wide figures are those of the last step measured (the most
    connections), and `steps` has every step's."""
    reached = {t.get("step") for w in master.workers for t in w.measure_ticks}
    steps = [step_figures(master, i) for i in range(len(master.steps)) if i + 1 in reached]
    if master.stopped_by is not None:
        steps = [s for s in steps if s["step"] <= master.stopped_by["step"]]
    last_step = steps[-1]["step"] if steps else None
    window_ticks = [
        t for w in master.workers for t in w.measure_ticks if t.get("step") == last_step
    ]
    roundtrips, summary_latency, hist = window_latency(window_ticks)
    window = None
    if last_step is not None:
        window = float(master.args.step_duration)
    elif master.measure_start is not None and master.measure_end is not None:
        window = master.measure_end - master.measure_start
    finals = [w.last_tick for w in master.workers if w.last_tick]
    errors_total: dict[str, int] = {}
    for tick in finals:
        for kind, count in tick["errors"].items():
            errors_total[kind] = errors_total.get(kind, 0) + count
    open_at_end = 0
    for worker in master.workers:
        ticks = [t for t in worker.measure_ticks if t.get("step") == last_step]
        if ticks:
            open_at_end += ticks[-1]["open"]
    cpu = {str(w.index): round(sustained_cpu(w.cpu_measure), 1) for w in master.workers}
    client_bound = any(value > CLIENT_BOUND_PERCENT for value in cpu.values())
    # Ramp figures come from the workers' ramp_done reports (later reconnects excluded).
    ramps = [w.ramp for w in master.workers if w.ramp]
    firsts = [r["first_attempt"] for r in ramps if r.get("first_attempt")]
    lasts = [r["last_attempt"] for r in ramps if r.get("last_attempt")]
    dones = [r["t"] for r in ramps]
    attempted = sum(t["attempted"] for t in finals)
    requested = 15.0 * master.args.processes if master.args.compat else master.args.connect_rate
    achieved = None
    if lasts and len(ramps) == len(master.workers):
        # n attempts paced 1/R apart span (n-1)/R: count the span from the scheduled start
        # (t0) to the last launch, plus one interval. A late loop lowers this figure.
        step = COMPAT_STEP_S if master.args.compat else 1.0 / requested
        ramp_attempts = sum(r["attempted"] for r in ramps)
        achieved = round(ramp_attempts / (max(lasts) - master.t0 + step), 3)
    completed_before_window = (
        None
        if not dones or len(dones) < len(master.workers) or master.measure_start is None
        else max(dones) <= master.measure_start
    )
    if master.steps:
        achieved = None  # the ramps of the steps are apart: no single rate
        before = [s["ramp_completed_before_window"] for s in steps]
        completed_before_window = None if None in before else all(before)
    ends = [w.end for w in master.workers if w.end]
    dial_ms = {phase: merged_ms(encoded) for phase, encoded in master.dial_histograms.items()}
    summary: RunSummary = {
        "format_version": FORMAT_VERSION,
        "tool": f"wsswarm {__version__}",
        "status": master.status,
        "message": master.message,
        "host": master.host,
        "label": master.args.label,
        "url": master.args.url,
        "params": master.params,
        "started": round(master.t0 or master.started, 4),
        "measure_started": master.measure_start,
        "measure_ended": master.measure_end,
        "roundtrips": roundtrips,
        "roundtrips_per_s": round(roundtrips / window, 3) if window else 0.0,
        "latency_ms": summary_latency,
        "connections": {
            "attempted": attempted,
            "open": open_at_end,
            "failed": sum(t["failed"] for t in finals),
            "dropped": sum(t.get("dropped", 0) for t in finals),
        },
        "errors": dict(sorted(errors_total.items())),
        "client_bound": client_bound,
        "client_cpu_percent": cpu,
        "ramp": {
            "requested_rate": requested,
            "achieved_rate": achieved,
            "first_attempt": min(firsts) if firsts else None,
            "last_attempt": max(lasts) if lasts else None,
            "completed": max(dones) if dones else None,
            # False: the window (fixed by --start-at for all hosts) began before the ramp
            # ended on this host; null: the ramp never ended.
            "completed_before_window": completed_before_window,
            "window": "planned" if master.window_planned else "after_ramp",
        },
        "roundtrips_total": sum(e.get("roundtrips_total", 0) for e in ends),
        "messages_sent": sum(e.get("sent_total", 0) for e in ends),
        "histogram": latency.encode(hist),
        "kernel": None
        if master.kernel_peak is None
        else {
            "tcp_inuse_max": master.kernel_inuse_max,
            "tcp_mem_bytes_max": master.kernel_peak.tcp_mem_bytes,
            "tcp_alloc_at_max": master.kernel_peak.tcp_alloc,
        },
        "connect_ms": dial_ms["connect"],
        "upgrade_ms": dial_ms["upgrade"],
    }
    if master.args.steps:
        summary["steps"] = steps
        summary["stopped_by"] = master.stopped_by
        if last_step is not None:
            summary["measure_started"] = steps[-1]["measure_started"]
            summary["measure_ended"] = steps[-1]["measure_ended"]
    return summary


def merged_ms(encoded: list[str]) -> LatencyMs | None:
    """Percentiles (ms) of the sum of encoded histograms; None when there is none."""
    hist = latency.new_histogram()
    for text in encoded:
        hist.add(latency.decode(text))
    return latency.summarize_ms(hist)


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file beside `path` and rename it over (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
