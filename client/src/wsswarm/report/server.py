"""The server side of a target: its sampler files merged, memory per connection, its path."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from wsswarm.report.load import TargetDir
from wsswarm.report.placement import PATH_DOCKER_PROXY


def memory_per_connection(result: dict[str, Any]) -> dict[str, int | None] | None:
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


def server_path_warnings(target: TargetDir, result: dict[str, Any], warnings: list[str]) -> None:
    """What stood between the clients and the server: TCG emulation, docker-proxy, or a
    container path without docker-proxy (unlike 2017's). When the manifest says where the
    clients were (result["network_paths"]), docker-proxy counts only if it carried some client
    host's connections (remote clients go through DNAT instead)."""
    if target.manifest.get("accelerator") == "tcg":
        warnings.append(
            "VM without hardware acceleration (TCG emulation): its figures are far below what "
            "the same VM does under KVM and not comparable to 2017"
        )
    proxies = result["server"].get("docker_proxy_cpu_percent") if result["server"] else None
    paths = result.get("network_paths") or {}
    if paths:
        proxied = sorted(host for host, path in paths.items() if path == PATH_DOCKER_PROXY)
        result["docker_proxy"] = bool(proxied)
        which = "every byte" if len(proxied) == len(paths) else f"{', '.join(proxied)}'s bytes"
    else:
        result["docker_proxy"] = result["docker_proxy"] or proxies is not None
        which = "every byte"
    if result["docker_proxy"]:
        cost = "" if proxies is None else f" (it used {proxies:.0f}% CPU on its own)"
        warnings.append(
            f"docker-proxy (userland proxy) was in the path of {which}"
            f'{cost}; `"userland-proxy": false` in daemon.json removes it'
        )
    elif target.manifest.get("kind") in ("container", "baseline") and (
        paths or target.manifest.get("docker_proxy") is False
    ):
        here = result.get("network_path")
        warnings.append(
            "no docker-proxy in the path"
            + (" (userland proxy off, or host networking)" if not here else "")
            + ", unlike 2017, where docker-proxy carried every byte of the node.js container"
            + (f"; here: {here}" if here else "")
        )


def server_figures(
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
