"""Merging the files of one target: all workers of all client hosts, and the server sampler.

The merge works on the per-second tick records, not on the per-host summaries, so that it is
exact and does not depend on how workers are grouped into hosts:
- the measured window of the target is the *common* window of all workers (latest start of a
  worker's measured ticks to earliest end), so the rate is what the server sustained while every
  worker was measuring;
- round trips are the sum of the measured ticks inside that window, the latency histogram is the
  HdrHistogram sum of those ticks' histograms (exact percentiles), the mean is weighted by round
  trips, and the rate is round trips / window length.
The per-host `summary.json` files are cross-checked against the ticks, not trusted blindly.
The steps are here; the records' view is in `ticks`, the sampler's in `server`, the plots'
series in `series`, the pairs of targets in `side_by_side`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from wsswarm import latency
from wsswarm.formats import CLIENT_BOUND_PERCENT, sustained_cpu
from wsswarm.report import placement, steps
from wsswarm.report.hist import summary_ms
from wsswarm.report.load import HostDir, Problem, TargetDir
from wsswarm.report.series import TimeSeries, distribution, fill_series
from wsswarm.report.server import memory_per_connection, server_figures, server_path_warnings
from wsswarm.report.ticks import (
    Histograms,
    Worker,
    add_counts,
    host_params,
    in_window,
    latency_ms,
    mid,
)

# Hosts whose measured windows start further apart than this were not started together.
WINDOW_SKEW_WARN_S = 1.5
# Per-second round trips that vary more than this (stdev / mean) over the window: not steady.
ROUNDTRIPS_CV_WARN = 0.15


def analyse_target(
    target: TargetDir, problems: list[Problem], p99_limit_ms: float | None = None
) -> tuple[dict[str, Any], TimeSeries]:
    """Merged figures of one target (a JSON-able dict) and its per-second series."""
    hists = Histograms(problems)
    warnings: list[str] = []
    workers = _workers(target)
    numbers = steps.step_numbers(workers)
    step_results = [_merge_step(target, workers, n, hists) for n in numbers]
    if numbers:
        # --steps: the target's window figures are those of its last step, as in a run's.
        workers = steps.only_step(workers, numbers[-1])
    result = _target_status(target, len(workers), warnings)
    common = _common_window(workers, warnings)
    hist, selected = _merge_roundtrips(workers, common, hists, result, warnings)
    result["roundtrips_per_s_cv"] = _roundtrips_cv(workers, common, warnings)
    # A run that --stop-when ended early is judged against the count of its last step measured.
    planned = steps.planned_count(target, numbers[-1]) if numbers else None
    _merge_connections(
        target, workers, common, selected, planned=planned, result=result, warnings=warnings
    )
    dial_hists = _merge_dial_latency(workers, problems, result)
    _merge_client(target, workers, hists, result, warnings)
    result["server"] = server_figures(target, common, warnings)
    result["memory_per_connection"] = memory_per_connection(result)
    _placement(target, result, warnings)
    server_path_warnings(target, result, warnings)
    series = TimeSeries()
    fill_series(series, target, workers, common, hists)
    series.distribution = distribution(hist)
    series.connect_distribution = distribution(dial_hists["connect"])
    series.upgrade_distribution = distribution(dial_hists["upgrade"])
    if numbers:
        limit = steps.p99_limit(target, p99_limit_ms)
        result["steps"] = step_results
        result["capacity"] = {
            "p99_limit_ms": limit,
            "largest_open_within_limit": steps.largest_within(step_results, limit),
        }
    result["warnings"] = warnings
    return result, series


def _placement(target: TargetDir, result: dict[str, Any], warnings: list[str]) -> None:
    """The server's cores and round trips per core, and how the traffic reached it."""
    cores, basis = placement.server_cores(target.manifest)
    rate = result.get("roundtrips_per_s")
    result["server_cores"] = cores
    result["server_cores_basis"] = basis
    result["roundtrips_per_s_per_core"] = (
        round(rate / cores, 1) if cores and isinstance(rate, (int, float)) else None
    )
    result["network_paths"] = placement.network_paths(target.manifest)
    result["network_path"] = placement.path_text(result["network_paths"])
    warnings.extend(placement.placement_warnings(target.manifest))


