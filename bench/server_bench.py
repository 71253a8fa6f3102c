"""Server benchmark: wsecho (picows on its compiled and its Python hot path, websockets)
against node.js `ws` and a C epoll ceiling.

Each server runs alone on CPU 0; each client drives it from CPU 1 at each connection count
(wsswarm and the 2017 node.js client: a more efficient client changes the server's batching).
A cell (client, connection count) measures every server once per round, `--rounds` times, the
order reversed every other round (ABCD, DCBA, ...); each server's ratios to the C ceiling
(`ceiling/ws_echo.c`) and to node.js `ws` are taken between windows of the same round. Two
tables: every window, then per cell and server the medians over the rounds with their range.
See bench/README.md.

    .venv/bin/python bench/server_bench.py [--connections 1000,10000] [--rounds 2]
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
    median_range,
    paired_ratios,
    parse_int_list,
    ratio,
    round_values,
    run_driver,
    run_matrix,
    serving,
    table,
    window_notes,
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
# What the issue compares: the references, wsecho's default and its websockets backend.
DEFAULT_SERVERS = ("ceiling", "node-ws", "wsecho-picows-compiled", "wsecho-websockets")
CEILING = "ceiling"
NODE = "node-ws"
CLIENTS = ("wsswarm", "node-2017", "loadgen")


@dataclass
class Row:
    server: str
    client: str
    connections: int
    round: int = 1
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


def measure(name: str, load: Load, driver_name: str, round_number: int, work: Path) -> Row:
    row = Row(name, driver_name, load.connections, round_number)
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


def render_windows(rows: list[Row]) -> str:
    """Every measured window; its ratios are to the ceiling and node.js ws of the same round."""

    def refs(server: str) -> dict[tuple[str, int, int], Row]:
        return {
            (r.client, r.connections, r.round): r for r in rows if r.server == server and r.load
        }

    ceiling, node = refs(CEILING), refs(NODE)
    headers = [
        "client",
        "server",
        "conns",
        "round",
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
            where = f"{r.client} against {r.server} at {r.connections:,}, round {r.round}"
            notes.append(f"[{len(notes) + 1}] {where}: {r.error}")
            lines.append(
                [r.client, r.server, f"{r.connections:,}", str(r.round), f"error [{len(notes)}]"]
                + ["-"] * 13
            )
            continue
        where = f"{r.client} against {r.server} at {r.connections:,}, round {r.round}"
        notes += window_notes(r.load, where, len(notes) + 1)
        key = (r.client, r.connections, r.round)
        c, n = ceiling.get(key), node.get(key)
        nl = n.load if n is not None else None
        p99 = "-" if math.isnan(r.load.p99_ms) else f"{r.load.p99_ms:.1f}"
        lines.append(
            [
                r.client,
                r.server,
                f"{r.connections:,}",
                str(r.round),
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


@dataclass
class Summary:
    """One server in one cell (client, connection count) over the rounds."""

    client: str
    connections: int
    server: str
    windows: int  # windows that measured a figure
    rounds: int  # windows run
    per_core: list[float]  # round trips per server-core-second, by round
    vs_ceiling: list[float]  # paired with the ceiling's window of the same round
    vs_node: list[float]  # paired with node.js ws's window of the same round
    ceiling_vs_node: list[float]  # the cell's ceiling to node.js ws, by round
    open_min: int | None
    rss_max: int | None


def summarize(rows: list[Row]) -> list[Summary]:
    """Per cell and server, in the order first measured: the figures of every round and the
    ratios paired within each round."""
    by_round: dict[tuple[str, int, str], dict[int, float | None]] = {}
    for r in rows:
        by_round.setdefault((r.client, r.connections, r.server), {})[r.round] = r.per_core
    summaries = []
    for (client, connections, server), mine in by_round.items():
        ceiling = by_round.get((client, connections, CEILING), {})
        node = by_round.get((client, connections, NODE), {})
        measured = [
            r
            for r in rows
            if (r.client, r.connections, r.server) == (client, connections, server) and r.load
        ]
        summaries.append(
            Summary(
                client,
                connections,
                server,
                windows=len(round_values(mine)),
                rounds=len(mine),
                per_core=round_values(mine),
                vs_ceiling=paired_ratios(mine, ceiling),
                vs_node=paired_ratios(mine, node),
                ceiling_vs_node=paired_ratios(ceiling, node),
                open_min=min((r.load.open for r in measured if r.load), default=None),
                rss_max=max((r.server_rss or 0 for r in measured), default=None),
            )
        )
    return summaries


def render_summary(summaries: list[Summary]) -> str:
    """Medians over the rounds, with (min-max): the figures a comparison between servers reads."""
    headers = [
        "client",
        "conns",
        "server",
        "windows",
        "open (min)",
        "rt/srv-core-s",
        "vs ceiling",
        "vs node",
        "ceiling vs node",
        "srv RSS MB (max)",
    ]
    lines = [
        [
            s.client,
            f"{s.connections:,}",
            s.server,
            f"{s.windows}/{s.rounds}",
            "-" if s.open_min is None else f"{s.open_min:,}",
            median_range(s.per_core, "{:,.0f}", ""),
            median_range(s.vs_ceiling),
            median_range(s.vs_node),
            median_range(s.ceiling_vs_node),
            "-" if not s.rss_max else f"{s.rss_max / 1e6:.0f}",
        ]
        for s in summaries
    ]
    return table(headers, lines)


def render(rows: list[Row]) -> str:
    return "\n".join(
        [
            "Every window (ratios to the ceiling and node.js ws of the same round):",
            render_windows(rows),
            "",
            "Per cell and server: median over the rounds (min-max); each ratio is paired within "
            "its round; `ceiling vs node` is the most a server of the ceiling's cost reaches "
            "against node.js ws in that cell:",
            render_summary(summarize(rows)),
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--connections", default="1000,10000", help="comma-separated counts (default 1000,10000)"
    )
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="windows of every server per cell, interleaved (ABCD, DCBA, ...; default 2)",
    )
    p.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds per window (default 5)"
    )
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds after the ramp, unmeasured (default 1)"
    )
    p.add_argument(
        "--connect-rate",
        type=float,
        default=1000.0,
        help="connections/s of wsswarm and loadgen (default 1000)",
    )
    p.add_argument(
        "--node-connect-rate",
        type=float,
        default=4000.0,
        help="connections/s asked of the 2017 client, whose ramp falls behind its rate "
        "(default 4000)",
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
    twice = sorted({s for s in args.servers if args.servers.count(s) > 1})
    if twice:
        p.error(f"--servers: {', '.join(twice)} given more than once")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.duration <= 0 or args.warmup < 0 or min(args.connect_rate, args.node_connect_rate) <= 0:
        p.error(
            "--duration, --connect-rate and --node-connect-rate must be positive, "
            "--warmup not negative"
        )
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
        f"measured {args.duration:g} s, connect rate {args.connect_rate:g}/s "
        f"(the 2017 client {args.node_connect_rate:g}/s), "
        f"{args.rounds} round(s) per cell",
        flush=True,
    )

    def load(connections: int, client: str) -> Load:
        rate = args.node_connect_rate if client == "node-2017" else args.connect_rate
        return Load("", connections, rate, args.warmup, args.duration, args.client_processes)

    matrix = Matrix(
        script="bench/server_bench.py",
        # One cell per client, the references first: a failure shows before the long runs.
        cells=[
            [
                f"{client}:{server}"
                for server in sorted(args.servers, key=lambda s: (s != CEILING, s != NODE))
            ]
            for client in args.clients
        ],
        connections=args.connections,
        rounds=args.rounds,
        measure=lambda name, n, round_number, work: measure(
            name.split(":")[1], load(n, name.split(":")[0]), name.split(":")[0], round_number, work
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
            "round": r.round,
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
