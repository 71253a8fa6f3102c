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
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from wsswarm import latency
from wsswarm.formats import CLIENT_BOUND_PERCENT, sustained_cpu
from wsswarm.report.hist import summary_ms, values_at_percentiles
from wsswarm.report.load import HostDir, Problem, Series, TargetDir

# Hosts whose measured windows start further apart than this were not started together.
WINDOW_SKEW_WARN_S = 1.5
# Per-second round trips that vary more than this (stdev / mean) over the window: not steady.
ROUNDTRIPS_CV_WARN = 0.15
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


@dataclass
class _Worker:
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


def _mid(tick: dict[str, Any]) -> float:
    return float(tick["t"] - tick["interval_s"] / 2)


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        total[kind] = total.get(kind, 0) + count


class _Histograms:
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


def _host_params(host: HostDir) -> dict[str, Any]:
    if host.summary and isinstance(host.summary.get("params"), dict):
        return dict(host.summary["params"])
    for worker in host.workers:
        if worker.start and isinstance(worker.start.get("params"), dict):
            return dict(worker.start["params"])
    return {}


def _latency_ms(hist: Any, ticks: list[dict[str, Any]]) -> dict[str, float] | None:
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


def analyse_target(target: TargetDir, problems: list[Problem]) -> tuple[dict[str, Any], TimeSeries]:
    """Merged figures of one target (a JSON-able dict) and its per-second series."""
    hists = _Histograms(problems)
    warnings: list[str] = []
    workers = _workers(target)
    result = _target_status(target, len(workers), warnings)
    common = _common_window(workers, warnings)
    hist, selected = _merge_roundtrips(workers, common, hists, result, warnings)
    result["roundtrips_per_s_cv"] = _roundtrips_cv(workers, common, warnings)
    _merge_connections(target, workers, common, selected, result=result, warnings=warnings)
    dial_hists = _merge_dial_latency(workers, problems, result)
    _merge_client(target, workers, hists, result, warnings)
    result["server"] = _server_figures(target, common, warnings)
    result["memory_per_connection"] = _memory_per_connection(result)
    _server_path_warnings(target, result, warnings)
    series = TimeSeries()
    _fill_series(series, target, workers, common, hists)
    series.distribution = _distribution(hist)
    series.connect_distribution = _distribution(dial_hists["connect"])
    series.upgrade_distribution = _distribution(dial_hists["upgrade"])
    result["warnings"] = warnings
    return result, series


def _workers(target: TargetDir) -> list[_Worker]:
    """Every worker file of every client host, with its measured ticks."""
    return [
        _Worker(
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


def _common_window(workers: list[_Worker], warnings: list[str]) -> tuple[float, float] | None:
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


def _in_window(tick: dict[str, Any], common: tuple[float, float] | None) -> bool:
    if common is None:
        return True  # no common window: every measured tick counts (per-worker rates)
    return common[0] <= _mid(tick) <= common[1]


def _merge_roundtrips(
    workers: list[_Worker],
    common: tuple[float, float] | None,
    hists: _Histograms,
    result: dict[str, Any],
    warnings: list[str],
) -> tuple[Any, list[dict[str, Any]]]:
    """Round trips, rate and merged latency inside the window; returns the histogram and ticks."""
    hist = latency.new_histogram()
    selected: list[dict[str, Any]] = []
    outside = 0
    per_worker_rate = 0.0
    for worker in workers:
        chosen = [t for t in worker.measure if _in_window(t, common)]
        outside += sum(t["roundtrips"] for t in worker.measure if not _in_window(t, common))
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
            "latency_ms": _latency_ms(hist, selected),
            "histogram": latency.encode(hist),
        }
    )
    return hist, selected


def _roundtrips_cv(
    workers: list[_Worker], common: tuple[float, float] | None, warnings: list[str]
) -> float | None:
    """Coefficient of variation (stdev / mean) of the target's round trips per second over
    the window: the run's own noise. Only seconds that every measuring worker covered count."""
    per_second: dict[int, list[float]] = defaultdict(list)
    measuring = 0
    for worker in workers:
        chosen = [t for t in worker.measure if _in_window(t, common)]
        measuring += bool(chosen)
        for tick in chosen:
            per_second[round(tick["t"])].append(tick["roundtrips"] / tick["interval_s"])
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


def _memory_per_connection(result: dict[str, Any]) -> dict[str, int | None] | None:
    """Server memory per open connection: the process's (or cgroup's) share plus the kernel's
    TCP socket buffers per socket (kernel-wide average, from sockstat)."""
    server = result.get("server") or {}
    opened = (result.get("connections") or {}).get("open")
    if not opened or server.get("rss_bytes_max") is None:
        return None
    process = round(server["rss_bytes_max"] / opened)
    kernel = (server.get("kernel") or {}).get("tcp_mem_bytes_per_socket")
    return {
        "process_bytes": process,
        "kernel_bytes": kernel,
        "total_bytes": None if kernel is None else process + kernel,
    }