def _merge_step(
    target: TargetDir, workers: list[Worker], step: int, hists: Histograms
) -> dict[str, Any]:
    """One capacity step, merged like the single window (its warnings are the step's own)."""
    mine = steps.only_step(workers, step)
    warnings: list[str] = []
    common = _common_window(mine, warnings)
    figures: dict[str, Any] = {}
    _merge_roundtrips(mine, common, hists, figures, warnings)
    opened, failed = steps.count_open(mine, common)
    return {
        "step": step,
        "connections_planned": steps.planned_count(target, step),
        "window": figures["window"],
        "roundtrips": figures["roundtrips"],
        "roundtrips_per_s": figures["roundtrips_per_s"],
        "latency_ms": figures["latency_ms"],
        "connections": {"open": opened, "failed": failed},
        "server": steps.server_step(server_figures(target, common, warnings)),
        "warnings": warnings,
    }


def _workers(target: TargetDir) -> list[Worker]:
    """Every worker file of every client host, with its measured ticks."""
    return [
        Worker(
            key=f"{host.name}/{series.path.rsplit('/', 1)[-1].removesuffix('.jsonl')}",
            host=host.name,
            series=series,
            measure=[r for r in series.records if r["phase"] == "measure"],
        )
        for host in target.hosts
        for series in host.workers
    ]


def _target_status(target: TargetDir, workers: int, warnings: list[str]) -> dict[str, Any]:
    """The target's identity and how the playbook saw it and its client hosts end."""
    result: dict[str, Any] = {
        "target": target.name,
        "kind": target.manifest.get("kind"),
        "url": target.manifest.get("url"),
        "accelerator": target.manifest.get("accelerator"),
        "docker_proxy": bool(target.manifest.get("docker_proxy")),
        # Only status.json (written by the playbook) knows whether the target came up.
        "status": "unknown",
        "reason": "",
        "hosts": {},
        "workers": workers,
    }
    status = target.status or {}
    if status:
        result["status"] = str(status.get("status", "unknown"))
        result["reason"] = str(status.get("reason") or "")
    if result["status"] == "failed":
        warnings.append(f"target FAILED: {result['reason'] or 'no reason recorded'}")
    host_status = status.get("hosts")
    for name, info in sorted((host_status if isinstance(host_status, dict) else {}).items()):
        # How the playbook saw each client host end (unreachable, killed, non-zero exit).
        if isinstance(info, dict) and info.get("status") not in (None, "ok"):
            message = f": {info['message']}" if info.get("message") else ""
            warnings.append(
                f"client host {name}: {info.get('status')} (ended {info.get('ended', '?')}, "
                f"rc {info.get('rc', '?')}){message}"
            )
    if not workers and result["status"] != "failed":
        result["status"] = "no data" if not status else result["status"]
        warnings.append("no worker files: nothing was measured for this target")
    return result


def _common_window(workers: list[Worker], warnings: list[str]) -> tuple[float, float] | None:
    """The span every worker measured: latest start of a measured window to earliest end."""
    windows = [w.window for w in workers if w.window is not None]
    common: tuple[float, float] | None = None
    if windows:
        start, end = max(w[0] for w in windows), min(w[1] for w in windows)
        if end > start:
            common = (start, end)
        else:
            warnings.append(
                "the workers' measured windows do not overlap (clocks or --start-at not in "
                "sync): no common window; the rate is the sum of each worker's own rate"
            )
        starts = [w[0] for w in windows]
        if max(starts) - min(starts) > WINDOW_SKEW_WARN_S:
            warnings.append(
                f"measured windows start up to {max(starts) - min(starts):.1f} s apart across "
                "workers/hosts: only the common part is counted"
            )
    elif workers:
        phases = sorted({r["phase"] for w in workers for r in w.series.records})
        warnings.append(
            "no measured window: the run ended before it (phases seen: "
            f"{', '.join(phases) or 'none'})"
        )
    return common


def _merge_roundtrips(
    workers: list[Worker],
    common: tuple[float, float] | None,
    hists: Histograms,
    result: dict[str, Any],
    warnings: list[str],
) -> tuple[Any, list[dict[str, Any]]]:
    """Round trips, rate and merged latency inside the window; returns the histogram and ticks."""
    hist = latency.new_histogram()
    selected: list[dict[str, Any]] = []
    outside = 0
    per_worker_rate = 0.0
    for worker in workers:
        chosen = [t for t in worker.measure if in_window(t, common)]
        outside += sum(t["roundtrips"] for t in worker.measure if not in_window(t, common))
        selected.extend(chosen)
        for tick in chosen:
            tick_hist = hists.get(worker.series, tick)
            if tick_hist is not None:
                hist.add(tick_hist)
        if chosen:
            covered = math.fsum(t["interval_s"] for t in chosen)
            per_worker_rate += math.fsum(t["roundtrips"] for t in chosen) / covered
    roundtrips = sum(t["roundtrips"] for t in selected)
    if common is not None:
        rate: float | None = roundtrips / (common[1] - common[0])
    else:
        rate = per_worker_rate if selected else None
    if outside:
        warnings.append(
            f"{outside} round trips measured outside the common window are not counted "
            "(hosts did not measure over the same seconds)"
        )
    result.update(
        {
            "window": None
            if common is None
            else {"start": common[0], "end": common[1], "seconds": round(common[1] - common[0], 3)},
            "roundtrips": roundtrips,
            "roundtrips_per_s": None if rate is None else round(rate, 3),
            "latency_ms": latency_ms(hist, selected),
            "histogram": latency.encode(hist),
        }
    )
    return hist, selected


