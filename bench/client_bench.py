"""Client benchmark: one `wsswarm run` process against the 2017 node.js client, one core each.

A fast echo server runs alone on CPU 0; each client runs alone on CPU 1 with one worker and
drives it at each connection count: the 2017 client, wsswarm on its compiled hot path
(`wsswarm`) and on its Python one (`wsswarm-python`), each once per round, `--rounds` times, the
order reversed every other round. Two tables: every window (round-trips/s, latency, client CPU,
round-trips per client-core-second, client memory per connection, and the ratios to the 2017
client of the same round), then per connection count and client the medians over the rounds.
See bench/README.md.

    .venv/bin/python bench/client_bench.py [--connections 1000,10000] [--rounds 2]
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
    round: int = 1
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


def measure(client: str, load: Load, server_name: str, round_number: int, work: Path) -> Row:
    row = Row(client, load.connections, round_number)
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


def render_windows(rows: list[Row]) -> str:
    """Every measured window; its ratios are to the 2017 client's window of the same round."""
    ref = {
        (r.connections, r.round): r for r in rows if r.client == REFERENCE and r.load is not None
    }
    headers = [
        "client",
        "conns",
        "round",
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
            notes.append(
                f"[{len(notes) + 1}] {r.client} at {r.connections:,}, round {r.round}: {r.error}"
            )
            lines.append(
                [r.client, f"{r.connections:,}", str(r.round), f"error [{len(notes)}]"] + ["-"] * 12
            )
            continue
        where = f"{r.client} at {r.connections:,}, round {r.round}"
        notes += window_notes(r.load, where, len(notes) + 1)
        n = ref.get((r.connections, r.round))
        nl = n.load if n is not None else None
        p99 = "-" if r.load.p99_ms != r.load.p99_ms else f"{r.load.p99_ms:.1f}"
        lines.append(
            [
                r.client,
                f"{r.connections:,}",
                str(r.round),
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


def render_summary(rows: list[Row]) -> str:
    """Per connection count and client, the medians over the rounds (min-max); the ratio to the
    2017 client is paired within each round."""
    per_core: dict[tuple[int, str], dict[int, float | None]] = {}
    per_conn: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        per_core.setdefault((r.connections, r.client), {})[r.round] = r.per_core
        if r.per_conn is not None:
            per_conn.setdefault((r.connections, r.client), []).append(r.per_conn / 1024)
    headers = ["client", "conns", "windows", "rt/cli-core-s", "rt/core vs 2017", "KB/conn"]
    lines = [
        [
            client,
            f"{connections:,}",
            f"{len(round_values(mine))}/{len(mine)}",
            median_range(round_values(mine), "{:,.0f}", ""),
            median_range(paired_ratios(mine, per_core.get((connections, REFERENCE), {}))),
            median_range(per_conn.get((connections, client), []), "{:.2f}", ""),
        ]
        for (connections, client), mine in per_core.items()
    ]
    return table(headers, lines)


def render(rows: list[Row]) -> str:
    return "\n".join(
        [
            "Every window (ratios to the 2017 client of the same round):",
            render_windows(rows),
            "",
            "Per connection count and client: median over the rounds (min-max); the ratio is "
            "paired within its round:",
            render_summary(rows),
        ]
    )


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
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="windows of every client per connection count, interleaved (default 2)",
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per window (default 10)"
    )
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
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
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
        f"{args.duration:g} s, connect rate {args.connect_rate:g}/s, {args.rounds} round(s)",
        flush=True,
    )

    def load(connections: int) -> Load:
        return Load("", connections, args.connect_rate, args.warmup, args.duration, 1)

    matrix = Matrix(
        script="bench/client_bench.py",
        cells=[CLIENTS],
        connections=args.connections,
        rounds=args.rounds,
        measure=lambda name, n, round_number, work: measure(
            name, load(n), args.server, round_number, work
        ),
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
            "round": r.round,
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