def _merge_connections(
    target: TargetDir,
    workers: list[_Worker],
    common: tuple[float, float] | None,
    selected: list[dict[str, Any]],
    *,
    result: dict[str, Any],
    warnings: list[str],
) -> None:
    """Connections and errors: cumulative, so the last record of each worker counts."""
    attempted = failed = dropped = open_end = 0
    errors: dict[str, int] = {}
    for worker in workers:
        if not worker.series.records:
            continue
        last = worker.series.records[-1]
        attempted += last.get("attempted", 0)
        failed += last.get("failed", 0)
        dropped += last.get("dropped", 0)
        _add_counts(errors, last.get("errors", {}))
        chosen = [t for t in worker.measure if _in_window(t, common)]
        if chosen:
            open_end += chosen[-1].get("open", 0)
    planned = sum(int(_host_params(h).get("connections") or 0) for h in target.hosts if h.workers)
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
    workers: list[_Worker], problems: list[Problem], result: dict[str, Any]
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
    workers: list[_Worker],
    hists: _Histograms,
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


def _server_path_warnings(target: TargetDir, result: dict[str, Any], warnings: list[str]) -> None:
    """What stood between the clients and the server: TCG emulation, docker-proxy."""
    if target.manifest.get("accelerator") == "tcg":
        warnings.append(
            "VM without hardware acceleration (TCG emulation): its figures are far below what "
            "the same VM does under KVM and not comparable to 2017"
        )
    proxies = result["server"].get("docker_proxy_cpu_percent") if result["server"] else None
    if result["docker_proxy"] or proxies is not None:
        result["docker_proxy"] = True
        cost = "" if proxies is None else f" (it used {proxies:.0f}% CPU on its own)"
        warnings.append(
            "docker-proxy (userland proxy) was in the path of every byte"
            f'{cost}; `"userland-proxy": false` in daemon.json removes it'
        )


def _distribution(hist: Any) -> list[tuple[float, float]]:
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


def _host_figures(
    host: HostDir, workers: list[_Worker], hists: _Histograms, warnings: list[str]
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
        "latency_ms": _latency_ms(hist, ticks),
        "failed": sum(w.series.records[-1].get("failed", 0) for w in mine if w.series.records),
        "last_tick": last_t,
        "status": (host.summary or {}).get("status"),
        "sampler": host.sampler is not None,
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


def _server_figures(
    target: TargetDir,
    common: tuple[float, float] | None,
    warnings: list[str],
) -> dict[str, Any] | None:
    samplers = [(h.name, h.sampler) for h in target.hosts if h.sampler is not None]
    if not samplers:
        if target.hosts:
            warnings.append("no server-side sample: server CPU and memory unknown")
        return None
    if len(samplers) > 1:
        warnings.append(
            f"{len(samplers)} sampler files ({', '.join(n for n, _ in samplers)}): their figures "
            "are added (several servers of one target?)"
        )
    in_window: list[dict[str, Any]] = []
    everything: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    whats = []
    for host, sampler in samplers:
        start = sampler.start or {}
        whats.append(f"{start.get('kind', '?')} {start.get('what', '?')} on {host}")
        everything.extend(sampler.records)
        if common is not None:
            in_window.extend(
                r
                for r in sampler.records
                if common[0] <= r["t"] - r.get("interval_s", 1) / 2
                and r["t"] - r.get("interval_s", 1) / 2 <= common[1]
            )
        for record in sampler.records:
            errors.update(record.get("errors") or {})
        if sampler.end is None and sampler.records:
            warnings.append(
                f"sampler {sampler.path} has no end record (killed rather than stopped?)"
            )
    records = in_window
    scope = "measured window"
    if common is None or not in_window:
        if common is not None and everything:
            warnings.append(
                "the sampler has no sample inside the measured window: server figures are "
                "over everything it sampled"
            )
        records, scope = everything, "all samples"
    if errors:
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())[:3])
        warnings.append(f"the sampler could not read everything: {shown}")
    if not records:
        warnings.append("the sampler file holds no sample")
        return {"what": whats, "samples": 0}
    weights = [float(r.get("interval_s", 1.0)) for r in records]
    total_w = math.fsum(weights)
    components: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: {"cpu": [], "rss": []}
    )
    for record, weight in zip(records, weights, strict=True):
        for name, comp in (record.get("components") or {}).items():
            if not isinstance(comp, dict):
                continue
            if isinstance(comp.get("cpu_percent"), (int, float)):
                components[name]["cpu"].append((float(comp["cpu_percent"]), weight))
            if isinstance(comp.get("rss_bytes"), int):
                components[name]["rss"].append((float(comp["rss_bytes"]), weight))
    comp_figures = {}
    proxy_cpu = None
    for name, values in sorted(components.items()):
        cpu_w = math.fsum(w for _, w in values["cpu"])
        figures = {
            "cpu_percent_mean": round(math.fsum(c * w for c, w in values["cpu"]) / cpu_w, 2)
            if cpu_w
            else None,
            "rss_bytes_max": int(max((r for r, _ in values["rss"]), default=0)),
        }
        comp_figures[name] = figures
        if name.startswith("docker-proxy[") and figures["cpu_percent_mean"] is not None:
            proxy_cpu = (proxy_cpu or 0.0) + figures["cpu_percent_mean"]
    return {
        "what": whats,
        "scope": scope,
        "samples": len(records),
        "kernel": _kernel_figures(records),
        "cpu_percent_mean": round(
            math.fsum(r["cpu_percent"] * w for r, w in zip(records, weights, strict=True))
            / total_w,
            2,
        ),
        "cpu_percent_max": max(r["cpu_percent"] for r in records),
        "rss_bytes_max": max(r["rss_bytes"] for r in records),
        "rss_bytes_mean": int(
            math.fsum(r["rss_bytes"] * w for r, w in zip(records, weights, strict=True)) / total_w
        ),
        "docker_proxy_cpu_percent": None if proxy_cpu is None else round(proxy_cpu, 2),
        "components": comp_figures,
    }