def _roundtrips_cv(
    workers: list[Worker], common: tuple[float, float] | None, warnings: list[str]
) -> float | None:
    """Coefficient of variation (stdev / mean) of the target's round trips per second over
    the window: the run's own noise. Only seconds that every measuring worker covered count."""
    per_second: dict[int, list[float]] = defaultdict(list)
    measuring = 0
    starts = [w.window[0] for w in workers if w.window is not None]
    # Seconds counted from the window's start: tick middles fall half a second into each.
    origin = common[0] if common is not None else min(starts, default=0.0)
    for worker in workers:
        chosen = [t for t in worker.measure if in_window(t, common)]
        measuring += bool(chosen)
        for tick in chosen:
            second = math.floor(mid(tick) - origin)
            per_second[second].append(tick["roundtrips"] / tick["interval_s"])
    totals = [sum(rates) for rates in per_second.values() if len(rates) == measuring]
    if len(totals) < 2:
        return None
    mean = math.fsum(totals) / len(totals)
    if mean <= 0:
        return None
    stdev = math.sqrt(math.fsum((x - mean) ** 2 for x in totals) / (len(totals) - 1))
    cv = round(stdev / mean, 4)
    if cv > ROUNDTRIPS_CV_WARN:
        warnings.append(
            f"round trips per second varied by {cv:.0%} (stdev / mean over {len(totals)} s, "
            f"above {ROUNDTRIPS_CV_WARN:.0%}): the run was not steady; differences to other "
            "runs smaller than this are noise"
        )
    return cv


def _merge_connections(
    target: TargetDir,
    workers: list[Worker],
    common: tuple[float, float] | None,
    selected: list[dict[str, Any]],
    *,
    planned: int | None,
    result: dict[str, Any],
    warnings: list[str],
) -> None:
    """Connections and errors: cumulative, so the last record of each worker counts. `planned`:
    the connections the window was meant to hold (None: the hosts' --connections)."""
    attempted = failed = dropped = open_end = 0
    errors: dict[str, int] = {}
    for worker in workers:
        if not worker.series.records:
            continue
        last = worker.series.records[-1]
        attempted += last.get("attempted", 0)
        failed += last.get("failed", 0)
        dropped += last.get("dropped", 0)
        add_counts(errors, last.get("errors", {}))
        chosen = [t for t in worker.measure if in_window(t, common)]
        if chosen:
            open_end += chosen[-1].get("open", 0)
    if planned is None:
        planned = sum(
            int(host_params(h).get("connections") or 0) for h in target.hosts if h.workers
        )
    result["connections"] = {
        "planned": planned or None,
        "attempted": attempted,
        "open": open_end,
        "failed": failed,
        "dropped": dropped,
    }
    result["errors"] = dict(sorted(errors.items()))
    if failed:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()) if k != "dropped")
        warnings.append(f"{failed} of {attempted} connection attempts failed ({detail})")
    if dropped:
        warnings.append(f"{dropped} connections dropped by the server after they had opened")
    if planned and selected and open_end < planned:
        warnings.append(f"only {open_end} of {planned} connections were open at the end")
    mismatches = errors.get("echo_mismatch", 0)
    if mismatches:
        warnings.append(f"{mismatches} echoes did not match the message sent")


def _merge_dial_latency(
    workers: list[Worker], problems: list[Problem], result: dict[str, Any]
) -> dict[str, Any]:
    """`connect_ms` and `upgrade_ms`: every tick of every phase (connects happen in the ramp),
    summed like the round-trip histograms. Returns the merged histograms."""
    merged = {"connect": latency.new_histogram(), "upgrade": latency.new_histogram()}
    for worker in workers:
        for tick in worker.series.records:
            for phase, hist in merged.items():
                encoded = tick.get(f"{phase}_histogram")
                if encoded is None:
                    continue
                try:
                    hist.add(latency.decode(encoded))
                except Exception as exc:  # hdrh raises binascii, zlib, struct and value errors
                    problems.append(
                        Problem(
                            worker.series.path,
                            tick["_line"],
                            f"{phase}_histogram does not decode ({type(exc).__name__}): "
                            f"not in {phase}_ms",
                        )
                    )
    for phase, hist in merged.items():
        result[f"{phase}_ms"] = summary_ms(hist, None) if hist.get_total_count() else None
    return merged


