"""A lean closed-loop WebSocket load generator built on picows, for the benchmarks only.

It speaks the 2017 protocol (text ``{"timestamp": <ms>}`` on open and again right after each
echo, one message in flight per connection) and keeps as little per connection as possible, so
that it is faster than the servers it drives. It is the fallback driver of ``server_bench.py``
when ``wsswarm run`` is missing or slower; the project's measuring client is ``wsswarm``.

    python bench/loadgen.py --url ws://127.0.0.1:8080/ --connections 1000 --processes 1 \
        --connect-rate 1000 --warmup 3 --duration 10 --out /tmp/lg

Every process opens its share of connections at its share of the rate, starting at the same
wall-clock instant; the measured window starts ``connections / connect_rate`` seconds later plus
the warm-up, identical in every process. Latency is taken with the monotonic clock of the
process. Results: ``OUT/loadgen-summary.json`` (and one ``worker-N.json`` per process).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import errno
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

# Per-connection state is three slots; the read buffer of picows starts at 16 KiB by default,
# which alone would cost 160 MB at 10,000 connections: 2017 messages are ~30 bytes.
READ_BUFFER_INIT_SIZE = 512


class Stats:
    """Counters shared by all connections of one process (module-level for cheap access)."""

    def __init__(self) -> None:
        self.roundtrips = 0
        self.open = 0
        self.attempted = 0
        self.mismatch = 0
        self.dropped = 0
        self.measuring = False
        self.latencies_us: array.array[int] = array.array("I")
        self.errors: dict[str, int] = {}

    def fail(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


STATS = Stats()


def classify(exc: BaseException) -> str:
    """Map a connect failure to the error kinds of docs/formats.md."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRNOTAVAIL:
            return "addr_not_available"
        if exc.errno == errno.EMFILE:
            return "too_many_open_files"
    status = getattr(getattr(exc, "response", None), "status", None)
    if status is not None:
        return f"handshake_{int(status)}"
    return "other"