def _kernel_figures(records: list[dict[str, Any]]) -> dict[str, int | None] | None:
    """TCP socket figures of the samples: the namespace's sockets, the kernel's TCP memory at
    its peak and per TCP socket there (sockstat's memory is counted for the whole kernel)."""
    readings = [r["kernel"] for r in records if "kernel" in r]
    if not readings:
        return None
    peak = max(readings, key=lambda k: int(k["tcp_mem_bytes"]))
    alloc = int(peak["tcp_alloc"])
    return {
        "tcp_inuse_max": max(int(k["tcp_inuse"]) for k in readings),
        "tcp_mem_bytes_max": int(peak["tcp_mem_bytes"]),
        "tcp_alloc_at_max": alloc,
        "tcp_mem_bytes_per_socket": round(int(peak["tcp_mem_bytes"]) / alloc) if alloc else None,
    }


def _fill_series(
    series: TimeSeries,
    target: TargetDir,
    workers: list[_Worker],
    common: tuple[float, float] | None,
    hists: _Histograms,
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


def _clock(epoch: float) -> str:
    import time  # noqa: PLC0415 - only for this message

    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))


# ---- side by side -------------------------------------------------------------------------

# Published in 2017 at 10,000 connections (shared/reference/original-experiment.md).
REFERENCE_2017: list[dict[str, Any]] = [
    {
        "target": "2017 IncludeOS in QEMU VM",
        "kind": "vm",
        "roundtrips_per_s": (110_000, 115_000),
        "latency_ms": (75, 115),
        "memory_mb": 155,
        "note": "whole VM; ~6 of 10,000 connections refused during the ramp",
    },
    {
        "target": "2017 node.js + ws in Docker",
        "kind": "container",
        "roundtrips_per_s": (30_000, 35_000),
        "latency_ms": (280, 310),
        "memory_mb": 180,
        "note": "node process only; docker-proxy pegged a second CPU",
    },
]
HEADLINE_2017 = "3x the round-trips/s, 2.5x lower latency, 14% less memory"


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of measured targets, the faster first: ratios as the 2017 write-up put them."""
    usable = [
        r
        for r in results
        if r.get("roundtrips_per_s") and r.get("latency_ms") and r["status"] != "failed"
    ]
    pairs = []
    for i, a in enumerate(usable):
        for b in usable[i + 1 :]:
            fast, slow = (a, b) if a["roundtrips_per_s"] >= b["roundtrips_per_s"] else (b, a)
            pairs.append(_ratio(fast, slow))
    return pairs


def _ratio(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    rt_ratio = fast["roundtrips_per_s"] / slow["roundtrips_per_s"]
    lat_ratio = slow["latency_ms"]["mean"] / fast["latency_ms"]["mean"]
    p99_ratio = slow["latency_ms"]["p99"] / fast["latency_ms"]["p99"]
    parts = [f"{rt_ratio:.1f}x the round-trips/s"]
    parts.append(
        f"{lat_ratio:.1f}x lower latency"
        if lat_ratio >= 1
        else f"{1 / lat_ratio:.1f}x higher latency"
    )
    mem_change = None
    fast_mem = (fast.get("server") or {}).get("rss_bytes_max")
    slow_mem = (slow.get("server") or {}).get("rss_bytes_max")
    if fast_mem and slow_mem:
        mem_change = fast_mem / slow_mem - 1
        parts.append(
            f"{-mem_change:.0%} less memory" if mem_change <= 0 else f"{mem_change:.0%} more memory"
        )
    caveats = [
        name
        for name, r in (("fast", fast), ("slow", slow))
        if r.get("client_bound") or r.get("accelerator") == "tcg"
    ]
    return {
        "faster": fast["target"],
        "slower": slow["target"],
        "roundtrips_ratio": round(rt_ratio, 3),
        "mean_latency_ratio": round(lat_ratio, 3),
        "p99_latency_ratio": round(p99_ratio, 3),
        "memory_change": None if mem_change is None else round(mem_change, 4),
        "sentence": f"{fast['target']} vs {slow['target']}: " + ", ".join(parts),
        "caveat": bool(caveats),
    }