def _merge_client(
    target: TargetDir,
    workers: list[Worker],
    hists: Histograms,
    result: dict[str, Any],
    warnings: list[str],
) -> None:
    """The client: CPU of every worker, per-host figures and cross-checks, client-bound flag."""
    client_cpu: dict[str, float] = {}
    client_bound = False
    for worker in workers:
        cpu = [float(t["cpu_percent"]) for t in worker.measure if "cpu_percent" in t]
        client_cpu[worker.key] = round(sustained_cpu(cpu), 1)
        client_bound = client_bound or client_cpu[worker.key] > CLIENT_BOUND_PERCENT
    for host in target.hosts:
        if not host.workers:
            continue  # a sampler-only directory (the test host): not a client host
        result["hosts"][host.name] = _host_figures(host, workers, hists, warnings)
    flagged_by_run = sorted(
        h.name for h in target.hosts if h.workers and h.summary and h.summary.get("client_bound")
    )
    result["client_cpu_percent"] = client_cpu
    result["client_bound"] = client_bound or bool(flagged_by_run)
    if client_bound:
        busiest = max(client_cpu.items(), key=lambda kv: kv[1])
        warnings.append(
            f"CLIENT-BOUND: a client process stayed above {CLIENT_BOUND_PERCENT:.0f}% CPU "
            f"({busiest[0]}: {busiest[1]:.0f}%); the figures measure the client, not the server "
            "(add client processes or hosts)"
        )
    elif flagged_by_run:
        warnings.append(
            f"CLIENT-BOUND according to the run on {', '.join(flagged_by_run)} (its summary.json): "
            "the figures may measure the client, not the server"
        )


def _host_figures(
    host: HostDir, workers: list[Worker], hists: Histograms, warnings: list[str]
) -> dict[str, Any]:
    """One client host on its own, and what its files say about how its run ended."""
    mine = [w for w in workers if w.host == host.name]
    ticks = [t for w in mine for t in w.measure]
    hist = latency.new_histogram()
    for worker in mine:
        for tick in worker.measure:
            tick_hist = hists.get(worker.series, tick)
            if tick_hist is not None:
                hist.add(tick_hist)
    roundtrips = sum(t["roundtrips"] for t in ticks)
    windows = [w.window for w in mine if w.window]
    rate = None
    if windows:
        start, end = max(w[0] for w in windows), min(w[1] for w in windows)
        if end > start:
            rate = round(roundtrips / (end - start), 3)
    last_t = max((w.series.records[-1]["t"] for w in mine if w.series.records), default=None)
    figures: dict[str, Any] = {
        "workers": len(mine),
        "roundtrips": roundtrips,
        "roundtrips_per_s": rate,
        "latency_ms": latency_ms(hist, ticks),
        "failed": sum(w.series.records[-1].get("failed", 0) for w in mine if w.series.records),
        "last_tick": last_t,
        "status": (host.summary or {}).get("status"),
        "sampler": host.sampler is not None,
        # The client host's sockstat in its window (summary.json of its run), when it has one.
        "kernel": (host.summary or {}).get("kernel"),
    }
    for worker in mine:
        end_record = worker.series.end
        last = worker.series.records[-1]["t"] if worker.series.records else None
        when = "" if last is None else f" after its last tick at {_clock(last)}"
        if end_record is None and worker.series.records:
            warnings.append(
                f"host {host.name}: {worker.key} has no end record: the worker or the host "
                f"stopped{when} (crash, kill, or the file was cut); its ticks up to then are used"
            )
        elif end_record is not None and end_record.get("reason") not in (None, "completed"):
            message = end_record.get("message")
            warnings.append(
                f"host {host.name}: {worker.key} ended: {end_record.get('reason')}"
                f"{': ' + str(message) if message else ''}{when}"
            )
    summary = host.summary
    if summary is not None and mine:
        status = summary.get("status")
        if status not in (None, "completed"):
            warnings.append(
                f"host {host.name}: its run ended {status}: {summary.get('message') or '?'}"
            )
        claimed = summary.get("roundtrips")
        if isinstance(claimed, int) and claimed != roundtrips:
            warnings.append(
                f"host {host.name}: summary.json counts {claimed} measured round trips, its "
                f"worker files {roundtrips} (a worker file is incomplete?)"
            )
    return figures


def _clock(epoch: float) -> str:
    import time  # noqa: PLC0415 - only for this message

    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))
