"""The report's outputs besides the plots: summary.csv, report.md and the console table."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from wsswarm.report.side_by_side import HEADLINE_2017, REFERENCE_2017
from wsswarm.report.steps import capacity_markdown

CSV_COLUMNS = [
    "target",
    "source",
    "kind",
    "status",
    "roundtrips",
    "roundtrips_per_s",
    "server_cores",
    "roundtrips_per_s_per_core",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_p999_ms",
    "latency_max_ms",
    "connect_p50_ms",
    "connect_p99_ms",
    "upgrade_p99_ms",
    "connections_planned",
    "connections_attempted",
    "connections_open",
    "connections_failed",
    "connections_dropped",
    "server_cpu_percent_mean",
    "server_cpu_percent_max",
    "server_rss_bytes_max",
    "memory_per_connection_process_bytes",
    "memory_per_connection_kernel_bytes",
    "kernel_tcp_mem_bytes_max",
    "roundtrips_per_s_cv",
    "docker_proxy_cpu_percent",
    "client_bound",
    "accelerator",
    "docker_proxy",
    "network_path",
    "hosts",
    "window_s",
    "warnings",
    "note",
]


def _lat(result: dict[str, Any], key: str) -> Any:
    return (result.get("latency_ms") or {}).get(key)


def csv_text(results: list[dict[str, Any]]) -> str:
    """One row per measured target, then the published 2017 rows (range midpoints, see note)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        server = r.get("server") or {}
        conns = r.get("connections") or {}
        per_conn = r.get("memory_per_connection") or {}
        kernel = server.get("kernel") or {}
        writer.writerow(
            {
                "target": r["target"],
                "source": "measured",
                "kind": r.get("kind") or "",
                "status": r["status"],
                "roundtrips": r.get("roundtrips", ""),
                "roundtrips_per_s": _blank(r.get("roundtrips_per_s")),
                "server_cores": _blank(r.get("server_cores")),
                "roundtrips_per_s_per_core": _blank(r.get("roundtrips_per_s_per_core")),
                "latency_mean_ms": _blank(_lat(r, "mean")),
                "latency_p50_ms": _blank(_lat(r, "p50")),
                "latency_p90_ms": _blank(_lat(r, "p90")),
                "latency_p99_ms": _blank(_lat(r, "p99")),
                "latency_p999_ms": _blank(_lat(r, "p999")),
                "latency_max_ms": _blank(_lat(r, "max")),
                "connect_p50_ms": _blank((r.get("connect_ms") or {}).get("p50")),
                "connect_p99_ms": _blank((r.get("connect_ms") or {}).get("p99")),
                "upgrade_p99_ms": _blank((r.get("upgrade_ms") or {}).get("p99")),
                "connections_planned": _blank(conns.get("planned")),
                "connections_attempted": _blank(conns.get("attempted")),
                "connections_open": _blank(conns.get("open")),
                "connections_failed": _blank(conns.get("failed")),
                "connections_dropped": _blank(conns.get("dropped")),
                "server_cpu_percent_mean": _blank(server.get("cpu_percent_mean")),
                "server_cpu_percent_max": _blank(server.get("cpu_percent_max")),
                "server_rss_bytes_max": _blank(server.get("rss_bytes_max")),
                "memory_per_connection_process_bytes": _blank(per_conn.get("process_bytes")),
                "memory_per_connection_kernel_bytes": _blank(per_conn.get("kernel_bytes")),
                "kernel_tcp_mem_bytes_max": _blank(kernel.get("tcp_mem_bytes_max")),
                "roundtrips_per_s_cv": _blank(r.get("roundtrips_per_s_cv")),
                "docker_proxy_cpu_percent": _blank(server.get("docker_proxy_cpu_percent")),
                "client_bound": str(bool(r.get("client_bound"))).lower(),
                "accelerator": r.get("accelerator") or "",
                "docker_proxy": str(bool(r.get("docker_proxy"))).lower(),
                "network_path": r.get("network_path") or "",
                "hosts": " ".join(sorted(r.get("hosts") or {})),
                "window_s": _blank((r.get("window") or {}).get("seconds")),
                "warnings": len(r.get("warnings") or []),
                "note": r.get("reason") or "",
            }
        )
    for ref in REFERENCE_2017:
        lo, hi = ref["roundtrips_per_s"]
        llo, lhi = ref["latency_ms"]
        writer.writerow(
            {
                "target": ref["target"],
                "source": "published 2017",
                "kind": ref["kind"],
                "status": "reference",
                "roundtrips_per_s": (lo + hi) / 2,
                "server_cores": 1,
                "roundtrips_per_s_per_core": (lo + hi) / 2,
                "latency_mean_ms": (llo + lhi) / 2,
                "connections_planned": 10000,
                "server_rss_bytes_max": ref["memory_mb"] * 1_000_000,
                "client_bound": "",
                "docker_proxy": str(ref["kind"] == "container").lower(),
                "note": f"range {lo}-{hi} round-trips/s, {llo}-{lhi} ms; {ref['note']}",
            }
        )
    return out.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.0f}"


