"""Side by side: every pair of measured targets in the words of the 2017 write-up."""

from __future__ import annotations

from typing import Any

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