async def worker_main(args: argparse.Namespace) -> dict[str, Any]:
    text = WSMsgType.TEXT
    close = WSMsgType.CLOSE
    stats = STATS
    perf_ns = time.perf_counter_ns
    wall_ns = time.time_ns
    latencies = stats.latencies_us

    class Client(WSListener):
        __slots__ = ("payload", "sent_ns", "transport")

        def __init__(self) -> None:
            self.payload = b""
            self.sent_ns = 0
            self.transport: WSTransport | None = None

        def send(self, transport: WSTransport) -> None:
            self.payload = b'{"timestamp": %d}' % (wall_ns() // 1_000_000)
            self.sent_ns = perf_ns()
            transport.send(text, self.payload)

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            stats.open += 1
            clients.append(self)
            self.send(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            now = perf_ns()
            if frame.msg_type == text:
                if frame.get_payload_as_bytes() != self.payload:
                    stats.mismatch += 1
                stats.roundtrips += 1
                if stats.measuring:
                    latencies.append((now - self.sent_ns) // 1000)
                self.send(transport)
            elif frame.msg_type == close:
                transport.disconnect()

        def on_ws_disconnected(self, _transport: WSTransport) -> None:
            if self.transport is not None:
                stats.open -= 1
                if not closing:
                    stats.dropped += 1
                self.transport = None

    closing = False
    clients: list[Client] = []

    async def connect_one() -> None:
        try:
            await ws_connect(
                Client,
                args.url,
                websocket_handshake_timeout=args.connect_timeout,
                read_buffer_init_size=READ_BUFFER_INIT_SIZE,
            )
        except Exception as exc:
            stats.fail(classify(exc))

    share = args.share
    rate = args.connect_rate
    start = args.t0
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start - time.time()))
    rss0 = rss_bytes()
    pending: set[asyncio.Task[None]] = set()
    while stats.attempted < share:
        due = min(share, int((time.time() - start) * rate) + 1)
        while stats.attempted < due:
            stats.attempted += 1
            task = loop.create_task(connect_one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.sleep(0.005)

    # The window starts after the warm-up that follows the last open (or failure): a server
    # whose accept queue overflows opens late, and its ramp must not leak into the figures.
    deadline = start + 2 * args.ramp_s + args.connect_timeout + 5
    while stats.open + sum(stats.errors.values()) < share and time.time() < deadline:
        await asyncio.sleep(0.05)
    ramp_done = time.time()
    measure_start = ramp_done + args.warmup
    await asyncio.sleep(args.warmup)
    count0, cpu0, t0 = stats.roundtrips, time.process_time(), time.time()
    stats.measuring = True
    await asyncio.sleep(max(0.0, measure_start + args.duration - time.time()))
    stats.measuring = False
    count1, cpu1, t1 = stats.roundtrips, time.process_time(), time.time()
    rss1 = rss_bytes()
    open_at_end = stats.open
    closing = True
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()
    for task in list(pending):
        task.cancel()
    await asyncio.sleep(0.2)
    return {
        "worker": args.worker,
        "share": share,
        "attempted": stats.attempted,
        "open": open_at_end,
        "failed": sum(stats.errors.values()),
        # pending: attempted, neither open nor failed when the window ended (slow accept, SYN
        # retransmits); dropped: open, then closed by the peer before the end.
        "errors": dict(
            stats.errors,
            echo_mismatch=stats.mismatch,
            dropped=stats.dropped,
            pending=share - open_at_end - stats.dropped - sum(stats.errors.values()),
        ),
        "roundtrips": count1 - count0,
        "ramp_s": ramp_done - start,
        "measure_started": t0,
        "measure_ended": t1,
        "cpu_s": cpu1 - cpu0,
        "rss_bytes_before": rss0,
        "rss_bytes_end": rss1,
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_worker(args: argparse.Namespace) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = uvloop.run(worker_main(args))
    out = Path(args.out)
    (out / f"worker-{args.worker}.json").write_text(json.dumps(result))
    STATS.latencies_us.tofile((out / f"worker-{args.worker}.lat").open("wb"))
    return 0


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


def merge(out: Path, processes: int) -> dict[str, Any]:
    """Merge the per-process results into one summary (exact: all latencies are kept)."""
    workers = [json.loads((out / f"worker-{i}.json").read_text()) for i in range(processes)]
    latencies: array.array[int] = array.array("I")
    for i in range(processes):
        path = out / f"worker-{i}.lat"
        with path.open("rb") as f:
            latencies.frombytes(f.read())
    values = sorted(latencies)
    started = min(w["measure_started"] for w in workers)
    ended = max(w["measure_ended"] for w in workers)
    roundtrips = sum(w["roundtrips"] for w in workers)
    # Each process measured its own window (they start after that process's ramp): add rates.
    rate = sum(w["roundtrips"] / (w["measure_ended"] - w["measure_started"]) for w in workers)
    errors: dict[str, int] = {}
    for w in workers:
        for kind, count in w["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return {
        "tool": "bench/loadgen.py",
        "measure_started": started,
        "measure_ended": ended,
        "roundtrips": roundtrips,
        "roundtrips_per_s": rate,
        "ramp_s": max(w["ramp_s"] for w in workers),
        "latency_ms": {
            "mean": (sum(values) / len(values) / 1000) if values else float("nan"),
            "p50": percentile(values, 0.50) / 1000,
            "p99": percentile(values, 0.99) / 1000,
            "max": (values[-1] / 1000) if values else float("nan"),
        },
        "connections": {
            "attempted": sum(w["attempted"] for w in workers),
            "open": sum(w["open"] for w in workers),
            "failed": sum(w["failed"] for w in workers),
        },
        "errors": errors,
        "client_cpu_s": sum(w["cpu_s"] for w in workers),
        "client_rss_bytes": {
            "before": sum(w["rss_bytes_before"] for w in workers),
            "end": sum(w["rss_bytes_end"] for w in workers),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ (loopback only)")
    p.add_argument("--connections", type=int, default=1000, help="total (default 1000)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--connect-rate", type=float, default=1000.0, help="total per s (default 1000)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after the ramp (default 3)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--out", required=True, help="directory for the result files")
    # Internal: how the parent starts its workers.
    p.add_argument("--worker", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--share", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--ramp-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.connections < 1 or args.processes < 1 or args.connect_rate <= 0:
        p.error("--connections, --processes and --connect-rate must be positive")
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be positive and --warmup not negative")
    if not args.url.startswith("ws://127."):
        p.error("--url must be ws://127.x.y.z:PORT/ (the benchmarks stay on loopback)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker >= 0:
        return run_worker(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ramp_s = args.connections / args.connect_rate
    t0 = time.time() + 0.5 + 0.1 * args.processes  # time for the workers to import picows
    procs = []
    for i in range(args.processes):
        share = args.connections // args.processes + (i < args.connections % args.processes)
        cmd = [
            sys.executable,
            __file__,
            *("--url", args.url, "--out", str(out), "--warmup", str(args.warmup)),
            *("--duration", str(args.duration), "--connect-timeout", str(args.connect_timeout)),
            *("--connect-rate", str(args.connect_rate / args.processes)),
            *("--worker", str(i), "--share", str(share), "--t0", str(t0)),
            *("--ramp-s", str(ramp_s)),
        ]
        procs.append(subprocess.Popen(cmd))
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(5)
    if any(codes):
        print(f"loadgen: a worker failed (exit codes {codes})", file=sys.stderr)
        return 1
    summary = merge(out, args.processes)
    (out / "loadgen-summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