def _per_conn(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    process = f"{figures['process_bytes'] / 1e3:.1f}"
    kernel = figures.get("kernel_bytes")
    return process if kernel is None else f"{process}+{kernel / 1e3:.1f}"


def _cv(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _open(r: dict[str, Any]) -> str:
    conns = r.get("connections") or {}
    planned = conns.get("planned")
    opened = conns.get("open")
    if opened is None:
        return "-"
    return f"{opened:,}" if not planned else f"{opened:,} / {planned:,}"


TABLE_HEAD = [
    "target",
    "status",
    "round-trips/s",
    "rt/s per core",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "connect p99 ms",
    "open / planned",
    "failed",
    "server CPU %",
    "server MB",
    "KB/conn proc+kernel",
    "rt/s CV",
    "warnings",
]


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        server = r.get("server") or {}
        rows.append(
            [
                r["target"],
                r["status"],
                _num(r.get("roundtrips_per_s")),
                _num(r.get("roundtrips_per_s_per_core")),
                _ms(_lat(r, "mean")),
                _ms(_lat(r, "p50")),
                _ms(_lat(r, "p99")),
                _ms(_lat(r, "p999")),
                _ms(_lat(r, "max")),
                _ms((r.get("connect_ms") or {}).get("p99")),
                _open(r),
                _num((r.get("connections") or {}).get("failed")),
                _num(server.get("cpu_percent_mean")),
                _mb(server.get("rss_bytes_max")),
                _per_conn(r.get("memory_per_connection")),
                _cv(r.get("roundtrips_per_s_cv")),
                str(len(r.get("warnings") or [])),
            ]
        )
    for ref in REFERENCE_2017:
        lo, hi = ref["roundtrips_per_s"]
        llo, lhi = ref["latency_ms"]
        rows.append(
            [
                f"{ref['target']} (published)",
                "reference",
                f"{lo:,}-{hi:,}",
                f"{lo:,}-{hi:,}",
                f"{llo}-{lhi}",
                "-",
                "-",
                "-",
                "-",
                "-",
                "10,000",
                "~6" if ref["kind"] == "vm" else "?",
                "-",
                str(ref["memory_mb"]),
                f"{ref['memory_mb'] * 1e3 / 10_000:.1f}",
                "-",
                "",
            ]
        )
    return rows


def console_table(results: list[dict[str, Any]]) -> str:
    """Fixed-width table for a terminal or an Ansible log."""
    rows = [TABLE_HEAD, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEAD))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def testhost_text(host: dict[str, Any]) -> str:
    """The test host's CPU facts of the manifest in one line."""
    smt = host.get("smt") or {}
    irqbalance = host.get("irqbalance")
    vhost = host.get("vhost_net")
    parts = [
        f"CPU {host.get('cpu_model') or '?'}",
        f"CPUs online {host.get('cpus_online') or '?'}",
        f"governor {host.get('cpu_governor') or 'none (no cpufreq)'}",
        f"SMT {smt.get('control') or '?'} (active: {smt.get('active') or '?'})",
        "irqbalance " + ("?" if irqbalance is None else "running" if irqbalance else "not running"),
        "vhost-net " + ("?" if vhost is None else "present" if vhost else "absent"),
    ]
    return ", ".join(parts)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    """report.md: warnings first, the side-by-side table, the comparisons, plots, details."""
    results: list[dict[str, Any]] = list(summary["targets"].values())
    manifest = summary.get("manifest") or {}
    out = [f"# echolab report: {summary['run_id']}\n"]
    facts = [f"generated by {summary['tool']}"]
    for key in ("commit", "profile", "started"):
        if manifest.get(key) is not None:
            facts.append(f"{key} `{manifest[key]}`")
    out.append("; ".join(facts) + ".\n")

    out.append("## Warnings\n")
    warnings = [(r["target"], w) for r in results for w in r.get("warnings") or []]
    warnings += [("input", w) for w in summary.get("warnings") or []]
    if summary["problems"]:
        warnings.append(
            ("input", f"{len(summary['problems'])} problem(s) in the input files (see the end)")
        )
    if warnings:
        out += [f"- **{target}**: {text}" for target, text in warnings]
        out.append("")
    else:
        out.append("None: every target measured cleanly.\n")

    out.append("## Results\n")
    out.append(md_table(TABLE_HEAD, table_rows(results)))
    out.append(
        "Round-trips/s are counted over the common measured window of all client processes "
        "(after the ramp and the warm-up); latencies cover every round trip in that window "
        "(HdrHistogram, merged exactly across processes and hosts). Server CPU is the mean over "
        "the window (100 = one core, docker-proxy included), server memory the maximum. "
        "KB/conn is that memory per open connection, plus the kernel's TCP socket buffers per "
        "socket (sockstat, a kernel-wide average; a VM's guest kernel is inside its memory). "
        "rt/s per core divides the round trips by the cores the server had (the VM's vCPUs, the "
        "container's cpuset or CPU quota; the node.js baseline is one process, so one core). "
        "rt/s CV is the coefficient of variation of the per-second round trips: the run's own "
        "noise. The "
        "2017 rows are the published figures at 10,000 connections: their latency is an "
        "unweighted mean of per-process means, their memory was read by hand from top; "
        "their servers were single-threaded, one core each.\n"
    )
    testhost = manifest.get("testhost")
    if testhost:
        out.append(f"Test host: {testhost_text(testhost)}.\n")

    gated = [(r["target"], o) for r in results for o in r.get("slo") or []]
    if gated:
        out.append("## SLO\n")
        rows = [
            [
                target,
                f"`{o['expr']}`",
                "-" if o["value"] is None else f"{o['value']:g}",
                "pass" if o["passed"] else "**FAIL**",
            ]
            for target, o in gated
        ]
        out.append(md_table(["target", "SLO", "value", "result"], rows))
    out += capacity_markdown(results)
    out.append("## Side by side\n")
    if summary["comparisons"]:
        for pair in summary["comparisons"]:
            caveat = " (caution: see the warnings of these targets)" if pair["caveat"] else ""
            out.append(f"- {pair['sentence']}{caveat}")
    else:
        out.append("- fewer than two targets with measured figures: nothing to compare")
    out.append(f"- 2017, published: IncludeOS in a QEMU VM vs node.js in Docker: {HEADLINE_2017}")
    out.append("")

    if plots:
        out.append("## Plots\n")
        for title, name in plots:
            out.append(f"![{title}]({name})\n")

    out.append("## Per target\n")
    for r in results:
        out.append(f"### {r['target']}\n")
        facts = [f"kind {r.get('kind') or '?'}", f"status {r['status']}"]
        if r.get("reason"):
            facts.append(f"reason: {r['reason']}")
        if r.get("url"):
            facts.append(f"url `{r['url']}`")
        if r.get("accelerator"):
            facts.append(f"accelerator {r['accelerator']}")
        if r.get("server_cores_basis"):
            facts.append(f"server cores: {r['server_cores_basis']}")
        if r.get("network_path"):
            facts.append(f"network path: {r['network_path']}")
        window = r.get("window")
        if window:
            facts.append(f"measured window {window['seconds']:.1f} s")
        out.append(", ".join(facts) + ".\n")
        hosts = r.get("hosts") or {}
        if hosts:
            rows = [
                [
                    name,
                    str(h["workers"]),
                    _num(h.get("roundtrips_per_s")),
                    _ms((h.get("latency_ms") or {}).get("p99")),
                    _num(h.get("failed")),
                    str(h.get("status") or "-"),
                    "yes" if h.get("sampler") else "",
                    _mb((h.get("kernel") or {}).get("tcp_mem_bytes_max")),
                ]
                for name, h in sorted(hosts.items())
            ]
            out.append(
                md_table(
                    [
                        "host",
                        "workers",
                        "round-trips/s",
                        "p99 ms",
                        "failed",
                        "run",
                        "sampler",
                        "kernel TCP MB",
                    ],
                    rows,
                )
            )
        if r.get("errors"):
            out.append(
                "Errors by kind: "
                + ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
                + ".\n"
            )
        cpu = r.get("client_cpu_percent") or {}
        if cpu:
            out.append(
                "Client CPU (sustained, % of one core): "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items()))
                + ".\n"
            )
        server = r.get("server")
        if server and server.get("components"):
            out.append(f"Server ({'; '.join(server['what'])}, {server['scope']}):\n")
            rows = [
                [name, _num(c.get("cpu_percent_mean")), _mb(c.get("rss_bytes_max"))]
                for name, c in server["components"].items()
            ]
            out.append(md_table(["component", "CPU % (mean)", "memory MB (max)"], rows))

    out.append("## Input problems\n")
    if summary["problems"]:
        out += [f"- `{p['where']}`: {p['message']}" for p in summary["problems"]]
        out.append("")
    else:
        out.append("None: every file was read completely.\n")

    if manifest.get("parameters") is not None:
        out.append("## Parameters\n")
        out.append("```json\n" + json.dumps(manifest["parameters"], indent=2) + "\n```\n")
    return "\n".join(out)
