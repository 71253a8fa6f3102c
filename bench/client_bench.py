"""Client benchmark: one `wsswarm run` process against the 2017 node.js client, one core each.

A fast echo server runs alone on CPU 0; each client runs alone on CPU 1 with one worker and
drives it at each connection count: the 2017 client, wsswarm on its compiled hot path
(`wsswarm`) and on its Python one (`wsswarm-python`). One table: round-trips/s, latency, client
CPU, round-trips per client-core-second, client memory per connection, and the ratios to the
2017 client. See bench/README.md.

    .venv/bin/python bench/client_bench.py [--connections 1000,10000] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from _benchlib import (
    CLIENT_CPU,
    DEFAULT_NICE,
    NODE_WS_VERSION,
    SERVER_CPU,
    BenchError,
    Load,
    LoadResult,
    Matrix,
    Node2017Driver,
    TreeSampler,
    WsswarmDriver,
    begin,
    check_machine,
    ensure_node_ws,
    parse_int_list,
    ratio,
    run_driver,
    run_matrix,
    serving,
    table,
)

CLIENTS = ("node-2017", "wsswarm", "wsswarm-python")
# wsswarm run --hot-path of each wsswarm row.
HOT_PATHS = {"wsswarm": "compiled", "wsswarm-python": "python"}
REFERENCE = "node-2017"
SERVERS = ("wsecho-picows", "node-ws")


@dataclass
class Row:
    client: str
    connections: int
    load: LoadResult | None = None
    client_cpu: float | None = None  # fraction of one core, whole client process tree
    client_rss: int | None = None  # max in the window, whole tree
    per_conn: float | None = None  # bytes per open connection, connection-holding process(es)
    server_cpu: float | None = None
    error: str | None = None

    @property
    def per_core(self) -> float | None:
        if self.load is None or not self.client_cpu:
            return None
        return self.load.roundtrips_per_s / self.client_cpu


def wsswarm_per_connection(out: Path, sampler: TreeSampler, result: LoadResult) -> float | None:
    """(RSS at N open - RSS before the first connection) / N, over wsswarm's worker processes."""
    grown, opened = 0, 0
    for path in sorted(out.glob("worker-*.jsonl")):
        with path.open() as f:
            start_record = json.loads(f.readline())
        pid, t_start = int(start_record["pid"]), float(start_record["t"])
        # The worker's own reading at its start record (exact); the sampler's last reading
        # before it only for files written before wsswarm recorded it.
        before = start_record.get("rss_bytes") or sampler.rss_of(pid, t_start)
        at_n = sampler.max_rss_of(pid, result.measure_started, result.measure_ended)
        if before is None or at_n is None:
            return None
        grown += at_n - before
    opened = result.open
    return grown / opened if opened else None


def check_hot_path(out: Path, wanted: str) -> None:
    """Every worker ran the hot path asked for (its start record says which)."""
    for path in sorted(out.glob("worker-*.jsonl")):
        with path.open() as f:
            ran = json.loads(f.readline()).get("hot_path")
        if ran != wanted:
            raise BenchError(f"{path.name} ran hot path {ran!r}, not {wanted!r}")


def measure(client: str, load: Load, server_name: str, work: Path) -> Row:
    row = Row(client, load.connections)
    out = work / f"{client}-{load.connections}"
    out.mkdir(parents=True)
    try:
        with serving(server_name, out) as (server, port):
            load.url = f"ws://127.0.0.1:{port}/"
            if client in HOT_PATHS:
                result, sampler, (srv,) = run_driver(
                    WsswarmDriver(HOT_PATHS[client]),
                    load,
                    out,
                    samplers_for=[server.pid],
                    interval=0.05,
                )
                check_hot_path(out, HOT_PATHS[client])
                row.per_conn = wsswarm_per_connection(out, sampler, result)
            else:
                node_env = ensure_node_ws()
                result, sampler, (srv,) = run_driver(
                    Node2017Driver(),
                    load,
                    out,
                    samplers_for=[server.pid],
                    interval=0.05,
                    env=node_env,
                )
                rss = result.raw["worker_rss_bytes"]
                if result.open:
                    row.per_conn = (rss["end"] - rss["before"]) / result.open
        t0, t1 = result.measure_started, result.measure_ended
        row.load = result
        row.client_cpu, row.client_rss, _ = sampler.window(t0, t1)
        row.server_cpu, _, _ = srv.window(t0, t1)
    except BenchError as exc:
        row.error = str(exc)
    return row


