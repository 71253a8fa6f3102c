"""Server benchmark: wsecho (picows on its compiled and its Python hot path, websockets)
against node.js `ws` and a C epoll ceiling.

Each server runs alone on CPU 0; each client drives it from CPU 1 at each connection count
(wsswarm and the 2017 node.js client: a more efficient client changes the server's batching).
One table: round-trips/s, latency, server CPU and RSS, round-trips per server-core-second, and
every server's ratios to the C ceiling (`ceiling/ws_echo.c`) and to node.js `ws`, both measured
in the same invocation with the same client. See bench/README.md.

    .venv/bin/python bench/server_bench.py [--connections 1000,10000] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from _benchlib import (
    CLIENT_CPU,
    DEFAULT_NICE,
    DRIVERS,
    NODE_WS_VERSION,
    SERVER_CPU,
    BenchError,
    Load,
    LoadResult,
    Matrix,
    begin,
    check_machine,
    ensure_node_ws,
    fd_limit,
    parse_int_list,
    ratio,
    run_driver,
    run_matrix,
    serving,
    table,
    wsswarm_available,
)

# wsecho's default (picows backend, compiled hot path), its Python hot path, and its websockets
# backend.
SERVERS = (
    "ceiling",
    "node-ws",
    "wsecho-picows-compiled",
    "wsecho-picows-python",
    "wsecho-websockets",
)
CEILING = "ceiling"
NODE = "node-ws"
CLIENTS = ("wsswarm", "node-2017", "loadgen")


@dataclass
class Row:
    server: str
    client: str
    connections: int
    load: LoadResult | None = None
    server_cpu: float | None = None  # fraction of one core
    server_rss: int | None = None  # max in the measured window
    server_rss_idle: int | None = None  # listening, before the first connection
    client_cpu: float | None = None
    error: str | None = None

    @property
    def per_connection(self) -> float | None:
        """Server bytes per open connection: (RSS in the window - idle RSS) / open."""
        if (
            self.load is None
            or not self.load.open
            or None in (self.server_rss, self.server_rss_idle)
        ):
            return None
        return ((self.server_rss or 0) - (self.server_rss_idle or 0)) / self.load.open

    @property
    def per_core(self) -> float | None:
        if self.load is None or not self.server_cpu:
            return None
        return self.load.roundtrips_per_s / self.server_cpu


def measure(name: str, load: Load, driver_name: str, work: Path) -> Row:
    row = Row(name, driver_name, load.connections)
    out = work / f"{driver_name}-{name}-{load.connections}"
    out.mkdir(parents=True)
    try:
        with serving(name, out) as (server, port):
            load.url = f"ws://127.0.0.1:{port}/"
            with contextlib.suppress(psutil.Error):
                row.server_rss_idle = psutil.Process(server.pid).memory_info().rss
            driver = DRIVERS[driver_name]()
            client_env = ensure_node_ws() if driver_name == "node-2017" else None
            result, client, (srv,) = run_driver(
                driver, load, out, samplers_for=[server.pid], env=client_env
            )
        t0, t1 = result.measure_started, result.measure_ended
        row.load = result
        row.server_cpu, row.server_rss, _ = srv.window(t0, t1)
        row.client_cpu, _, _ = client.window(t0, t1)
    except BenchError as exc:
        row.error = str(exc)
    return row


def render(rows: list[Row]) -> str:
    def refs(server: str) -> dict[tuple[str, int], Row]:
        return {(r.client, r.connections): r for r in rows if r.server == server and r.load}

    ceiling, node = refs(CEILING), refs(NODE)
    headers = [
        "client",
        "server",
        "conns",
        "open",
        "failed",
        "rt/s",
        "mean ms",
        "p99 ms",
        "srv CPU%",
        "srv RSS MB",
        "srv KB/conn",
        "rt/srv-core-s",
        "cli CPU%",
        "rt/core vs ceiling",
        "rt/core vs node",
        "rt/s vs node",
        "RSS vs node",
    ]
    lines = []
    notes: list[str] = []
    for r in rows:
        if r.load is None:
            where = f"{r.client} against {r.server} at {r.connections:,}"
            notes.append(f"[{len(notes) + 1}] {where}: {r.error}")
            lines.append(
                [r.client, r.server, f"{r.connections:,}", f"error [{len(notes)}]"] + ["-"] * 13
            )
            continue
        if r.load.raw.get("ramp_incomplete"):
            notes.append(
                f"[{len(notes) + 1}] {r.client} against {r.server} at {r.connections:,}: its "
                "ramp had not ended after --max-ramp; measured with the connections it had"
            )
        c, n = ceiling.get((r.client, r.connections)), node.get((r.client, r.connections))
        nl = n.load if n is not None else None
        p99 = "-" if math.isnan(r.load.p99_ms) else f"{r.load.p99_ms:.1f}"
        lines.append(
            [
                r.client,
                r.server,
                f"{r.connections:,}",
                f"{r.load.open:,}",
                str(r.load.failed),
                f"{r.load.roundtrips_per_s:,.0f}",
                f"{r.load.mean_ms:.1f}",
                p99,
                f"{100 * (r.server_cpu or 0):.0f}",
                f"{(r.server_rss or 0) / 1e6:.0f}",
                "-" if r.per_connection is None else f"{r.per_connection / 1024:.1f}",
                f"{r.per_core or 0:,.0f}",
                f"{100 * (r.client_cpu or 0):.0f}",
                ratio(r.per_core, c.per_core if c else None),
                ratio(r.per_core, n.per_core if n else None),
                ratio(r.load.roundtrips_per_s, nl.roundtrips_per_s if nl else None),
                ratio(r.server_rss, n.server_rss if n else None),
            ]
        )
    return "\n".join([table(headers, lines), *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--connections", default="1000,10000", help="comma-separated counts (default 1000,10000)"
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)} (default: all)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds after the ramp, unmeasured (default 3)"
    )
    p.add_argument(
        "--connect-rate", type=float, default=1000.0, help="connections/s (default 1000)"
    )
    p.add_argument(
        "--clients",
        default="wsswarm,node-2017",
        help=f"comma-separated subset of {','.join(CLIENTS)}: each server runs under each "
        "(default wsswarm,node-2017)",
    )
    p.add_argument(
        "--client-processes", type=int, default=1, help="client processes on CPU 1 (default 1)"
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
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        p.error(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    if args.duration <= 0 or args.warmup < 0 or args.connect_rate <= 0:
        p.error("--duration and --connect-rate must be positive, --warmup not negative")
    if args.client_processes < 1:
        p.error("--client-processes must be at least 1")
    per_process = max(args.connections) / args.client_processes
    if per_process > fd_limit() - 100:
        p.error(f"{per_process:.0f} connections per client process exceed the open-file limit")
    args.clients = [c for c in args.clients.split(",") if c]
    unknown = set(args.clients) - set(CLIENTS)
    if unknown or not args.clients:
        p.error(f"--clients: unknown {sorted(unknown)}; choose from {', '.join(CLIENTS)}")
    if "wsswarm" in args.clients and not wsswarm_available():
        p.error("--clients: wsswarm is not installed (make bootstrap), or choose loadgen")
    return args


def main(argv: list[str] | None = None) -> int:
    check_machine()
    args = parse_args(argv)
    started = begin(args.nice)
    print(
        f"clients: {', '.join(args.clients)} ({args.client_processes} process(es) or worker(s)) "
        f"on CPU {CLIENT_CPU}, "
        f"servers on CPU {SERVER_CPU}; node ws@{NODE_WS_VERSION}; warm-up {args.warmup:g} s, "
        f"measured {args.duration:g} s, connect rate {args.connect_rate:g}/s",
        flush=True,
    )

    def load(connections: int) -> Load:
        return Load(
            "", connections, args.connect_rate, args.warmup, args.duration, args.client_processes
        )

    matrix = Matrix(
        script="bench/server_bench.py",
        # The references first, so that a failure shows before the long runs.
        names=[
            f"{client}:{server}"
            for client in args.clients
            for server in sorted(args.servers, key=lambda s: (s != CEILING, s != NODE))
        ],
        connections=args.connections,
        measure=lambda name, n, work: measure(
            name.split(":")[1], load(n), name.split(":")[0], work
        ),
        status=lambda row: (
            f"{row.load.roundtrips_per_s:,.0f} rt/s at {100 * (row.server_cpu or 0):.0f}% "
            "server CPU"
            if row.load
            else ""
        ),
        render=render,
        as_json=lambda r: {
            "server": r.server,
            "client": r.client,
            "connections": r.connections,
            "error": r.error,
            "server_cpu": r.server_cpu,
            "server_rss": r.server_rss,
            "server_rss_idle": r.server_rss_idle,
            "client_cpu": r.client_cpu,
            "per_core": r.per_core,
            "load": r.load.raw if r.load else None,
        },
    )
    return run_matrix(matrix, argv, started, keep=args.keep, json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
