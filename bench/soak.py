"""Soak: N connections held for T minutes against wsecho; does any process's memory grow?

wsecho runs on CPU 0, `wsswarm run` (the 2017 closed loop: every connection echoes all the
time) on CPU 1. The resident memory of wsecho and of every swarm worker is sampled once a
second; its growth between minute `--from-minute` and the end of the measured window must stay
under `--bound` percent. Minutes count from the start of wsswarm's measured window (after its
ramp and warm-up). See bench/README.md.

    .venv/bin/python bench/soak.py [--connections 10000] [--minutes 10] [--from-minute 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _benchlib import (
    CLIENT_CPU,
    DEFAULT_NICE,
    SERVER_CPU,
    BenchError,
    Load,
    TreeSampler,
    WsswarmDriver,
    begin,
    check_machine,
    fd_limit,
    run_driver,
    serving,
    table,
)


@dataclass
class Growth:
    """One process's RSS at the start and at the end of the compared span."""

    process: str
    pid: int
    rss_from: int
    rss_to: int

    @property
    def percent(self) -> float:
        return 100 * (self.rss_to - self.rss_from) / self.rss_from


@dataclass
class SoakResult:
    connections: int
    open: int
    failed: int
    roundtrips_per_s: float
    span_s: tuple[float, float]  # compared span, seconds after the window's start
    growth: list[Growth] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def passed(self, bound: float) -> bool:
        return (
            bool(self.growth)
            and self.open == self.connections
            and all(g.percent < bound for g in self.growth)
        )


def rss_around(sampler: TreeSampler, pid: int, t: float, half_width: float) -> int:
    """Median RSS of `pid` in the samples within `half_width` seconds of `t` (absorbs the
    moment-to-moment wobble of the allocator, not a trend)."""
    near = [
        s.rss_by_pid[pid]
        for s in sampler.samples
        if abs(s.t - t) <= half_width and pid in s.rss_by_pid
    ]
    if not near:
        raise BenchError(f"no memory sample of pid {pid} near t={t:.0f}")
    return int(statistics.median(near))


def worker_pids(out: Path) -> list[int]:
    """The pids of wsswarm's workers, from the start record of each worker file."""
    pids = []
    for path in sorted(out.glob("worker-*.jsonl")):
        with path.open() as f:
            pids.append(int(json.loads(f.readline())["pid"]))
    if not pids:
        raise BenchError(f"wsswarm wrote no worker files in {out}")
    return pids


def soak(
    work: Path,
    *,
    connections: int,
    minutes: float,
    from_minute: float,
    processes: int,
    connect_rate: float,
    backend: str = "picows",
) -> SoakResult:
    """Run one soak against wsecho (`backend`); wsecho and the client are stopped at the end."""
    with serving(f"wsecho-{backend}", work) as (server, port):
        url = f"ws://127.0.0.1:{port}/"
        load = Load(url, connections, connect_rate, 3.0, minutes * 60, processes)
        result, client, (srv,) = run_driver(
            WsswarmDriver(), load, work, samplers_for=[server.pid], interval=1.0
        )
    t0 = result.measure_started
    a, b = t0 + from_minute * 60, result.measure_ended
    half = min(10.0, (b - a) / 10)
    a, b = a + half, b - half  # both medians inside the window
    growth = [Growth("wsecho", server.pid, rss_around(srv, server.pid, a, half), 0)]
    growth[0].rss_to = rss_around(srv, server.pid, b, half)
    for i, pid in enumerate(worker_pids(work)):
        growth.append(
            Growth(
                f"wsswarm worker {i}",
                pid,
                rss_around(client, pid, a, half),
                rss_around(client, pid, b, half),
            )
        )
    return SoakResult(
        connections,
        result.open,
        result.failed,
        result.roundtrips_per_s,
        (a - t0, b - t0),
        growth,
        result.errors,
    )


def render(result: SoakResult, bound: float) -> str:
    a, b = result.span_s
    rows = [
        [
            g.process,
            str(g.pid),
            f"{g.rss_from / 1e6:.2f}",
            f"{g.rss_to / 1e6:.2f}",
            f"{g.percent:+.2f}%",
            "ok" if g.percent < bound else f"GROWS (bound {bound:g}%)",
        ]
        for g in result.growth
    ]
    headers = ["process", "pid", f"RSS MB at {a / 60:.1f} min", f"RSS MB at {b / 60:.1f} min"]
    summary = (
        f"{result.open:,} of {result.connections:,} connections open at the end, "
        f"{result.failed} failed, {result.roundtrips_per_s:,.0f} round trips/s"
        + (f", errors {result.errors}" if result.errors else "")
    )
    return "\n".join([table([*headers, "growth", "verdict"], rows), summary])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=10_000, help="connections (10000)")
    p.add_argument("--minutes", type=float, default=10.0, help="measured minutes (10)")
    p.add_argument("--from-minute", type=float, default=2.0, help="start of the compared span (2)")
    p.add_argument("--processes", type=int, default=2, help="wsswarm worker processes (2)")
    p.add_argument("--connect-rate", type=float, default=1000.0, help="connections/s (1000)")
    p.add_argument("--backend", choices=["picows", "websockets"], default="picows")
    p.add_argument("--bound", type=float, default=2.0, help="allowed RSS growth, percent (2)")
    p.add_argument("--nice", type=int, default=DEFAULT_NICE, help=f"niceness ({DEFAULT_NICE})")
    p.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args(argv)
    if args.connections < 1 or args.processes < 1 or args.connect_rate <= 0:
        p.error("--connections, --processes and --connect-rate must be positive")
    if not 0 <= args.from_minute < args.minutes:
        p.error("--from-minute must be at least 0 and below --minutes")
    if args.connections / args.processes > fd_limit() - 100:
        p.error("connections per worker process exceed the open-file limit")
    return args


def main(argv: list[str] | None = None) -> int:
    check_machine()
    args = parse_args(argv)
    started = begin(args.nice)
    print(
        f"wsecho ({args.backend}) on CPU {SERVER_CPU}, wsswarm ({args.processes} workers) on CPU "
        f"{CLIENT_CPU}: {args.connections:,} connections for {args.minutes:g} min",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="echolab-soak-"))
    try:
        result = soak(
            work,
            connections=args.connections,
            minutes=args.minutes,
            from_minute=args.from_minute,
            processes=args.processes,
            connect_rate=args.connect_rate,
            backend=args.backend,
        )
    except BenchError as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cmd = " ".join(["bench/soak.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, `{cmd}`")
    print(render(result, args.bound))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "connections": result.connections,
                    "open": result.open,
                    "failed": result.failed,
                    "roundtrips_per_s": result.roundtrips_per_s,
                    "span_s": result.span_s,
                    "growth": [g.__dict__ for g in result.growth],
                },
                indent=2,
            )
        )
    return 0 if result.passed(args.bound) else 1


if __name__ == "__main__":
    sys.exit(main())