def render(rows: list[Row]) -> str:
    ref = {r.connections: r for r in rows if r.client == REFERENCE and r.load is not None}
    headers = [
        "client",
        "conns",
        "open",
        "failed",
        "rt/s",
        "mean ms",
        "p99 ms",
        "cli CPU%",
        "rt/cli-core-s",
        "cli RSS MB",
        "KB/conn",
        "srv CPU%",
        "rt/s vs 2017",
        "rt/core vs 2017",
        "KB/conn vs 2017",
    ]
    lines: list[list[str]] = []
    notes: list[str] = []
    for r in rows:
        if r.load is None:
            notes.append(f"[{len(notes) + 1}] {r.client} at {r.connections:,}: {r.error}")
            lines.append([r.client, f"{r.connections:,}", f"error [{len(notes)}]"] + ["-"] * 12)
            continue
        span = r.load.raw.get("measured_span_s")
        window = r.load.measure_ended - r.load.measure_started
        if r.load.raw.get("ramp_incomplete"):
            notes.append(
                f"[{len(notes) + 1}] {r.client} at {r.connections:,}: its ramp had not ended "
                "after --max-ramp; measured with the connections it had"
            )
        if span is not None and span < 0.8 * window:
            notes.append(
                f"[{len(notes) + 1}] {r.client} at {r.connections:,}: its worker reports covered "
                f"only {span:.1f} s of the {window:.1f} s window (event loop stalls); the rate is "
                "over that span"
            )
        n = ref.get(r.connections)
        nl = n.load if n is not None else None
        p99 = "-" if r.load.p99_ms != r.load.p99_ms else f"{r.load.p99_ms:.1f}"
        lines.append(
            [
                r.client,
                f"{r.connections:,}",
                f"{r.load.open:,}",
                str(r.load.failed),
                f"{r.load.roundtrips_per_s:,.0f}",
                f"{r.load.mean_ms:.1f}",
                p99,
                f"{100 * (r.client_cpu or 0):.0f}",
                f"{r.per_core or 0:,.0f}",
                f"{(r.client_rss or 0) / 1e6:.0f}",
                "-" if r.per_conn is None else f"{r.per_conn / 1024:.2f}",
                f"{100 * (r.server_cpu or 0):.0f}",
                ratio(r.load.roundtrips_per_s, nl.roundtrips_per_s if nl else None),
                ratio(r.per_core, n.per_core if n else None),
                ratio(r.per_conn, n.per_conn if n else None),
            ]
        )
    return "\n".join([table(headers, lines), *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--connections", default="1000,10000", help="comma-separated counts (default 1000,10000)"
    )
    p.add_argument(
        "--server",
        choices=SERVERS,
        default="wsecho-picows",
        help="the echo server on CPU 0 (default wsecho-picows, the faster one here)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds after the ramp, unmeasured (default 3)"
    )
    p.add_argument(
        "--connect-rate", type=float, default=1000.0, help="connections/s (default 1000)"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=DEFAULT_NICE,
        help=f"niceness of the servers and clients (default {DEFAULT_NICE}; needs root)",
    )
    p.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    p.add_argument("--keep", action="store_true", help="keep the per-run logs and result files")
    args = p.parse_args(argv)
    try:
        args.connections = parse_int_list(args.connections)
    except ValueError as exc:
        p.error(f"--connections: {exc}")
    if args.duration <= 0 or args.warmup < 0 or args.connect_rate <= 0:
        p.error("--duration and --connect-rate must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    check_machine()
    args = parse_args(argv)
    started = begin(args.nice)
    print(
        f"server: {args.server} on CPU {SERVER_CPU}; clients (one process/worker each) on CPU "
        f"{CLIENT_CPU}; node ws@{NODE_WS_VERSION}; warm-up {args.warmup:g} s, measured "
        f"{args.duration:g} s, connect rate {args.connect_rate:g}/s",
        flush=True,
    )

    def load(connections: int) -> Load:
        return Load("", connections, args.connect_rate, args.warmup, args.duration, 1)

    matrix = Matrix(
        script="bench/client_bench.py",
        cells=[CLIENTS],
        connections=args.connections,
        measure=lambda name, n, _round, work: measure(name, load(n), args.server, work),
        status=lambda row: (
            f"{row.load.roundtrips_per_s:,.0f} rt/s at {100 * (row.client_cpu or 0):.0f}% "
            "client CPU"
            if row.load
            else ""
        ),
        render=render,
        as_json=lambda r: {
            "client": r.client,
            "connections": r.connections,
            "error": r.error,
            "client_cpu": r.client_cpu,
            "client_rss": r.client_rss,
            "bytes_per_connection": r.per_conn,
            "server_cpu": r.server_cpu,
            "per_core": r.per_core,
            "load": r.load.raw if r.load else None,
        },
    )
    return run_matrix(matrix, argv, started, keep=args.keep, json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
