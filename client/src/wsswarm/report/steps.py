"""Capacity steps of a target (`wsswarm run --steps`): per step, the same merge as the window.

Each step's measured ticks (the ticks carry their `step`) are merged exactly like the run's
single window: the common window of all workers, the round trips inside it, the HDR sum of
their histograms, the open connections at its end, and the sampler's server figures over it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wsswarm import slo
from wsswarm.report.load import TargetDir
from wsswarm.report.side_by_side import REFERENCE_2017
from wsswarm.report.ticks import Worker, host_params, in_window


def step_numbers(workers: list[Worker]) -> list[int]:
    """The steps measured by any worker (empty: not a --steps run)."""
    return sorted({int(t["step"]) for w in workers for t in w.measure if "step" in t})


def only_step(workers: list[Worker], step: int) -> list[Worker]:
    """The workers with only that step's measured ticks."""
    return [
        dataclasses.replace(w, measure=[t for t in w.measure if t.get("step") == step])
        for w in workers
    ]


def planned_count(target: TargetDir, step: int) -> int | None:
    """The step's connections over all client hosts (each host's own --steps)."""
    counts = []
    for host in target.hosts:
        steps = host_params(host).get("steps") if host.workers else None
        if isinstance(steps, list) and len(steps) >= step:
            counts.append(int(steps[step - 1]))
    return sum(counts) or None


def p99_limit(target: TargetDir, given_ms: float | None) -> float | None:
    """The p99 limit of the capacity figure: the report's option, else the run's --stop-when
    `p99>X` (or `p99>=X`) of any client host."""
    if given_ms is not None:
        return given_ms
    for host in target.hosts:
        for expr in host_params(host).get("stop_when") or []:
            cond = slo.parse(str(expr))
            if cond.metric == "p99" and cond.op in (">", ">="):
                return cond.threshold
    return None


def largest_within(steps: list[dict[str, Any]], limit_ms: float | None) -> int | None:
    """The most open connections of a step, up to the first step whose p99 is over the limit."""
    if limit_ms is None:
        return None
    best = None
    for step in steps:
        p99 = (step.get("latency_ms") or {}).get("p99")
        if p99 is None or p99 > limit_ms:
            break
        best = step["connections"]["open"]
    return best


def count_open(workers: list[Worker], common: tuple[float, float] | None) -> tuple[int, int]:
    """Open connections at the end of the window and failed attempts until then."""
    opened = failed = 0
    for worker in workers:
        chosen = [t for t in worker.measure if in_window(t, common)]
        if chosen:
            opened += chosen[-1].get("open", 0)
            failed += chosen[-1].get("failed", 0)
    return opened, failed


def server_step(server: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sampler's figures of a step that the capacity table shows."""
    if not server or not server.get("samples"):
        return None
    return {
        "cpu_percent_mean": server.get("cpu_percent_mean"),
        "rss_bytes_max": server.get("rss_bytes_max"),
        "scope": server.get("scope"),
    }


CAPACITY_PLOT = ("Capacity steps", "capacity.png")


def write_capacity_plot(out_dir: Path, results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """p99 (top) and round-trips/s (bottom) against open connections, one line per target
    with steps, the published 2017 points (10,000 connections) marked; [] without steps."""
    stepped = [r for r in results if r.get("steps")]
    if not stepped:
        return []
    import matplotlib  # noqa: PLC0415 - only the controller has it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.75, top=0.95, bottom=0.07, hspace=0.3)
    for result in stepped:
        points = [s for s in result["steps"] if s["latency_ms"] is not None]
        xs = [s["connections"]["open"] for s in points]
        top.plot(xs, [s["latency_ms"]["p99"] for s in points], marker="o", label=result["target"])
        bottom.plot(xs, [s["roundtrips_per_s"] for s in points], marker="o", label=result["target"])
    for ref, marker in zip(REFERENCE_2017, ("s", "^"), strict=False):
        low, high = ref["latency_ms"]
        top.plot([10_000], [(low + high) / 2], marker=marker, color="black", linestyle="none",
                 label=ref["target"])  # fmt: skip
        low, high = ref["roundtrips_per_s"]
        bottom.plot([10_000], [(low + high) / 2], marker=marker, color="black",
                    linestyle="none", label=ref["target"])  # fmt: skip
    top.set_title("p99 latency per step (2017: published mean latency, its only figure)")
    top.set_yscale("log")
    top.set_ylabel("ms")
    bottom.set_title("Round-trips per second per step")
    bottom.set_ylabel("round-trips/s")
    bottom.set_ylim(bottom=0)
    for ax in (top, bottom):
        ax.set_xlabel("open connections at the end of the step")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.savefig(out_dir / CAPACITY_PLOT[1])
    plt.close(fig)
    return [CAPACITY_PLOT]


def capacity_markdown(results: list[dict[str, Any]]) -> list[str]:
    """report.md's capacity section: per target its steps and its largest count within the
    p99 limit; [] when no target has steps."""
    out: list[str] = []
    for result in results:
        if not result.get("steps"):
            continue
        if not out:
            out.append("## Capacity steps\n")
        capacity = result.get("capacity") or {}
        limit = capacity.get("p99_limit_ms")
        largest = capacity.get("largest_open_within_limit")
        if limit is None:
            verdict = "no p99 limit given (--p99-limit, or the run's --stop-when p99>X)"
        elif largest is None:
            verdict = f"p99 over {limit:g} ms from the first step"
        else:
            verdict = f"largest count with p99 within {limit:g} ms: **{largest}** open connections"
        out.append(f"### {result['target']}: {verdict}\n")
        rows = []
        for step in result["steps"]:
            lat = step.get("latency_ms") or {}
            server = step.get("server") or {}
            rss = server.get("rss_bytes_max")
            rows.append(
                [
                    str(step["step"]),
                    str(step.get("connections_planned") or "-"),
                    str(step["connections"]["open"]),
                    str(step["connections"]["failed"]),
                    "-" if step["roundtrips_per_s"] is None else f"{step['roundtrips_per_s']:,.0f}",
                    "-" if lat.get("p50") is None else f"{lat['p50']:g}",
                    "-" if lat.get("p99") is None else f"{lat['p99']:g}",
                    "-" if server.get("cpu_percent_mean") is None
                    else f"{server['cpu_percent_mean']:g}",
                    "-" if rss is None else f"{rss / 1e6:.1f}",
                ]
            )  # fmt: skip
        head = ["step", "planned", "open", "failed", "rt/s", "p50 ms", "p99 ms", "server CPU %",
                "server MB"]  # fmt: skip
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return out
